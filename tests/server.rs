//! The proxy listener's own HTTP/1.1 loop, byte for byte over raw sockets: pipelining,
//! keep-alive and `connection: close`, heads and bodies in pieces, the cases handed to hyper,
//! refusals, framing, and shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::gateway::{with_mock_upstream, with_mock_upstream_listen, TestGateway};
use support::upstream::{MockUpstream, Reply};
use support::wire::{connect, request, Raw, Reader};
use tokio::io::AsyncWriteExt;

fn json(body: &str) -> Reply {
    Reply::json(200, body)
}

#[tokio::test]
async fn answers_pipelined_requests_in_order_with_a_date_and_their_length() {
    let (upstream, gw) = with_mock_upstream("").await;
    for body in [r#"{"n":1}"#, r#"{"n":22}"#, r#"{"n":333}"#] {
        upstream.push(json(body));
    }
    let mut conn = connect(&gw).await;
    let three = [
        request("POST", "/api/v2/status?n=1", "", "{}"),
        request("GET", "/api/v2/status?n=2", "", ""),
        request("POST", "/api/v2/status?n=3", "", r#"{"a":1}"#),
    ]
    .concat();
    conn.stream.write_all(three.as_bytes()).await.unwrap();
    for body in [r#"{"n":1}"#, r#"{"n":22}"#, r#"{"n":333}"#] {
        let res = conn.response(false).await;
        assert_eq!(res.status, 200);
        assert_eq!(res.body, body.as_bytes());
        assert_eq!(res.header("content-length"), Some(&*body.len().to_string()));
        let date = res.header("date").expect("a date");
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
        assert_eq!(res.header("connection"), None);
        assert_eq!(res.header("x-request-id").map(str::len), Some(32));
    }
    let seen: Vec<_> = upstream.received().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        seen,
        [
            "/api/v2/status?n=1",
            "/api/v2/status?n=2",
            "/api/v2/status?n=3"
        ]
    );
    assert_eq!(upstream.received()[2].body.as_ref(), br#"{"a":1}"#);
}

/// More pipelined requests in one write than the loop reads at once: reads that fill the buffer
/// to the brim, then a short one that leaves the socket drained, then the wait for the next edge.
/// Every request is answered, in order, on the one connection.
#[tokio::test]
async fn answers_a_pipelined_burst_larger_than_a_read_in_order() {
    let (upstream, gw) = with_mock_upstream("").await;
    const BURST: usize = 120;
    for n in 0..BURST {
        upstream.push(json(&format!(r#"{{"n":{n}}}"#)));
    }
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(80));
    let burst: String = (0..BURST)
        .map(|n| request("POST", &format!("/api/v2/status?n={n}"), "", &body))
        .collect();
    assert!(burst.len() > 2 * 8 * 1024, "{} bytes", burst.len());
    let mut conn = connect(&gw).await;
    conn.stream.write_all(burst.as_bytes()).await.unwrap();
    for n in 0..BURST {
        let res = conn.response(false).await;
        assert_eq!(res.status, 200, "answer {n}");
        assert_eq!(res.body, format!(r#"{{"n":{n}}}"#).as_bytes());
    }
    // The next request, sent once the burst is answered, arrives on a drained socket.
    upstream.push(json("last"));
    let last = request("POST", "/api/v2/status?n=last", "", "{}");
    conn.stream.write_all(last.as_bytes()).await.unwrap();
    assert_eq!(conn.response(false).await.body, b"last");
    let seen: Vec<_> = upstream.received().iter().map(|r| r.uri.clone()).collect();
    let mut want: Vec<_> = (0..BURST)
        .map(|n| format!("/api/v2/status?n={n}"))
        .collect();
    want.push("/api/v2/status?n=last".into());
    assert_eq!(seen, want);
}

#[tokio::test]
async fn closes_the_connection_after_answering_connection_close() {
    let (upstream, gw) = with_mock_upstream("").await;
    let mut conn = connect(&gw).await;
    let req = request("POST", "/api/v2/status", "connection: close\r\n", "{}");
    conn.stream.write_all(req.as_bytes()).await.unwrap();
    let res = conn.response(false).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("connection"), Some("close"));
    assert!(conn.closed().await);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn serves_a_request_split_across_many_small_writes() {
    let (upstream, gw) = with_mock_upstream("").await;
    let mut conn = connect(&gw).await;
    let body = r#"{"scanRef":"0123456789abcdef0123456789"}"#;
    let req = request("POST", "/api/v2/status", "x-kept: yes\r\n", body);
    for piece in req.as_bytes().chunks(3) {
        conn.stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let res = conn.response(false).await;
    assert_eq!(res.status, 200);
    let seen = &upstream.received()[0];
    assert_eq!(seen.body.as_ref(), body.as_bytes());
    assert_eq!(seen.headers["x-kept"], "yes");
}

#[tokio::test]
async fn hands_http_1_0_and_chunked_requests_to_hyper() {
    let (upstream, gw) = with_mock_upstream("").await;
    let mut conn = connect(&gw).await;
    let req = "POST /api/v2/status HTTP/1.0\r\nauthorization: Bearer team-token\r\n\
               content-length: 2\r\n\r\n{}";
    conn.stream.write_all(req.as_bytes()).await.unwrap();
    let res = conn.response(false).await;
    assert_eq!(
        res.status,
        200,
        "{res:?} {}",
        String::from_utf8_lossy(&res.body)
    );
    assert_eq!(res.body, br#"{"ok":true}"#);

    let mut conn = connect(&gw).await;
    let req = "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer team-token\r\n\
               transfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
    conn.stream.write_all(req.as_bytes()).await.unwrap();
    let res = conn.response(false).await;
    assert_eq!(res.status, 200);
    assert_eq!(upstream.received()[1].body.as_ref(), br#"{"a":1}"#);
}

#[tokio::test]
async fn serves_plain_requests_then_hands_the_connection_over_at_a_request_boundary() {
    let (upstream, gw) = with_mock_upstream("").await;
    let mut conn = connect(&gw).await;
    for n in 1..=2 {
        let req = request("POST", &format!("/api/v2/status?n={n}"), "", "{}");
        conn.stream.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(conn.response(false).await.status, 200);
    }
    // A chunked request, and a plain one pipelined behind it: hyper serves the chunked one
    // and closes, the plain one is read by no one. Its client sends it again on a new
    // connection, served by the loop.
    let chunked = "POST /api/v2/status?n=3 HTTP/1.1\r\nhost: gw\r\n\
                   authorization: Bearer team-token\r\ntransfer-encoding: chunked\r\n\r\n\
                   2\r\n{}\r\n0\r\n\r\n";
    let plain = request("POST", "/api/v2/status?n=4", "", "{}");
    conn.stream
        .write_all(format!("{chunked}{plain}").as_bytes())
        .await
        .unwrap();
    let handed = conn.response(false).await;
    assert_eq!(handed.status, 200);
    assert_eq!(handed.header("connection"), Some("close"));
    assert!(conn.closed().await, "hyper closes after the one request");
    assert_eq!(
        upstream.received().len(),
        3,
        "the pipelined request is not read"
    );
    let mut again = connect(&gw).await;
    again.stream.write_all(plain.as_bytes()).await.unwrap();
    assert_eq!(again.response(false).await.status, 200);
    let seen: Vec<_> = upstream.received().iter().map(|r| r.uri.clone()).collect();
    let expected: Vec<_> = (1..=4).map(|n| format!("/api/v2/status?n={n}")).collect();
    assert_eq!(seen, expected);
    assert!(upstream.received().iter().all(|r| r.body.as_ref() == b"{}"));
}

/// Sends a request line with two spaces after the method (refused by the parser) and reads the
/// answer.
async fn send_malformed_request_line(gw: &TestGateway) -> (Reader, Raw) {
    let mut conn = connect(gw).await;
    conn.stream
        .write_all(b"POST  /api/v2/status HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    let res = conn.response(false).await;
    (conn, res)
}

#[tokio::test]
async fn refuses_a_malformed_request_line_with_400_and_closes() {
    let (upstream, gw) = with_mock_upstream("").await;
    let (mut conn, res) = send_malformed_request_line(&gw).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(res.header("x-gateway-error"), Some("malformed_request"));
    let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(body["identifier"], "BAD_REQUEST");
    assert!(body["message"].is_string());
    assert!(conn.closed().await);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn refuses_an_oversized_head_with_431_in_idenfys_shape() {
    let (upstream, gw) = with_mock_upstream_listen("max_header_bytes = \"8KiB\"\n").await;
    let mut conn = connect(&gw).await;
    // Over the limit, and more than the gateway reads before it refuses: the rest is still
    // arriving when it answers (it reads and drops it, so that no reset races the answer).
    let big = "a".repeat(20_000);
    let req = format!("GET /api/v2/status HTTP/1.1\r\nhost: gw\r\nx-big: {big}\r\n\r\n");
    conn.stream.write_all(req.as_bytes()).await.unwrap();
    let res = conn.response(false).await;
    assert_eq!(res.status, 431);
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(res.header("x-gateway-error"), Some("headers_too_large"));
    let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(body["identifier"], "HEADERS_TOO_LARGE");
    assert!(conn.closed().await);
    assert_eq!(upstream.count(), 0);
}

/// A head the parser takes whole but that makes no request (a target longer than a URI may be,
/// under a head limit that lets it through) is refused where the request is built, when the
/// loop serves it: 400 in iDenfy's shape, after the answer to the request before it on the
/// connection, which then closes; nothing of it goes upstream.
#[tokio::test]
async fn refuses_a_head_that_makes_no_request_after_the_answers_before_it() {
    let (upstream, gw) = with_mock_upstream_listen("max_header_bytes = \"128KiB\"\n").await;
    upstream.set_default(Reply::json(200, "{}"));
    let mut conn = connect(&gw).await;
    let long = format!("/api/v2/status?q={}", "a".repeat(70_000));
    let pipeline = [
        request("GET", "/api/v2/status?n=1", "", ""),
        request("GET", &long, "", ""),
        request("GET", "/api/v2/status?n=3", "", ""),
    ]
    .concat();
    conn.stream.write_all(pipeline.as_bytes()).await.unwrap();
    assert_eq!(conn.response(false).await.status, 200);
    let res = conn.response(false).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.header("connection"), Some("close"));
    assert_eq!(res.header("x-gateway-error"), Some("malformed_request"));
    let body: serde_json::Value = serde_json::from_slice(&res.body).unwrap();
    assert_eq!(body["identifier"], "BAD_REQUEST");
    assert!(conn.closed().await);
    let seen: Vec<_> = upstream.received().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(seen, ["/api/v2/status?n=1"]);
}

#[tokio::test]
async fn keeps_reading_what_a_refused_client_still_sends_after_the_answer() {
    let (upstream, gw) = with_mock_upstream("").await;
    let (mut conn, res) = send_malformed_request_line(&gw).await;
    assert_eq!(res.status, 400);
    // The answer is out and the gateway's side is shut, but it still reads and drops what
    // comes (a lingering close): a socket closed with unread bytes would answer these writes
    // with a reset, and the client's next write or read would fail.
    let more = vec![b'x'; 16 * 1024];
    for _ in 0..8 {
        conn.stream.write_all(&more).await.unwrap();
        conn.stream.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    conn.stream.shutdown().await.unwrap();
    assert!(conn.closed().await);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn answers_head_with_the_length_and_204_without_one_and_no_body() {
    let (upstream, gw) = with_mock_upstream("").await;
    upstream.push(json(r#"{"ok":true}"#));
    upstream.push(Reply::Respond {
        status: 204,
        headers: vec![],
        body: bytes::Bytes::new(),
    });
    upstream.push(json(r#"{"after":1}"#));
    let mut conn = connect(&gw).await;
    let three = [
        request("HEAD", "/api/v2/status", "", ""),
        request("DELETE", "/api/v2/status", "", ""),
        request("GET", "/api/v2/status", "", ""),
    ]
    .concat();
    conn.stream.write_all(three.as_bytes()).await.unwrap();
    let head = conn.response(true).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("11"));
    let empty = conn.response(false).await;
    assert_eq!(empty.status, 204);
    assert_eq!(empty.header("content-length"), None);
    assert_eq!(empty.header("transfer-encoding"), None);
    // Had either carried a body, this answer would not parse.
    let after = conn.response(false).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body, br#"{"after":1}"#);
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_answers_the_request_in_flight_with_close() {
    let upstream = MockUpstream::start().await;
    let gate = Arc::new(tokio::sync::Notify::new());
    upstream.push(Reply::Gated(gate.clone(), Box::new(json(r#"{"late":1}"#))));
    let text = support::gateway::config_text(&upstream.url(), support::gateway::ACCOUNT_AND_TEAM);
    let gw = TestGateway::start(&text).await;
    let mut busy = connect(&gw).await;
    let req = request("POST", "/api/v2/status", "", "{}");
    busy.stream.write_all(req.as_bytes()).await.unwrap();
    upstream.wait_for(1).await;
    let mut idle = connect(&gw).await;
    // The idle connection was accepted (and got its answer) before shutdown begins.
    idle.stream.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(idle.response(false).await.status, 200);

    let shutdown = tokio::spawn(gw.running.shutdown());
    assert!(idle.closed().await, "an idle connection stayed open");
    gate.notify_one();
    let res = busy.response(false).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, br#"{"late":1}"#);
    assert_eq!(res.header("connection"), Some("close"));
    assert!(busy.closed().await);
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown ends once the connections are done")
        .unwrap();
}

#[tokio::test]
async fn answers_408_to_a_body_that_does_not_arrive_in_time_on_either_path() {
    let (upstream, gw) = with_mock_upstream_listen("body_read_timeout = \"300ms\"\n").await;
    let head = "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer team-token\r\n";
    // The gateway's own loop: a `content-length` body cut short. hyper's: a chunked body whose
    // last chunk never comes.
    let plain = format!("{head}content-length: 20\r\n\r\n{{\"scan");
    let chunked = format!("{head}transfer-encoding: chunked\r\n\r\n3\r\n{{\"a\r\n");
    for req in [plain, chunked] {
        let mut conn = connect(&gw).await;
        conn.stream.write_all(req.as_bytes()).await.unwrap();
        let res = conn.response(false).await;
        assert_eq!(res.status, 408, "{res:?}");
        assert_eq!(res.header("x-gateway-error"), Some("body_timeout"));
        let body = String::from_utf8_lossy(&res.body);
        assert!(body.contains(r#""identifier":"REQUEST_TIMEOUT""#), "{body}");
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn cuts_off_a_keep_alive_client_that_sends_its_next_head_too_slowly() {
    let (upstream, gw) = with_mock_upstream_listen("header_read_timeout = \"300ms\"\n").await;
    let mut conn = connect(&gw).await;
    let req = request("POST", "/api/v2/status", "", "{}");
    conn.stream.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(conn.response(false).await.status, 200);
    // Half of the next head, and never the rest.
    conn.stream.write_all(&req.as_bytes()[..20]).await.unwrap();
    assert!(conn.closed().await, "a slow second head was not cut off");
    assert_eq!(upstream.count(), 1);
}
