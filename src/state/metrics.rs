//! Metrics of the shared state: whether Redis answers, how long its round trips take, what
//! failed, and how often a request fell back to the replica's own state.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

use super::client::Op;

/// Buckets of `idenfy_gateway_state_round_trip_seconds`: 100 µs (loopback) up to the 10 s
/// longest `state.timeout`; the default timeout (50 ms) is a bucket bound.
pub const ROUND_TRIP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 10.0,
];

/// Metrics of the shared state. Labels: `operation` is one of [`Op`]'s names.
#[derive(Debug, Clone)]
pub struct StateMetrics {
    /// `idenfy_gateway_state_backend_up`: 1 while Redis answers, 0 after it failed (until it
    /// answers again); 0 before its first answer.
    pub(crate) up: IntGauge,
    /// `idenfy_gateway_state_round_trip_seconds{operation}`: operations Redis answered.
    round_trip: HistogramVec,
    /// `idenfy_gateway_state_errors_total{operation}`: failed or timed-out operations.
    errors: IntCounterVec,
    /// `idenfy_gateway_state_fallbacks_total{operation}`: decisions taken on the replica's own
    /// state (`state.on_unavailable = "local"`) or refused (`"refuse"`) because Redis was down.
    fallbacks: IntCounterVec,
}

impl StateMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let up = IntGauge::new(
            "idenfy_gateway_state_backend_up",
            "1 while the shared state backend (Redis) answers, else 0",
        )?;
        let round_trip = HistogramVec::new(
            HistogramOpts::new(
                "idenfy_gateway_state_round_trip_seconds",
                "Round trips to the shared state backend (Redis) by operation",
            )
            .buckets(ROUND_TRIP_BUCKETS.to_vec()),
            &["operation"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_state_errors_total",
                "Failed or timed-out operations on the shared state backend, by operation",
            ),
            &["operation"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_state_fallbacks_total",
                "Decisions made without the shared state backend (local state or refused), by operation",
            ),
            &["operation"],
        )?;
        registry.register(Box::new(up.clone()))?;
        registry.register(Box::new(round_trip.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        Ok(StateMetrics {
            up,
            round_trip,
            errors,
            fallbacks,
        })
    }

    pub(crate) fn answered(&self, op: Op, took: Duration) {
        self.round_trip
            .with_label_values(&[op.as_str()])
            .observe(took.as_secs_f64());
    }

    pub(crate) fn failed(&self, op: Op) {
        self.errors.with_label_values(&[op.as_str()]).inc();
    }

    /// A decision made without Redis.
    pub fn fell_back(&self, op: Op) {
        self.fallbacks.with_label_values(&[op.as_str()]).inc();
    }
}
