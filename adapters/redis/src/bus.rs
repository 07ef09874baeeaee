//! [`RedisBus`]: the event bus on one Redis server, shared by every sidekey instance and every bridge.
//!
//! | delivery | Redis | name |
//! |---|---|---|
//! | requests, to exactly one bridge | a stream read by the consumer group `bridges` (`XREADGROUP … NOACK`) | `{prefix}:bridge:requests` |
//! | replies, to exactly one instance | pub/sub, one channel per instance | `{prefix}:bridge:inbox:{uuid}` |
//! | announcements, to every instance | a stream each instance reads on its own (`XREAD`) | `{prefix}:bridge:announcements` |
//!
//! Both streams are capped (`MAXLEN ~`): a request is worthless after its timeout, and an announcement
//! after the bridge's maximum announcement age (five minutes). Announcements go through a stream rather than pub/sub so that
//! an instance whose connection dropped for a moment reads those it missed when it reconnects.
//!
//! Every feed runs on a connection of its own (blocking reads would hold up a shared one) and
//! reconnects by itself with bounded backoff.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use sidekey_application::{BusError, BusFeed, EventBus};
use tokio::sync::mpsc;

use crate::connection::{ConfigError, Connector, Unavailable, subscriber_client};

/// The consumer group of the bridges on the request stream.
const BRIDGE_GROUP: &str = "bridges";
/// How many entries the request stream keeps (about: `MAXLEN ~`).
const REQUEST_STREAM_LEN: usize = 10_000;
/// How many entries the announcement stream keeps.
const ANNOUNCEMENT_STREAM_LEN: usize = 1_000;
/// How long one blocking read waits before it is sent again (and the feed checks it is still wanted).
const BLOCK: Duration = Duration::from_secs(1);
/// How often the inbox subscription checks its connection.
const HEARTBEAT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Messages a feed holds before its reader takes them.
const FEED_CAPACITY: usize = 1024;

/// Where the bus is and how long each command may take.
#[derive(Debug, Clone)]
pub struct RedisBusSettings {
    /// `redis://`, `rediss://` or `redis+unix://` (not a cluster).
    pub url: String,
    /// The prefix of every key and channel.
    pub prefix: String,
    /// The bound on connecting.
    pub connect_timeout: Duration,
    /// The bound on one command.
    pub command_timeout: Duration,
}

/// The event bus on Redis (see the module documentation for the layout).
pub struct RedisBus {
    connector: Connector,
    client: redis::Client,
    resp3_client: redis::Client,
    settings: RedisBusSettings,
    requests_key: String,
    announcements_key: String,
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus").field("prefix", &self.settings.prefix).finish_non_exhaustive()
    }
}

impl RedisBus {
    /// A bus on the server `settings.url` names; connects nothing yet (the service starts while Redis
    /// is down).
    ///
    /// # Errors
    /// [`ConfigError`] for an invalid URL, or a cluster URL (the bus needs one server). The text never
    /// quotes the URL.
    pub fn new(settings: RedisBusSettings) -> Result<Self, ConfigError> {
        if settings.url.contains("+cluster://") {
            return Err(ConfigError::ClusterBus);
        }
        let connector = Connector::new(&settings.url, settings.connect_timeout, settings.command_timeout)?;
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|error| ConfigError::InvalidUrl(format!("{:?}", error.kind())))?;
        let resp3_client = subscriber_client(&settings.url)?;
        Ok(Self {
            connector,
            client,
            resp3_client,
            requests_key: format!("{}:bridge:requests", settings.prefix),
            announcements_key: format!("{}:bridge:announcements", settings.prefix),
            settings,
        })
    }

    fn spawn_feed<F, Fut>(&self, run: F) -> Box<dyn BusFeed>
    where
        F: FnOnce(mpsc::Sender<Vec<u8>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(FEED_CAPACITY);
        tokio::spawn(run(sender));
        Box::new(ChannelFeed(receiver))
    }

    /// Appends `message` to the capped stream `key`.
    async fn append(&self, what: &str, key: &str, max_len: usize, message: Vec<u8>) -> Result<(), BusError> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(key).arg("MAXLEN").arg("~").arg(max_len).arg("*").arg("m").arg(message);
        self.connector.query::<Value>(what, &cmd).await.map(drop).map_err(bus_error)
    }

    fn reader(&self) -> Reader {
        Reader {
            client: self.client.clone(),
            connect_timeout: self.settings.connect_timeout,
            command_timeout: self.settings.command_timeout,
        }
    }
}

fn bus_error(Unavailable(cause): Unavailable) -> BusError {
    BusError::Unavailable(cause)
}

#[async_trait]
impl EventBus for RedisBus {
    async fn send_request(&self, request: Vec<u8>) -> Result<(), BusError> {
        self.append("XADD request", &self.requests_key, REQUEST_STREAM_LEN, request).await
    }

