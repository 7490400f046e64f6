use super::*;

/// Parses one complete head of `text` (the bytes after it are the body) for a `method` request.
fn head(method: Method, text: &str) -> Result<ResponseHead, CodecError> {
    let mut indices = Vec::new();
    let raw = parse_head(text.as_bytes(), &mut indices)?.expect("a complete head");
    let bytes = Bytes::copy_from_slice(&text.as_bytes()[..raw.len]);
    build_head(&bytes, &raw, &indices, &method)
}

fn get(text: &str) -> Result<ResponseHead, CodecError> {
    head(Method::GET, text)
}

#[test]
fn parses_status_headers_and_content_length() {
    let res =
        get("HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nContent-Length: 12\r\n\r\n")
            .unwrap();
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(res.headers["content-type"], "application/json");
    assert_eq!(res.framing, Framing::Length(12));
    assert!(res.reusable);
}

#[test]
fn waits_for_an_incomplete_head() {
    let mut indices = Vec::new();
    for partial in ["", "HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\ncontent-le"] {
        assert!(parse_head(partial.as_bytes(), &mut indices)
            .unwrap()
            .is_none());
    }
}

#[test]
fn interim_answers_are_recognised_and_101_refused() {
    let mut indices = Vec::new();
    for interim in [
        "HTTP/1.1 100 Continue\r\n\r\n",
        "HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n",
    ] {
        let raw = parse_head(interim.as_bytes(), &mut indices)
            .unwrap()
            .unwrap();
        assert!(raw.is_interim());
        assert_eq!(raw.len, interim.len());
    }
    let upgrade = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n";
    assert_eq!(
        parse_head(upgrade, &mut indices).unwrap_err(),
        CodecError::SwitchingProtocols
    );
}

#[test]
fn refuses_malformed_status_lines_and_headers() {
    for bad in [
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 abc OK\r\n\r\n",
        "HTTP/2.0 200 OK\r\n\r\n",
        "SMTP 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        "HTTP/1.1 200 OK\r\nx: a\x01b\r\n\r\n",
    ] {
        let mut indices = Vec::new();
        assert!(
            parse_head(bad.as_bytes(), &mut indices).is_err(),
            "accepted {bad:?}"
        );
    }
}

#[test]
fn refuses_heads_over_the_limits() {
    let mut indices = Vec::new();
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    let text = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    assert_eq!(
        parse_head(text.as_bytes(), &mut indices).unwrap_err(),
        CodecError::TooLarge
    );
    let endless = format!("HTTP/1.1 200 OK\r\nx-big: {}", "a".repeat(MAX_HEAD));
    assert_eq!(
        parse_head(endless.as_bytes(), &mut indices).unwrap_err(),
        CodecError::TooLarge
    );
}

#[test]
fn refuses_invalid_or_conflicting_content_lengths() {
    for bad in [
        "content-length: -1",
        "content-length: 1e3",
        "content-length: ",
        "content-length: 99999999999999999999",
        "content-length: 5\r\ncontent-length: 6",
        "content-length: 5, 6",
    ] {
        let text = format!("HTTP/1.1 200 OK\r\n{bad}\r\n\r\n");
        assert_eq!(get(&text).unwrap_err(), CodecError::ContentLength, "{bad}");
    }
    let same = get("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5, 5\r\n\r\n");
    let same = same.unwrap();
    assert_eq!(same.framing, Framing::Length(5));
    let lengths: Vec<_> = same.headers.get_all("content-length").iter().collect();
    assert_eq!(lengths, ["5"], "one value passed on");
    let listed = head(
        Method::HEAD,
        "HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n",
    );
    assert_eq!(listed.unwrap().headers["content-length"], "7");
}

#[test]
fn refuses_status_codes_outside_100_to_599() {
    let mut indices = Vec::new();
    for bad in ["000", "099", "600", "999"] {
        let text = format!("HTTP/1.1 {bad} Odd\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(
            parse_head(text.as_bytes(), &mut indices).unwrap_err(),
            CodecError::Status,
            "{bad}"
        );
    }
    for good in ["100", "599"] {
        let text = format!("HTTP/1.1 {good} Edge\r\ncontent-length: 0\r\n\r\n");
        assert!(parse_head(text.as_bytes(), &mut indices).is_ok(), "{good}");
    }
}

