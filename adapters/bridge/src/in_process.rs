//! [`InProcessBus`]: the event bus inside one process, on tokio channels. For a bridge embedded in the
//! same process as sidekey (and for tests of everything above the bus).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use sidekey_application::{BusError, BusFeed, EventBus};
use tokio::sync::{broadcast, mpsc};

/// How many messages each queue holds before senders are refused (a bridge that stopped reading).
const QUEUE_CAPACITY: usize = 1024;

/// An event bus on tokio channels: requests on one queue shared by every bridge feed (each request goes
/// to whichever bridge reads it first), one queue per inbox, a broadcast channel for announcements.
#[derive(Clone)]
pub struct InProcessBus {
    shared: Arc<Shared>,
}

struct Shared {
    requests: mpsc::Sender<Vec<u8>>,
    request_queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>>,
    inboxes: Mutex<HashMap<String, mpsc::Sender<Vec<u8>>>>,
    announcements: broadcast::Sender<Vec<u8>>,
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus").finish_non_exhaustive()
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessBus {
    /// An empty bus.
    pub fn new() -> Self {
        let (requests, request_queue) = mpsc::channel(QUEUE_CAPACITY);
        let (announcements, _) = broadcast::channel(QUEUE_CAPACITY);
        Self {
            shared: Arc::new(Shared {
                requests,
                request_queue: Arc::new(tokio::sync::Mutex::new(request_queue)),
                inboxes: Mutex::new(HashMap::new()),
                announcements,
            }),
        }
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn send_request(&self, request: Vec<u8>) -> Result<(), BusError> {
        self.shared
            .requests
            .try_send(request)
            .map_err(|_| BusError::Unavailable("the request queue is full".to_owned()))
    }

    async fn send_reply(&self, inbox: &str, reply: Vec<u8>) -> Result<(), BusError> {
        let sender = self.shared.inboxes.lock().unwrap_or_else(PoisonError::into_inner).get(inbox).cloned();
        // Like pub/sub: a reply to an inbox no one reads is dropped.
        if let Some(sender) = sender {
            let _ = sender.try_send(reply);
        }
        Ok(())
    }

    async fn announce(&self, announcement: Vec<u8>) -> Result<(), BusError> {
        // No subscriber is not an error: no instance is listening yet.
        let _ = self.shared.announcements.send(announcement);
        Ok(())
    }

    async fn open_inbox(&self) -> Result<(String, Box<dyn BusFeed>), BusError> {
        let address = format!("inbox:{}", uuid::Uuid::new_v4());
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        self.shared.inboxes.lock().unwrap_or_else(PoisonError::into_inner).insert(address.clone(), sender);
        Ok((address, Box::new(QueueFeed(receiver))))
    }

    async fn requests(&self) -> Result<Box<dyn BusFeed>, BusError> {
        Ok(Box::new(SharedQueueFeed(self.shared.request_queue.clone())))
    }

    async fn announcements(&self) -> Result<Box<dyn BusFeed>, BusError> {
        Ok(Box::new(BroadcastFeed(self.shared.announcements.subscribe())))
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }
}

/// A feed over a queue of its own.
pub(crate) struct QueueFeed(pub(crate) mpsc::Receiver<Vec<u8>>);

#[async_trait]
impl BusFeed for QueueFeed {
    async fn next(&mut self) -> Option<Vec<u8>> {
        self.0.recv().await
    }
}

/// A feed over the queue that every bridge reads: whoever locks it first takes the next request.
struct SharedQueueFeed(Arc<tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>>);

#[async_trait]
impl BusFeed for SharedQueueFeed {
    async fn next(&mut self) -> Option<Vec<u8>> {
        self.0.lock().await.recv().await
    }
}

struct BroadcastFeed(broadcast::Receiver<Vec<u8>>);

#[async_trait]
impl BusFeed for BroadcastFeed {
    async fn next(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.0.recv().await {
                Ok(message) => return Some(message),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "announcements were lost: this listener fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
