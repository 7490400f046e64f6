//! An upstream that gets HTTP/1.1 wrong, or half right, must never make the gateway send a
//! request twice, take one answer for another, hang a caller, or hide an answer from the checks
//! that read it. Each test scripts a raw upstream over loopback and asserts both what the caller
//! got and what the upstream received.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, StatusCode};
use support::gateway::{config_text, send, TestGateway, ACCOUNT_AND_TEAM, BEARER};
use support::http::Answer;
use support::raw::{RawRequest, RawUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A retry loop of one attempt: what these tests see is the upstream client's own doing.
const ONE_ATTEMPT: &str = "[retry]\nmax_attempts = 1\n";

/// The usual account and team in front of `url`, plus `extra`.
async fn gateway(url: &str, extra: &str) -> TestGateway {
    TestGateway::start(&config_text(url, &format!("{ACCOUNT_AND_TEAM}{extra}"))).await
}

/// Every request the raw upstream read, with the index of the connection it came on.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(usize, RawRequest)>>>);

impl Log {
    fn push(&self, index: usize, req: &RawRequest) {
        self.0.lock().unwrap().push((index, req.clone()));
    }

    /// Request lines, with their connection, in order of arrival.
    fn lines(&self) -> Vec<(usize, String)> {
        let log = self.0.lock().unwrap();
        log.iter().map(|(i, r)| (*i, r.line.clone())).collect()
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|(_, l)| l == line).count()
    }

    fn last(&self) -> RawRequest {
        self.0.lock().unwrap().last().expect("a request").1.clone()
    }
}

/// What a logging upstream does with a request it read.
enum Reply {
    /// Answers `200 ok`, and reads the next.
    Ok,
    /// Writes these, each in a write of its own, and reads the next.
    Write(Vec<Vec<u8>>),
    /// Writes this, then closes the connection.
    WriteAndClose(Vec<u8>),
    /// Writes this, then neither sends more nor closes.
    WriteAndStall(Vec<u8>),
    /// Closes the connection without answering.
    Close,
}

/// An upstream that logs every request it reads and does with it what
/// `reply(connection index, request number on that connection from 0, request)` says.
async fn logging<F>(log: &Log, reply: F) -> RawUpstream
where
    F: Fn(usize, usize, &RawRequest) -> Reply + Send + Sync + 'static,
{
    let log = log.clone();
    let reply = Arc::new(reply);
    RawUpstream::start(move |index, mut conn| {
        let (log, reply) = (log.clone(), reply.clone());
        async move {
            let mut n = 0;
            while let Some(req) = conn.read_request().await {
                log.push(index, &req);
                match reply(index, n, &req) {
                    Reply::Ok => conn.ok("ok").await,
                    Reply::Write(writes) => {
                        for bytes in writes {
                            conn.write(&bytes).await;
                        }
                    }
                    Reply::WriteAndClose(bytes) => return conn.write(&bytes).await,
                    Reply::WriteAndStall(bytes) => {
                        conn.write(&bytes).await;
                        return std::future::pending().await;
                    }
                    Reply::Close => return,
                }
                n += 1;
            }
        }
    })
    .await
}

/// Connection 0 answers request number `n` (from 0) with the bytes `script(n)` gives, or
/// `200 ok` when it gives none; every later connection answers each request `200 ok`.
async fn scripted(log: &Log, script: fn(usize) -> Option<Vec<u8>>) -> RawUpstream {
    logging(log, move |index, n, _| {
        match script(n).filter(|_| index == 0) {
            Some(bytes) => Reply::Write(vec![bytes]),
            None => Reply::Ok,
        }
    })
    .await
}

async fn status_call(gw: &TestGateway) -> Answer {
    send(Method::POST, &gw.url("/api/v2/status"), &[BEARER], "{}").await
}

async fn token_call(gw: &TestGateway, client_id: &str) -> Answer {
    let body = format!(r#"{{"clientId":"{client_id}"}}"#);
    send(Method::POST, &gw.url("/api/v2/token"), &[BEARER], body).await
}

/// Writes `request` on a new connection to the gateway and reads until the gateway closes it,
/// failing if that takes more than `bound`: the bytes the caller got.
async fn raw_exchange(gw: &TestGateway, request: &str, bound: Duration) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = stream.read_to_end(&mut got);
    match tokio::time::timeout(bound, read).await {
        Ok(_) => got,
        Err(_) => panic!(
            "the gateway held the caller past {bound:?}, after {:?}",
            String::from_utf8_lossy(&got[..got.len().min(200)])
        ),
    }
}

