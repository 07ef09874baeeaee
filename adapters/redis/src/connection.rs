//! Connections: one Redis server (TCP, TLS or Unix socket) or a Redis Cluster behind one type, each
//! command bounded in time, connecting lazily and reconnecting by itself.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, ScriptInvocation, Value};
use tokio::sync::Mutex;

/// How many times the connection manager retries a failed connection attempt before the command that
/// waited on it fails. One: a refused connection fails a request within about a connect timeout (the
/// port demands a bounded answer), and the next request tries again anyway.
const CONNECT_RETRIES: usize = 1;
/// Pause before that retry (jittered): long enough not to hammer a restarting server, short against a
/// one-second connect timeout.
const RETRY_DELAY: Duration = Duration::from_millis(50);
/// Longest error text kept from Redis, so that an unexpected reply can never flood a log line.
const MAX_CAUSE_LEN: usize = 200;

/// The schemes of a Redis Cluster URL: `redis+cluster://host:port,host:port` (and TLS with `rediss+`).
const CLUSTER_SCHEMES: [(&str, &str); 2] = [("redis+cluster://", "redis"), ("rediss+cluster://", "rediss")];

/// A Redis URL or setting that cannot be used: a configuration error, refused at start-up. The text never
/// quotes the URL, which may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The URL does not parse (only the kind of error is kept: the detail may quote the URL).
    #[error("invalid Redis URL ({0}): expected redis://, rediss://, redis+unix:// or redis+cluster://")]
    InvalidUrl(String),
    /// `redis+cluster://` without any `host:port`.
    #[error("invalid Redis URL: redis+cluster:// needs at least one host:port")]
    NoClusterNode,
    /// The event bus was given a cluster.
    #[error("the event bus needs one Redis server, not a cluster")]
    ClusterBus,
    /// The key prefix is empty, or holds a brace or white space (a brace would change which part of
    /// every key Redis Cluster hashes, and so which slot it lands in).
    #[error("the Redis key prefix must be non-empty, without braces or whitespace")]
    InvalidPrefix,
}

/// Redis could not be reached, or did not answer in time. The text is the cause, for the log only; each
/// caller turns it into its port's error (the store's, the bus's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Where commands go, and how long each may take.
pub(crate) struct Connector {
    target: Target,
    /// The bound on one round trip, connecting included: the connect timeout plus the command timeout.
    deadline: Duration,
}

enum Target {
    /// One server. The manager connects lazily, keeps one multiplexed connection, and replaces it when
    /// it breaks: a command after Redis returns succeeds without any restart.
    Single(ConnectionManager),
    /// A cluster (boxed: its client is large, and the enum is built once).
    Cluster(Box<LazyCluster>),
}

/// A Redis Cluster connection made on first use (under the connect timeout) rather than at start-up, so
/// the service starts while the cluster is down; it is dropped and made again after a connection-level
/// failure.
struct LazyCluster {
    client: ClusterClient,
    /// A tokio mutex because connecting awaits: concurrent first requests wait for one attempt instead of
    /// each opening connections to every node.
    connection: Mutex<Option<ClusterConnection>>,
    connect_timeout: Duration,
}

/// A connection for one command or pipeline: cheap to clone (both kinds are handles to shared
/// multiplexed connections).
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Connector {
    /// A connector for `url`; connects nothing yet.
    ///
    /// # Errors
    /// [`ConfigError`] for an invalid URL.
    pub(crate) fn new(
        url: &str,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        if url.starts_with("rediss") {
            // redis's rustls support leaves the crypto provider to the application. Installing ring's
            // fails harmlessly when the process already chose one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let target = match cluster_nodes(url)? {
            Some(nodes) => {
                let client = ClusterClient::builder(nodes)
                    .connection_timeout(connect_timeout)
                    .response_timeout(command_timeout)
                    .retries(1)
                    .min_retry_wait(RETRY_DELAY.as_millis().try_into().unwrap_or(u64::MAX))
                    .max_retry_wait(command_timeout.as_millis().try_into().unwrap_or(u64::MAX))
                    .build()
                    .map_err(|error| invalid_url(&error))?;
                Target::Cluster(Box::new(LazyCluster {
                    client,
                    connection: Mutex::new(None),
                    connect_timeout,
                }))
            }
            None => {
                let client = redis::Client::open(url).map_err(|error| invalid_url(&error))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(command_timeout))
                    .set_number_of_retries(CONNECT_RETRIES)
                    .set_min_delay(RETRY_DELAY)
                    .set_max_delay(RETRY_DELAY * 4);
                let manager = ConnectionManager::new_lazy_with_config(client, config)
                    .map_err(|error| invalid_url(&error))?;
                Target::Single(manager)
            }
        };
        Ok(Self { target, deadline: connect_timeout + command_timeout })
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Sends one command.
    pub(crate) async fn query<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T, Unavailable> {
        self.bounded(what, |mut connection| async move { cmd.query_async(&mut connection).await }).await
    }

    /// Sends a pipeline (all of whose keys share one slot, for Redis Cluster).
    pub(crate) async fn pipeline<T: FromRedisValue>(
        &self,
        what: &str,
        pipeline: &Pipeline,
    ) -> Result<T, Unavailable> {
        self.bounded(what, |mut connection| async move { pipeline.query_async(&mut connection).await }).await
    }

    /// Runs a script by its hash, loading it first when Redis does not know it (`NOSCRIPT`: after a
    /// restart, a failover, or on a node that never saw it).
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        what: &str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        self.bounded(what, |mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await
    }

    /// Runs `request` on a connection within the deadline; every failure becomes [`Unavailable`].
    async fn bounded<T, F, Fut>(&self, what: &str, request: F) -> Result<T, Unavailable>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let attempt = async {
            let connection = self.connection().await?;
            request(connection).await.map_err(|error| {
                self.failed(&error);
                unavailable(what, &error)
            })
        };
        match tokio::time::timeout(self.deadline, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Unavailable(format!(
                "Redis did not answer {what} within {} ms",
                self.deadline.as_millis()
            ))),
        }
    }

    /// A connection to send on, connecting a cluster first if needed.
    async fn connection(&self) -> Result<Connection, Unavailable> {
        match &self.target {
            Target::Single(manager) => Ok(Connection::Single(manager.clone())),
            Target::Cluster(cluster) => {
                let LazyCluster { client, connection, connect_timeout } = &**cluster;
                let mut slot = connection.lock().await;
                if let Some(connection) = &*slot {
                    return Ok(Connection::Cluster(connection.clone()));
                }
                let connected = tokio::time::timeout(*connect_timeout, client.get_async_connection())
                    .await
                    .map_err(|_| {
                        Unavailable(format!(
                            "no Redis Cluster node answered within {} ms",
                            connect_timeout.as_millis()
                        ))
                    })?
                    .map_err(|error| unavailable("connect to the Redis Cluster", &error))?;
                *slot = Some(connected.clone());
                Ok(Connection::Cluster(connected))
            }
        }
    }

    /// After a connection-level failure on a cluster, drop the connection so the next request makes a
    /// fresh one (the single-server manager does the same by itself).
    fn failed(&self, error: &RedisError) {
        if let Target::Cluster(cluster) = &self.target
            && (error.is_unrecoverable_error()
                || error.is_connection_dropped()
                || error.is_connection_refusal())
            && let Ok(mut slot) = cluster.connection.try_lock()
        {
            *slot = None;
        }
    }
}

