//! The transparent proxy end to end: a real gateway on loopback in front of a scripted upstream.

mod support;

use http::{Method, StatusCode};
use support::gateway::{
    config_text, metric, send, with_mock_upstream, with_mock_upstream_listen, TestGateway,
    ACCOUNT_AND_TEAM, BEARER, UPSTREAM_AUTH,
};
use support::upstream::{refusing_upstream, MockUpstream, Reply};

async fn setup(extra: &str) -> (MockUpstream, TestGateway) {
    with_mock_upstream(extra).await
}

#[tokio::test]
async fn injects_account_credentials_and_drops_the_callers() {
    let (upstream, gw) = setup("").await;
    let res = send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[
            BEARER,
            // A second `authorization` of the caller's: removed too, not left behind the first.
            ("authorization", "Basic Y2FsbGVyOnNlY3JldA=="),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("content-type", "application/json"),
        ],
        r#"{"scanRef":"abc"}"#,
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let seen = &upstream.received()[0];
    assert_eq!(seen.headers["authorization"], UPSTREAM_AUTH);
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert!(seen.headers.get("proxy-authorization").is_none());
    assert_eq!(seen.headers["host"], upstream.addr.to_string());
}

#[tokio::test]
async fn removes_hop_by_hop_headers() {
    let (upstream, gw) = setup("").await;
    let res = send(
        Method::GET,
        &gw.url("/kyc/identifications/?clientId=1"),
        &[
            BEARER,
            ("connection", "x-private-hop"),
            ("x-private-hop", "1"),
            ("te", "trailers"),
            ("x-kept", "yes"),
        ],
        "",
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    let seen = &upstream.received()[0];
    assert!(seen.headers.get("x-private-hop").is_none());
    assert!(seen.headers.get("te").is_none());
    assert_eq!(seen.headers["x-kept"], "yes");
}

#[tokio::test]
async fn passes_bodies_statuses_and_query_strings_through_byte_for_byte() {
    let (upstream, gw) = setup("").await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    upstream.push(Reply::Respond {
        status: 418,
        headers: vec![
            ("content-type", "application/octet-stream".into()),
            ("x-idenfy", "1".into()),
        ],
        body: payload.clone().into(),
    });
    let request_body: Vec<u8> = (0..=255u8).rev().cycle().take(50_000).collect();
    let res = send(
        Method::POST,
        &gw.url("/api/v2/files?a=1&b=%20x"),
        &[BEARER],
        request_body.clone(),
    )
    .await;
    assert_eq!(res.status.as_u16(), 418);
    assert_eq!(res.body.as_ref(), payload.as_slice());
    assert_eq!(res.header("content-type"), "application/octet-stream");
    assert_eq!(res.header("x-idenfy"), "1");
    let seen = &upstream.received()[0];
    assert_eq!(seen.uri, "/api/v2/files?a=1&b=%20x");
    assert_eq!(seen.body.as_ref(), request_body.as_slice());
}

#[tokio::test]
async fn never_forwards_paths_outside_the_allow_list() {
    let (upstream, gw) = setup("").await;
    for (path, status) in [
        ("/admin", StatusCode::NOT_FOUND),
        ("/metrics", StatusCode::NOT_FOUND),
        ("/api/v2/%2e%2e/admin", StatusCode::BAD_REQUEST),
        ("/api/v2/..%2fsecret", StatusCode::BAD_REQUEST),
    ] {
        let res = send(Method::GET, &gw.url(path), &[BEARER], "").await;
        assert_eq!(res.status, status, "{path}");
        assert!(!res.header("x-gateway-error").is_empty());
        assert!(res.json()["identifier"].is_string());
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn refuses_unknown_callers_and_accepts_bearer_and_basic() {
    let (upstream, gw) = setup("").await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic cGF5bWVudHM6d3Jvbmc="),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let res = send(Method::POST, &gw.url("/api/v2/status"), &headers, "{}").await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(res.header("x-gateway-error"), "unauthorized");
        assert_eq!(res.json()["identifier"], "UNAUTHORIZED");
    }
    assert_eq!(upstream.count(), 0);
    // base64("payments:team-token")
    for auth in ["Bearer team-token", "Basic cGF5bWVudHM6dGVhbS10b2tlbg=="] {
        let res = send(
            Method::POST,
            &gw.url("/api/v2/status"),
            &[("authorization", auth)],
            "{}",
        )
        .await;
        assert_eq!(res.status, StatusCode::OK, "{auth}");
    }
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn refuses_bodies_over_the_limit_with_413() {
    let (upstream, gw) = setup("[limits]\nmax_body = \"1KiB\"\n").await;
    let res = send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[BEARER],
        vec![b'x'; 4096],
    )
    .await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(res.header("x-gateway-error"), "payload_too_large");
    let ok = send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[BEARER],
        vec![b'x'; 1024],
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn refuses_chunked_bodies_over_the_limit_with_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, gw) = setup("[limits]\nmax_body = \"1KiB\"\n").await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let chunk = "x".repeat(800);
    let req = format!(
        "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer team-token\r\n\
         transfer-encoding: chunked\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn answers_504_when_the_upstream_hangs_past_the_attempt_timeout() {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::Hang);
    let text = config_text(&upstream.url(), ACCOUNT_AND_TEAM)
        .replace("attempt_timeout = \"2s\"", "attempt_timeout = \"200ms\"");
    let gw = TestGateway::start(&text).await;
    let res = send(Method::POST, &gw.url("/api/v2/status"), &[BEARER], "{}").await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        res.header("x-gateway-error").contains("timeout")
            || res.header("x-gateway-error") == "deadline"
    );
}

#[tokio::test]
async fn answers_502_when_the_upstream_refuses_connections() {
    let (_refusing, url) = refusing_upstream();
    let gw = TestGateway::start(&config_text(&url, ACCOUNT_AND_TEAM)).await;
    let res = send(Method::POST, &gw.url("/api/v2/status"), &[BEARER], "{}").await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.header("x-gateway-error"), "upstream_connect");
    assert_eq!(res.json()["identifier"], "BAD_GATEWAY");
}

