// The chat page in Debian's Chromium (playwright-core, no browser download), served by server.mjs in
// front of the real sidekey binary (SIDEKEY_BIN) and a fake upstream with a distinctive real key.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startFakeOpenAI } from "../fake-openai.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
// Sessions live 4 s and at most 8 s, so a test sees both a refresh and a replacement in seconds.
const TTL_SECONDS = 4;
const MAX_LIFETIME_SECONDS = 8;

const realKey = `sk-fake-REALKEY-${randomBytes(12).toString("hex")}`;
const adminToken = randomBytes(32).toString("hex");
let fake;
let app; // { url, sidekeyUrl, child }
let browser;

before(async () => {
  if (!process.env.SIDEKEY_BIN) throw new Error("SIDEKEY_BIN is not set (cargo test -p sidekey --test frontend sets it)");
  fake = await startFakeOpenAI({ delayMs: 120 });
  const child = spawn(process.execPath, [join(here, "..", "server.mjs")], {
    env: {
      PATH: process.env.PATH,
      PORT: "0",
      SIDEKEY_BIN: process.env.SIDEKEY_BIN,
      OPENAI_BASE_URL: `${fake.url}/v1`,
      OPENAI_API_KEY: realKey,
      SIDEKEY_ADMIN_TOKEN: adminToken,
      SESSION_TTL_SECONDS: String(TTL_SECONDS),
      SESSION_MAX_LIFETIME_SECONDS: String(MAX_LIFETIME_SECONDS),
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  app = await new Promise((resolve, reject) => {
    const timeout = setTimeout(() => reject(new Error(`server.mjs did not start:\n${output}`)), 20_000);
    const read = (text) => {
      output += text;
      const found = output.match(/listening on (http:\/\/[\d.]+:\d+) \(sidekey at (http:\/\/[\d.]+:\d+)\)/);
      if (found) {
        clearTimeout(timeout);
        resolve({ url: found[1], sidekeyUrl: found[2], child });
      }
    };
    child.stdout.setEncoding("utf8").on("data", read);
    child.stderr.setEncoding("utf8").on("data", read);
    child.on("exit", (code) => reject(new Error(`server.mjs exited with ${code}:\n${output}`)));
  });
  app.child.removeAllListeners("exit");
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  if (app?.child.exitCode === null) {
    const exited = new Promise((resolve) => app.child.once("exit", resolve));
    app.child.kill("SIGTERM");
    await exited;
  }
  await fake?.close();
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A fresh browser context, signed in, recording every response, console line and failed request. */
async function openChat() {
  const context = await browser.newContext({ viewport: { width: 1000, height: 640 } });
  const page = await context.newPage();
  const seen = { responses: [], pending: [], console: [], failed: [] };
  page.on("console", (message) => seen.console.push(message.text()));
  page.on("pageerror", (error) => seen.console.push(String(error)));
  page.on("requestfailed", (request) => seen.failed.push(`${request.method()} ${request.url()}`));
  page.on("response", (response) => {
    const entry = { url: response.url(), status: response.status(), method: response.request().method() };
    seen.responses.push(entry);
    seen.pending.push(
      (async () => {
        entry.headers = JSON.stringify(await response.allHeaders().catch(() => ({})));
        entry.body = await response.text().catch(() => "");
      })(),
    );
  });
  // Every captured body, or a failure naming the ones Chromium never handed over (never a hang).
  seen.settled = async () => {
    let timer;
    const late = new Promise((resolve) => {
      timer = setTimeout(() => resolve("late"), 10_000);
    });
    const outcome = await Promise.race([Promise.all(seen.pending), late]);
    clearTimeout(timer);
    if (outcome === "late") {
      const missing = seen.responses.filter((r) => r.body === undefined).map((r) => `${r.status} ${r.url}`);
      assert.fail(`response bodies never captured: ${missing}`);
    }
  };
  await page.goto(app.url);
  await page.click("#signin-button");
  await page.waitForSelector('#session[data-state="active"]');
  await page.waitForFunction(() => /^\d+$/.test(document.getElementById("requests-left").textContent));
  return { context, page, seen };
}

async function adminRevokeAll() {
  const answer = await fetch(`${app.sidekeyUrl}/v1/admin/revocations`, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
    body: JSON.stringify({ secret_key_id: "openai-prod" }),
  });
  assert.equal(answer.status, 200);
  return (await answer.json()).revoked;
}

test("the page loads, signs the demo user in and shows what the session has left", async () => {
  const { context, page, seen } = await openChat();
  try {
    assert.equal(await page.title(), "sidekey browser chat");
    assert.equal(await page.textContent("#session-state"), "Active");
    assert.equal(await page.textContent("#requests-left"), "50");
    assert.ok(seen.responses.some((r) => r.url.endsWith("/v1/session") && r.status === 200));
    // The page reaches sessions only through the app's sign-in, and never the admin API.
    const reach = await page.evaluate(async () => {
      const issue = await fetch("/v1/sessions", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ secret_key_id: "openai-prod" }),
      });
      const admin = await fetch("/v1/admin/sessions");
      return [issue.status, admin.status];
    });
    assert.deepEqual(reach, [404, 404]);
  } finally {
    await context.close();
  }
});

test("a streamed reply is painted in several steps, and the real key is nowhere the browser can see", async () => {
  const { context, page, seen } = await openChat();
  try {
    await page.fill("#prompt", "Tell me something");
    await page.click("#send");
    const lengths = [];
    let shot = false;
    const until = Date.now() + 20_000;
    for (;;) {
      const state = await page.evaluate(() => {
        const item = document.querySelector("#messages li.assistant");
        return item ? { length: item.textContent.length, streaming: item.classList.contains("streaming") } : null;
      });
      if (state) {
        lengths.push(state.length);
        if (!state.streaming) break;
        if (!shot && process.env.UPDATE_SCREENSHOT === "1" && state.length > fake.reply.length / 2) {
          await page.screenshot({ path: join(here, "..", "screenshot.png") });
          shot = true;
        }
      }
      assert.ok(Date.now() < until, "the reply did not finish in 20 s");
      await sleep(40);
    }
    const distinct = [...new Set(lengths.filter((length) => length > 0))];
    assert.ok(distinct.length >= 3, `the text grew in only ${distinct.length} steps: ${distinct}`);
    assert.deepEqual([...distinct].sort((a, b) => a - b), distinct, "the text only grows");
    assert.equal(await page.textContent("#messages li.assistant"), fake.reply);
    // The upstream got the real key; the page got a reply and the session's usage.
    assert.equal(fake.requests.at(-1).headers.authorization, `Bearer ${realKey}`);
    await page.waitForFunction(() => document.getElementById("tokens-used").textContent !== "0");

    // Everything the browser saw: every response's headers and body, storage, cookies, console, DOM.
    await seen.settled();
    const bodies = seen.responses.map((r) => `${r.headers}\n${r.body}`).join("\n");
    assert.ok(bodies.includes("Hello!") && bodies.includes("skt_"), "the capture holds the stream and the token");
    const storage = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
    const cookies = JSON.stringify(await context.cookies());
    const dom = await page.content();
    for (const [where, text] of Object.entries({ bodies, storage, cookies, console: seen.console.join("\n"), dom })) {
      assert.equal(text.includes(realKey), false, `the real key appears in ${where}`);
      assert.equal(text.includes("REALKEY"), false, `part of the real key appears in ${where}`);
    }
  } finally {
    await context.close();
  }
});

test("the official openai package streams in the page with fetch: sidekey.fetch", async () => {
  const { context, page } = await openChat();
  // The SDK's browser build, served from node_modules to this page only (the example ships no SDK).
  const sdk = join(here, "..", "node_modules", "openai");
  await page.route("**/__openai/**", (route) => {
    const file = new URL(route.request().url()).pathname.slice("/__openai/".length);
    if (file.split("/").includes("..")) return route.abort();
    return route.fulfill({ path: join(sdk, file), contentType: "text/javascript" });
  });
  try {
    const pieces = await page.evaluate(async () => {
      const { createSidekey } = await import("/sidekey-client.js");
      const { default: OpenAI } = await import("/__openai/index.mjs");
      const sidekey = createSidekey({
        baseUrl: location.origin,
        getToken: async (current) =>
          (await fetch("/api/sidekey-token", { method: "POST", body: JSON.stringify({ current }) })).json(),
      });
      const openai = new OpenAI({
        baseURL: `${location.origin}/v1/proxy/openai/v1`,
        apiKey: "sidekey",
        fetch: sidekey.fetch,
        dangerouslyAllowBrowser: true,
        maxRetries: 0,
      });
      const stream = await openai.chat.completions.create({
        model: "gpt-4o-mini",
        stream: true,
        messages: [{ role: "user", content: "hello from the SDK" }],
      });
      const seen = [];
      for await (const chunk of stream) {
        const piece = chunk.choices[0]?.delta?.content;
        if (piece) seen.push(piece);
      }
      sidekey.close();
      return seen;
    });
    assert.ok(pieces.length >= 5, `only ${pieces.length} chunks`);
    assert.equal(pieces.join(""), fake.reply);
    assert.equal(fake.requests.at(-1).headers.authorization, `Bearer ${realKey}`);
  } finally {
    await context.close();
  }
});

test("the token is renewed silently past its TTL and lifetime, with no request refused", async () => {
  const { context, page, seen } = await openChat();
  try {
    // Past a refresh (about 2.4 s) and the replacement at the maximum lifetime (about 6.5 s).
    await page.waitForFunction(() => Number(document.getElementById("renewals").dataset.count) >= 3, null, {
      timeout: 20_000,
    });
    await page.fill("#prompt", "Still there?");
    await page.click("#send");
    await page.waitForFunction(() => {
      const items = document.querySelectorAll("#messages li.assistant");
      return items.length === 1 && !items[0].classList.contains("streaming");
    }, null, { timeout: 20_000 });
    assert.equal(await page.textContent("#messages li.assistant"), fake.reply);
    await seen.settled();
    const refreshed = seen.responses.filter((r) => r.url.endsWith("/v1/session/refresh") && r.status === 200);
    const issued = seen.responses.filter((r) => r.url.endsWith("/api/sidekey-token") && r.status === 201);
    assert.ok(refreshed.length >= 1, "the token was refreshed");
    assert.ok(issued.length >= 2, "the token was replaced at its maximum lifetime");
    const tokens = new Set(issued.map((r) => JSON.parse(r.body).token));
    assert.equal(tokens.size, issued.length, "each replacement is a new token");
    const refused = seen.responses.filter((r) => r.status >= 400);
    assert.deepEqual(refused.map((r) => `${r.status} ${r.url}`), [], "no request was refused");
    assert.deepEqual(seen.failed, []);
    assert.equal(await page.getAttribute("#session", "data-state"), "active");
  } finally {
    await context.close();
  }
});

test("a revocation through the admin API shows Session ended, and a new session can start", async () => {
  const { context, page } = await openChat();
  try {
    assert.ok((await adminRevokeAll()) >= 1);
    await page.waitForSelector('#session[data-state="ended"]', { timeout: 10_000 });
    assert.equal(await page.textContent("#session-state"), "Session ended");
    assert.equal(await page.isDisabled("#send"), true);
    assert.equal(await page.isVisible("#new-session"), true);
    await page.click("#new-session");
    await page.waitForSelector('#session[data-state="active"]');
    await page.fill("#prompt", "hello again");
    await page.click("#send");
    await page.waitForFunction(() => {
      const item = document.querySelector("#messages li.assistant");
      return item && !item.classList.contains("streaming") && item.textContent.length > 0;
    }, null, { timeout: 20_000 });
  } finally {
    await context.close();
  }
});
