// WebSocket and EventSource helpers against the real binary: its ticket route and its WebSocket relay.
// A Node without WebSocket (Node 20 without --experimental-websocket) skips that test with the reason,
// unless CI=true, where a skip would hide a missing feature.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createSidekey } from "../index.js";
import { startSidekeyWithFake } from "./support.mjs";

let fake, sidekey, started;
before(async () => ({ fake, sidekey } = started = await startSidekeyWithFake()));
after(() => started?.stop());

/** Records what the client would open, as browsers' constructors are not in Node 20. */
function recorder() {
  const opened = [];
  class Recorded {
    constructor(url, second) {
      this.url = url;
      this.second = second;
      opened.push(this);
    }
  }
  return { opened, Recorded };
}

test("websocket() opens ws(s):// with the sidekey subprotocols and the app's own after them", async () => {
  const { opened, Recorded } = recorder();
  const expires = () => ({ token: "skt_abc", expires_in: 60, expires_at: new Date(Date.now() + 60_000).toISOString() });
  const plain = createSidekey({ baseUrl: "http://127.0.0.1:8080", getToken: expires, WebSocket: Recorded });
  const tls = createSidekey({ baseUrl: "https://chat.example.com/sk", getToken: expires, WebSocket: Recorded });
  try {
    await plain.websocket("/v1/proxy/openai/v1/realtime?model=gpt-4o-realtime", ["realtime"]);
    await tls.websocket("/v1/proxy/openai/v1/realtime");
    assert.equal(opened[0].url, "ws://127.0.0.1:8080/v1/proxy/openai/v1/realtime?model=gpt-4o-realtime");
    assert.deepEqual(opened[0].second, ["sidekey", "sidekey-token.skt_abc", "realtime"]);
    assert.equal(opened[1].url, "wss://chat.example.com/sk/v1/proxy/openai/v1/realtime");
    assert.deepEqual(opened[1].second, ["sidekey", "sidekey-token.skt_abc"]);
  } finally {
    plain.close();
    tls.close();
  }
});

test("eventSource() opens the path with a one-time ticket that sidekey accepts once", async (t) => {
  const probe = await sidekey.issue();
  const tickets = await fetch(`${sidekey.url}/v1/session/tickets`, {
    method: "POST",
    headers: { authorization: `Bearer ${probe.token}` },
  });
  if (tickets.status === 404 || tickets.status === 405) {
    assert.fail(`POST /v1/session/tickets answered ${tickets.status}`);
  }
  const { opened, Recorded } = recorder();
  const client = createSidekey({ baseUrl: sidekey.url, getToken: () => sidekey.issue(), EventSource: Recorded });
  try {
    await client.eventSource("/v1/proxy/openai/v1/models");
    const url = new URL(opened[0].url);
    assert.equal(url.pathname, "/v1/proxy/openai/v1/models");
    assert.match(url.searchParams.get("sidekey_ticket"), /^skq_/);
    // What the browser's EventSource would do: a plain GET, no Authorization header.
    const first = await fetch(url);
    assert.equal(first.status, 200);
    const seen = fake.requests.at(-1);
    assert.equal(new URL(seen.url, "http://x").searchParams.has("sidekey_ticket"), false, "the ticket is not forwarded");
    const again = await fetch(url);
    assert.equal(again.status, 401, "a ticket is good once");
  } finally {
    client.close();
  }
});

/** Skips with the reason outside CI; fails under CI=true. */
function unsupported(t, reason) {
  if (process.env.CI === "true") assert.fail(`CI=true and ${reason}`);
  t.skip(reason);
}

test("websocket() reaches the upstream through sidekey with the real key, the token's subprotocol removed", async (t) => {
  if (typeof WebSocket !== "function") {
    return unsupported(t, "this Node has no WebSocket (Node 20: run with --experimental-websocket)");
  }
  const client = createSidekey({ baseUrl: sidekey.url, getToken: () => sidekey.issue() });
  try {
    const socket = await client.websocket("/v1/proxy/openai/v1/realtime?model=gpt-4o-mini");
    const messages = [];
    const opened = await new Promise((resolve) => {
      socket.onopen = () => resolve(true);
      socket.onerror = () => resolve(false);
      socket.onclose = () => resolve(false);
      socket.onmessage = (event) => messages.push(String(event.data));
    });
    assert.ok(opened, "sidekey upgraded the proxied WebSocket");
    assert.equal(socket.protocol, "sidekey");
    socket.send("hello through sidekey");
    const until = Date.now() + 5_000;
    while (!messages.includes("hello through sidekey") && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(messages, [JSON.stringify({ type: "session.created" }), "hello through sidekey"]);
    socket.close();
    const upgrade = fake.requests.findLast((r) => r.url.startsWith("/v1/realtime"));
    assert.equal(upgrade.headers.authorization, `Bearer ${sidekey.realKey}`);
    assert.equal((upgrade.headers["sec-websocket-protocol"] ?? "").includes("sidekey-token."), false);
  } finally {
    client.close();
  }
});
