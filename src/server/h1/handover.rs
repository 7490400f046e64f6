//! The connections the loop hands to hyper ([`super::Server::fallback`]): the same slots,
//! idle timeout, close after a 401 and lingering close as on the loop, where hyper does not
//! give them by itself.
//!
//! - [`Watched`], the service hyper calls, marks the connection busy from the moment hyper hands
//!   it a request until the answer's head is ready (several at once on h2c), and idle after.
//!   An evicted or idle connection is shut down gracefully: hyper finishes what it has begun.
//! - [`Watched`] also adds `connection: close` to every answer over HTTP/1.x: hyper serves one
//!   request of a connection handed over (a chunked or `Expect` upload, HTTP/1.0), whose head
//!   the loop has already read and bounded, and closes after its answer. A second head on that
//!   connection would be read by hyper alone: bounded by its read buffer rather than by
//!   `listen.max_header_bytes`, and refused, if malformed, with hyper's own empty 400 instead of
//!   iDenfy's error shape. A client that sends another request opens a new connection, served
//!   by the loop. (On h2c a connection header is not allowed, and hyper's h2 reads every head.)
//! - [`idle_for`] resolves once the connection has been idle for `listen.idle_timeout`: an h2c
//!   connection, as an HTTP/1 one closes after its answer.
//! - [`Handed`], the socket hyper is given, lingers ([`super::linger`]) when hyper drops it, in
//!   a task of its own that still holds the connection's slot: hyper closes a connection whose
//!   request body it did not read (a 401 or 413 to an upload), and without lingering the client
//!   would see a reset instead of the answer.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::header::{HeaderValue, CONNECTION};
use http::{Request, Response, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::Service;

use super::linger::linger;
use super::Transport;
use crate::body::Body;
use crate::server::slots::{Slot, Ticket};

/// The service of a connection handed to hyper: see the module doc.
#[derive(Clone)]
pub struct Watched<S> {
    inner: S,
    conn: Arc<InFlight>,
}

/// The requests of one connection being served.
struct InFlight {
    slot: Arc<Slot>,
    count: AtomicUsize,
}

impl<S> Watched<S> {
    pub fn new(inner: S, slot: Arc<Slot>) -> Self {
        Watched {
            inner,
            conn: Arc::new(InFlight {
                slot,
                count: AtomicUsize::new(0),
            }),
        }
    }
}

impl<S, B> Service<Request<B>> for Watched<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let http1 = req.version() < Version::HTTP_2;
        let busy = Busy::enter(self.conn.clone());
        let call = self.inner.call(req);
        Box::pin(async move {
            let mut res = call.await?;
            drop(busy);
            if http1 {
                res.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok(res)
        })
    }
}

/// One request of the connection being served: busy while any is.
struct Busy(Arc<InFlight>);

impl Busy {
    fn enter(conn: Arc<InFlight>) -> Self {
        if conn.count.fetch_add(1, Ordering::AcqRel) == 0 {
            conn.slot.busy();
        }
        Busy(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // Two h2c streams ending and starting at once may leave the connection marked idle
        // while one is served: evicting it then only asks hyper to finish, and close.
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.slot.idle(Instant::now());
        }
    }
}

/// Resolves once the connection has been idle for `timeout`.
pub async fn idle_for(slot: &Slot, timeout: Duration) {
    loop {
        let now = Instant::now();
        let at = match slot.idle_since() {
            Some(since) => since.checked_add(timeout),
            None => now.checked_add(timeout),
        };
        let Some(at) = at else {
            // Past what an `Instant` holds: never.
            return std::future::pending().await;
        };
        if at <= now && slot.idle_since().is_some() {
            return;
        }
        tokio::time::sleep_until(at).await;
    }
}

/// A socket handed to hyper, with its slot: when hyper drops it, it lingers (in a task of its
/// own) before it closes and gives its slot back.
pub struct Handed<T: Transport> {
    /// `None` only once dropped.
    inner: Option<(T, Ticket)>,
    stop: watch::Receiver<bool>,
}

impl<T: Transport> Handed<T> {
    pub fn new(stream: T, ticket: Ticket, stop: watch::Receiver<bool>) -> Self {
        Handed {
            inner: Some((stream, ticket)),
            stop,
        }
    }

    fn stream(&mut self) -> io::Result<Pin<&mut T>> {
        match &mut self.inner {
            Some((stream, _)) => Ok(Pin::new(stream)),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }
}

impl<T: Transport> Drop for Handed<T> {
    fn drop(&mut self) {
        let Some((mut stream, ticket)) = self.inner.take() else {
            return;
        };
        // Not while the runtime itself is going away: the socket just closes.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut stop = self.stop.clone();
        runtime.spawn(async move {
            let slot = ticket.slot();
            slot.lingering();
            let cut = async {
                tokio::select! {
                    () = slot.evicted() => {}
                    () = crate::server::stopped(&mut stop) => {}
                }
            };
            linger(&mut stream, &mut BytesMut::new(), cut).await;
            drop(ticket);
        });
    }
}

impl<T: Transport> AsyncRead for Handed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_read(cx, buf)
    }
}

impl<T: Transport> AsyncWrite for Handed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream()?.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stream()?.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|(stream, _)| stream.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream()?.poll_shutdown(cx)
    }
}
