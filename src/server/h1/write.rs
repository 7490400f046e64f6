//! The answers of the loop on the wire: the head encoded into the connection's write buffer
//! ([`super::encode`]), then the body as its framing says, in as few writes as the socket takes.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;

use http::Response;
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;

use super::{Conn, Transport, GATHER, INLINE_BODY, MAX_KEPT_OUT};
use crate::body::Body;
use crate::http1::encode::{self, Plan, CRLF, LAST_CHUNK};
use crate::http1::framing::Framing;

impl<S, T: Transport> Conn<S, T> {
    /// Puts the head of `res` into `out`, and says how its body is written. The response stays
    /// where it is and its body is lent to [`Conn::send`]: it is not copied from future to
    /// future on its way to the socket.
    pub(super) fn encode_head(
        &mut self,
        res: &Response<Body>,
        head_request: bool,
        close: bool,
    ) -> Plan {
        let (status, headers) = (res.status(), res.headers());
        let plan = encode::plan(status, head_request, &res.body().size_hint(), headers);
        encode::encode_head(&mut self.out, status, headers, plan.framing, close);
        plan
    }

    /// Writes the head in `out`, then `body` as `plan` says; `false` when the connection is to
    /// close after it (or broke).
    pub(super) async fn send(&mut self, body: &mut Body, plan: Plan, close: bool) -> bool {
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

    /// Writes what `out` holds. The send buffer almost always has room for an answer: a
    /// readiness-checked non-blocking write is tried first (plain TCP), and the async write
    /// (its future, readiness poll and waker) is only for what it leaves.
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
        written && self.flushed().await
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
        self.stream.write_all(data).await.is_ok() && self.flushed().await
    }

    /// Sends what the transport holds back (TLS records); nothing to do on plain TCP.
    async fn flushed(&mut self) -> bool {
        !T::BUFFERS_WRITES || self.stream.flush().await.is_ok()
    }
}
