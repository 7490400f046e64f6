//! W3C trace context. `traceparent` and `tracestate` are end-to-end headers: they pass through to
//! iDenfy unchanged, like every header that is not hop-by-hop. The access line carries the trace
//! id of a valid `traceparent`, so that the gateway's line for a request can be found from the
//! caller's trace.

use http::HeaderValue;

/// The trace id of a request: 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The trace id of a `traceparent` value (`00-<trace-id>-<parent-id>-<flags>`, W3C Trace
/// Context §3.2), or `None` when it is not a valid one: a version other than two hex digits or
/// `ff`, a version 00 value of another length, an id not of lowercase hex, or all zeros.
pub fn trace_id(traceparent: Option<&HeaderValue>) -> Option<TraceId> {
    let b = traceparent?.as_bytes();
    let hex = |s: &[u8]| {
        s.iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    };
    let version = b.get(..2)?;
    let ok = hex(version)
        && version != b"ff"
        && (b.len() == 55 || (version != b"00" && b.len() > 55 && b[55] == b'-'))
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(&b[3..35])
        && hex(&b[36..52])
        && hex(&b[53..55])
        && b[3..35].iter().any(|&c| c != b'0')
        && b[36..52].iter().any(|&c| c != b'0');
    ok.then(|| TraceId(b[3..35].try_into().expect("32 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(value: &str) -> Option<String> {
        trace_id(Some(&HeaderValue::from_str(value).unwrap())).map(|t| t.as_str().to_string())
    }

    #[test]
    fn reads_the_trace_id_of_a_valid_traceparent() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            id(valid).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(
            id(future).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(trace_id(None), None);
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            "00",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473\"-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(id(bad), None, "{bad}");
        }
    }
}
