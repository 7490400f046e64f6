//! The proxy listener's connections over their life, on both of its paths (its own HTTP/1.1 loop
//! and hyper's, for chunked bodies and h2c): the idle timeout, the close after a 401, eviction
//! at `listen.max_connections`, and a caller that leaves while its request is served.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::gateway::{metric, start_with, with_mock_upstream_listen, TestGateway};
use support::raw::RawUpstream;
use support::upstream::Reply;
use support::wire::{connect, idle_connections, request, served_once, Reader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A head that hyper serves (chunked), with the team's token unless `auth` is false, and its
/// whole body.
fn chunked(auth: bool) -> String {
    let auth = if auth {
        "authorization: Bearer team-token\r\n"
    } else {
        ""
    };
    format!(
        "POST /api/v2/status HTTP/1.1\r\nhost: gw\r\n{auth}transfer-encoding: chunked\r\n\r\n\
         2\r\n{{}}\r\n0\r\n\r\n"
    )
}

/// A new connection on which one chunked request (hyper's path) was answered 200, with
/// `connection: close`.
async fn served_once_on_hypers_path(gw: &TestGateway) -> Reader {
    let mut conn = connect(gw).await;
    conn.stream
        .write_all(chunked(true).as_bytes())
        .await
        .unwrap();
    let answer = conn.response(false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    conn
}

/// A short idle timeout, and a header timeout long enough not to be the one that closes.
const IDLE: &str = "idle_timeout = \"200ms\"\nheader_read_timeout = \"30s\"\n";

#[tokio::test]
async fn closes_a_keep_alive_connection_idle_past_the_idle_timeout() {
    let (upstream, gw) = with_mock_upstream_listen(IDLE).await;
    let mut conn = connect(&gw).await;
    for _ in 0..2 {
        let req = request("POST", "/api/v2/status", "", "{}");
        conn.stream.write_all(req.as_bytes()).await.unwrap();
        assert_eq!(conn.response(false).await.status, 200);
    }
    assert!(conn.closed().await, "an idle connection stayed open");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn closes_an_idle_connection_that_never_sent_a_byte_at_the_header_timeout() {
    let (_upstream, gw) = with_mock_upstream_listen("header_read_timeout = \"200ms\"\n").await;
    let mut conn = connect(&gw).await;
    assert!(conn.closed().await, "a silent connection stayed open");
}

/// Timers too long to close anything within the test's wait: what closes is the rule, not a
/// timer.
const NO_TIMER: &str = "idle_timeout = \"60s\"\nheader_read_timeout = \"60s\"\n";

/// hyper serves one HTTP/1 request of a connection handed to it and closes after its answer,
/// with no timer due: a next head on that connection would be read by hyper alone.
#[tokio::test]
async fn an_http1_connection_on_hypers_path_closes_after_its_answer() {
    let (upstream, gw) = with_mock_upstream_listen(NO_TIMER).await;
    let mut conn = served_once_on_hypers_path(&gw).await;
    assert!(conn.closed().await, "the connection stayed open");
    assert_eq!(upstream.count(), 1);
}

/// An h2c connection to the gateway: its sender, and the task that drives it.
async fn h2c(gw: &TestGateway) -> (SendRequest<Empty<Bytes>>, JoinHandle<hyper::Result<()>>) {
    let stream = TcpStream::connect(gw.addr()).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

/// `POST /api/v2/status` with the team's token and no body, for [`h2c`].
fn h2c_status_call(gw: &TestGateway) -> Request<Empty<Bytes>> {
    Request::post(gw.url("/api/v2/status"))
        .header("authorization", "Bearer team-token")
        .body(Empty::<Bytes>::new())
        .unwrap()
}

#[tokio::test]
async fn closes_an_idle_h2c_connection_at_the_idle_timeout() {
    let (upstream, gw) = with_mock_upstream_listen(IDLE).await;
    let (mut sender, connection) = h2c(&gw).await;
    let req = h2c_status_call(&gw);
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();
    // The connection ends (the gateway's GOAWAY, then its close) without the client asking.
    let ended = tokio::time::timeout(Duration::from_secs(10), connection).await;
    assert!(ended.is_ok(), "an idle h2c connection stayed open");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn closes_the_connection_after_an_unauthenticated_request_on_either_path() {
    let (upstream, gw) = with_mock_upstream_listen("").await;
    let own = "GET /api/v2/data HTTP/1.1\r\nhost: gw\r\n\r\n".to_string();
    for req in [own, chunked(false)] {
        let mut conn = connect(&gw).await;
        conn.stream.write_all(req.as_bytes()).await.unwrap();
        let res = conn.response(false).await;
        assert_eq!(res.status, 401, "{req:?}");
        assert_eq!(res.header("connection"), Some("close"), "{req:?}");
        assert!(conn.closed().await, "{req:?}");
    }
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn keeps_the_connection_after_a_refusal_with_no_body_to_drop() {
    let (upstream, gw) = with_mock_upstream_listen("").await;
    let mut conn = connect(&gw).await;
    let two = [
        request("GET", "/not-idenfy", "", ""),
        request("GET", "/api/v2/status", "", ""),
    ]
    .concat();
    conn.stream.write_all(two.as_bytes()).await.unwrap();
    let refused = conn.response(false).await;
    assert_eq!(refused.status, 404);
    assert_eq!(refused.header("connection"), None);
    assert_eq!(conn.response(false).await.status, 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn evicts_the_longest_idle_connection_to_admit_a_new_one() {
    let (upstream, gw) = with_mock_upstream_listen("max_connections = 4\n").await;
    let mut idle = idle_connections(&gw, 4).await;
    let mut newcomer = served_once(&gw).await;
    assert!(
        idle[0].closed().await,
        "the longest-idle connection stayed open"
    );
    // The others are untouched: the newest still serves a request.
    let req = request("GET", "/api/v2/status", "", "");
    idle[3].stream.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(idle[3].response(false).await.status, 200);
    newcomer.stream.write_all(req.as_bytes()).await.unwrap();
    assert_eq!(newcomer.response(false).await.status, 200);
    assert_eq!(upstream.count(), 7);
}

#[tokio::test]
async fn never_evicts_a_connection_whose_request_is_being_served() {
    let (upstream, gw) = with_mock_upstream_listen("max_connections = 2\n").await;
    let gate = Arc::new(Notify::new());
    let late = Reply::json(200, r#"{"late":1}"#);
    upstream.push(Reply::Gated(gate.clone(), Box::new(late)));
    let mut busy = connect(&gw).await;
    let req = request("GET", "/api/v2/status", "", "");
    busy.stream.write_all(req.as_bytes()).await.unwrap();
    upstream.wait_for(1).await;
    // The idle one is the one to go, though it went idle after the busy one began.
    let mut idle = served_once(&gw).await;
    let _newcomer = served_once(&gw).await;
    assert!(idle.closed().await);
    gate.notify_one();
    let res = busy.response(false).await;
    assert_eq!((res.status, res.body), (200, br#"{"late":1}"#.to_vec()));
}

#[tokio::test]
async fn serves_a_request_pipelined_while_the_one_before_is_being_served() {
    let (upstream, gw) = with_mock_upstream_listen("").await;
    let gate = Arc::new(Notify::new());
    upstream.push(Reply::Gated(gate.clone(), Box::new(Reply::json(200, "1"))));
    upstream.push(Reply::json(200, "2"));
    let mut conn = connect(&gw).await;
    let first = request("POST", "/api/v2/status", "", "{}");
    conn.stream.write_all(first.as_bytes()).await.unwrap();
    upstream.wait_for(1).await;
    // Bytes that come while the first is served are the next request, not a disconnect.
    let second = request("POST", "/api/v2/status", "", "{}");
    conn.stream.write_all(second.as_bytes()).await.unwrap();
    conn.stream.flush().await.unwrap();
    gate.notify_one();
    assert_eq!(conn.response(false).await.body, b"1");
    assert_eq!(conn.response(false).await.body, b"2");
}

/// An upstream that answers 503 slowly (after 300 ms), and notices when the gateway hangs up
/// on an attempt before that: counts attempts and hang-ups, and signals each attempt.
struct SlowFailing {
    upstream: RawUpstream,
    attempts: Arc<AtomicUsize>,
    hung_up: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
}

impl SlowFailing {
    async fn start() -> SlowFailing {
        let attempts = Arc::new(AtomicUsize::new(0));
        let hung_up = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(Notify::new());
        let (a, h, n) = (attempts.clone(), hung_up.clone(), arrived.clone());
        let upstream = RawUpstream::start(move |_, mut conn| {
            let (attempts, hung_up, arrived) = (a.clone(), h.clone(), n.clone());
            async move {
                while conn.request().await.is_some() {
                    attempts.fetch_add(1, Ordering::SeqCst);
                    arrived.notify_one();
                    if conn.closed_within(Duration::from_millis(300)).await {
                        hung_up.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    conn.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                        .await;
                }
            }
        })
        .await;
        SlowFailing {
            upstream,
            attempts,
            hung_up,
            arrived,
        }
    }
}

/// Retries of every 503, quickly, and a budget that never stands in their way.
const RETRY_ALL: &str = "[retry]\nmax_attempts = 4\nbase = \"5ms\"\ncap = \"10ms\"\n\
                         budget_ratio = 1000.0\nmin_retries_per_second = 100\n";

/// How a caller leaves.
#[derive(Clone, Copy)]
enum Leaving {
    /// It closes its socket (FIN).
    Closes,
    /// It resets the connection (RST).
    Resets,
}

/// Sends `req`, leaves once the upstream has the first attempt, and returns how many attempts
/// the upstream saw and how many it saw the gateway hang up, once the request is over.
async fn leave_after_the_first_attempt(req: &str, leaving: Leaving) -> (usize, usize, String) {
    let upstream = SlowFailing::start().await;
    let gw = start_with(&upstream.upstream.url(), "", RETRY_ALL).await;
    let mut conn = TcpStream::connect(gw.addr()).await.unwrap();
    conn.write_all(req.as_bytes()).await.unwrap();
    upstream.arrived.notified().await;
    if let Leaving::Resets = leaving {
        conn.set_zero_linger().unwrap();
    }
    drop(conn);
    gw.wait_for_no_request_in_flight().await;
    let (attempts, hung_up) = (
        upstream.attempts.load(Ordering::SeqCst),
        upstream.hung_up.load(Ordering::SeqCst),
    );
    (attempts, hung_up, gw.metrics().await)
}

#[tokio::test]
async fn stops_retrying_for_a_caller_that_left() {
    let req = request("POST", "/api/v2/status", "", r#"{"scanRef":"s"}"#);
    for leaving in [Leaving::Closes, Leaving::Resets] {
        let (attempts, hung_up, metrics) = leave_after_the_first_attempt(&req, leaving).await;
        assert!(attempts < 4, "{attempts} attempts for a caller that left");
        assert_eq!(hung_up, 1, "the attempt in flight was not dropped");
        // Counted, by front, as nginx counts it: 499, a 4xx.
        let left =
            r#"idenfy_gateway_requests_total{route="/api/v2/status",status="4xx",team="payments"}"#;
        assert_eq!(metric(&metrics, left), 1.0, "{metrics}");
    }
}

#[tokio::test]
async fn stops_retrying_for_a_caller_that_left_on_hypers_path() {
    for leaving in [Leaving::Closes, Leaving::Resets] {
        let (attempts, hung_up, _) = leave_after_the_first_attempt(&chunked(true), leaving).await;
        assert!(attempts < 4, "{attempts} attempts for a caller that left");
        assert_eq!(hung_up, 1, "the attempt in flight was not dropped");
    }
}

#[tokio::test]
async fn stops_retrying_for_a_caller_that_left_over_h2c() {
    let upstream = SlowFailing::start().await;
    let gw = start_with(&upstream.upstream.url(), "", RETRY_ALL).await;
    let (mut sender, connection) = h2c(&gw).await;
    let req = h2c_status_call(&gw);
    let pending = tokio::spawn(sender.send_request(req));
    upstream.arrived.notified().await;
    // The client goes away: its connection, and the socket with it.
    pending.abort();
    connection.abort();
    gw.wait_for_no_request_in_flight().await;
    let attempts = upstream.attempts.load(Ordering::SeqCst);
    assert!(attempts < 4, "{attempts} attempts for a caller that left");
    assert_eq!(upstream.hung_up.load(Ordering::SeqCst), 1);
}
