//! One request on the wire, polled in the caller's task: take an idle connection (or open one),
//! write the request, read the response head; then read a small body whole, or hand the
//! connection to a streamed body. A reused connection the server had closed is retried once on
//! a new one. The attempt's [`Bound`] is enforced here: by the connection's own timer while it
//! is read or written, by a timer of its own while a new connection is opened.

use std::future::poll_fn;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};
use tokio::time::Instant;

use super::body::{take_buffered, UpstreamBody};
use super::chunked::{Chunked, Decoder};
use super::codec::{self, Framing, HeaderIndices, ResponseHead};
use super::conn::{Conn, Connector};
use super::pool::Pool;
use crate::body::Body;
use crate::error::GatewayError;

/// Bodies up to 64 KiB with a `content-length` are read whole before the answer is returned:
/// iDenfy's JSON answers, which the retry loop and dedup read anyway.
const SMALL_BODY: u64 = 64 * 1024;

/// The request as it goes out.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    /// Path and query.
    pub target: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// When an attempt must end (the head read, and a small body with it), and its error if it
/// does not.
pub struct Bound {
    pub at: Instant,
    /// `UpstreamTimedOut` or `DeadlineExceeded`.
    pub expired: GatewayError,
}

/// A response head; its body is still on the connection.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Pending,
}

/// The body of an [`Answer`], not read yet.
pub struct Pending {
    conn: Conn,
    decoder: Decoder,
    reusable: bool,
}

/// Why an exchange failed.
enum Failure {
    /// The connection failed before any byte of a response: on a reused connection, the server
    /// had closed it while idle and processed nothing.
    Unanswered,
    Protocol,
    /// The attempt's bound passed.
    Expired,
}

impl Failure {
    fn into_error(self, bound: &Bound) -> GatewayError {
        match self {
            Failure::Unanswered | Failure::Protocol => GatewayError::UpstreamProtocol,
            Failure::Expired => bound.expired.clone(),
        }
    }
}

/// Connections to iDenfy and the exchanges on them.
pub struct Client {
    pool: Pool,
    connector: Connector,
    /// The `host` header: the upstream's authority, without a default port.
    host: Bytes,
}

impl Client {
    pub fn new(pool: Pool, connector: Connector, host: Bytes) -> Self {
        Client {
            pool,
            connector,
            host,
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Sends `req` and reads the response head, within `bound`.
    pub async fn send(
        &self,
        req: &Outgoing<'_>,
        now: Instant,
        bound: &Bound,
    ) -> Result<Answer, GatewayError> {
        if let Some(conn) = self.pool.checkout(now) {
            match self.exchange(conn, req, bound.at).await {
                Err(Failure::Unanswered) => {
                    tracing::debug!("idle upstream connection was closed; sending on a new one");
                }
                done => return done.map_err(|f| f.into_error(bound)),
            }
        }
        // Boxed: a TLS handshake's future is over a kilobyte, and would otherwise be part of
        // (and moved with) every attempt's future, though only a new connection needs it.
        let connect = Box::pin(tokio::time::timeout_at(bound.at, self.connector.connect()));
        let conn = connect.await.map_err(|_| bound.expired.clone())??;
        self.exchange(conn, req, bound.at)
            .await
            .map_err(|f| f.into_error(bound))
    }

    async fn exchange(
        &self,
        mut conn: Conn,
        req: &Outgoing<'_>,
        bound: Instant,
    ) -> Result<Answer, Failure> {
        conn.arm(bound);
        match write(&mut conn, &self.host, req).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "writing to iDenfy failed");
                return Err(Failure::Unanswered);
            }
            Err(expired) => return Err(expired),
        }
        let head = read_head(&mut conn, req.method).await?;
        let decoder = match head.framing {
            Framing::Empty => Decoder::Length(0),
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunked::default()),
            Framing::Eof => Decoder::Eof(false),
        };
        Ok(Answer {
            status: head.status,
            headers: head.headers,
            body: Pending {
                conn,
                decoder,
                reusable: head.reusable,
            },
        })
    }
}

