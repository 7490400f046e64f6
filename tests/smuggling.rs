//! Request smuggling and pipelining over real sockets: a gateway in front of a scripted upstream
//! that records what it receives. Each attack is written in one go on one connection; the test
//! checks what the client got (statuses, whether the connection closed) and that the upstream
//! received exactly the intended requests, never one smuggled inside another's body or behind a
//! framing the two parsers could read differently. A connection left open is then probed with
//! one more request, which must be answered as itself (the gateway is still in step).
//!
//! The plain loop (`server/h1`) serves heads framed by one `Content-Length` alone and hands
//! everything else to hyper, so the cases cover both parsers and the hand-over between them.

mod support;

use std::time::Duration;

use support::gateway::with_mock_upstream;
use support::wire::{connect, Raw, Reader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The team's credentials and a host, for every request here.
const HEAD: &str = "host: gw\r\nauthorization: Bearer team-token\r\n";

fn get(target: &str) -> String {
    format!("GET {target} HTTP/1.1\r\n{HEAD}\r\n")
}

/// A request that would be a second one, if some reading of the first let it out of its body.
fn smuggled() -> String {
    get("/api/v2/data?smuggled")
}

/// A `POST /api/v2/status` with `lines` (each ending in CRLF) and then `rest`.
fn post(lines: &str, rest: &str) -> String {
    format!("POST /api/v2/status HTTP/1.1\r\n{HEAD}{lines}\r\n{rest}")
}

async fn send(wire: &mut Reader, text: &str) {
    wire.stream
        .write_all(text.as_bytes())
        .await
        .expect("writes");
}

/// What an attack must come to.
struct Expect<'a> {
    statuses: &'a [u16],
    closed: bool,
    /// What the upstream receives, in order: `METHOD target` and body.
    forwarded: &'a [(&'a str, &'a str)],
}

/// Both refusals end the same way: the answer, the connection closed, nothing forwarded.
const REFUSED: Expect<'static> = Expect {
    statuses: &[400],
    closed: true,
    forwarded: &[],
};

/// A body framed as chunked, and the connection closed after the answer: the one status call
/// forwarded with the empty body the chunks spelled, nothing after it.
const READ_AS_CHUNKED: Expect<'static> = Expect {
    statuses: &[200],
    closed: true,
    forwarded: &[("POST /api/v2/status", "")],
};

/// One status call with a chunked body (`{}`), which the loop hands to hyper: hyper serves it
/// and closes the connection, as it does after every request handed to it.
const ONE_HANDED_OVER_CALL: Expect<'static> = Expect {
    statuses: &[200],
    closed: true,
    forwarded: &[("POST /api/v2/status", "{}")],
};

/// A pipeline cut at its third request: the two before it answered 200 and `forwarded`, the
/// third refused 400, the connection closed, nothing after it forwarded.
fn cut_at_the_third<'a>(forwarded: &'a [(&'a str, &'a str); 2]) -> Expect<'a> {
    Expect {
        statuses: &[200, 200, 400],
        closed: true,
        forwarded,
    }
}

/// Sends `attack` on a new connection to a new gateway and checks it came to `expect`; returns
/// the answers.
async fn attack(attack: &str, expect: Expect<'_>) -> Vec<Raw> {
    let (upstream, gw) = with_mock_upstream("").await;
    let mut wire = connect(&gw).await;
    send(&mut wire, attack).await;
    let mut answers = Vec::new();
    for _ in expect.statuses {
        let answer = wire.response(false).await;
        if answer.status == 400 {
            refused_in_idenfys_shape(&answer, attack);
        }
        answers.push(answer);
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, expect.statuses, "answers to {attack:?}");
    let mut forwarded: Vec<(String, String)> = expect
        .forwarded
        .iter()
        .map(|(line, body)| ((*line).to_owned(), (*body).to_owned()))
        .collect();
    if expect.closed {
        assert!(
            wire.closed().await,
            "the connection stays open after {attack:?}"
        );
    } else {
        send(&mut wire, &get("/api/v2/status?probe")).await;
        let probe = wire.response(false).await;
        assert_eq!(probe.status, 200, "the probe after {attack:?}");
        forwarded.push(("GET /api/v2/status?probe".to_owned(), String::new()));
    }
    let received: Vec<(String, String)> = upstream
        .received()
        .iter()
        .map(|r| {
            let body = String::from_utf8_lossy(&r.body).into_owned();
            (format!("{} {}", r.method, r.uri), body)
        })
        .collect();
    assert_eq!(
        received, forwarded,
        "what the upstream received from {attack:?}"
    );
    answers
}

