//! The failure limit as the middleware applies it, on clocks the tests move: tokio's (paused), which the
//! held refusals sleep on, and the limiter's, which decides when a block ends. The end-to-end tests
//! check the same over real HTTP, where neither clock can be moved, so without the timings.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use governor::clock::FakeRelativeClock;
use poem::endpoint::BoxEndpoint;
use poem::http::{HeaderName, Method, StatusCode};
use poem::{Endpoint, EndpointExt, Request, Response};
use serde_json::Value;
use sidekey_application::{Clock, Grant, SessionService, SessionStore};
use sidekey_domain::{Metadata, SecretRef, SecretValue, Session, SessionId, SessionPolicy, Token};
use sidekey_local::{EnvSecretSource, InMemorySessionStore};
use sidekey_test_support::ManualClock;

use crate::rate_limit::{FailureLimiter, FailureQuota};
use crate::trusted_proxies::ProxyTrust;
use crate::{HttpSettings, HttpState};

const GUESSER: &str = "192.0.2.66";
const USER: &str = "198.51.100.10";
/// Well-formed enough to reach the store, never issued.
const UNKNOWN_TOKEN: &str = "skt_0000000000000000000000000000000000000000000aaaaaa";
/// How many times the test lets spawned requests run before it gives up on one reaching its hold: each
/// needs a handful of polls, none of which waits for anything.
const POLLS_TO_THE_HOLD: usize = 1000;

/// The application's endpoint with a failure limiter on a manual clock, and a valid token.
struct Fixture {
    endpoint: Arc<BoxEndpoint<'static, Response>>,
    limiter: Arc<FailureLimiter>,
    limiter_clock: FakeRelativeClock,
    valid: String,
}

impl Fixture {
    /// The client address comes from `X-Forwarded-For`, so that one test plays several clients.
    async fn new(per_second: u32, burst: u32) -> Self {
        let quota = FailureQuota {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        };
        let trust = ProxyTrust::EveryPeer { address_header: HeaderName::from_static("x-forwarded-for") };
        let (limiter, limiter_clock) = FailureLimiter::on_manual_clock(quota, trust.clone());
        let limiter = Arc::new(limiter);

        let clock: Arc<dyn Clock> = Arc::new(ManualClock::starting_at(SystemTime::UNIX_EPOCH));
        let store = Arc::new(InMemorySessionStore::new(clock.clone()));
        let token = Token::generate().unwrap();
        let policy = SessionPolicy::default();
        let session = Session::issue(
            SessionId::of_token(&token.digest()),
            SecretRef::parse("openai-prod").unwrap(),
            None,
            Metadata::default(),
            policy.ttl(None).unwrap(),
            clock.now(),
        );
        let secret = Arc::new(SecretValue::new("sk-real-key-never-sent".to_owned()).unwrap());
        store.insert(&token.keys(), Grant { session, secret }).await.unwrap();
        let sessions = Arc::new(SessionService::new(store, Arc::new(EnvSecretSource), clock.clone(), policy));
        let state = Arc::new(HttpState::bare(sessions, clock));
        let settings = HttpSettings { failure_quota: Some(quota), proxy_trust: trust, ..Default::default() };
        let endpoint = Arc::new(crate::endpoint(state, settings, Some(limiter.clone())).boxed());
        Self { endpoint, limiter, limiter_clock, valid: token.expose().to_owned() }
    }

    /// `GET path` from `client`, with `token` as its bearer credential when given.
    fn call(&self, client: &str, path: &str, token: Option<&str>) -> impl Future<Output = Response> + use<> {
        let mut request =
            Request::builder().method(Method::GET).uri_str(path).header("x-forwarded-for", client);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let (endpoint, request) = (self.endpoint.clone(), request.finish());
        async move { endpoint.get_response(request).await }
    }

    fn verify(&self, client: &str, token: &str) -> impl Future<Output = Response> + use<> {
        self.call(client, "/v1/auth/verify", Some(token))
    }

