//! The transparent proxy end to end: a real gateway on loopback in front of a scripted upstream.

mod support;

use std::sync::Arc;

use http::{Method, StatusCode};
use support::gateway::{
    config_text, metric, send, with_mock_upstream, TestGateway, ACCOUNT_AND_TEAM, BEARER,
    UPSTREAM_AUTH,
};
use support::raw::RawUpstream;
use support::upstream::{MockUpstream, Reply};
use tokio::sync::Notify;

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
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
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
    let reloaded = "idenfy_gateway_credential_reloads_total{account=\"main\",outcome=\"ok\"}";
    for _ in 0..200 {
        if metric(&gw.metrics().await, reloaded) >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    send(Method::POST, &gw.url("/api/v2/status"), &[BEARER], "{}").await;
    let seen = upstream.received();
    assert_eq!(seen[0].headers["authorization"], "Basic a2V5LW9uZTpz");
    assert_eq!(seen[1].headers["authorization"], "Basic a2V5LXR3bzpz");
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
    let upstream = MockUpstream::start().await;
    let text = config_text(&upstream.url(), ACCOUNT_AND_TEAM)
        .replace("[listen]\n", "[listen]\nheader_read_timeout = \"300ms\"\n");
    let gw = TestGateway::start(&text).await;
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
    let (upstream, gw) = setup("").await;
    let text = config_text(&upstream.url(), ACCOUNT_AND_TEAM)
        .replace("[listen]\n", "[listen]\nmax_header_bytes = \"8KiB\"\n");
    drop(gw);
    let gw = TestGateway::start(&text).await;
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
async fn holds_connections_over_the_limit_until_a_slot_frees() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (upstream, gw) = setup("").await;
    let text = config_text(&upstream.url(), ACCOUNT_AND_TEAM)
        .replace("[listen]\n", "[listen]\nmax_connections = 1\n");
    drop(gw);
    let gw = TestGateway::start(&text).await;
    let request = b"POST /api/v2/status HTTP/1.1\r\nhost: x\r\nauthorization: Bearer team-token\r\ncontent-length: 2\r\n\r\n{}";
    let mut first = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // The first connection stays open (keep-alive) and holds the only slot.
    let mut second = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    second.write_all(request).await.unwrap();
    let waiting =
        tokio::time::timeout(std::time::Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(waiting.is_err(), "a connection over the limit was served");
    assert_eq!(upstream.count(), 1);

    drop(first);
    let n = second.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(upstream.count(), 2);
}

// The upstream client: keep-alive, streamed bodies, and upstreams that misbehave.

/// The usual gateway in front of `url`, with a retry loop of one attempt: what these tests see
/// is the upstream client's own doing.
async fn single_attempt_gateway(url: &str) -> TestGateway {
    let extra = format!("{ACCOUNT_AND_TEAM}[retry]\nmax_attempts = 1\n");
    TestGateway::start(&config_text(url, &extra)).await
}

async fn status_call(gw: &TestGateway) -> support::http::Answer {
    send(Method::POST, &gw.url("/api/v2/status"), &[BEARER], "{}").await
}

#[tokio::test]
async fn sequential_requests_share_one_upstream_connection() {
    let (upstream, gw) = setup("").await;
    for _ in 0..10 {
        assert_eq!(status_call(&gw).await.status, StatusCode::OK);
    }
    assert_eq!(upstream.count(), 10);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn streams_a_large_upstream_body_intact_and_then_reuses_its_connection() {
    let (upstream, gw) = setup("").await;
    let payload: Vec<u8> = (0..=250u8).cycle().take(1 << 20).collect();
    upstream.push(Reply::Respond {
        status: 200,
        headers: vec![("content-type", "application/octet-stream".into())],
        body: payload.clone().into(),
    });
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("content-length"), "1048576");
    assert!(res.body == payload, "the body changed on the way");
    assert_eq!(status_call(&gw).await.json()["ok"], true);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn streams_a_chunked_upstream_body_as_it_arrives() {
    use http_body_util::BodyExt;
    let gate = Arc::new(Notify::new());
    let opened = gate.clone();
    let upstream = RawUpstream::start(move |_, mut conn| {
        let gate = opened.clone();
        async move {
            conn.request().await;
            conn.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
                  5;ext=1\r\nfirst\r\n",
            )
            .await;
            gate.notified().await;
            conn.write(b"6\r\n-last-\r\n0\r\nx-trailer: t\r\n\r\n")
                .await;
            conn.serve().await;
        }
    })
    .await;
    let gw = single_attempt_gateway(&upstream.url()).await;
    let stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let (mut client, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let req = http::Request::post("/api/v2/status")
        .header("host", "gateway")
        .header("authorization", "Bearer team-token")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    let res = client.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/plain");
    let mut body = res.into_body();
    // The first chunk reaches the client while the upstream still holds back the rest.
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");
    gate.notify_one();
    assert_eq!(body.collect().await.unwrap().to_bytes(), "-last-");
    // The body ended cleanly: its connection carries the next request.
    assert_eq!(status_call(&gw).await.body, "ok");
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn passes_a_close_delimited_body_through_intact() {
    let payload: bytes::Bytes = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let sent = payload.clone();
    let upstream = RawUpstream::start(move |index, mut conn| {
        let payload = sent.clone();
        async move {
            if index > 0 {
                return conn.serve().await;
            }
            conn.request().await;
            conn.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\nconnection: close\r\n\r\n")
                .await;
            conn.write(&payload).await;
            // Dropped: the end of the connection is the end of the body.
        }
    })
    .await;
    let gw = single_attempt_gateway(&upstream.url()).await;
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("content-type"), "application/octet-stream");
    assert!(res.body == payload, "the body changed on the way");
    assert_eq!(status_call(&gw).await.body, "ok");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn replaces_a_keep_alive_connection_the_upstream_closed_while_idle() {
    let upstream = RawUpstream::start(|index, mut conn| async move {
        if index > 0 {
            return conn.serve().await;
        }
        conn.request().await;
        conn.ok("first").await;
        // Dropped: the upstream closes the connection once it is idle.
    })
    .await;
    let gw = single_attempt_gateway(&upstream.url()).await;
    assert_eq!(status_call(&gw).await.body, "first");
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "ok");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn resends_on_a_new_connection_when_a_reused_one_closes_unanswered() {
    let upstream = RawUpstream::start(|index, mut conn| async move {
        if index > 0 {
            return conn.serve().await;
        }
        conn.request().await;
        conn.ok("first").await;
        // The second request arrives as the upstream gives up on the connection: unanswered.
        conn.request().await;
    })
    .await;
    let gw = single_attempt_gateway(&upstream.url()).await;
    assert_eq!(status_call(&gw).await.body, "first");
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "ok");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn never_resends_once_part_of_an_answer_arrived() {
    let upstream = RawUpstream::start(|index, mut conn| async move {
        if index > 0 {
            return conn.serve().await;
        }
        conn.request().await;
        conn.ok("first").await;
        conn.request().await;
        conn.write(b"HTTP/1.1 200 OK\r\ncontent-le").await;
    })
    .await;
    let gw = single_attempt_gateway(&upstream.url()).await;
    assert_eq!(status_call(&gw).await.body, "first");
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.header("x-gateway-error"), "upstream_protocol");
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn skips_interim_answers_and_refuses_malformed_ones() {
    let upstream = RawUpstream::start(|_, mut conn| async move {
        conn.request().await;
        conn.write(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
              HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-final: yes\r\n\r\nok",
        )
        .await;
        conn.request().await;
        conn.write(b"HTTP/1.1 2xx Fine\r\n\r\n").await;
    })
    .await;
    let gw = single_attempt_gateway(&upstream.url()).await;
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-final"), "yes");
    assert!(res.headers.get("link").is_none());
    assert_eq!(res.body, "ok");
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.header("x-gateway-error"), "upstream_protocol");
}

#[tokio::test]
async fn speaks_tls_with_sni_and_only_http_1_1_offered() {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::Mutex;

    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let cert_file = fixtures.join("localhost.pem");
    let certs = CertificateDer::pem_file_iter(&cert_file)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixtures.join("localhost.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // (SNI, ALPN, host header) of each request.
    let seen = Arc::new(Mutex::new(Vec::<(String, String, String)>::new()));
    let record = seen.clone();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Ok(stream) = acceptor.accept(tcp).await else {
                continue;
            };
            let (_, session) = stream.get_ref();
            let sni = session.server_name().unwrap_or_default().to_owned();
            let alpn = String::from_utf8_lossy(session.alpn_protocol().unwrap_or_default());
            let alpn = alpn.into_owned();
            let record = record.clone();
            let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                let host = req.headers()["host"].to_str().unwrap().to_owned();
                record
                    .lock()
                    .unwrap()
                    .push((sni.clone(), alpn.clone(), host));
                let body = http_body_util::Full::new(bytes::Bytes::from_static(b"over tls"));
                async move { Ok::<_, std::convert::Infallible>(http::Response::new(body)) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
            );
        }
    });

    let url = format!("https://localhost:{port}");
    let text = config_text(&url, ACCOUNT_AND_TEAM).replace(
        "deadline = \"5s\"\n",
        &format!("deadline = \"5s\"\nca_file = \"{}\"\n", cert_file.display()),
    );
    let gw = TestGateway::start(&text).await;
    for _ in 0..3 {
        let res = status_call(&gw).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.body, "over tls");
    }
    let host = format!("localhost:{port}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![("localhost".into(), "http/1.1".into(), host); 3]);
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Without the extra CA the certificate is not trusted: no connection.
    let untrusted = single_attempt_gateway(&url).await;
    let res = status_call(&untrusted).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.header("x-gateway-error"), "upstream_connect");
}
