//! The demo's log: one line a person reads per request, saying what the gateway did (sent it,
//! coalesced it, replayed a live session; how many attempts iDenfy saw; what it refused), instead
//! of the access line's fields. Other events (warnings) keep tracing's compact form.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event format of `idenfy-gateway demo`.
#[derive(Debug, Default, Clone, Copy)]
pub struct DemoFormat;

impl<S, N> FormatEvent<S, N> for DemoFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        if meta.target() == "idenfy_gateway::front" && fields.message == "request" {
            return writeln!(writer, "{}", fields.line());
        }
        write!(writer, "{} {}: ", meta.level(), meta.target())?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The access line's fields, as strings.
#[derive(Default)]
struct Fields {
    message: String,
    method: String,
    route: String,
    team: String,
    status: String,
    attempts: String,
    dedup: String,
    error: String,
    latency_ms: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, format!("{value:?}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field, format!("{value:.0}"));
    }
}

impl Fields {
    fn set(&mut self, field: &Field, value: String) {
        let slot = match field.name() {
            "message" => &mut self.message,
            "method" => &mut self.method,
            "route" => &mut self.route,
            "team" => &mut self.team,
            "status" => &mut self.status,
            "attempts" => &mut self.attempts,
            "dedup" => &mut self.dedup,
            "error" => &mut self.error,
            "latency_ms" => &mut self.latency_ms,
            _ => return,
        };
        *slot = value;
    }

    /// `POST /api/v2/token -> 201, sent to iDenfy (dedup leader), 1 attempt, 12 ms`
    fn line(&self) -> String {
        let mut line = format!("{} {} -> {}", self.method, self.route, self.status);
        let what = match self.dedup.as_str() {
            "leader" => "sent to iDenfy (dedup leader)",
            "coalesced" => "waited for the same clientId in flight (dedup coalesced)",
            "replayed" => "live session replayed, not sent to iDenfy (dedup replayed)",
            _ if !self.error.is_empty() => "answered by the gateway",
            _ => "sent to iDenfy",
        };
        let _ = write!(line, ", {what}");
        let attempts: u32 = self.attempts.parse().unwrap_or(0);
        let _ = match attempts {
            0 => write!(line, ", no attempt"),
            1 => write!(line, ", 1 attempt"),
            n => write!(line, ", {n} attempts ({} retries)", n - 1),
        };
        if !self.error.is_empty() {
            let _ = write!(line, ", gateway error: {}", self.error);
        }
        let _ = write!(line, ", {} ms, team {}", self.latency_ms, self.team);
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(dedup: &str, attempts: &str, error: &str) -> Fields {
        Fields {
            message: "request".into(),
            method: "POST".into(),
            route: "/api/v2/token".into(),
            team: "demo".into(),
            status: "201".into(),
            attempts: attempts.into(),
            dedup: dedup.into(),
            error: error.into(),
            latency_ms: "12".into(),
        }
    }

    #[test]
    fn says_what_the_gateway_did() {
        assert_eq!(
            fields("leader", "1", "").line(),
            "POST /api/v2/token -> 201, sent to iDenfy (dedup leader), 1 attempt, 12 ms, team demo"
        );
        assert!(fields("replayed", "", "")
            .line()
            .contains("live session replayed, not sent to iDenfy (dedup replayed), no attempt"));
        assert!(fields("", "3", "")
            .line()
            .contains("3 attempts (2 retries)"));
        assert!(fields("", "", "rate_limited")
            .line()
            .contains("answered by the gateway, no attempt, gateway error: rate_limited"));
    }
}
