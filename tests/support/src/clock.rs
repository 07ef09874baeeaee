//! A clock that tests move by hand.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sidekey_application::Clock;

/// A clock that moves only when a test says so. Share it (`Arc<ManualClock>`) between the code under
/// test, as its `Arc<dyn Clock>`, and the test, which moves it.
#[derive(Debug)]
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    /// A clock showing `now` until moved.
    pub fn starting_at(now: SystemTime) -> Self {
        Self(Mutex::new(now))
    }

    /// A clock showing the current time, down to the whole second, until moved: near enough to the real
    /// time for a service with a clock of its own (Redis expires keys on it), and whole, so that every
    /// instant a test derives from it prints and parses back exactly.
    pub fn starting_now() -> Self {
        let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        Self::starting_at(UNIX_EPOCH + Duration::from_secs(seconds))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.lock() += by;
    }

    /// Sets the clock to `now`, earlier or later than it shows: for a test that places an event at an
    /// exact instant (an expiry, a boundary) rather than at a distance from the last one.
    pub fn set(&self, now: SystemTime) {
        *self.lock() = now;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SystemTime> {
        // A test that panicked while holding the lock left a valid time behind: nothing to recover.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_shows_what_the_test_made_it_show_and_nothing_else() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let clock = ManualClock::starting_at(start);
        assert_eq!(clock.now(), start);
        assert_eq!(clock.now(), start, "it does not move by itself");
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), start + Duration::from_millis(1500));
        clock.set(start - Duration::from_secs(1));
        assert_eq!(clock.now(), start - Duration::from_secs(1));
    }

    #[test]
    fn a_clock_starting_now_shows_the_current_whole_second() {
        let before = SystemTime::now();
        let shown = ManualClock::starting_now().now();
        assert_eq!(shown.duration_since(UNIX_EPOCH).unwrap().subsec_nanos(), 0);
        assert!(shown <= before + Duration::from_secs(1) && before < shown + Duration::from_secs(1));
    }
}
