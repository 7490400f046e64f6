//! The proxy listener's HTTP/1.1 connection loop, in front of [`crate::front`]: the plain request
//! (HTTP/1.1, no body or a `content-length` one within `limits.max_body`) is read, handed to the
//! stack and answered here, keep-alive and pipelining included. Anything else (h2c, HTTP/1.0,
//! chunked or `expect` bodies, upgrades, oversized bodies…) goes to hyper with the bytes already
//! read, at a request boundary ([`head::Parsed::Fallback`]).
//!
//! Per request: no task, no channel, no timer unless a head arrives in pieces, and a whole
//! answer in one write. The wire format is in [`head`] and [`encode`].

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;

use crate::body::Body;
use crate::stack::App;

mod encode;
mod head;
mod rewind;

use encode::{Framing, Plan, CRLF, LAST_CHUNK};
pub use head::Limits;
use head::{HeaderIndices, Parsed, Refusal};
use rewind::Rewind;

/// The body of a request the loop read: whole, as the stack reads it anyway.
pub type RequestBody = Full<Bytes>;

/// Initial size of a connection's read buffer: 8 KiB holds a usual request, body included.
const READ_BUF: usize = 8 * 1024;
/// Least room offered to a read: below it, the buffer grows (or is reclaimed) first.
const MIN_READ: usize = 1024;
/// Body data up to 16 KiB is copied behind the head into the write buffer; larger data is
/// written beside it (one vectored write), not copied.
const INLINE_BODY: usize = 16 * 1024;
/// Body frames ready one after another are gathered up to 32 KiB, then written.
const GATHER: usize = 32 * 1024;
/// After a refusal, how long and how much of what the client still sends is read and dropped
/// before the connection closes ([`Conn::linger`]).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
/// A write buffer grown past 64 KiB (a very large head) is let go after its response.
const MAX_KEPT_OUT: usize = 64 * 1024;

/// What every connection of the proxy listener shares.
pub struct Server<S> {
    service: S,
    limits: Limits,
    header_read_timeout: Duration,
    /// A body must arrive within this of its head (`listen.body_read_timeout`).
    body_read_timeout: Duration,
    /// Serves the connections handed over.
    hyper: auto::Builder<TokioExecutor>,
}

/// One connection and its buffers, kept across its requests.
struct Conn<S> {
    stream: TcpStream,
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
}

type Stopping = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A request read whole, and whether its client asked to close the connection after it.
type Received = (Request<RequestBody>, bool);

/// Why the loop serves no further request on a connection.
enum Stop {
    /// hyper serves the connection from here.
    Fallback,
    /// Answered with an error, then closed.
    Refuse(Refusal),
    /// Closed: EOF, an I/O error, the header-read timeout, or shutdown while idle.
    Close,
}

impl<S: App> Server<S> {
    pub fn new(
        service: S,
        limits: Limits,
        header_read_timeout: Duration,
        body_read_timeout: Duration,
        hyper: auto::Builder<TokioExecutor>,
    ) -> Self {
        Server {
            service,
            limits,
            header_read_timeout,
            body_read_timeout,
            hyper,
        }
    }

    /// Serves an accepted connection until it closes, or until `stop` turns true (an idle
    /// connection closes at once; a request being served is answered, with `connection:
    /// close`).
    pub async fn serve_connection(self: Arc<Self>, stream: TcpStream, stop: watch::Receiver<bool>) {
        let mut conn = Conn {
            stream,
            buf: BytesMut::with_capacity(READ_BUF),
            out: Vec::new(),
            indices: Vec::new(),
            service: self.service.clone(),
            stopping: Box::pin(stopped_owned(stop.clone())),
            stopping_waker: None,
            stop,
        };
        // The first head is due within the timeout from accept; later ones from their first byte.
        let mut deadline = Some(self.deadline());
        loop {
            match conn.next_request(&self, deadline.take()).await {
                Ok((req, close)) => {
                    if !conn.respond(req, close).await {
                        break;
                    }
                }
                Err(Stop::Fallback) => return self.fallback(conn).await,
                Err(Stop::Refuse(refusal)) => {
                    conn.refuse(refusal, &self.limits).await;
                    break;
                }
                Err(Stop::Close) => break,
            }
        }
        let _ = conn.stream.shutdown().await;
    }

    fn deadline(&self) -> Instant {
        let now = Instant::now();
        now.checked_add(self.header_read_timeout)
            .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
    }

