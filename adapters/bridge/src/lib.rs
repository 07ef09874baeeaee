//! Real keys held by someone else: a *bridge* answers secret requests over an event bus.
//!
//! - [`protocol`]: the messages, their authentication by the shared bridge secret, and the sealing of
//!   each real key to the one instance that asked (X25519, HKDF-SHA256, XChaCha20-Poly1305).
//! - [`EventBusSecretSource`]: the `SecretSource` port over any [`EventBus`](sidekey_application::EventBus),
//!   with a timeout, single flight per `secret_key_id` and a bound on waiting requests.
//! - [`Bridge`]: the answering side (`sidekey bridge`), which also announces rotated or withdrawn keys.
//! - [`spawn_rotation_listener`]: the instances' side of those announcements.
//! - [`InProcessBus`]: a bus over tokio channels, for one process and the tests. The Redis bus lives in
//!   `sidekey-redis`, behind the `redis` feature of the binary.
//!
//! Depends on `domain` and `application`; knows no bus technology: it speaks the `EventBus` port.
//!
//! # Layout
//! - `config`: their settings as configuration spells them; `protocol`: the messages and their cryptography; `source`: the asking side; `responder`: the
//!   answering side; `rotation`: announcements; `in_process`: the in-process bus.
#![forbid(unsafe_code)]

pub mod config;
mod in_process;
pub mod protocol;
mod responder;
mod rotation;
mod source;

pub use config::{BridgeConfig, BusSourceConfig};
pub use in_process::InProcessBus;
pub use protocol::{AnnouncementReason, BridgeSecret};
pub use responder::{Bridge, BridgeSettings, announce};
pub use rotation::{MAX_ANNOUNCEMENT_AGE, spawn_rotation_listener};
pub use source::{BusSourceSettings, DEFAULT_MAX_PENDING, EventBusSecretSource};