/// A status call in raw bytes, after which the gateway closes the connection.
fn raw_status_call(extra_headers: &str) -> String {
    format!(
        "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer team-token\r\n\
         {extra_headers}content-length: 2\r\nconnection: close\r\n\r\n{{}}"
    )
}

const STATUS_LINE: &str = "POST /api/v2/status HTTP/1.1";
const TOKEN_LINE: &str = "POST /api/v2/token HTTP/1.1";

// --- A request on a reused connection that breaks after it was written ---

/// Connection 0 answers its first request, then reads the second in full and closes without
/// answering; later connections answer every request `200 ok`.
async fn closes_after_the_second_request(log: &Log) -> RawUpstream {
    logging(log, |index, n, _| match (index, n) {
        (0, 1) => Reply::Close,
        _ => Reply::Ok,
    })
    .await
}

#[tokio::test]
async fn a_token_post_written_on_a_reused_connection_reaches_idenfy_once() {
    // One attempt; and the default retry loop, which never retries a token request after send.
    for retry in [ONE_ATTEMPT, "[retry]\nretry_token_after_send = false\n"] {
        let log = Log::default();
        let upstream = closes_after_the_second_request(&log).await;
        let gw = gateway(&upstream.url(), retry).await;
        assert_eq!(status_call(&gw).await.body, "ok");
        let res = token_call(&gw, "victim-42").await;
        assert_eq!(res.status, StatusCode::BAD_GATEWAY, "{retry}");
        assert_eq!(res.header("x-gateway-error"), "upstream_protocol");
        assert_eq!(res.header("x-gateway-attempts"), "1");
        assert_eq!(log.count(TOKEN_LINE), 1, "{:?}", log.lines());
        assert_eq!(upstream.connections(), 1);
    }
}

#[tokio::test]
async fn a_status_post_that_broke_after_send_is_left_to_the_retry_loop() {
    let log = Log::default();
    let upstream = closes_after_the_second_request(&log).await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    assert_eq!(status_call(&gw).await.body, "ok");
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.header("x-gateway-error"), "upstream_protocol");
    assert_eq!(log.count(STATUS_LINE), 2);

    // The retry loop may retry it (it is not a token route), and counts the attempt it makes.
    let log = Log::default();
    let upstream = closes_after_the_second_request(&log).await;
    let gw = gateway(&upstream.url(), "[retry]\nbase = \"1ms\"\ncap = \"1ms\"\n").await;
    assert_eq!(status_call(&gw).await.body, "ok");
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("x-gateway-attempts"), "2");
    assert_eq!(
        log.lines().last().unwrap().0,
        1,
        "the retry went on a new connection"
    );
    assert_eq!(log.count(STATUS_LINE), 3);
}

#[tokio::test]
async fn an_idempotent_get_on_a_reused_connection_closed_unanswered_is_resent_at_once() {
    let log = Log::default();
    let upstream = closes_after_the_second_request(&log).await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    let url = gw.url("/kyc/identifications/?clientId=c-1");
    assert_eq!(send(Method::GET, &url, &[BEARER], "").await.body, "ok");
    let res = send(Method::GET, &url, &[BEARER], "").await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "ok");
    assert_eq!(res.header("x-gateway-attempts"), "1");
    let line = "GET /kyc/identifications/?clientId=c-1 HTTP/1.1".to_owned();
    assert_eq!(
        log.lines(),
        vec![(0, line.clone()), (0, line.clone()), (1, line)]
    );
}

// --- Framing the upstream gets wrong ---

#[tokio::test]
async fn bytes_after_a_complete_answer_are_never_taken_for_the_next_answer() {
    let log = Log::default();
    let upstream = scripted(&log, |n| {
        (n == 0).then(|| {
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst\
              HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nsmuggled"
                .to_vec()
        })
    })
    .await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    assert_eq!(status_call(&gw).await.body, "first");
    let res = status_call(&gw).await;
    assert_eq!(res.body, "ok");
    assert_eq!(
        log.lines(),
        vec![(0, STATUS_LINE.into()), (1, STATUS_LINE.into())],
        "the connection with stray bytes carried no other request"
    );
}

#[tokio::test]
async fn content_length_and_chunked_together_are_read_as_chunked_on_a_connection_not_reused() {
    let log = Log::default();
    let upstream = scripted(&log, |n| {
        (n == 0).then(|| {
            b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n\
              5\r\nhello\r\n0\r\n\r\n"
                .to_vec()
        })
    })
    .await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "hello");
    assert_ne!(res.header("content-length"), "100");
    assert_eq!(status_call(&gw).await.body, "ok");
    assert_eq!(
        log.lines(),
        vec![(0, STATUS_LINE.into()), (1, STATUS_LINE.into())]
    );
}

