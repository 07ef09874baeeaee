//! The `SessionStore` contract suite (`sidekey_test_support::store_contract`) on the in-memory store. The Redis store
//! runs the same suite in `redis_store.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sidekey_local::InMemorySessionStore;

use sidekey_test_support::store_contract::Backend;
use sidekey_test_support::store_contract_suite;

/// 2027-01-15: a fixed, recent instant, so failures print readable times.
const T0: Duration = Duration::from_secs(1_800_000_000);

store_contract_suite!(memory, SystemTime::UNIX_EPOCH + T0, |clock| async move {
    let store = Arc::new(InMemorySessionStore::new(clock));
    let purger = Arc::clone(&store);
    Some(Backend {
        store,
        settle: Box::new(move || {
            purger.purge_expired();
            Box::pin(async {})
        }),
        teardown: None,
    })
});