    async fn send_reply(&self, inbox: &str, reply: Vec<u8>) -> Result<(), BusError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(inbox).arg(reply);
        self.connector.query::<Value>("PUBLISH reply", &cmd).await.map(drop).map_err(bus_error)
    }

    async fn announce(&self, announcement: Vec<u8>) -> Result<(), BusError> {
        self.append("XADD announcement", &self.announcements_key, ANNOUNCEMENT_STREAM_LEN, announcement).await
    }

    async fn open_inbox(&self) -> Result<(String, Box<dyn BusFeed>), BusError> {
        let channel = format!("{}:bridge:inbox:{}", self.settings.prefix, uuid::Uuid::new_v4());
        let subscription = Subscription {
            client: self.resp3_client.clone(),
            channel: channel.clone(),
            connect_timeout: self.settings.connect_timeout,
            command_timeout: self.settings.command_timeout,
        };
        // Wait for the first subscription (within the timeouts), so that the replies to the first
        // requests are not published before anyone listens. Redis being down does not stop start-up:
        // the subscription keeps trying in the background.
        let (subscribed, first) = tokio::sync::oneshot::channel();
        let feed = self.spawn_feed(|sender| subscription.run(sender, subscribed));
        let bound = self.settings.connect_timeout + self.settings.command_timeout;
        if !matches!(tokio::time::timeout(bound, first).await, Ok(Ok(()))) {
            tracing::warn!("the bridge inbox is not subscribed yet; replies will be lost until it is");
        }
        Ok((channel, feed))
    }

    async fn requests(&self) -> Result<Box<dyn BusFeed>, BusError> {
        // Create the group before returning, so that a bridge that says it is ready misses no request
        // sent from then on. Redis being down is not fatal: the feed creates it when it connects.
        let mut create = redis::cmd("XGROUP");
        create.arg("CREATE").arg(&self.requests_key).arg(BRIDGE_GROUP).arg("$").arg("MKSTREAM");
        match self.connector.query::<Value>("XGROUP CREATE", &create).await {
            Ok(_) => {}
            Err(error) if error.to_string().contains("BUSYGROUP") => {}
            Err(error) => tracing::warn!(%error, "cannot create the bridges' consumer group yet"),
        }
        let reader = self.reader();
        let key = self.requests_key.clone();
        let consumer = uuid::Uuid::new_v4().to_string();
        Ok(self.spawn_feed(|sender| reader.run(sender, ReadRequests { key, consumer })))
    }

    async fn announcements(&self) -> Result<Box<dyn BusFeed>, BusError> {
        let reader = self.reader();
        let key = self.announcements_key.clone();
        Ok(self.spawn_feed(|sender| reader.run(sender, ReadAnnouncements { key, last_id: None })))
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.connector.query::<Value>("PING", &redis::cmd("PING")).await.map(drop).map_err(bus_error)
    }
}

/// A stream reader's loop: connect, read, forward; on failure wait and connect again. Stops when the
/// feed is dropped.
struct Reader {
    client: redis::Client,
    connect_timeout: Duration,
    command_timeout: Duration,
}

/// What a reader reads.
trait StreamRead: Send {
    /// Prepares a fresh connection (creates the group, finds where to start).
    async fn prepare(&mut self, connection: &mut MultiplexedConnection) -> Result<(), String>;
    /// One blocking read.
    async fn read(&mut self, connection: &mut MultiplexedConnection) -> Result<Vec<Vec<u8>>, String>;
}

