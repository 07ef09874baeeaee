//! sidekey's Redis adapters: the session store and the usage ledger that several instances share, and
//! the event bus between instances and bridges.
//!
//! Depends on `domain` and `application` (plus the `redis` crate); built into the binary by its `redis`
//! feature (on by default).
//!
//! # Layout
//! - `connection`: one server or a cluster behind one type, every command bounded in time, connecting
//!   lazily and reconnecting by itself; shared by the store, the ledger and the bus.
//! - [`store`]: [`RedisSessionStore`], sessions in Redis (or Redis Cluster), real keys sealed with a key
//!   derived from the token, with a local cache invalidated through pub/sub.
//! - [`ledger`]: [`RedisUsageLedger`], the `UsageLedger` port: requests and tokens counted against the
//!   limits of sessions, subjects and real keys, atomically across instances, one Lua script per account.
//! - [`tickets`]: [`RedisTicketStore`], one-time tickets redeemed once across instances (`GETDEL`).
//! - [`bus`]: [`RedisBus`], the `EventBus` port on streams and pub/sub.
//! - [`config`]: [`RedisConfig`], the settings of all three, as `[store]` spells them.
#![forbid(unsafe_code)]

pub mod bus;
pub mod config;
mod connection;
pub mod ledger;
pub mod store;
pub mod tickets;

pub use bus::{RedisBus, RedisBusSettings};
pub use config::RedisConfig;
pub use connection::ConfigError;
pub use ledger::RedisUsageLedger;
pub use store::{LocalCacheSettings, RedisSessionStore, RedisStoreSettings};
pub use tickets::RedisTicketStore;
