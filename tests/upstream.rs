//! The upstream client end to end: keep-alive, streamed bodies, TLS, and upstreams that
//! misbehave, seen through a real gateway on loopback.

mod support;

use std::sync::Arc;

use http::{Method, StatusCode};
use support::gateway::{
    config_text, send, with_mock_upstream, TestGateway, ACCOUNT_AND_TEAM, BEARER,
};
use support::raw::RawUpstream;
use support::upstream::{MockUpstream, Reply};
use tokio::sync::Notify;

async fn setup(extra: &str) -> (MockUpstream, TestGateway) {
    with_mock_upstream(extra).await
}

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

/// A chunked body over 64 KiB: the first 64 KiB are read ahead, then the rest streams.
const LARGE_CHUNK: usize = 70_000;

#[tokio::test]
async fn streams_a_large_chunked_upstream_body_as_it_arrives() {
    use http_body_util::BodyExt;
    let gate = Arc::new(Notify::new());
    let opened = gate.clone();
    let upstream = RawUpstream::start(move |_, mut conn| {
        let gate = opened.clone();
        async move {
            conn.request().await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
                 {LARGE_CHUNK:x};ext=1\r\n"
            );
            let first = [head.as_bytes(), &[b'f'; LARGE_CHUNK], b"\r\n"].concat();
            conn.write(&first).await;
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
    let mut first = Vec::new();
    while first.len() < LARGE_CHUNK {
        let frame = body.frame().await.unwrap().unwrap();
        first.extend_from_slice(&frame.into_data().unwrap());
    }
    assert!(
        first == [b'f'; LARGE_CHUNK],
        "the first chunk changed on the way"
    );
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

/// The first call is answered `first` on connection 0, which then fails; the second call must
/// still be answered (`ok`), on a second connection.
async fn second_answer_comes_on_a_new_connection(upstream: &RawUpstream) {
    let gw = single_attempt_gateway(&upstream.url()).await;
    assert_eq!(status_call(&gw).await.body, "first");
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "ok");
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
    second_answer_comes_on_a_new_connection(&upstream).await;
}

/// An idempotent request (a `PUT` here) may go again on a new connection when a reused one
/// closes unanswered; a `POST` may not (`tests/upstream_desync.rs`).
#[tokio::test]
async fn resends_a_large_put_whole_when_a_reused_connection_closes_unanswered() {
    let upstream = RawUpstream::start(|index, mut conn| async move {
        while let Some((_, body)) = conn.request_with_body().await {
            if index == 0 && body.len() > 1000 {
                // The large request arrives as the upstream gives up: unanswered.
                return;
            }
            // Echoed, so that the test sees what arrived.
            conn.ok_bytes(&body).await;
        }
    })
    .await;
    let url = upstream.url();
    let gw = single_attempt_gateway(&url).await;
    assert_eq!(status_call(&gw).await.body, "{}");
    let large = format!(r#"{{"scanRef":"{}"}}"#, "x".repeat(40 * 1024));
    let res = send(
        Method::PUT,
        &gw.url("/api/v2/status"),
        &[BEARER],
        large.clone(),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert!(res.body == large.as_bytes(), "the body changed on the way");
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

/// An upstream that reads each request, writes `answer` and then neither finishes nor closes.
async fn stalling_upstream(answer: impl Into<bytes::Bytes>) -> RawUpstream {
    let answer = answer.into();
    RawUpstream::start(move |_, mut conn| {
        let answer = answer.clone();
        async move {
            conn.request().await;
            conn.write(&answer).await;
            std::future::pending::<()>().await;
        }
    })
    .await
}

/// Sends a status call with `headers`, failing (rather than hanging) if no answer comes in 10 s.
async fn bounded_status_call(gw: &TestGateway, headers: &[(&str, &str)]) -> support::http::Answer {
    let url = gw.url("/api/v2/status");
    let call = send(Method::POST, &url, headers, "{}");
    tokio::time::timeout(std::time::Duration::from_secs(10), call)
        .await
        .expect("the gateway answered")
}

#[tokio::test]
async fn the_request_deadline_cuts_a_hanging_attempt_with_504_deadline() {
    let upstream = stalling_upstream(bytes::Bytes::new()).await;
    // The usual retry loop (several attempts), attempt timeout 2 s, the deadline 300 ms.
    let gw = TestGateway::start(&config_text(&upstream.url(), ACCOUNT_AND_TEAM)).await;
    let res = bounded_status_call(&gw, &[BEARER, ("x-gateway-timeout", "300ms")]).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.header("x-gateway-error"), "deadline");
    assert_eq!(res.header("x-gateway-attempts"), "1");
    assert_eq!(upstream.connections(), 1, "a deadline cut is not retried");
}

#[tokio::test]
async fn the_attempt_timeout_cuts_first_when_it_comes_before_the_deadline() {
    let upstream = stalling_upstream(bytes::Bytes::new()).await;
    let gw = single_attempt_gateway(&upstream.url()).await;
    let res = bounded_status_call(&gw, &[BEARER, ("x-gateway-timeout", "4s")]).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.header("x-gateway-error"), "upstream_timeout");
}

/// The retry loop and the account limit read 400 bodies up to `MAX_INSPECT_BODY` with no timer
/// of their own: the upstream client must read such a body whole within the attempt's bound.
#[tokio::test]
async fn a_small_body_that_stalls_ends_at_the_deadline() {
    use idenfy_gateway::retry::inspect::MAX_INSPECT_BODY;
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
         content-length: {MAX_INSPECT_BODY}\r\n\r\n{{\"identifier\":"
    );
    let upstream = stalling_upstream(head).await;
    let gw = TestGateway::start(&config_text(&upstream.url(), ACCOUNT_AND_TEAM)).await;
    let res = bounded_status_call(&gw, &[BEARER, ("x-gateway-timeout", "300ms")]).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.header("x-gateway-error"), "deadline");
}
