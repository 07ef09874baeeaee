// examples/nginx/sidekey.conf, for real: Debian's nginx in front of a header-echoing backend, with the
// real sidekey binary answering its `auth_request`s.

import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import {
  Cleanup,
  EXAMPLES,
  freePort,
  readExample,
  findSidekey,
  findTool,
  startEchoBackend,
  startNginx,
  startSidekey,
  stop,
  tempDir,
} from "./support.mjs";

const ADMIN_TOKEN = "examples-admin-token-0123456789abcdef0123456789";
const REAL_KEY = "sk-nginx-example-real-key";

/** The example with this test's addresses in place of the ones it documents. */
function site({ sidekeyAddr, backendPort, nginxPort }) {
  const text = readExample("nginx/sidekey.conf");
  for (const documented of ["127.0.0.1:8080", "127.0.0.1:9000", "listen 80;"]) {
    assert.ok(text.includes(documented), `the example no longer contains ${documented}`);
  }
  return text
    .replaceAll("127.0.0.1:8080", sidekeyAddr)
    .replaceAll("127.0.0.1:9000", `127.0.0.1:${backendPort}`)
    .replaceAll("listen 80;", `listen 127.0.0.1:${nginxPort};`);
}

test("the main README quotes examples/nginx/sidekey.conf whole and unchanged", () => {
  const readme = readFileSync(join(EXAMPLES, "..", "README.md"), "utf8");
  const blocks = [...readme.matchAll(/```nginx\n([\s\S]*?)```/g)].map((match) => match[1]);
  assert.ok(blocks.length > 0, "the README has no nginx block");
  const file = readExample("nginx/sidekey.conf");
  for (const block of blocks) assert.equal(block, file, "an nginx block of the README differs from the file");
});

