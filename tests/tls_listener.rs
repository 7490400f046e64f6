//! The proxy listener's own HTTP/1.1 loop behind TLS, over real sockets: a TLS connection whose
//! client chose `http/1.1` (or no ALPN) is served by the loop, with everything the loop gives
//! plain connections (iDenfy-shaped refusals from the head, the header timeout, eviction of the
//! longest-idle connection); and callers that misbehave on purpose get no further than over
//! plain TCP. hyper's own answer to a malformed head is a bare 400 without a body: the
//! iDenfy-shaped one shows which path served the connection.

mod support;

use std::time::Duration;

use support::gateway::{start_with, TestGateway};
use support::tls::{client_config, connect, listen_lines};
use support::upstream::{MockUpstream, Reply};
use support::wire::{request, Raw, Reader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

type TlsReader = Reader<TlsStream<TcpStream>>;

/// A mock upstream answering 200, and a gateway in front of it with TLS and `lines` in
/// `[listen]`.
async fn tls_gateway(lines: &str) -> (MockUpstream, TestGateway) {
    let upstream = MockUpstream::start().await;
    upstream.set_default(Reply::json(200, r#"{"status":"APPROVED"}"#));
    let lines = format!("{}{lines}", listen_lines(false));
    let gw = start_with(&upstream.url(), &lines, "").await;
    (upstream, gw)
}

/// A TLS connection offering `http/1.1` (agreed), or no ALPN at all when `alpn` is false.
async fn tls_conn(gw: &TestGateway, alpn: bool) -> TlsReader {
    let stream = match alpn {
        true => {
            connect(
                gw.addr(),
                client_config(&[b"http/1.1"], false),
                Some(b"http/1.1"),
            )
            .await
        }
        false => connect(gw.addr(), client_config(&[], false), None).await,
    };
    Reader::new(stream)
}

/// Writes `bytes` on `conn` and reads the answer.
async fn exchange(conn: &mut TlsReader, bytes: &[u8]) -> Raw {
    conn.stream.write_all(bytes).await.unwrap();
    conn.stream.flush().await.unwrap();
    conn.response(false).await
}

/// A new TLS connection on which one `GET /api/v2/status` was answered 200, then left idle.
async fn served_once(gw: &TestGateway) -> TlsReader {
    let mut conn = tls_conn(gw, true).await;
    let req = request("GET", "/api/v2/status", "", "");
    assert_eq!(exchange(&mut conn, req.as_bytes()).await.status, 200);
    conn
}

#[tokio::test]
async fn answers_a_malformed_head_over_tls_in_idenfys_shape_with_or_without_alpn() {
    let (upstream, gw) = tls_gateway("").await;
    for alpn in [true, false] {
        let mut conn = tls_conn(&gw, alpn).await;
        // Two spaces after the method: refused by the loop's parser.
        let res = exchange(
            &mut conn,
            b"POST  /api/v2/status HTTP/1.1\r\nhost: gw\r\n\r\n",
        )
        .await;
        assert_eq!(res.status, 400, "alpn {alpn}");
        assert_eq!(res.header("connection"), Some("close"));
        assert_eq!(res.header("x-gateway-error"), Some("malformed_request"));
        let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
        assert_eq!(body["identifier"], "BAD_REQUEST");
        assert!(body["message"].is_string());
        assert!(conn.closed().await);
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn serves_keep_alive_requests_over_tls_on_the_loop_and_reaches_the_upstream() {
    let (upstream, gw) = tls_gateway("").await;
    let mut conn = tls_conn(&gw, true).await;
    for n in 1..=3 {
        let req = request("POST", &format!("/api/v2/status?n={n}"), "", "{}");
        let res = exchange(&mut conn, req.as_bytes()).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body, br#"{"status":"APPROVED"}"#);
    }
    // Then a malformed head on the same connection: the loop's answer, so the loop served all.
    let res = exchange(&mut conn, b"GET /\x01 HTTP/1.1\r\n\r\n").await;
    assert_eq!(res.header("x-gateway-error"), Some("malformed_request"));
    let seen: Vec<_> = upstream.received().iter().map(|r| r.uri.clone()).collect();
    let expected: Vec<_> = (1..=3).map(|n| format!("/api/v2/status?n={n}")).collect();
    assert_eq!(seen, expected);
    for r in upstream.received() {
        assert_eq!(r.headers["authorization"], support::gateway::UPSTREAM_AUTH);
        assert_eq!(r.body.as_ref(), b"{}");
    }
}

#[tokio::test]
async fn refuses_an_oversized_head_over_tls_with_431_in_idenfys_shape() {
    let (upstream, gw) = tls_gateway("max_header_bytes = \"8KiB\"\n").await;
    let mut conn = tls_conn(&gw, true).await;
    let big = "a".repeat(20_000);
    let req = format!("GET /api/v2/status HTTP/1.1\r\nhost: gw\r\nx-big: {big}\r\n\r\n");
    let res = exchange(&mut conn, req.as_bytes()).await;
    assert_eq!(res.status, 431);
    assert_eq!(res.header("x-gateway-error"), Some("headers_too_large"));
    let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(body["identifier"], "HEADERS_TOO_LARGE");
    assert!(conn.closed().await);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn refuses_an_upload_over_tls_from_its_head_before_any_of_its_body() {
    let (upstream, gw) = tls_gateway("").await;
    let mut conn = tls_conn(&gw, true).await;
    // No token, a mebibyte announced, none of it sent: the answer comes from the head alone.
    let head = "POST /api/v2/status HTTP/1.1\r\nhost: x\r\ncontent-length: 1048576\r\n\r\n";
    let res = exchange(&mut conn, head.as_bytes()).await;
    assert_eq!(res.status, 401);
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(res.header("x-gateway-error"), Some("unauthorized"));
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn cuts_off_a_head_sent_over_tls_a_byte_at_a_time() {
    let (upstream, gw) = tls_gateway("header_read_timeout = \"300ms\"\n").await;
    let conn = tls_conn(&gw, true).await;
    let (mut reader, mut writer) = tokio::io::split(conn.stream);
    let head = request("GET", "/api/v2/status", &"x-pad: aaaa\r\n".repeat(50), "");
    tokio::spawn(async move {
        for byte in head.into_bytes() {
            let sent = writer.write_all(&[byte]).await.and(writer.flush().await);
            if sent.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "a slow head was not cut off");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn closes_a_connection_that_never_finishes_its_handshake() {
    let (_upstream, gw) = tls_gateway("header_read_timeout = \"200ms\"\n").await;
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    // Half a ClientHello record header, then nothing.
    tcp.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "a stalled handshake kept its connection");
}

#[tokio::test]
async fn evicts_the_longest_idle_tls_connection_to_admit_a_new_one() {
    let (upstream, gw) = tls_gateway("max_connections = 2\n").await;
    let mut idle = [served_once(&gw).await, served_once(&gw).await];
    let mut newcomer = served_once(&gw).await;
    assert!(
        idle[0].closed().await,
        "the longest-idle connection stayed open"
    );
    let req = request("GET", "/api/v2/status", "", "");
    assert_eq!(exchange(&mut idle[1], req.as_bytes()).await.status, 200);
    assert_eq!(exchange(&mut newcomer, req.as_bytes()).await.status, 200);
    assert_eq!(upstream.count(), 5);
}

#[tokio::test]
async fn hands_a_chunked_upload_over_tls_to_hyper_with_the_bytes_already_read() {
    let (upstream, gw) = tls_gateway("").await;
    let mut conn = tls_conn(&gw, true).await;
    let head = request(
        "POST",
        "/api/v2/status",
        "transfer-encoding: chunked\r\n",
        "",
    );
    let req = format!("{head}2\r\n{{}}\r\n0\r\n\r\n");
    let res = exchange(&mut conn, req.as_bytes()).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, br#"{"status":"APPROVED"}"#);
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].body.as_ref(), b"{}");
    // hyper serves that one request and closes: the next one comes on a new connection.
    assert_eq!(res.header("connection"), Some("close"));
    assert!(conn.closed().await, "hyper closes after the one request");
    let mut again = tls_conn(&gw, true).await;
    let next = request("POST", "/api/v2/status", "", "{}");
    assert_eq!(exchange(&mut again, next.as_bytes()).await.status, 200);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn closes_a_tls_keep_alive_connection_idle_past_the_idle_timeout() {
    let (upstream, gw) =
        tls_gateway("idle_timeout = \"200ms\"\nheader_read_timeout = \"30s\"\n").await;
    let mut conn = served_once(&gw).await;
    assert!(conn.closed().await, "an idle TLS connection stayed open");
    assert_eq!(upstream.count(), 1);
}
