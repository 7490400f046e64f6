//! OTLP span export (feature `otlp`, `telemetry.otlp_endpoint`): one span per request (`request`,
//! started in `front` when the request comes, ended when its answer is settled) and one child
//! span per upstream attempt (`upstream attempt`, made when the attempt's head arrives or it
//! fails). The request span continues the caller's trace: its parent is the caller's
//! `traceparent` when valid. That header still goes to iDenfy unchanged: the spans are reported
//! to the collector, never written into the request.
//!
//! Off the request path: an ended span goes into the SDK's batch processor queue (`try_send`,
//! dropped when full), and a tokio task exports the batches over OTLP/HTTP (protobuf, hyper's
//! client). [`Spans::shutdown`] exports what is left. Without the key, no span is made: the
//! attempt hook finds no [`AttemptParent`] in the request and returns.
//!
//! Attributes are the access line's fields (route label, team name, method, status, attempts,
//! request id) and, per attempt, its number, status or error reason and duration: no header,
//! body, clientId, token or secret.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context as _;
use http::{HeaderMap, Request, StatusCode};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::runtime::Tokio;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use opentelemetry_sdk::Resource;
use tokio::time::Instant;

use super::access::AccessRecord;
use crate::config::Otlp;
use crate::error::GatewayError;

/// The instrumentation scope the spans are reported under.
const SCOPE: &str = "idenfy-gateway";

/// The span exporter: a tracer provider whose batches go to the collector. Cheap to clone.
#[derive(Clone)]
pub struct Spans(Arc<Exporter>);

struct Exporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    shut_down: AtomicBool,
}

impl Drop for Exporter {
    /// Dropped without [`Spans::shutdown`] (a start that failed after it, a test): the SDK
    /// would shut down where its last reference goes, blocking that thread until the batch
    /// task answers, which on a runtime thread may never come. A thread of its own does it.
    fn drop(&mut self) {
        if !self.shut_down.load(Ordering::Acquire) {
            let provider = self.provider.clone();
            let _ = std::thread::Builder::new()
                .name("otlp-shutdown".into())
                .spawn(move || provider.shutdown());
        }
    }
}

impl Spans {
    /// The exporter for `config`, its batch task spawned on the current tokio runtime.
    pub fn start(config: &Otlp) -> anyhow::Result<Self> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(&config.traces_url)
            .build()
            .with_context(|| format!("cannot export spans to {}", config.traces_url))?;
        let processor = BatchSpanProcessor::builder(exporter, Tokio).build();
        let resource = Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer(SCOPE);
        Ok(Spans(Arc::new(Exporter {
            provider,
            tracer,
            shut_down: AtomicBool::new(false),
        })))
    }

    /// Starts the span of `req`, as a child of the caller's `traceparent` when it is valid, and
    /// leaves in `req` the parent its upstream attempts' spans take ([`attempt`]).
    pub fn request<B>(&self, req: &mut Request<B>) -> RequestSpan {
        let caller = caller_context(req.headers());
        let tracer = &self.0.tracer;
        let span = tracer
            .span_builder("request")
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &caller);
        let parent = Context::new().with_remote_span_context(span.span_context().clone());
        req.extensions_mut().insert(AttemptParent(Arc::new(Parent {
            context: parent,
            tracer: tracer.clone(),
            attempts: AtomicU32::new(0),
        })));
        RequestSpan(Box::new(span))
    }

    /// Exports the spans still queued and stops the batch task. The SDK blocks the thread while
    /// it waits: on a blocking thread, not a runtime worker.
    pub async fn shutdown(&self) {
        self.0.shut_down.store(true, Ordering::Release);
        let provider = self.0.provider.clone();
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = done {
            tracing::warn!(%error, "span export did not finish");
        }
    }
}

/// The span of one request, until its answer is settled. Boxed: the SDK's span is some 400
/// bytes, which would make every request's `Answer` as large, exporter or not.
pub struct RequestSpan(Box<Span>);

