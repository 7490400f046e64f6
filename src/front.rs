//! Front: the outermost step of the request path. It decides whether a request is taken at all
//! (identify → 401, route → 404/400, body limit → 413), sets the request id and the deadline,
//! removes the caller's hop-by-hop headers, and, once the inner stack answers, turns the stack's
//! errors into responses, adds `x-request-id`, and writes one log line and the request metrics.
//!
//! Errors become responses through one mapping, [`GatewayError::into_response`] in `error.rs`,
//! called in three places: here, for every request that reaches `front`; in `retry.rs`, where
//! the attempt count must be attached to the answer; and in the listener (`server/h1.rs`), for
//! the refusals it makes before any request exists (a malformed or oversized head).
//!
//! Identify and route are plain functions called here, on the request head, so that the log
//! line and the metrics know the team and route of every request, including refused ones.
//!
//! Two ways in, one set of decisions. hyper's requests come through [`Service::call`], with
//! their body still to read: the head is judged before a byte of the body is polled. The
//! server's own HTTP/1.1 loop reads bodies itself, so it asks in two steps through [`Admit`]:
//! [`Admit::admit`] judges the head (and the body length it declares) before the loop reads any
//! of the body, and [`Admit::serve`] takes the request once its body is read. Either way the
//! refusal, the log line and the metrics are made here; a request whose caller leaves before
//! its answer is logged and counted as 499 `client_closed` when its future is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::body::{Body, Joined};
use crate::context::{Deadline, RequestContext};
use crate::deadline::deadline_for;
use crate::error::GatewayError;
use crate::headers::{set_single, strip_hop_by_hop};
use crate::identify::Callers;
use crate::metrics::{
    status_class_index, GaugeGuard, HandleTable, RequestMetrics, STATUS_CLASSES, UNKNOWN,
};
use crate::route::Routes;
use crate::stack::Inner;
use crate::telemetry::access::{self, AccessRecord};
#[cfg(feature = "otlp")]
use crate::telemetry::otlp::{RequestSpan, Spans};
use crate::trace::{self, TraceId};

/// The request id header: kept from the caller when sane, else generated.
pub const X_REQUEST_ID: &str = "x-request-id";

/// Header names built at compile time: inserting or looking up by `&str` parses (and, to
/// insert, allocates) the name on every request.
const REQUEST_ID: HeaderName = HeaderName::from_static(X_REQUEST_ID);
const ATTEMPTS: HeaderName = HeaderName::from_static(crate::retry::X_GATEWAY_ATTEMPTS);
const DEDUP: HeaderName = HeaderName::from_static(crate::dedup::X_GATEWAY_DEDUP);
const ERROR: HeaderName = HeaderName::from_static(crate::error::X_GATEWAY_ERROR);
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TIMEOUT: HeaderName = HeaderName::from_static(crate::deadline::X_GATEWAY_TIMEOUT);

/// What the front step needs.
#[derive(Clone)]
pub struct FrontLayer {
    shared: Arc<Shared>,
}

struct Shared {
    callers: Callers,
    routes: Routes,
    max_body: u64,
    /// A body not whole when the request came must arrive within this (`listen.body_read_timeout`).
    body_read_timeout: Duration,
    deadline: Duration,
    metrics: RequestMetrics,
    handles: Handles,
    /// Where request and attempt spans go (`telemetry.otlp_endpoint`), if anywhere.
    #[cfg(feature = "otlp")]
    spans: Option<Spans>,
}

/// The request metrics' handles, by team index (then one row for unknown callers), route label
/// index (in `labels`, the last one `unknown`) and status class.
struct Handles {
    labels: Vec<&'static str>,
    /// The row of requests that never got as far as a team (401).
    unknown_team: usize,
    requests: HandleTable<prometheus::IntCounter>,
    duration: HandleTable<prometheus::Histogram>,
}

impl Handles {
    fn new(callers: &Callers, routes: &Routes) -> Self {
        let mut labels = routes.labels();
        labels.push(UNKNOWN);
        Handles {
            requests: HandleTable::new(callers.len() + 1, labels.len() * STATUS_CLASSES.len()),
            duration: HandleTable::new(1, labels.len()),
            labels,
            unknown_team: callers.len(),
        }
    }

