//! The proxy listener's HTTP/1.1 connection loop, in front of [`crate::front`]: the plain request
//! (HTTP/1.1, no body or a `content-length` one) is read, handed to the stack and answered
//! here, keep-alive and pipelining included. Anything else (h2c, HTTP/1.0, chunked or `expect`
//! bodies, upgrades…) goes to hyper with the bytes already read, at a request boundary
//! ([`head::Parsed::Fallback`]; [`handover`]); over HTTP/1 hyper serves that one request and
//! closes. The loop serves plain TCP and TLS alike
//! ([`transport`]); a TLS client's verified certificate names go with each of its requests.
//!
//! The life of a request on the loop:
//!
//! 1. **Head.** Read within `listen.header_read_timeout` (of accept for the first one, of its
//!    first byte for later ones); between requests the connection waits at most
//!    `listen.idle_timeout`, and may be evicted to admit a new connection ([`super::slots`]).
//! 2. **Admission.** `front` judges the head ([`crate::front::Admit::admit`]: caller, route, body
//!    length) before a byte of the body is read. A refusal is written at once; when a body was
//!    announced, or the caller is unauthenticated (401), the connection closes after it, and
//!    lingers ([`linger`]) so that what the client still sends does not turn into a reset.
//! 3. **Body.** Read whole, within `listen.body_read_timeout` (408, logged by `front`).
//! 4. **Answer.** While the stack works, the socket is watched: a client that closes or resets
//!    the connection has its request dropped, which stops its retries (a coalesced token flight
//!    runs on for its other callers). Pipelined bytes that arrive meanwhile are kept.
//!
//! Per request: no task, no channel, no allocation of the loop's own, and a whole answer in one
//! write. The connection's one timer serves every wait for a head and is re-armed only when it
//! fires before the wait it serves is due, so a connection whose requests come faster than its
//! timeouts does not touch the timer wheel per request; marking the connection idle and busy
//! is two uncontended atomic writes, and the disconnect watch one readiness poll while the
//! answer is pending. The wire format is in [`head`] and [`encode`].

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::slots::Ticket;
use crate::body::Body;
use crate::error::GatewayError;
use crate::front::Admission;
use crate::identify::ClientCertNames;
use crate::stack::App;
use crate::tls::WithClientCert;

mod handover;
mod linger;
mod rewind;
mod transport;
mod wait;
mod write;

pub use crate::http1::request::Limits;
use crate::http1::request::{self as head, HeaderIndices, Parsed, RawRequest, Refusal};
use rewind::Rewind;
pub use transport::Transport;
use wait::{poll_gone, poll_stopping, poll_until};

/// Initial size of a connection's read buffer: 8 KiB holds a usual request, body included.
const READ_BUF: usize = 8 * 1024;
/// Least room offered to a read: below it, the buffer grows (or is reclaimed) first.
const MIN_READ: usize = 1024;
/// Body data up to 16 KiB is copied behind the head into the write buffer; larger data is
/// written beside it (one vectored write), not copied.
const INLINE_BODY: usize = 16 * 1024;
/// Body frames ready one after another are gathered up to 32 KiB, then written.
const GATHER: usize = 32 * 1024;
/// A write buffer grown past 64 KiB (a very large head) is let go after its response.
const MAX_KEPT_OUT: usize = 64 * 1024;

/// The timeouts of the proxy's connections.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// The first head must arrive within this of accept, a later one within this of its first
    /// byte (`listen.header_read_timeout`).
    pub header_read: Duration,
    /// A body must arrive within this of its head (`listen.body_read_timeout`).
    pub body_read: Duration,
    /// A keep-alive connection waits at most this long for its next request
    /// (`listen.idle_timeout`).
    pub idle: Duration,
}

/// What every connection of the proxy listener shares.
pub struct Server<S> {
    service: S,
    limits: Limits,
    timeouts: Timeouts,
    /// Serves the connections handed over.
    hyper: auto::Builder<TokioExecutor>,
}

/// One connection and its buffers, kept across its requests.
struct Conn<S, T> {
    stream: T,
    /// The verified client certificate's names (mutual TLS), added to each request.
    client_cert: Option<ClientCertNames>,
    /// Bytes read and not yet consumed: the next head (or part of it), pipelined requests.
    buf: BytesMut,
    /// The response being written.
    out: Vec<u8>,
    /// Where the header lines of the head being parsed are (reused from request to request).
    indices: Vec<HeaderIndices>,
    service: S,
    stop: watch::Receiver<bool>,
    /// Resolves once `stop` turns true. Made once per connection and polled by every read of a
    /// head; a wait made per read would queue and dequeue a waiter on the channel each time.
    /// Once it has resolved the loop ends: it is not polled again.
    stopping: Stopping,
    /// The waker `stopping` was last polled with ([`poll_stopping`]).
    stopping_waker: Option<Waker>,
    /// The connection's slot: idle or busy, evicted when the listener needs room.
    ticket: Ticket,
    /// The waker the slot last had from this connection ([`super::slots::Slot::poll_evicted`]).
    evicted_waker: Option<Waker>,
    /// The one timer of the connection's waits for a head ([`poll_until`]).
    timer: Pin<Box<Sleep>>,
}

