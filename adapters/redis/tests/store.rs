//! The Redis store: the whole `SessionStore` contract suite, and what Redis holds.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`; `redis+cluster://host:port,...` listing
//! every master works too). Each test works under its own random key prefix and deletes every key under
//! it at the end, also when it fails. The store's clock is a `ManualClock` that starts at the real
//! current time, so Redis's own expiry (on its real clock) cleans up whatever a test leaves behind.
//! Without Redis: fails under `CI=true`, else prints why and skips.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue};
use sidekey_application::{
    Clock, ENDED_SESSION_RETENTION, Grant, Lookup, RevocationTarget, SessionStore, StoreError,
};
use sidekey_domain::{
    Metadata, SecretRef, SecretValue, Session, SessionId, SessionPolicy, Subject, Token, TokenDigest,
};
use sidekey_redis::{ConfigError, RedisSessionStore, RedisStoreSettings};

use sidekey_test_support::services::cluster_node_urls;
use sidekey_test_support::store_contract::{Backend, Settle};
use sidekey_test_support::store_contract_suite;
use sidekey_test_support::{ManualClock, random_hex, redis_url};

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::starting_at(SystemTime::now()))
}

fn random_prefix() -> String {
    format!("sidekey-test-{}", random_hex(16))
}

/// Direct access to the Redis under test, to read what the store wrote and to clean up: one connection
/// per node (a `SCAN` sees one node's keys only) and, on a cluster, a cluster connection that routes
/// every other command to the key's node.
struct Raw {
    nodes: Vec<MultiplexedConnection>,
    cluster: Option<ClusterConnection>,
}