    /// Lets the spawned requests run until `client` is blocked; no time passes meanwhile.
    async fn until_blocked(&self, client: &str) -> Duration {
        let client: IpAddr = client.parse().unwrap();
        for _ in 0..POLLS_TO_THE_HOLD {
            if let Some(wait) = self.limiter.blocked_for(client) {
                return wait;
            }
            tokio::task::yield_now().await;
        }
        panic!("{client} was never blocked");
    }

    /// Moves both clocks: the limiter's, and tokio's, which the held refusals sleep on.
    async fn pass(&self, time: Duration) {
        self.limiter_clock.advance(time);
        tokio::time::advance(time).await;
    }
}

async fn body(response: Response) -> Value {
    serde_json::from_str(&response.into_body().into_string().await.unwrap()).unwrap()
}

fn retry_after(response: &Response) -> Option<&str> {
    response.headers().get("retry-after").map(|value| value.to_str().unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_client_over_its_failures_is_refused_until_its_block_ends_and_nobody_else_is() {
    let fixture = Fixture::new(1, 5).await;
    for attempt in 0..5 {
        let response = fixture.verify(GUESSER, UNKNOWN_TOKEN).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "attempt {attempt} is within the burst");
    }

    // The sixth is over the burst: one failure a second, so a block of exactly one second (the limiter's
    // clock has not moved), and the refusal is held until it ends.
    let over = tokio::spawn(fixture.verify(GUESSER, UNKNOWN_TOKEN));
    assert_eq!(fixture.until_blocked(GUESSER).await, Duration::from_secs(1));
    // Blocked means blocked: even a valid token from that address is refused, before it is looked at.
    let blocked_valid = tokio::spawn(fixture.verify(GUESSER, &fixture.valid));
    // Meanwhile another address is untouched, and health stays answerable for the blocked one.
    assert_eq!(fixture.verify(USER, &fixture.valid).await.status(), StatusCode::OK);
    assert_eq!(fixture.call(GUESSER, "/healthz", None).await.status(), StatusCode::OK);

    // Held: nothing is sent before the block ends...
    fixture.pass(Duration::from_secs(1) - Duration::from_millis(1)).await;
    for _ in 0..POLLS_TO_THE_HOLD {
        tokio::task::yield_now().await;
    }
    assert!(!over.is_finished(), "the refusal was sent before the block ended");
    assert!(!blocked_valid.is_finished(), "the refusal was sent before the block ended");
    // ...and everything by twice the wait (the random spread is less than the wait again).
    fixture.pass(Duration::from_secs(1) + Duration::from_millis(1)).await;
    let over = over.await.unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after(&over), Some("1"), "one failure a second: wait a second");
    assert_eq!(body(over).await["code"], "rate_limited");
    let blocked_valid = blocked_valid.await.unwrap();
    assert_eq!(blocked_valid.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body(blocked_valid).await["code"], "rate_limited");

    // Once the block is over, the client is served again.
    assert_eq!(fixture.verify(GUESSER, &fixture.valid).await.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_flood_gets_its_burst_then_the_sustained_rate_processed_and_no_more() {
    let fixture = Fixture::new(20, 100).await;
    // Counts how many of `attempts` failures from the flooder were processed (401) rather than turned
    // away (429), with a user's valid request between every two of them.
    let flood = async |attempts: usize| {
        let mut processed = 0;
        for _ in 0..attempts {
            match fixture.verify(GUESSER, UNKNOWN_TOKEN).await.status() {
                StatusCode::UNAUTHORIZED => processed += 1,
                StatusCode::TOO_MANY_REQUESTS => {}
                other => panic!("a flood request got {other}"),
            }
            assert_eq!(fixture.verify(USER, &fixture.valid).await.status(), StatusCode::OK);
        }
        processed
    };

    // The held refusals sleep on tokio's paused clock, which runs ahead while the test waits on them;
    // the limiter's clock stands still until the test moves it.
    assert_eq!(flood(300).await, 100, "the burst, at one instant");
    fixture.limiter_clock.advance(Duration::from_secs(1));
    assert_eq!(flood(300).await, 20, "one second of the sustained rate");
}