/// A refusal is the gateway's, whichever parser the request met: iDenfy's error body and
/// `x-gateway-error`, never a bare 400 of the HTTP library.
fn refused_in_idenfys_shape(answer: &Raw, attack: &str) {
    assert_eq!(
        answer.header("x-gateway-error"),
        Some("malformed_request"),
        "the 400 to {attack:?}: {answer:?}"
    );
    let body: serde_json::Value = serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("the 400 to {attack:?} is not JSON ({e}): {answer:?}"));
    assert_eq!(body["identifier"], "BAD_REQUEST", "{attack:?}");
    assert!(body["message"].is_string(), "{attack:?}");
}

/// CL.TE: a reader that frames by `Content-Length` would take `0\r\n\r\n` as the body and
/// `G...` as the next request; chunked wins, and a request with both is the connection's last.
#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_and_ends_the_connection() {
    let lines = format!("content-length: {}\r\ntransfer-encoding: chunked\r\n", 5);
    let body = format!("0\r\n\r\n{}", smuggled());
    attack(&post(&lines, &body), READ_AS_CHUNKED).await;
}

/// TE.CL: a reader that frames by `Content-Length: 4` would find a request inside the chunk.
#[tokio::test]
async fn chunked_with_a_short_content_length_keeps_the_whole_chunk_as_body() {
    let inner = smuggled();
    let body = format!("{:x}\r\n{inner}\r\n0\r\n\r\n", inner.len());
    let lines = "transfer-encoding: chunked\r\ncontent-length: 4\r\n";
    let expect = Expect {
        statuses: &[200],
        closed: true,
        forwarded: &[("POST /api/v2/status", &inner)],
    };
    attack(&post(lines, &body), expect).await;
}

#[tokio::test]
async fn equal_duplicate_content_lengths_are_one_length() {
    let lines = "content-length: 2\r\ncontent-length: 2\r\n";
    attack(&post(lines, "{}"), ONE_HANDED_OVER_CALL).await;
}

#[tokio::test]
async fn differing_content_lengths_are_refused() {
    let lines = "content-length: 2\r\ncontent-length: 7\r\n";
    attack(&post(lines, &format!("{{}}{}", smuggled())), REFUSED).await;
}

#[tokio::test]
async fn content_lengths_that_are_not_plain_digits_are_refused() {
    for value in [
        "+2",
        "0x2",
        "2,2",
        "2, 2",
        "-2",
        "2 2",
        "",
        "18446744073709551618",
    ] {
        let lines = format!("content-length: {value}\r\n");
        attack(&post(&lines, &format!("{{}}{}", smuggled())), REFUSED).await;
    }
}

/// Whitespace around a field value is not part of it (RFC 9110 §5.5): ` 2 ` is 2, and what
/// follows the body is the next request, as its client meant.
#[tokio::test]
async fn whitespace_around_a_content_length_is_not_part_of_it() {
    let next = get("/api/v2/data?next");
    let expect = Expect {
        statuses: &[200, 200],
        closed: false,
        forwarded: &[("POST /api/v2/status", "{}"), ("GET /api/v2/data?next", "")],
    };
    attack(
        &post("content-length:  2 \r\n", &format!("{{}}{next}")),
        expect,
    )
    .await;
}

