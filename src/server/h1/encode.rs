//! The response side of the proxy's HTTP/1.1 loop (RFC 9112): the head (status line, the
//! stack's headers, `date`, the body's framing, `connection: close`) and chunk framing. Pure,
//! into the connection's reused write buffer; [`super`] does the I/O.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::StatusCode;
use http_body::SizeHint;

pub const CRLF: &[u8] = b"\r\n";
/// The end of a chunked body: the last chunk, no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body and no length: 1xx, 204, 304.
    None,
    /// `content-length`.
    Length(u64),
    /// `transfer-encoding: chunked`: the length is not known before the body ends.
    Chunked,
}

/// The framing of a response, and whether its body is written (not for `HEAD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub framing: Framing,
    pub body: bool,
}

/// RFC 9112 §6: no length for 1xx, 204 and 304; a `HEAD` answer carries the length of the body
/// it does not send (the stack's `content-length`, as iDenfy gave it); else the exact length
/// when the body knows it, chunked when not.
pub fn plan(status: StatusCode, head_request: bool, hint: &SizeHint, headers: &HeaderMap) -> Plan {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Plan {
            framing: Framing::None,
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
            None => Framing::None,
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
        Framing::None => {}
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
