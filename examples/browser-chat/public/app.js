// The chat page: streams replies through sidekey's proxy with a session token that @sidekey/client
// keeps fresh, shows what the session has left, and says plainly when the session was ended.
import { createSidekey, SidekeyError } from "/sidekey-client.js";

const $ = (id) => document.getElementById(id);
// How often the page asks sidekey what the session has left (and so notices a revocation unprompted).
const STATUS_INTERVAL_MS = 3000;

/** The app's backend refused to renew: the session was revoked, not merely at the end of its life. */
class SessionEnded extends Error {}

let sidekey = null;
let model = "gpt-4o-mini";
let history = [];
let issuedCount = 0;
let renewals = 0;
let statusTimer = null;
let ended = false;

async function getToken(current) {
  const answer = await fetch("/api/sidekey-token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ current }),
  });
  if (answer.status === 403) throw new SessionEnded("the session was ended");
  if (answer.status === 401) {
    showSignIn();
    throw new Error("signed out");
  }
  if (!answer.ok) throw new Error(`the app could not issue a session (${answer.status})`);
  return answer.json();
}

function startSession() {
  ended = false;
  history = [];
  issuedCount = 0;
  renewals = 0;
  sidekey?.close();
  sidekey = createSidekey({ baseUrl: location.origin, getToken });
  sidekey.on((event) => {
    if (event.type === "issued") {
      issuedCount += 1;
      if (issuedCount > 1) countRenewal();
    } else if (event.type === "refreshed") {
      countRenewal();
    } else if (event.type === "error" && event.error instanceof SessionEnded) {
      endSession();
    }
  });
  $("session").dataset.state = "active";
  $("session-state").textContent = "Active";
  $("new-session").hidden = true;
  $("send").disabled = false;
  $("prompt").disabled = false;
  $("error").hidden = true;
  $("messages").replaceChildren();
  clearInterval(statusTimer);
  statusTimer = setInterval(showStatus, STATUS_INTERVAL_MS);
  return showStatus();
}

function countRenewal() {
  renewals += 1;
  $("renewals").textContent = String(renewals);
  $("renewals").dataset.count = String(renewals);
}

function endSession() {
  if (ended) return;
  ended = true;
  clearInterval(statusTimer);
  sidekey?.close();
  $("session").dataset.state = "ended";
  $("session-state").textContent = "Session ended";
  $("send").disabled = true;
  $("prompt").disabled = true;
  $("new-session").hidden = false;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

function failed(error) {
  if (error instanceof SessionEnded || (error instanceof SidekeyError && error.code === "invalid_token")) {
    endSession();
  } else if (error instanceof SidekeyError && error.code === "quota_exceeded") {
    showError(`This session's budget is used up: ${error.detail}`);
  } else if (error instanceof SidekeyError) {
    showError(`sidekey refused: ${error.code}: ${error.detail ?? ""}`);
  } else {
    showError(String(error?.message ?? error));
  }
}

async function showStatus() {
  if (ended || !sidekey) return;
  try {
    const session = await sidekey.session();
    const left = session.remaining ?? {};
    $("requests-left").textContent = left.requests ?? "unlimited";
    $("tokens-left").textContent = left.tokens ?? "unlimited";
    $("tokens-used").textContent = String(session.usage.input_tokens + session.usage.output_tokens);
    $("expires-in").textContent = `${session.expires_in} s`;
  } catch (error) {
    failed(error);
  }
}

function bubble(role, text = "") {
  const item = document.createElement("li");
  item.className = role;
  item.textContent = text;
  $("messages").append(item);
  return item;
}

/** Reads a server-sent-event stream of chat completion chunks, painting each delta as it arrives. */
async function paintStream(response, item) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let text = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const piece = JSON.parse(data).choices?.[0]?.delta?.content;
        if (piece) {
          text += piece;
          item.textContent = text;
        }
      }
    }
  }
  return text;
}

async function send(prompt) {
  $("error").hidden = true;
  bubble("user", prompt);
  history.push({ role: "user", content: prompt });
  const item = bubble("assistant");
  item.classList.add("streaming");
  $("send").disabled = true;
  try {
    const response = await sidekey.fetch("/v1/proxy/openai/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, stream: true, messages: history }),
    });
    if (!response.ok) {
      // The upstream's own error (sidekey's are thrown as SidekeyError).
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error?.message ?? `the model answered ${response.status}`);
    }
    const reply = await paintStream(response, item);
    history.push({ role: "assistant", content: reply });
  } catch (error) {
    item.remove();
    failed(error);
  } finally {
    item.classList.remove("streaming");
    if (!ended) $("send").disabled = false;
    showStatus();
  }
}

function showSignIn() {
  clearInterval(statusTimer);
  $("chat").hidden = true;
  $("signin").hidden = false;
}

async function showChat(me) {
  model = me.model ?? model;
  $("signin").hidden = true;
  $("chat").hidden = false;
  await startSession();
}

$("signin-button").addEventListener("click", async () => {
  const answer = await fetch("/login", { method: "POST" });
  if (answer.ok) await showChat(await answer.json());
});

$("new-session").addEventListener("click", () => startSession());

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt || ended) return;
  $("prompt").value = "";
  send(prompt);
});

const me = await (await fetch("/api/me")).json();
if (me.user) await showChat(me);
else showSignIn();
