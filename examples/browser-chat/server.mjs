// The chat example's backend: signs its one demo user in with a cookie, issues that user scoped and
// metered sidekey sessions (`POST /api/sidekey-token`), serves the page and the client, and passes
// `/v1/…` through to sidekey so the page talks to one origin (no CORS to configure).
//
// Unless SIDEKEY_URL names a sidekey that already runs, it starts one (SIDEKEY_BIN, default the
// workspace's target/debug/sidekey) in front of OPENAI_BASE_URL, or in front of the local fake upstream
// (fake-openai.mjs) when OPENAI_BASE_URL is unset. See README.md for every variable.
import http from "node:http";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFile, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startFakeOpenAI } from "./fake-openai.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, "..", "..");
const env = process.env;

const settings = {
  port: Number(env.PORT ?? 3000),
  host: env.HOST ?? "127.0.0.1",
  secretKeyId: env.SIDEKEY_SECRET_KEY_ID ?? "openai-prod",
  model: env.MODEL ?? "gpt-4o-mini",
  ttlSeconds: Number(env.SESSION_TTL_SECONDS ?? 600),
  maxRequests: Number(env.MAX_REQUESTS ?? 50),
  maxTokens: Number(env.MAX_TOKENS ?? 20000),
};

// The one user this demo knows, and the cookies it handed out. A real app has its own sign-in.
const DEMO_USER = { id: "demo-user", name: "Demo User" };
const signedIn = new Set();

const STATIC = {
  "/": ["public/index.html", "text/html; charset=utf-8"],
  "/index.html": ["public/index.html", "text/html; charset=utf-8"],
  "/app.js": ["public/app.js", "text/javascript; charset=utf-8"],
  "/style.css": ["public/style.css", "text/css; charset=utf-8"],
  // The client, as it is in the repository: an ES module, no bundler.
  "/sidekey-client.js": ["../../clients/js/index.js", "text/javascript; charset=utf-8"],
};

function cookies(request) {
  const jar = {};
  for (const part of (request.headers.cookie ?? "").split(";")) {
    const [name, ...value] = part.trim().split("=");
    if (name) jar[name] = value.join("=");
  }
  return jar;
}

function userOf(request) {
  const id = cookies(request).demo_session;
  return id && signedIn.has(id) ? DEMO_USER : null;
}

