//! sidekey's in-process adapters: what a single instance needs with nothing else running.
//!
//! Depends on `domain` and `application` only (plus tokio, dashmap and toml); `bin` wires these adapters.
//! A memory-only sidecar (`cargo build -p sidekey --no-default-features`) is this crate and the HTTP
//! crate.
//!
//! # Layout
//! - [`clock`]: [`SystemClock`], the `Clock` port on the operating system's wall clock.
//! - [`ledger`]: [`InMemoryUsageLedger`], requests and tokens counted against limits in memory.
//! - [`memory`]: [`InMemorySessionStore`], sessions in process memory with automatic expiry.
//! - [`tickets`]: [`InMemoryTicketStore`], one-time tickets in memory.
//! - [`secrets`]: [`EnvSecretSource`] (`SIDEKEY_SECRET_<ID>`), [`FileSecretSource`] (`file:DIR`) and
//!   [`TomlFileSecretSource`] (`toml:PATH`), chosen by a [`LocalSource`] setting.
#![forbid(unsafe_code)]

pub mod clock;
pub mod ledger;
pub mod memory;
pub mod secrets;
pub mod tickets;

pub use clock::SystemClock;
pub use ledger::InMemoryUsageLedger;
pub use memory::InMemorySessionStore;
pub use secrets::{EnvSecretSource, FileSecretSource, LocalSource, LocalSourceError, TomlFileSecretSource};
pub use tickets::InMemoryTicketStore;
