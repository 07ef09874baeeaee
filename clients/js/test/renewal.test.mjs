// Proactive renewal against the real binary: a 3-second TTL under a 6-second maximum lifetime, so the
// client refreshes while that extends the session and then falls back to getToken(current).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createSidekey } from "../index.js";
import { startSidekey, startFakeOpenAI } from "./support.mjs";

let fake;
let sidekey;

before(async () => {
  fake = await startFakeOpenAI({ delayMs: 5 });
  sidekey = await startSidekey({ upstreamUrl: fake.url, session: "default_ttl_seconds = 3\nmax_ttl_seconds = 6\nmax_lifetime_seconds = 6" });
});

after(async () => {
  await sidekey?.stop();
  await fake?.close();
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test("the token is refreshed before expiry, then replaced through getToken(current) at the maximum lifetime, with no call refused", async () => {
  const calls = [];
  const getToken = async (current) => {
    calls.push(current);
    return sidekey.issue({ ttl_seconds: 3 });
  };
  const refreshAnswers = [];
  const watching = async (input, init) => {
    const response = await fetch(input, init);
    if (String(input).endsWith("/v1/session/refresh")) refreshAnswers.push(response.status);
    return response;
  };
  const events = [];
  const client = createSidekey({ baseUrl: sidekey.url, getToken, fetch: watching, jitter: 0.02 });
  client.on((event) => events.push(event.type));
  try {
    const first = await client.token();
    const statuses = [];
    // Call through the proxy every 250 ms for 8 s: past the 6 s lifetime of the first session.
    const until = Date.now() + 8_000;
    while (Date.now() < until) {
      const response = await fetch(`${sidekey.url}/v1/proxy/openai/v1/models`, {
        headers: { authorization: `Bearer ${await client.token()}` },
      });
      statuses.push(response.status);
      await sleep(250);
    }
    assert.ok(statuses.length > 20);
    assert.deepEqual([...new Set(statuses)], [200], "every call went through with the token the client held");
    assert.ok(events.filter((e) => e === "refreshed").length >= 1, `events: ${events}`);
    assert.ok(refreshAnswers.length >= 2, `refresh answers: ${refreshAnswers}`);
    // First getToken(null), then getToken(current) with the expiring token once refresh stopped moving it.
    assert.ok(calls.length >= 2, `getToken calls: ${calls.length}`);
    assert.equal(calls[0], null);
    assert.equal(calls[1].token, first);
    assert.notEqual(await client.token(), first);
  } finally {
    client.close();
  }
});

test("close() stops the renewal timer", async () => {
  let calls = 0;
  let refreshes = 0;
  const client = createSidekey({
    baseUrl: sidekey.url,
    getToken: async () => {
      calls += 1;
      return sidekey.issue({ ttl_seconds: 1 });
    },
    fetch: (input, init) => {
      if (String(input).endsWith("/v1/session/refresh")) refreshes += 1;
      return fetch(input, init);
    },
  });
  await client.token();
  client.close();
  await sleep(1_500);
  assert.equal(calls, 1);
  assert.equal(refreshes, 0);
});
