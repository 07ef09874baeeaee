//! The ports: what the use cases need from the outside world, and what each implementation promises.
//!
//! Every port documents, under `# Errors`, what an implementation MUST answer and when; adapters are
//! tested against those contracts. With the `test-util` feature (and in this crate's own tests) each
//! port has a mockall mock, `Mock<Port>`, for other crates' tests.
//!
//! # Layout
//! - [`session_store`]: [`SessionStore`] and what it stores and answers ([`Grant`], [`Lookup`]).
//! - [`secret_source`]: [`SecretSource`], whoever holds the real keys.
//! - [`event_bus`]: [`EventBus`] and its [`BusFeed`]s, between instances and bridges.
//! - [`clock`]: the [`Clock`].
//! - [`caller_verifier`]: [`CallerVerifier`], the check of a caller's credential.
//! - [`usage_ledger`]: [`UsageLedger`], where requests and tokens are counted against limits.
//! - [`ticket_store`]: [`TicketStore`], where one-time tickets wait for their one use.
//! - [`user_directory`]: [`UserDirectory`], the app's users and sign-in sessions.

pub mod caller_verifier;
pub mod clock;
pub mod event_bus;
pub mod secret_source;
pub mod session_store;
pub mod ticket_store;
pub mod usage_ledger;
pub mod user_directory;

pub use caller_verifier::{
    CallerCredential, CallerRejection, CallerVerifier, CallerVerifierError, VerifiedCredential,
};
pub use clock::Clock;
pub use event_bus::{BusError, BusFeed, EventBus};
pub use secret_source::{SecretSource, SecretSourceError};
pub use session_store::{
    ENDED_SESSION_RETENTION, Grant, Lookup, RevocationTarget, SessionFilter, SessionStore, StoreError,
};
pub use ticket_store::{StoredTicket, TicketStore, TicketStoreError};
pub use usage_ledger::{
    Account, AccountUsage, Admission, Admitted, LedgerError, LimitScope, RESERVATION_LIFETIME, Refusal,
    Remaining, Reservation, SessionUsage, UsageLedger, WindowTotals,
};
pub use user_directory::{DirectoryError, DirectorySession, DirectoryUser, UserDirectory};

#[cfg(any(test, feature = "test-util"))]
pub use caller_verifier::MockCallerVerifier;
#[cfg(any(test, feature = "test-util"))]
pub use clock::MockClock;
#[cfg(any(test, feature = "test-util"))]
pub use event_bus::MockEventBus;
#[cfg(any(test, feature = "test-util"))]
pub use secret_source::MockSecretSource;
#[cfg(any(test, feature = "test-util"))]
pub use session_store::MockSessionStore;
#[cfg(any(test, feature = "test-util"))]
pub use ticket_store::MockTicketStore;
#[cfg(any(test, feature = "test-util"))]
pub use usage_ledger::MockUsageLedger;
#[cfg(any(test, feature = "test-util"))]
pub use user_directory::MockUserDirectory;