impl Raw {
    async fn open(url: &str) -> Self {
        match cluster_node_urls(url) {
            Some(nodes) => {
                let mut connections = Vec::new();
                for node in &nodes {
                    let client = redis::Client::open(node.as_str()).unwrap();
                    connections.push(client.get_multiplexed_async_connection().await.unwrap());
                }
                let cluster =
                    redis::cluster::ClusterClient::new(nodes).unwrap().get_async_connection().await.unwrap();
                Self { nodes: connections, cluster: Some(cluster) }
            }
            None => {
                let client = redis::Client::open(url).unwrap();
                Self { nodes: vec![client.get_multiplexed_async_connection().await.unwrap()], cluster: None }
            }
        }
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> T {
        match &self.cluster {
            Some(cluster) => cmd.query_async(&mut cluster.clone()).await.unwrap(),
            None => cmd.query_async(&mut self.nodes[0].clone()).await.unwrap(),
        }
    }

    /// Every key under `prefix`, on every node.
    async fn keys(&self, prefix: &str) -> Vec<Vec<u8>> {
        let mut keys = Vec::new();
        for node in &self.nodes {
            keys.extend(scan(&mut node.clone(), &format!("{{{prefix}:*")).await);
        }
        keys
    }

    /// Deletes every key under `prefix`.
    async fn delete_all(&self, prefix: &str) {
        for key in self.keys(prefix).await {
            let _: i64 = self.query(redis::cmd("DEL").arg(&key)).await;
        }
    }

    /// Every key under `prefix` with every byte string it holds, whatever its type.
    async fn dump(&self, prefix: &str) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        let mut dump = Vec::new();
        for key in self.keys(prefix).await {
            let kind: String = self.query(redis::cmd("TYPE").arg(&key)).await;
            let values: Vec<Vec<u8>> = match kind.as_str() {
                "none" => continue, // expired between the scan and now
                "string" => vec![self.query(redis::cmd("GET").arg(&key)).await],
                "hash" => self.query(redis::cmd("HGETALL").arg(&key)).await,
                "zset" => self.query(redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES")).await,
                "set" => self.query(redis::cmd("SMEMBERS").arg(&key)).await,
                "list" => self.query(redis::cmd("LRANGE").arg(&key).arg(0).arg(-1)).await,
                other => panic!("unexpected Redis type {other} under the prefix"),
            };
            dump.push((key, values));
        }
        dump
    }

    async fn pttl(&self, key: &str) -> i64 {
        self.query(redis::cmd("PTTL").arg(key)).await
    }
}

async fn scan(connection: &mut impl ConnectionLike, pattern: &str) -> Vec<Vec<u8>> {
    let (mut cursor, mut keys) = (0u64, Vec::new());
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// The contract suite's teardown: every key under `prefix` deleted.
fn delete_prefix(url: String, prefix: String) -> Settle {
    Box::new(move || {
        let (url, prefix) = (url.clone(), prefix.clone());
        Box::pin(async move { Raw::open(&url).await.delete_all(&prefix).await })
    })
}

store_contract_suite!(on_redis, SystemTime::now(), |clock| async move {
    let url = redis_url().await?;
    let prefix = random_prefix();
    let store = RedisSessionStore::connect(RedisStoreSettings::new(&url, &prefix), clock).await.unwrap();
    Some(Backend {
        store: Arc::new(store),
        // Nothing to catch up on: every answer is decided by the clock passed to the scripts.
        settle: Box::new(|| Box::pin(async {})),
        teardown: Some(delete_prefix(url, prefix)),
    })
});

/// A test's Redis world outside the contract suite.
struct World {
    url: String,
    prefix: String,
    clock: Arc<ManualClock>,
    store: Arc<RedisSessionStore>,
    raw: Raw,
}

impl World {
    /// Runs `test` on a fresh prefix, then deletes every key under it (also when the test panicked).
    async fn run<F, Fut>(test: F)
    where
        F: FnOnce(Arc<Self>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(url) = redis_url().await else { return };
        let prefix = random_prefix();
        let clock = clock();
        let store =
            RedisSessionStore::connect(RedisStoreSettings::new(&url, &prefix), clock.clone()).await.unwrap();
        let raw = Raw::open(&url).await;
        let world = Arc::new(Self { url, prefix, clock, store: Arc::new(store), raw });
        let outcome = tokio::spawn(test(Arc::clone(&world))).await;
        Raw::open(&world.url).await.delete_all(&world.prefix).await;
        if let Err(error) = outcome {
            std::panic::resume_unwind(error.into_panic());
        }
    }

    /// Stores a session for `secret_ref` with the real key `real_key`; the id carries the digest's shard
    /// when `in_shard` (as the service issues them), else it is any random id.
    async fn issue(
        &self,
        secret_ref: &str,
        subject: Option<&str>,
        real_key: &str,
        in_shard: bool,
    ) -> (Token, Session) {
        let token = Token::generate().unwrap();
        let id = if in_shard {
            SessionId::new_random_in_shard(token.digest().shard())
        } else {
            SessionId::new_random()
        };
        let session = Session::issue(
            id,
            SecretRef::parse(secret_ref).unwrap(),
            subject.map(|subject| Subject::parse(subject).unwrap()),
            Metadata::new([("app".to_owned(), "chat".to_owned())].into()).unwrap(),
            SessionPolicy::default().ttl(Some(600)).unwrap(),
            self.clock.now(),
        );
        let grant = Grant {
            session: session.clone(),
            secret: Arc::new(SecretValue::new(real_key.to_owned()).unwrap()),
        };
        self.store.insert(&token.keys(), grant).await.unwrap();
        (token, session)
    }

    fn key(&self, kind: &str, digest: &TokenDigest) -> String {
        format!("{{{}:{:02x}}}:{kind}:{}", self.prefix, digest.shard(), digest.to_hex())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|window| window == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test]
async fn a_redis_dump_holds_no_token_and_no_real_key() {
    World::run(|world| async move {
        let mut tokens = Vec::new();
        let mut real_keys = Vec::new();
        for i in 0..12 {
            let real_key = format!("sk-live-{}", random_hex(32));
            let secret_ref = ["openai-prod", "anthropic-prod", "mistral"][i % 3];
            let subject = [Some("alice"), Some("bob"), None, Some("carol")][i % 4];
            tokens.push(world.issue(secret_ref, subject, &real_key, i % 2 == 0).await);
            real_keys.push(real_key);
        }
        // Refresh, logout, admin revocation by id, by key and by subject; then read everything back.
        for (token, _) in &tokens[..4] {
            let later = world.clock.now() + Duration::from_secs(900);
            assert!(matches!(world.store.extend(&token.keys(), later).await.unwrap(), Lookup::Active(_)));
        }
        assert!(world.store.revoke(&tokens[4].0.digest()).await.unwrap());
        assert!(world.store.revoke_by_id(tokens[5].1.id()).await.unwrap());
        let by_key = RevocationTarget::SecretRef(SecretRef::parse("mistral").unwrap());
        assert!(world.store.revoke_matching(&by_key).await.unwrap() >= 2);
        let by_subject = RevocationTarget::Subject(Subject::parse("bob").unwrap());
        assert!(world.store.revoke_matching(&by_subject).await.unwrap() >= 1);
        let mut active = 0;
        for (token, _) in &tokens {
            active +=
                usize::from(matches!(world.store.find(&token.keys()).await.unwrap(), Lookup::Active(_)));
        }
        assert!(active >= 4, "the dump must hold sealed real keys to look into, {active} active");
        assert!(!world.store.list(&Default::default(), 100).await.unwrap().is_empty());

        let dump = world.raw.dump(&world.prefix).await;
        // The scan saw what the store wrote: a hash, a sealed key per active session, and the indexes.
        let names: Vec<String> =
            dump.iter().map(|(key, _)| String::from_utf8_lossy(key).into_owned()).collect();
        assert_eq!(names.iter().filter(|name| name.contains(":k:")).count(), active, "{names:#?}");
        assert_eq!(names.iter().filter(|name| name.contains(":s:")).count(), tokens.len(), "{names:#?}");
        assert!(names.iter().any(|name| name.ends_with(":all")), "{names:#?}");
        assert!(names.iter().any(|name| name.contains(":id:")), "{names:#?}");

        let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, (token, _)) in tokens.iter().enumerate() {
            let text = token.expose();
            needles.push((format!("token {i}"), text.as_bytes().to_vec()));
            needles.push((format!("token body {i}"), text.as_bytes()["skt_".len()..].to_vec()));
            let keys = token.keys();
            let sealing = keys.sealing_key().expose();
            needles.push((format!("sealing key {i}"), sealing.to_vec()));
            needles.push((format!("sealing key hex {i}"), hex(sealing).into_bytes()));
        }
        for (i, real_key) in real_keys.iter().enumerate() {
            needles.push((format!("real key {i}"), real_key.as_bytes().to_vec()));
            needles.push((format!("real key body {i}"), real_key.as_bytes()["sk-live-".len()..].to_vec()));
            needles.push((format!("real key hex {i}"), hex(real_key.as_bytes()).into_bytes()));
        }
        let mut values = 0;
        for (key, held) in &dump {
            for (what, needle) in &needles {
                assert!(!contains(key, needle), "{what} in the key name {}", String::from_utf8_lossy(key));
                for value in held {
                    assert!(
                        !contains(value, needle),
                        "{what} in the value of {}",
                        String::from_utf8_lossy(key)
                    );
                }
            }
            values += held.len();
        }
        // The search itself can find things: the digests, which are meant to be there, are found.
        let digest = tokens[0].0.digest().to_hex();
        assert!(dump.iter().any(|(key, held)| contains(key, digest.as_bytes())
            || held.iter().any(|v| contains(v, digest.as_bytes()))));
        assert!(values > tokens.len() * 8, "only {values} values read");
    })
    .await;
}

#[tokio::test]
async fn a_sealed_value_from_redis_cannot_be_opened_with_another_tokens_key() {
    World::run(|world| async move {
        let (a, _) = world.issue("openai-prod", None, "sk-live-aaaaaaaa", true).await;
        let (b, _) = world.issue("openai-prod", None, "sk-live-bbbbbbbb", true).await;
        let sealed_a: Vec<u8> = world.raw.query(redis::cmd("GET").arg(world.key("k", &a.digest()))).await;
        let sealed_b: Vec<u8> = world.raw.query(redis::cmd("GET").arg(world.key("k", &b.digest()))).await;
        assert!(!contains(&sealed_a, b"sk-live-aaaaaaaa"));

        // A's sealed real key in B's place: B's token derives another key (and B's digest and id are not
        // what A's value was sealed for), so it must not open, and the error says nothing secret.
        let _: () = world
            .raw
            .query(redis::cmd("SET").arg(world.key("k", &b.digest())).arg(&sealed_a).arg("KEEPTTL"))
            .await;
        let error = world.store.find(&b.keys()).await.unwrap_err();
        let StoreError::Unavailable(cause) = &error else { panic!("{error:?}") };
        assert!(!cause.contains("sk-live") && !cause.contains("skt_"), "{cause}");

        // Control: with its own value back, B opens again; A was never affected.
        let _: () = world
            .raw
            .query(redis::cmd("SET").arg(world.key("k", &b.digest())).arg(&sealed_b).arg("KEEPTTL"))
            .await;
        let Lookup::Active(grant) = world.store.find(&b.keys()).await.unwrap() else {
            panic!("B must be active")
        };
        assert_eq!(grant.secret.expose(), "sk-live-bbbbbbbb");
        let Lookup::Active(grant) = world.store.find(&a.keys()).await.unwrap() else {
            panic!("A must be active")
        };
        assert_eq!(grant.secret.expose(), "sk-live-aaaaaaaa");
    })
    .await;
}

#[tokio::test]
async fn every_key_expires_with_its_session_and_a_revocation_drops_the_real_key_and_the_index_entries() {
    World::run(|world| async move {
        let retention = i64::try_from(ENDED_SESSION_RETENTION.as_millis()).unwrap();
        let (token, session) = world.issue("openai-prod", Some("alice"), "sk-live-ttl", true).await;
        let digest = token.digest();
        let tag = format!("{{{}:{:02x}}}", world.prefix, digest.shard());
        let ttl = 600_000;
        // Redis's clock runs on during the test; the ManualClock stood still at its start.
        let within = |pttl: i64, expected: i64| pttl > expected - 5_000 && pttl <= expected + 1;
        assert!(within(world.raw.pttl(&world.key("s", &digest)).await, ttl + retention));
        assert!(within(world.raw.pttl(&world.key("k", &digest)).await, ttl));
        assert!(within(world.raw.pttl(&format!("{tag}:id:{}", session.id())).await, ttl + retention));
        for index in ["all", "ref:openai-prod", "sub:alice"] {
            assert!(within(world.raw.pttl(&format!("{tag}:{index}")).await, ttl + retention), "{index}");
        }

        // A refresh moves every deadline with the session.
        let later = world.clock.now() + Duration::from_secs(900);
        assert!(matches!(world.store.extend(&token.keys(), later).await.unwrap(), Lookup::Active(_)));
        let extended = 900_000;
        assert!(within(world.raw.pttl(&world.key("s", &digest)).await, extended + retention));
        assert!(within(world.raw.pttl(&world.key("k", &digest)).await, extended));
        assert!(within(world.raw.pttl(&format!("{tag}:id:{}", session.id())).await, extended + retention));
        assert!(within(world.raw.pttl(&format!("{tag}:sub:alice")).await, extended + retention));

        // A revocation deletes the sealed real key and the index entries at once; the tombstone stays.
        assert!(world.store.revoke(&digest).await.unwrap());
        assert_eq!(world.raw.pttl(&world.key("k", &digest)).await, -2, "the sealed key must be gone");
        let member = digest.to_hex();
        for index in ["all", "ref:openai-prod", "sub:alice"] {
            let score: Option<f64> =
                world.raw.query(redis::cmd("ZSCORE").arg(format!("{tag}:{index}")).arg(&member)).await;
            assert_eq!(score, None, "{index} still lists a revoked session");
        }
        assert!(matches!(world.store.find(&token.keys()).await.unwrap(), Lookup::Revoked));

        // Nothing under the prefix lives forever.
        for name in world.raw.keys(&world.prefix).await {
            let name = String::from_utf8(name).unwrap();
            let pttl = world.raw.pttl(&name).await;
            assert!(pttl > 0 && pttl <= extended + retention, "{name}: {pttl}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_index_sheds_ended_members_on_the_next_write() {
    World::run(|world| async move {
        // Two sessions in one shard: find a token whose digest shares the first one's shard.
        let (first, _) = world.issue("openai-prod", None, "sk-live-one", true).await;
        let shard = first.digest().shard();
        world.clock.advance(Duration::from_secs(601)); // the first has ended
        let second = loop {
            let token = Token::generate().unwrap();
            if token.digest().shard() == shard {
                break token;
            }
        };
        let session = Session::issue(
            SessionId::new_random_in_shard(shard),
            SecretRef::parse("openai-prod").unwrap(),
            None,
            Metadata::default(),
            SessionPolicy::default().ttl(Some(60)).unwrap(),
            world.clock.now(),
        );
        let grant = Grant { session, secret: Arc::new(SecretValue::new("sk-live-two".to_owned()).unwrap()) };
        world.store.insert(&second.keys(), grant).await.unwrap();
        let tag = format!("{{{}:{shard:02x}}}", world.prefix);
        for index in ["all", "ref:openai-prod"] {
            let members: Vec<String> =
                world.raw.query(redis::cmd("ZRANGE").arg(format!("{tag}:{index}")).arg(0).arg(-1)).await;
            assert_eq!(members, vec![second.digest().to_hex()], "{index}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable_quickly_and_only_a_bad_url_fails_connect() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let mut settings = RedisStoreSettings::new("redis://127.0.0.1:1", "sidekey-test");
    settings.connect_timeout = Duration::from_millis(300);
    settings.command_timeout = Duration::from_millis(300);
    let store = RedisSessionStore::connect(settings, clock()).await.expect("connect must not need Redis");
    let token = Token::generate().unwrap();
    let started = Instant::now();
    assert!(matches!(store.ping().await, Err(StoreError::Unavailable(_))));
    assert!(matches!(store.find(&token.keys()).await, Err(StoreError::Unavailable(_))));
    assert!(matches!(store.revoke(&token.digest()).await, Err(StoreError::Unavailable(_))));
    assert!(matches!(
        store.revoke_matching(&RevocationTarget::SecretRef(SecretRef::parse("openai").unwrap())).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());

    for url in ["http://user:hunter2@127.0.0.1", "not a url"] {
        let refused = RedisSessionStore::connect(RedisStoreSettings::new(url, "sidekey"), clock()).await;
        let Err(error) = refused else { panic!("{url} must be refused") };
        let cause = error.to_string();
        assert!(matches!(error, ConfigError::InvalidUrl(_)), "{cause}");
        assert!(!cause.contains("hunter2"), "{cause}");
    }
    let braces =
        RedisSessionStore::connect(RedisStoreSettings::new("redis://127.0.0.1:1", "a{b}"), clock()).await;
    assert!(braces.is_err(), "a prefix with braces would break the hash tags");
}
