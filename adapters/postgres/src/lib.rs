//! The user directory on PostgreSQL: Better Auth's `user` and `session` tables.
//!
//! [`PostgresDirectory`] answers the [`UserDirectory`] port by reading the tables Better Auth keeps in the
//! app's own database. It only reads: users and sign-in sessions are Better Auth's to write.
//!
//! # The schema read
//! Better Auth 1.x on PostgreSQL (identifiers are camelCase, hence quoted):
//! - `"user"`: `id` (text, primary key), `email` (text, unique, stored lower-cased), …
//! - `"session"`: `id` (text, primary key), `token` (text, unique, stored raw), `"userId"` (text,
//!   references `"user"(id)` on delete cascade), `"expiresAt"` (`timestamp` or `timestamptz`: it changed
//!   between versions), …
//!
//! Times are compared and read as epoch seconds (`EXTRACT(EPOCH FROM "expiresAt")::float8`), which is
//! right for both column types and needs no date-time support in the driver. A `timestamp` (without time
//! zone) column is read as UTC, which is how Better Auth writes it when its process runs in UTC (a
//! `timestamptz` column has no such ambiguity). The instant read is rounded to the microsecond, the
//! resolution of PostgreSQL's timestamps; `'infinity'` reads as the end of year 9999.
//!
//! `user_by_email` compares `lower(email) = lower($1)`, which the unique index on `email` does not serve:
//! on a large user table, add `CREATE INDEX ON "user" (lower(email))`. `session."userId"` is indexed by
//! Better Auth; `token` and `id` are unique.
//!
//! # Schema and search path
//! [`PostgresDirectorySettings::schema`] sets each connection's `search_path` to that schema only, through
//! the startup `options` (`-c search_path="<schema>"`), for apps that keep Better Auth outside `public`
//! (and for tests). The name is taken exactly (quoted), so it must be spelled as PostgreSQL stores it,
//! and it must be a plain identifier (letters, digits, `_`): it is never interpolated unchecked. A pooler
//! that refuses the `options` startup parameter (PgBouncer without `ignore_startup_parameters`) needs the
//! schema left unset and the tables on the role's default `search_path`.
//!
//! # Failures
//! Connections are pooled (deadpool) and made lazily: [`PostgresDirectory::new`] connects nothing, so the
//! service starts while the database is down, and the first call that needs a connection makes one. A
//! connection that breaks (the server restarted, the network dropped it, a query ran past its timeout) is
//! discarded rather than returned to the pool, along with every idle connection (a restart broke them
//! too), and a call that found its pooled connection broken tries once more on a fresh one, so the
//! directory recovers by itself when the database returns, without failing the first call after. Every call is
//! bounded by [`PostgresDirectorySettings::connect_timeout`] plus
//! [`PostgresDirectorySettings::query_timeout`], and answers [`DirectoryError::Unavailable`] past it, with
//! a short cause for the log that never quotes the URL (it may hold a password) nor a session token.
//!
//! TCP keepalives are sent after a minute of idleness (unless the URL sets `keepalives_idle`), so that a
//! NAT or firewall does not silently drop a pooled connection between two quiet periods.
//!
//! # TLS
//! Not supported by this build (the driver is used without a TLS connector): `sslmode=prefer`, the
//! default, connects in plain text, and a URL with `sslmode=require` is refused at construction rather
//! than failing every call.
//!
//! Depends on `domain` and `application` (plus tokio-postgres and deadpool); built into the binary by
//! its `postgres` feature (on by default).
//!
//! # Layout
//! - [`DirectoryConfig`]: the `[directory]` settings, which build the directory.
//! - [`PostgresDirectory`] and its [`PostgresDirectorySettings`]: the port over a connection pool.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use deadpool_postgres::{
    Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sidekey_application::{DirectoryError, DirectorySession, DirectoryUser, UserDirectory};
use sidekey_domain::CallerSession;
use sidekey_settings::Secret;
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

