//! The `TicketStore` contract, as one suite run against every implementation (memory, Redis):
//! [`ticket_contract_suite!`](crate::ticket_contract_suite!) instantiates it for one backend.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sidekey_application::Clock;
use sidekey_application::ports::{StoredTicket, TicketStore};
use sidekey_domain::Ticket;

pub use crate::clock::ManualClock;

/// Builds a store on a clock, or `None` when its backend is missing (the suite then skips).
pub type Factory = Box<
    dyn Fn(Arc<ManualClock>) -> Pin<Box<dyn Future<Output = Option<Arc<dyn TicketStore>>> + Send>>
        + Send
        + Sync,
>;

/// A store and its clock, for one test.
pub struct Harness {
    /// The store under test.
    pub store: Arc<dyn TicketStore>,
    /// Its clock.
    pub clock: Arc<ManualClock>,
}

impl Harness {
    /// A harness from `factory`, or `None` to skip.
    pub async fn start(factory: &Factory) -> Option<Self> {
        // Whole milliseconds: what a store may round expiries to.
        let clock = Arc::new(ManualClock::starting_at(SystemTime::now()));
        let now = clock.now().duration_since(SystemTime::UNIX_EPOCH).unwrap();
        clock.set(SystemTime::UNIX_EPOCH + Duration::from_millis(now.as_millis() as u64));
        let store = factory(clock.clone()).await?;
        Some(Self { store, clock })
    }

    /// A ticket stored for 30 s from the clock's now, with these sealed bytes.
    pub fn stored(&self, sealed: &[u8]) -> StoredTicket {
        StoredTicket { sealed_token: sealed.to_vec(), expires_at: self.clock.now() + Duration::from_secs(30) }
    }
}

/// The contract's tests, each an `async fn(&Harness)`.
pub mod tests {
    use super::*;

    /// A stored ticket comes back whole, once; the second take finds nothing.
    pub async fn a_ticket_is_taken_exactly_once(h: &Harness) {
        let digest = Ticket::generate().unwrap().digest();
        let stored = h.stored(b"sealed token bytes");
        h.store.put(digest, stored.clone()).await.unwrap();
        assert_eq!(h.store.take(&digest).await.unwrap(), Some(stored));
        assert_eq!(h.store.take(&digest).await.unwrap(), None);
    }

    /// A digest never put is nothing, and another ticket's take does not touch it.
    pub async fn an_unknown_digest_is_nothing(h: &Harness) {
        let kept = Ticket::generate().unwrap().digest();
        h.store.put(kept, h.stored(b"kept")).await.unwrap();
        assert_eq!(h.store.take(&Ticket::generate().unwrap().digest()).await.unwrap(), None);
        assert!(h.store.take(&kept).await.unwrap().is_some());
    }

    /// Of 32 concurrent takes of one ticket, exactly one gets it.
    pub async fn concurrent_takes_get_the_ticket_once(h: &Harness) {
        let digest = Ticket::generate().unwrap().digest();
        h.store.put(digest, h.stored(b"once")).await.unwrap();
        let takes = (0..32).map(|_| {
            let store = h.store.clone();
            tokio::spawn(async move { store.take(&digest).await.unwrap() })
        });
        let mut won = 0;
        for take in takes {
            if take.await.unwrap().is_some() {
                won += 1;
            }
        }
        assert_eq!(won, 1);
    }
}

/// Instantiates the ticket contract for one backend: `ticket_contract_suite!(name, factory)`.
#[macro_export]
macro_rules! ticket_contract_suite {
    ($backend:ident, $factory:expr) => {
        mod $backend {
            use super::*;

            fn factory() -> $crate::ticket_contract::Factory {
                Box::new($factory)
            }

            $crate::ticket_contract_tests!(
                a_ticket_is_taken_exactly_once,
                an_unknown_digest_is_nothing,
                concurrent_takes_get_the_ticket_once,
            );
        }
    };
}

/// One `#[tokio::test]` per contract test (used by [`ticket_contract_suite!`]).
#[macro_export]
macro_rules! ticket_contract_tests {
    ($($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let Some(harness) = $crate::ticket_contract::Harness::start(&factory()).await else { return };
                $crate::ticket_contract::tests::$test(&harness).await;
            }
        )*
    };
}