describe("the nginx example", () => {
  const cleanup = new Cleanup();
  let missing = null;
  let sidekey, backend, nginx;

  before(async () => {
    const nginxBin = findTool("/usr/sbin/nginx", "apt-get install nginx-light");
    const bin = findSidekey();
    missing = nginxBin.missing ?? bin.missing;
    if (missing) return;
    // The setting the example's header asks for: nginx's address is a trusted proxy.
    const config = join(tempDir(cleanup, "sidekey-nginx-config-"), "sidekey.toml");
    writeFileSync(config, '[http]\ntrusted_proxies = ["127.0.0.1/32"]\n');
    sidekey = await startSidekey(cleanup, bin.path, {
      SIDEKEY_CONFIG: config,
      SIDEKEY_SECRET_OPENAI_PROD: REAL_KEY,
      SIDEKEY_ADMIN_TOKEN: ADMIN_TOKEN,
    });
    backend = await startEchoBackend(cleanup);
    const nginxPort = await freePort();
    nginx = await startNginx(
      cleanup,
      nginxBin.path,
      site({ sidekeyAddr: sidekey.addr, backendPort: backend.port, nginxPort }),
      nginxPort,
    );
  });

  after(() => cleanup.run());

  /** Skips a test whose tools `before` did not find. */
  function needs(t) {
    if (missing) t.skip(missing);
    return !missing;
  }

  async function issue(body = {}) {
    const response = await fetch(`${sidekey.url}/v1/sessions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ secret_key_id: "openai-prod", ttl_seconds: 600, ...body }),
    });
    assert.equal(response.status, 201, await response.clone().text());
    return response.json();
  }

  function callThroughNginx(token, init = {}) {
    const headers = { ...(init.headers ?? {}) };
    if (token) headers.authorization = `Bearer ${token}`;
    return fetch(`${nginx.url}/llm/v1/chat/completions?stream=true`, { ...init, headers });
  }

  test("a valid token reaches the backend with the session's headers and without the token", async (t) => {
    if (!needs(t)) return;
    const session = await issue();
    const before = backend.seen.length;
    const response = await callThroughNginx(session.token, {
      method: "POST",
      headers: { "content-type": "application/json", "x-sidekey-subject": "forged-by-the-client" },
      body: JSON.stringify({ model: "gpt-4o-mini" }),
    });
    assert.equal(response.status, 200, await response.clone().text());
    const seen = await response.json();
    assert.equal(backend.seen.length, before + 1);
    assert.equal(seen.method, "POST");
    assert.equal(seen.url, "/v1/chat/completions?stream=true", "the /llm prefix is stripped");
    assert.equal(seen.headers["x-sidekey-session-id"], session.session_id);
    assert.equal(seen.headers["x-sidekey-secret-key-id"], "openai-prod");
    assert.equal(seen.headers["x-sidekey-subject"], undefined, "a client's own X-Sidekey-Subject is dropped");
    assert.equal(seen.headers.authorization, undefined, "the session token stays between nginx and sidekey");
    assert.ok(!JSON.stringify(seen).includes(REAL_KEY), "the real key never leaves sidekey on forward-auth");
  });

  test("a scoped session's scope headers reach the backend", async (t) => {
    if (!needs(t)) return;
    const session = await issue({ scope: { models: ["gpt-4o-mini"] } });
    const response = await callThroughNginx(session.token);
    assert.equal(response.status, 200, await response.clone().text());
    const seen = await response.json();
    assert.equal(seen.headers["x-sidekey-session-id"], session.session_id);
    assert.equal(seen.headers["x-sidekey-scope-models"], "gpt-4o-mini");
  });

  test("a missing token is 401 with sidekey's WWW-Authenticate and missing_token", async (t) => {
    if (!needs(t)) return;
    const before = backend.seen.length;
    const response = await callThroughNginx(null);
    assert.equal(response.status, 401);
    assert.equal(response.headers.get("www-authenticate"), 'Bearer realm="sidekey"');
    assert.equal(response.headers.get("content-type"), "application/problem+json");
    const problem = await response.json();
    assert.equal(problem.code, "missing_token");
    assert.equal(backend.seen.length, before, "the backend is not contacted");
  });

  test("a token revoked with DELETE /v1/session is 401 invalid_token", async (t) => {
    if (!needs(t)) return;
    const session = await issue();
    assert.equal((await callThroughNginx(session.token)).status, 200);
    const revoked = await fetch(`${sidekey.url}/v1/session`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${session.token}` },
    });
    assert.equal(revoked.status, 204);
    const response = await callThroughNginx(session.token);
    assert.equal(response.status, 401);
    const challenge = response.headers.get("www-authenticate");
    assert.match(challenge, /^Bearer realm="sidekey", error="invalid_token", error_description="[^"]+"$/);
    assert.equal((await response.json()).code, "invalid_token");
  });

  test("a token revoked through the admin API is 401 invalid_token", async (t) => {
    if (!needs(t)) return;
    const session = await issue();
    assert.equal((await callThroughNginx(session.token)).status, 200);
    const revoked = await fetch(`${sidekey.url}/v1/admin/sessions/${session.session_id}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    assert.equal(revoked.status, 204);
    const response = await callThroughNginx(session.token);
    assert.equal(response.status, 401);
    assert.match(response.headers.get("www-authenticate"), /error="invalid_token"/);
  });

  test("a route outside the session's scope is 403, checked on the path without /llm", async (t) => {
    if (!needs(t)) return;
    const session = await issue({ scope: { routes: ["POST /v1/chat/completions"] } });
    const allowed = await callThroughNginx(session.token, { method: "POST", body: "{}" });
    assert.equal(allowed.status, 200, await allowed.clone().text());
    const refused = await callThroughNginx(session.token, { method: "GET" });
    assert.equal(refused.status, 403);
  });

  test("a spent request budget is 429", async (t) => {
    if (!needs(t)) return;
    const session = await issue({ limits: { max_requests: 1 } });
    assert.equal((await callThroughNginx(session.token)).status, 200);
    const response = await callThroughNginx(session.token);
    assert.equal(response.status, 429, await response.clone().text());
    assert.equal(response.headers.get("content-type"), "application/problem+json");
  });

  test("a spent per-minute rate is 429 with sidekey's Retry-After", async (t) => {
    if (!needs(t)) return;
    const session = await issue({ limits: { requests_per_minute: 1 } });
    assert.equal((await callThroughNginx(session.token)).status, 200);
    const direct = await fetch(`${sidekey.url}/v1/auth/verify`, {
      headers: {
        authorization: `Bearer ${session.token}`,
        "x-forwarded-method": "GET",
        "x-forwarded-uri": "/v1/models",
      },
    });
    assert.equal(direct.status, 429, "sidekey itself refuses the second request of the minute");
    const sidekeySays = direct.headers.get("retry-after");
    assert.match(sidekeySays ?? "", /^[1-9][0-9]*$/);
    const response = await callThroughNginx(session.token);
    assert.equal(response.status, 429, await response.clone().text());
    const nginxSays = Number(response.headers.get("retry-after"));
    assert.ok(nginxSays >= 1 && nginxSays <= Number(sidekeySays), `Retry-After ${nginxSays}, sidekey said ${sidekeySays}`);
  });

  // Last: it stops sidekey.
  test("with sidekey stopped, nginx answers 503 with Retry-After, not 500", async (t) => {
    if (!needs(t)) return;
    const session = await issue();
    assert.equal((await callThroughNginx(session.token)).status, 200);
    await stop(sidekey.child);
    const before = backend.seen.length;
    const response = await callThroughNginx(session.token);
    assert.equal(response.status, 503);
    assert.equal(response.headers.get("retry-after"), "5");
    assert.equal((await response.json()).code, "auth_unavailable");
    assert.equal(backend.seen.length, before, "fail closed: the backend is not contacted");
  });
});
