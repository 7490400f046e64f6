//! The HTTP/1.1 wire format of one upstream exchange (RFC 9112): the request head, the response
//! head, and how the response body is framed. Pure functions; [`super::exchange`] does the I/O.
//!
//! What an answer may get wrong, and what becomes of it:
//! - a status outside 100–599, a `101`, a malformed head: refused (`CodecError`, 502);
//! - 1xx answers before the final one: skipped;
//! - differing `content-length` values: refused; equal ones: one value passed on;
//! - `content-length` beside `transfer-encoding`: the transfer coding wins (RFC 9112 §6.3), the
//!   length is dropped, and the connection carries no other request;
//! - `HEAD`, `204`, `304`: no body read, whatever the headers say; a `204` that announces one
//!   anyway leaves its connection unused after it (its body may still be on the way);
//! - bytes after the end of an answer: the connection carries no other request
//!   ([`super::exchange`]).
//!
//! Every request asks for `accept-encoding: identity`: the gateway reads iDenfy's answers (the
//! 429 / `TOO_MANY_REQUESTS` checks on every route, the token replay), and cannot read a
//! compressed one.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use crate::token::same_token;

/// Most header lines accepted in a response head.
pub const MAX_HEADERS: usize = 100;
/// Largest response head accepted: 64 KiB.
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers the stack adds to every answer on its way back (`x-request-id`, `x-gateway-attempts`): room
/// for them is made up front, so that the map does not grow (rehash, reallocate) on the way.
const ADDED_BY_STACK: usize = 2;
/// Request bodies smaller than this (16 KiB) go in the same buffer as the head: one `write`.
pub const INLINE_BODY: usize = 16 * 1024;

/// A response iDenfy's side of the connection got wrong; the attempt fails as `UpstreamProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("malformed response head")]
    Malformed,
    #[error("response head too large")]
    TooLarge,
    #[error("unexpected protocol switch")]
    SwitchingProtocols,
    #[error("status code outside 100-599")]
    Status,
    #[error("invalid content-length")]
    ContentLength,
    #[error("malformed chunked body")]
    Chunked,
    #[error("response body cut short")]
    Truncated,
}

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

/// Appends `n` in decimal, without `format!`.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Where a header line's name and value lie in the head's bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderIndices {
    name: (u32, u32),
    value: (u32, u32),
    /// A hop-by-hop line naming no other header ([`is_connection_option`]): never kept.
    option: bool,
}

/// A response head found in the read buffer: its status line, length and kept header count. The
/// header lines are in the [`HeaderIndices`] passed to [`parse_head`].
#[derive(Debug, Clone, Copy)]
pub struct RawHead {
    pub status: u16,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor: u8,
    /// Bytes of the head, blank line included.
    pub len: usize,
    /// Header lines kept in the map: all but the connection options.
    pub kept: usize,
}

impl RawHead {
    /// A 1xx answer before the final one (100 Continue, 103 Early Hints): skipped.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Parses a response head at the start of `buf`: `Ok(None)` while it is incomplete.
/// `indices` receives where each header line is (cleared first; kept by the connection, so that
/// no per-response array of `MAX_HEADERS` entries is zeroed).
pub fn parse_head(
    buf: &[u8],
    indices: &mut Vec<HeaderIndices>,
) -> Result<Option<RawHead>, CodecError> {
    let mut lines = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut res, buf, &mut lines);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(CodecError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(CodecError::TooLarge),
        Err(_) => return Err(CodecError::Malformed),
    };
    if len > MAX_HEAD {
        return Err(CodecError::TooLarge);
    }
    let status = res.code.ok_or(CodecError::Malformed)?;
    if status == 101 {
        return Err(CodecError::SwitchingProtocols);
    }
    // RFC 9110 §15: three digits, the first 1 to 5. httparse takes any three digits.
    if !(100..=599).contains(&status) {
        return Err(CodecError::Status);
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let start = (s.as_ptr() as usize - base) as u32;
        (start, start + s.len() as u32)
    };
    indices.clear();
    let mut kept = 0;
    indices.extend(res.headers.iter().map(|line| {
        let option = is_connection_option(line.name.as_bytes(), line.value);
        kept += usize::from(!option);
        HeaderIndices {
            name: span(line.name.as_bytes()),
            value: span(line.value),
            option,
        }
    }));
    Ok(Some(RawHead {
        status,
        minor: res.version.ok_or(CodecError::Malformed)?,
        len,
        kept,
    }))
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// HEAD, 204, 304: no body whatever the headers say.
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Eof,
}

/// A final response head, its headers in a [`HeaderMap`], and what they say about the body and
/// the connection.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The connection may carry another request once this body is read.
    pub reusable: bool,
}

