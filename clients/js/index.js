// @sidekey/client: holds a sidekey session token for a browser (or Node) app, renews it before it
// expires, and adds it to proxied calls. No runtime dependency: only `fetch`, `setTimeout`, `URL`,
// and `WebSocket` / `EventSource` where the realtime helpers are used.

const PROBLEM_TYPE = "application/problem+json";

// How much earlier than `expires_in` says a token is treated as expired: the granularity of
// `expires_in` (whole seconds).
const EXPIRY_MARGIN_MS = 1000;
// The shortest wait before a scheduled renewal, so that an app handing out nearly expired tokens
// cannot make the client spin.
const MIN_RENEWAL_DELAY_MS = 250;

/**
 * An error that sidekey itself answered (RFC 9457 problem+json with a stable `code`), as opposed to an
 * upstream's own error, which `sidekey.fetch` returns unchanged as a response.
 */
export class SidekeyError extends Error {
  constructor({ status, code, detail, title, type, retryAfter, body }) {
    super(detail ? `${code}: ${detail}` : `${code} (${status})`);
    this.name = "SidekeyError";
    this.status = status;
    this.code = code;
    this.detail = detail ?? null;
    this.title = title ?? null;
    this.type = type ?? null;
    // Seconds, from Retry-After (429, 503); null when the answer had none.
    this.retryAfter = retryAfter ?? null;
    this.body = body ?? null;
  }
}