/// Default [`PostgresDirectorySettings::pool_size`]: the directory is asked once per session creation and
/// once per cascade re-check, each query an index lookup of well under a millisecond; sixteen connections
/// serve thousands of calls a second without weighing on the app's database.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Default [`PostgresDirectorySettings::connect_timeout`]: a connection is a TCP handshake plus
/// PostgreSQL's startup and authentication (a few round trips, and a password hash for SCRAM); two
/// seconds tells "down" from "slow" without holding a request long.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`PostgresDirectorySettings::query_timeout`]: every query is one indexed lookup (plus its
/// preparation on a fresh connection); a second is far beyond any healthy answer.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// The `application_name` the connections announce unless the URL names one, so that a DBA can tell
/// them apart in `pg_stat_activity`.
const APPLICATION_NAME: &str = "sidekey";
/// The keepalive idle time set unless the URL sets one (the driver's default is two hours, longer than
/// many NATs keep an idle flow).
const KEEPALIVES_IDLE: Duration = Duration::from_secs(60);
/// The driver's default keepalive idle time, which means "the URL did not set it".
const DRIVER_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// PostgreSQL's identifier length limit (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER_LEN: usize = 63;
/// Longest cause kept from PostgreSQL, so that an unexpected message can never flood a log line.
const MAX_CAUSE_LEN: usize = 200;
/// The latest instant read (9999-12-31T23:59:59Z): `'infinity'` and anything past it read as this.
const MAX_EPOCH_SECONDS: f64 = 253_402_300_799.0;

/// The user by email. Exact match first, so that among users whose emails differ only in case (which
/// Better Auth does not create, but another writer might), the one spelled as asked wins; two rows
/// without an exact match are ambiguous.
const USER_BY_EMAIL: &str =
    r#"SELECT id, email FROM "user" WHERE lower(email) = lower($1) ORDER BY email = $1 DESC LIMIT 2"#;
/// The user's unexpired session that lasts longest (ties broken by id, for a stable answer).
const ACTIVE_SESSION_OF: &str = r#"SELECT id, "userId", EXTRACT(EPOCH FROM "expiresAt")::float8 FROM "session"
WHERE "userId" = $1 AND EXTRACT(EPOCH FROM "expiresAt")::float8 > $2::float8
ORDER BY "expiresAt" DESC, id LIMIT 1"#;
/// The unexpired session with this token.
const SESSION_BY_TOKEN: &str = r#"SELECT id, "userId", EXTRACT(EPOCH FROM "expiresAt")::float8 FROM "session"
WHERE token = $1 AND EXTRACT(EPOCH FROM "expiresAt")::float8 > $2::float8 LIMIT 1"#;
/// Whether the session exists unexpired.
const SESSION_IS_ACTIVE: &str = r#"SELECT 1 FROM "session"
WHERE id = $1 AND EXTRACT(EPOCH FROM "expiresAt")::float8 > $2::float8 LIMIT 1"#;
/// Readiness.
const PING: &str = "SELECT 1";

/// The `[directory]` settings: where Better Auth's tables are, and how the cascade asks them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct DirectoryConfig {
    /// PostgreSQL holding Better Auth's `user` and `session` tables (`postgres://…` or `key=value`
    /// form); unset: no directory.
    pub url: Option<Secret>,
    /// The schema of those tables, when not on the default search path.
    pub schema: Option<String>,
    /// Pooled connections.
    pub pool_size: usize,
    /// The bound on connecting, in milliseconds, before `503 directory_unavailable`.
    pub connect_timeout_ms: u64,
    /// The bound on one query, in milliseconds, before `503 directory_unavailable`.
    pub query_timeout_ms: u64,
    /// How long a session may outlive its deleted sign-in session, in seconds: the directory is asked
    /// again about a sign-in session at most this often.
    pub cascade_check_seconds: u64,
}

/// The cascade's default re-check interval: ten seconds bounds how long a signed-out user's sessions
/// still verify, at one indexed query per bound session and interval.
pub const DEFAULT_CASCADE_CHECK: Duration = Duration::from_secs(10);

impl Default for DirectoryConfig {
    fn default() -> Self {
        Self {
            url: None,
            schema: None,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout_ms: millis(DEFAULT_CONNECT_TIMEOUT),
            query_timeout_ms: millis(DEFAULT_QUERY_TIMEOUT),
            cascade_check_seconds: DEFAULT_CASCADE_CHECK.as_secs(),
        }
    }
}

