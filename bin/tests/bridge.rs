//! Real keys fetched over the Redis event bus from real `sidekey bridge` processes.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`); skipped without it, except under
//! `CI=true`.
//! Each test uses its own random prefix, so its streams and channels are its own, and deletes them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands as _;
use serde_json::{Value, json};
use sidekey::Config;
use sidekey::config::Secret;
use sidekey_test_support::redis_server::PrivateRedis;
use sidekey_test_support::{TempDir, random_hex, redis_url, skip_unless_installed};

const SIDEKEY: &str = env!("CARGO_BIN_EXE_sidekey");
const KEY_ID: &str = "openai-prod";

/// One test's world: a prefix on the machine's Redis, a bridge secret, a real key.
struct Bus {
    /// The machine's Redis, from `REDIS_URL`.
    url: String,
    prefix: String,
    bridge_secret: String,
    real_key: String,
    /// The bridge's configuration files and key directory; removed with the bus.
    dir: TempDir,
    redis: redis::aio::MultiplexedConnection,
}

impl Bus {
    /// The bus, or `None` to skip without Redis (never under `CI=true`, where that is a failure).
    async fn new() -> Option<Self> {
        let url = redis_url().await?;
        let client = redis::Client::open(url.as_str()).unwrap();
        let redis = client.get_multiplexed_async_connection().await.unwrap();
        let bus = Self {
            url,
            prefix: format!("sidekey-test-{}", random_hex(12)),
            bridge_secret: format!("bridge-{}", random_hex(32)),
            real_key: format!("sk-bus-{}", random_hex(40)),
            dir: TempDir::new("bus"),
            redis,
        };
        bus.write_key(&bus.real_key);
        Some(bus)
    }

    /// The bridge's source directory holds `openai-prod`.
    fn write_key(&self, key: &str) {
        std::fs::create_dir_all(self.keys_dir()).unwrap();
        std::fs::write(self.keys_dir().join(KEY_ID), key).unwrap();
    }

    fn keys_dir(&self) -> PathBuf {
        self.dir.path().join("keys.d")
    }

    /// A configuration file naming this test's prefix.
    fn config_file(&self, watch_interval_ms: u64) -> PathBuf {
        let path = self.dir.path().join(format!("bridge-{watch_interval_ms}.toml"));
        std::fs::write(
            &path,
            format!(
                "[secrets]\nprefix = \"{}\"\n[bridge]\nwatch_interval_ms = {watch_interval_ms}\n",
                self.prefix
            ),
        )
        .unwrap();
        path
    }

    /// Starts `sidekey bridge` answering from the key directory; returns once it is ready.
    fn start_bridge(&self, watch_interval_ms: u64) -> BridgeProcess {
        let mut child = Command::new(SIDEKEY)
            .args(["bridge", "--log-format", "json", "--log", "info"])
            .arg("--config")
            .arg(self.config_file(watch_interval_ms))
            .env("SIDEKEY_SECRETS", &self.url)
            .env("SIDEKEY_BRIDGE_SOURCE", format!("file:{}", self.keys_dir().display()))
            .env("SIDEKEY_BRIDGE_SECRET", &self.bridge_secret)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sidekey bridge starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready, is_ready) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("bridge answering requests") {
                    let _ = ready.send(());
                }
                sink.lock().unwrap().push(line);
            }
        });
        is_ready.recv_timeout(Duration::from_secs(20)).expect("the bridge says it is ready");
        BridgeProcess { child, logs }
    }

    /// Starts a sidekey server whose secrets come from this bus.
    async fn start_server(&self, timeout_ms: u64) -> Server {
        let mut config = Config { listen: "127.0.0.1:0".to_owned(), ..Config::default() };
        config.secrets.source = self.url.parse().unwrap();
        config.secrets.prefix = self.prefix.clone();
        config.secrets.bus.timeout_ms = timeout_ms;
        config.bridge.secret = Some(secret(&self.bridge_secret));
        config.admin.token = Some(secret("admin-token-for-bridge-tests-0123456789"));
        let running = sidekey::spawn(&config, None).await.expect("the server starts");
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap();
        Server { base: running.url(), client, running: Some(running) }
    }

    /// Every message on this test's streams so far, and every one published on its channels (collected
    /// by a pattern subscription started by [`Bus::watch_channels`]).
    async fn stream_messages(&mut self) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        for stream in ["requests", "announcements"] {
            let key = format!("{}:bridge:{stream}", self.prefix);
            let entries: redis::streams::StreamRangeReply = self.redis.xrange_all(&key).await.unwrap();
            for entry in entries.ids {
                if let Some(redis::Value::BulkString(bytes)) = entry.map.get("m") {
                    messages.push(bytes.clone());
                }
            }
        }
        messages
    }

    /// Subscribes to every channel under this test's prefix; what arrives is recorded.
    async fn watch_channels(&self) -> Arc<Mutex<Vec<(String, Vec<u8>)>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut pubsub = client.get_async_pubsub().await.unwrap();
        pubsub.psubscribe(format!("{}*", self.prefix)).await.unwrap();
        let sink = seen.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt as _;
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                sink.lock()
                    .unwrap()
                    .push((message.get_channel_name().to_owned(), message.get_payload_bytes().to_vec()));
            }
        });
        seen
    }

    async fn cleanup(mut self) {
        let keys: Vec<String> = self.redis.keys(format!("{}*", self.prefix)).await.unwrap();
        if !keys.is_empty() {
            let _: () = self.redis.del(keys).await.unwrap();
        }
    }
}

