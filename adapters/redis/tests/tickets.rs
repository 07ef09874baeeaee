//! The `TicketStore` contract suite (`sidekey_test_support::ticket_contract`) on Redis, under a fresh
//! key prefix (tickets expire by themselves within 30 s, so nothing is left behind for long). Skipped
//! without Redis, except under `CI=true`.

use std::sync::Arc;

use sidekey_application::ports::TicketStore;
use sidekey_redis::{RedisStoreSettings, RedisTicketStore};
use sidekey_test_support::{random_hex, redis_url, ticket_contract_suite};

ticket_contract_suite!(one_server, |clock| Box::pin(async move {
    let url = redis_url().await?;
    let settings = RedisStoreSettings::new(url, format!("sidekey-test-{}", random_hex(16)));
    Some(Arc::new(RedisTicketStore::connect(&settings, clock).unwrap()) as Arc<dyn TicketStore>)
}));
