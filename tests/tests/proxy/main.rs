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

mod cors;
mod failures;
mod forwarding;
mod logs;
mod sdk;
mod streaming;
mod trusted_proxies;
mod upstream;

use sidekey_http::UpstreamSettings;
use sidekey_tests::{TestApp, spawn_app_with};

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
