//! A response body streamed from iDenfy's connection (one over 64 KiB, or one that runs to the
//! connection's end): frames as they are read, the connection back to the pool when the body
//! ends cleanly, closed when it breaks, stalls ([`StreamBound`]) or is dropped early.

use std::io;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use tokio::time::Instant;

use super::conn::Conn;
use super::pool::Pool;
use crate::body::Joined;
use crate::http1::chunked::{Decoded, Decoder};
use crate::http1::CodecError;

/// Room offered to each read of a streamed body: 16 KiB.
const STREAM_READ: usize = 16 * 1024;

/// What the read buffer holds of the body, decoded: `(data, done)`. `done`: the body ended.
pub fn take_buffered(
    decoder: &mut Decoder,
    buf: &mut BytesMut,
) -> Result<(Option<Bytes>, bool), CodecError> {
    // Several pieces (chunks) in the buffer are joined.
    let mut gathered = Joined::default();
    loop {
        let done = match decoder.decode(buf)? {
            Decoded::Data(data) => {
                gathered.push(data);
                continue;
            }
            Decoded::NeedMore => false,
            Decoded::Done => true,
        };
        return Ok((gathered.finish(), done));
    }
}

/// How long a streamed body may wait for its next bytes: no longer than `idle`
/// (`upstream.attempt_timeout`), and never past the request's deadline (which bounds the whole
/// request, its body included: a body still coming after it is cut at its next pause). A body
/// cut this way ends in an error: the caller, who has the head already, sees its connection
/// close before the body is whole, the one honest signal left.
#[derive(Debug, Clone, Copy)]
pub struct StreamBound {
    pub deadline: Option<Instant>,
    pub idle: Duration,
}

impl StreamBound {
    /// When a body waiting since `now` is cut; `None` only when no instant can say it.
    fn until(&self, now: Instant) -> Option<Instant> {
        match (now.checked_add(self.idle), self.deadline) {
            (Some(idle), Some(deadline)) => Some(idle.min(deadline)),
            (idle, deadline) => idle.or(deadline),
        }
    }
}

/// A body read from the connection as the caller polls it.
pub struct UpstreamBody {
    /// `None` once the body ended or broke.
    conn: Option<Conn>,
    decoder: Decoder,
    reusable: bool,
    pool: Pool,
    /// Data decoded before the body was handed over.
    first: Option<Bytes>,
    bound: StreamBound,
    /// The connection's timer is set for the wait under way (set when a read is first not
    /// ready, cleared by each read that is).
    armed: bool,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("decoder", &self.decoder)
            .field("open", &self.conn.is_some())
            .finish()
    }
}

impl UpstreamBody {
    pub fn new(
        conn: Conn,
        decoder: Decoder,
        reusable: bool,
        pool: Pool,
        first: Option<Bytes>,
        bound: StreamBound,
    ) -> Self {
        UpstreamBody {
            conn: Some(conn),
            decoder,
            reusable,
            pool,
            first,
            bound,
            armed: false,
        }
    }

    /// No body, and no length known: the answer to a `HEAD` whose upstream sent no
    /// `content-length`. Empty, and its size hint has no exact value, so that the listener
    /// writes no `content-length: 0` for it.
    pub fn unsized_empty(pool: Pool) -> Self {
        UpstreamBody {
            conn: None,
            // Never decoded (there is no connection): only its unknown remainder is read.
            decoder: Decoder::Eof(false),
            reusable: false,
            pool,
            first: None,
            bound: StreamBound {
                deadline: None,
                idle: Duration::ZERO,
            },
            armed: false,
        }
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match self.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => {
                    if self.decoder.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::Done) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => return Poll::Ready(Some(Err(self.fail(e)))),
            }
            let read = match conn.poll_read_more(cx, STREAM_READ) {
                Poll::Ready(read) => read,
                Poll::Pending => {
                    if !self.armed {
                        match self.bound.until(Instant::now()) {
                            Some(at) => conn.arm(at),
                            None => return Poll::Pending,
                        }
                        self.armed = true;
                    }
                    ready!(conn.poll_expired(cx));
                    return Poll::Ready(Some(Err(self.stalled())));
                }
            };
            self.armed = false;
            match read {
                Ok(0) => {
                    if let Err(e) = self.decoder.at_eof() {
                        return Poll::Ready(Some(Err(self.fail(e))));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.first.is_none() && (self.conn.is_none() || self.decoder.is_done())
    }

    pub fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().map_or(0, |b| b.len() as u64);
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(first + n),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(first);
                hint
            }
        }
    }

    /// The body ended: the connection goes back to the pool if it may carry another request.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.buf.is_empty() {
                self.pool.checkin(conn);
            }
        }
    }

    fn fail(&mut self, e: CodecError) -> io::Error {
        self.conn = None;
        io::Error::new(io::ErrorKind::InvalidData, e)
    }

    /// No byte came within the bound: the connection is closed, the body cut.
    #[cold]
    fn stalled(&mut self) -> io::Error {
        tracing::debug!("iDenfy's response body stalled; cut");
        self.conn = None;
        io::Error::new(io::ErrorKind::TimedOut, "response body stalled")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_waits_the_idle_bound_but_never_past_the_deadline() {
        let now = Instant::now();
        let idle = Duration::from_secs(15);
        let far = StreamBound {
            deadline: Some(now + Duration::from_secs(30)),
            idle,
        };
        assert_eq!(far.until(now), Some(now + idle));
        let near = StreamBound {
            deadline: Some(now + Duration::from_secs(2)),
            idle,
        };
        assert_eq!(near.until(now), Some(now + Duration::from_secs(2)));
        let none = StreamBound {
            deadline: None,
            idle,
        };
        assert_eq!(none.until(now), Some(now + idle));
        let endless = StreamBound {
            deadline: None,
            idle: Duration::MAX,
        };
        assert_eq!(endless.until(now), None);
    }
}
