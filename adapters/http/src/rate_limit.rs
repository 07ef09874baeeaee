//! Rate limiting of failed requests per client address.
//!
//! A client that keeps sending invalid tokens or unreadable bodies is guessing, scanning or broken; either
//! way its requests should not take the CPU that valid ones need. Each failed request (status 400, 401 or
//! 413) takes a cell from the client's bucket (GCRA, by `governor`): a sustained rate with a burst. A
//! client whose bucket is empty is refused with 429 `rate_limited` and `Retry-After` for *every* request
//! until a cell is back, before anything is parsed, verified or read; a client that only sends valid
//! requests never touches the limiter.
//!
//! A refusal is cheap but not free, and a flooder on keep-alive connections would get tens of
//! thousands a second. So the 429 is held until the client's block ends (at most [`MAX_HOLD`]): each
//! of its connections then costs a sleeping timer rather than a core, which bounds the flood to about
//! one request per connection per hold. At most [`MAX_HELD`] answers are held at once; past that they
//! go out at once.
//!
//! Time comes from a `LimiterClock`: the monotonic clock in service, a clock moved by hand in the unit
//! tests, so that a block and its end are tested at exact instants rather than slept through.
//!
//! The client address is the TCP peer, or, from a trusted reverse proxy, the address it forwards
//! ([`ProxyTrust::client_address`]): a client that writes `X-Forwarded-For` itself is still counted under
//! its own address. IPv6 clients are keyed by their /64, which one host usually holds whole, so an
//! attacker cannot rotate through its addresses.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
#[cfg(test)]
use governor::clock::FakeRelativeClock;
use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use poem::Request;
use poem::http::{HeaderMap, StatusCode};

use crate::trusted_proxies::ProxyTrust;

/// Longest a refusal is held before it is sent.
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// Most refusals held at once (each is a sleeping task and an open connection).
pub const MAX_HELD: usize = 4096;

/// How often idle clients are forgotten: their state is dropped once their bucket is full again.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(10);

/// How many failed requests a client address may send: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureQuota {
    /// Failed requests per second, sustained.
    pub per_second: NonZeroU32,
    /// Failed requests allowed at once, on top of the rate.
    pub burst: NonZeroU32,
}

/// Where the limiter reads the time, as nanoseconds since it started: one type for the service's clock
/// and the tests', so that neither the limiter nor its users are generic over it.
#[derive(Debug, Clone)]
enum LimiterClock {
    /// `std`'s monotonic clock: a wall-clock step (NTP, a VM resume) neither lifts nor lengthens a block.
    Monotonic { started: Instant },
    /// A clock that moves only when the test advances it (its clones move with it).
    #[cfg(test)]
    Manual(FakeRelativeClock),
}

impl Clock for LimiterClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        match self {
            Self::Monotonic { started } => Nanos::from(started.elapsed()),
            #[cfg(test)]
            Self::Manual(clock) => clock.now(),
        }
    }
}

/// Counts failed requests per client address and refuses clients over their quota.
pub struct FailureLimiter {
    failures: RateLimiter<IpAddr, DashMapStateStore<IpAddr>, LimiterClock, NoOpMiddleware<Nanos>>,
    /// Clients over quota, until when: checked on every request, so kept apart from the limiter's own
    /// state (checking that would consume a cell).
    blocked: DashMap<IpAddr, Nanos>,
    /// False when `blocked` is surely empty: lets the common case skip the map (whose emptiness check
    /// would lock every shard). May be true with nobody blocked, never false with someone blocked for
    /// long: every new block sets it again.
    any_blocked: AtomicBool,
    /// Whose word on the client's address is taken.
    proxy_trust: ProxyTrust,
    last_cleanup: Mutex<Nanos>,
    /// The limiter's own clock for `blocked` and the cleanup; the same time as `failures`' clone of it.
    clock: LimiterClock,
    held: tokio::sync::Semaphore,
}

impl FailureLimiter {
    /// A limiter with `quota` per client address, believing the proxies `proxy_trust` names.
    pub fn new(quota: FailureQuota, proxy_trust: ProxyTrust) -> Self {
        Self::on(quota, proxy_trust, LimiterClock::Monotonic { started: Instant::now() })
    }

    fn on(quota: FailureQuota, proxy_trust: ProxyTrust, clock: LimiterClock) -> Self {
        let quota = Quota::per_second(quota.per_second).allow_burst(quota.burst);
        Self {
            failures: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            blocked: DashMap::new(),
            any_blocked: AtomicBool::new(false),
            proxy_trust,
            last_cleanup: Mutex::new(clock.now()),
            clock,
            held: tokio::sync::Semaphore::new(MAX_HELD),
        }
    }