    fn label_index(&self, label: &'static str) -> Option<usize> {
        // Labels are the same `&'static str`s `classify` hands out: a pointer compare first.
        let labels = &self.labels;
        labels
            .iter()
            .position(|l| std::ptr::eq(*l, label))
            .or_else(|| labels.iter().position(|l| *l == label))
    }

    /// Counts one answered request and its duration.
    fn record(
        &self,
        m: &RequestMetrics,
        team: Option<(usize, &str)>,
        route: &'static str,
        status: http::StatusCode,
        seconds: f64,
    ) {
        let class = status_class_index(status);
        let (row, team) = team.unwrap_or((self.unknown_team, UNKNOWN));
        let route_at = self.label_index(route);
        let counter = || {
            m.requests
                .with_label_values(&[team, route, STATUS_CLASSES[class]])
        };
        let cached = route_at.and_then(|r| {
            self.requests
                .get(row, r * STATUS_CLASSES.len() + class, counter)
        });
        match cached {
            Some(c) => c.inc(),
            None => counter().inc(),
        }
        let histogram = || m.duration.with_label_values(&[route]);
        match route_at.and_then(|r| self.duration.get(0, r, histogram)) {
            Some(h) => h.observe(seconds),
            None => histogram().observe(seconds),
        }
    }
}

impl FrontLayer {
    pub fn new(
        callers: Callers,
        routes: Routes,
        max_body: u64,
        body_read_timeout: Duration,
        deadline: Duration,
        metrics: RequestMetrics,
        #[cfg(feature = "otlp")] spans: Option<Spans>,
    ) -> Self {
        let handles = Handles::new(&callers, &routes);
        FrontLayer {
            shared: Arc::new(Shared {
                callers,
                routes,
                max_body,
                body_read_timeout,
                deadline,
                metrics,
                handles,
                #[cfg(feature = "otlp")]
                spans,
            }),
        }
    }
}

impl<S> Layer<S> for FrontLayer {
    type Service = Front<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Front {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See the module doc.
#[derive(Clone)]
pub struct Front<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// A boxed error of a request body.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// For any request body: hyper's `Incoming`, or the body the server's own HTTP/1.1 loop read whole.
impl<S, B> Service<Request<B>> for Front<S>
where
    S: Inner,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = FrontFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // What can be decided without waiting is decided here, before the future is made: the
        // boxed future then holds only what the wait needs (a future keeps room for its
        // arguments and, again, for every local alive across an await).
        let mut answer = Answer::start(self.shared.clone(), &mut req);
        if let Err(e) = answer.admit(&mut req) {
            return finishing(std::future::ready(Err(e)), answer);
        }
        let (parts, body) = req.into_parts();
        let mut body = Reading::new(body, self.shared.max_body);
        // The usual request is whole by now (the server's own loop reads a body before it hands
        // the request on), and the stack is always ready: asked without a waker, both answer at
        // once, and the request goes in from here. Otherwise nothing is lost: what was read stays
        // in `body`, and the future asks again, with the task's waker.
        let mut now = Context::from_waker(Waker::noop());
        if let Poll::Ready(Ok(())) = self.inner.poll_ready(&mut now) {
            match body.poll_whole(&mut now) {
                Poll::Ready(Ok(bytes)) => {
                    let call = self.inner.call(Request::from_parts(parts, bytes));
                    return finishing(call, answer);
                }
                Poll::Ready(Err(e)) => return finishing(std::future::ready(Err(e)), answer),
                Poll::Pending => {}
            }
        }
        let timeout = self.shared.body_read_timeout;
        finishing(forward(self.inner.clone(), parts, body, timeout), answer)
    }
}

/// Front's decisions that need only the request head, for a listener that reads the body itself
/// (the server's own HTTP/1.1 loop): a request refused here costs no byte of its body.
pub trait Admit {
    /// What [`Admit::serve`] returns (the future [`Service::call`] returns).
    type Future: Future<Output = Result<Response<Body>, Infallible>> + Send + Unpin + 'static;

