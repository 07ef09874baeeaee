// examples/systemd: the unit passes `systemd-analyze verify` and scores "OK" in `systemd-analyze
// security`, and the binary starts with the environment file's settings.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { Cleanup, findSidekey, findTool, readExample, startSidekey, tempDir } from "./support.mjs";

/** The unit's `[Service]` directives the example promises (issue 17 and the README's hardening list). */
const HARDENING = [
  "DynamicUser=yes",
  "NoNewPrivileges=yes",
  "ProtectSystem=strict",
  "ProtectHome=yes",
  "PrivateTmp=yes",
  "PrivateDevices=yes",
  "ProtectKernelTunables=yes",
  "ProtectKernelModules=yes",
  "ProtectKernelLogs=yes",
  "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
  "SystemCallFilter=@system-service",
  "MemoryDenyWriteExecute=yes",
  "LockPersonality=yes",
  "CapabilityBoundingSet=",
  "EnvironmentFile=/etc/sidekey/sidekey.env",
  "Restart=on-failure",
];

/** The highest exposure `systemd-analyze security` may give the unit (0 best, 10 worst; "OK" ≤ 2.0). */
const MAX_EXPOSURE = 2.0;

/** `KEY=value` lines of an environment file, comments and blanks skipped. */
function parseEnvFile(text) {
  const env = {};
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith("#")) continue;
    const eq = trimmed.indexOf("=");
    env[trimmed.slice(0, eq)] = trimmed.slice(eq + 1);
  }
  return env;
}

describe("the systemd example", () => {
  const cleanup = new Cleanup();
  let missing = null;
  let unitPath, analyze, sidekeyPath;

  before(() => {
    const tool = findTool("systemd-analyze", "apt-get install systemd");
    const bin = findSidekey();
    missing = tool.missing ?? bin.missing;
    if (missing) return;
    analyze = tool.path;
    sidekeyPath = bin.path;
    // The example with ExecStart at a binary that exists here: verify checks that it is executable.
    const unit = readExample("systemd/sidekey.service");
    assert.ok(unit.includes("ExecStart=/usr/local/bin/sidekey serve"), "the documented ExecStart changed");
    unitPath = join(tempDir(cleanup, "sidekey-systemd-"), "sidekey.service");
    writeFileSync(unitPath, unit.replace("ExecStart=/usr/local/bin/sidekey", `ExecStart=${sidekeyPath}`));
  });

  after(() => cleanup.run());

  function needs(t) {
    if (missing) t.skip(missing);
    return !missing;
  }

  test("the unit carries every promised hardening directive", () => {
    const lines = readExample("systemd/sidekey.service").split("\n");
    for (const directive of HARDENING) assert.ok(lines.includes(directive), `missing: ${directive}`);
    assert.ok(!lines.some((line) => line.startsWith("ExecReload=")), "sidekey has no reload: no ExecReload");
  });

  test("systemd-analyze verify accepts the unit without a warning", (t) => {
    if (!needs(t)) return;
    const result = spawnSync(analyze, ["verify", unitPath], { encoding: "utf8" });
    // An unknown or misspelt directive is only a warning ("ignoring"), with exit status 0: both count.
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stderr.trim(), "", "systemd-analyze verify warned");
  });

  test("systemd-analyze security rates the unit's exposure OK", (t) => {
    if (!needs(t)) return;
    const result = spawnSync(analyze, ["security", "--offline=true", "--no-pager", unitPath], {
      encoding: "utf8",
    });
    const match = /Overall exposure level for \S+: (\d+\.\d+)/.exec(result.stdout);
    assert.ok(match, `no exposure level in:\n${result.stdout}\n${result.stderr}`);
    const exposure = Number(match[1]);
    console.log(`systemd-analyze security: exposure ${exposure}`);
    assert.ok(exposure <= MAX_EXPOSURE, `exposure ${exposure} is above ${MAX_EXPOSURE}:\n${result.stdout}`);
  });

  test("sidekey starts with the example environment file and is ready", async (t) => {
    if (!needs(t)) return;
    const env = parseEnvFile(readExample("systemd/sidekey.env.example"));
    assert.equal(env.SIDEKEY_LISTEN, "127.0.0.1:8080");
    assert.ok(env.SIDEKEY_ADMIN_TOKEN.length >= 32, "the example admin token would be refused at start-up");
    const sidekey = await startSidekey(cleanup, sidekeyPath, { ...env, SIDEKEY_LISTEN: "127.0.0.1:0" });
    const ready = await fetch(`${sidekey.url}/readyz`);
    assert.equal(ready.status, 200, await ready.text());
    const issued = await fetch(`${sidekey.url}/v1/sessions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ secret_key_id: "openai-prod" }),
    });
    assert.equal(issued.status, 201, "the example's secret variable names the key openai-prod");
    const admin = await fetch(`${sidekey.url}/v1/admin/sessions`, {
      headers: { authorization: `Bearer ${env.SIDEKEY_ADMIN_TOKEN}` },
    });
    assert.equal(admin.status, 200, "the example admin token enables the admin API");
    assert.ok(!sidekey.logs().includes(env.SIDEKEY_SECRET_OPENAI_PROD), "the real key reached the log");
  });
});
