//! The bridge's settings: the asking side's (`[secrets]`) and the answering side's (`[bridge]`).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::responder::BridgeSettings;
use crate::source::{BusSourceSettings, DEFAULT_MAX_PENDING, DEFAULT_TIMEOUT};

/// How an instance asks a bridge for real keys (the `[secrets]` settings of an event-bus source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BusSourceConfig {
    /// How long an issuance waits for the secret source, in milliseconds (504 after).
    pub timeout_ms: u64,
    /// Distinct requests that may wait on the bridge at once (503 past it).
    pub max_pending: usize,
}

impl Default for BusSourceConfig {
    fn default() -> Self {
        Self { timeout_ms: millis(DEFAULT_TIMEOUT), max_pending: DEFAULT_MAX_PENDING }
    }
}

impl BusSourceConfig {
    /// The source's settings.
    pub fn settings(&self) -> BusSourceSettings {
        BusSourceSettings { timeout: Duration::from_millis(self.timeout_ms), max_pending: self.max_pending }
    }
}

/// How `sidekey bridge` answers (the `[bridge]` settings besides its source and secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BridgeConfig {
    /// How often the bridge reads the keys it served again, in milliseconds, to announce rotations
    /// (0: never).
    pub watch_interval_ms: u64,
    /// Requests one bridge answers at once.
    pub max_concurrent: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        let defaults = BridgeSettings::default();
        Self {
            watch_interval_ms: defaults.watch_interval.map_or(0, millis),
            max_concurrent: defaults.max_concurrent,
        }
    }
}

impl BridgeConfig {
    /// The bridge's settings.
    pub fn settings(&self) -> BridgeSettings {
        BridgeSettings {
            max_concurrent: self.max_concurrent,
            watch_interval: (self.watch_interval_ms > 0)
                .then(|| Duration::from_millis(self.watch_interval_ms)),
            ..BridgeSettings::default()
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