type Stopping = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Why the loop serves no further request on a connection.
enum Stop {
    /// hyper serves the connection from here.
    Fallback,
    /// Answered with an error, then closed.
    Refuse(Refusal),
    /// Closed: EOF, an I/O error, a timeout, eviction, or shutdown while idle.
    Close,
}

/// Why a request body was not read.
enum BodyError {
    /// Not within `listen.body_read_timeout` (408).
    Late,
    /// The connection closed or broke.
    Gone,
}

impl<S: App> Server<S> {
    pub fn new(
        service: S,
        limits: Limits,
        timeouts: Timeouts,
        hyper: auto::Builder<TokioExecutor>,
    ) -> Self {
        Server {
            service,
            limits,
            timeouts,
            hyper,
        }
    }

    /// `listen.header_read_timeout`: a TLS handshake is due within it of accept.
    pub fn header_read_timeout(&self) -> Duration {
        self.timeouts.header_read
    }

    /// Serves a connection accepted at `accepted` (its TLS handshake done, if any), which
    /// holds `ticket` (its slot) until it closes, or until `stop` turns true (an idle
    /// connection closes at once; a request being served is answered, with
    /// `connection: close`).
    pub async fn serve_connection<T: Transport>(
        self: Arc<Self>,
        stream: T,
        accepted: Instant,
        ticket: Ticket,
        stop: watch::Receiver<bool>,
    ) {
        // The first head is due within the header timeout of accept, from its first byte too.
        let first = later(accepted, self.timeouts.header_read);
        let mut conn = Conn {
            client_cert: stream.client_cert(),
            stream,
            buf: BytesMut::with_capacity(READ_BUF),
            out: Vec::new(),
            indices: Vec::new(),
            service: self.service.clone(),
            stopping: Box::pin(stopped_owned(stop.clone())),
            stopping_waker: None,
            stop,
            ticket,
            evicted_waker: None,
            timer: Box::pin(tokio::time::sleep_until(first)),
        };
        let (mut idle_until, mut head_until) = (first, Some(first));
        loop {
            let head = match conn.next_head(&self, idle_until, head_until.take()).await {
                Ok(head) => head,
                Err(Stop::Fallback) => return self.fallback(conn).await,
                Err(Stop::Refuse(refusal)) => {
                    conn.refuse_head(refusal, &self.limits).await;
                    break;
                }
                Err(Stop::Close) => break,
            };
            if !conn.serve(&self, head).await {
                break;
            }
            idle_until = conn.between_requests(self.timeouts.idle);
        }
        let _ = conn.stream.shutdown().await;
    }

    /// Serves a TLS connection whose client chose h2 (ALPN) with hyper, as [`Self::fallback`]
    /// serves h2c: in its slot, drained on `stop`, on eviction and when idle.
    pub async fn serve_h2<T: Transport>(
        self: Arc<Self>,
        stream: T,
        ticket: Ticket,
        stop: watch::Receiver<bool>,
    ) {
        let client_cert = stream.client_cert();
        self.hand_over(stream, client_cert, BytesMut::new(), ticket, stop)
            .await;
    }

    /// Hands the connection to hyper, the bytes read so far first.
    async fn fallback<T: Transport>(&self, conn: Conn<S, T>) {
        let Conn {
            stream,
            client_cert,
            buf,
            stop,
            ticket,
            ..
        } = conn;
        self.hand_over(stream, client_cert, buf, ticket, stop).await;
    }

