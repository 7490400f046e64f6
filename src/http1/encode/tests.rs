use http::{HeaderName, HeaderValue};

use super::*;

fn head_text(status: StatusCode, headers: &HeaderMap, framing: Framing, close: bool) -> String {
    let mut out = b"left over".to_vec();
    encode_head(&mut out, status, headers, framing, close);
    String::from_utf8(out).unwrap()
}

#[test]
fn writes_status_headers_date_and_length() {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.append("x-two", HeaderValue::from_static("a"));
    headers.append("x-two", HeaderValue::from_static("b"));
    let text = head_text(StatusCode::OK, &headers, Framing::Length(42), false);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"));
    assert!(text.contains("\r\nx-two: a\r\nx-two: b\r\n"));
    assert!(text.ends_with("\r\ncontent-length: 42\r\n\r\n"), "{text}");
    let date = text
        .lines()
        .find_map(|l| l.strip_prefix("date: "))
        .expect("a date");
    assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    assert!(!text.contains("connection"));
}

#[test]
fn replaces_the_stacks_framing_and_keeps_its_date() {
    let mut headers = HeaderMap::new();
    headers.insert("content-length", HeaderValue::from_static("7"));
    headers.insert("transfer-encoding", HeaderValue::from_static("gzip"));
    headers.insert("connection", HeaderValue::from_static("keep-alive"));
    headers.insert(
        "date",
        HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
    );
    let text = head_text(StatusCode::BAD_GATEWAY, &headers, Framing::Chunked, true);
    assert_eq!(
        text,
        "HTTP/1.1 502 Bad Gateway\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
}

#[test]
fn writes_an_empty_reason_for_unknown_statuses() {
    let status = StatusCode::from_u16(599).unwrap();
    let text = head_text(status, &HeaderMap::new(), Framing::Empty, false);
    assert!(text.starts_with("HTTP/1.1 599 \r\n"), "{text}");
    assert!(!text.contains("content-length"));
}

#[test]
fn plans_the_framing_by_status_method_and_size() {
    let none = HeaderMap::new();
    let exact = SizeHint::with_exact(5);
    let unknown = SizeHint::new();
    let p = plan(StatusCode::OK, false, &exact, &none);
    assert_eq!((p.framing, p.body), (Framing::Length(5), true));
    let p = plan(StatusCode::OK, false, &SizeHint::with_exact(0), &none);
    assert_eq!((p.framing, p.body), (Framing::Length(0), true));
    let p = plan(StatusCode::OK, false, &unknown, &none);
    assert_eq!((p.framing, p.body), (Framing::Chunked, true));
    for status in [
        StatusCode::NO_CONTENT,
        StatusCode::NOT_MODIFIED,
        StatusCode::CONTINUE,
    ] {
        let p = plan(status, false, &exact, &none);
        assert_eq!((p.framing, p.body), (Framing::Empty, false), "{status}");
    }
    // HEAD: the length of the body not sent, as the stack (iDenfy) declared it.
    let mut declared = HeaderMap::new();
    declared.insert("content-length", HeaderValue::from_static("1234"));
    let p = plan(StatusCode::OK, true, &SizeHint::with_exact(0), &declared);
    assert_eq!((p.framing, p.body), (Framing::Length(1234), false));
    let p = plan(StatusCode::OK, true, &SizeHint::with_exact(3), &none);
    assert_eq!((p.framing, p.body), (Framing::Length(3), false));
}

#[test]
fn frames_chunks_in_hex() {
    let mut out = Vec::new();
    push_chunk_size(&mut out, 0x1a2f);
    push_chunk_size(&mut out, 0);
    push_chunk_size(&mut out, 9);
    assert_eq!(out, b"1a2f\r\n0\r\n9\r\n");
}

#[test]
fn formats_the_date_once_per_second() {
    let at = UNIX_EPOCH + std::time::Duration::from_secs(784_111_777);
    let mut out = Vec::new();
    push_date(&mut out, at);
    push_date(&mut out, at + std::time::Duration::from_millis(500));
    assert_eq!(
        out,
        b"Sun, 06 Nov 1994 08:49:37 GMTSun, 06 Nov 1994 08:49:37 GMT"
    );
    out.clear();
    push_date(&mut out, at + std::time::Duration::from_secs(1));
    assert_eq!(out, b"Sun, 06 Nov 1994 08:49:38 GMT");
}

// The request head the upstream client writes.

fn encode(method: Method, target: &str, headers: &[(&str, &str)], body: &[u8]) -> (String, bool) {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let mut out = b"left over".to_vec();
    let head = RequestHead {
        method: &method,
        target,
        host: b"ivs.idenfy.com",
        authorization: &HeaderValue::from_static("Basic a2V5OnM="),
        headers: &map,
    };
    let inline = encode_request(&mut out, head, body);
    (String::from_utf8(out).unwrap(), inline)
}

#[test]
fn encodes_the_request_head_host_credentials_headers_and_a_small_body_in_one_buffer() {
    let (text, inline) = encode(
        Method::POST,
        "/api/v2/token?x=1",
        &[
            ("content-type", "application/json"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ],
        b"{\"clientId\":\"c\"}",
    );
    assert!(inline);
    assert_eq!(
        text,
        "POST /api/v2/token?x=1 HTTP/1.1\r\nhost: ivs.idenfy.com\r\nauthorization: Basic a2V5OnM=\r\n\
         accept-encoding: identity\r\ncontent-type: application/json\r\nx-multi: a\r\nx-multi: b\r\ncontent-length: 16\r\n\r\n\
         {\"clientId\":\"c\"}"
    );
}

#[test]
fn replaces_the_callers_framing_host_and_credentials() {
    let (text, _) = encode(
        Method::POST,
        "/api/v2/status",
        &[
            ("host", "gateway.local"),
            ("authorization", "Bearer team-token"),
            ("authorization", "Basic dGVhbTp0b2tlbg=="),
            ("content-length", "999"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("accept-encoding", "gzip, deflate, br"),
        ],
        b"{}",
    );
    assert_eq!(
        text,
        "POST /api/v2/status HTTP/1.1\r\nhost: ivs.idenfy.com\r\nauthorization: Basic a2V5OnM=\r\n\
         accept-encoding: identity\r\ncontent-length: 2\r\n\r\n{}"
    );
}

#[test]
fn sends_a_zero_length_only_for_methods_with_a_body() {
    let (post, _) = encode(Method::POST, "/a", &[], b"");
    assert!(post.ends_with("content-length: 0\r\n\r\n"), "{post}");
    let (get, _) = encode(Method::GET, "/a", &[], b"");
    assert_eq!(
        get,
        "GET /a HTTP/1.1\r\nhost: ivs.idenfy.com\r\nauthorization: Basic a2V5OnM=\r\n\
         accept-encoding: identity\r\n\r\n"
    );
    let (empty_target, _) = encode(Method::GET, "", &[], b"");
    assert!(empty_target.starts_with("GET / HTTP/1.1\r\n"));
}

#[test]
fn leaves_a_large_body_out_of_the_head_buffer() {
    let body = vec![b'x'; INLINE_BODY];
    let (text, inline) = encode(Method::PUT, "/a", &[], &body);
    assert!(!inline);
    assert!(text.ends_with("content-length: 16384\r\n\r\n"), "{text}");
}

#[test]
fn decimal_lengths_are_written_without_format() {
    for n in [0u64, 7, 10, 65_535, u64::MAX] {
        let mut out = Vec::new();
        push_decimal(&mut out, n);
        assert_eq!(out, n.to_string().into_bytes());
    }
}
