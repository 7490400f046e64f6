//! The listener's own request-head parser (`src/http1/request.rs`) against hyper's HTTP/1
//! server parser, on ~2,000 requests generated from a small grammar (seeded, so every run sees
//! the same ones) and on the fuzz seed corpora.
//!
//! Each input is read the way the listener reads a connection: requests are taken one after
//! another while they are plain; at the first `Fallback` the listener hands the bytes to hyper,
//! which then decides alone, so nothing further is compared. hyper reads the same bytes over a
//! `tokio::io::duplex`, its service recording what it was given. For every request the gateway
//! serves, hyper must have seen the same method, target, header list, framing and body; where
//! the gateway refuses, hyper refuses too or it is one of the known differences below, each
//! one where the gateway is the stricter. A request the gateway serves and hyper refuses fails
//! the test.
//!
//! | input | gateway | hyper | why |
//! |---|---|---|---|
//! | `Transfer-Encoding` ending in `chunked` (HTTP/1.1), `Expect`, `Upgrade`, `Connection: upgrade`, HTTP/1.0, a target not in origin-form, `PRI `, `CONNECT` | `Fallback` | decides | the plain loop serves only what one `Content-Length` frames; hyper reads what follows a `CONNECT` as a tunnel |
//! | `Transfer-Encoding` not ending in `chunked`, or any in HTTP/1.0 | 400 | 400 | no end can be told (RFC 9112 §6.3, §6.1); the gateway answers with iDenfy's error body |
//! | a second `Content-Length` line with an equal value | `Fallback` | one length | hyper's rule: equal lines are one length |
//! | `Content-Length` values that differ, one not 1 to 19 digits (`+5`, `0x5`, `-1`, 20 digits), a list (`5, 5`) | 400 | 400 | both refuse; the gateway answers with iDenfy's error body |
//! | the same, after a chunked `Transfer-Encoding` line | 400 | served (chunked) | hyper ignores `Content-Length` once it has seen `Transfer-Encoding`; a request with both, one of them malformed, is refused (RFC 9112 §6.1 allows refusing any request with both) |
//! | whitespace around a value (` 5 `), leading zeros (`05`) | 5 | 5 | httparse trims OWS for both; digits are digits |
//! | a head over `max_head` (64 KiB here) and under about twice that | 431 | served | hyper's `max_buf_size` bounds its read buffer, checked after reads that can take it past the bound: on the listener's hyper path heads up to ~2x `listen.max_header_bytes` get through |
//!
//! A gateway refusal of what hyper serves that is not in [`known_stricter`] fails the test
//! until it is judged and added here.
//!
//! Both parsers refuse obs-fold, bare CR, NUL and other control bytes in names and values, a
//! space before the colon, and high bytes in header names (httparse's default configuration on
//! both sides), and both answer more than 100 header lines with 431.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use idenfy_gateway::fuzzing;
use idenfy_gateway::fuzzing::head::{self, HeaderIndices, Limits, Parsed, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The listener's default `listen.max_header_bytes`.
const MAX_HEAD: usize = 64 * 1024;

/// The listener's limits: the default head limit.
fn listener_limits() -> Limits {
    fuzzing::head_limits(MAX_HEAD)
}
/// Generated cases.
const CASES: usize = 2000;

/// One request as a parser handed it on.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    /// The body's length as framed (`None`: chunked).
    length: Option<u64>,
    /// The body, or `None` when the input ended before it did.
    body: Option<Vec<u8>>,
}

/// How the gateway's reading of the input ended, after its plain requests.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// All of it read.
    Done,
    /// A plain request asked to close: nothing after it is read.
    Closed,
    /// The input ended inside a head or a body.
    Incomplete,
    /// Handed to hyper.
    Fallback,
    Refused(Refusal),
}