impl DirectoryConfig {
    /// The directory these settings name; `None` without a URL.
    ///
    /// # Errors
    /// [`PostgresConfigError`], as [`PostgresDirectory::new`].
    pub fn directory(&self) -> Result<Option<PostgresDirectory>, PostgresConfigError> {
        let Some(url) = &self.url else { return Ok(None) };
        PostgresDirectory::new(PostgresDirectorySettings {
            url: url.expose().to_owned(),
            schema: self.schema.clone(),
            pool_size: self.pool_size,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            query_timeout: Duration::from_millis(self.query_timeout_ms),
        })
        .map(Some)
    }

    /// How often the cascade asks about one sign-in session.
    pub fn cascade_check(&self) -> Duration {
        Duration::from_secs(self.cascade_check_seconds)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Directory settings that cannot work: refused at start-up. Never quotes the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid [directory] settings: {0}")]
pub struct PostgresConfigError(&'static str);

/// Where and how to reach the database that holds Better Auth's tables.
#[derive(Clone)]
pub struct PostgresDirectorySettings {
    /// `postgres://user:password@host:port/database?…` or `host=… user=… …` (libpq's forms, as
    /// `tokio-postgres` reads them). Never logged nor quoted in errors.
    pub url: String,
    /// The schema holding Better Auth's tables, set as each connection's `search_path`; `None` leaves the
    /// role's default (usually `public`). A plain identifier, taken exactly.
    pub schema: Option<String>,
    /// Most connections open at once (at least 1).
    pub pool_size: usize,
    /// Longest wait to connect (each attempt), and for a free connection when all are busy.
    pub connect_timeout: Duration,
    /// Longest wait for one query's answer.
    pub query_timeout: Duration,
}

impl PostgresDirectorySettings {
    /// Settings for `url` with no schema and the defaults ([`DEFAULT_POOL_SIZE`],
    /// [`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_QUERY_TIMEOUT`]).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            query_timeout: DEFAULT_QUERY_TIMEOUT,
        }
    }
}

impl fmt::Debug for PostgresDirectorySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresDirectorySettings")
            .field("url", &format_args!("{}", redacted(&self.url)))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish()
    }
}

/// The URL as it may be shown: its scheme only (it may hold a password, in its authority or its query).
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, _)) => format!("{scheme}://…"),
        None => "<key=value connection string>".to_owned(),
    }
}

/// Better Auth's users and sign-in sessions in PostgreSQL; see the [module documentation](self).
///
/// Cheap to share as `Arc<PostgresDirectory>` (which coerces to `Arc<dyn UserDirectory>`).
pub struct PostgresDirectory {
    pool: Pool,
    /// Shown by `Debug`.
    schema: Option<String>,
    query_timeout: Duration,
    /// The bound on one call, connecting included: the connect timeout plus the query timeout.
    deadline: Duration,
}

