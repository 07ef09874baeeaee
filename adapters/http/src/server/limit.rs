//! The connection cap: at most `http.max_connections` sockets served at once.
//!
//! Past the cap a new connection is accepted and closed at once, and counted. Leaving it in the listen
//! backlog instead would look the same to its client only until the backlog fills; after that, the
//! kernel drops the handshakes of every client alike, the ones already served included when they
//! reconnect. Accepting and closing keeps the backlog moving and the refusal visible.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The gauge of connections being served.
const OPEN_GAUGE: &str = "sidekey_connections_open";
/// The counter of connections closed at once because the cap was reached.
const REFUSED_COUNTER: &str = "sidekey_connections_refused_total";

/// How many connections are open, and how many may be.
#[derive(Debug)]
pub(super) struct ConnectionLimit {
    open: AtomicUsize,
    max: usize,
    // Handles looked up once: the accept loop is no place to look metrics up by name.
    open_gauge: metrics::Gauge,
    refused: metrics::Counter,
}

impl ConnectionLimit {
    pub(super) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            max,
            open_gauge: metrics::gauge!(OPEN_GAUGE),
            refused: metrics::counter!(REFUSED_COUNTER),
        })
    }

    /// A place for one more connection, or `None` (counted as refused) when all are taken.
    pub(super) fn try_acquire(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < self.max).then_some(open + 1));
        if taken.is_err() {
            self.refused.increment(1);
            return None;
        }
        self.open_gauge.increment(1.0);
        Some(ConnectionPermit(self.clone()))
    }

    /// Connections open now.
    #[cfg(test)]
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// One connection's place under the cap, given back when the connection's socket is dropped.
#[derive(Debug)]
pub(super) struct ConnectionPermit(Arc<ConnectionLimit>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.open_gauge.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_cap_no_place_is_given_until_one_is_given_back() {
        let limit = ConnectionLimit::new(2);
        let first = limit.try_acquire().expect("a first place");
        let second = limit.try_acquire().expect("a second place");
        assert!(limit.try_acquire().is_none(), "the third is refused");
        assert_eq!(limit.open(), 2);
        drop(first);
        assert_eq!(limit.open(), 1);
        let third = limit.try_acquire().expect("a place given back is given again");
        assert!(limit.try_acquire().is_none());
        drop((second, third));
        assert_eq!(limit.open(), 0);
    }
}
