//! sidekey's adapters: the technology behind each port, and the HTTP interface in front of the use cases.
//!
//! Depends on `domain` and `application`; `bin` wires these adapters together. Only this crate knows HTTP
//! statuses, and only its `http` module maps application errors to the contract's problem+json codes.
//!
//! # Layout
//! - [`bridge`]: real keys asked of a bridge over an event bus (in-process or Redis), sealed to the
//!   asking instance; the `sidekey bridge` side; rotation announcements.
//! - [`clock`]: [`SystemClock`], the `Clock` port on the operating system's wall clock.
//! - [`memory`]: [`InMemorySessionStore`], sessions in process memory with automatic expiry.
//! - [`redis`]: [`RedisSessionStore`], sessions in Redis (or Redis Cluster) shared by several instances,
//!   real keys sealed with a key derived from the token.
//! - [`secrets`]: [`EnvSecretSource`] (`SIDEKEY_SECRET_<ID>`) and [`FileSecretSource`] (`file:DIR`).
//! - [`identity`]: caller credentials: JWTs (JWKS or HS256) and Better Auth session tokens.
//! - [`directory`]: the user directory on PostgreSQL (Better Auth's `user` and `session` tables).
//! - [`http`]: the poem-openapi interface: session, admin and operations routes, problem+json errors,
//!   the bearer extractors, metrics and the OpenAPI document; the proxy routes and CORS.
//! - [`proxy`]: the protected proxy's transport: validated upstreams, the header rules, the streamed
//!   bodies and the pooled HTTP client that carries the real key to the upstreams that may have it.
#![forbid(unsafe_code)]

pub mod bridge;
pub mod clock;
pub mod directory;
pub mod http;
pub mod identity;
pub mod memory;
pub mod proxy;
pub mod redis;
pub mod secrets;

pub use clock::SystemClock;
pub use memory::InMemorySessionStore;
pub use proxy::{Proxy, UpstreamSettings};
pub use redis::{RedisSessionStore, RedisStoreSettings};
pub use secrets::{EnvSecretSource, FileSecretSource, TomlFileSecretSource};
