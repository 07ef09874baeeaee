//! What sidekey's test suites share, so that no test binary carries its own copy (dev-dependency only).
//!
//! # Layout
//! - [`services`]: where the shared Redis and PostgreSQL are ([`redis_url`], [`database_url`], features
//!   `redis` and `postgres`), and what a test does when a service or a program is missing: skip with
//!   the reason printed, or fail under `CI=true` ([`under_ci`], [`skip`], [`skip_unless_installed`]).
//! - [`unique`]: what keeps tests apart: [`random_hex`], [`free_port`], [`TempDir`].
//! - [`clock`]: [`ManualClock`], a `Clock` the test moves by hand.
//! - [`ledger_contract`]: the `UsageLedger` contract, one suite that every ledger runs.
//! - [`ticket_contract`]: the `TicketStore` contract, one suite that every ticket store runs.
//! - [`store_contract`]: the `SessionStore` contract, one suite that every store runs.
//! - `redis_server`, `postgres_server`: private servers for outage tests (features `redis`, `postgres`).
#![forbid(unsafe_code)]

pub mod clock;
pub mod ledger_contract;
#[cfg(feature = "postgres")]
pub mod postgres_server;
#[cfg(feature = "redis")]
pub mod redis_server;
pub mod services;
pub mod store_contract;
pub mod ticket_contract;
pub mod unique;

pub use clock::ManualClock;
#[cfg(feature = "postgres")]
pub use services::{database_url, database_url_setting};
#[cfg(feature = "redis")]
pub use services::{redis_url, redis_url_setting, single_redis_url};
pub use services::{skip, skip_unless_installed, under_ci};
pub use unique::{TempDir, free_port, random_hex};