/// What the listener makes of `input`: the plain requests it serves, and how it stops.
fn gateway(input: &[u8]) -> (Vec<Seen>, End) {
    let mut buf = BytesMut::from(input);
    let limits = listener_limits();
    let mut indices: Vec<HeaderIndices> = Vec::new();
    let mut served = Vec::new();
    loop {
        if buf.is_empty() {
            return (served, End::Done);
        }
        let raw = match head::parse(&buf, &limits, &mut indices) {
            Parsed::Partial => return (served, End::Incomplete),
            Parsed::Fallback => return (served, End::Fallback),
            Parsed::Refused(refusal) => return (served, End::Refused(refusal)),
            Parsed::Plain(raw) => raw,
        };
        let req: Request<()> = match head::take(&mut buf, &raw, &indices) {
            Ok(req) => req,
            Err(refusal) => return (served, End::Refused(refusal)),
        };
        let whole = buf.len() as u64 >= raw.body;
        let body = whole.then(|| buf.split_to(raw.body as usize).to_vec());
        served.push(seen(
            req.method(),
            req.uri(),
            req.headers(),
            Some(raw.body),
            body,
        ));
        if !whole {
            return (served, End::Incomplete);
        }
        if raw.close {
            return (served, End::Closed);
        }
    }
}

fn seen(
    method: &http::Method,
    uri: &http::Uri,
    headers: &http::HeaderMap,
    length: Option<u64>,
    body: Option<Vec<u8>>,
) -> Seen {
    Seen {
        method: method.to_string(),
        target: uri.to_string(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
        length,
        body,
    }
}

/// What hyper's HTTP/1 server made of `input`: the requests its service was given, and the
/// status of the error it answered after them, if any.
async fn hyper(input: &[u8]) -> (Vec<Seen>, Option<u16>, Vec<u8>) {
    let (client, server) = tokio::io::duplex(input.len() + 64 * 1024);
    let served = Arc::new(Mutex::new(Vec::new()));
    let record = served.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let record = record.clone();
        async move {
            let (parts, body) = req.into_parts();
            let length = body.size_hint().exact();
            // The head is recorded before the body is read: a body that never ends (the input
            // is cut short) still leaves its head on record.
            let head = seen(&parts.method, &parts.uri, &parts.headers, length, None);
            let index = {
                let mut record = record.lock().unwrap();
                record.push(head);
                record.len() - 1
            };
            let body = body.collect().await.ok().map(|b| b.to_bytes().to_vec());
            record.lock().unwrap()[index].body = body;
            Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
        }
    });
    // `half_close`: the input ends with the client's write side shut; hyper still answers it.
    let conn = hyper::server::conn::http1::Builder::new()
        .half_close(true)
        .timer(TokioTimer::new())
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(server), service);
    let (mut rd, mut wr) = tokio::io::split(client);
    wr.write_all(input).await.unwrap();
    wr.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let read = rd.read_to_end(&mut answer);
    let _ = tokio::join!(conn, read);
    let served = served.lock().unwrap().clone();
    (served, refusal_status(&answer), answer)
}

/// The first status in hyper's answers that its service did not give (always 200).
fn refusal_status(mut answer: &[u8]) -> Option<u16> {
    loop {
        let mut lines = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut lines);
        let Ok(httparse::Status::Complete(len)) = res.parse(answer) else {
            return None;
        };
        match res.code {
            Some(200) => answer = &answer[len..],
            code => return code,
        }
    }
}

/// How a case came out; the counts are printed, a disagreement fails the test.
#[derive(Debug, Default)]
struct Tally {
    same: usize,
    both_refused: usize,
    fallback: usize,
    gateway_stricter: Vec<String>,
}

async fn compare(input: &[u8], tally: &mut Tally) {
    let (ours, end) = gateway(input);
    let (theirs, refused, answer) = hyper(input).await;
    // At most 300 bytes of the input in a message.
    let shown = || String::from_utf8_lossy(&input[..input.len().min(300)]).into_owned();
    assert!(
        theirs.len() >= ours.len(),
        "the gateway serves a request hyper refuses ({refused:?}): {:?}\ngateway: {ours:?}\nhyper: {theirs:?} answered {:?}",
        shown(),
        String::from_utf8_lossy(&answer[..answer.len().min(300)])
    );
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "request {i} differs: {:?}", shown());
    }
    match end {
        End::Fallback => tally.fallback += 1,
        End::Refused(_) if theirs.len() == ours.len() && refused.is_some() => {
            tally.both_refused += 1
        }
        End::Refused(refusal) => {
            assert!(
                known_stricter(input, refusal),
                "an unknown difference: the gateway refuses ({refusal:?}) what hyper serves ({} bytes): {:?}",
                input.len(),
                shown()
            );
            tally.gateway_stricter.push(shown());
        }
        End::Done | End::Closed | End::Incomplete => {
            let served_more = theirs.len() > ours.len() && end != End::Incomplete;
            assert!(
                !served_more,
                "hyper serves more than the gateway: {:?}",
                shown()
            );
            tally.same += 1;
        }
    }
}

