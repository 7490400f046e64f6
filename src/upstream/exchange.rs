//! One request on the wire, polled in the caller's task: take an idle connection (or open one),
//! write the request, read the response head; then read a small body whole, or hand the
//! connection to a streamed body. A reused connection the server had closed is retried once on
//! a new one.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Method, StatusCode};
use tokio::io::AsyncWriteExt;
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
}

impl From<Failure> for GatewayError {
    fn from(_: Failure) -> Self {
        GatewayError::UpstreamProtocol
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

    /// Sends `req` and reads the response head.
    pub async fn send(&self, req: &Outgoing<'_>, now: Instant) -> Result<Answer, GatewayError> {
        if let Some(conn) = self.pool.checkout(now) {
            match self.exchange(conn, req).await {
                Err(Failure::Unanswered) => {
                    tracing::debug!("idle upstream connection was closed; sending on a new one");
                }
                done => return done.map_err(GatewayError::from),
            }
        }
        let conn = self.connector.connect().await?;
        Ok(self.exchange(conn, req).await?)
    }

    async fn exchange(&self, mut conn: Conn, req: &Outgoing<'_>) -> Result<Answer, Failure> {
        if let Err(e) = write(&mut conn, &self.host, req).await {
            tracing::debug!(error = %e, "writing to iDenfy failed");
            return Err(Failure::Unanswered);
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

async fn write(conn: &mut Conn, host: &[u8], req: &Outgoing<'_>) -> std::io::Result<()> {
    let inline = codec::encode_request(
        &mut conn.out,
        req.method,
        req.target,
        host,
        req.headers,
        req.body,
    );
    conn.stream.write_all(&conn.out).await?;
    if !inline {
        conn.stream.write_all(req.body).await?;
    }
    conn.stream.flush().await
}

/// Reads up to the final response head.
async fn read_head(conn: &mut Conn, method: &Method) -> Result<ResponseHead, Failure> {
    let mut received = false;
    loop {
        match conn.read_more(0).await {
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
    /// else streamed from the connection.
    pub async fn into_body(self, pool: &Pool) -> Result<Body, GatewayError> {
        let Pending {
            mut conn,
            mut decoder,
            reusable,
        } = self;
        if let Decoder::Length(n @ 1..=SMALL_BODY) = decoder {
            let n = n as usize;
            while conn.buf.len() < n {
                let want = n - conn.buf.len();
                if conn.read_more(want).await.map_err(protocol)? == 0 {
                    return Err(protocol("connection closed inside a response body").into());
                }
            }
        }
        let (data, done) = take_buffered(&mut decoder, &mut conn.buf).map_err(protocol)?;
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
