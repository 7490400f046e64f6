//! The upstream client's response head, framing and body decoders, fed as the exchange feeds
//! them: the read buffer grows piece by piece, the head is taken once whole (1xx skipped), then
//! the body is decoded from what follows, and the connection's end is told last. The outcome
//! must not depend on the split, and the framing must follow RFC 9112 §6.3.
#![no_main]

use bytes::BytesMut;
use http::{Method, StatusCode};
use idenfy_gateway::fuzzing::response::{self, CodecError, Decoded, Decoder, Framing};
use idenfy_gateway_fuzz::{Input, Pieces};
use libfuzzer_sys::fuzz_target;

const METHODS: [Method; 4] = [Method::GET, Method::HEAD, Method::POST, Method::DELETE];

/// Everything one run found, for comparing two runs.
#[derive(Debug, PartialEq)]
struct Outcome {
    head: Result<Option<Head>, CodecError>,
    body: Vec<u8>,
    /// How the body ended: `Ok(true)` done, `Ok(false)` still open at the end of the input.
    end: Result<bool, CodecError>,
    /// Bytes left in the buffer after a finished body (the next response, or garbage).
    left: usize,
}

#[derive(Debug, PartialEq)]
struct Head {
    status: StatusCode,
    headers: Vec<(String, Vec<u8>)>,
    framing: Framing,
    reusable: bool,
}

fn run(method: &Method, pieces: Pieces<'_>) -> Outcome {
    let mut pieces = pieces;
    let mut buf = BytesMut::new();
    let mut indices = Vec::new();
    let head = loop {
        match response::take_head(&mut buf, &mut indices, method) {
            Ok(None) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => break Ok(None),
            },
            Ok(Some(head)) => break Ok(Some(head)),
            Err(e) => break Err(e),
        }
    };
    let head = match head {
        Ok(Some(head)) => head,
        other => {
            let end = Ok(false);
            return Outcome {
                head: other.map(|_| None),
                body: Vec::new(),
                end,
                left: 0,
            };
        }
    };
    check_framing(method, &head);
    let mut decoder = response::decoder(head.framing);
    let (body, end) = body(&mut decoder, &mut buf, pieces);
    if let (Framing::Length(n), Ok(true)) = (head.framing, &end) {
        assert_eq!(
            body.len() as u64,
            n,
            "a finished length body has its length"
        );
    }
    if let Framing::Length(n) = head.framing {
        assert!(body.len() as u64 <= n, "more than the content-length");
    }
    let left = if end == Ok(true) { buf.len() } else { 0 };
    let headers = head
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    Outcome {
        head: Ok(Some(Head {
            status: head.status,
            headers,
            framing: head.framing,
            reusable: head.reusable,
        })),
        body,
        end,
        left,
    }
}

/// Decodes the body from `buf` and the pieces still to come, then tells the decoder the
/// connection ended.
fn body(
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    mut pieces: Pieces<'_>,
) -> (Vec<u8>, Result<bool, CodecError>) {
    let mut body = Vec::new();
    loop {
        match decoder.decode(buf) {
            Ok(Decoded::Data(data)) => {
                assert!(!data.is_empty(), "empty data frame");
                body.extend_from_slice(&data);
            }
            Ok(Decoded::Done) => {
                // What follows the body, whichever read it came with.
                pieces.for_each(|piece| buf.extend_from_slice(piece));
                return (body, Ok(true));
            }
            Err(e) => return (body, Err(e)),
            Ok(Decoded::NeedMore) => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => break,
            },
        }
    }
    // The peer closed: the end of an until-close body, or a body cut short.
    match decoder.at_eof() {
        Ok(()) => match decoder.decode(buf) {
            Ok(Decoded::Done) => (body, Ok(true)),
            other => panic!("after a clean end of connection: {other:?}"),
        },
        Err(e) => (body, Err(e)),
    }
}

/// RFC 9112 §6.3 as the exchange relies on it.
fn check_framing(method: &Method, head: &response::ResponseHead) {
    let status = head.status.as_u16();
    assert!(!(100..200).contains(&status), "1xx is skipped, 101 refused");
    let empty = method == Method::HEAD || status == 204 || status == 304;
    assert_eq!(head.framing == Framing::Empty, empty, "{method} {status}");
    if matches!(head.framing, Framing::Chunked | Framing::Eof) {
        assert!(!head.headers.contains_key("content-length"));
    }
    if head.framing == Framing::Eof {
        assert!(
            !head.reusable,
            "a body to the end of the connection ends it"
        );
    }
    if head.headers.contains_key("transfer-encoding") && head.headers.contains_key("content-length")
    {
        assert!(
            !head.reusable,
            "both framings: not trusted with another request"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let method = &METHODS[usize::from(input.knob & 3)];
    let whole = Input {
        sizes: Vec::new(),
        ..input
    };
    let one = run(method, whole.pieces());
    let split = run(method, input.pieces());
    // A head still incomplete at `MAX_HEAD` bytes is too large; the whole input may show a
    // malformed line past that point.
    let too_large = input.payload.len() >= response::MAX_HEAD
        && one.head.is_err()
        && split.head == Err(CodecError::TooLarge);
    if !too_large {
        assert_eq!(one, split, "the outcome depends on the split");
    }
});
