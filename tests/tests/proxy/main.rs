//! The protected proxy (the README's "The proxy") over real HTTP: a fresh sidekey on `127.0.0.1:0` per
//! test, in front of a fake upstream the test starts on `127.0.0.1:0` too. No external network.
//!
//! # Layout
//! - `upstream`: the fake upstream that records what it receives and streams, sleeps or fails on demand.
//! - `forwarding`: the real key arrives (each way of presenting it) and the token does not; allowlists;
//!   headers, method, path, query and body; ChatKit; 401/403/404; upstream errors passed through.
//! - `streaming`: server-sent events arrive as emitted; large bodies stream both ways; the body limit;
//!   a client that goes away cancels the upstream request; a stalled stream is cut.
//! - `failures`: refused, hung-up and unanswered upstreams (502, 504), slow headers (504).
//! - `cors`: preflight and denial for browser origins.
//! - `trusted_proxies`: forged forwarding headers dropped and replaced, a trusted proxy's kept and
//!   extended; the token percent-encoded in the query or a header never forwarded.
//! - `logs`: no key and no token in any log line of a proxied request.
//! - `sdk`: the OpenAI Python SDK, unchanged, through the proxy (when `openai` is installed).
//! - `scope`: scoped sessions: path tricks, routes, models, origins, request budgets and rates, the
//!   output ceiling clamped in the body, issuance within the configuration, one budget on two instances.
//! - `metering`: token usage settled from the three answer formats, plain, streamed and cut; the
//!   `include_usage` chunk sidekey asked for and strips; budgets across instances and per subject per UTC
//!   day.
//! - `websocket`: WebSocket upgrades relayed to a recording WebSocket upstream: the real key in, the
//!   token (header or subprotocol) nowhere; frames and closes both ways; refusals before the upgrade;
//!   revocation (two instances), expiry, limits, `session.update`, metering and shutdown closing a live
//!   socket; the Python `websockets` client.
//! - `instances`: two instances on one Redis (skipped without it, except under CI).

mod cors;
mod failures;
mod forwarding;
mod instances;
mod logs;
mod metering;
mod scope;
mod sdk;
mod streaming;
mod trusted_proxies;
mod upstream;
mod websocket;

use serde_json::Value;
use sidekey_http::UpstreamSettings;
use sidekey_tests::{TestApp, assert_problem, spawn_app_with};

/// An upstream named `name` at `base_url` allowing `allowed`, every other setting at its default.
fn upstream_config(name: &str, base_url: &str, allowed: &[&str]) -> UpstreamSettings {
    UpstreamSettings {
        allowed_secret_key_ids: allowed.iter().map(|pattern| (*pattern).to_owned()).collect(),
        ..UpstreamSettings::new(name, base_url)
    }
}

/// A sidekey with these upstreams (and the test defaults: file secrets, an admin token).
async fn app_with(upstreams: Vec<UpstreamSettings>) -> TestApp {
    spawn_app_with(|config| config.upstreams = upstreams).await
}

/// Checks a refusal sidekey itself answered on a proxy route: the problem document with its status and
/// code, and the `error` member the OpenAI and Anthropic SDKs read, saying the same.
async fn assert_refused(response: reqwest::Response, status: u16, code: &str) -> Value {
    let body = assert_problem(response, status, code).await;
    assert_eq!(body["error"]["code"], code, "the SDK member's code: {body}");
    assert_eq!(body["error"]["type"], code, "the SDK member's type: {body}");
    assert_eq!(body["error"]["message"], body["detail"], "the SDK member's message: {body}");
    body
}