fn secret(text: &str) -> Secret {
    Secret::new(text)
}

struct BridgeProcess {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl BridgeProcess {
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.logs.lock().unwrap().clone()
    }

    /// SIGTERM, and the exit status within 10 s.
    fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.logs.lock().unwrap().clone());
            }
            assert!(Instant::now() < deadline, "the bridge did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
    running: Option<sidekey::RunningServer>,
}

impl Server {
    async fn issue(&self, secret_key_id: &str) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/v1/sessions", self.base))
            .json(&json!({ "secret_key_id": secret_key_id }))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn verify(&self, token: &str) -> u16 {
        let response =
            self.client.get(format!("{}/v1/auth/verify", self.base)).bearer_auth(token).send().await.unwrap();
        response.status().as_u16()
    }

    async fn session_count(&self) -> usize {
        let response = self
            .client
            .get(format!("{}/v1/admin/sessions", self.base))
            .bearer_auth("admin-token-for-bridge-tests-0123456789")
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        body["sessions"].as_array().unwrap().len()
    }

    async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.unwrap();
        }
    }
}

/// Polls `check` until it holds or `within` passes; returns how long it took.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "the condition did not hold within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_session_is_issued_through_a_real_bridge_process_and_the_key_never_crosses_the_bus_in_clear() {
    let Some(mut bus) = Bus::new().await else { return };
    let channels = bus.watch_channels().await;
    let bridge = bus.start_bridge(0);
    let server = bus.start_server(5000).await;

    let (status, body) = server.issue(KEY_ID).await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap();
    assert_eq!(server.verify(token).await, 200);
    let (status, body) = server.issue("no-such-key").await;
    assert_eq!((status, body["code"].as_str()), (422, Some("unknown_secret_key_id")), "{body}");

    // Everything that went over the bus: the requests and announcements streams, every channel.
    let mut seen = bus.stream_messages().await;
    let published = channels.lock().unwrap().clone();
    assert!(published.len() >= 2, "both replies were published: {published:?}");
    seen.extend(published.into_iter().map(|(_, payload)| payload));
    let key = bus.real_key.as_bytes();
    for message in &seen {
        assert!(
            !message.windows(key.len()).any(|window| window == key),
            "the real key crossed the bus in clear"
        );
        assert!(
            !message.windows(token.len()).any(|window| window == token.as_bytes()),
            "the token crossed the bus"
        );
    }
    let (status, logs) = bridge.terminate();
    assert!(status.success(), "the bridge exits 0 on SIGTERM: {status:?}");
    let logs = logs.join("\n");
    assert!(logs.contains("answered a request"), "{logs}");
    assert!(!logs.contains(&bus.real_key), "the bridge logged the real key");
    server.stop().await;
    bus.cleanup().await;
}

#[tokio::test]
async fn with_no_bridge_issuance_answers_504_within_the_timeout_and_100_ms() {
    let Some(bus) = Bus::new().await else { return };
    let server = bus.start_server(400).await;
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body) = server.issue(KEY_ID).await;
        let took = started.elapsed();
        assert_eq!((status, body["code"].as_str()), (504, Some("secret_source_timeout")), "{body}");
        assert!(took >= Duration::from_millis(400), "answered before the timeout: {took:?}");
        assert!(took <= Duration::from_millis(500), "took {took:?}, more than timeout + 100 ms");
    }
    assert_eq!(server.session_count().await, 0);
    server.stop().await;
    bus.cleanup().await;
}