#[test]
fn no_body_for_head_requests_204_and_304() {
    let with_length = "HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n";
    let res = head(Method::HEAD, with_length).unwrap();
    assert_eq!(res.framing, Framing::Empty);
    assert_eq!(res.headers["content-length"], "42");
    assert!(res.reusable);
    for status in ["204 No Content", "304 Not Modified"] {
        let text = format!("HTTP/1.1 {status}\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!(get(&text).unwrap().framing, Framing::Empty, "{status}");
    }
}

#[test]
fn a_204_that_announces_a_body_leaves_its_connection_unused() {
    for announced in ["content-length: 5", "transfer-encoding: chunked"] {
        let text = format!("HTTP/1.1 204 No Content\r\n{announced}\r\n\r\n");
        assert!(!get(&text).unwrap().reusable, "{announced}");
    }
    let plain = get("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").unwrap();
    assert!(plain.reusable);
    // A 304, as a HEAD answer, may carry the length of what it stands for (RFC 9110 §8.6).
    let not_modified = get("HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n");
    assert!(not_modified.unwrap().reusable);
}

#[test]
fn chunked_wins_over_content_length_and_the_connection_is_not_reused() {
    let res =
        get("HTTP/1.1 200 OK\r\ncontent-length: 10\r\ntransfer-encoding: gzip, Chunked\r\n\r\n")
            .unwrap();
    assert_eq!(res.framing, Framing::Chunked);
    assert!(res.headers.get("content-length").is_none());
    assert!(!res.reusable);
    let plain = get("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
    assert_eq!(plain.framing, Framing::Chunked);
    assert!(plain.reusable);
}

#[test]
fn a_body_without_length_runs_to_the_end_of_the_connection() {
    for text in [
        "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n",
        "HTTP/1.1 200 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
    ] {
        let res = get(text).unwrap();
        assert_eq!(res.framing, Framing::Eof, "{text}");
        assert!(!res.reusable, "{text}");
    }
}

#[test]
fn reuse_follows_connection_close_and_http_1_0_keep_alive() {
    let close =
        get("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n");
    assert!(!close.unwrap().reusable);
    let old = get("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
    assert!(!old.reusable);
    let old_kept = get("HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n");
    assert!(old_kept.unwrap().reusable);
}

#[test]
fn header_values_share_the_head_bytes() {
    let text = "HTTP/1.1 200 OK\r\nx-idenfy: abc\r\nx-idenfy: def\r\ncontent-length: 0\r\n\r\n";
    let res = get(text).unwrap();
    let values: Vec<_> = res.headers.get_all("x-idenfy").iter().collect();
    assert_eq!(values, ["abc", "def"]);
    assert_eq!(res.headers.len(), 3);
}

#[test]
fn connection_options_are_dropped_and_connection_naming_a_header_is_kept_for_the_strip() {
    let res = get(
        "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n",
    )
    .unwrap();
    assert!(res.reusable);
    assert!(!res.headers.contains_key(header::CONNECTION));
    assert!(!res.headers.contains_key("keep-alive"));
    assert!(res.headers.contains_key("x-a"));
    let named =
        get("HTTP/1.1 200 OK\r\nConnection: close, x-a\r\nx-a: 1\r\ncontent-length: 0\r\n\r\n")
            .unwrap();
    assert!(!named.reusable);
    // Names another header: left in place, so that the hop-by-hop strip removes both.
    assert!(named.headers.contains_key(header::CONNECTION));
}

#[test]
fn known_header_names_match_in_any_case_and_others_still_parse() {
    for name in [
        "date",
        "vary",
        "server",
        "connection",
        "keep-alive",
        "content-type",
        "x-request-id",
        "cache-control",
        "content-length",
        "transfer-encoding",
    ] {
        let upper = name.to_ascii_uppercase();
        assert_eq!(header_name(upper.as_bytes()).unwrap(), name);
        assert_eq!(header_name(name.as_bytes()).unwrap(), name);
    }
    assert_eq!(header_name(b"Dat^").unwrap(), "dat^");
    assert_eq!(header_name(b"X-Other").unwrap(), "x-other");
    assert_eq!(header_name(b"bad name"), Err(CodecError::Malformed));
}