impl fmt::Debug for PostgresDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresDirectory")
            .field("schema", &self.schema)
            .field("pool_size", &status.max_size)
            .field("connections", &status.size)
            .field("idle", &status.available)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl PostgresDirectory {
    /// A directory on the database at `settings.url`.
    ///
    /// Connects nothing: the first call does, so the service starts (and its readiness probe says 503)
    /// while the database is down, and serves once it answers.
    ///
    /// # Errors
    /// [`PostgresConfigError`]: an unreadable URL, `sslmode=require` (no TLS in this build), a schema that
    /// is not a plain identifier, a pool size of 0. The text never quotes the URL.
    pub fn new(settings: PostgresDirectorySettings) -> Result<Self, PostgresConfigError> {
        let PostgresDirectorySettings { url, schema, pool_size, connect_timeout, query_timeout } = settings;
        let config = |problem: &'static str| PostgresConfigError(problem);
        // Only that it failed: the parser's detail may quote a value, and the password is one.
        let mut pg = tokio_postgres::Config::from_str(&url)
            .map_err(|_| config("the URL is not a postgres:// URL nor a key=value connection string"))?;
        if pg.get_ssl_mode() == SslMode::Require {
            return Err(config("sslmode=require, but this build has no TLS for PostgreSQL"));
        }
        if pool_size == 0 {
            return Err(config("the pool size must be at least 1"));
        }
        if let Some(schema) = &schema {
            if !is_plain_identifier(schema) {
                return Err(config(
                    "the schema must be a plain identifier (letters, digits, `_`, not starting with a \
                     digit, at most 63 bytes)",
                ));
            }
            // Appended, so that it wins over a search_path the URL's options might set.
            let search_path = format!("-c search_path=\"{schema}\"");
            let options = match pg.get_options() {
                Some(options) if !options.trim().is_empty() => format!("{options} {search_path}"),
                _ => search_path,
            };
            pg.options(options);
        }
        if pg.get_application_name().is_none() {
            pg.application_name(APPLICATION_NAME);
        }
        if pg.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
            pg.keepalives_idle(KEEPALIVES_IDLE);
        }
        pg.connect_timeout(connect_timeout);

        // Fast recycling: a pooled connection is handed out again unless its driver saw it close; one that
        // turns out broken is discarded by `attempt` (and the call retried once), which costs nothing on
        // the healthy path, where `Verified` would add a round trip to every call.
        let manager =
            Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(connect_timeout))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(query_timeout))
            .build()
            .map_err(|_| config("the connection pool could not be built (no Tokio runtime?)"))?;
        Ok(Self { pool, schema, query_timeout, deadline: connect_timeout + query_timeout })
    }

    /// Runs the prepared statement `sql` with `params` within the deadline, retrying once on a fresh
    /// connection when a pooled one turns out broken. `what` names the call in error texts;
    /// `quote_errors` says whether PostgreSQL's error message may be kept (not when a parameter is a
    /// secret, which a message could quote).
    async fn query(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        quote_errors: bool,
    ) -> Result<Vec<Row>, DirectoryError> {
        let attempts = async {
            match self.attempt(what, sql, params, quote_errors).await {
                Err(Failure::Broken { retry: true, .. }) => {
                    self.attempt(what, sql, params, quote_errors).await.map_err(Failure::into_error)
                }
                result => result.map_err(Failure::into_error),
            }
        };
        match tokio::time::timeout(self.deadline, attempts).await {
            Ok(result) => result,
            Err(_) => Err(DirectoryError::Unavailable(format!(
                "PostgreSQL did not answer {what} within {} ms",
                self.deadline.as_millis()
            ))),
        }
    }

    /// One try on one pooled connection.
    async fn attempt(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        quote_errors: bool,
    ) -> Result<Vec<Row>, Failure> {
        let client = self.pool.get().await.map_err(|error| Failure::Other(pool_unavailable(what, &error)))?;
        let reused = Object::metrics(&client).recycle_count > 0;
        let outcome = tokio::time::timeout(self.query_timeout, async {
            let statement = client.prepare_cached(sql).await?;
            client.query(&statement, params).await
        })
        .await;
        match outcome {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(error)) => {
                let cause = query_unavailable(what, &error, quote_errors);
                if is_broken(&error) || client.is_closed() {
                    tracing::debug!(what, %cause, "discarding a broken PostgreSQL connection");
                    drop(Object::take(client));
                    // A broken connection usually means the server restarted or failed over, which broke
                    // every idle one too, perhaps unnoticed yet: drop them all, so that the retry (and the
                    // next calls) connect afresh instead of finding the next dead one.
                    drop(self.pool.retain(|_, _| false));
                    Err(Failure::Broken { cause, retry: reused })
                } else {
                    // A statement error (say, the table was altered under a cached statement): prepare it
                    // afresh next time.
                    client.statement_cache.remove(sql, &[]);
                    Err(Failure::Other(cause))
                }
            }
            Err(_) => {
                // The connection may still be waiting for the answer: never hand it out again.
                drop(Object::take(client));
                Err(Failure::Other(DirectoryError::Unavailable(format!(
                    "PostgreSQL did not answer {what} within {} ms",
                    self.query_timeout.as_millis()
                ))))
            }
        }
    }
}

/// How one try failed.
enum Failure {
    /// The connection broke (and was discarded); `retry` when it came from the pool, so that a fresh one
    /// may do better.
    Broken { cause: DirectoryError, retry: bool },
    /// Anything else: retrying would not help within the deadline.
    Other(DirectoryError),
}

impl Failure {
    fn into_error(self) -> DirectoryError {
        match self {
            Self::Broken { cause, .. } | Self::Other(cause) => cause,
        }
    }
}

/// Whether `error` leaves its connection unusable: anything but an ordinary SQL error (a FATAL one, such as
/// "terminating connection due to administrator command", ends the session too).
fn is_broken(error: &tokio_postgres::Error) -> bool {
    match error.as_db_error() {
        Some(db) => matches!(db.severity(), "FATAL" | "PANIC"),
        None => true,
    }
}

