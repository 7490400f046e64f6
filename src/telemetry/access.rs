//! The access log: one line per request, written by `front` once the answer is known.
//!
//! It is a `tracing` event at info (target `idenfy_gateway::front`, message `request`), filtered
//! by `log.level`/`RUST_LOG` like every other event. When the gateway's own JSON subscriber is
//! installed ([`super::init`]), the line is formatted straight into the log buffer, under its
//! lock (no line of its own, no copy), instead of going through `tracing`'s dispatch and field
//! visitors: the same bytes (a test pins that), about 3k instructions less per request. With
//! any other subscriber (the human format, a library user's own, tests) it is an ordinary
//! event. Either way the filter decides, asked with `tracing::enabled!` for the event's target
//! and level.

use std::sync::OnceLock;
use std::time::SystemTime;

use tracing::Level;

use super::LogWriter;

/// Where the gateway's JSON subscriber writes; set once, by [`super::init_to`].
static DIRECT: OnceLock<LogWriter> = OnceLock::new();

/// What the access log says about one request. No body, header value or clientId: the request
/// id (sanitised by `front`), bounded labels, and what the gateway did.
#[derive(Debug, Clone, Copy)]
pub struct AccessRecord<'a> {
    pub request_id: &'a str,
    /// Of a valid `traceparent` ("" without one).
    pub trace_id: &'a str,
    pub team: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    /// `x-gateway-attempts`, `x-gateway-dedup` and `x-gateway-error` of the answer ("" if absent).
    pub attempts: &'a str,
    pub dedup: &'a str,
    pub error: &'a str,
    pub latency_ms: f64,
}

/// Sends the access log's lines for the JSON subscriber straight to `writer` (once per process).
pub(super) fn write_directly_to(writer: LogWriter) {
    let _ = DIRECT.set(writer);
}

/// Logs `record`, if `idenfy_gateway::front` logs at info.
pub fn log(record: &AccessRecord<'_>) {
    match DIRECT.get() {
        Some(writer) => {
            if !enabled() {
                return;
            }
            let now = SystemTime::now();
            writer.append_with(|out| super::json::write_access_line(out, record, now));
        }
        None => event(record),
    }
}

/// Whether the subscriber wants the access line: `idenfy_gateway::front` at info.
fn enabled() -> bool {
    tracing::enabled!(target: "idenfy_gateway::front", Level::INFO)
}

/// The access log line as a `tracing` event.
fn event(r: &AccessRecord<'_>) {
    tracing::info!(
        target: "idenfy_gateway::front",
        request_id = r.request_id,
        trace_id = r.trace_id,
        team = r.team,
        route = r.route,
        method = r.method,
        status = r.status,
        attempts = r.attempts,
        dedup = r.dedup,
        error = r.error,
        latency_ms = r.latency_ms,
        "request"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::tests::format_event_with;
    use crate::telemetry::{json_format, FastJson};

    #[test]
    fn direct_lines_equal_the_events_lines() {
        let record = AccessRecord {
            request_id: "0123abcd",
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            team: "app\"x",
            route: "/api/v2/status",
            method: "POST",
            status: 200,
            attempts: "1",
            dedup: "",
            error: "",
            latency_ms: 0.125,
        };
        let mut direct = Vec::new();
        super::super::json::write_access_line(&mut direct, &record, SystemTime::now());
        let direct = String::from_utf8(direct).unwrap();
        let through_tracing = format_event_with(FastJson::new(json_format()), || event(&record));
        // The timestamps differ by when each line was written.
        let tail = |line: &str| line[line.find("\",\"level\"").unwrap()..].to_string();
        assert_eq!(tail(&direct), tail(&through_tracing));
        assert!(direct.starts_with("{\"timestamp\":\""));
        assert!(direct.ends_with("\"target\":\"idenfy_gateway::front\"}\n"));
    }

    fn enabled_under(filter: &str) -> bool {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, enabled)
    }

    #[test]
    fn the_direct_line_follows_the_filter_for_front_at_info() {
        assert!(enabled_under("info"));
        assert!(enabled_under("warn,idenfy_gateway::front=info"));
        assert!(!enabled_under("warn"));
        assert!(!enabled_under("info,idenfy_gateway::front=warn"));
        assert!(!enabled_under("off"));
        // Asked again with the interest cached.
        assert!(enabled_under("debug"));
        assert!(!enabled_under("error"));
    }
}
