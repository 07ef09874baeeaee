//! [`EventBus`]: the bus between sidekey instances and the bridges that hold real keys.

use async_trait::async_trait;

/// The event bus could not carry a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The bus cannot be reached now. The text is for the log only and never holds a message.
    #[error("the event bus is unavailable: {0}")]
    Unavailable(String),
}

/// Messages arriving from an [`EventBus`], in order.
#[async_trait]
pub trait BusFeed: Send {
    /// The next message; `None` once the bus is closed for good. A feed over a network bus survives
    /// reconnections by itself (messages sent while it was disconnected may be lost).
    async fn next(&mut self) -> Option<Vec<u8>>;
}

/// The event bus between sidekey instances and the bridges that hold real keys.
///
/// It carries opaque messages (the bridge protocol, with its sealing and authentication, lies above
/// it) with three kinds of delivery:
/// - a *request* reaches exactly one bridge, however many are listening (a work queue);
/// - a *reply* reaches exactly the instance whose inbox it names;
/// - an *announcement* reaches every instance.
///
/// # Errors
/// Every method of every implementation:
/// - MUST return [`BusError::Unavailable`] when the bus cannot be reached, and MUST do so within a
///   bounded time (an issuance waits on it);
/// - MUST NOT put a message, or anything from one, into the error text: messages carry sealed keys.
///
/// Opening a feed ([`EventBus::open_inbox`], [`EventBus::requests`], [`EventBus::announcements`]) MAY
/// succeed while the bus is down: the feed then connects, and reconnects, by itself.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Queues a request for exactly one bridge.
    async fn send_request(&self, request: Vec<u8>) -> Result<(), BusError>;

    /// Delivers a reply to the instance whose inbox is `inbox`.
    async fn send_reply(&self, inbox: &str, reply: Vec<u8>) -> Result<(), BusError>;

    /// Delivers an announcement to every instance.
    async fn announce(&self, announcement: Vec<u8>) -> Result<(), BusError>;

    /// Opens this instance's inbox: its address (to name in requests) and the replies sent to it.
    async fn open_inbox(&self) -> Result<(String, Box<dyn BusFeed>), BusError>;

    /// The requests, for a bridge: each reaches one of the bridges that consume them.
    async fn requests(&self) -> Result<Box<dyn BusFeed>, BusError>;

    /// The announcements from now on.
    async fn announcements(&self) -> Result<Box<dyn BusFeed>, BusError>;

    /// Whether the bus can carry messages now (for readiness probes).
    async fn ping(&self) -> Result<(), BusError>;
}