#[tokio::test]
async fn interim_answers_are_skipped_and_the_connection_stays_in_step() {
    let log = Log::default();
    let upstream =
        scripted(&log, |n| {
            (n == 0).then(|| {
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
              HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nfirst"
                .to_vec()
        })
        .or(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond".to_vec()))
        })
        .await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert!(res.headers.get("link").is_none());
    assert_eq!(res.body, "first");
    assert_eq!(status_call(&gw).await.body, "second");
    assert_eq!(
        log.lines(),
        vec![(0, STATUS_LINE.into()), (0, STATUS_LINE.into())]
    );
}

#[tokio::test]
async fn no_body_is_read_for_204_304_or_head_whatever_the_upstream_sends() {
    for (method, status) in [
        (Method::POST, StatusCode::NO_CONTENT),
        (Method::POST, StatusCode::NOT_MODIFIED),
        (Method::HEAD, StatusCode::OK),
    ] {
        let log = Log::default();
        let upstream = logging(&log, move |index, _, _| {
            if index > 0 {
                return Reply::Ok;
            }
            // A body the status (or the method) rules out, in a write of its own.
            let head = format!("HTTP/1.1 {status}\r\ncontent-length: 5\r\n\r\n");
            Reply::Write(vec![head.into_bytes(), b"hello".to_vec()])
        })
        .await;
        let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
        let res = send(method.clone(), &gw.url("/api/v2/status"), &[BEARER], "").await;
        assert_eq!(res.status, status);
        assert_eq!(res.body, "", "{method} {status}");
        if method == Method::HEAD {
            assert_eq!(res.header("content-length"), "5");
        }
        let next = status_call(&gw).await;
        assert_eq!(
            next.body, "ok",
            "{method} {status}: the body was taken as an answer"
        );
        let first = format!("{method} /api/v2/status HTTP/1.1");
        assert_eq!(log.lines(), vec![(0, first), (1, STATUS_LINE.into())]);
    }
}

#[tokio::test]
async fn a_head_answer_keeps_the_upstreams_length_or_has_none() {
    let log = Log::default();
    let upstream = scripted(&log, |n| {
        Some(match n {
            0 => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(),
            1 => b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        })
    })
    .await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    let head = "HEAD /api/v2/status HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer team-token\r\n\
                connection: close\r\n\r\n";
    let got = raw_exchange(&gw, head, Duration::from_secs(10)).await;
    let got = String::from_utf8(got).unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(!got.contains("content-length"), "{got}");
    assert!(!got.contains("transfer-encoding"), "{got}");
    assert!(got.ends_with("\r\n\r\n"), "no body: {got}");

    let got = raw_exchange(&gw, head, Duration::from_secs(10)).await;
    let got = String::from_utf8(got).unwrap();
    assert!(got.contains("\r\ncontent-length: 42\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\n"), "no body: {got}");
    assert_eq!(status_call(&gw).await.body, "ok");
    let head_line = "HEAD /api/v2/status HTTP/1.1".to_owned();
    assert_eq!(
        log.lines(),
        vec![
            (0, head_line.clone()),
            (0, head_line),
            (0, STATUS_LINE.into())
        ],
        "no body was read for either HEAD answer: the connection stayed in step"
    );
}

#[tokio::test]
async fn differing_content_lengths_are_refused_and_equal_ones_relayed_once() {
    let log = Log::default();
    let upstream = scripted(&log, |n| {
        Some(match n {
            0 => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nok".to_vec(),
        })
    })
    .await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.header("x-gateway-error"), "upstream_protocol");
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.body, "ok");
    assert_eq!(res.headers.get_all("content-length").iter().count(), 1);
    assert_eq!(
        log.lines(),
        vec![(0, STATUS_LINE.into()), (1, STATUS_LINE.into())]
    );
}

/// `http1::framing::body`'s first rule: a `content-length` that is not plain digits says the
/// answer's end cannot be trusted, even where a transfer coding or a bodiless status makes the
/// length moot.
#[tokio::test]
async fn a_malformed_content_length_is_refused_beside_chunked_and_on_a_204() {
    let log = Log::default();
    // Each refused answer ends its connection: connection 0 and 1 answer one each.
    let upstream = logging(&log, |index, _, _| match index {
        0 => Reply::Write(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2x\r\n\
              transfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
            .to_vec()]),
        1 => Reply::Write(vec![
            b"HTTP/1.1 204 No Content\r\ncontent-length: -1\r\n\r\n".to_vec(),
        ]),
        _ => Reply::Ok,
    })
    .await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    for _ in 0..2 {
        let res = status_call(&gw).await;
        assert_eq!(res.status, StatusCode::BAD_GATEWAY);
        assert_eq!(res.header("x-gateway-error"), "upstream_protocol");
    }
    assert_eq!(status_call(&gw).await.body, "ok");
    assert_eq!(
        log.lines().len(),
        3,
        "each answer on a connection of its own"
    );
}

