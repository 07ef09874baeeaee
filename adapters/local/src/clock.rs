//! The wall clock.

use std::time::SystemTime;

use sidekey_application::Clock;

/// The `Clock` port on the operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