/// A failure to get a connection, for the log.
fn pool_unavailable(what: &str, error: &PoolError) -> DirectoryError {
    let cause = match error {
        PoolError::Timeout(TimeoutType::Wait) => {
            "every pooled PostgreSQL connection stayed busy for the connect timeout".to_owned()
        }
        PoolError::Timeout(TimeoutType::Create | TimeoutType::Recycle) => {
            "no connection to PostgreSQL within the connect timeout".to_owned()
        }
        PoolError::Backend(error) => format!("cannot connect to PostgreSQL: {}", describe(error, true)),
        PoolError::Closed => "the PostgreSQL pool is closed".to_owned(),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            "the PostgreSQL pool is misconfigured".to_owned()
        }
    };
    DirectoryError::Unavailable(capped(format!("{cause} ({what})")))
}

/// A failed query, for the log.
fn query_unavailable(what: &str, error: &tokio_postgres::Error, quote_errors: bool) -> DirectoryError {
    DirectoryError::Unavailable(capped(format!(
        "PostgreSQL {what} failed: {}",
        describe(error, quote_errors)
    )))
}

/// The driver's error with its cause: its own `Display` says only the kind ("db error", "error connecting
/// to server"). A server error is its SQLSTATE and, when `quote_message`, its message; a connection error
/// is the I/O error (no host, no credentials: the driver does not put them in).
fn describe(error: &tokio_postgres::Error, quote_message: bool) -> String {
    if let Some(db) = error.as_db_error() {
        return if quote_message {
            format!("{} {}: {}", db.severity(), db.code().code(), db.message())
        } else {
            format!("{} {}", db.severity(), db.code().code())
        };
    }
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// `cause` cut to [`MAX_CAUSE_LEN`] bytes (on a character boundary).
fn capped(mut cause: String) -> String {
    if cause.len() > MAX_CAUSE_LEN {
        cause.truncate(cause.floor_char_boundary(MAX_CAUSE_LEN));
        cause.push('…');
    }
    cause
}

/// Whether `name` is an identifier that needs no escaping anywhere: ASCII letters, digits and `_`, not
/// starting with a digit, within PostgreSQL's length limit.
fn is_plain_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
        && name.len() <= MAX_IDENTIFIER_LEN
}

