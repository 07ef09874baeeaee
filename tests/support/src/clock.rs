//! A clock that tests move by hand.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use sidekey_application::Clock;

/// A clock that moves only when a test says so.
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    /// A clock showing `now` until advanced.
    pub fn starting_at(now: SystemTime) -> Self {
        Self(Mutex::new(now))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
