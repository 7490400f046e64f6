//! The Prometheus registry, and the metrics of the request as a whole (the `front` layer's).
//! Each concern registers its own metrics into the same registry. Labels are bounded: team and
//! route names from config, status classes — never a clientId, scanRef or secret.

use std::sync::OnceLock;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Buckets of the whole-request duration, in seconds: from a replay answered locally (well under
/// a millisecond) to a request that waited for quota and retried up to `upstream.deadline` (30 s).
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Label for requests that never got as far as a team (401) or a route (404).
pub const UNKNOWN: &str = "unknown";

/// Metrics of whole requests.
#[derive(Clone)]
pub struct RequestMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub in_flight: IntGauge,
}

impl RequestMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_requests_total",
                "Requests answered, by team, route and status class",
            ),
            &["team", "route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "idenfy_gateway_request_duration_seconds",
                "Time to the response head",
            )
            .buckets(REQUEST_BUCKETS.to_vec()),
            &["route"],
        )?;
        let in_flight =
            IntGauge::new("idenfy_gateway_requests_in_flight", "Requests being served")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        Ok(RequestMetrics {
            requests,
            duration,
            in_flight,
        })
    }
}

/// A new registry with the process's `idenfy_gateway_log_lines_dropped_total`.
pub fn registry() -> prometheus::Result<Registry> {
    let registry = Registry::new();
    registry.register(Box::new(crate::telemetry::log_lines_dropped()))?;
    Ok(registry)
}

/// `idenfy_gateway_build_info{version, config_hash}`, registered in `registry`; see
/// [`set_config_hash`].
pub fn build_info(registry: &Registry) -> prometheus::Result<IntGaugeVec> {
    let info = IntGaugeVec::new(
        Opts::new(
            "idenfy_gateway_build_info",
            "Version of the running gateway, and the config in use (first 12 hex digits of the SHA-256 of its file)",
        ),
        &["version", "config_hash"],
    )?;
    registry.register(Box::new(info.clone()))?;
    set_config_hash(&info, "");
    Ok(info)
}

/// Makes `hash` the one `config_hash` of `build_info`.
pub fn set_config_hash(info: &IntGaugeVec, hash: &str) {
    info.reset();
    info.with_label_values(&[env!("CARGO_PKG_VERSION"), hash])
        .set(1);
}

/// Counts one thing in a gauge for as long as the guard lives, however it ends (finished,
/// cancelled, panicked).
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn enter(gauge: &IntGauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The status classes, in the order of [`status_class_index`].
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `2xx`, `4xx`, … for a status code.
pub fn status_class(status: http::StatusCode) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

/// The index of a status code's class in [`STATUS_CLASSES`].
pub fn status_class_index(status: http::StatusCode) -> usize {
    match status.as_u16() {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// Metric handles of one labelled family, by (row, column) of bounded label indexes (team,
/// route, status class…), each resolved with `with_label_values` the first time it is used and
/// then read without hashing or locking. Rows are allocated on first use, so a table for 1,000
/// teams costs a pointer per team until a team is seen, and no series appears in `/metrics`
/// before it has a value.
pub struct HandleTable<M> {
    rows: Box<[OnceLock<Row<M>>]>,
    cols: usize,
}

/// One row of a [`HandleTable`].
type Row<M> = Box<[OnceLock<M>]>;

impl<M> HandleTable<M> {
    pub fn new(rows: usize, cols: usize) -> Self {
        HandleTable {
            rows: (0..rows).map(|_| OnceLock::new()).collect(),
            cols,
        }
    }

    /// The handle at (`row`, `col`), made by `make` the first time; `None` outside the table.
    pub fn get(&self, row: usize, col: usize, make: impl FnOnce() -> M) -> Option<&M> {
        let cells = self
            .rows
            .get(row)?
            .get_or_init(|| (0..self.cols).map(|_| OnceLock::new()).collect());
        Some(cells.get(col)?.get_or_init(make))
    }
}

/// The registry as Prometheus text.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::with_capacity(16 * 1024);
    // Encoding into a Vec cannot fail on I/O; a metric family that fails to encode is skipped.
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}