impl RequestSpan {
    /// Ends the span with the fields of the request's access line.
    pub fn end(mut self, record: &AccessRecord<'_>) {
        let span = &mut self.0;
        span.set_attributes([
            KeyValue::new("gateway.request_id", record.request_id.to_string()),
            KeyValue::new("gateway.team", record.team.to_string()),
            KeyValue::new("gateway.route", record.route.to_string()),
            KeyValue::new("http.request.method", record.method.to_string()),
            KeyValue::new("http.response.status_code", i64::from(record.status)),
            KeyValue::new("gateway.attempts", attempts(record.attempts)),
        ]);
        if !record.dedup.is_empty() {
            span.set_attribute(KeyValue::new("gateway.dedup", record.dedup.to_string()));
        }
        if !record.error.is_empty() {
            span.set_attribute(KeyValue::new("error.type", record.error.to_string()));
        }
        if record.status >= 500 {
            span.set_status(Status::error(record.error.to_string()));
        }
        span.end();
    }
}

/// `x-gateway-attempts` as a number: 0 when no attempt was made (refused, replayed).
fn attempts(header: &str) -> i64 {
    header.parse().unwrap_or(0)
}

/// What an upstream attempt's span needs of its request: the request span as parent, and the
/// count of attempts so far. In the request's extensions, shared by the retry loop's attempts.
#[derive(Clone)]
pub struct AttemptParent(Arc<Parent>);

struct Parent {
    context: Context,
    tracer: SdkTracer,
    attempts: AtomicU32,
}

/// Reports one upstream attempt of `req`, begun at `started`, as a child of its request span.
/// Nothing when the request has no span (no `telemetry.otlp_endpoint`).
pub fn attempt<B>(req: &Request<B>, started: Instant, result: Result<StatusCode, &GatewayError>) {
    let Some(AttemptParent(parent)) = req.extensions().get::<AttemptParent>() else {
        return;
    };
    let number = parent.attempts.fetch_add(1, Ordering::Relaxed) + 1;
    let elapsed = started.elapsed();
    let end = SystemTime::now();
    let mut span = parent
        .tracer
        .span_builder("upstream attempt")
        .with_kind(SpanKind::Client)
        .with_start_time(end.checked_sub(elapsed).unwrap_or(end))
        .start_with_context(&parent.tracer, &parent.context);
    span.set_attribute(KeyValue::new("gateway.attempt", i64::from(number)));
    span.set_attribute(KeyValue::new(
        "gateway.duration_ms",
        elapsed.as_secs_f64() * 1000.0,
    ));
    match result {
        Ok(status) => {
            let code = KeyValue::new("http.response.status_code", i64::from(status.as_u16()));
            span.set_attribute(code);
        }
        Err(error) => {
            span.set_attribute(KeyValue::new("error.type", error.reason()));
            span.set_status(Status::error(error.reason()));
        }
    }
    span.end_with_timestamp(end);
}

/// The caller's span from a valid `traceparent` (W3C Trace Context §3.2, validated by
/// [`crate::trace::trace_id`]) and its `tracestate`; an empty context (a new trace) otherwise.
fn caller_context(headers: &HeaderMap) -> Context {
    let traceparent = headers.get("traceparent");
    if crate::trace::trace_id(traceparent).is_none() {
        return Context::new();
    }
    let value = traceparent.map(|v| v.as_bytes()).unwrap_or_default();
    let text = std::str::from_utf8(value).unwrap_or_default();
    let (Ok(trace_id), Ok(span_id), Ok(flags)) = (
        TraceId::from_hex(&text[3..35]),
        SpanId::from_hex(&text[36..52]),
        u8::from_str_radix(&text[53..55], 16),
    ) else {
        return Context::new();
    };
    let state = headers
        .get("tracestate")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceState>().ok())
        .unwrap_or_default();
    let flags = TraceFlags::new(flags) & TraceFlags::SAMPLED;
    let span = SpanContext::new(trace_id, span_id, flags, true, state);
    Context::new().with_remote_span_context(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn context(traceparent: &str) -> Option<SpanContext> {
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", HeaderValue::from_str(traceparent).unwrap());
        let cx = caller_context(&headers);
        cx.has_active_span()
            .then(|| cx.span().span_context().clone())
    }

    #[test]
    fn continues_the_callers_trace() {
        let sc = context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        let unsampled = context("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.is_sampled());
    }

    #[test]
    fn starts_a_new_trace_without_a_valid_traceparent() {
        assert!(context("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(context("garbage").is_none());
        assert!(!caller_context(&HeaderMap::new()).has_active_span());
    }
}