/// A client for the cache's invalidation subscriber: the server `url` names (one server, not a
/// cluster), speaking RESP3, so that pub/sub messages arrive as pushes on an ordinary multiplexed
/// connection (in order with the replies to its heartbeat `PING`s) and reach the subscriber on a tokio
/// channel. Redis 6 and later speak RESP3; the scripts need 6.2 anyway.
///
/// # Errors
/// [`ConfigError`] for an invalid URL, as [`Connector::new`].
pub(crate) fn subscriber_client(url: &str) -> Result<redis::Client, ConfigError> {
    let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(|error| invalid_url(&error))?;
    let resp3 = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(resp3)).map_err(|error| invalid_url(&error))
}

/// The node URLs of a cluster URL (`redis+cluster://[user:password@]host:port,host:port[/db][#insecure]`),
/// or `None` for any other URL. Credentials, database and fragment apply to every node.
fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>, ConfigError> {
    let Some((rest, scheme)) = CLUSTER_SCHEMES
        .iter()
        .find_map(|(prefix, scheme)| url.strip_prefix(prefix).map(|rest| (rest, *scheme)))
    else {
        return Ok(None);
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, format!("#{fragment}")),
        None => (rest, String::new()),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    let (credentials, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .filter(|host| !host.is_empty())
        .map(|host| format!("{scheme}://{credentials}{host}{path}{fragment}"))
        .collect();
    if nodes.is_empty() {
        return Err(ConfigError::NoClusterNode);
    }
    Ok(Some(nodes))
}

fn invalid_url(error: &RedisError) -> ConfigError {
    // Only the kind: the detail of a parse error may quote the URL, and the URL may hold a password.
    ConfigError::InvalidUrl(format!("{:?}", error.kind()))
}

/// A Redis failure, for the log. Redis's messages carry no values we sent (scripts report their line and
/// the failing command's complaint), but the text is capped all the same.
pub(crate) fn unavailable(what: &str, error: &RedisError) -> Unavailable {
    let mut cause = format!("Redis {what} failed: {error}");
    if cause.len() > MAX_CAUSE_LEN {
        cause.truncate(cause.floor_char_boundary(MAX_CAUSE_LEN));
        cause.push('…');
    }
    Unavailable(cause)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_every_node_with_the_shared_credentials() {
        assert_eq!(cluster_nodes("redis://127.0.0.1:6379").unwrap(), None);
        assert_eq!(cluster_nodes("redis+unix:///run/redis.sock").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap(),
            Some(vec!["redis://127.0.0.1:7000".to_owned(), "redis://127.0.0.1:7001".to_owned()])
        );
        assert_eq!(
            cluster_nodes("rediss+cluster://user:p%40ss@a:1,b:2/0#insecure").unwrap(),
            Some(vec![
                "rediss://user:p%40ss@a:1/0#insecure".to_owned(),
                "rediss://user:p%40ss@b:2/0#insecure".to_owned()
            ])
        );
        assert!(cluster_nodes("redis+cluster://").is_err());
    }

    #[tokio::test]
    async fn only_an_invalid_url_is_refused_and_the_refusal_does_not_quote_it() {
        let timeout = Duration::from_millis(100);
        assert!(Connector::new("redis://127.0.0.1:1", timeout, timeout).is_ok());
        assert!(Connector::new("redis+cluster://127.0.0.1:1,127.0.0.1:2", timeout, timeout).is_ok());
        for url in ["http://user:hunter2@host", "not a url", "redis+cluster://"] {
            let error = Connector::new(url, timeout, timeout).err().unwrap();
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn long_causes_are_cut() {
        let error = RedisError::from((redis::ErrorKind::Io, "boom", "x".repeat(1000)));
        let Unavailable(cause) = unavailable("ping", &error);
        assert!(cause.chars().count() <= MAX_CAUSE_LEN + 1, "{cause}");
    }
}
