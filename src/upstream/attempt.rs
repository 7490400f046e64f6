//! One attempt as the future [`super::Upstream`] returns: the request encoded into a connection's
//! buffer when the attempt is made, then a small state machine — a new connection opened if the
//! pool had none, the request written and the head read ([`Exchange`]), the metrics recorded, a
//! small body read ([`Answered`]). Written by hand rather than as nested `async fn`s: the future
//! is boxed per request, and this one holds a connection and a few words (not the request, nor
//! every step's locals side by side); the rare steps (a new connection, its TLS handshake, the
//! resend on a pooled connection the server had closed) are boxed on their own.
//!
//! A request that failed unanswered on a pooled connection is sent again on a new one, once,
//! only when no byte of it was written or it is idempotent ([`Failure::allows_resend`]): a
//! `POST` the server may have read whole is the retry loop's to decide, as a connection that
//! broke after send.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tokio::time::Instant;

use super::answered::Answered;
use super::body::StreamBound;
use super::exchange::{Bound, Connecting, Exchange, Failure, Outgoing};
use super::{Authorized, Shared};
use crate::body::Body;
use crate::context::{ContextExt, Deadline};
use crate::error::GatewayError;
use crate::http1::response::ResponseHead;

/// One attempt against iDenfy: the response head within its bound (the metrics are recorded
/// then), then a small body read whole before the same bound, or a large one handed on to stream.
pub struct Attempt {
    shared: Arc<Shared>,
    state: State,
    req: Outgoing,
    bound: Bound,
    /// The request's deadline: it bounds a streamed body too.
    deadline: Option<Deadline>,
    started: Instant,
    /// The request, for the caller the metrics are recorded under (shared with the retry loop).
    request: Arc<Request<Bytes>>,
    /// The connection came from the pool: failing before any answer, the request may be sent
    /// again, once, on a new one ([`Failure::allows_resend`]).
    reused: bool,
}

enum State {
    Connecting(Connecting),
    Sending(Exchange),
    Receiving(Answered),
    Done,
}

impl Attempt {
    pub(super) fn new(shared: Arc<Shared>, req: Authorized) -> Self {
        let Authorized {
            request,
            authorization,
        } = req;
        let started = Instant::now();
        let deadline = request.deadline();
        let bound = shared.bound(started, deadline);
        let client = &shared.client;
        // Encoded now, into the pooled connection's buffer when there is one (a new
        // connection gets this buffer): the future keeps what it needs, not the request.
        let mut pooled = client.pool().checkout(started);
        let mut fresh = Vec::new();
        let out = pooled.as_mut().map_or(&mut fresh, |conn| &mut conn.out);
        let req = client.encode(out, &request, &authorization);
        let (state, reused) = match pooled {
            Some(conn) => (State::Sending(Exchange::new(conn, bound)), true),
            None => (State::Connecting(client.connect(fresh, bound)), false),
        };
        Attempt {
            shared,
            state,
            req,
            bound,
            deadline,
            started,
            request,
            reused,
        }
    }

    /// How long a body left to stream may wait for its bytes.
    fn stream_bound(&self) -> StreamBound {
        StreamBound {
            deadline: self.deadline.map(|d| d.0),
            idle: self.shared.attempt_timeout,
        }
    }

    /// Counts the attempt, by its caller's account, once its head arrived or it failed before.
    fn record(&self, result: Result<StatusCode, &GatewayError>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let metrics = &self.shared.metrics;
        match self.request.caller() {
            Some(caller) => metrics.record(caller.account, &caller.account_name, result, seconds),
            // No caller: no handle row; looked up by label.
            None => metrics.record(usize::MAX, "", result, seconds),
        }
        #[cfg(feature = "otlp")]
        crate::telemetry::otlp::attempt(&self.request, self.started, result);
    }

    /// The attempt failed before an answer: counted, and its connection closed now.
    #[cold]
    #[inline(never)]
    fn unanswered(&mut self, e: GatewayError) -> Poll<Result<Response<Body>, GatewayError>> {
        self.state = State::Done;
        self.record(Err(&e));
        Poll::Ready(Err(e))
    }

    /// The pooled connection failed before the request was written, or unanswered with an
    /// idempotent request: the server had (most likely) closed it while idle. The request goes
    /// again, once, on a new connection.
    #[cold]
    #[inline(never)]
    fn resend(&mut self, dead: Exchange) {
        tracing::debug!("idle upstream connection was closed; sending on a new one");
        self.reused = false;
        let connect = self.shared.client.connect(dead.into_request(), self.bound);
        self.state = State::Connecting(connect);
    }
}

/// What the state polled came to.
enum Event {
    Head(Result<ResponseHead, Failure>),
    Body(Result<(), Failure>),
}

impl Future for Attempt {
    type Output = Result<Response<Body>, GatewayError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            let event = match &mut this.state {
                State::Connecting(connect) => match ready!(connect.as_mut().poll(cx)) {
                    Ok(exchange) => {
                        this.state = State::Sending(exchange);
                        continue;
                    }
                    Err(e) => return this.unanswered(e),
                },
                State::Sending(exchange) => Event::Head(ready!(exchange.poll_head(cx, &this.req))),
                State::Receiving(answered) => Event::Body(ready!(answered.poll_body(cx))),
                State::Done => panic!("upstream attempt polled after it completed"),
            };
            // Moved out: the next state takes the connection.
            match (event, std::mem::replace(&mut this.state, State::Done)) {
                (Event::Head(Ok(head)), State::Sending(exchange)) => {
                    this.record(Ok(head.status));
                    this.state = State::Receiving(exchange.answered(head));
                }
                (Event::Head(Err(failure)), State::Sending(exchange))
                    if this.reused && failure.allows_resend(&this.req) =>
                {
                    this.resend(exchange);
                }
                (Event::Head(Err(failure)), _) => {
                    return this.unanswered(failure.into_error(&this.bound))
                }
                (Event::Body(read), State::Receiving(answered)) => {
                    let pool = this.shared.client.pool();
                    let bound = this.stream_bound();
                    let res = read.and_then(|()| answered.into_response(pool, bound));
                    return Poll::Ready(res.map_err(|f| f.into_error(&this.bound)));
                }
                _ => unreachable!("an event comes from the state polled"),
            }
        }
    }
}