    /// Hands the connection to hyper, the bytes read so far first. hyper drains it on `stop`.
    async fn fallback(&self, conn: Conn<S>) {
        let Conn {
            stream,
            buf,
            mut stop,
            ..
        } = conn;
        let io = TokioIo::new(Rewind::new(stream, buf.freeze()));
        let service = TowerToHyperService::new(self.service.clone());
        let mut conn = pin!(self.hyper.serve_connection(io, service));
        tokio::select! {
            // hyper first: it takes in the request already read before it is told to drain.
            biased;
            _ = conn.as_mut() => return,
            _ = super::stopped(&mut stop) => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }
}

/// Resolves once the stop flag is set, owning its receiver.
async fn stopped_owned(mut stop: watch::Receiver<bool>) {
    super::stopped(&mut stop).await;
}

/// Polls `stopping` only when it may have changed: when something was sent on `stop` (after the
/// receiver's own version: a send the clone saw already is caught by the first poll), or when
/// the task's waker is not the one it holds. Otherwise it is pending and wakes this task on a
/// send; polling it again would only take the channel's waiter lock, once per request.
fn poll_stopping(
    stopping: &mut Stopping,
    polled_with: &mut Option<Waker>,
    stop: &watch::Receiver<bool>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let same_waker = polled_with
        .as_ref()
        .is_some_and(|w| w.will_wake(cx.waker()));
    if same_waker && matches!(stop.has_changed(), Ok(false)) {
        return Poll::Pending;
    }
    if !same_waker {
        *polled_with = Some(cx.waker().clone());
    }
    stopping.as_mut().poll(cx)
}

/// Takes the request at the start of `buf` when all its head is there. Not async: the header
/// positions live on the stack only while the head is parsed.
fn take_request(
    buf: &mut BytesMut,
    indices: &mut Vec<HeaderIndices>,
    limits: &Limits,
) -> Result<Option<(Request<RequestBody>, u64, bool)>, Stop> {
    match head::parse(buf, limits, indices) {
        Parsed::Partial => Ok(None),
        Parsed::Fallback => Err(Stop::Fallback),
        Parsed::Refused(refusal) => Err(Stop::Refuse(refusal)),
        Parsed::Plain(raw) => match head::take(buf, &raw, indices) {
            Ok(req) => Ok(Some((req, raw.body, raw.close))),
            Err(refusal) => Err(Stop::Refuse(refusal)),
        },
    }
}

impl<S: App> Conn<S> {
    /// Reads the next request, head and body.
    async fn next_request(
        &mut self,
        server: &Server<S>,
        mut deadline: Option<Instant>,
    ) -> Result<Received, Stop> {
        loop {
            if !self.buf.is_empty() {
                match take_request(&mut self.buf, &mut self.indices, &server.limits) {
                    Ok(Some((mut req, len, close))) => {
                        // The body goes into the request built with an empty one: the request
                        // is not moved into another future and rebuilt around its body.
                        let body = self.read_body(len, server.body_read_timeout).await?;
                        *req.body_mut() = Full::new(body);
                        return Ok((req, close));
                    }
                    Ok(None) => {}
                    Err(stop) => return Err(stop),
                }
                deadline.get_or_insert_with(|| server.deadline());
            }
            if !self.fill(deadline).await {
                return Err(Stop::Close);
            }
        }
    }

    /// Reads more of a head: `false` at EOF, on an error, past the deadline, or on `stop` while
    /// no byte of the head has come.
    async fn fill(&mut self, deadline: Option<Instant>) -> bool {
        if self.buf.capacity() - self.buf.len() < MIN_READ {
            self.buf.reserve(READ_BUF);
        }
        let idle = self.buf.is_empty();
        let read = self.stream.read_buf(&mut self.buf);
        let stopping = poll_fn(|cx| {
            poll_stopping(&mut self.stopping, &mut self.stopping_waker, &self.stop, cx)
        });
        let read = match deadline {
            None => tokio::select! {
                biased;
                read = read => read,
                () = stopping => return false,
            },
            Some(at) if idle => tokio::select! {
                biased;
                read = read => read,
                () = stopping => return false,
                _ = tokio::time::sleep_until(at) => return false,
            },
            Some(at) => match tokio::time::timeout_at(at, read).await {
                Ok(read) => read,
                Err(_) => return false,
            },
        };
        matches!(read, Ok(n) if n > 0)
    }

    /// Reads the `content-length` body; pipelined bytes after it stay in the buffer. What did
    /// not come with the head must come within `timeout` (a timer only then): 408 after it.
    async fn read_body(&mut self, len: u64, timeout: Duration) -> Result<Bytes, Stop> {
        // At most `limits.max_body`, checked by the parser.
        let len = usize::try_from(len).map_err(|_| Stop::Close)?;
        if self.buf.len() < len {
            self.buf.reserve(len - self.buf.len());
            let rest = async {
                while self.buf.len() < len {
                    match self.stream.read_buf(&mut self.buf).await {
                        Ok(n) if n > 0 => {}
                        _ => return Err(Stop::Close),
                    }
                }
                Ok(())
            };
            tokio::time::timeout(timeout, rest)
                .await
                .map_err(|_| Stop::Refuse(Refusal::BodyTimeout))??;
        }
        Ok(self.buf.split_to(len).freeze())
    }

    /// Serves one request and writes its answer: `false` when the connection closes after it.
    async fn respond(&mut self, req: Request<RequestBody>, close: bool) -> bool {
        let head_request = req.method() == Method::HEAD;
        let service = &mut self.service;
        let ready = poll_fn(|cx| Service::<Request<RequestBody>>::poll_ready(service, cx)).await;
        let mut res = match ready {
            Ok(()) => match self.service.call(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            },
            Err(never) => match never {},
        };
        let close = close || *self.stop.borrow();
        let plan = self.encode_head(&res, head_request, close);
        self.send(res.body_mut(), plan, close).await
    }