/// Spellings of `Transfer-Encoding` that one parser might take for chunked and another not,
/// each with a `Content-Length` that frames a request behind the body.
#[tokio::test]
async fn obfuscated_transfer_encodings_are_chunked_or_refused_never_ignored() {
    let chunked_body = format!("0\r\n\r\n{}", smuggled());
    for te in [
        "transfer-encoding: chunked \r\n",
        "Transfer-Encoding:\tchunked\r\n",
    ] {
        let lines = format!("{te}content-length: 5\r\n");
        attack(&post(&lines, &chunked_body), READ_AS_CHUNKED).await;
    }
    for te in [
        "transfer-encoding: xchunked\r\n",
        "transfer-encoding: chunked, identity\r\n",
        "transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n",
        "transfer-encoding : chunked\r\n",
        "transfer-encoding\t: chunked\r\n",
        " transfer-encoding: chunked\r\n",
    ] {
        let lines = format!("{te}content-length: 5\r\n");
        attack(&post(&lines, &chunked_body), REFUSED).await;
    }
}

/// A `Content-Length` that is not one number is refused on whichever path the request would
/// have taken: after a chunked coding (which hyper would serve, ignoring the length), and in
/// requests the plain loop hands to hyper (`Expect`, HTTP/1.0, absolute-form).
#[tokio::test]
async fn a_malformed_length_is_refused_on_every_path() {
    let chunked_body = format!("0\r\n\r\n{}", smuggled());
    for lines in [
        "transfer-encoding: chunked\r\ncontent-length: +5\r\n",
        "transfer-encoding: chunked\r\ncontent-length: 5\r\ncontent-length: 6\r\n",
        "expect: 100-continue\r\ncontent-length: 0x5\r\n",
    ] {
        attack(&post(lines, &chunked_body), REFUSED).await;
    }
    for line in [
        "POST /api/v2/status HTTP/1.0",
        "POST http://gw/api/v2/status HTTP/1.1",
    ] {
        let text = format!(
            "{line}\r\n{HEAD}content-length: 2, 2\r\n\r\n{{}}{}",
            smuggled()
        );
        attack(&text, REFUSED).await;
    }
}

/// Two `Transfer-Encoding` lines are one list: `identity, chunked` ends in chunked.
#[tokio::test]
async fn two_transfer_encoding_lines_are_read_as_one_list() {
    let lines = "transfer-encoding: identity\r\ntransfer-encoding: chunked\r\n";
    attack(&post(lines, "2\r\n{}\r\n0\r\n\r\n"), ONE_HANDED_OVER_CALL).await;
}

#[tokio::test]
async fn obs_fold_is_refused() {
    for lines in [
        "x-a: one\r\n two\r\n",
        "transfer-encoding:\r\n chunked\r\ncontent-length: 5\r\n",
        "content-length: 5\r\n\tx-folded: 1\r\n",
    ] {
        attack(&post(lines, &format!("0\r\n\r\n{}", smuggled())), REFUSED).await;
    }
}

#[tokio::test]
async fn bare_cr_and_nul_are_refused() {
    for lines in [
        "x-a: a\rb\r\n",
        "x-a: a\r\rcontent-length: 5\r\n",
        "x-a: a\0b\r\n",
        "x\0a: b\r\n",
        "content-length: 2\0\r\n",
    ] {
        attack(&post(lines, &format!("{{}}{}", smuggled())), REFUSED).await;
    }
    let bare_cr_line = format!("GET /api/v2/status HTTP/1.1\r{HEAD}\r\n");
    attack(&bare_cr_line, REFUSED).await;
}

/// HTTP/1.0 has no transfer codings (RFC 9112 §6.1): a 1.0 request that names one is refused.
#[tokio::test]
async fn http_1_0_with_transfer_encoding_is_refused() {
    let text = format!(
        "POST /api/v2/status HTTP/1.0\r\n{HEAD}transfer-encoding: chunked\r\n\
         content-length: 5\r\n\r\n0\r\n\r\n{}",
        smuggled()
    );
    attack(&text, REFUSED).await;
}

