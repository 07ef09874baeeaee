//! The PostgreSQL user directory against a real PostgreSQL, over Better Auth's tables.
//!
//! Most tests use the machine's server (`DATABASE_URL`, else `postgres://postgres@127.0.0.1:5432/postgres`
//! with trust authentication): each creates Better Auth's `user` and `session` tables in a schema of its
//! own (random name), points the directory at it through [`PostgresDirectorySettings::schema`], and drops
//! the schema at the end, even when an assertion failed. The session tests run twice, once with
//! `"expiresAt"` as `timestamp` and once as `timestamptz` (both occur, depending on Better Auth's version).
//!
//! The outage tests need no shared server: one points the directory at a closed port and at a port that
//! accepts connections but never answers; one runs a private PostgreSQL of its own (see
//! `sidekey_test_support::postgres_server`) that it starts late, stops and starts again.
//!
//! Without a reachable PostgreSQL (or, for the private one, its server binaries) each test prints why and
//! passes, except under `CI=true`, where it fails. Run with `-- --nocapture` to see the timings and the
//! error texts.

use std::fmt::Debug;
use std::future::Future;
use std::panic::{AssertUnwindSafe, resume_unwind};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use sidekey_application::{DirectoryError, DirectorySession, DirectoryUser, UserDirectory};
use sidekey_domain::CallerSession;
use sidekey_postgres::{PostgresDirectory, PostgresDirectorySettings};
use tokio_postgres::{Client, NoTls};
use uuid::Uuid;

use sidekey_test_support::postgres_server::PrivatePostgres;
use sidekey_test_support::{database_url, skip};

/// The directory's connect timeout in these tests: short, so that the tests are quick, and still far
/// above a loopback connect.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// The directory's query timeout in these tests: far above an indexed lookup on an idle server.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);
/// Slack on top of the timeouts: scheduling on a loaded machine, and the error's way back. A directory
/// that waits for anything else (a retry loop, a backoff) overshoots it.
const SLACK: Duration = Duration::from_millis(1000);
/// The bound on an answer from a directory whose database is down or stuck.
const UNAVAILABLE_WITHIN: Duration = CONNECT_TIMEOUT.saturating_add(QUERY_TIMEOUT).saturating_add(SLACK);
/// When a call is declared hung, so that a broken bound fails the test instead of hanging it.
const HUNG_AFTER: Duration = Duration::from_secs(30);

/// `url` with the query parameter `param` (`key=value`, already encoded) added.
fn with_param(url: &str, param: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{param}")
}

/// A connection to `url`, its driver task spawned.
async fn connect(url: &str) -> Result<Client, String> {
    match tokio::time::timeout(Duration::from_secs(5), tokio_postgres::connect(url, NoTls)).await {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(client)
        }
        // The error's text, never the URL (DATABASE_URL may hold a password).
        Ok(Err(error)) => Err(format!(
            "{error}: {}",
            std::error::Error::source(&error).map_or(String::new(), ToString::to_string)
        )),
        Err(_) => Err("no answer within 5 s".to_owned()),
    }
}

/// Better Auth 1.x's tables (PostgreSQL), in `schema`, with `timestamps` (`timestamp` or `timestamptz`)
/// for the time columns.
fn better_auth_ddl(schema: &str, timestamps: &str) -> String {
    format!(
        r#"
        CREATE SCHEMA "{schema}";
        CREATE TABLE "{schema}"."user" (
            id text PRIMARY KEY,
            name text NOT NULL,
            email text NOT NULL UNIQUE,
            "emailVerified" boolean NOT NULL,
            image text,
            "createdAt" {timestamps} NOT NULL DEFAULT CURRENT_TIMESTAMP,
            "updatedAt" {timestamps} NOT NULL DEFAULT CURRENT_TIMESTAMP
        );
        CREATE TABLE "{schema}"."session" (
            id text PRIMARY KEY,
            "expiresAt" {timestamps} NOT NULL,
            token text NOT NULL UNIQUE,
            "createdAt" {timestamps} NOT NULL DEFAULT CURRENT_TIMESTAMP,
            "updatedAt" {timestamps} NOT NULL DEFAULT CURRENT_TIMESTAMP,
            "ipAddress" text,
            "userAgent" text,
            "userId" text NOT NULL REFERENCES "{schema}"."user"(id) ON DELETE CASCADE
        );
        CREATE INDEX ON "{schema}"."session" ("userId");
        "#
    )
}

