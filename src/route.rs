//! Route: which iDenfy call this is. Only paths under the allow-listed prefixes are forwarded;
//! a path that tries to climb out of them (`..`, encoded dots or slashes, backslashes) is refused.
//! Runs right after `identify` (called by `front`), on the request head only.
//!
//! # Canonical paths only
//!
//! What the gateway classifies is what iDenfy receives: the path is forwarded as it came, so it is
//! classified only when there is one way to read it. A path is refused (400 `bad_path`) when
//! another server could read it differently from the gateway:
//! - a `;` anywhere (path parameters: no iDenfy path has any, and servers disagree on them);
//! - a malformed percent-escape, or one of an unreserved character (`%74` for `t`: RFC 3986 §2.3
//!   says producers should not create them, so no honest client sends one);
//! - a spelling of a token endpoint other than the one iDenfy documents (`/api/v2/token`,
//!   `/kyb/tokens/`, "use paths exactly as given"): the same path once escapes are decoded, `;`
//!   parameters, empty segments, a trailing slash and a format suffix (`.json`) are dropped and
//!   case is ignored, such as `/api/v2/token/`, `/API/V2/TOKEN`, `/kyb/tokens` or
//!   `/api/v2/token%3B`. Whatever the method: none of them is validated or deduplicated, so none
//!   may reach iDenfy.
//!
//! A method with a lowercase letter names no iDenfy route (404): servers that upper-case the
//! method (Django does) would run `post` as a `POST` that was never validated.
//!
//! Route labels come from a fixed set (known endpoints, then the configured prefixes), never
//! from the raw path, so they are safe metric labels.

use std::borrow::Cow;

use http::Method;

use crate::context::{Route, RouteKind};
use crate::error::GatewayError;

/// Endpoints with a label of their own, spelt as iDenfy documents them (idenfy-api.md §3); the
/// label is the path.
const KNOWN: &[&str] = &[
    "/api/v2/token",
    "/api/v2/status",
    "/api/v2/data",
    "/api/v2/files",
    "/api/v2/delete",
    "/api/v2/process",
    KYB_TOKEN,
    "/kyc/identifications/",
];

/// The token endpoints: `POST` there opens a billable session, so it is validated and
/// deduplicated, and no other spelling of these paths is forwarded.
const KYC_TOKEN: &str = "/api/v2/token";
const KYB_TOKEN: &str = "/kyb/tokens/";

/// The allow-list, with one static label per prefix.
#[derive(Debug)]
pub struct Routes {
    prefixes: Vec<(String, &'static str)>,
}

impl Routes {
    /// Labels are leaked once at start-up: a bounded set that lives as long as the process.
    pub fn new(prefixes: &[String]) -> Self {
        let prefixes = prefixes
            .iter()
            .map(|p| (p.clone(), &*Box::leak(format!("{p}*").into_boxed_str())))
            .collect();
        Routes { prefixes }
    }

    /// Every label [`Routes::classify`] can give, each once: the known endpoints, then the
    /// prefixes (for metric handles resolved once per label).
    pub fn labels(&self) -> Vec<&'static str> {
        let mut labels: Vec<&'static str> = KNOWN.to_vec();
        for (_, label) in &self.prefixes {
            if !labels.contains(label) {
                labels.push(label);
            }
        }
        labels
    }

    /// Classifies a request by method and path (see the module doc for what is refused).
    pub fn classify(&self, method: &Method, path: &str) -> Result<Route, GatewayError> {
        if !is_clean(path) || !is_canonical(path) || misspells_token_endpoint(path) {
            return Err(GatewayError::BadPath);
        }
        if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(GatewayError::RouteNotFound);
        }
        if !is_api_method(method) {
            return Err(GatewayError::MethodNotAllowed);
        }
        let (_, label) = self
            .prefixes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .ok_or(GatewayError::RouteNotFound)?;
        let known = KNOWN.iter().find(|p| **p == path).copied();
        let kind = match (method, known) {
            (&Method::POST, Some(KYC_TOKEN)) => RouteKind::KycToken,
            (&Method::POST, Some(KYB_TOKEN)) => RouteKind::KybToken,
            _ => RouteKind::Other,
        };
        Ok(Route {
            kind,
            label: known.unwrap_or(label),
        })
    }
}

