//! Where the shared Redis and PostgreSQL are, and what a test does when a service or a tool is missing.
//!
//! Tests take the services from `REDIS_URL` and `DATABASE_URL` (unset or empty: the local defaults) and
//! ask for them through [`redis_url`] and [`database_url`], which check that the service answers. When it
//! does not (or a program is not installed, [`skip_unless_installed`]), the test prints why and returns,
//! except under `CI=true`, where a test that cannot run is a failure, not a pass.
//!
//! Messages name the variable, never its value: a service URL may hold a password.

use std::fmt::Display;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
#[cfg(any(feature = "redis", feature = "postgres"))]
use std::time::Duration;

/// The Redis used when `REDIS_URL` is unset: the local server on its default port.
#[cfg(feature = "redis")]
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// The PostgreSQL used when `DATABASE_URL` is unset: the local server, as its superuser, with the trust
/// authentication a development or CI server has.
#[cfg(feature = "postgres")]
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long a service may take to answer the reachability check: a local server answers within
/// milliseconds, and without a bound an address that drops packets would hang the test for the OS's
/// connect timeout (minutes).
#[cfg(any(feature = "redis", feature = "postgres"))]
const REACHABLE_WITHIN: Duration = Duration::from_secs(3);

/// Whether `CI=true` (as GitHub Actions and most CI services set it): a test that cannot run then fails.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Prints that the calling test is skipped and why, so that the caller can return; panics with the reason
/// under `CI=true`.
pub fn skip(reason: impl Display) {
    assert!(!under_ci(), "{reason}, and CI=true requires it");
    eprintln!("skipped: {reason}");
}

/// Where `program` is on the `PATH`, if it is.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file someone may execute.
pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether `test` must be skipped because one of `tools` is not on the `PATH`: prints the reason and returns
/// `true`, or panics under `CI=true`.
pub fn skip_unless_installed(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|tool| find_on_path(tool).is_none()).collect();
    if missing.is_empty() {
        return false;
    }
    skip(format_args!("{test}: {} not found on PATH", missing.join(", ")));
    true
}

/// The value of `variable`, or `default` when it is unset or empty.
#[cfg(any(feature = "redis", feature = "postgres"))]
fn setting(variable: &str, default: &str) -> String {
    std::env::var(variable)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Where a setting came from, for messages: the variable's name, or the default's URL (which holds no
/// password).
#[cfg(any(feature = "redis", feature = "postgres"))]
fn described(variable: &str, default: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => variable.to_owned(),
        _ => format!("{default} ({variable} is unset)"),
    }
}

/// `REDIS_URL`, or [`DEFAULT_REDIS_URL`]; not checked (see [`redis_url`]).
#[cfg(feature = "redis")]
pub fn redis_url_setting() -> String {
    setting("REDIS_URL", DEFAULT_REDIS_URL)
}

/// The node URLs of a Redis Cluster URL (`redis+cluster://host:port,host:port`, `rediss+cluster://…`
/// for TLS), or `None` for the URL of a single server.
pub fn cluster_node_urls(url: &str) -> Option<Vec<String>> {
    [("redis+cluster://", "redis"), ("rediss+cluster://", "rediss")].iter().find_map(
        |(scheme, node_scheme)| {
            let hosts = url.strip_prefix(scheme)?;
            Some(hosts.split(',').map(|host| format!("{node_scheme}://{host}")).collect())
        },
    )
}

/// The Redis for a test: [`redis_url_setting`] once every node of it answered `PING`; `None` (with the
/// reason printed) when one does not, or a panic under `CI=true`.
#[cfg(feature = "redis")]
pub async fn redis_url() -> Option<String> {
    let url = redis_url_setting();
    let nodes = cluster_node_urls(&url).unwrap_or_else(|| vec![url.clone()]);
    for node in &nodes {
        if let Err(why) = ping_redis(node).await {
            let at = described("REDIS_URL", DEFAULT_REDIS_URL);
            skip(format_args!("Redis is not reachable at {at} ({why}); set REDIS_URL or start redis-server"));
            return None;
        }
    }
    Some(url)
}

/// [`redis_url`], for tests of what exists on a single server only (the store's local cache, which is
/// off on a cluster): a cluster URL skips them, under CI too, since there is nothing there to test.
#[cfg(feature = "redis")]
pub async fn single_redis_url() -> Option<String> {
    if cluster_node_urls(&redis_url_setting()).is_some() {
        eprintln!("skipped: REDIS_URL is a Redis Cluster, and this test needs a single server");
        return None;
    }
    redis_url().await
}

/// Connects to one Redis server and sends `PING`, within [`REACHABLE_WITHIN`].
#[cfg(feature = "redis")]
async fn ping_redis(url: &str) -> Result<(), String> {
    let ping = async {
        let client = redis::Client::open(url).map_err(|error| error.to_string())?;
        let mut connection =
            client.get_multiplexed_async_connection().await.map_err(|error| error.to_string())?;
        redis::cmd("PING").query_async::<String>(&mut connection).await.map_err(|error| error.to_string())
    };
    match tokio::time::timeout(REACHABLE_WITHIN, ping).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(format!("no answer within {REACHABLE_WITHIN:?}")),
    }
}

/// `DATABASE_URL`, or [`DEFAULT_DATABASE_URL`]; not checked (see [`database_url`]).
#[cfg(feature = "postgres")]
pub fn database_url_setting() -> String {
    setting("DATABASE_URL", DEFAULT_DATABASE_URL)
}

/// The PostgreSQL for a test: [`database_url_setting`] once a connection to it answered a query; `None`
/// (with the reason printed) when it does not, or a panic under `CI=true`.
#[cfg(feature = "postgres")]
pub async fn database_url() -> Option<String> {
    let url = database_url_setting();
    match query_postgres(&url).await {
        Ok(()) => Some(url),
        Err(why) => {
            let at = described("DATABASE_URL", DEFAULT_DATABASE_URL);
            skip(format_args!("PostgreSQL is not reachable at {at} ({why}); set DATABASE_URL or start it"));
            None
        }
    }
}

/// Connects to PostgreSQL and runs `SELECT 1`, within [`REACHABLE_WITHIN`].
#[cfg(feature = "postgres")]
async fn query_postgres(url: &str) -> Result<(), String> {
    // The error's text and its source, never the URL.
    let text = |error: tokio_postgres::Error| match std::error::Error::source(&error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    };
    let check = async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(text)?;
        let driver = tokio::spawn(connection);
        let answered = client.simple_query("SELECT 1").await.map(drop).map_err(text);
        drop(client);
        let _ = driver.await;
        answered
    };
    tokio::time::timeout(REACHABLE_WITHIN, check)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REACHABLE_WITHIN:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_each_node_under_the_plain_or_tls_scheme() {
        assert_eq!(
            cluster_node_urls("redis+cluster://127.0.0.1:7000,127.0.0.1:7001"),
            Some(vec!["redis://127.0.0.1:7000".to_owned(), "redis://127.0.0.1:7001".to_owned()])
        );
        assert_eq!(cluster_node_urls("rediss+cluster://a:1"), Some(vec!["rediss://a:1".to_owned()]));
        assert_eq!(cluster_node_urls("redis://127.0.0.1:6379"), None);
        assert_eq!(cluster_node_urls("redis+unix:///tmp/redis.sock"), None);
    }
}
