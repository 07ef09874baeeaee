//! sidekey's use cases: issue, verify, refresh and revoke sessions, over port traits.
//!
//! Depends on `domain` only (plus `async-trait`, `thiserror`, `tracing`); knows no HTTP, no Redis, no
//! runtime. Adapters implement the ports; `bin` wires them. Every refused or state-changing operation
//! emits one audit event (target `sidekey::audit`) carrying the token's fingerprint, never the token.
//!
//! # Layout
//! - [`ports`]: [`SessionStore`], [`SecretSource`], [`Clock`] and their error contracts.
//! - [`sessions`]: [`SessionService`], the use cases, with one error enum per operation.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod ports;
pub mod sessions;

pub use ports::{
    Clock, ENDED_SESSION_RETENTION, Grant, Lookup, RevocationTarget, SecretSource, SecretSourceError,
    SessionFilter, SessionStore, StoreError,
};
pub use sessions::{
    AdminError, IssueError, IssueRequest, Issued, Readiness, RefreshError, Rejection, RevokeError,
    SessionService, VerifyError,
};
