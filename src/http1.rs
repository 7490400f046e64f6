//! The HTTP/1.1 wire format (RFC 9112), in one place for both hand-written peers: the proxy
//! listener's loop (`server::h1`), which reads requests and writes answers, and the upstream
//! client (`upstream`), which writes requests and reads answers. Pure functions over byte
//! buffers; the I/O stays with those two.
//!
//! - [`request`]: the request head the listener reads (httparse), sorted into the plain case it
//!   serves and the cases it hands to hyper;
//! - [`response`]: the response head the upstream client reads;
//! - [`framing`]: where a received body ends, decided by one function for both directions, and
//!   which answers carry none;
//! - [`chunked`]: the body decoders (length, chunked, to the end of the connection);
//! - [`encode`]: the request head the client writes, the answer head and chunk sizes the
//!   listener writes.
//!
//! # Enforced
//!
//! - Request and status lines, header names and values as httparse checks them by default: no
//!   obs-fold (§5.2), no whitespace between a name and its colon (§5.1), no bare CR, no NUL or
//!   other control byte in a value. A refused request head is a 400, a refused answer a 502.
//! - Message body length (§6.3): no body for a `HEAD` answer or a 1xx, 204 or 304; a transfer
//!   coding over `content-length`, and such an answer ends its connection's reuse; a
//!   `content-length` is 1 to 19 digits, and different values are refused.
//! - A request whose body end cannot be told is refused (400): a `content-length` that is not one
//!   number, transfer codings not ending in `chunked`, any transfer coding in HTTP/1.0.
//! - A request whose framing is anything else but one plain `content-length` (or none) is not
//!   read by the loop: its head, already read and bounded here, goes to hyper with the
//!   connection (`transfer-encoding: chunked`, repeated equal lengths, `expect`, upgrades,
//!   `CONNECT`, HTTP/1.0, a target not in origin-form). hyper serves that one request and closes
//!   the connection after its answer, so it never reads a head of its own; it reads
//!   `transfer-encoding` beside `content-length` as chunked (`tests/smuggling.rs`).
//! - Limits: `listen.max_header_bytes` and 100 lines for a request head (431), 64 KiB and 100
//!   lines for an answer's head, 4 KiB for a chunk-size or trailer line, 16 hex digits for a
//!   chunk size. Status codes 100–599 only (RFC 9110 §15); `101` from iDenfy is refused.
//!
//! # Relaxed, on purpose
//!
//! - A bare LF ends a line, in heads and chunk lines (§2.2 lets a recipient accept it).
//! - Chunk extensions are ignored and trailers dropped (§7.1.1, §7.1.2).
//! - A list of equal `content-length` values is one length (§6.3 item 5 lets a recipient
//!   accept it); in a request it is hyper's to judge.
//! - An answer with neither framing header runs to the end of its connection (§6.3 item 8); an
//!   HTTP/1.0 answer keeps its connection when it says `keep-alive`.

pub mod chunked;
pub mod encode;
pub mod framing;
pub mod request;
pub mod response;

/// An answer from iDenfy's side that is not HTTP/1.1 as this module reads it; the attempt fails
/// as `UpstreamProtocol` (502).
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

/// Most header lines accepted in a head, a request's or an answer's (over it: 431 for a
/// request, as hyper answers; 502 for an answer).
pub const MAX_HEADERS: usize = 100;

/// Where a piece of a head lies in its bytes.
type Span = (usize, usize);

/// Where `piece`, a slice of `buf`, lies in it.
fn span(buf: &[u8], piece: &[u8]) -> Span {
    let start = piece.as_ptr() as usize - buf.as_ptr() as usize;
    (start, start + piece.len())
}

/// Whether a header name httparse accepted (token characters only) is `lower`, in any case.
/// For a token character `b | 0x20` is its lower case when it is a letter and `b` otherwise:
/// no other token character becomes a lower-case letter, a digit or `-` that way.
/// Compared eight bytes at a time: `lower` (lower case, digits, `-`) has 0x20 set in every
/// byte, so OR-ing it in on both sides changes nothing on its side.
pub(crate) fn same_token(bytes: &[u8], lower: &[u8]) -> bool {
    const CASE: u64 = 0x2020_2020_2020_2020;
    bytes.len() == lower.len()
        && bytes
            .chunks(8)
            .zip(lower.chunks(8))
            .all(|(b, l)| word(b) | CASE == word(l) | CASE)
}

/// Up to eight bytes as one little-endian word, zero-padded.
fn word(chunk: &[u8]) -> u64 {
    match <[u8; 8]>::try_from(chunk) {
        Ok(full) => u64::from_le_bytes(full),
        Err(_) => chunk.iter().rev().fold(0, |w, &b| (w << 8) | u64::from(b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_any_case_and_only_the_same_name() {
        let name = b"transfer-encoding-x1";
        for len in 1..=name.len() {
            let lower = &name[..len];
            let upper = lower.to_ascii_uppercase();
            assert!(same_token(lower, lower));
            assert!(same_token(&upper, lower), "{len}");
            for at in 0..len {
                let mut other = upper.clone();
                other[at] = b'^';
                assert!(!same_token(&other, lower), "^ at {at} of {len}");
            }
            assert!(!same_token(&upper[..len - 1], lower));
        }
    }
}
