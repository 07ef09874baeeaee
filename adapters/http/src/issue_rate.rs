//! The rate of `POST /v1/sessions` per client address (`http.issue_per_client_per_minute`).
//!
//! Issuance fetches a real key and stores a session: a client that issues as fast as it can fills the
//! store (measured: 224,477 sessions in 24 s from one client). Every issuance of one client address takes
//! a cell from its bucket (GCRA, by `governor`: a burst of the whole minute's allowance, then one per
//! interval); past it, 429 `rate_limited` with `Retry-After`, before anything else is done. Other
//! clients are not affected. IPv6 clients are keyed by their /64, as for the failure limit.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::rate_limit::limiting_key;

/// How often clients whose bucket is full again are forgotten.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(10);

/// Issuances per client address and minute.
pub struct IssueLimiter {
    issued: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    last_cleanup: Mutex<Instant>,
}

impl std::fmt::Debug for IssueLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssueLimiter").finish_non_exhaustive()
    }
}

impl IssueLimiter {
    /// A limiter of `per_minute` issuances per client address.
    pub fn new(per_minute: NonZeroU32) -> Self {
        Self {
            issued: RateLimiter::keyed(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
            last_cleanup: Mutex::new(Instant::now()),
        }
    }

    /// Counts one issuance of `client`: `Err` with how long until one more fits, when it is over.
    ///
    /// # Errors
    /// The wait, when `client` is over its rate.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        self.forget_idle_clients();
        self.issued
            .check_key(&limiting_key(client))
            .map_err(|refused| refused.wait_time_from(self.clock.now()))
    }

    fn forget_idle_clients(&self) {
        let Ok(mut last) = self.last_cleanup.try_lock() else { return };
        if last.elapsed() >= CLEANUP_INTERVAL {
            *last = Instant::now();
            self.issued.retain_recent();
            self.issued.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn a_client_gets_its_minutes_allowance_at_once_then_waits_while_others_do_not() {
        let limiter = IssueLimiter::new(NonZeroU32::new(3).unwrap());
        let (flooder, other) =
            (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)));
        for _ in 0..3 {
            assert!(limiter.check(flooder).is_ok());
        }
        let wait = limiter.check(flooder).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20), "{wait:?}");
        assert!(limiter.check(other).is_ok(), "another client is not affected");
    }
}
