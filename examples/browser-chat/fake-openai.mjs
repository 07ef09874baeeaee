// A local stand-in for the OpenAI API, for the example and the tests: chat completions as JSON or as
// a server-sent-event stream in several chunks with a small delay between them, usage in the last
// chunk (when asked with stream_options.include_usage, as sidekey does to meter the stream).
//
//   node fake-openai.mjs            # listens on FAKE_OPENAI_PORT (default 8090)
//
// Importable too: `startFakeOpenAI({ port: 0, delayMs })` resolves to { url, requests, close }.
// `GET /v1/realtime` upgrades to a WebSocket that greets with `session.created` and echoes each text
// message, for the client's realtime test.
import http from "node:http";
import { createHash } from "node:crypto";
import { pathToFileURL } from "node:url";

const REPLY =
  "Hello! This reply comes from the local fake upstream, streamed through sidekey one token at a time, " +
  "while the real key stays on the server.";

function words(text) {
  return text.match(/\S+\s*/g) ?? [text];
}

function readBody(request) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    request.on("error", reject);
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function startFakeOpenAI({ port = 0, host = "127.0.0.1", delayMs = 30, reply = REPLY } = {}) {
  const requests = [];
  const server = http.createServer(async (request, response) => {
    const raw = await readBody(request);
    let body = null;
    try {
      body = raw ? JSON.parse(raw) : null;
    } catch {
      body = null;
    }
    requests.push({ method: request.method, url: request.url, headers: request.headers, body });
    const path = new URL(request.url, "http://fake").pathname;

    if (request.method === "GET" && path === "/v1/models") {
      return json(response, 200, { object: "list", data: [{ id: "gpt-4o-mini", object: "model" }] });
    }
    if (request.method !== "POST" || path !== "/v1/chat/completions") {
      return json(response, 404, { error: { message: `no route ${path}`, type: "invalid_request_error" } });
    }
    if (!body || typeof body.model !== "string") {
      return json(response, 400, { error: { message: "model is required", type: "invalid_request_error" } });
    }
    // An upstream's own error, which a client must see unchanged (not as sidekey's).
    if (body.model === "gpt-4o-mini" && body.messages?.some?.((m) => m.content === "please fail")) {
      return json(response, 400, {
        error: { message: "the fake upstream refused this", type: "invalid_request_error", code: "fake_refusal" },
      });
    }
    const pieces = words(reply);
    const usage = {
      prompt_tokens: Math.max(1, Math.ceil(raw.length / 4)),
      completion_tokens: pieces.length,
      total_tokens: Math.max(1, Math.ceil(raw.length / 4)) + pieces.length,
    };
    const id = `chatcmpl-fake-${requests.length}`;
    const created = Math.floor(Date.now() / 1000);
    if (!body.stream) {
      return json(response, 200, {
        id,
        object: "chat.completion",
        created,
        model: body.model,
        choices: [{ index: 0, message: { role: "assistant", content: reply }, finish_reason: "stop" }],
        usage,
      });
    }
    response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const chunk = (choices, extra = {}) =>
      `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model: body.model, choices, ...extra })}\n\n`;
    response.write(chunk([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }]));
    for (const piece of pieces) {
      if (response.destroyed) return;
      await sleep(delayMs);
      response.write(chunk([{ index: 0, delta: { content: piece }, finish_reason: null }]));
    }
    response.write(chunk([{ index: 0, delta: {}, finish_reason: "stop" }]));
    if (body.stream_options?.include_usage) response.write(chunk([], { usage }));
    response.end("data: [DONE]\n\n");
  });
  server.on("upgrade", (request, socket) => {
    requests.push({ method: request.method, url: request.url, headers: request.headers, body: null });
    const key = request.headers["sec-websocket-key"];
    if (!key || new URL(request.url, "http://fake").pathname !== "/v1/realtime") {
      socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    const accept = createHash("sha1").update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest("base64");
    const offered = (request.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim()).filter(Boolean);
    socket.write(
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Accept: ${accept}\r\n` +
        (offered.length ? `Sec-WebSocket-Protocol: ${offered[0]}\r\n` : "") +
        "\r\n",
    );
    socket.write(textFrame(JSON.stringify({ type: "session.created" })));
    let pending = Buffer.alloc(0);
    socket.on("data", (data) => {
      pending = Buffer.concat([pending, data]);
      for (;;) {
        const frame = readFrame(pending);
        if (!frame) break;
        pending = pending.subarray(frame.size);
        if (frame.opcode === 0x8) return socket.end(Buffer.from([0x88, 0x00]));
        if (frame.opcode === 0x9) socket.write(Buffer.concat([Buffer.from([0x8a, frame.payload.length]), frame.payload]));
        if (frame.opcode === 0x1) socket.write(textFrame(frame.payload.toString("utf8")));
      }
    });
    socket.on("error", () => socket.destroy());
  });
  return new Promise((resolve) => {
    server.listen(port, host, () => {
      const address = server.address();
      resolve({
        url: `http://${host}:${address.port}`,
        reply,
        requests,
        close: () =>
          new Promise((done) => {
            server.closeAllConnections?.();
            server.close(() => done());
          }),
      });
    });
  });
}

/** An unmasked server-to-client text frame. */
function textFrame(text) {
  const payload = Buffer.from(text, "utf8");
  const head =
    payload.length < 126
      ? Buffer.from([0x81, payload.length])
      : Buffer.from([0x81, 126, payload.length >> 8, payload.length & 0xff]);
  return Buffer.concat([head, payload]);
}

/** One client frame (masked, as clients must) from the front of `buffer`, or null until it is whole. */
function readFrame(buffer) {
  if (buffer.length < 2) return null;
  const opcode = buffer[0] & 0x0f;
  let length = buffer[1] & 0x7f;
  let offset = 2;
  if (length === 126) {
    if (buffer.length < 4) return null;
    length = buffer.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buffer.length < 10) return null;
    length = Number(buffer.readBigUInt64BE(2));
    offset = 10;
  }
  const masked = (buffer[1] & 0x80) !== 0;
  const mask = masked ? buffer.subarray(offset, offset + 4) : null;
  if (masked) offset += 4;
  if (buffer.length < offset + length) return null;
  const payload = Buffer.from(buffer.subarray(offset, offset + length));
  if (mask) for (let i = 0; i < payload.length; i += 1) payload[i] ^= mask[i % 4];
  return { opcode, payload, size: offset + length };
}

function json(response, status, value) {
  const text = JSON.stringify(value);
  response.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  response.end(text);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const port = Number(process.env.FAKE_OPENAI_PORT ?? 8090);
  const delayMs = Number(process.env.FAKE_OPENAI_DELAY_MS ?? 120);
  const fake = await startFakeOpenAI({ port, delayMs });
  console.log(`fake OpenAI listening on ${fake.url}`);
}