impl Reader {
    async fn run(self, sender: mpsc::Sender<Vec<u8>>, mut what: impl StreamRead) {
        let mut backoff = BACKOFF_MIN;
        while !sender.is_closed() {
            match self.serve(&sender, &mut what).await {
                Ok(()) => return,
                Err(cause) => {
                    tracing::warn!(%cause, "event bus feed lost; reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn serve(&self, sender: &mpsc::Sender<Vec<u8>>, what: &mut impl StreamRead) -> Result<(), String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            // A blocking read answers within BLOCK; a server that does not is gone.
            .set_response_timeout(Some(BLOCK + self.command_timeout));
        let mut connection = tokio::time::timeout(
            self.connect_timeout + self.command_timeout,
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|error| format!("connecting failed: {error}"))?;
        what.prepare(&mut connection).await?;
        loop {
            for message in what.read(&mut connection).await? {
                if sender.send(message).await.is_err() {
                    return Ok(());
                }
            }
            if sender.is_closed() {
                return Ok(());
            }
        }
    }
}

/// The bridges' side of the request stream.
struct ReadRequests {
    key: String,
    consumer: String,
}

impl StreamRead for ReadRequests {
    async fn prepare(&mut self, connection: &mut MultiplexedConnection) -> Result<(), String> {
        // `$`: a bridge joining the first time answers requests from now on, not an old backlog.
        let created: Result<Value, _> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.key)
            .arg(BRIDGE_GROUP)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(connection)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            Err(error) => Err(format!("XGROUP CREATE failed: {error}")),
        }
    }

    async fn read(&mut self, connection: &mut MultiplexedConnection) -> Result<Vec<Vec<u8>>, String> {
        // NOACK: a request is answered at most once, and a bridge that dies holding one leaves the
        // requester to its timeout; nothing piles up in a pending list.
        let reply: Result<Option<StreamReadReply>, _> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(BRIDGE_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(64)
            .arg("BLOCK")
            .arg(BLOCK.as_millis().to_string())
            .arg("NOACK")
            .arg("STREAMS")
            .arg(&self.key)
            .arg(">")
            .query_async(connection)
            .await;
        match reply {
            Ok(reply) => Ok(messages(reply)),
            // The stream or group was deleted (a flushed Redis): make them again.
            Err(error) if error.code() == Some("NOGROUP") => {
                self.prepare(connection).await?;
                Ok(Vec::new())
            }
            Err(error) => Err(format!("XREADGROUP failed: {error}")),
        }
    }
}

/// An instance's reading of the announcement stream.
struct ReadAnnouncements {
    key: String,
    /// The last entry read; `None` until the first connection found where the stream ends.
    last_id: Option<String>,
}

impl StreamRead for ReadAnnouncements {
    async fn prepare(&mut self, connection: &mut MultiplexedConnection) -> Result<(), String> {
        if self.last_id.is_none() {
            // Start after the newest entry: announcements from before this instance started concern
            // sessions other instances were there to revoke. After a reconnection, `last_id` is kept,
            // so those missed meanwhile are read.
            let newest: StreamRangeReply = redis::cmd("XREVRANGE")
                .arg(&self.key)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(connection)
                .await
                .map_err(|error| format!("XREVRANGE failed: {error}"))?;
            self.last_id =
                Some(newest.ids.first().map_or_else(|| "0-0".to_owned(), |entry| entry.id.clone()));
        }
        Ok(())
    }

    async fn read(&mut self, connection: &mut MultiplexedConnection) -> Result<Vec<Vec<u8>>, String> {
        let last_id = self.last_id.clone().unwrap_or_else(|| "0-0".to_owned());
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(64)
            .arg("BLOCK")
            .arg(BLOCK.as_millis().to_string())
            .arg("STREAMS")
            .arg(&self.key)
            .arg(&last_id)
            .query_async(connection)
            .await
            .map_err(|error| format!("XREAD failed: {error}"))?;
        if let Some(newest) =
            reply.as_ref().and_then(|reply| reply.keys.first()).and_then(|key| key.ids.last())
        {
            self.last_id = Some(newest.id.clone());
        }
        Ok(messages(reply))
    }
}

/// The `m` field of every entry read.
fn messages(reply: Option<StreamReadReply>) -> Vec<Vec<u8>> {
    let Some(reply) = reply else { return Vec::new() };
    reply
        .keys
        .into_iter()
        .flat_map(|key| key.ids)
        .filter_map(|mut entry| match entry.map.remove("m") {
            Some(Value::BulkString(bytes)) => Some(bytes),
            _ => None,
        })
        .collect()
}

/// An instance's inbox: a pub/sub subscription on a RESP3 connection of its own, checked by a heartbeat.
struct Subscription {
    client: redis::Client,
    channel: String,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl Subscription {
    async fn run(self, sender: mpsc::Sender<Vec<u8>>, subscribed: tokio::sync::oneshot::Sender<()>) {
        let mut backoff = BACKOFF_MIN;
        let mut subscribed = Some(subscribed);
        while !sender.is_closed() {
            match self.serve(&sender, &mut subscribed).await {
                Ok(()) => return,
                Err(cause) => {
                    tracing::warn!(%cause, "bridge inbox subscription lost; resubscribing");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn serve(
        &self,
        sender: &mpsc::Sender<Vec<u8>>,
        subscribed: &mut Option<tokio::sync::oneshot::Sender<()>>,
    ) -> Result<(), String> {
        let (pushes_sender, mut pushes) = mpsc::unbounded_channel();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.command_timeout))
            .set_push_sender(pushes_sender);
        let mut connection = tokio::time::timeout(
            self.connect_timeout + self.command_timeout,
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| "connecting timed out".to_owned())?
        .map_err(|error| format!("connecting failed: {error}"))?;
        connection.subscribe(&self.channel).await.map_err(|error| format!("SUBSCRIBE failed: {error}"))?;
        tracing::debug!("bridge inbox subscribed");
        if let Some(subscribed) = subscribed.take() {
            let _ = subscribed.send(());
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(PushInfo { kind, data }) = push else {
                        return Err("the connection closed".to_owned());
                    };
                    match kind {
                        PushKind::Message => {
                            if let Some(Value::BulkString(payload)) = data.into_iter().nth(1)
                                && sender.send(payload).await.is_err()
                            {
                                return Ok(());
                            }
                        }
                        PushKind::Disconnection => return Err("the connection dropped".to_owned()),
                        _ => {}
                    }
                }
                _ = heartbeat.tick() => {
                    if sender.is_closed() {
                        return Ok(());
                    }
                    redis::cmd("PING")
                        .query_async::<Value>(&mut connection)
                        .await
                        .map_err(|error| format!("the heartbeat PING failed: {error}"))?;
                }
            }
        }
    }
}

/// A feed's messages, put on a channel by the task that reads Redis.
struct ChannelFeed(mpsc::Receiver<Vec<u8>>);

#[async_trait]
impl BusFeed for ChannelFeed {
    async fn next(&mut self) -> Option<Vec<u8>> {
        self.0.recv().await
    }
}