/** Seconds from a Retry-After header (delta-seconds or an HTTP date), or null. */
function parseRetryAfter(value) {
  if (value == null || value === "") return null;
  if (/^\s*\d+\s*$/.test(value)) return Number.parseInt(value, 10);
  const at = Date.parse(value);
  if (Number.isNaN(at)) return null;
  return Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

function isProblem(response) {
  const type = response.headers.get("content-type") || "";
  return type.split(";")[0].trim().toLowerCase() === PROBLEM_TYPE;
}

/**
 * Reads a problem+json answer into a SidekeyError, or returns null when the body is not one of
 * sidekey's problems (an upstream that happens to speak problem+json keeps its answer).
 */
async function readProblem(response) {
  let body;
  try {
    body = await response.clone().json();
  } catch {
    return null;
  }
  if (!body || typeof body !== "object" || typeof body.code !== "string") return null;
  return new SidekeyError({
    status: response.status,
    code: body.code,
    detail: body.detail,
    title: body.title,
    type: body.type,
    retryAfter: parseRetryAfter(response.headers.get("retry-after")),
    body,
  });
}

/**
 * A body that can be sent twice: the retry after a 401 `invalid_token` resends it. Streams and
 * async iterables are consumed by the first attempt, so those requests are not retried.
 */
function isReplayable(body) {
  if (body == null) return true;
  if (typeof body === "string") return true;
  if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return true;
  if (typeof Blob !== "undefined" && body instanceof Blob) return true;
  if (typeof URLSearchParams !== "undefined" && body instanceof URLSearchParams) return true;
  if (typeof FormData !== "undefined" && body instanceof FormData) return true;
  return false;
}

function validateIssued(value) {
  if (!value || typeof value !== "object" || typeof value.token !== "string" || value.token === "") {
    throw new TypeError("getToken must resolve to the 201 body of POST /v1/sessions (with a `token`)");
  }
  if (!Number.isFinite(Number(value.expires_in)) || value.expires_in === null) {
    throw new TypeError("getToken must resolve to the 201 body of POST /v1/sessions (with `expires_in`)");
  }
  return value;
}

/**
 * Creates a client. `getToken(current)` is the app's call to its own backend, which calls sidekey's
 * `POST /v1/sessions` and passes the 201 body on; `current` is null the first time and the expiring
 * token object when the session can no longer be refreshed.
 */
export function createSidekey({
  baseUrl,
  getToken,
  refreshAt = 0.8,
  jitter = 0.05,
  fetch: fetchImpl = globalThis.fetch,
  WebSocket: WebSocketImpl = globalThis.WebSocket,
  EventSource: EventSourceImpl = globalThis.EventSource,
} = {}) {
  if (typeof getToken !== "function") throw new TypeError("createSidekey needs getToken(current)");
  if (typeof fetchImpl !== "function") throw new TypeError("createSidekey needs a fetch implementation");
  if (!(refreshAt > 0 && refreshAt < 1)) throw new RangeError("refreshAt must lie strictly between 0 and 1");
  if (!(jitter >= 0 && jitter < refreshAt)) throw new RangeError("jitter must lie in [0, refreshAt)");
  const base = new URL(baseUrl ?? (typeof location !== "undefined" ? location.origin : undefined));
  // Calls `fetch` unbound: browsers throw "Illegal invocation" when window.fetch runs with another `this`.
  const doFetch = (...args) => fetchImpl.call(globalThis, ...args);

  // The token object (the 201 body, with expires_at/expires_in updated by each refresh) and the local
  // instant it stops being usable. Local time from `expires_in` avoids trusting the two clocks agree.
  let current = null;
  let deadline = 0;
  let renewal = null; // the one renewal in flight, shared by every caller that waits
  let timer = null;
  let closed = false;
  const listeners = new Set();

  function resolve(path) {
    if (path instanceof URL) return path;
    const text = String(path);
    if (/^[a-z][a-z0-9+.-]*:/i.test(text)) return new URL(text);
    // "/v1/…" stays below a baseUrl that has a path of its own ("https://app/sidekey").
    const root = base.href.endsWith("/") ? base.href : `${base.href}/`;
    return new URL(text.replace(/^\/+/, ""), root);
  }

  function emit(event) {
    for (const listener of listeners) {
      try {
        listener(event);
      } catch {
        // A listener's failure is the listener's business, never the caller's request.
      }
    }
  }

  function adopt(value, kind) {
    current = { ...value };
    const seconds = Number(current.expires_in);
    // `expires_in` is rounded to whole seconds (up, as often as down), and a request takes time to
    // arrive: the token counts as spent one second early, so that it is never sent at its last instant.
    const left = Number.isFinite(seconds) ? seconds * 1000 : 0;
    deadline = Date.now() + Math.max(0, left - Math.min(EXPIRY_MARGIN_MS, left / 2));
    emit({ type: kind, token: current });
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (closed || !current) return;
    const ttl = Math.max(0, deadline - Date.now());
    const fraction = refreshAt + (Math.random() * 2 - 1) * jitter;
    timer = setTimeout(() => {
      timer = null;
      renew(current?.token).catch((error) => emit({ type: "error", error }));
    }, Math.max(MIN_RENEWAL_DELAY_MS, ttl * fraction));
    // In Node, a pending renewal must not keep the process alive.
    timer?.unref?.();
  }

  async function fromApp(previous) {
    const value = validateIssued(await getToken(previous));
    if (closed) return value;
    adopt(value, "issued");
    return current;
  }

  /** One renewal: refresh while that extends the session, else ask the app for a new token. */
  async function renewOnce() {
    const previous = current;
    if (!previous) return fromApp(null);
    let response;
    try {
      response = await doFetch(resolve("/v1/session/refresh"), {
        method: "POST",
        headers: { authorization: `Bearer ${previous.token}` },
      });
    } catch (error) {
      // sidekey unreachable: keep the token while it is valid and try again later.
      if (Date.now() < deadline) {
        retryLater();
        throw error;
      }
      return fromApp(previous);
    }
    if (response.ok) {
      const session = await response.json();
      const moved = Date.parse(session.expires_at) > Date.parse(previous.expires_at);
      if (moved && previous === current) {
        adopt({ ...previous, ...session, token: previous.token }, "refreshed");
        return current;
      }
      // At the maximum lifetime: refreshing no longer extends it.
      return fromApp(previous);
    }
    if (response.status === 401) return fromApp(previous);
    const problem = (isProblem(response) && (await readProblem(response))) || null;
    if (Date.now() < deadline) retryLater();
    else return fromApp(previous);
    throw problem ?? new SidekeyError({ status: response.status, code: "http_error" });
  }

  function retryLater() {
    clearTimeout(timer);
    const left = Math.max(0, deadline - Date.now());
    timer = setTimeout(() => {
      timer = null;
      renew(current?.token).catch((error) => emit({ type: "error", error }));
    }, Math.max(MIN_RENEWAL_DELAY_MS, Math.min(5000, left / 2)));
    timer?.unref?.();
  }

  /**
   * Renews the token `stale` (or gets the first one). A caller holding a token that was already
   * replaced gets the replacement without another round trip; concurrent callers share one renewal.
   */
  function renew(stale) {
    if (closed) return Promise.reject(new Error("sidekey client closed"));
    if (current && stale !== undefined && current.token !== stale && Date.now() < deadline) {
      return Promise.resolve(current);
    }
    if (!renewal) {
      renewal = renewOnce().finally(() => {
        renewal = null;
      });
    }
    return renewal;
  }

  /** The token to send now: the one held while it is valid, else a renewed one. */
  async function token() {
    if (renewal) return (await renewal).token;
    if (current && Date.now() < deadline) return current.token;
    return (await renew(current?.token ?? null)).token;
  }

  async function authorizedFetch(input, init = {}) {
    const isRequest = typeof Request !== "undefined" && input instanceof Request;
    const url = isRequest ? input.url : resolve(input).href;
    const body = init.body ?? null;
    // A Request with a body is cloned up front, so the retry still has one to send.
    const spare = isRequest && input.body != null && init.body === undefined ? input.clone() : null;
    const replayable = isRequest && init.body === undefined ? true : isReplayable(body);

    const attempt = async (held, source) => {
      const headers = new Headers(isRequest ? source.headers : undefined);
      new Headers(init.headers ?? {}).forEach((value, name) => headers.set(name, value));
      headers.set("authorization", `Bearer ${held}`);
      return isRequest ? doFetch(new Request(source, { ...init, headers })) : doFetch(url, { ...init, headers });
    };

    let held = await token();
    let response = await attempt(held, input);
    if (response.status === 401 && isProblem(response)) {
      const problem = await readProblem(response);
      if (problem?.code === "invalid_token") {
        if (!replayable) {
          // The body is spent: no retry, but the next call finds a new token ready.
          renew(held).catch((error) => emit({ type: "error", error }));
          throw problem;
        }
        held = (await renew(held)).token;
        response = await attempt(held, spare ?? input);
      }
    }
    if (isProblem(response)) {
      const problem = await readProblem(response);
      if (problem) throw problem;
    }
    return response;
  }

  /** A sidekey JSON call with the token, retried once with a new token after 401 invalid_token. */
  async function call(method, path) {
    let held = await token();
    let response = await doFetch(resolve(path), { method, headers: { authorization: `Bearer ${held}` } });
    if (response.status === 401) {
      const problem = isProblem(response) ? await readProblem(response) : null;
      if (problem?.code === "invalid_token") {
        held = (await renew(held)).token;
        response = await doFetch(resolve(path), { method, headers: { authorization: `Bearer ${held}` } });
      }
    }
    if (!response.ok) {
      const problem = isProblem(response) ? await readProblem(response) : null;
      throw problem ?? new SidekeyError({ status: response.status, code: "http_error" });
    }
    return response;
  }

  function wsUrl(path) {
    const url = resolve(path);
    if (url.protocol === "http:") url.protocol = "ws:";
    else if (url.protocol === "https:") url.protocol = "wss:";
    return url;
  }

  return {
    /** A drop-in fetch for proxied calls: the token added, one retry with a new token after 401. */
    fetch: authorizedFetch,

    /** The current token string, renewed first when needed. */
    token,

    /** Renews now (refresh, or getToken when refresh can no longer extend the session). */
    renew: () => renew(current?.token ?? null),

    /** `GET /v1/session`: scope, limits, usage and what remains. */
    async session() {
      return (await call("GET", "/v1/session")).json();
    },

    /** `DELETE /v1/session`: ends the session; the next call asks getToken(null) for a new one. */
    async revoke() {
      if (!current) return;
      const held = current.token;
      const response = await doFetch(resolve("/v1/session"), {
        method: "DELETE",
        headers: { authorization: `Bearer ${held}` },
      });
      if (current?.token === held) {
        current = null;
        deadline = 0;
        clearTimeout(timer);
        timer = null;
      }
      if (!response.ok && response.status !== 401) {
        const problem = isProblem(response) ? await readProblem(response) : null;
        throw problem ?? new SidekeyError({ status: response.status, code: "http_error" });
      }
    },

    /**
     * Opens a WebSocket on a proxied path, the token in the `sidekey-token.<token>` subprotocol
     * (browsers cannot set an Authorization header on a WebSocket).
     */
    async websocket(path, protocols = []) {
      if (typeof WebSocketImpl !== "function") throw new TypeError("no WebSocket implementation");
      const held = await token();
      const extra = typeof protocols === "string" ? [protocols] : protocols;
      return new WebSocketImpl(wsUrl(path).href, ["sidekey", `sidekey-token.${held}`, ...extra]);
    },

    /**
     * Opens an EventSource on a proxied path with a one-time ticket (`POST /v1/session/tickets`),
     * since EventSource cannot send headers either.
     */
    async eventSource(path, options) {
      if (typeof EventSourceImpl !== "function") throw new TypeError("no EventSource implementation");
      const { ticket } = await (await call("POST", "/v1/session/tickets")).json();
      const url = resolve(path);
      url.searchParams.set("sidekey_ticket", ticket);
      return new EventSourceImpl(url.href, options);
    },

    /** Listens to `issued`, `refreshed` and `error` events; returns the function that stops it. */
    on(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    /** Stops the renewal timer; the client can no longer renew. */
    close() {
      closed = true;
      clearTimeout(timer);
      timer = null;
      listeners.clear();
    },
  };
}

export default createSidekey;
