//! Where a message's body ends (RFC 9112 §6.3): what a head's framing and connection headers
//! say ([`Headers`], gathered line by line by both head parsers), and [`body`], the one decision
//! made from them for a request the listener reads and for an answer the upstream client reads.
//! The answers the listener writes are planned from the same rule for which carry no body
//! ([`bodiless`]).

use http::{Method, StatusCode};

use super::same_token;

/// How a body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body, whatever the headers say (a `HEAD` answer, 1xx, 204, 304), or none announced
    /// (a request without a length).
    Empty,
    /// `content-length`.
    Length(u64),
    /// `transfer-encoding` ending in `chunked`.
    Chunked,
    /// Until the connection closes: an answer with neither header, or with codings not ending in
    /// `chunked`. Never written by the listener: it knows each body's length or chunks it.
    Eof,
}

/// The message a body belongs to.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    Request,
    /// An answer to a `method` request.
    Response {
        method: &'a Method,
        status: StatusCode,
    },
}

/// What a head's framing and connection headers say.
#[derive(Debug, Default, Clone, Copy)]
pub struct Headers {
    /// The `content-length`, when every value given is this one.
    pub length: Option<u64>,
    /// `content-length` values seen: lines, and items of a list.
    pub lengths: u32,
    /// A `content-length` value that is not 1 to 19 digits, or that differs from another.
    pub bad_length: bool,
    /// A `content-length` line holding a list (`5, 5`), equal values or not.
    pub length_list: bool,
    pub transfer_encoding: bool,
    /// The last transfer coding named is `chunked`: only then is the body chunked.
    pub chunked: bool,
    /// `connection: close`.
    pub close: bool,
    /// `connection: keep-alive` (what keeps an HTTP/1.0 answer's connection).
    pub keep_alive: bool,
    /// `connection: upgrade`.
    pub upgrade: bool,
}

impl Headers {
    /// Notes one header line; `false` when it is none of `content-length`, `transfer-encoding`
    /// and `connection`. Names are told by length first: most lines are none of the three.
    pub fn note(&mut self, name: &[u8], value: &[u8]) -> bool {
        match name.len() {
            14 if same_token(name, b"content-length") => {
                self.length_list |= value.contains(&b',');
                for item in value.split(|&b| b == b',') {
                    match parse_length(item.trim_ascii()) {
                        Some(n) if self.length.is_none_or(|seen| seen == n) => {
                            self.length = Some(n);
                        }
                        _ => self.bad_length = true,
                    }
                    self.lengths += 1;
                }
            }
            17 if same_token(name, b"transfer-encoding") => {
                self.transfer_encoding = true;
                // Only the last coding counts, over every line (two lines are one list).
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                self.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            10 if same_token(name, b"connection") => {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    self.close |= token.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                    self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
                }
            }
            _ => return false,
        }
        true
    }
}

/// Where the body of `message` ends (RFC 9112 §6.3); `None` when it cannot be told: a bad
/// `content-length`, or a request whose codings do not end in `chunked` (both refused).
///
/// 0. A bad `content-length` is refused whatever else the head says: a message that carries one
///    is not to be trusted about its end (§6.3 items 3 and 5).
/// 1. A `HEAD` answer, a 1xx, 204 or 304 has none, whatever its headers say.
/// 2. `transfer-encoding` wins over `content-length`: chunked when its last coding is; else an
///    answer runs to the end of its connection, and a request is refused.
/// 3. `content-length`, when all its values agree.
/// 4. Neither: an answer runs to the end of its connection; a request has no body.
pub fn body(message: Message<'_>, headers: &Headers) -> Option<Framing> {
    if headers.bad_length {
        return None;
    }
    let request = match message {
        Message::Request => true,
        Message::Response { method, status } => {
            if method == Method::HEAD || bodiless(status) {
                return Some(Framing::Empty);
            }
            false
        }
    };
    if headers.transfer_encoding {
        return match (headers.chunked, request) {
            (true, _) => Some(Framing::Chunked),
            (false, false) => Some(Framing::Eof),
            (false, true) => None,
        };
    }
    Some(match (headers.length, request) {
        (Some(n), _) => Framing::Length(n),
        (None, true) => Framing::Empty,
        (None, false) => Framing::Eof,
    })
}

