//! [`InMemoryTicketStore`]: one-time tickets in process memory, for a single instance.
//!
//! A map under a mutex: tickets live 30 seconds and are few (one per stream a page opens), so the lapsed
//! ones are swept on each `put` rather than by a task of their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use sidekey_application::{Clock, StoredTicket, TicketStore, TicketStoreError};
use sidekey_domain::TicketDigest;

/// Tickets in memory; see the [module documentation](self).
pub struct InMemoryTicketStore {
    tickets: Mutex<HashMap<TicketDigest, StoredTicket>>,
    /// To sweep lapsed tickets.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for InMemoryTicketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryTicketStore").finish_non_exhaustive()
    }
}

impl InMemoryTicketStore {
    /// An empty store, sweeping by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { tickets: Mutex::new(HashMap::new()), clock }
    }
}

#[async_trait]
impl TicketStore for InMemoryTicketStore {
    async fn put(&self, digest: TicketDigest, ticket: StoredTicket) -> Result<(), TicketStoreError> {
        let now = self.clock.now();
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        tickets.retain(|_, stored| stored.expires_at >= now);
        tickets.insert(digest, ticket);
        Ok(())
    }

    async fn take(&self, digest: &TicketDigest) -> Result<Option<StoredTicket>, TicketStoreError> {
        Ok(self.tickets.lock().unwrap_or_else(PoisonError::into_inner).remove(digest))
    }
}
