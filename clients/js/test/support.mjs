// Starts the real sidekey binary (SIDEKEY_BIN) on a free port in front of a fake upstream, for the
// client's tests and the browser example's. One server per test file.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { startFakeOpenAI } from "../../../examples/browser-chat/fake-openai.mjs";
export { startFakeOpenAI };

/** The binary under test; the Rust wrapper (bin/tests/frontend.rs) sets it to the one cargo built. */
export function sidekeyBin() {
  const bin = process.env.SIDEKEY_BIN;
  if (!bin) throw new Error("SIDEKEY_BIN is not set: run these tests through `cargo test -p sidekey --test frontend`, or set it to a sidekey binary");
  if (!existsSync(bin)) throw new Error(`SIDEKEY_BIN=${bin} does not exist`);
  return bin;
}

/**
 * `upstreamUrl`: the fake upstream's base URL. `toml`: extra configuration appended to the file.
 * Resolves to { url, adminToken, realKey, issue, revokeById, stop, logs }.
 */
export async function startSidekey({ upstreamUrl, toml = "", session = "", env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "sidekey-js-"));
  // Distinctive, so a test can search everything the client saw for it.
  const realKey = `sk-fake-REALKEY-${randomBytes(12).toString("hex")}`;
  const adminToken = randomBytes(32).toString("hex");
  const config = `listen = "127.0.0.1:0"

[session]
${session}

[http]
# The tests provoke many 401s on purpose; the per-address failure limit would turn them into 429s.
failed_requests_per_second = 0

[[upstreams]]
name = "openai"
base_url = "${upstreamUrl}"
allowed_secret_key_ids = ["openai-*"]
routes = ["POST /v1/chat/completions", "GET /v1/models", "GET /v1/realtime"]
models = ["gpt-4o-mini", "gpt-4.1-*"]

${toml}
`;
  const path = join(dir, "sidekey.toml");
  writeFileSync(path, config);
  const child = spawn(sidekeyBin(), ["serve", "--config", path], {
    env: {
      PATH: process.env.PATH,
      SIDEKEY_SECRET_OPENAI_PROD: realKey,
      SIDEKEY_ADMIN_TOKEN: adminToken,
      SIDEKEY_LOG_FORMAT: "json",
      SIDEKEY_LOG: "info",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let logs = "";
  const url = await new Promise((resolve, reject) => {
    const timeout = setTimeout(() => reject(new Error(`sidekey did not start in 20 s:\n${logs}`)), 20_000);
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text) => {
      logs += text;
      const line = logs.split("\n").find((l) => l.includes("sidekey is listening"));
      const addr = line?.match(/(127\.0\.0\.1:\d+)/)?.[1];
      if (addr) {
        clearTimeout(timeout);
        resolve(`http://${addr}`);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timeout);
      reject(new Error(`sidekey exited with ${code} before listening:\n${logs}`));
    });
  });
  child.removeAllListeners("exit");

  async function issue(body = {}) {
    const response = await fetch(`${url}/v1/sessions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ secret_key_id: "openai-prod", ...body }),
    });
    const text = await response.text();
    if (response.status !== 201) throw new Error(`POST /v1/sessions answered ${response.status}: ${text}`);
    return JSON.parse(text);
  }

  async function revokeById(sessionId) {
    const response = await fetch(`${url}/v1/admin/sessions/${sessionId}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${adminToken}` },
    });
    if (response.status !== 204) throw new Error(`admin revocation answered ${response.status}`);
  }

  async function stop() {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  }

  return { url, adminToken, realKey, issue, revokeById, stop, logs: () => logs };
}

/** A fake OpenAI upstream and sidekey in front of it, as each test file starts them. */
export async function startSidekeyWithFake() {
  const fake = await startFakeOpenAI({ delayMs: 5 });
  const sidekey = await startSidekey({ upstreamUrl: fake.url });
  return {
    fake,
    sidekey,
    async stop() {
      await sidekey.stop();
      await fake.close();
    },
  };
}