    /// Puts the head of `res` into `out`, and says how its body is written. The response stays
    /// where it is and its body is lent to [`Conn::send`]: it is not copied from future to
    /// future on its way to the socket.
    fn encode_head(&mut self, res: &Response<Body>, head_request: bool, close: bool) -> Plan {
        let (status, headers) = (res.status(), res.headers());
        let plan = encode::plan(status, head_request, &res.body().size_hint(), headers);
        encode::encode_head(&mut self.out, status, headers, plan.framing, close);
        plan
    }

    /// Writes the head in `out`, then `body` as `plan` says; `false` when the connection is to
    /// close after it (or broke).
    async fn send(&mut self, body: &mut Body, plan: Plan, close: bool) -> bool {
        let written = if plan.body {
            self.write_body(body, plan.framing).await
        } else {
            // Let go of what the body holds (an upstream connection) before writing.
            *body = Body::empty();
            self.write_out().await
        };
        if self.out.capacity() > MAX_KEPT_OUT {
            self.out = Vec::new();
        }
        written && !close
    }

    /// Writes the body behind the head already in `out`: the frames ready now together, each
    /// later one as it comes. `false` when the body broke or did not match its length.
    async fn write_body(&mut self, body: &mut Body, framing: Framing) -> bool {
        let chunked = framing == Framing::Chunked;
        let mut left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let mut body = Pin::new(body);
        loop {
            let next = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    if !self.write_out().await {
                        return false;
                    }
                    body.frame().await
                }
            };
            let data = match next {
                None => break,
                // The head (and what came of the body) still goes out: the caller learns the
                // status, and the close before the body's end tells it the body broke.
                Some(Err(_)) => {
                    self.write_out().await;
                    return false;
                }
                Some(Ok(frame)) => frame.into_data().unwrap_or_default(),
            };
            if !chunked {
                let Some(rest) = left.checked_sub(data.len() as u64) else {
                    return false;
                };
                left = rest;
            }
            if !data.is_empty() && !self.push_data(&data, chunked).await {
                return false;
            }
            if body.is_end_stream() {
                break;
            }
        }
        if chunked {
            self.out.extend_from_slice(LAST_CHUNK);
        } else if left != 0 {
            return false;
        }
        self.write_out().await
    }

    /// Adds body data (a chunk when `chunked`) behind what `out` holds; large data is written
    /// at once with it.
    async fn push_data(&mut self, data: &[u8], chunked: bool) -> bool {
        if chunked {
            encode::push_chunk_size(&mut self.out, data.len());
        }
        if data.len() <= INLINE_BODY {
            self.out.extend_from_slice(data);
        } else if !self.write_out_with(data).await {
            return false;
        }
        if chunked {
            self.out.extend_from_slice(CRLF);
        }
        self.out.len() < GATHER || self.write_out().await
    }

    async fn refuse(&mut self, refusal: Refusal, limits: &Limits) {
        let mut res = refusal.error(limits).into_response();
        let plan = self.encode_head(&res, false, true);
        self.send(res.body_mut(), plan, true).await;
        self.linger().await;
    }

    /// After a refusal the client may still be sending what was refused. Closing with those
    /// bytes unread makes the kernel reset the connection, and the client can lose the answer
    /// in flight; so the write side is shut first, and what still comes is read and dropped,
    /// for a bounded time and amount (nginx's "lingering close").
    async fn linger(&mut self) {
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            let mut dropped = 0;
            while dropped < LINGER_BYTES {
                self.buf.clear();
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => dropped += n,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    }

    /// Writes what `out` holds. The send buffer almost always has room for an answer: a
    /// readiness-checked non-blocking write is tried first, and the async write (its future,
    /// readiness poll and waker) is only for what it leaves.
    async fn write_out(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let written = match self.stream.try_write(&self.out) {
            Ok(n) if n == self.out.len() => true,
            // What `write_all` makes of a write of nothing: `WriteZero`.
            Ok(0) => false,
            Ok(n) => self.stream.write_all(&self.out[n..]).await.is_ok(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stream.write_all(&self.out).await.is_ok()
            }
            Err(_) => false,
        };
        self.out.clear();
        written
    }

    /// Writes what `out` holds, then `data`, in as few writes as the socket takes.
    async fn write_out_with(&mut self, mut data: &[u8]) -> bool {
        let mut out = &self.out[..];
        while !out.is_empty() {
            let slices = [IoSlice::new(out), IoSlice::new(data)];
            match self.stream.write_vectored(&slices).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n < out.len() => out = &out[n..],
                Ok(n) => {
                    data = &data[n - out.len()..];
                    out = &[];
                }
            }
        }
        self.out.clear();
        self.stream.write_all(data).await.is_ok()
    }
}
