//! Metric names and the Prometheus exporter.
//!
//! Names follow Kafka Streams' (records consumed/processed/produced, process
//! latency, commit latency, dropped records, restore progress), prefixed
//! `weir_`. Latencies are real Prometheus histograms (explicit buckets), not
//! summaries, so they can be aggregated across the instances of a group.

use std::net::SocketAddr;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder};

/// Buckets (seconds) for every `*_seconds` histogram.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Start the `/metrics` HTTP listener on `addr` and install the global
/// recorder. Must be called inside a Tokio runtime.
pub fn install(addr: SocketAddr) -> Result<(), BuildError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)?
        .install()
}
