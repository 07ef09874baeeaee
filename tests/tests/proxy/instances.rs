//! Two sidekey instances on one Redis under a fresh key prefix, for budgets that must hold across
//! instances. Without Redis the tests that use them skip (and fail under `CI=true`).

use std::sync::Arc;

use sidekey::Config;
use sidekey_application::Clock;
use sidekey_tests::{RedisPrefix, TestApp, redis_url, spawn_app_on, spawn_app_with};

/// Two instances sharing a Redis store (sessions and the usage ledger).
pub struct Instances {
    /// The first instance.
    pub a: TestApp,
    /// The second instance.
    pub b: TestApp,
    /// Declared last, so dropped last: the keys go once both instances have stopped writing them.
    prefix: RedisPrefix,
}

impl Instances {
    /// Starts both with `tweak` applied to each configuration, on `clock` when given (both share it);
    /// `None` when Redis is not reachable (the reason is printed).
    pub async fn start(tweak: impl Fn(&mut Config), clock: Option<Arc<dyn Clock>>) -> Option<Self> {
        let prefix = RedisPrefix::new(&redis_url().await?);
        let configure = |config: &mut Config| {
            config.store.url = prefix.url().parse().expect("a Redis store URL");
            config.store.prefix = prefix.prefix().to_owned();
            tweak(config);
        };
        let (a, b) = match clock {
            Some(clock) => {
                (spawn_app_on(clock.clone(), configure).await, spawn_app_on(clock, configure).await)
            }
            None => (spawn_app_with(configure).await, spawn_app_with(configure).await),
        };
        Some(Self { a, b, prefix })
    }

    /// Stops both instances, then deletes every key under the prefix.
    pub async fn finish(self) {
        let Self { a, b, prefix } = self;
        a.shutdown().await;
        b.shutdown().await;
        drop(prefix);
    }
}