#[tokio::test]
async fn a_slow_bridge_is_waited_for_within_the_timeout_and_its_late_reply_is_ignored() {
    let Some(bus) = Bus::new().await else { return };
    let bridge = bus.start_bridge(0);
    let server = bus.start_server(1500).await;
    assert_eq!(server.issue(KEY_ID).await.0, 201);

    // Slow within the timeout: the bridge is frozen for 500 ms while the request waits.
    bridge.signal("-STOP");
    let thaw = tokio::spawn(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let issuing = tokio::spawn({
        let client = server.client.clone();
        let url = format!("{}/v1/sessions", server.base);
        async move { client.post(url).json(&json!({ "secret_key_id": KEY_ID })).send().await.unwrap().status() }
    });
    thaw.await.unwrap();
    bridge.signal("-CONT");
    assert_eq!(issuing.await.unwrap().as_u16(), 201);

    // Slower than the timeout: 504; then the late reply arrives and changes nothing.
    bridge.signal("-STOP");
    let (status, _) = server.issue(KEY_ID).await;
    assert_eq!(status, 504);
    bridge.signal("-CONT");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.session_count().await, 2, "the late reply made no session");
    assert_eq!(server.issue(KEY_ID).await.0, 201, "the next request is answered");
    drop(bridge);
    server.stop().await;
    bus.cleanup().await;
}

#[tokio::test]
async fn a_restarted_bridge_answers_again() {
    let Some(bus) = Bus::new().await else { return };
    let bridge = bus.start_bridge(0);
    let server = bus.start_server(500).await;
    assert_eq!(server.issue(KEY_ID).await.0, 201);
    bridge.kill();
    assert_eq!(server.issue(KEY_ID).await.0, 504);
    let bridge = bus.start_bridge(0);
    assert_eq!(server.issue(KEY_ID).await.0, 201);
    drop(bridge);
    server.stop().await;
    bus.cleanup().await;
}