function json(response, status, value, headers = {}) {
  const text = JSON.stringify(value);
  response.writeHead(status, {
    "content-type": "application/json",
    "cache-control": "no-store",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  response.end(text);
}

async function readJson(request) {
  const chunks = [];
  let size = 0;
  for await (const chunk of request) {
    size += chunk.length;
    if (size > 16 * 1024) throw new Error("body too large");
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  return text ? JSON.parse(text) : {};
}

/**
 * Whether the session the page holds was ended on purpose (revoked by an admin, a ban, a key
 * rotation) rather than simply at the end of its life: sidekey refuses the token although its
 * `expires_at` has not come. Then the page shows "Session ended" instead of getting a new one.
 */
async function wasRevoked(sidekeyUrl, current) {
  if (!current || typeof current.token !== "string") return false;
  const answer = await fetch(`${sidekeyUrl}/v1/session`, { headers: { authorization: `Bearer ${current.token}` } });
  if (answer.status !== 401) return false;
  const expiresAt = Date.parse(current.expires_at);
  return Number.isFinite(expiresAt) && expiresAt > Date.now() + 1000;
}

async function issueSession(sidekeyUrl, user) {
  const answer = await fetch(`${sidekeyUrl}/v1/sessions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      secret_key_id: settings.secretKeyId,
      ttl_seconds: settings.ttlSeconds,
      metadata: { app: "browser-chat", user: user.id },
      scope: { upstreams: ["openai"], routes: ["POST /v1/chat/completions"], models: [settings.model] },
      limits: { max_requests: settings.maxRequests, max_tokens: settings.maxTokens },
    }),
  });
  return { status: answer.status, body: await answer.json() };
}

/** Passes a request through to sidekey as it is, and its answer back as it streams. */
function passThrough(sidekeyUrl, request, response) {
  const target = new URL(request.url, sidekeyUrl);
  const headers = { ...request.headers, host: target.host };
  delete headers.cookie; // the app's cookie is none of sidekey's business
  const forward = http.request(target, { method: request.method, headers }, (answer) => {
    response.writeHead(answer.statusCode ?? 502, answer.headers);
    answer.pipe(response);
  });
  forward.on("error", () => {
    if (!response.headersSent) json(response, 502, { error: "sidekey is unreachable" });
    else response.destroy();
  });
  response.on("close", () => forward.destroy());
  request.pipe(forward);
}

/**
 * What the page may reach on sidekey: the proxy and its own session (read, refresh, tickets, revoke).
 * Never `POST /v1/sessions` (with `auth.mode = "none"` anyone reaching it gets a session, so only this
 * backend may, after its own sign-in) nor the admin API.
 */
function pageMayReach(path) {
  return path.startsWith("/v1/proxy/") || path === "/v1/session" || path.startsWith("/v1/session/");
}

async function handle(sidekeyUrl, request, response) {
  const url = new URL(request.url, "http://app");
  if (pageMayReach(url.pathname)) return passThrough(sidekeyUrl, request, response);

  if (request.method === "GET" && STATIC[url.pathname]) {
    const [file, type] = STATIC[url.pathname];
    const body = await readFile(join(here, file));
    response.writeHead(200, { "content-type": type, "cache-control": "no-cache" });
    return response.end(body);
  }
  if (request.method === "GET" && url.pathname === "/api/me") {
    const user = userOf(request);
    return json(response, 200, { user, model: settings.model });
  }
  if (request.method === "POST" && url.pathname === "/login") {
    const id = randomBytes(24).toString("base64url");
    signedIn.add(id);
    return json(response, 200, { user: DEMO_USER, model: settings.model }, {
      "set-cookie": `demo_session=${id}; HttpOnly; SameSite=Strict; Path=/`,
    });
  }
  if (request.method === "POST" && url.pathname === "/logout") {
    signedIn.delete(cookies(request).demo_session);
    return json(response, 200, {}, { "set-cookie": "demo_session=; Max-Age=0; Path=/" });
  }
  if (request.method === "POST" && url.pathname === "/api/sidekey-token") {
    const user = userOf(request);
    if (!user) return json(response, 401, { error: "signed_out" });
    let current = null;
    try {
      current = (await readJson(request)).current ?? null;
    } catch {
      return json(response, 400, { error: "invalid_request" });
    }
    if (await wasRevoked(sidekeyUrl, current)) return json(response, 403, { error: "session_ended" });
    const issued = await issueSession(sidekeyUrl, user);
    return json(response, issued.status === 201 ? 201 : 502, issued.body);
  }
  json(response, 404, { error: "not_found" });
}

/** Starts sidekey in front of OPENAI_BASE_URL (or a local fake), unless SIDEKEY_URL names one. */
async function startSidekey() {
  if (env.SIDEKEY_URL) return { url: env.SIDEKEY_URL.replace(/\/$/, ""), stop: async () => {} };
  let upstream = env.OPENAI_BASE_URL?.replace(/\/v1\/?$/, "");
  let fake = null;
  if (!upstream) {
    fake = await startFakeOpenAI({ delayMs: Number(env.FAKE_OPENAI_DELAY_MS ?? 120) });
    upstream = fake.url;
  }
  const realKey = env.OPENAI_API_KEY ?? (fake ? "sk-fake-local-key-never-sent-to-the-browser" : undefined);
  if (!realKey) throw new Error("OPENAI_BASE_URL is set: set OPENAI_API_KEY to the real key too");
  const dir = await mkdtemp(join(tmpdir(), "browser-chat-"));
  const config = join(dir, "sidekey.toml");
  await writeFile(
    config,
    `listen = "127.0.0.1:0"

[session]
default_ttl_seconds = ${settings.ttlSeconds}
max_ttl_seconds = ${Math.max(settings.ttlSeconds, Number(env.SESSION_MAX_LIFETIME_SECONDS ?? 3600))}
max_lifetime_seconds = ${Math.max(settings.ttlSeconds, Number(env.SESSION_MAX_LIFETIME_SECONDS ?? 3600))}

[[upstreams]]
name = "openai"
base_url = "${upstream}"
allowed_secret_key_ids = ["${settings.secretKeyId}"]
routes = ["POST /v1/chat/completions"]
models = ["${settings.model}"]
`,
  );
  const bin = env.SIDEKEY_BIN ?? join(repo, "target", "debug", "sidekey");
  const secretVar = `SIDEKEY_SECRET_${settings.secretKeyId.toUpperCase().replace(/-/g, "_")}`;
  const child = spawn(bin, ["serve", "--config", config], {
    env: {
      PATH: env.PATH,
      [secretVar]: realKey,
      SIDEKEY_LOG_FORMAT: "json",
      ...(env.SIDEKEY_ADMIN_TOKEN ? { SIDEKEY_ADMIN_TOKEN: env.SIDEKEY_ADMIN_TOKEN } : {}),
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  child.on("error", (error) => {
    console.error(`cannot start sidekey (${bin}): ${error.message}; build it with cargo build -p sidekey, or set SIDEKEY_BIN or SIDEKEY_URL`);
    process.exit(1);
  });
  const url = await new Promise((resolve, reject) => {
    let logs = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text) => {
      logs += text;
      const addr = logs.split("\n").find((l) => l.includes("sidekey is listening"))?.match(/(127\.0\.0\.1:\d+)/)?.[1];
      if (addr) resolve(`http://${addr}`);
    });
    child.on("exit", (code) => reject(new Error(`sidekey exited with ${code}:\n${logs}`)));
  });
  child.stderr.resume();
  // sidekey read its configuration at start-up: the temporary file has done its job.
  await rm(dir, { recursive: true, force: true });
  return {
    url,
    stop: async () => {
      child.kill("SIGTERM");
      await fake?.close();
    },
  };
}

const sidekey = await startSidekey();
const server = http.createServer((request, response) => {
  handle(sidekey.url, request, response).catch((error) => {
    console.error(`${request.method} ${request.url}: ${error.message}`);
    if (!response.headersSent) json(response, 500, { error: "internal" });
  });
});
server.listen(settings.port, settings.host, () => {
  const { port } = server.address();
  console.log(`browser-chat listening on http://${settings.host}:${port} (sidekey at ${sidekey.url})`);
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, async () => {
    server.close();
    server.closeAllConnections?.();
    await sidekey.stop();
    process.exit(0);
  });
}
