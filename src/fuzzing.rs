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

/// The listener's request-head parser, `src/server/h1/head.rs`.
///
/// `server::h1` keeps `head` private and `h1.rs` is being changed elsewhere, so the same source
/// file is compiled here a second time: the same code, its only outside paths `crate::` ones.
/// Once the wire format lives in one module (issue 13), re-export it from there instead.
// Not in the crate's own unit tests: a file included by `#[path]` looks for its `mod tests`
// beside itself (`src/server/h1/tests.rs`), and those tests run from `h1` already.
#[cfg(not(test))]
#[allow(clippy::duplicate_mod)] // on purpose, as said above
#[rustfmt::skip] // rustfmt would look for its `mod tests` beside this path too
#[path = "server/h1/head.rs"]
pub mod head;

/// Limits for [`head::parse`]: `max_head` bytes of head (the body's declared length is judged
/// by `front` from the head, not by the parser). One place to change if `Limits` changes shape.
#[cfg(not(test))]
pub fn head_limits(max_head: usize) -> head::Limits {
    head::Limits { max_head }
}

/// The upstream client's wire format, `src/upstream/{codec,chunked}.rs`.
pub mod response {
    pub use crate::upstream::chunked::{Chunked, Decoded, Decoder};
    pub use crate::upstream::codec::{
        build_head, parse_head, CodecError, Framing, HeaderIndices, RawHead, ResponseHead,
        MAX_HEAD, MAX_HEADERS,
    };

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
