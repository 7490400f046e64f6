//! The request head the proxy listener reads (RFC 9112 §3, §5): parsed with httparse, sorted
//! into the plain case served by the listener's loop and the cases handed to hyper, and built
//! into an `http::Request` whose header values share the read buffer. Pure: `server::h1` does
//! the I/O.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri};

use super::framing::{self, Framing, Message};
use super::{same_token, span, Span, MAX_HEADERS};
use crate::error::GatewayError;

/// What the loop may take as the plain case. A `content-length` over `limits.max_body` is
/// still the plain case: `front` refuses it (413) from the head, before the loop reads a byte of
/// its body.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request head, blank line included (`listen.max_header_bytes`).
    pub max_head: usize,
}

/// A request the loop answers itself with an error, then closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not HTTP/1.x, a request line or header the parser refused, or a body whose end
    /// cannot be told (a `content-length` that is not one number; transfer codings that do not
    /// end in `chunked`, or any in HTTP/1.0).
    Malformed,
    /// 431: the head is over `listen.max_header_bytes` or has too many lines.
    TooLarge,
}

impl Refusal {
    /// The error the answer is made from (`GatewayError::into_response`, like every other).
    pub fn error(self, limits: &Limits) -> GatewayError {
        match self {
            Refusal::Malformed => GatewayError::MalformedRequest,
            Refusal::TooLarge => GatewayError::HeadersTooLarge {
                limit: limits.max_head,
            },
        }
    }
}

/// Where a header line's name and value lie in the head's bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderIndices {
    name: Span,
    value: Span,
}

/// A plain request head found at the start of the buffer.
#[derive(Debug, Clone, Copy)]
pub struct RawRequest {
    /// Bytes of the head, blank line included.
    pub len: usize,
    method: Span,
    target: Span,
    /// The `content-length` (0 without one).
    pub body: u64,
    /// The client sent `connection: close`.
    pub close: bool,
}

/// What the start of the buffer holds.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet: read more.
    Partial,
    Plain(RawRequest),
    /// Not the plain case: hyper serves the connection from here (h2c, HTTP/1.0, a chunked
    /// body, `expect`, an upgrade or `CONNECT`, repeated `content-length` values, a
    /// request-target that is not a path).
    Fallback,
    Refused(Refusal),
}

/// Parses the request head at the start of `buf`.
/// `indices` receives where each header line is (cleared first; kept by the connection, so that
/// no per-request array of `MAX_HEADERS` entries is zeroed).
pub fn parse(buf: &[u8], limits: &Limits, indices: &mut Vec<HeaderIndices>) -> Parsed {
    // The HTTP/2 connection preface (`PRI * HTTP/2.0`): h2c with prior knowledge.
    if buf.starts_with(b"PRI ") {
        return Parsed::Fallback;
    }
    let mut lines = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut req, buf, &mut lines);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) if len <= limits.max_head => len,
        Ok(httparse::Status::Complete(_)) => return Parsed::Refused(Refusal::TooLarge),
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_head => {
            return Parsed::Refused(Refusal::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refused(Refusal::TooLarge),
        Err(_) => return Parsed::Refused(Refusal::Malformed),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Fallback;
    };
    // Origin-form HTTP/1.1 only; HTTP/1.0, absolute-form, authority-form and `*` are hyper's.
    // So is `CONNECT`, whatever its target: hyper takes what follows its head as a tunnel, not
    // as requests.
    let mut plain = version == 1 && target.starts_with('/') && method != "CONNECT";
    let mut hints = framing::Headers::default();
    indices.clear();
    for line in req.headers.iter() {
        let (name, value) = (line.name.as_bytes(), line.value);
        if hints.note(name, value) {
            // A `content-length` that is not one number (a list too, as hyper's server
            // reads it) is refused here, not by hyper, whichever path the request would
            // take: with iDenfy's error body.
            if hints.bad_length || hints.length_list {
                return Parsed::Refused(Refusal::Malformed);
            }
            plain &= !hints.transfer_encoding && !hints.upgrade;
        } else {
            plain &= !(same_token(name, b"expect") || same_token(name, b"upgrade"));
        }
        indices.push(HeaderIndices {
            name: span(buf, name),
            value: span(buf, value),
        });
    }
    // Transfer codings that do not end in `chunked` frame no request (RFC 9112 §6.3 item 4),
    // and HTTP/1.0 has none (§6.1): refused here too. A chunked body is hyper's.
    if hints.transfer_encoding && (version != 1 || !hints.chunked) {
        return Parsed::Refused(Refusal::Malformed);
    }
    // One plain `content-length`, or none; repeated lengths are hyper's.
    let body = match framing::body(Message::Request, &hints) {
        Some(Framing::Empty) if plain => 0,
        Some(Framing::Length(n)) if plain && hints.lengths == 1 => n,
        _ => return Parsed::Fallback,
    };
    Parsed::Plain(RawRequest {
        len,
        method: span(buf, method.as_bytes()),
        target: span(buf, target.as_bytes()),
        body,
        close: hints.close,
    })
}

/// Takes the head of `raw` out of `buf` and builds the request, with an empty body (the body
/// is still to be read): the target and the header values share the head's bytes.
pub fn take<B: Default>(
    buf: &mut BytesMut,
    raw: &RawRequest,
    indices: &[HeaderIndices],
) -> Result<Request<B>, Refusal> {
    let head = buf.split_to(raw.len).freeze();
    build(&head, raw, indices)
}

fn build<B: Default>(
    head: &Bytes,
    raw: &RawRequest,
    lines: &[HeaderIndices],
) -> Result<Request<B>, Refusal> {
    let at = |(start, end): Span| &head[start..end];
    let method = Method::from_bytes(at(raw.method)).map_err(|_| Refusal::Malformed)?;
    let uri = Uri::from_maybe_shared(head.slice(raw.target.0..raw.target.1))
        .map_err(|_| Refusal::Malformed)?;
    let mut req = Request::new(B::default());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    // Filled in place: a map built aside would be moved in, and the empty one dropped.
    let headers = req.headers_mut();
    // Room for the one header `front` adds (`x-request-id`): without it the map often grows
    // (rehash, reallocate) on the way, ~730 instructions a request (docs/benchmarks.md).
    headers.reserve(lines.len() + 1);
    for line in lines {
        let name = header_name(at(line.name))?;
        let value = HeaderValue::from_maybe_shared(head.slice(line.value.0..line.value.1))
            .map_err(|_| Refusal::Malformed)?;
        headers.append(name, value);
    }
    Ok(req)
}

/// The name of a header line httparse accepted. The names clients send most are constants,
/// found by length and then bytes: cheaper than `HeaderName::from_bytes`, which lower-cases
/// into a scratch buffer, looks the name up, and allocates a name it does not know.
fn header_name(bytes: &[u8]) -> Result<HeaderName, Refusal> {
    let is = |lower: &[u8]| same_token(bytes, lower);
    Ok(match bytes.len() {
        4 if is(b"host") => header::HOST,
        6 if is(b"accept") => header::ACCEPT,
        10 if is(b"user-agent") => header::USER_AGENT,
        10 if is(b"connection") => header::CONNECTION,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        12 if is(b"x-request-id") => HeaderName::from_static("x-request-id"),
        13 if is(b"authorization") => header::AUTHORIZATION,
        14 if is(b"content-length") => header::CONTENT_LENGTH,
        15 if is(b"accept-encoding") => header::ACCEPT_ENCODING,
        _ => HeaderName::from_bytes(bytes).map_err(|_| Refusal::Malformed)?,
    })
}

#[cfg(test)]
mod tests;