/// What the framing headers say, gathered while the header map is built.
#[derive(Debug, Default)]
struct Hints {
    length: Option<u64>,
    /// `content-length` values seen (lines, and items of a list).
    lengths: u32,
    transfer_encoding: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

/// Builds the head from its bytes (`head`, shared by the header values) and the parsed lines.
pub fn build_head(
    head: &Bytes,
    raw: &RawHead,
    indices: &[HeaderIndices],
    request_method: &Method,
) -> Result<ResponseHead, CodecError> {
    let status = StatusCode::from_u16(raw.status).map_err(|_| CodecError::Malformed)?;
    let mut headers = HeaderMap::with_capacity(raw.kept + ADDED_BY_STACK);
    let mut hints = Hints::default();
    for line in indices {
        let (start, end) = (line.name.0 as usize, line.name.1 as usize);
        let name = header_name(&head[start..end])?;
        let (start, end) = (line.value.0 as usize, line.value.1 as usize);
        let value = HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| CodecError::Malformed)?;
        hints.note(&name, value.as_bytes())?;
        // Hop-by-hop headers that name no other header are never passed on: not kept at all,
        // so that the strip after this finds nothing to do in the usual case.
        if !line.option {
            headers.append(name, value);
        }
    }
    let framing = framing(request_method, status, &hints);
    if framing == Framing::Chunked || framing == Framing::Eof {
        // The length is not the body's: hyper's server frames what it sends on its own.
        headers.remove(header::CONTENT_LENGTH);
    } else if hints.lengths > 1 {
        // Equal values repeated: one is passed on (a `HEAD` answer's is relayed as it is).
        if let Some(n) = hints.length {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    let persistent = !hints.close && (raw.minor == 1 || hints.keep_alive);
    Ok(ResponseHead {
        status,
        headers,
        framing,
        reusable: persistent && !hints.suspect(status) && framing != Framing::Eof,
    })
}

/// The name of a header line httparse accepted. The names answers carry most are constants,
/// found by length and then bytes: cheaper than `HeaderName::from_bytes`, which lower-cases
/// into a scratch buffer, looks the name up, and allocates a name it does not know.
fn header_name(bytes: &[u8]) -> Result<HeaderName, CodecError> {
    let is = |lower: &[u8]| same_token(bytes, lower);
    Ok(match bytes.len() {
        4 if is(b"date") => header::DATE,
        4 if is(b"vary") => header::VARY,
        6 if is(b"server") => header::SERVER,
        10 if is(b"connection") => header::CONNECTION,
        10 if is(b"keep-alive") => KEEP_ALIVE,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        12 if is(b"x-request-id") => HeaderName::from_static("x-request-id"),
        13 if is(b"cache-control") => header::CACHE_CONTROL,
        14 if is(b"content-length") => header::CONTENT_LENGTH,
        17 if is(b"transfer-encoding") => header::TRANSFER_ENCODING,
        _ => HeaderName::from_bytes(bytes).map_err(|_| CodecError::Malformed)?,
    })
}

/// `Connection: keep-alive` / `close` (options only, naming no header) or `Keep-Alive: …`.
/// Told at parse time, so that the map is sized for the lines it keeps.
fn is_connection_option(name: &[u8], value: &[u8]) -> bool {
    if name.len() != 10 {
        return false;
    }
    if same_token(name, b"connection") {
        value
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
            .all(|t| t.eq_ignore_ascii_case(b"close") || t.eq_ignore_ascii_case(b"keep-alive"))
    } else {
        same_token(name, b"keep-alive")
    }
}

/// `keep-alive`, not among `http`'s standard names.
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

impl Hints {
    /// Whether the head leaves the connection's state in doubt, so that it carries no other
    /// request: both framings at once (the answer is read as chunked, but the two ends may not
    /// agree on where it ends), or a `204` that announces a body it may still send.
    fn suspect(&self, status: StatusCode) -> bool {
        let ambiguous = self.transfer_encoding && self.length.is_some();
        let announced = self.transfer_encoding || self.length.is_some_and(|n| n > 0);
        ambiguous || (status == StatusCode::NO_CONTENT && announced)
    }

    fn note(&mut self, name: &HeaderName, value: &[u8]) -> Result<(), CodecError> {
        if name == header::CONTENT_LENGTH {
            for part in value.split(|&b| b == b',') {
                let n = parse_length(part.trim_ascii()).ok_or(CodecError::ContentLength)?;
                if self.length.is_some_and(|seen| seen != n) {
                    return Err(CodecError::ContentLength);
                }
                self.length = Some(n);
                self.lengths += 1;
            }
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            // Only the last coding counts: the body is chunked when chunked is applied last.
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            self.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if name == header::CONNECTION {
            for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                self.close |= token.eq_ignore_ascii_case(b"close");
                self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        Ok(())
    }
}

/// A `content-length` value: 1 to 19 ASCII digits.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// RFC 9112 §6.3, for a response: no body for HEAD, 204 and 304; transfer-encoding over
/// content-length; a response with neither runs to the end of the connection.
fn framing(method: &Method, status: StatusCode, hints: &Hints) -> Framing {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if hints.transfer_encoding {
        if hints.chunked {
            Framing::Chunked
        } else {
            Framing::Eof
        }
    } else if let Some(n) = hints.length {
        Framing::Length(n)
    } else {
        Framing::Eof
    }
}

#[cfg(test)]
mod tests;