    /// Serves `stream` with hyper, `read` (bytes already read from it) first: one request over
    /// HTTP/1 ([`handover::Watched`] closes after it), every stream over h2c. hyper drains it on
    /// `stop`, on eviction, and once it has been idle for `listen.idle_timeout`.
    async fn hand_over<T: Transport>(
        &self,
        stream: T,
        client_cert: Option<ClientCertNames>,
        read: BytesMut,
        ticket: Ticket,
        mut stop: watch::Receiver<bool>,
    ) {
        let slot = ticket.slot().clone();
        let socket = handover::Handed::new(stream, ticket, stop.clone());
        let io = TokioIo::new(Rewind::new(socket, read.freeze()));
        let service = WithClientCert {
            inner: self.service.clone(),
            names: client_cert,
        };
        let service = handover::Watched::new(service, slot.clone());
        let mut conn = pin!(self
            .hyper
            .serve_connection(io, TowerToHyperService::new(service)));
        tokio::select! {
            // hyper first: it takes in the request already read before it is told to drain.
            biased;
            _ = conn.as_mut() => return,
            _ = super::stopped(&mut stop) => {}
            () = slot.evicted() => {}
            () = handover::idle_for(&slot, self.timeouts.idle) => {}
        }
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

/// `now + after`, or a year from now when that is past what an `Instant` holds.
fn later(now: Instant, after: Duration) -> Instant {
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

/// Resolves once the stop flag is set, owning its receiver.
async fn stopped_owned(mut stop: watch::Receiver<bool>) {
    super::stopped(&mut stop).await;
}

/// The plain request head at the start of `buf`, when all of it is there: where its parts are
/// (the header lines' in `indices`). The request is built from it where it is served
/// ([`Conn::serve`]), not here: a request (~250 bytes) handed back through the loop's futures
/// was copied at each step.
fn whole_head(
    buf: &[u8],
    indices: &mut Vec<HeaderIndices>,
    limits: &Limits,
) -> Result<Option<RawRequest>, Stop> {
    match head::parse(buf, limits, indices) {
        Parsed::Partial => Ok(None),
        Parsed::Fallback => Err(Stop::Fallback),
        Parsed::Refused(refusal) => Err(Stop::Refuse(refusal)),
        Parsed::Plain(raw) => Ok(Some(raw)),
    }
}

/// Refusals after which the connection closes, on either path: an unauthenticated caller gets
/// nothing more from it, and after a refused method (a `CONNECT` among them) what follows on the
/// connection is not read as requests, whatever the client meant it to be.
fn ends_the_connection(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::METHOD_NOT_ALLOWED
}

impl<S: App, T: Transport> Conn<S, T> {
    /// Reads the next request head. While no byte of it has come the connection is idle, and
    /// closes at `idle_until`; once it has begun, it is due at `head_until` (`None`: within
    /// the header timeout of now).
    async fn next_head(
        &mut self,
        server: &Server<S>,
        idle_until: Instant,
        mut head_until: Option<Instant>,
    ) -> Result<RawRequest, Stop> {
        loop {
            let idle = self.buf.is_empty();
            if !idle {
                if let Some(head) = whole_head(&self.buf, &mut self.indices, &server.limits)? {
                    return Ok(head);
                }
            }
            let until = if idle {
                idle_until
            } else {
                *head_until
                    .get_or_insert_with(|| later(Instant::now(), server.timeouts.header_read))
            };
            if !self.fill(until, idle).await {
                return Err(Stop::Close);
            }
        }
    }

    /// Reads more of a head: `false` at EOF, on an error, at `until`, or, while `idle` (no
    /// byte of the head yet), on `stop` or eviction. The first byte makes the connection busy.
    async fn fill(&mut self, until: Instant, idle: bool) -> bool {
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(READ_BUF);
        }
        let Conn {
            stream,
            buf,
            stop,
            stopping,
            stopping_waker,
            ticket,
            evicted_waker,
            timer,
            ..
        } = self;
        let read = poll_fn(|cx| {
            if let Poll::Ready(read) = stream.poll_read_buf(buf, cx) {
                return Poll::Ready(matches!(read, Ok(n) if n > 0));
            }
            if idle
                && (poll_stopping(stopping, stopping_waker, stop, cx).is_ready()
                    || ticket.slot().poll_evicted(cx, evicted_waker).is_ready())
            {
                return Poll::Ready(false);
            }
            poll_until(timer, until, cx).map(|()| false)
        })
        .await;
        // Evicted just as the head began: it closes all the same.
        read && (!idle || ticket.slot().busy())
    }

    /// After an answer: the connection is idle until its next head begins (unless the next
    /// head is already here, pipelined), and closes if none begins within `timeout`. Returns
    /// when.
    fn between_requests(&mut self, timeout: Duration) -> Instant {
        let now = Instant::now();
        if self.buf.is_empty() {
            self.ticket.slot().idle(now);
        }
        later(now, timeout)
    }

    /// Serves one request: built from its head (taken out of the buffer), admitted, then its
    /// body read, then answered. `false` when the connection closes after it.
    async fn serve(&mut self, server: &Server<S>, head: RawRequest) -> bool {
        let (body, close) = (head.body, head.close);
        let mut req = match head::take(&mut self.buf, &head, &self.indices) {
            Ok(req) => req,
            Err(refusal) => {
                self.refuse_head(refusal, &server.limits).await;
                return false;
            }
        };
        let head_request = req.method() == Method::HEAD;
        if let Some(names) = &self.client_cert {
            req.extensions_mut().insert(names.clone());
        }
        let admitted = match self.service.admit(&mut req, body) {
            Admission::Admitted(admitted) => admitted,
            Admission::Refused(res) => {
                return self.refused(res, head_request, body > 0 || close).await
            }
        };
        match self.read_body(body, server.timeouts.body_read).await {
            Ok(body) => *req.body_mut() = body,
            Err(BodyError::Late) => {
                let res = admitted.refuse(GatewayError::BodyTimeout);
                self.refuse(res, head_request).await;
                return false;
            }
            // `admitted`, dropped, is logged as the caller's leaving.
            Err(BodyError::Gone) => return false,
        }
        let call = self.service.serve(admitted, req);
        let Some(answer) = self.unless_gone(call, server.limits.max_head).await else {
            return false;
        };
        let mut res = match answer {
            Ok(res) => res,
            Err(never) => match never {},
        };
        let close = close || *self.stop.borrow();
        let plan = self.encode_head(&res, head_request, close);
        self.send(res.body_mut(), plan, close).await
    }

    /// Writes the answer `front` made to a request it refused from its head. The connection
    /// closes after it when the refusal [`ends_the_connection`], or when `close` (a body was
    /// announced and is not read, or the client asked to close): then it lingers. Else it stays
    /// open for the next request.
    async fn refused(&mut self, mut res: Response<Body>, head_request: bool, close: bool) -> bool {
        if close || ends_the_connection(res.status()) {
            self.refuse(res, head_request).await;
            return false;
        }
        let plan = self.encode_head(&res, head_request, false);
        self.send(res.body_mut(), plan, false).await
    }

    /// Reads the `content-length` body; pipelined bytes after it stay in the buffer. What did
    /// not come with the head must come within `timeout` (a timer only then). `front` admitted
    /// the length: it is within `limits.max_body`.
    async fn read_body(&mut self, len: u64, timeout: Duration) -> Result<Bytes, BodyError> {
        let len = usize::try_from(len).map_err(|_| BodyError::Gone)?;
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            let rest = async {
                while self.buf.len() < len {
                    match self.stream.read_buf(&mut self.buf).await {
                        Ok(n) if n > 0 => {}
                        _ => return Err(BodyError::Gone),
                    }
                }
                Ok(())
            };
            tokio::time::timeout(timeout, rest)
                .await
                .map_err(|_| BodyError::Late)??;
        }
        Ok(self.buf.split_to(len).freeze())
    }

    /// Awaits the answer, watching the socket meanwhile ([`poll_gone`], up to `cap` bytes of
    /// pipelined requests): when the client is gone, the request is dropped (its retries stop;
    /// `front` logs it as 499) and `None` is returned.
    async fn unless_gone<F: Future + Unpin>(
        &mut self,
        mut call: F,
        cap: usize,
    ) -> Option<F::Output> {
        let Conn { stream, buf, .. } = self;
        poll_fn(|cx| {
            if let Poll::Ready(answer) = Pin::new(&mut call).poll(cx) {
                return Poll::Ready(Some(answer));
            }
            poll_gone(stream, buf, cap, cx).map(|()| None)
        })
        .await
    }

    /// Writes an answer that ends the connection, with `connection: close`, then lingers.
    /// Answers a head that makes no request with its refusal, then closes (lingering).
    async fn refuse_head(&mut self, refusal: Refusal, limits: &Limits) {
        self.refuse(refusal.error(limits).into_response(), false)
            .await;
    }

    async fn refuse(&mut self, mut res: Response<Body>, head_request: bool) {
        let plan = self.encode_head(&res, head_request, true);
        self.send(res.body_mut(), plan, true).await;
        self.linger().await;
    }

    /// Lingers before the connection closes ([`linger::linger`]), as the first connection to
    /// be evicted when the listener needs room.
    async fn linger(&mut self) {
        let Conn {
            stream,
            buf,
            stop,
            ticket,
            ..
        } = self;
        let slot = ticket.slot();
        slot.lingering();
        let mut stop = stop.clone();
        let cut = async {
            tokio::select! {
                () = slot.evicted() => {}
                () = super::stopped(&mut stop) => {}
            }
        };
        linger::linger(stream, buf, cut).await;
    }
}
