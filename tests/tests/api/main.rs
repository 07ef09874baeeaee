//! The contract (Session API, Admin API, Errors, Operations) over real HTTP: one
//! test binary, a fresh server on `127.0.0.1:0` per test, started by `sidekey_tests::spawn_app`.
//!
//! # Layout
//! - `sessions`: issue, show, refresh, revoke and verify, the happy paths and their response shapes.
//! - `tokens`: every way a token is refused, on every route that takes one.
//! - `expiry`: a one-second session, before and after its `expires_at`.
//! - `bodies`: the JSON body rules: 400, 413, 422, and the unknown secret.
//! - `forward_auth`: forward-auth for scoped and limited sessions; the admin's usage totals.
//! - `admin`: the Admin API, enabled and disabled, and its credential matrix.
//! - `operations`: `/healthz`, `/readyz`, `/metrics`, `/docs`, unknown routes.
//! - `openapi`: the committed spec against the served one.
//! - `rate_limit`: failed requests limited per client address.
//! - `shutdown`: graceful shutdown.

mod admin;
mod bodies;
mod expiry;
mod forward_auth;
mod openapi;
mod operations;
mod rate_limit;
mod sessions;
mod shutdown;
mod tokens;
