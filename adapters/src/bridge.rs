//! Real keys held by someone else: a *bridge* answers secret requests over an event bus.
//!
//! - [`protocol`]: the messages, their authentication by the shared bridge secret, and the sealing of
//!   each real key to the one instance that asked (X25519, HKDF-SHA256, XChaCha20-Poly1305).
//! - [`EventBusSecretSource`]: the `SecretSource` port over any [`EventBus`](sidekey_application::EventBus),
//!   with a timeout, single flight per `secret_key_id` and a bound on waiting requests.
//! - [`Bridge`]: the answering side (`sidekey bridge`), which also announces rotated or withdrawn keys.
//! - [`spawn_rotation_listener`]: the instances' side of those announcements.
//! - Two buses: [`InProcessBus`] (tokio channels) and [`RedisBus`] (streams and pub/sub).

mod in_process;
pub mod protocol;
mod redis_bus;
mod responder;
mod rotation;
mod source;

pub use in_process::InProcessBus;
pub use protocol::{AnnouncementReason, BridgeSecret};
pub use redis_bus::{RedisBus, RedisBusSettings};
pub use responder::{Bridge, BridgeSettings, announce};
pub use rotation::{MAX_ANNOUNCEMENT_AGE, spawn_rotation_listener};
pub use source::{BusSourceSettings, DEFAULT_MAX_PENDING, EventBusSecretSource};