#[tokio::test]
async fn keeps_or_generates_request_ids() {
    let (upstream, gw) = setup("").await;
    let kept = send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[BEARER, ("x-request-id", "abc-123")],
        "{}",
    )
    .await;
    assert_eq!(kept.header("x-request-id"), "abc-123");
    assert_eq!(upstream.received()[0].headers["x-request-id"], "abc-123");
    let refused = send(Method::GET, &gw.url("/nope"), &[], "").await;
    assert_eq!(refused.header("x-request-id").len(), 32);
}

#[tokio::test]
async fn uses_a_rotated_key_file_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("api-key");
    std::fs::write(&key, "key-one\n").unwrap();
    let upstream = MockUpstream::start().await;
    let accounts = format!(
        "[[account]]\nname = \"main\"\napi_key_file = \"{}\"\napi_secret = \"s\"\n[[team]]\nname = \"payments\"\ntoken = \"team-token\"\n",
        key.display()
    );
    let gw = TestGateway::start(&config_text(&upstream.url(), &accounts)).await;
    send(Method::POST, &gw.url("/api/v2/status"), &[BEARER], "{}").await;
    // Rotate the way kubelet does: write a new file, then rename it over the old one.
    let staged = dir.path().join("..new");
    std::fs::write(&staged, "key-two\n").unwrap();
    std::fs::rename(&staged, &key).unwrap();
    wait_for_reloads(&gw, 1).await;
    send(Method::POST, &gw.url("/api/v2/status"), &[BEARER], "{}").await;
    let seen = upstream.received();
    assert_eq!(seen[0].headers["authorization"], "Basic a2V5LW9uZTpz");
    assert_eq!(seen[1].headers["authorization"], "Basic a2V5LXR3bzpz");
}

