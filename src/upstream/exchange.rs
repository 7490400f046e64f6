//! One request on one connection, polled in the caller's task: the request encoded into the
//! connection's buffer, written, the final response head read ([`Exchange`]); its body is then
//! [`super::answered`]'s. The attempt's [`Bound`] is enforced by the connection's own timer,
//! polled only when the I/O is not ready; a new connection is opened within it by a timer of its
//! own. [`super::attempt`] drives them.
//!
//! How a failure before the answer is told apart ([`Failure`]) decides whether the request may go
//! again: only one of which no byte was written ([`Failure::Unsent`]), or an idempotent one
//! ([`Outgoing::idempotent`]), is sent again without asking the retry loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderValue, Method, Request};
use tokio::time::Instant;

use super::answered::Answered;
use super::conn::{Conn, Connector};
use super::pool::Pool;
use crate::error::GatewayError;
use crate::http1::encode::{self, RequestHead};
use crate::http1::response::{self, HeaderIndices, ResponseHead};

/// What the exchange still needs of a request once it is encoded: the request itself is not
/// kept.
pub struct Outgoing {
    /// A `HEAD` answer has no body whatever its headers say.
    method: Method,
    /// The body, when it is too large to go in the head's buffer and is written after it.
    body: Option<Bytes>,
}

/// When an attempt must end (the head read, and a small body with it), and which error it ends
/// with if it does not.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub at: Instant,
    /// The request deadline comes first: `DeadlineExceeded`, else `UpstreamTimedOut`.
    pub deadline: bool,
}

impl Outgoing {
    /// Whether the request may be sent again without asking (RFC 9110 §9.2.2): `GET`, `HEAD`,
    /// `OPTIONS`, `TRACE`, `PUT`, `DELETE`. Every `POST` is not, iDenfy's `POST /api/v2/status`
    /// included: the gateway cannot tell which of iDenfy's POSTs act.
    pub fn idempotent(&self) -> bool {
        [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::TRACE,
            Method::PUT,
            Method::DELETE,
        ]
        .contains(&self.method)
    }
}

impl Bound {
    pub fn expired(&self) -> GatewayError {
        if self.deadline {
            GatewayError::DeadlineExceeded
        } else {
            GatewayError::UpstreamTimedOut
        }
    }
}

/// Why an exchange failed.
pub enum Failure {
    /// Writing failed before any byte of the request was written: the server cannot have seen
    /// it. On a reused connection, the server had closed it while idle.
    Unsent,
    /// The connection failed after (some of) the request was written and before any byte of a
    /// response. The server may have read the request whole and acted on it before closing (or
    /// it closed an idle connection as the request arrived: the two cannot be told apart).
    Unanswered,
    Protocol,
    /// The attempt's bound passed.
    Expired,
}

impl Failure {
    /// Whether a failure on a reused connection lets `req` go again, at once, on a new one:
    /// when nothing was written, or when the request is idempotent and nothing was answered.
    pub fn allows_resend(&self, req: &Outgoing) -> bool {
        match self {
            Failure::Unsent => true,
            Failure::Unanswered => req.idempotent(),
            Failure::Protocol | Failure::Expired => false,
        }
    }

    /// The attempt's error. Nothing written is a failure to reach iDenfy (`UpstreamConnect`,
    /// retried even for a token route); once written, a broken connection is
    /// `UpstreamProtocol`: "broke after send", which the retry policy never retries for a
    /// token route unless `retry.retry_token_after_send`.
    pub fn into_error(self, bound: &Bound) -> GatewayError {
        match self {
            Failure::Unsent => GatewayError::UpstreamConnect,
            Failure::Unanswered | Failure::Protocol => GatewayError::UpstreamProtocol,
            Failure::Expired => bound.expired(),
        }
    }
}

/// A new connection being opened, the request already encoded for it. Boxed: a TLS handshake's
/// future is over a kilobyte, and only a new connection needs it.
pub type Connecting = Pin<Box<dyn Future<Output = Result<Exchange, GatewayError>> + Send>>;

/// Connections to iDenfy and how a request is written on them.
pub struct Client {
    pool: Pool,
    /// Shared with the connections being opened.
    connector: Arc<Connector>,
    /// The `host` header: the upstream's authority, without a default port.
    host: Bytes,
}

