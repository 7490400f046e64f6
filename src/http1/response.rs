//! The response head the upstream client reads (RFC 9112 §4, §5), and what it says about the
//! body and the connection. Pure: `upstream::exchange` does the I/O.
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
//!   (`upstream::exchange`).

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use super::framing::{self, Framing, Message};
use super::{same_token, span, CodecError, Span, MAX_HEADERS};

/// Largest response head accepted: 64 KiB.
pub const MAX_HEAD: usize = 64 * 1024;

/// Where a header line's name and value lie in the head's bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderIndices {
    name: Span,
    value: Span,
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
    indices.clear();
    let mut kept = 0;
    indices.extend(res.headers.iter().map(|line| {
        let option = is_connection_option(line.name.as_bytes(), line.value);
        kept += usize::from(!option);
        HeaderIndices {
            name: span(buf, line.name.as_bytes()),
            value: span(buf, line.value),
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

/// Builds the head from its bytes (`head`, shared by the header values) and the parsed lines.
pub fn build_head(
    head: &Bytes,
    raw: &RawHead,
    indices: &[HeaderIndices],
    request_method: &Method,
) -> Result<ResponseHead, CodecError> {
    let status = StatusCode::from_u16(raw.status).map_err(|_| CodecError::Malformed)?;
    // Room for the two headers the stack adds on the way back (`x-request-id`,
    // `x-gateway-attempts`), so that the map does not grow then.
    let mut headers = HeaderMap::with_capacity(raw.kept + 2);
    let mut hints = framing::Headers::default();
    for line in indices {
        let name = &head[line.name.0..line.name.1];
        let value = HeaderValue::from_maybe_shared(head.slice(line.value.0..line.value.1))
            .map_err(|_| CodecError::Malformed)?;
        hints.note(name, value.as_bytes());
        let name = header_name(name)?;
        // Hop-by-hop headers that name no other header are never passed on: not kept at all,
        // so that the strip after this finds nothing to do in the usual case.
        if !line.option {
            headers.append(name, value);
        }
    }
    let message = Message::Response {
        method: request_method,
        status,
    };
    let framing = framing::body(message, &hints).ok_or(CodecError::ContentLength)?;
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
        reusable: persistent && !suspect(&hints, status) && framing != Framing::Eof,
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

/// Whether the head leaves the connection's state in doubt, so that it carries no other
/// request: both framings at once (the answer is read as chunked, but the two ends may not agree
/// on where it ends), or a `204` that announces a body it may still send.
fn suspect(hints: &framing::Headers, status: StatusCode) -> bool {
    let ambiguous = hints.transfer_encoding && hints.lengths > 0;
    let announced = hints.transfer_encoding || hints.length.is_some_and(|n| n > 0);
    ambiguous || (status == StatusCode::NO_CONTENT && announced)
}

#[cfg(test)]
mod tests;
