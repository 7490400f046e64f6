//! OTLP span export (feature `otlp`), over real sockets: a gateway with `telemetry.otlp_endpoint`
//! pointing at a small OTLP/HTTP receiver on loopback. Each request is reported as a `request`
//! span continuing the caller's `traceparent` (which still reaches iDenfy unchanged), with one
//! `upstream attempt` child per attempt; shutdown flushes them; no secret is in what is sent.
#![cfg(feature = "otlp")]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, Span};
use prost::Message;
use support::gateway::{config_text, send, TestGateway, ACCOUNT_AND_TEAM, BEARER};
use support::upstream::{MockUpstream, Reply};
use tokio::net::TcpListener;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// What the receiver got: each export's path, content type and body.
type Exports = Arc<Mutex<Vec<(String, String, Bytes)>>>;

/// An OTLP/HTTP receiver on `127.0.0.1:0`: records every export and answers 200 with an empty
/// `ExportTraceServiceResponse`.
async fn receiver() -> (String, Exports) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let exports: Exports = Arc::default();
    let seen = exports.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let seen = seen.clone();
                async move {
                    let path = req.uri().path().to_string();
                    let kind = req
                        .headers()
                        .get("content-type")
                        .map_or("", |v| v.to_str().unwrap());
                    let kind = kind.to_string();
                    let body = req.into_body().collect().await?.to_bytes();
                    seen.lock().unwrap().push((path, kind, body));
                    Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::new())))
                }
            });
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, exports)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's attributes, as text.
fn attributes(span: &Span) -> HashMap<String, String> {
    let text = |v: &Value| match v {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    };
    span.attributes
        .iter()
        .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?))))
        .collect()
}

/// Every span exported, with the service name it came under.
fn spans(exports: &Exports) -> Vec<(String, Span)> {
    let mut spans = Vec::new();
    for (path, kind, body) in exports.lock().unwrap().iter() {
        assert_eq!(path, "/v1/traces");
        assert_eq!(kind, "application/x-protobuf");
        let request = ExportTraceServiceRequest::decode(body.clone()).expect("OTLP protobuf");
        for resource in request.resource_spans {
            let attrs = resource.resource.map(|r| r.attributes).unwrap_or_default();
            let service = attrs
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                spans.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
    }
    spans
}

#[tokio::test]
async fn exports_a_span_per_request_and_per_upstream_attempt() {
    let (collector, exports) = receiver().await;
    let upstream = MockUpstream::start().await;
    upstream.push(Reply::json(
        503,
        r#"{"identifier":"UNAVAILABLE","message":"later"}"#,
    ));
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let extra = format!(
        "{ACCOUNT_AND_TEAM}\n[retry]\nbase = \"1ms\"\ncap = \"5ms\"\n\n\
         [telemetry]\notlp_endpoint = \"{collector}\"\notlp_service_name = \"gateway-under-test\"\n"
    );
    let gw = TestGateway::start(&config_text(&upstream.url(), &extra)).await;

    let url = gw.url("/api/v2/status");
    let traced = [BEARER, ("traceparent", TRACEPARENT)];
    let first = send(Method::POST, &url, &traced, r#"{"scanRef":"s"}"#).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-gateway-attempts"), "2");
    let second = send(Method::POST, &url, &[BEARER], r#"{"scanRef":"s"}"#).await;
    assert_eq!(second.status, StatusCode::OK);
    // The caller's traceparent reaches iDenfy as it came, on every attempt.
    let received = upstream.received();
    assert_eq!(received.len(), 3);
    assert!(received[..2]
        .iter()
        .all(|r| r.headers["traceparent"] == TRACEPARENT));
    assert!(!received[2].headers.contains_key("traceparent"));

    // Graceful shutdown exports what is queued.
    gw.running.shutdown().await;
    let spans = spans(&exports);
    assert!(spans
        .iter()
        .all(|(service, _)| service == "gateway-under-test"));
    let named = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect()
    };
    let requests = named("request");
    let attempts = named("upstream attempt");
    assert_eq!((requests.len(), attempts.len()), (2, 3), "{spans:#?}");

    // The traced request continues the caller's trace, its attempts are its children.
    let traced = requests
        .iter()
        .find(|s| hex(&s.trace_id) == TRACE_ID)
        .expect("caller's trace");
    assert_eq!(hex(&traced.parent_span_id), CALLER_SPAN);
    assert_eq!(traced.kind, SpanKind::Server as i32);
    let attrs = attributes(traced);
    assert_eq!(attrs["gateway.route"], "/api/v2/status");
    assert_eq!(attrs["gateway.team"], "payments");
    assert_eq!(attrs["http.request.method"], "POST");
    assert_eq!(attrs["http.response.status_code"], "200");
    assert_eq!(attrs["gateway.attempts"], "2");
    assert_eq!(attrs["gateway.request_id"], first.header("x-request-id"));
    let children = |parent: &Span| -> Vec<HashMap<String, String>> {
        let mut kids: Vec<_> = attempts
            .iter()
            .filter(|a| a.trace_id == parent.trace_id && a.parent_span_id == parent.span_id)
            .map(|a| attributes(a))
            .collect();
        kids.sort_by(|a, b| a["gateway.attempt"].cmp(&b["gateway.attempt"]));
        kids
    };
    let kids = children(traced);
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[0]["gateway.attempt"], "1");
    assert_eq!(kids[0]["http.response.status_code"], "503");
    assert_eq!(kids[1]["gateway.attempt"], "2");
    assert_eq!(kids[1]["http.response.status_code"], "200");
    assert!(kids.iter().all(|k| k.contains_key("gateway.duration_ms")));

    // Without a traceparent: a new trace, a root span, one attempt.
    let root = requests
        .iter()
        .find(|s| hex(&s.trace_id) != TRACE_ID)
        .unwrap();
    assert!(root.parent_span_id.is_empty());
    assert_eq!(
        attributes(root)["gateway.request_id"],
        second.header("x-request-id")
    );
    assert_eq!(children(root).len(), 1);

    // No secret, in any byte sent to the collector.
    let sent: Vec<u8> = exports
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, _, b)| b.to_vec())
        .collect();
    let sent = String::from_utf8_lossy(&sent);
    for secret in [
        "test-key",
        "test-secret",
        "team-token",
        "dGVzdC1rZXk6dGVzdC1zZWNyZXQ=",
    ] {
        assert!(!sent.contains(secret), "{secret} exported");
    }
}