#[tokio::test]
async fn with_two_instances_and_two_bridges_each_request_gets_exactly_one_answer_at_the_instance_that_asked()
{
    let Some(bus) = Bus::new().await else { return };
    let channels = bus.watch_channels().await;
    let bridges = [bus.start_bridge(0), bus.start_bridge(0)];
    let servers = [bus.start_server(5000).await, bus.start_server(5000).await];
    let rounds = 10;
    for _ in 0..rounds {
        for server in &servers {
            let (status, body) = server.issue(KEY_ID).await;
            assert_eq!(status, 201, "{body}");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let replies = channels.lock().unwrap().clone();
    assert_eq!(replies.len(), 2 * rounds, "one reply per request, no more");
    let mut inboxes: Vec<&String> = replies.iter().map(|(channel, _)| channel).collect();
    inboxes.sort();
    inboxes.dedup();
    assert_eq!(inboxes.len(), 2, "each instance has its own inbox");
    for inbox in inboxes {
        let count = replies.iter().filter(|(channel, _)| channel == inbox).count();
        assert_eq!(count, rounds, "every reply went to the instance that asked");
    }
    for server in &servers {
        assert_eq!(server.session_count().await, rounds);
    }
    let answered: Vec<usize> = bridges
        .into_iter()
        .map(|bridge| bridge.kill().iter().filter(|line| line.contains("answered a request")).count())
        .collect();
    assert_eq!(answered.iter().sum::<usize>(), 2 * rounds, "{answered:?}");
    for server in servers {
        server.stop().await;
    }
    bus.cleanup().await;
}

#[tokio::test]
async fn a_rotation_announced_by_hand_or_seen_by_the_bridge_revokes_on_every_instance() {
    let Some(bus) = Bus::new().await else { return };
    let bridge = bus.start_bridge(100);
    let servers = [bus.start_server(5000).await, bus.start_server(5000).await];
    let mut tokens = Vec::new();
    for server in &servers {
        let (status, body) = server.issue(KEY_ID).await;
        assert_eq!(status, 201, "{body}");
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }

    // By hand: `sidekey announce`, naming the key in another case (one name, whatever the spelling).
    let status = Command::new(SIDEKEY)
        .args(["announce", &KEY_ID.to_ascii_uppercase()])
        .arg("--config")
        .arg(bus.config_file(0))
        .env("SIDEKEY_SECRETS", &bus.url)
        .env("SIDEKEY_BRIDGE_SECRET", &bus.bridge_secret)
        .status()
        .unwrap();
    assert!(status.success());
    for (server, token) in servers.iter().zip(&tokens) {
        eventually(Duration::from_secs(2), || async { server.verify(token).await == 401 }).await;
    }

    // Seen by the bridge: the key file changes, the bridge's watch announces it.
    let mut tokens = Vec::new();
    for server in &servers {
        let (status, body) = server.issue(KEY_ID).await;
        assert_eq!(status, 201, "{body}");
        tokens.push(body["token"].as_str().unwrap().to_owned());
    }
    bus.write_key(&format!("sk-rotated-{}", random_hex(20)));
    for (server, token) in servers.iter().zip(&tokens) {
        eventually(Duration::from_secs(3), || async { server.verify(token).await == 401 }).await;
    }
    let (status, _) = servers[0].issue(KEY_ID).await;
    assert_eq!(status, 201, "a session on the new key is issued");
    drop(bridge);
    for server in servers {
        server.stop().await;
    }
    bus.cleanup().await;
}

#[tokio::test]
async fn a_forged_reply_or_announcement_from_a_rogue_on_the_bus_is_refused() {
    let Some(mut bus) = Bus::new().await else { return };
    let server = bus.start_server(1000).await;
    let (status, body) = server.issue(KEY_ID).await;
    assert_eq!(status, 504, "no bridge: {body}");
    let holder = {
        // A real bridge answers one request so that a session exists to be (not) revoked later.
        let bridge = bus.start_bridge(0);
        assert_eq!(server.issue(KEY_ID).await.0, 201);
        bridge
    };
    drop(holder);

    // The rogue reads each request off the stream and answers with a key of its choice, sealed
    // correctly but under a secret it made up.
    let rogue_secret = "rogue-secret-of-its-own-choosing";
    let mut rogue_redis = bus.redis.clone();
    let requests_key = format!("{}:bridge:requests", bus.prefix);
    // Start after the requests already on the stream (`$` in a loop would miss one sent between reads).
    let newest: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(&requests_key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut rogue_redis)
        .await
        .unwrap();
    let mut last = newest.ids.first().map_or_else(|| "0-0".to_owned(), |entry| entry.id.clone());
    let rogue = tokio::spawn(async move {
        let mut answered = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while answered < 1 {
            assert!(Instant::now() < deadline, "the rogue never saw the request");
            let reply: Option<redis::streams::StreamReadReply> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(100)
                .arg("STREAMS")
                .arg(&requests_key)
                .arg(&last)
                .query_async(&mut rogue_redis)
                .await
                .unwrap();
            for entry in reply.into_iter().flat_map(|reply| reply.keys).flat_map(|key| key.ids) {
                last = entry.id.clone();
                let Some(redis::Value::BulkString(bytes)) = entry.map.get("m") else { continue };
                let request: Value = serde_json::from_slice(bytes).unwrap();
                let forged = forge_reply(rogue_secret, &request);
                let _: () = rogue_redis.publish(request["reply_to"].as_str().unwrap(), forged).await.unwrap();
                answered += 1;
            }
        }
    });
    let (status, body) = server.issue(KEY_ID).await;
    assert_eq!(status, 504, "the forged reply was not taken: {body}");
    rogue.await.unwrap();
    assert_eq!(server.session_count().await, 1);

    // A forged announcement does not revoke.
    let forged = sidekey_bridge::protocol::SecretAnnouncement::new(
        &sidekey_bridge::BridgeSecret::new("rogue-secret-of-its-own-choosing").unwrap(),
        uuid::Uuid::new_v4(),
        &sidekey_domain::SecretRef::parse(KEY_ID).unwrap(),
        sidekey_bridge::AnnouncementReason::Withdrawn,
        u64::try_from(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis(),
        )
        .unwrap(),
    );
    let _: () = redis::cmd("XADD")
        .arg(format!("{}:bridge:announcements", bus.prefix))
        .arg("*")
        .arg("m")
        .arg(forged.to_bytes())
        .query_async(&mut bus.redis)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.session_count().await, 1, "the forged announcement revoked nothing");
    server.stop().await;
    bus.cleanup().await;
}

/// A reply in the right shape to `request`, sealed correctly to the requester's public key but under
/// the rogue's own secret: what anyone on the bus could make.
fn forge_reply(rogue_secret: &str, request: &Value) -> Vec<u8> {
    use sidekey_bridge::BridgeSecret;
    use sidekey_bridge::protocol::{Answer, SecretReply, SecretRequest};
    let canonical = format!(
        "sidekey-bridge/v1/request\n{}\n{}\n{}\n{}\n{}",
        request["id"].as_str().unwrap(),
        request["secret_key_id"].as_str().unwrap(),
        request["reply_to"].as_str().unwrap(),
        request["public_key"].as_str().unwrap(),
        request["expires_at_ms"]
    );
    // The same request, authenticated under the rogue's secret, so the protocol code will seal to it.
    let mut resigned = request.clone();
    resigned["mac"] = json!(mac_under(rogue_secret, &canonical));
    let secret = BridgeSecret::new(rogue_secret).unwrap();
    let verified = SecretRequest::verify(&serde_json::to_vec(&resigned).unwrap(), &secret).unwrap();
    let answer = Answer::Found(sidekey_domain::SecretValue::new("sk-rogue-choice".to_owned()).unwrap());
    SecretReply::seal(&secret, &verified, &answer).unwrap().to_bytes()
}

/// HMAC-SHA256 under the authentication key the protocol derives from `secret`, base64url: done by
/// hand, as a bridge written in another language would.
fn mac_under(secret: &str, canonical: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut auth_key = [0u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(Some(b"sidekey-bridge/v1"), secret.as_bytes())
        .expand(b"sidekey-bridge/v1/auth", &mut auth_key)
        .unwrap();
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(&auth_key).unwrap();
    mac.update(canonical.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn with_the_bus_down_issuance_answers_503_at_once_and_recovers_by_itself_when_it_returns() {
    let test = "with_the_bus_down_issuance_answers_503_at_once_and_recovers_by_itself_when_it_returns";
    if skip_unless_installed(test, &["redis-server"]) {
        return;
    }
    let mut redis = PrivateRedis::start();
    let Some(bus) = Bus::new().await else { return };
    // The bridge and the server both use the private Redis (the bridge through SIDEKEY_SECRETS).
    let bridge_config = bus.config_file(0);
    let start_bridge = |url: &str| {
        let mut child = Command::new(SIDEKEY)
            .args(["bridge", "--log-format", "json"])
            .arg("--config")
            .arg(&bridge_config)
            .env("SIDEKEY_SECRETS", url)
            .env("SIDEKEY_BRIDGE_SOURCE", format!("file:{}", bus.keys_dir().display()))
            .env("SIDEKEY_BRIDGE_SECRET", &bus.bridge_secret)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (ready, is_ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("bridge answering requests") {
                    let _ = ready.send(());
                }
            }
        });
        is_ready.recv_timeout(Duration::from_secs(20)).unwrap();
        BridgeProcess { child, logs: Arc::default() }
    };
    let _bridge = start_bridge(&redis.url());
    let mut config = Config { listen: "127.0.0.1:0".to_owned(), ..Config::default() };
    config.secrets.source = redis.url().parse().unwrap();
    config.secrets.prefix = bus.prefix.clone();
    config.bridge.secret = Some(secret(&bus.bridge_secret));
    // Right after Redis returns, a request or two can be lost while the bridge's feed and connections
    // come back (a request added before its consumer group is made again; a reply on a connection that
    // fails once before reconnecting). Each lost one costs the server a whole bus timeout: a short one
    // lets recovery be judged by the state of the bus rather than by how many timeouts fit the bound.
    config.secrets.bus.timeout_ms = 1000;
    let running = sidekey::spawn(&config, None).await.unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let issue = || {
        client.post(format!("{}/v1/sessions", running.url())).json(&json!({ "secret_key_id": KEY_ID })).send()
    };
    assert_eq!(issue().await.unwrap().status().as_u16(), 201);

    redis.kill();
    let started = Instant::now();
    let response = issue().await.unwrap();
    let took = started.elapsed();
    assert_eq!(response.status().as_u16(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "secret_source_unavailable", "{body}");
    assert!(took < Duration::from_secs(3), "took {took:?}, more than the connect and command timeouts");
    let ready = client.get(format!("{}/readyz", running.url())).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);

    // Redis returns, empty: the bus, the inbox and the bridge's feed reconnect by themselves.
    redis.restart_empty();
    let took = eventually(Duration::from_secs(10), || async {
        issue().await.map(|response| response.status().as_u16() == 201).unwrap_or(false)
    })
    .await;
    eprintln!("recovered {took:?} after Redis returned");
    let ready = client.get(format!("{}/readyz", running.url())).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    running.shutdown().await.unwrap();
    bus.cleanup().await;
}
