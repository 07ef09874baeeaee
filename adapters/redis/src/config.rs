//! The Redis settings of `[store]` (and of the event bus, which shares the store's timeouts).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bus::RedisBusSettings;
use crate::store::{
    DEFAULT_CACHE_CAPACITY, DEFAULT_CACHE_MAX_AGE, DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    LocalCacheSettings, RedisStoreSettings,
};

/// How sidekey talks to Redis, for the session store and the event bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RedisConfig {
    /// Longest wait to connect to Redis, in milliseconds, before a request answers 503.
    pub connect_timeout_ms: u64,
    /// Longest wait for one Redis command, in milliseconds, before a request answers 503.
    pub command_timeout_ms: u64,
    /// Cache active sessions locally, invalidated through Redis pub/sub (always off on Redis Cluster).
    pub local_cache: bool,
    /// Most sessions the local cache holds.
    pub cache_capacity: usize,
    /// Longest a cached session goes without being read from Redis again, in milliseconds.
    pub cache_max_age_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: millis(DEFAULT_CONNECT_TIMEOUT),
            command_timeout_ms: millis(DEFAULT_COMMAND_TIMEOUT),
            local_cache: true,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            cache_max_age_ms: millis(DEFAULT_CACHE_MAX_AGE),
        }
    }
}

impl RedisConfig {
    /// The store's settings for the Redis at `url`, keys under `prefix`.
    pub fn store(&self, url: &str, prefix: &str) -> RedisStoreSettings {
        RedisStoreSettings {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            command_timeout: Duration::from_millis(self.command_timeout_ms),
        }
    }

    /// The local cache's settings.
    pub fn cache(&self) -> LocalCacheSettings {
        LocalCacheSettings {
            enabled: self.local_cache,
            capacity: self.cache_capacity,
            max_age: Duration::from_millis(self.cache_max_age_ms),
        }
    }

    /// The event bus's settings for the Redis at `url`, keys and channels under `prefix`.
    pub fn bus(&self, url: &str, prefix: &str) -> RedisBusSettings {
        RedisBusSettings {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            command_timeout: Duration::from_millis(self.command_timeout_ms),
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
