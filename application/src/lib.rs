//! sidekey's use cases: issue, verify, refresh and revoke sessions, over port traits.
//!
//! Depends on `domain` only (plus `async-trait`, `thiserror`, `tracing`); knows no HTTP, no Redis, no
//! runtime. Adapters implement the ports; `bin` wires them. Every refused or state-changing operation
//! emits one audit event (target `sidekey::audit`) carrying the token's fingerprint, never the token.
//!
//! # Layout
//! - [`ports`]: [`SessionStore`], [`SecretSource`], [`EventBus`], [`Clock`] and their error contracts.
//! - [`callers`]: caller authentication: the [`CallerVerifier`] and [`UserDirectory`] ports, the
//!   [`CallerAuthenticator`] that audits every attempt, and the [`CascadeCheck`].
//! - [`sessions`]: [`SessionService`], the use cases, with one error enum per operation.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod callers;
pub mod ports;
pub mod sessions;

pub use callers::{
    AuthenticatedCaller, CALLER_SESSION_KEY, CallerAuthError, CallerAuthenticator, CallerCredential,
    CallerRejection, CallerVerifier, CallerVerifierError, CascadeCheck, DirectoryError, DirectorySession,
    DirectoryUser, RESERVED_METADATA_PREFIX, UserDirectory, VerifiedCredential,
};
pub use ports::{
    BusError, BusFeed, Clock, ENDED_SESSION_RETENTION, EventBus, Grant, Lookup, RevocationTarget,
    SecretSource, SecretSourceError, SessionFilter, SessionStore, StoreError,
};
pub use sessions::{
    AdminError, IssueError, IssueRequest, Issued, Readiness, RefreshError, Rejection, RevokeError,
    SessionService, VerifyError,
};
