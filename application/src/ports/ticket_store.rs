//! [`TicketStore`]: where one-time tickets wait for their one use.

use std::time::SystemTime;

use async_trait::async_trait;
use sidekey_domain::TicketDigest;

/// A ticket as stored: the session token sealed under the ticket, and when the ticket lapses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTicket {
    /// The session token, sealed under a key only the ticket's holder can derive.
    pub sealed_token: Vec<u8>,
    /// The instant after which the ticket is no longer valid.
    pub expires_at: SystemTime,
}

/// The store could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the ticket store is unavailable: {0}")]
pub struct TicketStoreError(pub String);

/// Where tickets wait, keyed by digest only.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait TicketStore: Send + Sync {
    /// Keeps `ticket` under `digest` until `ticket.expires_at` (it MAY forget it any time after).
    ///
    /// # Errors
    /// [`TicketStoreError`] when the store cannot be reached; the ticket MUST then not be usable.
    async fn put(&self, digest: TicketDigest, ticket: StoredTicket) -> Result<(), TicketStoreError>;

    /// Removes and returns the ticket under `digest`, atomically: of any number of concurrent takes of
    /// one digest, on any instance sharing the store, at most one MUST return it. `None` when there is
    /// none (never put, taken already, or forgotten after its expiry). The caller checks `expires_at`.
    ///
    /// # Errors
    /// [`TicketStoreError`] when the store cannot be reached.
    async fn take(&self, digest: &TicketDigest) -> Result<Option<StoredTicket>, TicketStoreError>;
}
