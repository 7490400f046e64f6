//! The listener's request-head parser, fed as the listener feeds it: parsed again on a growing
//! buffer after each piece, until it is no longer `Partial`. The verdict must not depend on how
//! the bytes were split, and a plain request must be one the loop can serve safely: within the
//! limits, no transfer coding, one agreed length.
#![no_main]

use bytes::BytesMut;
use idenfy_gateway::fuzzing::head::{self, HeaderIndices, Limits, Parsed, RawRequest, Refusal};
use idenfy_gateway_fuzz::Input;
use libfuzzer_sys::fuzz_target;

type Request = http::Request<()>;

/// What the parser made of a buffer, in a form two runs can be compared in.
#[derive(Debug, PartialEq)]
enum Verdict {
    Partial,
    Plain {
        len: usize,
        body: u64,
        close: bool,
        /// Method, target and header lines, or why `take` refused them.
        request: Result<(String, String, Vec<(String, Vec<u8>)>), Refusal>,
    },
    Fallback,
    Refused(Refusal),
}

fn limits(knob: u8) -> Limits {
    let max_head = [64, 512, 4096, 64 * 1024][usize::from(knob & 3)];
    idenfy_gateway::fuzzing::head_limits(max_head)
}

fn verdict(buf: &mut BytesMut, limits: &Limits, indices: &mut Vec<HeaderIndices>) -> Verdict {
    match head::parse(buf, limits, indices) {
        Parsed::Partial => Verdict::Partial,
        Parsed::Fallback => Verdict::Fallback,
        Parsed::Refused(refusal) => Verdict::Refused(refusal),
        Parsed::Plain(raw) => {
            assert!(raw.len <= limits.max_head, "head over max_head: {raw:?}");
            assert!(raw.len <= buf.len(), "head longer than the buffer");
            let before = buf.len();
            let request = head::take::<()>(buf, &raw, indices);
            assert_eq!(buf.len(), before - raw.len, "take consumed the head only");
            if let Err(refusal) = &request {
                assert_eq!(*refusal, Refusal::Malformed);
            }
            Verdict::Plain {
                len: raw.len,
                body: raw.body,
                close: raw.close,
                request: request.map(|req| {
                    check_plain(&req, &raw);
                    summary(&req)
                }),
            }
        }
    }
}

/// What the loop serves itself must be framed by one `content-length` at most, with nothing
/// that would make another server read the body differently.
fn check_plain(req: &Request, raw: &RawRequest) {
    let headers = req.headers();
    for name in ["transfer-encoding", "expect", "upgrade"] {
        assert!(!headers.contains_key(name), "plain request with {name}");
    }
    let lengths: Vec<_> = headers.get_all("content-length").iter().collect();
    assert!(lengths.len() <= 1, "plain request with two content-lengths");
    match lengths.first() {
        // Digits only (leading zeros are digits too), read as the framed length.
        Some(value) => {
            let digits = value.as_bytes();
            assert!(!digits.is_empty() && digits.iter().all(u8::is_ascii_digit));
            let n = digits
                .iter()
                .fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
            assert_eq!(n, u128::from(raw.body));
        }
        None => assert_eq!(raw.body, 0),
    }
    let close = headers.get_all("connection").iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    });
    assert_eq!(close, raw.close);
    assert!(req.uri().path().starts_with('/'));
}

fn summary(req: &Request) -> (String, String, Vec<(String, Vec<u8>)>) {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
        .collect();
    (req.method().to_string(), req.uri().to_string(), headers)
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::new(data) else {
        return;
    };
    let limits = limits(input.knob);
    let mut indices = Vec::new();
    let whole = verdict(&mut BytesMut::from(input.payload), &limits, &mut indices);

    let mut buf = BytesMut::new();
    let mut split = Verdict::Partial;
    for piece in input.pieces() {
        buf.extend_from_slice(piece);
        split = verdict(&mut buf, &limits, &mut indices);
        if split != Verdict::Partial {
            break;
        }
    }
    // A head still incomplete when the buffer reaches `max_head` is refused as too large; the
    // whole input may show a malformed line past that point. Both refuse.
    let reached_limit = input.payload.len() >= limits.max_head;
    match (&whole, &split) {
        (Verdict::Refused(_), Verdict::Refused(_)) if reached_limit => {}
        _ => assert_eq!(whole, split, "the verdict depends on the split"),
    }
});
