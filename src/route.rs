//! Route: which iDenfy call this is. Only paths under the allow-listed prefixes are forwarded;
//! a path that tries to climb out of them (`..`, encoded dots or slashes, backslashes) is refused.
//! Runs right after `identify` (called by `front`), on the request head only.
//!
//! Route labels come from a fixed set (known endpoints, then the configured prefixes), never
//! from the raw path, so they are safe metric labels.

use http::Method;

use crate::context::{Route, RouteKind};
use crate::error::GatewayError;

/// Endpoints with a label of their own (idenfy-api.md §3).
const KNOWN: &[(&str, &str)] = &[
    ("/api/v2/token", "/api/v2/token"),
    ("/api/v2/status", "/api/v2/status"),
    ("/api/v2/data", "/api/v2/data"),
    ("/api/v2/files", "/api/v2/files"),
    ("/api/v2/delete", "/api/v2/delete"),
    ("/api/v2/process", "/api/v2/process"),
    ("/kyb/tokens/", "/kyb/tokens/"),
    ("/kyb/tokens", "/kyb/tokens/"),
    ("/kyc/identifications/", "/kyc/identifications/"),
];

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
        let mut labels: Vec<&'static str> = KNOWN.iter().map(|(_, l)| *l).collect();
        labels.extend(self.prefixes.iter().map(|(_, l)| *l));
        labels.dedup();
        let mut unique = Vec::with_capacity(labels.len());
        for label in labels {
            if !unique.contains(&label) {
                unique.push(label);
            }
        }
        unique
    }

    /// Classifies a request by method and path.
    pub fn classify(&self, method: &Method, path: &str) -> Result<Route, GatewayError> {
        if !is_clean(path) {
            return Err(GatewayError::BadPath);
        }
        let (_, label) = self
            .prefixes
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix.as_str()))
            .ok_or(GatewayError::RouteNotFound)?;
        let known = KNOWN.iter().find(|(p, _)| *p == path).map(|(_, l)| *l);
        let kind = match (method, known) {
            (&Method::POST, Some("/api/v2/token")) => RouteKind::KycToken,
            (&Method::POST, Some("/kyb/tokens/")) => RouteKind::KybToken,
            _ => RouteKind::Other,
        };
        Ok(Route {
            kind,
            label: known.unwrap_or(label),
        })
    }
}

/// A path is clean when no segment is `.` or `..` and nothing is encoded that could become one
/// (or a separator) after another decoding step.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_PREFIXES;

    fn routes() -> Routes {
        Routes::new(
            &DEFAULT_PREFIXES
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn classifies_token_routes_by_method_and_path() {
        let r = routes();
        assert_eq!(
            r.classify(&Method::POST, "/api/v2/token").unwrap().kind,
            RouteKind::KycToken
        );
        assert_eq!(
            r.classify(&Method::POST, "/kyb/tokens/").unwrap().kind,
            RouteKind::KybToken
        );
        assert_eq!(
            r.classify(&Method::GET, "/api/v2/token").unwrap().kind,
            RouteKind::Other
        );
        let status = r.classify(&Method::POST, "/api/v2/status").unwrap();
        assert_eq!(
            (status.kind, status.label),
            (RouteKind::Other, "/api/v2/status")
        );
    }

    #[test]
    fn labels_unknown_endpoints_by_prefix() {
        let r = routes();
        assert_eq!(
            r.classify(&Method::GET, "/aml/checks/123/").unwrap().label,
            "/aml/*"
        );
        assert_eq!(
            r.classify(&Method::GET, "/api/v2/something").unwrap().label,
            "/api/v2/*"
        );
    }

    #[test]
    fn refuses_paths_outside_the_allow_list() {
        let r = routes();
        for path in ["/", "/admin", "/metrics", "/api/v1/token", "/apix/v2/"] {
            assert!(
                matches!(
                    r.classify(&Method::GET, path),
                    Err(GatewayError::RouteNotFound)
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn lists_every_label_once() {
        let r = routes();
        let labels = r.labels();
        for (_, label) in KNOWN {
            assert_eq!(labels.iter().filter(|l| *l == label).count(), 1, "{label}");
        }
        assert!(labels.contains(&"/aml/*"));
        let other = r.classify(&Method::GET, "/aml/x").unwrap().label;
        assert!(labels.contains(&other));
    }

    #[test]
    fn clean_paths_pass() {
        for path in [
            "/",
            "/api/v2/token",
            "/kyb/tokens/",
            "/api/v2/a.b/..c/.d",
            "/x%41y",
        ] {
            assert!(is_clean(path), "{path}");
        }
    }

    #[test]
    fn refuses_traversal_in_every_spelling() {
        let r = routes();
        for path in [
            "/api/v2/../admin",
            "/api/v2/./token",
            "/api/v2/%2e%2e/admin",
            "/api/v2/%2E%2E/admin",
            "/api/v2/..%2fadmin",
            "/api/v2/..%5cadmin",
            "/api/v2/..\\admin",
            "/api/v2//token",
            "/api/v2/%252e%252e/x",
            "/api/v2/..",
            "/..",
            "/.",
            "//api/v2/token",
            "api/v2/token",
            "",
        ] {
            assert!(
                matches!(r.classify(&Method::GET, path), Err(GatewayError::BadPath)),
                "{path}"
            );
        }
    }
}