/// The documented cases where the gateway refuses what hyper would serve (the table in the
/// module doc): a head over `max_head`, which hyper takes up to about twice its buffer limit;
/// a head with both framing headers, whose `content-length` hyper ignores once it has seen a
/// `transfer-encoding` line (even when it is not one number).
fn known_stricter(input: &[u8], refusal: Refusal) -> bool {
    let head = input.to_ascii_lowercase();
    let names_line = |name: &[u8]| {
        head.split(|&b| b == b'\n')
            .any(|line| line.trim_ascii_start().starts_with(name))
    };
    refusal == Refusal::TooLarge
        || (refusal == Refusal::Malformed
            && names_line(b"transfer-encoding")
            && names_line(b"content-length"))
}

/// A small request grammar with the odd spellings that matter for framing and smuggling. Each
/// element is usual, or one time in [`ODD`] one of its odd spellings, so that a request carries
/// an odd element or two and the rest stays plain.
struct Grammar(fastrand::Rng);

/// One element in `ODD` is spelled oddly.
const ODD: usize = 16;

impl Grammar {
    fn choose<'a>(&mut self, usual: &[&'a str], odd: &[&'a str]) -> &'a str {
        let from = if self.0.usize(..ODD) == 0 { odd } else { usual };
        from[self.0.usize(..from.len())]
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.0.usize(..n) == 0
    }

    fn eol(&mut self) -> &'static str {
        self.choose(&["\r\n"], &["\n", "\r", "\r\r\n", "\n\r"])
    }

    fn request_line(&mut self) -> String {
        let method = self.choose(
            &[
                "GET", "POST", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH",
            ],
            &[
                "get",
                "CONNECT",
                "PRI",
                "G\u{7f}T",
                "X-CUSTOM!",
                "",
                "TRACE",
            ],
        );
        let target = self.choose(
            &[
                "/api/v2/token",
                "/api/v2/status?x=1&y=%20",
                "/",
                "/kyb/tokens/",
            ],
            &[
                "//api/v2/token",
                "/a b",
                "/a\tb",
                "/caf\u{e9}",
                "/?#frag",
                "*",
                "http://gw/api/v2/token",
                "gw:443",
                "/\u{7f}",
                "",
                "/a\u{0}b",
            ],
        );
        let version = self.choose(
            &["HTTP/1.1"],
            &[
                "HTTP/1.0",
                "HTTP/2.0",
                "HTTP/1.2",
                "http/1.1",
                "HTTP/1.1 ",
                "HTTP/1",
                "HTTP/1.10",
            ],
        );
        let gap = self.choose(&[" "], &["  ", "\t"]);
        format!("{method}{gap}{target} {version}{}", self.eol())
    }

    fn name(&mut self) -> String {
        self.choose(
            &[
                "Host",
                "content-length",
                "Content-Length",
                "transfer-encoding",
                "connection",
                "x-request-id",
                "authorization",
                "x-custom",
                "accept",
            ],
            &[
                "CONTENT-LENGTH",
                "Transfer-Encoding ",
                " Transfer-Encoding",
                "transfer_encoding",
                "Content-Length ",
                "expect",
                "upgrade",
                "x\u{0}y",
                "x y",
                "caf\u{e9}",
                "x\ty",
                "",
            ],
        )
        .to_owned()
    }

    fn value(&mut self, name: &str) -> String {
        let lower = name.trim().to_ascii_lowercase();
        let (usual, odd): (&[&str], &[&str]) = match lower.as_str() {
            "content-length" => (
                &["5", "0", "2"],
                &[
                    " 5 ",
                    "+5",
                    "0x5",
                    "5,5",
                    "5, 6",
                    "05",
                    "-1",
                    "",
                    "18446744073709551616",
                    "99999999999999999999",
                    "5 5",
                    "5\u{0}",
                ],
            ),
            "transfer-encoding" => (
                &["chunked"],
                &[
                    "chunked ",
                    "xchunked",
                    "chunked, identity",
                    "gzip, chunked",
                    "identity",
                    "Chunked",
                    "\tchunked",
                    "chunked\u{0}",
                ],
            ),
            "connection" => (
                &["close", "keep-alive"],
                &["Upgrade", "keep-alive, close", "x"],
            ),
            _ => (
                &["plain", "Bearer fuzz-token", "application/json", "gw"],
                &[
                    "",
                    " leading",
                    "trailing ",
                    "tab\tinside",
                    "caf\u{e9}",
                    "a\u{0}b",
                    "a\rb",
                    "\u{7f}",
                    "100-continue",
                    "h2c",
                ],
            ),
        };
        self.choose(usual, odd).to_owned()
    }

    fn header(&mut self) -> String {
        let name = self.name();
        let value = self.value(&name);
        let colon = self.choose(&[": ", ":"], &[":\t", " : ", ":  ", "\t:"]);
        let mut line = format!("{name}{colon}{value}{}", self.eol());
        if self.one_in(ODD * 2) {
            // obs-fold: the value goes on on the next line.
            line.push_str(&format!(
                "{}folded{}",
                self.choose(&[" "], &["\t"]),
                self.eol()
            ));
        }
        line
    }

    /// A head, and a body or whatever bytes follow it.
    fn request(&mut self) -> String {
        let mut text = self.request_line();
        for _ in 0..self.0.usize(..6) {
            text.push_str(&self.header());
        }
        text.push_str(self.eol());
        text.push_str(self.choose(
            &["", "", "{}", "hello"],
            &[
                "0\r\n\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
                "2\r\n{}\r\n0\r\n\r\nGET",
            ],
        ));
        text
    }

    /// One to three requests back to back.
    fn input(&mut self) -> Vec<u8> {
        let count = 1 + usize::from(self.one_in(3)) + usize::from(self.one_in(6));
        (0..count)
            .map(|_| self.request())
            .collect::<String>()
            .into_bytes()
    }
}

