//! What the two peers write, into a reused buffer each (RFC 9112): the request head the upstream
//! client sends to iDenfy, and the answer head (status line, the stack's headers, `date`, the
//! body's framing, `connection: close`) and chunk framing the listener sends to callers. Pure;
//! `upstream::exchange` and `server::h1` do the I/O.
//!
//! Every request to iDenfy asks for `accept-encoding: identity`: the gateway reads iDenfy's
//! answers (the 429 / `TOO_MANY_REQUESTS` checks on every route, the token replay), and cannot
//! read a compressed one.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body::SizeHint;

use super::framing::{bodiless, Framing};

pub const CRLF: &[u8] = b"\r\n";
/// The end of a chunked body: the last chunk, no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Request bodies smaller than this (16 KiB) go in the same buffer as the head: one `write`.
pub const INLINE_BODY: usize = 16 * 1024;

/// A request head as the upstream client writes it.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// The path and query; `/` when empty.
    pub target: &'a str,
    /// The upstream's authority, written as `host` in place of the caller's.
    pub host: &'a [u8],
    /// The account's credentials, written in place of any `authorization` the caller sent.
    pub authorization: &'a HeaderValue,
    /// The caller's headers, hop-by-hop ones already removed.
    pub headers: &'a HeaderMap,
}

/// Writes the request head into `out` (cleared first), and the body after it when it is small.
/// Returns whether the body was written: a larger one is sent on its own after the head.
pub fn encode_request(out: &mut Vec<u8>, head: RequestHead<'_>, body: &[u8]) -> bool {
    out.clear();
    let inline = body.len() < INLINE_BODY;
    out.reserve(256 + head.headers.len() * 48 + if inline { body.len() } else { 0 });
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let target = if head.target.is_empty() {
        "/"
    } else {
        head.target
    };
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(head.host);
    out.extend_from_slice(b"\r\nauthorization: ");
    out.extend_from_slice(head.authorization.as_bytes());
    out.extend_from_slice(b"\r\naccept-encoding: identity\r\n");
    for (name, value) in head.headers {
        // Ours to set: the host, the credentials, the body's framing, the answer's coding (one
        // the gateway can read); `expect` would wait for a 100 we never need.
        if name == header::HOST
            || name == header::AUTHORIZATION
            || name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::EXPECT
            || name == header::ACCEPT_ENCODING
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let needs_length = matches!(*head.method, Method::POST | Method::PUT | Method::PATCH);
    if !body.is_empty() || needs_length {
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if inline {
        out.extend_from_slice(body);
    }
    inline
}

/// The framing of a response, and whether its body is written (not for `HEAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub framing: Framing,
    pub body: bool,
}

/// The answer the listener writes (RFC 9112 §6): no length for 1xx, 204 and 304
/// ([`bodiless`], as when reading one); a `HEAD` answer carries the length of the body it does
/// not send (the stack's `content-length`, as iDenfy gave it); else the exact length when the
/// body knows it, chunked when not. Never [`Framing::Eof`].
pub fn plan(status: StatusCode, head_request: bool, hint: &SizeHint, headers: &HeaderMap) -> Plan {
    if bodiless(status) {
        return Plan {
            framing: Framing::Empty,
            body: false,
        };
    }
    if head_request {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let framing = match declared.or(hint.exact()) {
            Some(n) => Framing::Length(n),
            None => Framing::Empty,
        };
        return Plan {
            framing,
            body: false,
        };
    }
    let framing = match hint.exact() {
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    };
    Plan {
        framing,
        body: true,
    }
}

/// Writes the response head into `out` (cleared first). The stack's framing and connection
/// headers are dropped: the loop writes its own. A `date` is added unless the stack has one.
pub fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    close: bool,
) {
    out.clear();
    out.reserve(128 + headers.len() * 48);
    push_status_line(out, status);
    let mut dated = false;
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        dated |= name == header::DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(CRLF);
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        push_date(out, SystemTime::now());
        out.extend_from_slice(CRLF);
    }
    match framing {
        Framing::Empty | Framing::Eof => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            push_decimal(out, n);
            out.extend_from_slice(CRLF);
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(CRLF);
}

fn push_status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(CRLF);
}

/// The size line of a chunk of `len` bytes; the data and a CRLF follow it.
pub fn push_chunk_size(out: &mut Vec<u8>, len: usize) {
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    let mut n = len;
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(CRLF);
}

/// Appends `n` in decimal, without `format!`.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

thread_local! {
    /// The `date` value of the current second, formatted once per second and thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Appends the IMF-fixdate of `now` (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn push_date(out: &mut Vec<u8>, now: SystemTime) {
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second {
            *text = httpdate::fmt_http_date(now);
            *at = second;
        }
        out.extend_from_slice(text.as_bytes());
    });
}

#[cfg(test)]
mod tests;