/// Waits (up to 5 s) until the gateway has swapped in rotated credentials `n` times.
async fn wait_for_reloads(gw: &TestGateway, n: u32) {
    let reloaded = "idenfy_gateway_credential_reloads_total{account=\"main\",outcome=\"ok\"}";
    for _ in 0..200 {
        if metric(&gw.metrics().await, reloaded) >= f64::from(n) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn uses_plain_secret_files_rewritten_in_place_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (key, secret) = (dir.path().join("api-key"), dir.path().join("api-secret"));
    std::fs::write(&key, "key-one\n").unwrap();
    std::fs::write(&secret, "secret-one\n").unwrap();
    let upstream = MockUpstream::start().await;
    let accounts = format!(
        "[[account]]\nname = \"main\"\napi_key_file = \"{}\"\napi_secret_file = \"{}\"\n\
         [[team]]\nname = \"payments\"\ntoken = \"team-token\"\n",
        key.display(),
        secret.display()
    );
    let gw = TestGateway::start(&config_text(&upstream.url(), &accounts)).await;
    send(Method::POST, &gw.url("/api/v2/status"), &[BEARER], "{}").await;
    // In place, as an operator's editor or a config tool writes a plain file: truncate, write.
    std::fs::write(&secret, "secret-two\n").unwrap();
    wait_for_reloads(&gw, 1).await;
    let res = send(Method::POST, &gw.url("/api/v2/status"), &[BEARER], "{}").await;
    assert_eq!(res.status, StatusCode::OK);
    let seen = upstream.received();
    // base64("key-one:secret-one"), then base64("key-one:secret-two").
    assert_eq!(
        seen[0].headers["authorization"],
        "Basic a2V5LW9uZTpzZWNyZXQtb25l"
    );
    assert_eq!(
        seen[1].headers["authorization"],
        "Basic a2V5LW9uZTpzZWNyZXQtdHdv"
    );
}

#[tokio::test]
async fn exports_request_metrics_in_prometheus_text() {
    let (_upstream, gw) = setup("").await;
    for _ in 0..3 {
        send(Method::POST, &gw.url("/api/v2/status"), &[BEARER], "{}").await;
    }
    send(Method::GET, &gw.url("/api/v2/status"), &[], "").await;
    let text = gw.metrics().await;
    let ok =
        "idenfy_gateway_requests_total{route=\"/api/v2/status\",status=\"2xx\",team=\"payments\"}";
    assert_eq!(metric(&text, ok), 3.0, "{text}");
    let refused =
        "idenfy_gateway_requests_total{route=\"unknown\",status=\"4xx\",team=\"unknown\"}";
    assert_eq!(metric(&text, refused), 1.0);
    assert_eq!(
        metric(
            &text,
            "idenfy_gateway_upstream_attempts_total{account=\"main\",outcome=\"2xx\"}"
        ),
        3.0
    );
    assert_eq!(metric(&text, "idenfy_gateway_build_info{"), 1.0);
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line: {line}");
    }
    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        let mut child = out;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let result = child.wait_with_output().unwrap();
        assert!(
            result.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

#[tokio::test]
async fn admin_endpoints_report_health_and_readiness() {
    let (_upstream, gw) = setup("").await;
    let admin = gw.running.admin_addr;
    assert_eq!(
        send(Method::GET, &format!("http://{admin}/healthz"), &[], "")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(Method::GET, &format!("http://{admin}/readyz"), &[], "")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(Method::GET, &format!("http://{admin}/other"), &[], "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn serves_h2c_with_prior_knowledge() {
    use http_body_util::{BodyExt, Full};
    let (upstream, gw) = setup("").await;
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = http::Request::post(gw.url("/api/v2/status"))
        .header("authorization", "Bearer team-token")
        .body(Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes().as_ref(),
        br#"{"ok":true}"#
    );
    assert_eq!(
        upstream.received()[0].headers["authorization"],
        UPSTREAM_AUTH
    );
}

#[tokio::test]
async fn cuts_off_clients_that_send_headers_too_slowly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, gw) = with_mock_upstream_listen("header_read_timeout = \"300ms\"\n").await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    stream
        .write_all(b"POST /api/v2/status HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The gateway closes the connection (after a 408 or at once); read returns when it does.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "a slow client was not cut off");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn refuses_oversized_headers() {
    let (upstream, gw) = with_mock_upstream_listen("max_header_bytes = \"8KiB\"\n").await;
    let big = "a".repeat(20_000);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let req = format!("GET /api/v2/status HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let _ = stream.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf).await;
    let head = String::from_utf8_lossy(&buf);
    assert!(
        head.is_empty() || head.starts_with("HTTP/1.1 431"),
        "{head}"
    );
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn holds_connections_over_the_limit_while_every_slot_is_busy() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, gw) = with_mock_upstream_listen("max_connections = 1\n").await;
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let ok = Reply::json(200, r#"{"ok":true}"#);
    upstream.push(Reply::Gated(gate.clone(), Box::new(ok)));
    let request = b"POST /api/v2/status HTTP/1.1\r\nhost: x\r\nauthorization: Bearer team-token\r\ncontent-length: 2\r\n\r\n{}";
    let mut first = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    first.write_all(request).await.unwrap();
    upstream.wait_for(1).await;

    // The first connection's request is being served: it holds the only slot.
    let mut second = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    second.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let waiting =
        tokio::time::timeout(std::time::Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waiting.is_err(), "a connection over the limit was served");
    assert_eq!(upstream.count(), 1);

    gate.notify_one();
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle now, the first connection is closed to admit the second.
    let n = second.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(first.read(&mut buf).await.unwrap(), 0);
    assert_eq!(upstream.count(), 2);
}
