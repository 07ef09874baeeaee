//! [`RedisTicketStore`]: one-time tickets in the Redis every instance shares, so a ticket issued on one
//! instance is redeemed on any, and only once.
//!
//! A ticket is one string key `<prefix>:ticket:<digest hex>` holding its expiry (8 bytes, Unix
//! milliseconds, big-endian) and the sealed session token, with a Redis expiry at the ticket's own, so
//! nothing outlives it. `take` is `GETDEL`: one command, atomic on the server, so of any number of
//! concurrent redemptions exactly one gets the value.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sidekey_application::{Clock, StoredTicket, TicketStore, TicketStoreError};
use sidekey_domain::TicketDigest;

use crate::connection::{ConfigError, Connector};
use crate::store::RedisStoreSettings;

/// Tickets in Redis; see the [module documentation](self).
pub struct RedisTicketStore {
    redis: Connector,
    prefix: String,
    /// For the keys' expiry, which Redis counts from its own receipt of the command.
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RedisTicketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTicketStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisTicketStore {
    /// A ticket store on the Redis at `settings.url`, keys under `settings.prefix`. Connects nothing yet.
    ///
    /// # Errors
    /// [`ConfigError`] for an invalid URL (never quoted: it may hold a password).
    pub fn connect(settings: &RedisStoreSettings, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        let redis = Connector::new(&settings.url, settings.connect_timeout, settings.command_timeout)?;
        Ok(Self { redis, prefix: settings.prefix.clone(), clock })
    }

    fn key(&self, digest: &TicketDigest) -> String {
        format!("{}:ticket:{}", self.prefix, digest.to_hex())
    }
}

fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait]
impl TicketStore for RedisTicketStore {
    async fn put(&self, digest: TicketDigest, ticket: StoredTicket) -> Result<(), TicketStoreError> {
        let ttl = ticket.expires_at.duration_since(self.clock.now()).unwrap_or(Duration::ZERO);
        // At least a millisecond (0 is an error for PX): a ticket already late is refused by its expiry.
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut value = Vec::with_capacity(8 + ticket.sealed_token.len());
        value.extend_from_slice(&millis(ticket.expires_at).to_be_bytes());
        value.extend_from_slice(&ticket.sealed_token);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(&digest)).arg(value).arg("PX").arg(ttl_ms);
        self.redis.query::<()>("ticket put", &cmd).await.map_err(|error| TicketStoreError(error.0))
    }

    async fn take(&self, digest: &TicketDigest) -> Result<Option<StoredTicket>, TicketStoreError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key(digest));
        let value: Option<Vec<u8>> =
            self.redis.query("ticket take", &cmd).await.map_err(|error| TicketStoreError(error.0))?;
        Ok(value.and_then(|value| {
            let (expiry, sealed) = value.split_at_checked(8)?;
            let expires_at = UNIX_EPOCH + Duration::from_millis(u64::from_be_bytes(expiry.try_into().ok()?));
            Some(StoredTicket { sealed_token: sealed.to_vec(), expires_at })
        }))
    }
}
