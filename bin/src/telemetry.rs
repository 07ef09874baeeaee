//! Logs and metrics: installed once per process, here and nowhere else.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sidekey_http::MetricsRenderer;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Latency buckets in seconds, for every `*_duration_seconds` histogram (requests, proxied upstreams):
/// from 50 µs (a verify on loopback) to 10 s (a stuck secret source or a slow upstream).
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// How often histograms are compacted; the exporter leaves this to its owner when it runs no HTTP listener.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder (once; later calls return the same registry) and starts its
/// upkeep. Must run inside a Tokio runtime, before any `SessionService` is built.
///
/// # Panics
/// Never in practice: the bucket list is a non-empty constant.
pub fn install_metrics() -> MetricsRenderer {
    let handle = PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".into()), LATENCY_BUCKETS)
            .expect("the latency bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a test harness): then ours simply stays unused.
        let _ = metrics::set_global_recorder(recorder);
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                interval.tick().await;
                upkeep.run_upkeep();
            }
        });
        handle
    });
    let handle = handle.clone();
    Arc::new(move || handle.render())
}

/// Log targets held at `warn` whatever the configured filter says: the WebSocket library logs the
/// upstream handshake (the real key among its headers) and frames at debug and trace.
pub const QUIET_TARGETS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// Installs the tracing subscriber: JSON or human lines on stderr, filtered by `config.filter`.
///
/// # Errors
/// When the filter does not parse.
pub fn init_logging(config: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&config.filter)
        .map_err(|error| anyhow::anyhow!("invalid log filter {:?}: {error}", config.filter))?;
    // Added last, so they win over whatever the configured filter says of these targets.
    let filter = QUIET_TARGETS.iter().fold(filter, |filter, target| {
        filter.add_directive(format!("{target}=warn").parse().expect("a valid directive"))
    });
    let colour = colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    let result = match config.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("cannot install the log subscriber: {error}"))
}

/// Whether human log lines are coloured: only on a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>). In a file or a pipe, escape codes are noise that log
/// collectors store verbatim.
fn colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR counts as unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }
}
