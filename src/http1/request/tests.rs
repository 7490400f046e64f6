use super::*;
use http::StatusCode;

const LIMITS: Limits = Limits { max_head: 1024 };

fn parse_str(text: &str) -> Parsed {
    let mut indices = Vec::new();
    parse(text.as_bytes(), &LIMITS, &mut indices)
}

/// Parses and takes a plain request out of `text`; what is left in the buffer after the head.
fn take_str(text: &str) -> (Request<()>, RawRequest, BytesMut) {
    let mut buf = BytesMut::from(text);
    let mut indices = Vec::new();
    let Parsed::Plain(raw) = parse(&buf, &LIMITS, &mut indices) else {
        panic!("not plain: {text:?}");
    };
    let req = take(&mut buf, &raw, &indices).expect("builds");
    (req, raw, buf)
}

#[test]
fn builds_a_plain_request_sharing_the_buffer() {
    let (req, raw, rest) = take_str(
        "POST /api/v2/token?x=1 HTTP/1.1\r\nHost: gw\r\nX-Two: a\r\nx-two: b\r\n\
         Content-Length: 2\r\n\r\n{}GET /next",
    );
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), "/api/v2/token");
    assert_eq!(req.uri().query(), Some("x=1"));
    assert_eq!(req.version(), http::Version::HTTP_11);
    assert_eq!(req.headers()["host"], "gw");
    let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
    assert_eq!(twos, ["a", "b"]);
    assert_eq!(raw.body, 2);
    assert!(!raw.close);
    assert_eq!(&rest[..], b"{}GET /next");
}

#[test]
fn keeps_any_declared_length_in_the_plain_case_for_front_to_judge() {
    let (_, raw, _) = take_str("POST / HTTP/1.1\r\ncontent-length: 9999999999999999999\r\n\r\n");
    assert_eq!(raw.body, 9_999_999_999_999_999_999);
    let twenty_digits = "POST / HTTP/1.1\r\ncontent-length: 10000000000000000000\r\n\r\n";
    assert!(matches!(
        parse_str(twenty_digits),
        Parsed::Refused(Refusal::Malformed)
    ));
}

#[test]
fn notes_connection_close_among_other_tokens() {
    let (_, raw, _) = take_str("GET / HTTP/1.1\r\nconnection: keep-alive, Close\r\n\r\n");
    assert!(raw.close);
    assert_eq!(raw.body, 0);
}

#[test]
fn waits_for_the_rest_of_a_head() {
    for part in [
        "",
        "GE",
        "GET / HTTP/1.1\r\n",
        "GET / HTTP/1.1\r\nhost: x\r\n",
        "PR",
    ] {
        assert!(matches!(parse_str(part), Parsed::Partial), "{part:?}");
    }
}

#[test]
fn hands_what_is_not_the_plain_case_to_hyper() {
    for text in [
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n",
        "GET / HTTP/1.1\r\nupgrade: websocket\r\n\r\n",
        "GET / HTTP/1.1\r\nconnection: Upgrade\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n",
        "GET http://example.com/ HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\n\r\n",
    ] {
        assert!(matches!(parse_str(text), Parsed::Fallback), "{text:?}");
    }
}

/// A body whose end cannot be told is refused here, with iDenfy's error body, on whichever path
/// the request would have taken: hyper would refuse each of these too, with a bare 400 of its own.
#[test]
fn refuses_framing_that_tells_no_end_with_400() {
    assert_malformed(&[
        "POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: +2\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 2, 3\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 2, 2\r\n\r\n",
        "POST / HTTP/1.1\r\ncontent-length: 2,2\r\n\r\n",
        "POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 0x2\r\n\r\n",
        "POST http://example.com/ HTTP/1.1\r\ncontent-length: 2 2\r\n\r\n",
        "POST / HTTP/1.0\r\ncontent-length: +2\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encoding: xchunked\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked, identity\r\n\r\n",
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: gzip\r\n\r\n",
        "POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n",
        // Stricter than hyper, which ignores a `content-length` after a chunked coding.
        "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: +2\r\n\r\n",
    ]);
}

/// Each of `heads` is refused as malformed (400).
fn assert_malformed(heads: &[&str]) {
    for text in heads {
        assert!(
            matches!(parse_str(text), Parsed::Refused(Refusal::Malformed)),
            "{text:?}"
        );
    }
}

/// hyper takes a `CONNECT` as an upgrade (the bytes after its head are a tunnel), whatever its
/// target's form: served here in origin-form, the next bytes would be read as requests, which
/// hyper never reads as such (found by tests/differential.rs).
#[test]
fn hands_connect_to_hyper_as_it_hands_upgrades() {
    for text in [
        "CONNECT / HTTP/1.1\r\n\r\n",
        "CONNECT /api/v2/status HTTP/1.1\r\nhost: gw\r\n\r\nGET /api/v2/data HTTP/1.1\r\n\r\n",
    ] {
        assert!(matches!(parse_str(text), Parsed::Fallback), "{text:?}");
    }
}

#[test]
fn refuses_malformed_heads_with_400() {
    assert_malformed(&[
        "GET  / HTTP/1.1\r\n\r\n",
        "GET / HTTP/2.0\r\n\r\n",
        "GET / FTP/1.1\r\n\r\n",
        "G\u{1}T / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nbad header\r\n\r\n",
    ]);
    assert_eq!(
        Refusal::Malformed.error(&LIMITS).status(),
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn refuses_heads_over_the_limit_with_431() {
    let long = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(2000));
    assert!(matches!(
        parse_str(&long),
        Parsed::Refused(Refusal::TooLarge)
    ));
    // Incomplete, but already past the limit.
    assert!(matches!(
        parse_str(&long[..1500]),
        Parsed::Refused(Refusal::TooLarge)
    ));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert!(matches!(
        parse_str(&many),
        Parsed::Refused(Refusal::TooLarge)
    ));
    assert_eq!(
        Refusal::TooLarge.error(&LIMITS).status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
}

#[test]
fn known_header_names_match_in_any_case_and_others_still_parse() {
    for name in [
        "host",
        "accept",
        "user-agent",
        "connection",
        "content-type",
        "x-request-id",
        "authorization",
        "content-length",
        "accept-encoding",
    ] {
        let upper = name.to_ascii_uppercase();
        assert_eq!(header_name(upper.as_bytes()).unwrap(), name);
        assert_eq!(header_name(name.as_bytes()).unwrap(), name);
    }
    assert_eq!(header_name(b"Content-Typf").unwrap(), "content-typf");
    assert_eq!(header_name(b"Hos^").unwrap(), "hos^");
    assert_eq!(header_name(b"X-Other").unwrap(), "x-other");
}