    /// A limiter on a clock that moves only when the test advances the returned handle.
    #[cfg(test)]
    pub(crate) fn on_manual_clock(quota: FailureQuota, proxy_trust: ProxyTrust) -> (Self, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Self::on(quota, proxy_trust, LimiterClock::Manual(clock.clone())), clock)
    }

    /// Waits out `wait` (at most [`MAX_HOLD`]) and a random part of it again before a refusal is sent,
    /// unless [`MAX_HELD`] refusals are already waiting.
    pub async fn hold(&self, wait: Duration) {
        if let Ok(_permit) = self.held.try_acquire() {
            // The refusals of one client all wait for the same instant; released together, dozens of
            // them would reach the core in one burst and delay the valid requests queued behind it.
            // A random extra of up to the wait again spreads them out (and slows the flood further).
            let wait = wait.min(MAX_HOLD);
            let spread = getrandom::u64().map_or(0.0, |random| (random >> 11) as f64 / (1u64 << 53) as f64);
            tokio::time::sleep(wait + wait.mul_f64(spread)).await;
        }
    }

    /// The address `request` is counted under, when it has one.
    pub fn client_of(&self, request: &Request) -> Option<IpAddr> {
        self.client_from(request.headers(), request.remote_addr().as_socket_addr().map(|addr| addr.ip()))
    }

    /// The address a request with these `headers` from the TCP peer `peer` is counted under.
    pub fn client_from(&self, headers: &HeaderMap, peer: Option<IpAddr>) -> Option<IpAddr> {
        self.proxy_trust.client_address(headers, peer).map(limiting_key)
    }

    /// How long `client` must still wait, when it is over its quota.
    pub fn blocked_for(&self, client: IpAddr) -> Option<Duration> {
        // Every request asks; with nobody blocked (the normal case) this is one atomic load.
        if !self.any_blocked.load(Ordering::Relaxed) {
            return None;
        }
        let until = *self.blocked.get(&client)?;
        let now = self.clock.now();
        if until > now {
            return Some(until.duration_since(now).into());
        }
        self.blocked.remove_if(&client, |_, until| *until <= now);
        None
    }

    /// Counts a failed request of `client`; returns how long the client must now wait when this failure
    /// took it over its quota.
    pub fn record_failure(&self, client: IpAddr) -> Option<Duration> {
        self.forget_idle_clients();
        let refused = self.failures.check_key(&client).err()?;
        let now = self.clock.now();
        let wait = refused.wait_time_from(now);
        let newly_blocked = self.blocked.insert(client, now + wait).is_none();
        // After the entry exists: a cleanup that clears the flag and then finds the map empty cannot
        // have run between the two and left this block unseen.
        self.any_blocked.store(true, Ordering::Relaxed);
        if newly_blocked {
            tracing::warn!(client = %client, wait_ms = wait.as_millis() as u64, "client over its quota of failed requests");
        }
        metrics::counter!("sidekey_rate_limited_clients_total").increment(1);
        Some(wait)
    }

    /// Whether a response with `status` counts as a failed request: unreadable (400), unauthenticated
    /// (401) or oversize (413); the answers a client sees when it guesses tokens or floods bodies.
    pub fn counts_as_failure(status: StatusCode) -> bool {
        matches!(status, StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::PAYLOAD_TOO_LARGE)
    }

    /// How many client addresses the limiter holds state for.
    pub fn tracked_clients(&self) -> usize {
        self.failures.len()
    }

    /// Drops the state of clients whose bucket is full again, at most every [`CLEANUP_INTERVAL`], so a
    /// flood from many addresses does not grow memory for ever.
    fn forget_idle_clients(&self) {
        let Ok(mut last) = self.last_cleanup.try_lock() else { return };
        let now = self.clock.now();
        if Duration::from(now.duration_since(*last)) < CLEANUP_INTERVAL {
            return;
        }
        *last = now;
        self.failures.retain_recent();
        self.failures.shrink_to_fit();
        self.any_blocked.store(false, Ordering::Relaxed);
        self.blocked.retain(|_, until| *until > now);
        if !self.blocked.is_empty() {
            self.any_blocked.store(true, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for FailureLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLimiter")
            .field("tracked_clients", &self.failures.len())
            .field("blocked_clients", &self.blocked.len())
            .finish_non_exhaustive()
    }
}

/// The key an address is limited under: IPv4 (also when mapped into IPv6) as is, IPv6 by its /64.
pub(crate) fn limiting_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(network))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderName;

    use super::*;

    fn quota(per_second: u32, burst: u32) -> FailureQuota {
        FailureQuota {
            per_second: NonZeroU32::new(per_second).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    #[test]
    fn a_client_is_blocked_after_its_burst_and_others_are_not() {
        let limiter = FailureLimiter::new(quota(1, 3), ProxyTrust::default());
        let guesser: IpAddr = "192.0.2.1".parse().unwrap();
        let bystander: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.record_failure(guesser), None);
        }
        assert_eq!(limiter.blocked_for(guesser), None, "within the burst");
        let wait = limiter.record_failure(guesser).expect("the fourth failure is over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.blocked_for(guesser).is_some());
        assert_eq!(limiter.blocked_for(bystander), None);
        assert_eq!(limiter.record_failure(bystander), None);
    }

    #[test]
    fn a_block_ends_when_a_cell_is_back() {
        let (limiter, clock) = FailureLimiter::on_manual_clock(quota(50, 1), ProxyTrust::default());
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(limiter.record_failure(client), None);
        let wait = limiter.record_failure(client).expect("over quota");
        assert_eq!(wait, Duration::from_millis(20), "one cell every 1/50 s");
        clock.advance(wait - Duration::from_nanos(1));
        assert_eq!(
            limiter.blocked_for(client),
            Some(Duration::from_nanos(1)),
            "blocked until the cell is back"
        );
        clock.advance(Duration::from_nanos(1));
        assert_eq!(limiter.blocked_for(client), None);
        assert_eq!(limiter.record_failure(client), None, "the bucket has a cell again");
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limiting_key(one), limiting_key(other));
        assert_ne!(limiting_key(one), limiting_key(elsewhere));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(limiting_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn only_unreadable_unauthenticated_and_oversize_answers_count() {
        for status in [StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED, StatusCode::PAYLOAD_TOO_LARGE] {
            assert!(FailureLimiter::counts_as_failure(status), "{status}");
        }
        for status in [
            StatusCode::OK,
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert!(!FailureLimiter::counts_as_failure(status), "{status}");
        }
    }

    #[test]
    fn the_deprecated_header_still_reads_the_last_address_the_proxy_appended() {
        let trust = ProxyTrust::EveryPeer { address_header: HeaderName::from_static("x-forwarded-for") };
        let limiter = FailureLimiter::new(quota(1, 1), trust);
        let request = Request::builder().header("x-forwarded-for", "203.0.113.9, 192.0.2.44").finish();
        assert_eq!(limiter.client_of(&request), Some("192.0.2.44".parse().unwrap()));
        let garbage = Request::builder().header("x-forwarded-for", "not an address").finish();
        assert_eq!(limiter.client_of(&garbage), None, "no peer address in a built request either");
    }

    #[test]
    fn a_client_spoofing_x_forwarded_for_is_limited_under_its_peer_address_unless_the_peer_is_trusted() {
        let spoofing = |forwarded: &str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", forwarded.parse().unwrap());
            headers
        };
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let untrusting = FailureLimiter::new(quota(1, 2), ProxyTrust::default());
        // A fresh forged address per guess: all of them are the peer's, and the third is over the burst.
        for (guess, forged) in ["203.0.113.1", "203.0.113.2"].into_iter().enumerate() {
            let client = untrusting.client_from(&spoofing(forged), Some(peer)).unwrap();
            assert_eq!(client, peer, "guess {guess}");
            assert_eq!(untrusting.record_failure(client), None, "guess {guess} is within the burst");
        }
        let client = untrusting.client_from(&spoofing("203.0.113.3"), Some(peer)).unwrap();
        assert!(untrusting.record_failure(client).is_some(), "the forged addresses did not help");

        // With the peer a trusted proxy, the address it forwards is the client, each with its own quota.
        let trusting = FailureLimiter::new(quota(1, 2), ProxyTrust::networks(&["127.0.0.1/32"]).unwrap());
        for forwarded in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
            let client = trusting.client_from(&spoofing(forwarded), Some(peer)).unwrap();
            assert_eq!(client, forwarded.parse::<IpAddr>().unwrap());
            assert_eq!(trusting.record_failure(client), None, "{forwarded} has its own burst");
        }
    }
}