/// Answers that never carry a body (§6.3 item 1): 1xx, 204 and 304.
pub fn bodiless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// A `content-length` value: 1 to 19 ASCII digits (no sign, no space, nothing that overflows).
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> Headers {
        let mut h = Headers::default();
        for (name, value) in lines {
            h.note(name.as_bytes(), value.as_bytes());
        }
        h
    }

    fn answer(status: u16, lines: &[(&str, &str)]) -> Option<Framing> {
        let status = StatusCode::from_u16(status).unwrap();
        let message = Message::Response {
            method: &Method::GET,
            status,
        };
        body(message, &headers(lines))
    }

    fn request(lines: &[(&str, &str)]) -> Option<Framing> {
        body(Message::Request, &headers(lines))
    }

    #[test]
    fn only_the_framing_and_connection_headers_are_noted() {
        let mut h = Headers::default();
        assert!(h.note(b"Content-Length", b"5"));
        assert!(h.note(b"TRANSFER-ENCODING", b"chunked"));
        assert!(h.note(b"connection", b"Upgrade, keep-alive"));
        assert!(!h.note(b"content-type", b"a/b"));
        assert!(!h.note(b"content-lengtx", b"5"));
        assert!(h.upgrade && h.keep_alive && !h.close);
    }

    #[test]
    fn answers_that_carry_no_body_whatever_they_say() {
        let chunked = [("transfer-encoding", "chunked")];
        for status in [100, 103, 204, 304] {
            assert_eq!(answer(status, &chunked), Some(Framing::Empty), "{status}");
        }
        let head = Message::Response {
            method: &Method::HEAD,
            status: StatusCode::OK,
        };
        let length = headers(&[("content-length", "42")]);
        assert_eq!(body(head, &length), Some(Framing::Empty));
    }

    #[test]
    fn a_transfer_coding_wins_over_the_length() {
        let both = [
            ("content-length", "10"),
            ("transfer-encoding", "gzip, Chunked"),
        ];
        assert_eq!(answer(200, &both), Some(Framing::Chunked));
        assert_eq!(request(&both), Some(Framing::Chunked));
        // Two lines are one list: the last coding of the last line counts.
        let two = [
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "gzip"),
        ];
        assert_eq!(answer(200, &two), Some(Framing::Eof));
        assert_eq!(request(&two), None);
        // A bad length is refused even where the coding or the status would make it moot.
        let bad = [("content-length", "x"), ("transfer-encoding", "chunked")];
        assert_eq!(answer(200, &bad), None);
        assert_eq!(answer(204, &bad), None);
    }

    #[test]
    fn lengths_that_agree_are_one_and_others_are_refused() {
        let same = [("content-length", "5, 5"), ("content-length", "5")];
        assert_eq!(answer(200, &same), Some(Framing::Length(5)));
        assert_eq!(headers(&same).lengths, 3);
        for bad in ["5, 6", "+5", "-1", "0x5", "", "5 5", "99999999999999999999"] {
            assert_eq!(answer(200, &[("content-length", bad)]), None, "{bad:?}");
            assert_eq!(request(&[("content-length", bad)]), None, "{bad:?}");
        }
        let differing = [("content-length", "5"), ("content-length", "6")];
        assert_eq!(request(&differing), None);
    }

    #[test]
    fn without_framing_an_answer_runs_to_the_end_and_a_request_has_no_body() {
        assert_eq!(answer(200, &[]), Some(Framing::Eof));
        assert_eq!(request(&[]), Some(Framing::Empty));
        assert_eq!(
            request(&[("content-length", "0")]),
            Some(Framing::Length(0))
        );
    }

    #[test]
    fn reads_content_lengths() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"1234"), Some(1234));
        // Leading zeros are digits, as hyper reads them (a fuzz invariant once assumed otherwise).
        assert_eq!(parse_length(b"007"), Some(7));
        for bad in [&b""[..], b"+1", b"1 2", b"12345678901234567890", b"0x10"] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn bodiless_statuses() {
        for code in [100, 101, 199, 204, 304] {
            assert!(bodiless(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [200, 205, 302, 404, 500] {
            assert!(!bodiless(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