    /// Identifies the caller (401), routes the request (404/400) and checks `declared`, the body
    /// length its head announces, against `limits.max_body` (413); gives the request its id,
    /// deadline and context.
    fn admit<B>(&mut self, req: &mut Request<B>, declared: u64) -> Admission;

    /// Serves a request that [`Admit::admit`] took, its body now read.
    fn serve(&mut self, admitted: Admitted, req: Request<Bytes>) -> Self::Future;
}

/// What [`Admit::admit`] decided.
pub enum Admission {
    /// Taken: its body is to be read, then the request handed to [`Admit::serve`].
    Admitted(Admitted),
    /// Refused: the answer to send, already logged and counted.
    Refused(Response<Body>),
}

/// A request admitted from its head, its body still to be read. It is logged and counted once:
/// by the answer [`Admit::serve`] gives, by [`Admitted::refuse`], or as 499 `client_closed` if
/// it is dropped (the caller left while its body was being read).
pub struct Admitted(Answer);

impl Admitted {
    /// The answer to a request admitted, then refused by the listener (its body did not arrive
    /// in time: 408), logged and counted here.
    pub fn refuse(self, error: GatewayError) -> Response<Body> {
        self.0.finish(Err(error))
    }
}

impl<S> Admit for Front<S>
where
    S: Inner,
{
    type Future = FrontFuture;

    fn admit<B>(&mut self, req: &mut Request<B>, declared: u64) -> Admission {
        let mut answer = Answer::start(self.shared.clone(), req);
        let max = self.shared.max_body;
        let within = if declared > max {
            Err(GatewayError::PayloadTooLarge { limit: max })
        } else {
            Ok(())
        };
        // In front's order: identify and route (in `admit`) before the body limit.
        match answer.admit(req).and(within) {
            Ok(()) => Admission::Admitted(Admitted(answer)),
            Err(e) => Admission::Refused(answer.finish(Err(e))),
        }
    }

    fn serve(&mut self, Admitted(answer): Admitted, req: Request<Bytes>) -> Self::Future {
        // The stack is always ready: asked without a waker, it answers at once, and the request
        // goes in from here (as in `call`).
        let mut now = Context::from_waker(Waker::noop());
        if let Poll::Ready(Ok(())) = self.inner.poll_ready(&mut now) {
            return finishing(self.inner.call(req), answer);
        }
        finishing(call_when_ready(self.inner.clone(), req), answer)
    }
}

/// The future `front` returns, for hyper and for the listener's own loop.
pub type FrontFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// `forward`, then the answer finished, as the boxed future `front` returns. Dropped before
/// its end, it drops `answer` unfinished: a 499 (`Answer`'s `Drop`).
fn finishing<F>(forward: F, answer: Answer) -> FrontFuture
where
    F: Future<Output = Result<Response<Body>, GatewayError>> + Send + 'static,
{
    Box::pin(async move { Ok(answer.finish(forward.await)) })
}

/// One request on its way through `front`: what its answer, log line and metrics need. Dropped
/// unfinished (the caller left and its future was dropped), it is logged and counted as 499
/// `client_closed`.
struct Answer {
    shared: Arc<Shared>,
    started: Instant,
    _in_flight: GaugeGuard,
    request_id: HeaderValue,
    /// Of the caller's `traceparent`, for the access line.
    trace_id: Option<TraceId>,
    /// How long the request may take: `upstream.deadline`, or less when the caller asks.
    allowed: Duration,
    method: Method,
    /// The caller's team, once identified.
    team: Option<usize>,
    route: &'static str,
    /// Exported when settled (`telemetry.otlp_endpoint`).
    #[cfg(feature = "otlp")]
    span: Option<RequestSpan>,
    /// Logged and counted already.
    finished: bool,
}

impl Drop for Answer {
    fn drop(&mut self) {
        if !self.finished {
            self.settle(Err(GatewayError::ClientClosed));
        }
    }
}