/// `op` on the connection until it is ready, unless the bound [`Conn::arm`] set passes first
/// (`Failure::Expired`). The timer is polled only when `op` is not ready.
async fn bounded<T>(
    conn: &mut Conn,
    mut op: impl FnMut(&mut Conn, &mut Context<'_>) -> Poll<T>,
) -> Result<T, Failure> {
    poll_fn(|cx| match op(conn, cx) {
        Poll::Ready(done) => Poll::Ready(Ok(done)),
        Poll::Pending => conn.poll_expired(cx).map(|()| Err(Failure::Expired)),
    })
    .await
}

/// Writes the request: `Err` when the bound passed, `Ok(Err)` when the connection failed.
async fn write(
    conn: &mut Conn,
    host: &[u8],
    req: &Outgoing<'_>,
) -> Result<std::io::Result<()>, Failure> {
    let inline = codec::encode_request(
        &mut conn.out,
        req.method,
        req.target,
        host,
        req.headers,
        req.body,
    );
    let (mut head, mut body) = (0, 0);
    bounded(conn, |conn, cx| {
        std::task::ready!(conn.poll_write_out(cx, &mut head))?;
        if !inline {
            std::task::ready!(conn.poll_write(cx, req.body, &mut body))?;
        }
        conn.poll_flush(cx)
    })
    .await
}

/// Reads what the socket has into the connection's buffer (room for `want` more bytes at
/// least), within the bound.
async fn read_more(conn: &mut Conn, want: usize) -> Result<std::io::Result<usize>, Failure> {
    bounded(conn, |conn, cx| conn.poll_read_more(cx, want)).await
}

/// Reads up to the final response head.
async fn read_head(conn: &mut Conn, method: &Method) -> Result<ResponseHead, Failure> {
    let mut received = false;
    loop {
        match read_more(conn, 0).await? {
            Ok(0) | Err(_) if !received => return Err(Failure::Unanswered),
            Ok(0) | Err(_) => return Err(protocol("connection closed before a response head")),
            Ok(_) => received = true,
        }
        if let Some(head) = take_head(&mut conn.buf, &mut conn.indices, method)? {
            return Ok(head);
        }
    }
}

/// The final response head, when `buf` holds all of it; 1xx interim answers are skipped.
/// `indices` is the connection's scratch list of header positions.
fn take_head(
    buf: &mut BytesMut,
    indices: &mut Vec<HeaderIndices>,
    method: &Method,
) -> Result<Option<ResponseHead>, Failure> {
    loop {
        let Some(raw) = codec::parse_head(buf, indices).map_err(protocol)? else {
            return Ok(None);
        };
        if raw.is_interim() {
            buf.advance(raw.len);
            continue;
        }
        let head = buf.split_to(raw.len).freeze();
        return codec::build_head(&head, &raw, indices, method)
            .map(Some)
            .map_err(protocol);
    }
}

fn protocol(e: impl std::fmt::Display) -> Failure {
    tracing::debug!(error = %e, "unusable response from iDenfy");
    Failure::Protocol
}

impl Pending {
    /// The body: whole when it is small or already read (the connection goes back to `pool`),
    /// within `bound`, else streamed from the connection.
    pub async fn into_body(self, pool: &Pool, bound: &Bound) -> Result<Body, GatewayError> {
        let Pending {
            mut conn,
            mut decoder,
            reusable,
        } = self;
        if let Decoder::Length(n @ 1..=SMALL_BODY) = decoder {
            let n = n as usize;
            while conn.buf.len() < n {
                let want = n - conn.buf.len();
                let read = read_more(&mut conn, want).await;
                match read.map_err(|f| f.into_error(bound))? {
                    Ok(0) => return Err(body_cut(bound)),
                    Ok(_) => {}
                    Err(e) => return Err(protocol(e).into_error(bound)),
                }
            }
        }
        let (data, done) = take_buffered(&mut decoder, &mut conn.buf)
            .map_err(|e| protocol(e).into_error(bound))?;
        if !done {
            let body = UpstreamBody::new(conn, decoder, reusable, pool.clone(), data);
            return Ok(Body::upstream(body));
        }
        if reusable && conn.buf.is_empty() {
            pool.checkin(conn);
        }
        Ok(data.map_or_else(Body::empty, Body::full))
    }
}

fn body_cut(bound: &Bound) -> GatewayError {
    protocol("connection closed inside a response body").into_error(bound)
}