#[tokio::test]
async fn a_status_code_outside_100_to_599_is_a_502() {
    let log = Log::default();
    let upstream = scripted(&log, |n| {
        (n == 0).then(|| b"HTTP/1.1 600 Beyond\r\ncontent-length: 2\r\n\r\n{}".to_vec())
    })
    .await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    let res = status_call(&gw).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.header("x-gateway-error"), "upstream_protocol");
    assert_eq!(res.json()["identifier"], "BAD_GATEWAY");
    assert_eq!(status_call(&gw).await.body, "ok");
    assert_eq!(
        log.lines(),
        vec![(0, STATUS_LINE.into()), (1, STATUS_LINE.into())]
    );
}

// --- Bodies that stop or break ---

/// An upstream that answers each request with `answer` and then neither sends more nor closes.
async fn stalls_after(log: &Log, answer: &'static [u8]) -> RawUpstream {
    logging(log, |_, _, _| Reply::WriteAndStall(answer.to_vec())).await
}

const STALLED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n0123456789";

/// The caller got the head and the ten bytes, and then the connection closed: the only honest
/// signal once a head with a length has gone out.
fn assert_cut_after_ten_bytes(got: &[u8]) {
    let got = String::from_utf8_lossy(got);
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("\r\ncontent-length: 100000\r\n"), "{got}");
    assert!(got.ends_with("\r\n\r\n0123456789"), "{got}");
}

#[tokio::test]
async fn a_streamed_body_that_stalls_is_cut_at_the_request_deadline() {
    let log = Log::default();
    let upstream = stalls_after(&log, STALLED).await;
    // Attempt timeout 2 s, deadline 5 s, shortened by the caller to 400 ms.
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    let call = raw_status_call("x-gateway-timeout: 400ms\r\n");
    let got = raw_exchange(&gw, &call, Duration::from_secs(10)).await;
    assert_cut_after_ten_bytes(&got);
    assert_eq!(log.lines(), vec![(0, STATUS_LINE.into())]);
}

#[tokio::test]
async fn a_streamed_body_that_stalls_is_cut_after_the_attempt_timeout_without_bytes() {
    let log = Log::default();
    let upstream = stalls_after(&log, STALLED).await;
    let text = config_text(&upstream.url(), &format!("{ACCOUNT_AND_TEAM}{ONE_ATTEMPT}"))
        .replace("attempt_timeout = \"2s\"", "attempt_timeout = \"300ms\"")
        .replace("deadline = \"5s\"", "deadline = \"60s\"");
    let gw = TestGateway::start(&text).await;
    // Well before the 60 s deadline: the idle bound cut it.
    let got = raw_exchange(&gw, &raw_status_call(""), Duration::from_secs(10)).await;
    assert_cut_after_ten_bytes(&got);
    assert_eq!(log.lines(), vec![(0, STATUS_LINE.into())]);
}

#[tokio::test]
async fn a_long_body_cut_short_still_gives_the_caller_its_status_and_head() {
    let log = Log::default();
    // Ten bytes of a hundred thousand, and the connection closes.
    let upstream = logging(&log, |_, _, _| Reply::WriteAndClose(STALLED.to_vec())).await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    let got = raw_exchange(&gw, &raw_status_call(""), Duration::from_secs(10)).await;
    assert_cut_after_ten_bytes(&got);
    assert_eq!(log.lines(), vec![(0, STATUS_LINE.into())]);
}