impl Answer {
    /// Starts the clock and gives the request its id.
    fn start<B>(shared: Arc<Shared>, req: &mut Request<B>) -> Self {
        let started = Instant::now();
        let _in_flight = GaugeGuard::enter(&shared.metrics.in_flight);
        let given = Given::find(req.headers());
        let request_id = request_id(given.request_id);
        let trace_id = trace::trace_id(given.traceparent);
        let allowed = deadline_for(given.timeout, shared.deadline);
        // In place when the caller sent its own.
        set_single(req.headers_mut(), REQUEST_ID, request_id.clone());
        Answer {
            #[cfg(feature = "otlp")]
            span: shared.spans.as_ref().map(|spans| spans.request(req)),
            shared,
            started,
            _in_flight,
            request_id,
            trace_id,
            allowed,
            method: req.method().clone(),
            team: None,
            route: UNKNOWN,
            finished: false,
        }
    }

    /// Identifies the caller and the route, and hands both and the deadline to the inner
    /// layers in the request's context.
    fn admit<B>(&mut self, req: &mut Request<B>) -> Result<(), GatewayError> {
        let shared = &*self.shared;
        let caller = shared
            .callers
            .identify_request_with(req.headers(), req.extensions())?;
        self.team = Some(caller.team);
        // The caller's hop ends here: its hop-by-hop headers (`Connection` and what it names,
        // `Proxy-Authorization`, `TE` …) go no further. Once, before the retry loop shares the
        // request between its attempts.
        strip_hop_by_hop(req.headers_mut());
        let matched = shared.routes.classify(req.method(), req.uri().path())?;
        self.route = matched.label;
        let deadline = Deadline(self.started + self.allowed);
        req.extensions_mut().insert(RequestContext {
            caller: Some(caller.clone()),
            route: Some(matched),
            deadline: Some(deadline),
        });
        Ok(())
    }

    /// The answer to send: errors made into responses, the request id on it, counted and
    /// logged.
    fn finish(mut self, result: Result<Response<Body>, GatewayError>) -> Response<Body> {
        self.settle(result)
    }

    /// [`Answer::finish`], once.
    fn settle(&mut self, result: Result<Response<Body>, GatewayError>) -> Response<Body> {
        self.finished = true;
        let mut res = result.unwrap_or_else(GatewayError::into_response);
        res.headers_mut()
            .insert(REQUEST_ID, self.request_id.clone());
        let elapsed = self.started.elapsed();
        let status = res.status();
        let shared = &*self.shared;
        let team = self
            .team
            .and_then(|t| shared.callers.get(t))
            .map(|c| (c.team, &*c.team_name));
        shared.handles.record(
            &shared.metrics,
            team,
            self.route,
            status,
            elapsed.as_secs_f64(),
        );
        let [attempts, dedup, error] = gateway_headers(res.headers());
        let record = AccessRecord {
            request_id: self.request_id.to_str().unwrap_or(""),
            trace_id: self.trace_id.as_ref().map_or("", TraceId::as_str),
            team: team.map_or(UNKNOWN, |(_, name)| name),
            route: self.route,
            method: self.method.as_str(),
            status: status.as_u16(),
            attempts,
            dedup,
            error,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
        };
        access::log(&record);
        #[cfg(feature = "otlp")]
        if let Some(span) = self.span.take() {
            span.end(&record);
        }
        res
    }
}

/// The body read (within its limit and `timeout`), then the request handed to the inner layers:
/// for a request that was not whole, or a stack that was not ready, when `front` was called.
async fn forward<S, B>(
    inner: S,
    parts: http::request::Parts,
    mut body: Reading<B>,
    timeout: Duration,
) -> Result<Response<Body>, GatewayError>
where
    S: Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError>,
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let whole = std::future::poll_fn(|cx| body.poll_whole(cx));
    let body = tokio::time::timeout(timeout, whole)
        .await
        .map_err(|_| GatewayError::BodyTimeout)??;
    call_when_ready(inner, Request::from_parts(parts, body)).await
}