impl Client {
    pub fn new(pool: Pool, connector: Connector, host: Bytes) -> Self {
        Client {
            pool,
            connector: Arc::new(connector),
            host,
        }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Encodes the request into `out` (a connection's buffer, or one for a new connection),
    /// with the account's `authorization`.
    pub fn encode(
        &self,
        out: &mut Vec<u8>,
        req: &Request<Bytes>,
        authorization: &HeaderValue,
    ) -> Outgoing {
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let (method, body) = (req.method(), req.body());
        let inline = encode::encode_request(
            out,
            RequestHead {
                method,
                target,
                host: &self.host,
                authorization,
                headers: req.headers(),
            },
            body,
        );
        Outgoing {
            method: method.clone(),
            body: (!inline).then(|| body.clone()),
        }
    }

    /// A new connection for the request encoded in `out`, opened within `bound`.
    pub fn connect(&self, out: Vec<u8>, bound: Bound) -> Connecting {
        let connector = Arc::clone(&self.connector);
        Box::pin(async move {
            let connect = tokio::time::timeout_at(bound.at, connector.connect());
            let mut conn = connect.await.map_err(|_| bound.expired())??;
            conn.out = out;
            Ok(Exchange::new(conn, bound))
        })
    }
}

/// A request on a connection, up to its response head.
pub struct Exchange {
    conn: Conn,
    /// Bytes of `conn.out` written.
    head: usize,
    /// Bytes of a body written after the head.
    body: usize,
    written: bool,
    /// Any byte of a response arrived.
    received: bool,
}

impl Exchange {
    /// The request is in `conn.out`; the connection's timer is set to the bound (one reset per
    /// attempt, no timer of its own).
    pub fn new(mut conn: Conn, bound: Bound) -> Self {
        conn.arm(bound.at);
        Exchange {
            conn,
            head: 0,
            body: 0,
            written: false,
            received: false,
        }
    }

    /// Writes the request, then reads up to the final response head.
    pub fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        req: &Outgoing,
    ) -> Poll<Result<ResponseHead, Failure>> {
        if !self.written {
            let (head, body) = (&mut self.head, &mut self.body);
            let write = |conn: &mut Conn, cx: &mut Context<'_>| {
                ready!(conn.poll_write_out(cx, head))?;
                if let Some(data) = &req.body {
                    ready!(conn.poll_write(cx, data, body))?;
                }
                conn.poll_flush(cx)
            };
            if let Err(e) = ready!(bounded(&mut self.conn, cx, write))? {
                let unsent = self.head == 0 && self.body == 0;
                return Poll::Ready(Err(write_failed(e, unsent)));
            }
            self.written = true;
        }
        loop {
            let read = |conn: &mut Conn, cx: &mut Context<'_>| conn.poll_read_more(cx, 0);
            match ready!(bounded(&mut self.conn, cx, read))? {
                Ok(0) | Err(_) if !self.received => return Poll::Ready(Err(Failure::Unanswered)),
                Ok(0) | Err(_) => {
                    let e = protocol("connection closed before a response head");
                    return Poll::Ready(Err(e));
                }
                Ok(_) => self.received = true,
            }
            let conn = &mut self.conn;
            if let Some(head) = take_head(&mut conn.buf, &mut conn.indices, &req.method)? {
                return Poll::Ready(Ok(head));
            }
        }
    }

    /// The exchange past its head, its body still (partly) on the connection.
    pub fn answered(self, head: ResponseHead) -> Answered {
        Answered::new(self.conn, head)
    }

    /// The encoded request, for a new connection to carry when this one failed unanswered.
    pub fn into_request(mut self) -> Vec<u8> {
        std::mem::take(&mut self.conn.out)
    }
}

/// `op` on the connection, unless it is not ready and the bound [`Conn::arm`] set passed
/// (`Failure::Expired`). The timer is polled only when `op` is not ready.
pub(super) fn bounded<T>(
    conn: &mut Conn,
    cx: &mut Context<'_>,
    op: impl FnOnce(&mut Conn, &mut Context<'_>) -> Poll<T>,
) -> Poll<Result<T, Failure>> {
    match op(conn, cx) {
        Poll::Ready(done) => Poll::Ready(Ok(done)),
        Poll::Pending => conn.poll_expired(cx).map(|()| Err(Failure::Expired)),
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
        let Some(raw) = response::parse_head(buf, indices).map_err(protocol)? else {
            return Ok(None);
        };
        if raw.is_interim() {
            buf.advance(raw.len);
            continue;
        }
        let head = buf.split_to(raw.len).freeze();
        return response::build_head(&head, &raw, indices, method)
            .map(Some)
            .map_err(protocol);
    }
}

// Cold and out of line, as the other failure paths: each logging site is a few hundred bytes of
// code, which would otherwise sit in the middle of the poll function every request runs.
#[cold]
#[inline(never)]
pub(super) fn protocol(e: impl std::fmt::Display) -> Failure {
    tracing::debug!(error = %e, "unusable response from iDenfy");
    Failure::Protocol
}

#[cold]
#[inline(never)]
fn write_failed(e: std::io::Error, unsent: bool) -> Failure {
    tracing::debug!(error = %e, unsent, "writing to iDenfy failed");
    if unsent {
        Failure::Unsent
    } else {
        Failure::Unanswered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(method: Method) -> Outgoing {
        Outgoing { method, body: None }
    }

    #[test]
    fn only_an_unwritten_or_idempotent_request_goes_again_on_a_new_connection() {
        for method in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
        ] {
            assert!(
                Failure::Unanswered.allows_resend(&outgoing(method.clone())),
                "{method}"
            );
        }
        for method in [Method::POST, Method::PATCH] {
            let req = outgoing(method.clone());
            assert!(!Failure::Unanswered.allows_resend(&req), "{method}");
            assert!(Failure::Unsent.allows_resend(&req), "{method}");
        }
        let get = outgoing(Method::GET);
        assert!(!Failure::Protocol.allows_resend(&get));
        assert!(!Failure::Expired.allows_resend(&get));
    }

    #[tokio::test(start_paused = true)]
    async fn a_written_request_that_broke_is_broke_after_send_and_an_unwritten_one_never_left() {
        let bound = Bound {
            at: Instant::now(),
            deadline: false,
        };
        assert!(matches!(
            Failure::Unanswered.into_error(&bound),
            GatewayError::UpstreamProtocol
        ));
        assert!(matches!(
            Failure::Unsent.into_error(&bound),
            GatewayError::UpstreamConnect
        ));
    }
}
