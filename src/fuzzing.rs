//! Entry points into the hand-written parsers for the fuzz targets under `fuzz/` and the
//! differential test (`tests/differential.rs`). Behind the `fuzzing` feature and hidden from the
//! docs: not part of the public API. Thin wrappers only: no parsing rule of their own.
//!
//! - [`head`]: the listener's request head (`parse`, `take`, `Limits`)
//! - [`response`]: the upstream client's response head, framing and body decoders
//! - [`retry_after`]: `Retry-After` (delta-seconds or HTTP-date)
//! - [`config`]: the config loader, from TOML text and a `${VAR}` lookup
//! - [`token_body`]: token-body validation and the `clientId`

use bytes::{Buf, BytesMut};
use http::Method;

/// The listener's request-head parser, `src/http1/request.rs`.
pub use crate::http1::request as head;

/// Limits for [`head::parse`]: `max_head` bytes of head (the body's declared length is judged
/// by `front` from the head, not by the parser). One place to change if `Limits` changes shape.
pub fn head_limits(max_head: usize) -> head::Limits {
    head::Limits { max_head }
}

/// The upstream client's side of the wire format, `src/http1/{response,framing,chunked}.rs`.
pub mod response {
    pub use crate::http1::chunked::{Chunked, Decoded, Decoder};
    pub use crate::http1::framing::Framing;
    pub use crate::http1::response::{
        build_head, parse_head, HeaderIndices, RawHead, ResponseHead, MAX_HEAD,
    };
    pub use crate::http1::{CodecError, MAX_HEADERS};

    use super::{Buf, BytesMut, Method};

    /// The final response head when `buf` holds all of it, 1xx interim answers skipped and the
    /// head taken out of `buf`: what the upstream exchange does with its read buffer.
    pub fn take_head(
        buf: &mut BytesMut,
        indices: &mut Vec<HeaderIndices>,
        method: &Method,
    ) -> Result<Option<ResponseHead>, CodecError> {
        loop {
            let Some(raw) = parse_head(buf, indices)? else {
                return Ok(None);
            };
            if raw.is_interim() {
                buf.advance(raw.len);
                continue;
            }
            let head = buf.split_to(raw.len).freeze();
            return build_head(&head, &raw, indices, method).map(Some);
        }
    }

    /// The body decoder for `framing`, as the upstream exchange picks it.
    pub fn decoder(framing: Framing) -> Decoder {
        match framing {
            Framing::Empty => Decoder::Length(0),
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunked::default()),
            Framing::Eof => Decoder::Eof(false),
        }
    }
}

/// `Retry-After` as the retry loop and the account pause read it.
pub mod retry_after {
    pub use crate::retry::backoff::{parse_retry_after, MAX_RETRY_AFTER};
}

/// The config loader: `Config::parse(text, env)` reads TOML text, looks `${VAR}` up with `env`
/// and validates; it reads no file (it checks that a `ca_file` exists).
pub mod config {
    pub use crate::config::{Config, ConfigErrors};

    /// Parses `text` with `${VAR}` looked up in `vars` only (never the process environment).
    pub fn parse(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let env = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        };
        Config::parse(text, &env)
    }
}

/// Token-body validation: what the validate layer decides for a body, and the `clientId`.
pub mod token_body {
    pub use crate::context::{ClientId, RouteKind};
    pub use crate::idenfy::{client_id, parse_body, FieldError};
    pub use crate::validate::inspect;
}