/// `instant` as epoch seconds (negative before 1970), as the queries compare it.
fn epoch_seconds(instant: SystemTime) -> f64 {
    match instant.duration_since(UNIX_EPOCH) {
        Ok(since) => since.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// The instant `seconds` after the epoch, rounded to the microsecond (PostgreSQL's resolution, which an
/// `f64` of epoch seconds holds exactly until the 23rd century) and clamped to year 9999.
fn instant_of(seconds: f64) -> SystemTime {
    // `as` saturates, and maps NaN (which no row passing `> now` carries) to 0.
    let micros = (seconds.clamp(-MAX_EPOCH_SECONDS, MAX_EPOCH_SECONDS) * 1_000_000.0).round() as i64;
    let offset = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 { UNIX_EPOCH + offset } else { UNIX_EPOCH - offset }
}

/// A `session` row (`id`, `"userId"`, expiry in epoch seconds).
fn session_of(row: &Row) -> Result<DirectorySession, DirectoryError> {
    let read = || -> Result<(String, String, f64), tokio_postgres::Error> {
        Ok((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?))
    };
    let (id, user_id, expires_at) = read().map_err(|error| unexpected_row("session", &error))?;
    let id = CallerSession::parse(&id).map_err(|error| {
        DirectoryError::Unavailable(format!("unexpected session row from PostgreSQL: its id: {error}"))
    })?;
    Ok(DirectorySession { id, user_id, expires_at: instant_of(expires_at) })
}

fn unexpected_row(table: &str, error: &tokio_postgres::Error) -> DirectoryError {
    DirectoryError::Unavailable(format!(
        "unexpected {table} row from PostgreSQL (is this Better Auth's schema?): {}",
        describe(error, true)
    ))
}

#[async_trait]
impl UserDirectory for PostgresDirectory {
    async fn user_by_email(&self, email: &str) -> Result<Option<DirectoryUser>, DirectoryError> {
        let rows = self.query("user_by_email", USER_BY_EMAIL, &[&email], true).await?;
        let users = rows
            .iter()
            .map(|row| Ok(DirectoryUser { id: row.try_get(0)?, email: row.try_get(1)? }))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(|error| unexpected_row("user", &error))?;
        match users.as_slice() {
            [] => Ok(None),
            [user] => Ok(Some(user.clone())),
            [first, ..] if first.email == email => Ok(Some(first.clone())),
            [_, ..] => {
                tracing::warn!(
                    "several users' emails differ only in case from the one asked, none exactly: \
                     treating it as unknown"
                );
                Ok(None)
            }
        }
    }

    async fn active_session_of(
        &self,
        user_id: &str,
        now: SystemTime,
    ) -> Result<Option<DirectorySession>, DirectoryError> {
        let now = epoch_seconds(now);
        let rows = self.query("active_session_of", ACTIVE_SESSION_OF, &[&user_id, &now], true).await?;
        rows.first().map(session_of).transpose()
    }

    async fn session_by_token(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<Option<DirectorySession>, DirectoryError> {
        let now = epoch_seconds(now);
        let rows = self.query("session_by_token", SESSION_BY_TOKEN, &[&token, &now], false).await?;
        rows.first().map(session_of).transpose()
    }

    async fn session_is_active(&self, id: &CallerSession, now: SystemTime) -> Result<bool, DirectoryError> {
        let now = epoch_seconds(now);
        let rows = self.query("session_is_active", SESSION_IS_ACTIVE, &[&id.as_str(), &now], true).await?;
        Ok(!rows.is_empty())
    }

    async fn ping(&self) -> Result<(), DirectoryError> {
        self.query("ping", PING, &[], true).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_schemas() {
        for good in ["public", "auth", "_x", "Better_Auth2", &"a".repeat(63)] {
            assert!(is_plain_identifier(good), "{good}");
        }
        for bad in ["", "1abc", "a b", "a\"b", "a;b", "a-b", "ä", "a\\b", &"a".repeat(64)] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }

    #[test]
    fn instants_round_trip_to_the_microsecond() {
        let instant = UNIX_EPOCH + Duration::from_micros(1_760_000_000_123_456);
        assert_eq!(instant_of(epoch_seconds(instant)), instant);
        let before = UNIX_EPOCH - Duration::from_micros(86_400_000_001);
        assert_eq!(instant_of(epoch_seconds(before)), before);
        let end = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
        assert_eq!(instant_of(f64::INFINITY), end);
        assert_eq!(instant_of(1e300), end);
        assert_eq!(instant_of(f64::NAN), UNIX_EPOCH);
    }

    #[test]
    fn configuration_errors_never_quote_the_url() {
        for url in ["postgres://u:hunter2@host:notaport/db", "host=h password=hunter2 bogus=1"] {
            let error = PostgresDirectory::new(PostgresDirectorySettings::new(url)).unwrap_err();
            assert!(!error.to_string().contains("hunter2"), "{error}");
        }
        let mut settings = PostgresDirectorySettings::new("postgres://u:hunter2@host/db?sslmode=require");
        let error = PostgresDirectory::new(settings.clone()).unwrap_err();
        assert!(error.to_string().contains("sslmode") && !error.to_string().contains("hunter2"), "{error}");
        settings.url = "postgres://u:hunter2@host/db".to_owned();
        settings.schema = Some("x; DROP TABLE y".to_owned());
        assert!(PostgresDirectory::new(settings.clone()).is_err());
        settings.schema = None;
        settings.pool_size = 0;
        assert!(PostgresDirectory::new(settings).is_err());
    }

    #[test]
    fn debug_shows_no_password() {
        let settings = PostgresDirectorySettings::new("postgres://u:hunter2@host/db?password=hunter2");
        let shown = format!("{settings:?}");
        assert!(shown.contains("postgres://…") && !shown.contains("hunter2"), "{shown}");
        let shown = format!("{:?}", PostgresDirectorySettings::new("host=h password=hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[tokio::test]
    async fn a_directory_debug_shows_no_password() {
        let directory =
            PostgresDirectory::new(PostgresDirectorySettings::new("postgres://u:hunter2@host/db"))
                .expect("a valid URL");
        let shown = format!("{directory:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
