//! The `UsageLedger` contract suite (`sidekey_test_support::ledger_contract`) on the in-memory ledger.

use std::sync::Arc;

use sidekey_application::ports::UsageLedger;
use sidekey_local::InMemoryUsageLedger;
use sidekey_test_support::ledger_contract_suite;

ledger_contract_suite!(memory, |clock| Box::pin(async move {
    Some(Arc::new(InMemoryUsageLedger::new(clock)) as Arc<dyn UsageLedger>)
}));
