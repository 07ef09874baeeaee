/** The 201 body of sidekey's `POST /v1/sessions`, as the app's backend passes it on. */
export interface IssuedToken {
  token: string;
  token_type?: "Bearer";
  session_id?: string;
  /** RFC 3339 UTC. */
  expires_at: string;
  /** Whole seconds from the answer. */
  expires_in: number;
  secret_key_id?: string;
  subject?: string | null;
  scope?: Scope;
  limits?: Limits;
  usage?: Usage;
  [extra: string]: unknown;
}

export interface Scope {
  upstreams?: string[];
  routes?: string[];
  models?: string[];
  origins?: string[];
}

export interface Limits {
  max_requests?: number | null;
  requests_per_minute?: number | null;
  max_tokens?: number | null;
  max_output_tokens_per_request?: number | null;
}

export interface Usage {
  requests: number;
  input_tokens: number;
  output_tokens: number;
}

/** `GET /v1/session`: the session, never the token or the key. */
export interface SessionInfo {
  session_id: string;
  secret_key_id: string;
  subject?: string | null;
  issued_at: string;
  expires_at: string;
  expires_in: number;
  metadata: Record<string, string>;
  scope: Scope;
  limits: Limits;
  usage: Usage;
  remaining?: { requests?: number | null; tokens?: number | null };
}

export interface SidekeyOptions {
  /** Where sidekey answers, e.g. `https://chat.example.com` or `http://127.0.0.1:8080`. */
  baseUrl: string | URL;
  /**
   * The app's call to its own backend, which calls `POST /v1/sessions`. `current` is null the first
   * time, and the expiring token object when the session can no longer be refreshed.
   */
  getToken(current: IssuedToken | null): Promise<IssuedToken> | IssuedToken;
  /** Fraction of the TTL at which the token is renewed (default 0.8). */
  refreshAt?: number;
  /** Random spread around `refreshAt`, as a fraction of the TTL (default 0.05). */
  jitter?: number;
  /** The fetch used for every call (default `globalThis.fetch`). */
  fetch?: typeof globalThis.fetch;
  /** The WebSocket constructor (default `globalThis.WebSocket`). */
  WebSocket?: new (url: string, protocols?: string | string[]) => WebSocket;
  /** The EventSource constructor (default `globalThis.EventSource`). */
  EventSource?: new (url: string, init?: EventSourceInit) => EventSource;
}

/** What the client reports to `on()` listeners. */
export type SidekeyEvent =
  | { type: "issued"; token: IssuedToken }
  | { type: "refreshed"; token: IssuedToken }
  | { type: "error"; error: unknown };

export interface Sidekey {
  /**
   * A drop-in `fetch` for proxied calls: relative paths resolve against `baseUrl`, the token is added,
   * a 401 `invalid_token` is retried once with a new token (when the body can be sent again), and
   * sidekey's own problem+json answers reject with a {@link SidekeyError}. Upstream errors are
   * returned unchanged.
   */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>;
  /** The token to send now, renewed first when needed. */
  token(): Promise<string>;
  /** Renews now: refresh, or `getToken(current)` once refresh can no longer extend the session. */
  renew(): Promise<IssuedToken>;
  /** `GET /v1/session`. */
  session(): Promise<SessionInfo>;
  /** `DELETE /v1/session`. */
  revoke(): Promise<void>;
  /** A WebSocket on a proxied path, authenticated with the `sidekey-token.<token>` subprotocol. */
  websocket(path: string, protocols?: string | string[]): Promise<WebSocket>;
  /** An EventSource on a proxied path, authenticated with a one-time ticket. */
  eventSource(path: string, init?: EventSourceInit): Promise<EventSource>;
  /** Listens to renewals and background failures; returns the function that stops listening. */
  on(listener: (event: SidekeyEvent) => void): () => void;
  /** Stops the renewal timer. */
  close(): void;
}

export declare function createSidekey(options: SidekeyOptions): Sidekey;
export default createSidekey;

/** An error answered by sidekey itself (problem+json with a stable `code`). */
export declare class SidekeyError extends Error {
  readonly name: "SidekeyError";
  /** The HTTP status. */
  readonly status: number;
  /** sidekey's stable code: `invalid_token`, `model_not_allowed`, `quota_exceeded`, … */
  readonly code: string;
  readonly detail: string | null;
  readonly title: string | null;
  readonly type: string | null;
  /** Seconds from `Retry-After` (429, 503), or null. */
  readonly retryAfter: number | null;
  /** The problem+json body. */
  readonly body: Record<string, unknown> | null;
}