/// A schema of one test's own on the shared server, with Better Auth's tables.
struct Fixture {
    admin: Client,
    url: String,
    schema: String,
    timestamps: &'static str,
}

impl Fixture {
    /// Settings for a directory on this schema, with the tests' timeouts.
    fn settings(&self) -> PostgresDirectorySettings {
        PostgresDirectorySettings {
            url: self.url.clone(),
            schema: Some(self.schema.clone()),
            pool_size: 4,
            connect_timeout: CONNECT_TIMEOUT,
            query_timeout: QUERY_TIMEOUT,
        }
    }

    fn directory(&self) -> PostgresDirectory {
        PostgresDirectory::new(self.settings()).expect("valid settings")
    }

    /// `"<schema>"."<table>"`.
    fn table(&self, table: &str) -> String {
        format!(r#""{}"."{table}""#, self.schema)
    }

    async fn user(&self, id: &str, email: &str) {
        insert_user(&self.admin, &self.table("user"), id, email).await;
    }

    async fn session(&self, id: &str, user_id: &str, token: &str, expires_at: SystemTime) {
        insert_session(&self.admin, &self.table("session"), self.timestamps, id, user_id, token, expires_at)
            .await;
    }

    async fn execute(&self, sql: &str) {
        self.admin.batch_execute(sql).await.unwrap_or_else(|error| panic!("{sql}: {error:?}"));
    }
}

async fn insert_user(admin: &Client, table: &str, id: &str, email: &str) {
    let sql = format!(r#"INSERT INTO {table} (id, name, email, "emailVerified") VALUES ($1, $1, $2, true)"#);
    admin.execute(&sql, &[&id, &email]).await.unwrap_or_else(|error| panic!("insert user {id}: {error:?}"));
}

/// Inserts a session expiring at `expires_at`, written as Better Auth writes it: the instant in a
/// `timestamptz`, or its UTC wall-clock time in a `timestamp`.
async fn insert_session(
    admin: &Client,
    table: &str,
    timestamps: &str,
    id: &str,
    user_id: &str,
    token: &str,
    expires_at: SystemTime,
) {
    let expiry = match timestamps {
        "timestamp" => "(to_timestamp($4::float8) AT TIME ZONE 'UTC')",
        _ => "to_timestamp($4::float8)",
    };
    let sql =
        format!(r#"INSERT INTO {table} (id, "userId", token, "expiresAt") VALUES ($1, $2, $3, {expiry})"#);
    admin
        .execute(&sql, &[&id, &user_id, &token, &epoch_seconds(expires_at)])
        .await
        .unwrap_or_else(|error| panic!("insert session {id}: {error:?}"));
}

fn epoch_seconds(instant: SystemTime) -> f64 {
    instant.duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64()
}

/// Runs `body` on a fresh schema with Better Auth's tables (time columns of type `timestamps`), then
/// drops the schema, whether `body` passed or panicked. Skips without a reachable server.
async fn with_schema(test: &str, timestamps: &'static str, body: impl AsyncFnOnce(&Fixture)) {
    let Some(url) = database_url().await else { return };
    let admin = connect(&url)
        .await
        .unwrap_or_else(|reason| panic!("{test}: PostgreSQL answered the check, then refused ({reason})"));
    let schema = format!("sk_dir_{}", Uuid::new_v4().simple());
    admin.batch_execute(&better_auth_ddl(&schema, timestamps)).await.expect("create Better Auth's tables");
    let fixture = Fixture { admin, url, schema, timestamps };
    let outcome = AssertUnwindSafe(body(&fixture)).catch_unwind().await;
    let dropped = fixture.admin.batch_execute(&format!(r#"DROP SCHEMA "{}" CASCADE"#, fixture.schema)).await;
    if let Err(panic) = outcome {
        resume_unwind(panic);
    }
    dropped.expect("drop the test's schema");
}

/// Runs `body` once with Better Auth's time columns as `timestamp`, once as `timestamptz` (both occur,
/// depending on its version), each on a fresh schema (see [`with_schema`]).
async fn with_both_timestamp_types(test: &str, body: impl AsyncFn(&Fixture)) {
    for timestamps in ["timestamp", "timestamptz"] {
        with_schema(&format!("{test} ({timestamps})"), timestamps, &body).await;
    }
}

/// An instant near now, with whole microseconds (PostgreSQL's resolution), so that expiries read back
/// compare equal.
fn now() -> SystemTime {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(123_456)
}

const MICROSECOND: Duration = Duration::from_micros(1);
const HOUR: Duration = Duration::from_secs(3600);

fn session(id: &str, user_id: &str, expires_at: SystemTime) -> DirectorySession {
    DirectorySession { id: sid(id), user_id: user_id.to_owned(), expires_at }
}

/// Awaits `call`, which must answer [`DirectoryError::Unavailable`] within [`UNAVAILABLE_WITHIN`], with a
/// cause that quotes no password; returns the cause.
async fn unavailable_in_time<T: Debug>(
    what: &str,
    call: impl Future<Output = Result<T, DirectoryError>>,
) -> String {
    let started = Instant::now();
    let outcome = tokio::time::timeout(HUNG_AFTER, call)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {HUNG_AFTER:?}"));
    let elapsed = started.elapsed();
    let cause = match outcome {
        Err(DirectoryError::Unavailable(cause)) => cause,
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    };
    assert!(
        elapsed <= UNAVAILABLE_WITHIN,
        "{what}: answered after {elapsed:?}, beyond {UNAVAILABLE_WITHIN:?}"
    );
    assert!(!cause.contains("hunter2"), "{what}: the cause quotes the password: {cause}");
    assert!(!cause.contains("postgres://"), "{what}: the cause quotes the URL: {cause}");
    eprintln!("{what}: unavailable after {elapsed:?}: {cause}");
    cause
}

/// Asks every method once; each must be unavailable in time.
async fn every_call_is_unavailable(label: &str, directory: &PostgresDirectory) {
    let now = SystemTime::now();
    unavailable_in_time(&format!("{label} ping"), directory.ping()).await;
    unavailable_in_time(&format!("{label} user_by_email"), directory.user_by_email("a@example.com")).await;
    unavailable_in_time(&format!("{label} active_session_of"), directory.active_session_of("u", now)).await;
    unavailable_in_time(&format!("{label} session_by_token"), directory.session_by_token("t", now)).await;
    unavailable_in_time(&format!("{label} session_is_active"), directory.session_is_active(&sid("s"), now))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_by_email_ignores_case_and_misses_unknown_emails() {
    with_schema("user_by_email_ignores_case_and_misses_unknown_emails", "timestamp", async |fx: &Fixture| {
        fx.user("u-alice", "alice@example.com").await;
        // Better Auth stores emails lower-cased; another writer might not, and might store two that
        // differ only in case.
        fx.user("u-carol", "carol@example.com").await;
        fx.user("u-Carol", "Carol@example.com").await;
        let directory = fx.directory();
        let alice = DirectoryUser { id: "u-alice".to_owned(), email: "alice@example.com".to_owned() };

        assert_eq!(directory.user_by_email("alice@example.com").await.unwrap(), Some(alice.clone()));
        assert_eq!(directory.user_by_email("Alice@Example.COM").await.unwrap(), Some(alice));
        assert_eq!(directory.user_by_email("bob@example.com").await.unwrap(), None);
        assert_eq!(directory.user_by_email("").await.unwrap(), None);
        assert_eq!(directory.user_by_email("' OR ''='").await.unwrap(), None, "parameters, not SQL");

        // The exact spelling wins; without one, two candidates are ambiguous and none is chosen.
        let carol = directory.user_by_email("carol@example.com").await.unwrap().unwrap();
        assert_eq!(carol.id, "u-carol");
        let upper = directory.user_by_email("Carol@example.com").await.unwrap().unwrap();
        assert_eq!(upper.id, "u-Carol");
        assert_eq!(directory.user_by_email("CAROL@EXAMPLE.COM").await.unwrap(), None);

        directory.ping().await.expect("ping");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_session_of_picks_the_latest_unexpired_session() {
    with_both_timestamp_types("active_session_of_picks_the_latest_unexpired_session", async |fx| {
        let now = now();
        fx.user("u1", "one@example.com").await;
        fx.user("u2", "two@example.com").await;
        fx.user("u3", "three@example.com").await;
        fx.session("s-short", "u1", "t-short", now + HOUR).await;
        fx.session("s-long", "u1", "t-long", now + 2 * HOUR).await;
        fx.session("s-gone", "u1", "t-gone", now - HOUR).await;
        fx.session("s-only-expired", "u2", "t-only-expired", now - MICROSECOND).await;
        fx.session("s-other", "u3", "t-other", now + 5 * HOUR).await;
        let directory = fx.directory();

        let long = session("s-long", "u1", now + 2 * HOUR);
        assert_eq!(directory.active_session_of("u1", now).await.unwrap(), Some(long.clone()));
        // Still the latest once the shorter one has expired, up to its last microsecond.
        let later = now + HOUR + MICROSECOND;
        assert_eq!(directory.active_session_of("u1", later).await.unwrap(), Some(long.clone()));
        let last = now + 2 * HOUR - MICROSECOND;
        assert_eq!(directory.active_session_of("u1", last).await.unwrap(), Some(long));
        assert_eq!(directory.active_session_of("u1", now + 2 * HOUR).await.unwrap(), None);

        assert_eq!(directory.active_session_of("u2", now).await.unwrap(), None, "only expired");
        assert_eq!(directory.active_session_of("nobody", now).await.unwrap(), None);
        let other = directory.active_session_of("u3", now).await.unwrap();
        assert_eq!(other, Some(session("s-other", "u3", now + 5 * HOUR)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_by_token_finds_only_unexpired_known_tokens() {
    with_both_timestamp_types("session_by_token_finds_only_unexpired_known_tokens", async |fx| {
        let now = now();
        fx.user("u1", "one@example.com").await;
        fx.session("s-live", "u1", "tok-live", now + HOUR).await;
        fx.session("s-expired", "u1", "tok-expired", now - Duration::from_secs(1)).await;
        let directory = fx.directory();

        let live = session("s-live", "u1", now + HOUR);
        assert_eq!(directory.session_by_token("tok-live", now).await.unwrap(), Some(live));
        assert_eq!(directory.session_by_token("tok-expired", now).await.unwrap(), None);
        assert_eq!(directory.session_by_token("tok-unknown", now).await.unwrap(), None);
        assert_eq!(directory.session_by_token("TOK-LIVE", now).await.unwrap(), None, "tokens are exact");
        assert_eq!(directory.session_by_token("s-live", now).await.unwrap(), None, "an id is no token");
        assert_eq!(directory.session_by_token("tok-live", now + HOUR).await.unwrap(), None, "expired");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_is_active_until_deleted_expired_or_its_user_deleted() {
    with_both_timestamp_types("session_is_active_until_deleted_expired_or_its_user_deleted", async |fx| {
        let now = now();
        fx.user("u1", "one@example.com").await;
        fx.user("u2", "two@example.com").await;
        fx.session("s-a", "u1", "t-a", now + HOUR).await;
        fx.session("s-b", "u1", "t-b", now + HOUR).await;
        fx.session("s-c", "u2", "t-c", now + HOUR).await;
        let directory = fx.directory();

        for id in ["s-a", "s-b", "s-c"] {
            assert!(directory.session_is_active(&sid(id), now).await.unwrap(), "{id}");
        }
        // Expiry, to the microsecond.
        assert!(directory.session_is_active(&sid("s-a"), now + HOUR - MICROSECOND).await.unwrap());
        assert!(!directory.session_is_active(&sid("s-a"), now + HOUR).await.unwrap());
        assert!(!directory.session_is_active(&sid("s-a"), now + 2 * HOUR).await.unwrap());
        // Signed out: the row is deleted.
        fx.execute(&format!("DELETE FROM {} WHERE id = 's-b'", fx.table("session"))).await;
        assert!(!directory.session_is_active(&sid("s-b"), now).await.unwrap());
        // The user deleted: its sessions go with it (ON DELETE CASCADE).
        fx.execute(&format!("DELETE FROM {} WHERE id = 'u2'", fx.table("user"))).await;
        assert!(!directory.session_is_active(&sid("s-c"), now).await.unwrap());
        // Untouched.
        assert!(directory.session_is_active(&sid("s-a"), now).await.unwrap());
        assert!(!directory.session_is_active(&sid("unknown"), now).await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiries_read_the_same_whatever_the_connections_time_zone() {
    with_both_timestamp_types("expiries_read_the_same_whatever_the_connections_time_zone", async |fx| {
        let now = now();
        fx.user("u1", "one@example.com").await;
        fx.session("s1", "u1", "t1", now + HOUR).await;
        // UTC+14, through the URL's own options (the schema's search_path is appended to them).
        let mut settings = fx.settings();
        settings.url = with_param(&settings.url, "options=-c%20TimeZone%3DPacific%2FKiritimati");
        let directory = PostgresDirectory::new(settings).expect("valid settings");

        let expected = session("s1", "u1", now + HOUR);
        assert_eq!(directory.session_by_token("t1", now).await.unwrap(), Some(expected.clone()));
        assert_eq!(directory.active_session_of("u1", now).await.unwrap(), Some(expected));
        assert!(directory.session_is_active(&sid("s1"), now + HOUR - MICROSECOND).await.unwrap());
        assert!(!directory.session_is_active(&sid("s1"), now + HOUR).await.unwrap());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_within_the_timeouts() {
    // A closed port: refused at once.
    let settings = PostgresDirectorySettings {
        url: "postgres://postgres:hunter2@127.0.0.1:1/postgres".to_owned(),
        schema: Some("auth".to_owned()),
        pool_size: 4,
        connect_timeout: CONNECT_TIMEOUT,
        query_timeout: QUERY_TIMEOUT,
    };
    let shown = format!("{settings:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    let refused = PostgresDirectory::new(settings.clone()).expect("starts while the database is down");
    assert!(!format!("{refused:?}").contains("hunter2"));
    every_call_is_unavailable("closed port", &refused).await;

    // A port that accepts connections and never answers: only the timeouts end the wait.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let port = silent.local_addr().expect("its port").port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            sockets.push(socket);
        }
    });
    let stuck = PostgresDirectory::new(PostgresDirectorySettings {
        url: format!("postgres://postgres:hunter2@127.0.0.1:{port}/postgres"),
        ..settings.clone()
    })
    .expect("valid settings");
    every_call_is_unavailable("silent server", &stuck).await;

    // Key=value form, with the password in it.
    let key_value = PostgresDirectory::new(PostgresDirectorySettings {
        url: "host=127.0.0.1 port=1 user=postgres password=hunter2 dbname=postgres".to_owned(),
        ..settings
    })
    .expect("valid settings");
    assert!(!format!("{key_value:?}").contains("hunter2"));
    unavailable_in_time("key=value ping", key_value.ping()).await;
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_stuck_behind_a_lock_times_out_and_the_next_call_recovers() {
    let test = "a_query_stuck_behind_a_lock_times_out_and_the_next_call_recovers";
    with_schema(test, "timestamptz", async |fx: &Fixture| {
        let now = now();
        fx.user("u1", "one@example.com").await;
        fx.session("s1", "u1", "t1", now + HOUR).await;
        let directory = fx.directory();
        assert!(directory.session_is_active(&sid("s1"), now).await.unwrap(), "warm: a pooled connection");

        // Another client locks the table: the directory's query waits for the lock.
        let locker = connect(&fx.url).await.expect("a second admin connection");
        locker
            .batch_execute(&format!("BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", fx.table("session")))
            .await
            .expect("lock the session table");
        let cause = unavailable_in_time("locked", directory.session_is_active(&sid("s1"), now)).await;
        assert!(cause.contains("did not answer"), "{cause}");

        locker.batch_execute("ROLLBACK").await.expect("release the lock");
        let started = Instant::now();
        assert!(directory.session_is_active(&sid("s1"), now).await.unwrap(), "answers again once unlocked");
        eprintln!("locked: answered again {:?} after the lock was released", started.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_when_its_connections_are_terminated() {
    let test = "recovers_when_its_connections_are_terminated";
    with_schema(test, "timestamp", async |fx: &Fixture| {
        let now = now();
        fx.user("u1", "one@example.com").await;
        fx.session("s1", "u1", "t1", now + HOUR).await;
        // A name of this test's own, to find (and kill) exactly this directory's connections.
        let application = format!("sk-test-{}", Uuid::new_v4().simple());
        let mut settings = fx.settings();
        settings.url = with_param(&settings.url, &format!("application_name={application}"));
        let directory = PostgresDirectory::new(settings).expect("valid settings");

        // Several pooled connections: concurrent calls open one each.
        let s1 = sid("s1");
        let warm =
            futures_util::future::join_all((0..4).map(|_| directory.session_is_active(&s1, now))).await;
        assert!(warm.into_iter().all(|active| active.unwrap()));
        let count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1";
        let before: i64 = fx.admin.query_one(count, &[&application]).await.unwrap().get(0);
        assert!(before >= 1, "the directory's connections are visible");

        for round in 1..=3 {
            let terminate = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                             WHERE application_name = $1";
            let killed: i64 = fx.admin.query_one(terminate, &[&application]).await.unwrap().get(0);
            assert!(killed >= 1, "round {round}: nothing to terminate");
            // The very next calls succeed: the dead connections are discarded, not handed out.
            for call in 0..6 {
                let started = Instant::now();
                let active = directory.session_is_active(&sid("s1"), now).await;
                assert_eq!(active, Ok(true), "round {round}, call {call} after terminating {killed}");
                if call == 0 {
                    eprintln!("terminated {killed}: next call answered in {:?}", started.elapsed());
                }
            }
            assert_eq!(
                directory.user_by_email("ONE@example.com").await.unwrap().map(|user| user.id),
                Some("u1".to_owned())
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_while_the_database_is_down_and_recovers_after_a_restart() {
    let test = "starts_while_the_database_is_down_and_recovers_after_a_restart";
    let mut server = match PrivatePostgres::init() {
        Ok(server) => server,
        Err(reason) => return skip(format_args!("{test}: cannot run a private PostgreSQL ({reason})")),
    };
    // Built before the server ever runs; never rebuilt. No schema: Better Auth's tables in `public`.
    let directory = PostgresDirectory::new(PostgresDirectorySettings {
        url: server.url(""),
        schema: None,
        pool_size: 4,
        connect_timeout: CONNECT_TIMEOUT,
        query_timeout: QUERY_TIMEOUT,
    })
    .expect("starts while the database is down");
    every_call_is_unavailable("not started yet", &directory).await;

    server.start().expect("start the private PostgreSQL");
    let admin = connect(&server.url("")).await.expect("connect to the private PostgreSQL");
    let ddl =
        better_auth_ddl("ba", "timestamptz").replace(r#""ba"."#, "").replace(r#"CREATE SCHEMA "ba";"#, "");
    admin.batch_execute(&ddl).await.expect("create Better Auth's tables in public");
    let now = now();
    insert_user(&admin, r#""user""#, "u1", "one@example.com").await;
    insert_session(&admin, r#""session""#, "timestamptz", "s1", "u1", "t1", now + HOUR).await;
    drop(admin);

    directory.ping().await.expect("answers once the server is up");
    assert!(directory.session_is_active(&sid("s1"), now).await.unwrap());

    for round in 1..=2 {
        server.stop();
        every_call_is_unavailable(&format!("stopped ({round})"), &directory).await;
        server.start().unwrap_or_else(|error| panic!("restart ({round}): {error}"));
        let started = Instant::now();
        let active = directory.session_is_active(&sid("s1"), now).await;
        assert_eq!(
            active,
            Ok(true),
            "round {round}: the first call after the restart\n{}",
            server.log_tail()
        );
        eprintln!("restarted ({round}): first call answered in {:?}", started.elapsed());
        assert_eq!(
            directory.session_by_token("t1", now).await.unwrap(),
            Some(session("s1", "u1", now + HOUR))
        );
        directory.ping().await.expect("ping after the restart");
    }
}

/// A sign-in session id as the directory port takes it.
fn sid(text: &str) -> CallerSession {
    CallerSession::parse(text).unwrap()
}
