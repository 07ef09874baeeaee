//! sidekey's use cases: issue, verify, refresh and revoke sessions, over port traits.
//!
//! Depends on `domain` only (plus `async-trait`, `thiserror`, `tracing`); knows no HTTP, no Redis, no
//! runtime. Adapters implement the ports; `bin` wires them. Every refused or state-changing operation
//! emits one audit event (target `sidekey::audit`) carrying the token's fingerprint, never the token.
//!
//! # Layout
//! - [`ports`]: every port ([`SessionStore`], [`SecretSource`], [`EventBus`], [`Clock`],
//!   [`CallerVerifier`], [`UserDirectory`]) with its error contract, one file each; mocks of them all
//!   behind the `test-util` feature.
//! - [`callers`]: caller authentication: the [`CallerAuthenticator`] that audits every attempt, and the
//!   [`CascadeCheck`].
//! - [`metering`]: [`Metering`]: a limited session's requests admitted against its limits and budgets,
//!   their token usage settled, what was used read back.
//! - [`sessions`]: [`SessionService`], the use cases, with one error enum per operation.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod callers;
pub mod metering;
pub mod ports;
pub mod sessions;

/// Audit events go to this tracing target, so operators can route them apart from diagnostics.
pub const AUDIT_TARGET: &str = "sidekey::audit";

pub use callers::{AuthenticatedCaller, CallerAuthError, CallerAuthenticator, CascadeCheck};
pub use metering::{AdmitError, Budgets, Metering};
pub use ports::{
    BusError, BusFeed, CallerCredential, CallerRejection, CallerVerifier, CallerVerifierError, Clock,
    DirectoryError, DirectorySession, DirectoryUser, ENDED_SESSION_RETENTION, EventBus, Grant, Lookup,
    RevocationTarget, SecretSource, SecretSourceError, SessionFilter, SessionStore, StoreError, StoredTicket,
    TicketStore, TicketStoreError, UsageLedger, UserDirectory, VerifiedCredential,
};
pub use sessions::{
    AdminError, IssuanceLimits, IssueError, IssueRequest, Issued, Readiness, RefreshError, Rejection,
    RevokeError, Scoping, SessionService, TicketError, VerifyError,
};
