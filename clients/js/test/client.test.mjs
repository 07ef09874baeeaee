// The client against the real sidekey binary, in front of a fake OpenAI upstream.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { createSidekey, SidekeyError } from "../index.js";
import { startSidekeyWithFake } from "./support.mjs";

let fake, sidekey, started;
before(async () => ({ fake, sidekey } = started = await startSidekeyWithFake()));
after(() => started?.stop());

/** A getToken that issues sessions from the real server and records what it was given. */
function issuer(body = {}) {
  const calls = [];
  const getToken = async (current) => {
    calls.push(current);
    return sidekey.issue(body);
  };
  return { calls, getToken };
}

const chat = (extra = {}) => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }], ...extra }),
});

test("the first call asks getToken(null) once and sends the token, and the upstream gets the real key", async () => {
  const { calls, getToken } = issuer();
  const client = createSidekey({ baseUrl: sidekey.url, getToken });
  try {
    const response = await client.fetch("/v1/proxy/openai/v1/chat/completions", chat());
    assert.equal(response.status, 200);
    const answer = await response.json();
    assert.equal(answer.choices[0].message.content, fake.reply);
    assert.deepEqual(calls, [null]);
    const seen = fake.requests.at(-1);
    assert.equal(seen.headers.authorization, `Bearer ${sidekey.realKey}`);
    assert.equal(await client.token(), (await client.token()), "the token is kept between calls");
    assert.match(await client.token(), /^skt_/);
    assert.ok(!JSON.stringify(seen.headers).includes(await client.token()), "the session token never reaches the upstream");
  } finally {
    client.close();
  }
});

test("twenty concurrent first calls share one getToken", async () => {
  const { calls, getToken } = issuer();
  const client = createSidekey({ baseUrl: sidekey.url, getToken });
  try {
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => client.fetch("/v1/proxy/openai/v1/models")),
    );
    assert.deepEqual(answers.map((r) => r.status), Array(20).fill(200));
    assert.equal(calls.length, 1);
  } finally {
    client.close();
  }
});

test("after an admin revocation twenty concurrent calls renew once and all succeed on the retry", async () => {
  const { calls, getToken } = issuer();
  let refreshes = 0;
  const counting = (input, init) => {
    if (String(input).endsWith("/v1/session/refresh")) refreshes += 1;
    return fetch(input, init);
  };
  const client = createSidekey({ baseUrl: sidekey.url, getToken, fetch: counting });
  try {
    const first = await client.fetch("/v1/proxy/openai/v1/models");
    assert.equal(first.status, 200);
    assert.equal(calls.length, 1);
    const revoked = (await client.session()).session_id;
    await sidekey.revokeById(revoked);

    const answers = await Promise.all(
      Array.from({ length: 20 }, () => client.fetch("/v1/proxy/openai/v1/chat/completions", chat())),
    );
    assert.deepEqual(answers.map((r) => r.status), Array(20).fill(200));
    // One renewal: refresh was refused with 401, so the app was asked once, with the revoked token.
    assert.equal(calls.length, 2);
    assert.equal(refreshes, 1);
    assert.equal(calls[1].session_id, revoked);
    assert.notEqual((await client.session()).session_id, revoked);
  } finally {
    client.close();
  }
});

test("a body that cannot be sent twice is not retried, and the next call has a new token", async () => {
  const { calls, getToken } = issuer();
  const client = createSidekey({ baseUrl: sidekey.url, getToken });
  try {
    await sidekey.revokeById((await client.session()).session_id);
    const stream = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(chat().body));
        controller.close();
      },
    });
    await assert.rejects(
      client.fetch("/v1/proxy/openai/v1/chat/completions", { ...chat(), body: stream, duplex: "half" }),
      (error) => error instanceof SidekeyError && error.code === "invalid_token" && error.status === 401,
    );
    const response = await client.fetch("/v1/proxy/openai/v1/chat/completions", chat());
    assert.equal(response.status, 200);
    assert.equal(calls.length, 2);
  } finally {
    client.close();
  }
});

test("a model outside the session's scope rejects with a typed 403 model_not_allowed", async () => {
  const { getToken } = issuer({ scope: { upstreams: ["openai"], models: ["gpt-4o-mini"] } });
  const client = createSidekey({ baseUrl: sidekey.url, getToken });
  const before = fake.requests.length;
  try {
    await assert.rejects(client.fetch("/v1/proxy/openai/v1/chat/completions", chat({ model: "gpt-4.1-mini" })), (error) => {
      assert.ok(error instanceof SidekeyError);
      assert.equal(error.status, 403);
      assert.equal(error.code, "model_not_allowed");
      assert.ok(error.detail && error.detail.length > 0);
      return true;
    });
    assert.equal(fake.requests.length, before, "the upstream was not contacted");
  } finally {
    client.close();
  }
});

/** With these limits, the first call answers 200 and the second rejects: the SidekeyError it rejects with. */
async function secondCallRefused(limits) {
  const { getToken } = issuer({ limits });
  const client = createSidekey({ baseUrl: sidekey.url, getToken });
  try {
    assert.equal((await client.fetch("/v1/proxy/openai/v1/models")).status, 200);
    let refusal;
    await assert.rejects(client.fetch("/v1/proxy/openai/v1/models"), (error) => {
      assert.ok(error instanceof SidekeyError);
      refusal = error;
      return true;
    });
    return refusal;
  } finally {
    client.close();
  }
}

