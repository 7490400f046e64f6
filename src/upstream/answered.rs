//! An answer past its head, its body still (partly) on the connection: a small body read whole
//! within the attempt's bound (a `content-length` one up to 64 KiB, or a chunked one until it ends
//! or passes 64 KiB), or the rest handed to a streamed [`UpstreamBody`]. The connection goes back
//! to the pool only after a whole answer with nothing after it.

use std::task::{ready, Context, Poll};

use http::{HeaderMap, Response, StatusCode};

use super::body::{take_buffered, StreamBound, UpstreamBody};
use super::conn::Conn;
use super::exchange::{bounded, protocol, Failure};
use super::pool::Pool;
use crate::body::{Body, Joined};
use crate::headers::strip_hop_by_hop;
use crate::http1::chunked::{Chunked, Decoder};
use crate::http1::framing::Framing;
use crate::http1::response::ResponseHead;

/// Bodies up to 64 KiB are read whole before the answer is returned: iDenfy's JSON answers,
/// which the retry loop and dedup read anyway. A `content-length` body within it is read whole;
/// a chunked one is read ahead until it ends or passes it (its length is not known before).
const SMALL_BODY: u64 = 64 * 1024;

/// A response head; its body is still on the connection.
pub struct Answered {
    conn: Conn,
    decoder: Decoder,
    status: StatusCode,
    headers: HeaderMap,
    reusable: bool,
    /// What was decoded of a chunked body read ahead, and how many bytes.
    early: Joined,
    early_len: usize,
    /// No body and no length to pass on ([`Answered::new`]).
    no_length: bool,
}

impl Answered {
    /// The answer whose `head` was just read from `conn`.
    pub fn new(conn: Conn, head: ResponseHead) -> Self {
        let decoder = match head.framing {
            Framing::Empty => Decoder::Length(0),
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunked::default()),
            Framing::Eof => Decoder::Eof(false),
        };
        // No body, and none announced either (a `HEAD` answer without a length): the answer
        // passed on says nothing of a length rather than `content-length: 0`.
        let no_length = head.framing == Framing::Empty
            && !head.headers.contains_key(http::header::CONTENT_LENGTH);
        Answered {
            conn,
            decoder,
            status: head.status,
            headers: head.headers,
            reusable: head.reusable,
            early: Joined::default(),
            early_len: 0,
            no_length,
        }
    }

    /// Reads a small body whole, within the bound; other bodies are left to stream.
    pub fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        match self.decoder {
            Decoder::Length(n @ 1..=SMALL_BODY) => self.poll_length(cx, n as usize),
            Decoder::Chunked(_) => self.poll_chunked(cx),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Reads until the buffer holds the `n` bytes of a `content-length` body.
    fn poll_length(&mut self, cx: &mut Context<'_>, n: usize) -> Poll<Result<(), Failure>> {
        while self.conn.buf.len() < n {
            let want = n - self.conn.buf.len();
            ready!(self.poll_read(cx, want))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Reads a chunked body ahead, decoded, until it ends (then it is an answer read whole, as
    /// a small `content-length` one: inspected, replayable, cut by the attempt's bound) or more
    /// than [`SMALL_BODY`] of it is in hand (the rest streams).
    fn poll_chunked(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        loop {
            let (data, done) =
                take_buffered(&mut self.decoder, &mut self.conn.buf).map_err(protocol)?;
            if let Some(data) = data {
                self.early_len += data.len();
                self.early.push(data);
            }
            if done || self.early_len as u64 > SMALL_BODY {
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_read(cx, 0))?;
        }
    }

    /// Reads more of the body within the bound; the end of the connection inside it fails.
    fn poll_read(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<Result<(), Failure>> {
        let read = |conn: &mut Conn, cx: &mut Context<'_>| conn.poll_read_more(cx, want);
        match ready!(bounded(&mut self.conn, cx, read))? {
            Ok(0) => Poll::Ready(Err(protocol("connection closed inside a response body"))),
            Ok(_) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(protocol(e))),
        }
    }

    /// The response, hop-by-hop headers stripped: its body whole when it was small or already
    /// read (the connection goes back to `pool` if it may carry another request), else
    /// streamed from the connection within `bound`.
    pub fn into_response(self, pool: &Pool, bound: StreamBound) -> Result<Response<Body>, Failure> {
        let Answered {
            mut conn,
            mut decoder,
            status,
            headers,
            reusable,
            mut early,
            no_length,
            ..
        } = self;
        let (data, done) = take_buffered(&mut decoder, &mut conn.buf).map_err(protocol)?;
        if let Some(data) = data {
            early.push(data);
        }
        let data = early.finish();
        let body = if done {
            // Bytes after a whole answer are not the next one: the connection is not reused.
            if reusable && conn.buf.is_empty() {
                pool.checkin(conn);
            }
            match data {
                Some(data) => Body::full(data),
                None if no_length => Body::upstream(UpstreamBody::unsized_empty(pool.clone())),
                None => Body::empty(),
            }
        } else {
            let body = UpstreamBody::new(conn, decoder, reusable, pool.clone(), data, bound);
            Body::upstream(body)
        };
        let mut res = Response::new(body);
        *res.status_mut() = status;
        *res.headers_mut() = headers;
        strip_hop_by_hop(res.headers_mut());
        Ok(res)
    }
}
