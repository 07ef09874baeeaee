//! [`Clock`]: the time, as a port so that expiry is tested at exact instants.

use std::time::SystemTime;

/// The time. A port so that expiry is tested at exact instants.
#[cfg_attr(any(test, feature = "test-util"), mockall::automock)]
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}