test("a spent max_requests rejects with a typed 429 quota_exceeded", async () => {
  const error = await secondCallRefused({ max_requests: 1 });
  assert.equal(error.status, 429);
  assert.equal(error.code, "quota_exceeded");
});

test("a per-minute rate rejects with 429 rate_limited and retryAfter in seconds from Retry-After", async () => {
  const error = await secondCallRefused({ requests_per_minute: 1 });
  assert.equal(error.status, 429);
  assert.equal(error.code, "rate_limited");
  assert.equal(typeof error.retryAfter, "number");
  assert.ok(error.retryAfter > 0 && error.retryAfter <= 60, `retryAfter ${error.retryAfter}`);
});

test("an upstream's own error passes through unchanged as a response", async () => {
  const { getToken } = issuer();
  const client = createSidekey({ baseUrl: sidekey.url, getToken });
  try {
    const response = await client.fetch(
      "/v1/proxy/openai/v1/chat/completions",
      chat({ messages: [{ role: "user", content: "please fail" }] }),
    );
    assert.equal(response.status, 400);
    assert.match(response.headers.get("content-type"), /^application\/json/);
    assert.equal((await response.json()).error.code, "fake_refusal");
  } finally {
    client.close();
  }
});

test("session() shows usage and what remains, and revoke() ends the session for the next getToken(null)", async () => {
  const { calls, getToken } = issuer({ limits: { max_requests: 5 } });
  const client = createSidekey({ baseUrl: sidekey.url, getToken });
  try {
    await client.fetch("/v1/proxy/openai/v1/models");
    const session = await client.session();
    assert.equal(session.usage.requests, 1);
    assert.equal(session.remaining.requests, 4);
    assert.equal(JSON.stringify(session).includes(sidekey.realKey), false);
    const revokedToken = await client.token();
    await client.revoke();
    const check = await fetch(`${sidekey.url}/v1/session`, { headers: { authorization: `Bearer ${revokedToken}` } });
    assert.equal(check.status, 401);
    assert.notEqual((await client.session()).session_id, session.session_id);
    assert.deepEqual(calls, [null, null]);
  } finally {
    client.close();
  }
});

test("a relative path stays below a baseUrl that has a path of its own", async () => {
  const seen = [];
  const recording = async (input) => {
    seen.push(String(input));
    return new Response("{}", { status: 200, headers: { "content-type": "application/json" } });
  };
  const client = createSidekey({
    baseUrl: "https://chat.example.com/sidekey",
    getToken: () => ({ token: "skt_x", expires_in: 60, expires_at: new Date(Date.now() + 60_000).toISOString() }),
    fetch: recording,
  });
  try {
    await client.fetch("/v1/proxy/openai/v1/models");
    await client.fetch("v1/session");
    await client.fetch("https://elsewhere.example.com/x");
    assert.deepEqual(seen, [
      "https://chat.example.com/sidekey/v1/proxy/openai/v1/models",
      "https://chat.example.com/sidekey/v1/session",
      "https://elsewhere.example.com/x",
    ]);
  } finally {
    client.close();
  }
});

test("the official openai package streams a chat completion through sidekey.fetch", async () => {
  const { getToken } = issuer({ scope: { upstreams: ["openai"], models: ["gpt-4o-mini"] }, limits: { max_tokens: 10_000 } });
  const client = createSidekey({ baseUrl: sidekey.url, getToken });
  try {
    const openai = new OpenAI({
      baseURL: `${sidekey.url}/v1/proxy/openai/v1`,
      apiKey: "sidekey",
      fetch: client.fetch,
      maxRetries: 0,
    });
    const stream = await openai.chat.completions.create({
      model: "gpt-4o-mini",
      stream: true,
      messages: [{ role: "user", content: "hello" }],
    });
    const pieces = [];
    for await (const chunk of stream) {
      const piece = chunk.choices[0]?.delta?.content;
      if (piece) pieces.push(piece);
    }
    assert.ok(pieces.length >= 5, `only ${pieces.length} chunks`);
    assert.equal(pieces.join(""), fake.reply);
    const seen = fake.requests.at(-1);
    assert.equal(seen.headers.authorization, `Bearer ${sidekey.realKey}`);
    const session = await client.session();
    assert.ok(session.usage.output_tokens > 0, "the stream's usage was metered");

    // sidekey's refusal reaches the SDK's caller as the cause, typed.
    const refused = await openai.chat.completions
      .create({ model: "gpt-4.1-mini", messages: [{ role: "user", content: "hello" }] })
      .then(() => null, (error) => error);
    assert.ok(refused, "the out-of-scope model was refused");
    const typed = refused instanceof SidekeyError ? refused : refused.cause;
    assert.ok(typed instanceof SidekeyError, `got ${refused}`);
    assert.equal(typed.code, "model_not_allowed");
  } finally {
    client.close();
  }
});