/// The inner layers asked until ready, then handed `req`: ready first, as tower asks, and the
/// request goes straight into `call`, not into a `Oneshot` that holds it until then. For a body
/// read here ([`forward`]), or a stack that was not ready when [`Admit::serve`] was called.
async fn call_when_ready<S>(
    mut inner: S,
    req: Request<Bytes>,
) -> Result<Response<Body>, GatewayError>
where
    S: Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError>,
{
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(req).await
}

/// The caller's headers `front` reads (the first value of each, as `HeaderMap::get` gives),
/// found in one pass over the request's few headers: a look-up of a name outside the standard
/// set hashes it byte by byte, three times a request (~250 instructions).
#[derive(Default)]
struct Given<'a> {
    request_id: Option<&'a HeaderValue>,
    traceparent: Option<&'a HeaderValue>,
    timeout: Option<&'a HeaderValue>,
}

impl<'a> Given<'a> {
    fn find(headers: &'a HeaderMap) -> Self {
        let mut given = Given::default();
        for (name, value) in headers {
            let slot = if *name == REQUEST_ID {
                &mut given.request_id
            } else if *name == TRACEPARENT {
                &mut given.traceparent
            } else if *name == TIMEOUT {
                &mut given.timeout
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        given
    }
}

/// The values of `x-gateway-attempts`, `x-gateway-dedup` and `x-gateway-error` in the answer
/// ("" when absent), for the log line: one pass over the few headers of an answer instead of
/// three hashed look-ups.
fn gateway_headers(headers: &HeaderMap) -> [&str; 3] {
    let mut found = [""; 3];
    for (name, value) in headers {
        let slot = if *name == ATTEMPTS {
            0
        } else if *name == DEDUP {
            1
        } else if *name == ERROR {
            2
        } else {
            continue;
        };
        found[slot] = value.to_str().unwrap_or("");
    }
    found
}

/// A request body being read whole, at most `max` bytes of it. A body of one frame (the usual
/// case) comes out as it came, without a copy or an allocation; several frames are joined.
struct Reading<B> {
    body: B,
    max: u64,
    gathered: Joined,
    len: u64,
}

impl<B> Reading<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    fn new(body: B, max: u64) -> Self {
        Reading {
            body,
            max,
            gathered: Joined::default(),
            len: 0,
        }
    }

    /// The whole body, once it is all there. Refused with 413 as soon as it is known to be over
    /// `max`: from its declared length before anything is read (the body's size hint: hyper's
    /// and the server loop's both come from `Content-Length`), or while it is read.
    fn poll_whole(&mut self, cx: &mut Context<'_>) -> Poll<Result<Bytes, GatewayError>> {
        let too_large = GatewayError::PayloadTooLarge { limit: self.max };
        if self.body.size_hint().lower() > self.max {
            return Poll::Ready(Err(too_large));
        }
        while !self.body.is_end_stream() {
            let Some(frame) = ready!(Pin::new(&mut self.body).poll_frame(cx)) else {
                break;
            };
            let Ok(data) = frame.map_err(|_| GatewayError::BodyRead)?.into_data() else {
                continue; // trailers: not forwarded
            };
            self.len += data.len() as u64;
            if self.len > self.max {
                return Poll::Ready(Err(too_large));
            }
            self.gathered.push(data);
        }
        let whole = std::mem::take(&mut self.gathered).finish();
        Poll::Ready(Ok(whole.unwrap_or_default()))
    }
}

/// The caller's request id if it is short and printable, else a new random one.
fn request_id(given: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = given {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
        {
            return v.clone();
        }
    }
    // 32 lowercase hex digits, written in place (no `format!` per request).
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    // A byte at a time: two digits per step, no 128-bit shifts.
    for (digits, byte) in id.chunks_exact_mut(2).zip(fastrand::u128(..).to_be_bytes()) {
        digits[0] = HEX[usize::from(byte >> 4)];
        digits[1] = HEX[usize::from(byte & 0xf)];
    }
    // One allocation, shared by the copies that go upstream and back to the caller (a `Bytes`
    // made from a `Vec` allocates again on its first clone).
    HeaderValue::from_maybe_shared(Bytes::from_owner(id))
        .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_request_ids_and_replaces_others() {
        let sane = HeaderValue::from_static("abc-123_x.y:z");
        assert_eq!(request_id(Some(&sane)), sane);
        let long = HeaderValue::try_from("a".repeat(200)).unwrap();
        for bad in [
            HeaderValue::from_static("has space"),
            HeaderValue::from_static(""),
            long,
        ] {
            let id = request_id(Some(&bad));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32);
        }
        let (one, two) = (request_id(None), request_id(None));
        assert_ne!(one, two);
        for id in [one, two] {
            assert_eq!(id.len(), 32);
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|c| b"0123456789abcdef".contains(c)),
                "{id:?}"
            );
        }
    }

    /// A request body that answers each poll with the next scripted step.
    struct Scripted(std::collections::VecDeque<Poll<Option<&'static str>>>);

    impl http_body::Body for Scripted {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            let step = self.0.pop_front().unwrap_or(Poll::Ready(None));
            step.map(|data| {
                data.map(|d| Ok(http_body::Frame::data(Bytes::from_static(d.as_bytes()))))
            })
        }
    }

    fn reading(
        steps: impl IntoIterator<Item = Poll<Option<&'static str>>>,
        max: u64,
    ) -> Reading<Scripted> {
        Reading::new(Scripted(steps.into_iter().collect()), max)
    }

    #[test]
    fn keeps_what_it_read_when_the_rest_of_the_body_is_not_there_yet() {
        let mut cx = Context::from_waker(Waker::noop());
        let steps = [
            Poll::Ready(Some("ab")),
            Poll::Pending,
            Poll::Ready(Some("cd")),
            Poll::Ready(None),
        ];
        let mut body = reading(steps, 10);
        assert!(body.poll_whole(&mut cx).is_pending());
        let Poll::Ready(Ok(whole)) = body.poll_whole(&mut cx) else {
            panic!("the body ended");
        };
        assert_eq!(whole, "abcd");
    }

    #[test]
    fn refuses_a_body_that_grows_over_the_limit_across_polls() {
        let mut cx = Context::from_waker(Waker::noop());
        let steps = [
            Poll::Ready(Some("abc")),
            Poll::Pending,
            Poll::Ready(Some("def")),
        ];
        let mut body = reading(steps, 5);
        assert!(body.poll_whole(&mut cx).is_pending());
        assert!(matches!(
            body.poll_whole(&mut cx),
            Poll::Ready(Err(GatewayError::PayloadTooLarge { limit: 5 }))
        ));
    }

    #[test]
    fn finds_the_callers_headers_as_a_look_up_would() {
        let mut headers = HeaderMap::new();
        let given = Given::find(&headers);
        assert!(given.request_id.is_none() && given.traceparent.is_none());
        assert!(given.timeout.is_none());
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
        headers.append(REQUEST_ID, HeaderValue::from_static("first"));
        headers.append(REQUEST_ID, HeaderValue::from_static("second"));
        headers.insert(TIMEOUT, HeaderValue::from_static("5s"));
        headers.insert(http::header::HOST, HeaderValue::from_static("gw"));
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-ab-cd-01"));
        let given = Given::find(&headers);
        assert_eq!(given.request_id, headers.get(REQUEST_ID));
        assert_eq!(given.request_id.unwrap(), "first");
        assert_eq!(given.traceparent.unwrap(), "00-ab-cd-01");
        assert_eq!(given.timeout.unwrap(), "5s");
    }

    #[test]
    fn finds_the_gateways_headers_of_an_answer() {
        let mut headers = HeaderMap::new();
        assert_eq!(gateway_headers(&headers), ["", "", ""]);
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
        headers.insert(ERROR, HeaderValue::from_static("deadline"));
        headers.insert(ATTEMPTS, HeaderValue::from_static("2"));
        headers.insert(REQUEST_ID, HeaderValue::from_static("id"));
        assert_eq!(gateway_headers(&headers), ["2", "", "deadline"]);
        headers.insert(DEDUP, HeaderValue::from_static("replayed"));
        assert_eq!(gateway_headers(&headers), ["2", "replayed", "deadline"]);
    }
}