/// The fuzz seeds of the request targets, without their `knob, count, sizes` prefix.
fn corpus() -> Vec<Vec<u8>> {
    let mut inputs = Vec::new();
    for target in ["request_head", "listener"] {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        for entry in std::fs::read_dir(&dir).expect("the fuzz seed corpus") {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            let skip = 2 + usize::from(data[1] % 8);
            inputs.push(data[skip..].to_vec());
        }
    }
    inputs
}

/// Heads at the limits: over 64 KiB, and over 100 header lines.
fn at_the_limits() -> Vec<Vec<u8>> {
    let big = format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(70_000));
    let many: String = (0..101).map(|i| format!("x-{i}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
    let under: String = (0..99).map(|i| format!("x-{i}: v\r\n")).collect();
    let under = format!("GET / HTTP/1.1\r\n{under}\r\n");
    vec![big.into_bytes(), many.into_bytes(), under.into_bytes()]
}

#[tokio::test]
async fn the_listener_parser_agrees_with_hypers_or_is_stricter() {
    let mut grammar = Grammar(fastrand::Rng::with_seed(13));
    let mut tally = Tally::default();
    let generated: Vec<Vec<u8>> = (0..CASES).map(|_| grammar.input()).collect();
    for input in generated.iter().chain(&corpus()).chain(&at_the_limits()) {
        compare(input, &mut tally).await;
    }
    println!(
        "same {}, both refused {}, handed to hyper {}, gateway stricter {}",
        tally.same,
        tally.both_refused,
        tally.fallback,
        tally.gateway_stricter.len()
    );
    // The grammar reaches every outcome: a change that made one disappear would go unnoticed.
    assert!(
        tally.same > 100 && tally.both_refused > 100 && tally.fallback > 100,
        "{tally:?}"
    );
}
