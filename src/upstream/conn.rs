//! Connections to iDenfy: TCP without Nagle and with keepalive probes ([`KEEPALIVE`]), TLS
//! (ALPN `http/1.1`, SNI from the host) for `https`, and the buffers (and the attempt timer) each
//! connection keeps across the requests it carries.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use http::uri::{Scheme, Uri};
use rustls_pki_types::ServerName;
use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::GatewayError;

/// Initial size of a connection's read buffer: 8 KiB holds a JSON answer with its head.
const READ_BUF: usize = 8 * 1024;
/// Least room offered to a read: below it, the buffer grows (or is reclaimed) first.
const MIN_READ: usize = 1024;

/// TCP keepalive on every upstream connection: after 30 s without traffic, a probe every 10 s,
/// and the connection reset after 3 unanswered ones. A peer that vanished (a NAT or load
/// balancer that dropped the flow, a host gone) is found within a minute of silence, whether the
/// connection is idle in the pool or a streamed body is waiting on it; and the probes keep the
/// flow alive in middleboxes that drop idle ones (several minutes, usually).
#[cfg(any(target_os = "linux", target_os = "macos", target_os = "windows"))]
pub const KEEPALIVE: TcpKeepalive = TcpKeepalive::new()
    .with_time(Duration::from_secs(30))
    .with_interval(Duration::from_secs(10))
    .with_retries(3);
/// Elsewhere only the idle time can be set.
#[cfg(not(any(target_os = "linux", target_os = "macos", target_os = "windows")))]
pub const KEEPALIVE: TcpKeepalive = TcpKeepalive::new().with_time(Duration::from_secs(30));

/// A byte stream to iDenfy.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A connection and its buffers, kept across requests when the pool holds it.
pub struct Conn {
    pub stream: Stream,
    /// Bytes read and not yet consumed: empty whenever the connection is idle.
    pub buf: BytesMut,
    /// The request about to be written.
    pub out: Vec<u8>,
    /// Where the header lines of the response head being parsed are (reused).
    pub indices: Vec<crate::http1::response::HeaderIndices>,
    /// The bound of the attempt the connection carries. Kept and moved on ([`Conn::arm`]) rather
    /// than a new timer per attempt: a later deadline is a compare-and-swap, where a new timer
    /// is an insertion into tokio's timer wheel and a removal, each under its lock.
    timer: Pin<Box<Sleep>>,
}

impl Conn {
    fn new(stream: Stream) -> Self {
        Conn {
            stream,
            buf: BytesMut::with_capacity(READ_BUF),
            out: Vec::new(),
            indices: Vec::new(),
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        }
    }

    /// Sets the bound of the attempt about to use the connection: [`Conn::poll_expired`] is
    /// ready once it passes.
    pub fn arm(&mut self, bound: Instant) {
        self.timer.as_mut().reset(bound);
    }

    /// Whether the bound set by [`Conn::arm`] passed; else the task is woken when it does.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.timer.as_mut().poll(cx)
    }

    /// Whether the peer sent anything (EOF, bytes, a reset) since the connection went idle: it
    /// cannot carry a request then. Reads tokio's readiness (readable or read-closed, as
    /// `poll_read_ready` would) through `try_io` with an operation that does nothing: no
    /// syscall, and no waker stored or lock taken, as polling with a no-op waker would.
    pub fn is_readable(&self) -> bool {
        let tcp = match &self.stream {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        };
        tcp.try_io(Interest::READABLE, || Ok(())).is_ok()
    }

    /// Reads what the socket has into `buf`, with room for at least `want` bytes: `Ok(0)` at EOF.
    pub fn poll_read_more(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        let need = want.max(MIN_READ);
        if self.buf.capacity() - self.buf.len() < need {
            self.buf.reserve(need.max(READ_BUF));
        }
        std::pin::pin!(self.stream.read_buf(&mut self.buf)).poll(cx)
    }

    /// Writes the request in `out`, from byte `*at` on (advanced as it goes).
    pub fn poll_write_out(&mut self, cx: &mut Context<'_>, at: &mut usize) -> Poll<io::Result<()>> {
        poll_write_all(&mut self.stream, cx, &self.out, at)
    }

    /// Writes `data` from byte `*at` on (advanced as it goes).
    pub fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        data: &[u8],
        at: &mut usize,
    ) -> Poll<io::Result<()>> {
        poll_write_all(&mut self.stream, cx, data, at)
    }

    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
}

/// `write_all` as a poll function: what is written is remembered in `at`.
fn poll_write_all(
    stream: &mut Stream,
    cx: &mut Context<'_>,
    data: &[u8],
    at: &mut usize,
) -> Poll<io::Result<()>> {
    while *at < data.len() {
        let n = ready!(poll_write_some(stream, cx, &data[*at..]))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *at += n;
    }
    Poll::Ready(Ok(()))
}

/// One write. On a plain connection the send buffer almost always has room for a request: a
/// readiness-checked non-blocking write is tried first, and the async write (its readiness
/// poll and waker) only when the socket is full.
fn poll_write_some(
    stream: &mut Stream,
    cx: &mut Context<'_>,
    data: &[u8],
) -> Poll<io::Result<usize>> {
    if let Stream::Plain(tcp) = stream {
        match tcp.try_write(data) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return Poll::Ready(done),
        }
    }
    Pin::new(stream).poll_write(cx, data)
}

/// Opens connections to the upstream's host and port.
pub struct Connector {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

impl Connector {
    /// For `url`; `tls` is used when its scheme is `https`.
    pub fn new(
        url: &Uri,
        tls: rustls::ClientConfig,
        timeout: Duration,
    ) -> anyhow::Result<Connector> {
        let https = match url.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => anyhow::bail!("upstream.url must be http:// or https://"),
        };
        let host = url
            .host()
            .ok_or_else(|| anyhow::anyhow!("upstream.url has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let mut tls = tls;
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let name = ServerName::try_from(host.clone())?;
            Some((TlsConnector::from(Arc::new(tls)), name))
        } else {
            None
        };
        Ok(Connector {
            host,
            port,
            tls,
            timeout,
        })
    }

    /// A new connection, TLS handshake included, within the connect timeout.
    pub async fn connect(&self) -> Result<Conn, GatewayError> {
        match tokio::time::timeout(self.timeout, self.open()).await {
            Ok(Ok(stream)) => Ok(Conn::new(stream)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upstream connect failed");
                Err(GatewayError::UpstreamConnect)
            }
            Err(_) => Err(GatewayError::UpstreamConnect),
        }
    }

    async fn open(&self) -> io::Result<Stream> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        SockRef::from(&tcp).set_tcp_keepalive(&KEEPALIVE)?;
        match &self.tls {
            None => Ok(Stream::Plain(tcp)),
            Some((tls, name)) => {
                let stream = tls.connect(name.clone(), tcp).await?;
                Ok(Stream::Tls(Box::new(stream)))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn upstream_sockets_probe_a_silent_peer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tls = crate::upstream::tls_config(None).unwrap();
        let connector = Connector::new(&url.parse().unwrap(), tls, Duration::from_secs(1)).unwrap();
        let conn = connector.connect().await.unwrap();
        let Stream::Plain(tcp) = &conn.stream else {
            unreachable!("plain TCP to an http:// upstream")
        };
        let socket = SockRef::from(tcp);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            socket.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
    }
}