/// Pipelined requests on the plain loop: the ones before a malformed request are answered,
/// the malformed one gets 400 and the connection closes, and the ones after it never reach
/// the upstream.
#[tokio::test]
async fn a_malformed_request_mid_pipeline_ends_it_after_the_earlier_answers() {
    let pipeline = [
        post("content-length: 2\r\n", "{}"),
        get("/api/v2/status?n=2"),
        format!("GET  /api/v2/status?n=3 HTTP/1.1\r\n{HEAD}\r\n"),
        get("/api/v2/status?n=4"),
    ]
    .concat();
    let forwarded = [
        ("POST /api/v2/status", "{}"),
        ("GET /api/v2/status?n=2", ""),
    ];
    attack(&pipeline, cut_at_the_third(&forwarded)).await;
}

/// The same pipeline with a chunked request second: the plain loop hands the connection to
/// hyper for it, and hyper serves that one request and closes (`connection: close`). The
/// malformed request after it is read by no parser, so no refusal is ever hyper's own bare 400,
/// and nothing after it is forwarded.
#[tokio::test]
async fn a_pipeline_ends_after_the_request_handed_over_to_hyper() {
    let pipeline = [
        get("/api/v2/status?n=1"),
        post("transfer-encoding: chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"),
        post("transfer-encoding: xchunked\r\n", "0\r\n\r\n"),
        get("/api/v2/status?n=4"),
    ]
    .concat();
    let expect = Expect {
        statuses: &[200, 200],
        closed: true,
        forwarded: &[
            ("GET /api/v2/status?n=1", ""),
            ("POST /api/v2/status", "{}"),
        ],
    };
    let answers = attack(&pipeline, expect).await;
    assert_eq!(
        answers[0].header("connection"),
        None,
        "the loop keeps it open"
    );
    assert_eq!(
        answers[1].header("connection"),
        Some("close"),
        "hyper closes"
    );
}

/// `CONNECT` turns a connection into a tunnel for hyper and for any proxy in front of the
/// gateway: what follows its head is not a request, and must never be forwarded as one.
/// A method no iDenfy route has, on the listener's own loop: 405, the connection closes, and
/// neither it nor what follows it is forwarded.
#[tokio::test]
async fn a_method_idenfy_has_no_route_for_is_refused_and_ends_the_connection() {
    for method in ["TRACE", "BREW"] {
        let text = format!(
            "{method} /api/v2/status HTTP/1.1\r\n{HEAD}\r\n{}",
            smuggled()
        );
        let expect = Expect {
            statuses: &[405],
            closed: true,
            forwarded: &[],
        };
        attack(&text, expect).await;
    }
}

#[tokio::test]
async fn nothing_after_a_connect_head_is_forwarded_as_a_request() {
    let (upstream, gw) = with_mock_upstream("").await;
    let mut wire = connect(&gw).await;
    let text = format!(
        "CONNECT /api/v2/status HTTP/1.1\r\n{HEAD}\r\n{}",
        smuggled()
    );
    send(&mut wire, &text).await;
    // Refused (405: no iDenfy route has that method), the connection ends, and nothing is
    // forwarded: neither the CONNECT nor a request read out of the tunnel.
    let mut rest = Vec::new();
    let read = wire.stream.read_to_end(&mut rest);
    let ended = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .is_ok();
    let answer = String::from_utf8_lossy(&rest);
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer:?}");
    assert!(
        answer.contains("x-gateway-error: method_not_allowed"),
        "{answer:?}"
    );
    let received: Vec<String> = upstream.received().iter().map(|r| r.uri.clone()).collect();
    assert!(received.is_empty(), "forwarded: {received:?}");
    assert!(ended, "the connection stays open");
}
