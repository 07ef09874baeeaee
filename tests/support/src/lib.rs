//! What sidekey's test suites share, so that no test binary carries its own copy (dev-dependency only).
//!
//! # Layout
//! - [`clock`]: [`ManualClock`], a `Clock` the test moves by hand.
//! - [`ledger_contract`]: the `UsageLedger` contract, one suite that every ledger runs.
//! - [`store_contract`]: the `SessionStore` contract, one suite that every store runs.
//! - `redis_server`, `postgres_server`: private servers for outage tests (features `redis`, `postgres`).
#![forbid(unsafe_code)]

pub mod clock;
pub mod ledger_contract;
#[cfg(feature = "postgres")]
pub mod postgres_server;
#[cfg(feature = "redis")]
pub mod redis_server;
pub mod store_contract;

pub use clock::ManualClock;
