//! The `TicketStore` contract suite (`sidekey_test_support::ticket_contract`) on the in-memory store.

use std::sync::Arc;

use sidekey_application::ports::TicketStore;
use sidekey_local::InMemoryTicketStore;
use sidekey_test_support::ticket_contract_suite;

ticket_contract_suite!(memory, |clock| Box::pin(async move {
    Some(Arc::new(InMemoryTicketStore::new(clock)) as Arc<dyn TicketStore>)
}));
