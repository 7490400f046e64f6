//! W3C trace context through the real binary: `traceparent` and `tracestate` reach iDenfy
//! unchanged, and the access line carries the trace id.

mod support;

use http::{Method, StatusCode};
use support::gateway::{config_text, send, ACCOUNT_AND_TEAM, BEARER};
use support::process::GatewayProcess;
use support::upstream::{MockUpstream, Reply};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

#[tokio::test]
async fn trace_context_passes_through_and_the_access_line_has_the_trace_id() {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, config_text(&upstream.url(), ACCOUNT_AND_TEAM)).unwrap();
    let gw = GatewayProcess::start(&file, &[]);
    let traced = [
        BEARER,
        ("traceparent", TRACEPARENT),
        ("tracestate", TRACESTATE),
    ];
    let res = send(Method::POST, &gw.url("/api/v2/status"), &traced, "{}").await;
    assert_eq!(res.status, StatusCode::OK);
    // A malformed traceparent is passed on as it came, and not logged.
    let bad = [BEARER, ("traceparent", "00-not-a-trace\"id-01")];
    let res = send(Method::POST, &gw.url("/api/v2/status"), &bad, "{}").await;
    assert_eq!(res.status, StatusCode::OK);

    let received = upstream.received();
    assert_eq!(received[0].headers["traceparent"], TRACEPARENT);
    assert_eq!(received[0].headers["tracestate"], TRACESTATE);
    assert_eq!(received[1].headers["traceparent"], "00-not-a-trace\"id-01");

    let log = gw.wait_for_log("\"message\":\"request\"", 2).await;
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"] == "request")
        .collect();
    assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(lines[1]["trace_id"], "");
    gw.terminate();
    let (code, _) = tokio::task::spawn_blocking(move || gw.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}