#[tokio::test]
async fn a_small_chunked_body_cut_mid_way_is_answered_502() {
    let log = Log::default();
    let upstream = logging(&log, |_, _, _| {
        Reply::WriteAndClose(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel".to_vec(),
        )
    })
    .await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    let got = raw_exchange(&gw, &raw_status_call(""), Duration::from_secs(10)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{got:?}");
    assert!(
        got.contains("\r\nx-gateway-error: upstream_protocol\r\n"),
        "{got}"
    );
    assert_eq!(log.lines(), vec![(0, STATUS_LINE.into())]);
}

#[tokio::test]
async fn a_large_chunked_body_cut_mid_way_still_gives_the_caller_its_status_and_head() {
    let log = Log::default();
    let upstream = logging(&log, |_, _, _| {
        let mut answer = b"HTTP/1.1 200 OK\r\nx-upstream: yes\r\n\
                           transfer-encoding: chunked\r\n\r\n11170\r\n"
            .to_vec();
        answer.extend(std::iter::repeat_n(b'a', 0x11170));
        answer.extend(b"\r\n5\r\nhel");
        Reply::WriteAndClose(answer)
    })
    .await;
    let gw = gateway(&upstream.url(), ONE_ATTEMPT).await;
    let got = raw_exchange(&gw, &raw_status_call(""), Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n"),
        "{:?}",
        &text[..text.len().min(100)]
    );
    assert!(text.contains("\r\nx-upstream: yes\r\n"));
    assert!(text.contains("\r\ntransfer-encoding: chunked\r\n"));
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "a cut body must not end as a whole one"
    );
    assert_eq!(log.lines(), vec![(0, STATUS_LINE.into())]);
}

// --- Compressed answers ---

/// CRC-32 (IEEE), for the gzip trailer.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `data` as a gzip stream (RFC 1952) of stored deflate blocks: what any gzip decoder reads,
/// and what no JSON parser does.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    let blocks: Vec<&[u8]> = data.chunks(0xffff).collect();
    for (i, block) in blocks.iter().enumerate() {
        out.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend(*block);
    }
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

#[test]
fn the_test_gzip_writer_is_gzip() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    let packed = gzip(b"hi");
    assert_eq!(&packed[10..17], &[1, 2, 0, 0xfd, 0xff, b'h', b'i']);
}

/// An upstream that compresses when asked to, as iDenfy behind a CDN may: a token answer for
/// the token route; for the status route, a 400 `TOO_MANY_REQUESTS` first, then 200.
async fn compressing_upstream(log: &Log) -> RawUpstream {
    let counts = log.clone();
    logging(log, move |_, _, req| {
        let throttled = counts.count(STATUS_LINE) == 1;
        let (status, json) = match req.line.as_str() {
            TOKEN_LINE => (
                "201 Created",
                r#"{"authToken":"tok-1","scanRef":"scan-1","clientId":"c-1","expiryTime":3600}"#,
            ),
            _ if throttled => (
                "400 Bad Request",
                r#"{"identifier":"TOO_MANY_REQUESTS","message":"limit"}"#,
            ),
            _ => ("200 OK", r#"{"status":"APPROVED"}"#),
        };
        let asked = req.header("accept-encoding").unwrap_or("");
        let (body, coding) = if asked.contains("gzip") {
            (gzip(json.as_bytes()), "content-encoding: gzip\r\n")
        } else {
            (json.as_bytes().to_vec(), "")
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{coding}\
             content-length: {}\r\n\r\n",
            body.len()
        );
        Reply::Write(vec![[head.as_bytes(), &body].concat()])
    })
    .await
}

#[tokio::test]
async fn answers_are_asked_for_uncompressed_so_replay_and_throttle_checks_read_them() {
    let log = Log::default();
    let upstream = compressing_upstream(&log).await;
    let gw = gateway(&upstream.url(), "[retry]\nbase = \"1ms\"\ncap = \"1ms\"\n").await;
    let gzip_please = ("accept-encoding", "gzip, deflate");
    let url = gw.url("/api/v2/token");
    let headers = [BEARER, gzip_please];
    let token = || send(Method::POST, &url, &headers, r#"{"clientId":"c-1"}"#);
    let first = token().await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.json()["authToken"], "tok-1");
    let again = token().await;
    assert_eq!(again.header("x-gateway-dedup"), "replayed");
    assert_eq!(again.body, first.body);
    assert_eq!(log.count(TOKEN_LINE), 1);

    let status = send(
        Method::POST,
        &gw.url("/api/v2/status"),
        &[BEARER, gzip_please],
        "{}",
    )
    .await;
    assert_eq!(
        status.status,
        StatusCode::OK,
        "the throttled 400 was retried"
    );
    assert_eq!(status.header("x-gateway-attempts"), "2");
    assert_eq!(status.json()["status"], "APPROVED");
    assert_eq!(log.count(STATUS_LINE), 2);
    assert_eq!(log.last().header("accept-encoding"), Some("identity"));
    let codings: Vec<_> = log
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(_, r)| r.header("accept-encoding").map(str::to_owned))
        .collect();
    assert!(
        codings.iter().all(|c| c.as_deref() == Some("identity")),
        "{codings:?}"
    );
}
