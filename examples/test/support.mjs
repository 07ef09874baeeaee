// What the example tests share: finding their tools, starting sidekey, a header-echoing backend, and nginx.
//
// Every process a test starts is stopped by the test's `after` hook; every file goes to a temporary
// directory that is removed with it.

import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository's `examples/` directory. */
export const EXAMPLES = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Under CI a missing tool is a failure (CI installs them: `.ci/examples.sh`); elsewhere a skip. */
const IN_CI = process.env.CI === "true";

/**
 * Finds `name` (an absolute path, or a command looked up in PATH): `{ path }`, or `{ missing }` with the
 * reason to skip for. Under `CI=true` a missing tool throws instead: CI installs them (`.ci/examples.sh`).
 */
export function findTool(name, installHint) {
  const found = name.startsWith("/")
    ? existsSync(name) && name
    : spawnSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).stdout.trim();
  if (found) return { path: found };
  const reason = `${name} is not installed (${installHint})`;
  if (IN_CI) throw new Error(`${reason}; CI=true, so this is a failure, not a skip`);
  console.log(`skipped: ${reason}`);
  return { missing: reason };
}

/** The sidekey binary the tests run: `SIDEKEY_BIN` (set by `bin/tests/examples.rs`). */
export function findSidekey() {
  const bin = process.env.SIDEKEY_BIN;
  if (bin && existsSync(bin)) return { path: bin };
  return findTool(bin || "sidekey", "set SIDEKEY_BIN, or run `cargo test -p sidekey --test examples`");
}

/** A fresh temporary directory, removed by `cleanup.run()`. */
export function tempDir(cleanup, prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Undo actions, run last-in first-out. */
export class Cleanup {
  #actions = [];
  add(action) {
    this.#actions.push(action);
  }
  async run() {
    while (this.#actions.length > 0) {
      try {
        await this.#actions.pop()();
      } catch (error) {
        console.error("cleanup:", error);
      }
    }
  }
}

/** A port that was free a moment ago (nginx needs a number in its configuration). */
export async function freePort() {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

/** Waits for `child` to exit, at most `ms`; true when it did. */
async function exited(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  const timer = new Promise((resolve) => setTimeout(resolve, ms, false));
  return Promise.race([once(child, "exit").then(() => true), timer]);
}

/** Stops `child` with SIGTERM, then SIGKILL after five seconds. */
export async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  if (!(await exited(child, 5000))) {
    child.kill("SIGKILL");
    await exited(child, 5000);
  }
}

/**
 * Starts `sidekey serve` on a free port with `env` added; resolves to `{ child, url, logs }` once it
 * listens. `logs()` is everything it wrote so far.
 */
export async function startSidekey(cleanup, bin, env) {
  const child = spawn(bin, ["serve"], {
    env: {
      PATH: process.env.PATH,
      SIDEKEY_LISTEN: "127.0.0.1:0",
      SIDEKEY_LOG_FORMAT: "json",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  cleanup.add(() => stop(child));
  let output = "";
  child.stderr.setEncoding("utf8");
  const listening = new Promise((resolve, reject) => {
    child.stderr.on("data", (chunk) => {
      output += chunk;
      // Complete lines only: a chunk may end in the middle of one.
      const line = output.split("\n").slice(0, -1).find((l) => l.includes('"sidekey is listening"'));
      if (line) resolve(JSON.parse(line).addr);
    });
    child.on("exit", (code) => reject(new Error(`sidekey exited (${code}) before listening:\n${output}`)));
    setTimeout(() => reject(new Error(`sidekey did not listen within 20 s:\n${output}`)), 20000).unref();
  });
  const addr = await listening;
  return { child, addr, url: `http://${addr}`, logs: () => output };
}

/** A backend that answers every request with what it received: `{ method, url, headers }`. */
export async function startEchoBackend(cleanup) {
  const seen = [];
  const server = createServer((request, response) => {
    const received = { method: request.method, url: request.url, headers: request.headers };
    seen.push(received);
    request.resume();
    request.on("end", () => {
      response.writeHead(200, { "content-type": "application/json" });
      response.end(JSON.stringify(received));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  cleanup.add(() => new Promise((resolve) => server.close(resolve)));
  server.closeAllConnections && cleanup.add(() => server.closeAllConnections());
  return { port: server.address().port, seen };
}

/**
 * Starts nginx unprivileged with `site` (the text of a file to include inside `http { }`), in a prefix
 * directory of its own: pid, logs and temporary files there, in the foreground, errors on stderr.
 * Resolves to `{ child, url, logs }` once it accepts connections on `port`.
 */
export async function startNginx(cleanup, nginx, site, port) {
  const prefix = tempDir(cleanup, "sidekey-nginx-");
  for (const sub of ["logs", "tmp"]) mkdirSync(join(prefix, sub));
  writeFileSync(join(prefix, "site.conf"), site);
  const temp = (name) => `${name}_temp_path ${join(prefix, "tmp", name)};`;
  writeFileSync(
    join(prefix, "nginx.conf"),
    [
      "daemon off;",
      "master_process off;",
      "worker_processes 1;",
      `pid ${join(prefix, "nginx.pid")};`,
      "error_log stderr notice;",
      "events { worker_connections 256; }",
      "http {",
      `  access_log ${join(prefix, "logs", "access.log")};`,
      `  ${temp("client_body")} ${temp("proxy")} ${temp("fastcgi")} ${temp("uwsgi")} ${temp("scgi")}`,
      `  include ${join(prefix, "site.conf")};`,
      "}",
      "",
    ].join("\n"),
  );
  const args = ["-p", prefix, "-c", join(prefix, "nginx.conf"), "-e", "stderr"];
  const check = spawnSync(nginx, [...args, "-t"], { encoding: "utf8" });
  if (check.status !== 0) throw new Error(`nginx -t refused the configuration:\n${check.stderr}`);
  const child = spawn(nginx, args, { stdio: ["ignore", "ignore", "pipe"] });
  cleanup.add(() => stop(child));
  let output = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => (output += chunk));
  const url = `http://127.0.0.1:${port}`;
  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null) throw new Error(`nginx exited (${child.exitCode}):\n${output}`);
    try {
      await fetch(`${url}/`);
      break;
    } catch {
      if (attempt > 100) throw new Error(`nginx did not accept connections:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  return { child, url, logs: () => output };
}

/** Reads a file of the examples directory. */
export function readExample(path) {
  return readFileSync(join(EXAMPLES, path), "utf8");
}
