//! A response body streamed from iDenfy's connection (a large or chunked one, or one that runs
//! to the connection's end): frames as they are read, the connection back to the pool when the
//! body ends cleanly, closed when it breaks or is dropped early.

use std::io;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use super::chunked::{Decoded, Decoder};
use super::codec::CodecError;
use super::conn::Conn;
use super::pool::Pool;
use crate::body::Joined;

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

/// A body read from the connection as the caller polls it.
pub struct UpstreamBody {
    /// `None` once the body ended or broke.
    conn: Option<Conn>,
    decoder: Decoder,
    reusable: bool,
    pool: Pool,
    /// Data decoded before the body was handed over.
    first: Option<Bytes>,
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
    ) -> Self {
        UpstreamBody {
            conn: Some(conn),
            decoder,
            reusable,
            pool,
            first,
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
            match ready!(conn.poll_read_more(cx, STREAM_READ)) {
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
}
