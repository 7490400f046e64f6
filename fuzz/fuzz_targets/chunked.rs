//! The chunked decoder of upstream bodies, two ways:
//! - raw bytes in arbitrary pieces: the data, the end and what is left after it must not
//!   depend on the split;
//! - a body encoded here (sizes in either case, extensions, bare LF, trailers) and decoded in
//!   pieces: what comes out is the body, and the bytes after the last chunk stay in the buffer.
#![no_main]

use bytes::BytesMut;
use idenfy_gateway::fuzzing::response::{Chunked, CodecError, Decoded};
use idenfy_gateway_fuzz::{Input, Pieces};
use libfuzzer_sys::fuzz_target;

/// What follows an encoded body: the next response on the connection.
const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\n";

#[derive(Debug, PartialEq)]
struct Outcome {
    data: Vec<u8>,
    /// `Ok(true)` at the last chunk's blank line, `Ok(false)` still wanting more.
    end: Result<bool, CodecError>,
    left: Vec<u8>,
}

fn decode(pieces: Pieces<'_>) -> Outcome {
    let mut decoder = Chunked::default();
    let mut buf = BytesMut::new();
    let mut data = Vec::new();
    let mut pieces = pieces;
    let end = loop {
        match decoder.decode(&mut buf) {
            Ok(Decoded::Data(d)) => data.extend_from_slice(&d),
            Ok(Decoded::Done) => break Ok(true),
            Ok(Decoded::NeedMore) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => break Ok(false),
            },
            Err(e) => break Err(e),
        }
    };
    assert_eq!(end == Ok(true), decoder.is_done());
    pieces.for_each(|piece| buf.extend_from_slice(piece));
    let left = if end == Ok(true) {
        buf.to_vec()
    } else {
        Vec::new()
    };
    Outcome { data, end, left }
}

/// `body` in chunks whose sizes come from `sizes`, spelled as `knob` says.
fn encode(body: &[u8], sizes: &[usize], knob: u8) -> Vec<u8> {
    let eol: &[u8] = if knob & 1 != 0 { b"\n" } else { b"\r\n" };
    let mut out = Vec::new();
    let mut rest = body;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(rest.len())
            .min(rest.len());
        let size = if knob & 2 != 0 {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        out.extend_from_slice(size.as_bytes());
        if knob & 4 != 0 {
            out.extend_from_slice(b" ;name=\"value\"");
        }
        out.extend_from_slice(eol);
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(eol);
        rest = &rest[n..];
        i += 1;
    }
    out.extend_from_slice(if knob & 8 != 0 { b"000" } else { b"0" });
    out.extend_from_slice(eol);
    if knob & 16 != 0 {
        out.extend_from_slice(b"x-trailer: 1");
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(eol);
    out.extend_from_slice(NEXT);
    out
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    if input.knob & 0x80 == 0 {
        let whole = Input {
            sizes: Vec::new(),
            ..input
        };
        assert_eq!(
            decode(whole.pieces()),
            decode(input.pieces()),
            "depends on the split"
        );
        return;
    }
    // Chunk sizes are the piece sizes reversed; the pieces cut the encoded bytes.
    let chunk_sizes: Vec<usize> = input.sizes.iter().rev().copied().collect();
    let encoded = encode(input.payload, &chunk_sizes, input.knob);
    let fed = Input {
        knob: input.knob,
        sizes: input.sizes.clone(),
        payload: &encoded,
    };
    let outcome = decode(fed.pieces());
    assert_eq!(outcome.end, Ok(true));
    assert_eq!(outcome.data, input.payload, "the body comes back");
    assert_eq!(outcome.left, NEXT, "the next response stays in the buffer");
});