/// The methods iDenfy's API is called with. Any other (`CONNECT`, `TRACE`, an extension method)
/// is refused with 405 and never forwarded: a `CONNECT` would make a tunnel of the connection on
/// hyper's path, and what follows it is not requests the gateway has read.
fn is_api_method(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
    ]
    .contains(method)
}

/// A path is clean when no segment is empty, `.` or `..` and nothing is encoded that could become
/// one (or a separator) after another decoding step.
fn is_clean(path: &str) -> bool {
    // One pass over the bytes (this runs on every request): separators, dot segments, and
    // whether there is a percent sign at all.
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let dot_segment = |s: &[u8]| s == b"." || s == b"..";
    let (mut start, mut percent) = (1, false);
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            b'\\' => return false,
            b'/' => {
                let segment = &bytes[start..i];
                if segment.is_empty() || dot_segment(segment) {
                    return false;
                }
                start = i + 1;
            }
            b'%' => percent = true,
            _ => {}
        }
    }
    if dot_segment(&bytes[start..]) {
        return false;
    }
    // Most paths have no percent sign: no need to look for encoded bytes then.
    !percent || !has_encoded_separator(path)
}

/// An encoded dot, separator, NUL or percent sign: something another decoding step could turn
/// into traversal.
fn has_encoded_separator(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    ["%2e", "%2f", "%5c", "%00", "%25"]
        .iter()
        .any(|bad| lower.contains(bad))
}

/// No `;` and every percent-escape well formed and needed (not an unreserved character).
fn is_canonical(path: &str) -> bool {
    let bytes = path.as_bytes();
    !bytes.contains(&b';')
        && bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'%')
            .all(|(i, _)| escaped(bytes, i).is_some_and(|b| !is_unreserved(b)))
}

/// The byte the escape at `bytes[at]` (a `%`) stands for, if it is well formed.
fn escaped(bytes: &[u8], at: usize) -> Option<u8> {
    let hex = bytes.get(at + 1..at + 3)?;
    let digit = |b: u8| (b as char).to_digit(16);
    Some((digit(hex[0])? * 16 + digit(hex[1])?) as u8)
}

/// RFC 3986 §2.3: `ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether `path` names a token endpoint, to a lax reader, without being its documented spelling.
fn misspells_token_endpoint(path: &str) -> bool {
    let decoded = percent_decoded(path);
    mentions_token(decoded.as_bytes())
        && [KYC_TOKEN, KYB_TOKEN]
            .into_iter()
            .any(|canonical| path != canonical && reads_as(&decoded, canonical))
}

/// Whether `path` holds `token` in any case. A path that does not cannot read as either token
/// endpoint (each ends in a segment `token` or `tokens`), so the segment-wise comparison, about
/// a tenth of a proxied request's instructions on the status path, is skipped for it.
fn mentions_token(path: &[u8]) -> bool {
    path.windows(5).any(|w| w.eq_ignore_ascii_case(b"token"))
}

/// Whether `path` reads as `canonical` once `;` parameters, a format suffix, empty segments (so a
/// trailing slash) are dropped and case is ignored.
fn reads_as(path: &str, canonical: &str) -> bool {
    let mut loose = path
        .split('/')
        .map(|segment| segment.split([';', '.']).next().unwrap_or_default())
        .filter(|segment| !segment.is_empty());
    let mut wanted = canonical.split('/').filter(|segment| !segment.is_empty());
    loop {
        match (loose.next(), wanted.next()) {
            (None, None) => return true,
            (Some(seen), Some(want)) if seen.eq_ignore_ascii_case(want) => {}
            _ => return false,
        }
    }
}

/// `path` with its well-formed percent-escapes decoded (lossy UTF-8); borrowed when it has none.
fn percent_decoded(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let (mut out, mut i) = (Vec::with_capacity(bytes.len()), 0);
    while i < bytes.len() {
        match (bytes[i], escaped(bytes, i)) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests;
