//! When a session is over, for the `dedup` layer: what iDenfy's answers say of a session's
//! status, the recheck request (`POST /api/v2/status` for a stored entry's scanRef), and the
//! handle through which other parts of the gateway (the webhook listener) end replay.
//!
//! iDenfy's status words (idenfy-api.md §3.2): only `ACTIVE` is a live session; every other
//! word (APPROVED, DENIED, SUSPECTED, REVIEWING, EXPIRED, DELETED, …) means the clientId no
//! longer has a session that a token could open, so replaying it would pin the clientId to its
//! past.

use std::sync::Arc;

use arc_swap::ArcSwapOption;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use serde_json::Value;

use crate::context::{ClientId, ContextExt, Route, RouteKind};

/// The route a recheck takes: iDenfy's status endpoint, proxied like any other call.
pub(super) const STATUS_ROUTE: Route = Route {
    kind: RouteKind::Other,
    label: "/api/v2/status",
};

/// The routes whose answers can show that a session is over.
pub(super) fn reports_status(route: Route) -> bool {
    matches!(route.label, "/api/v2/status" | "/api/v2/data")
}

/// What an answer of iDenfy says of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// `status` is `ACTIVE`.
    Live,
    /// `status` is another word: the session `scan_ref` (from the answer, else the request) is over.
    Over { scan_ref: Option<Arc<str>> },
    /// Not a 200, not JSON, or no status word.
    Unknown,
}

/// Reads a status (or data) answer: the top-level `status` word, or `status.overall` (the
/// webhook payload's shape, should an answer use it).
pub(super) fn verdict(status: StatusCode, body: &[u8]) -> Verdict {
    if status != StatusCode::OK {
        return Verdict::Unknown;
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Verdict::Unknown;
    };
    let word = match value.get("status") {
        Some(Value::String(word)) => word.as_str(),
        Some(Value::Object(status)) => match status.get("overall").and_then(Value::as_str) {
            Some(word) => word,
            None => return Verdict::Unknown,
        },
        _ => return Verdict::Unknown,
    };
    match word {
        "ACTIVE" => Verdict::Live,
        _ => Verdict::Over {
            scan_ref: scan_ref_in(&value),
        },
    }
}

/// The `scanRef` of a JSON body (a request `{"scanRef": …}` or a token answer).
pub(super) fn scan_ref_of(body: &[u8]) -> Option<Arc<str>> {
    scan_ref_in(&serde_json::from_slice::<Value>(body).ok()?)
}

fn scan_ref_in(value: &Value) -> Option<Arc<str>> {
    let scan_ref = value.get("scanRef")?.as_str()?;
    (!scan_ref.is_empty()).then(|| Arc::from(scan_ref))
}

/// The recheck of a stored session: `POST /api/v2/status {"scanRef"}` as the token request's
/// caller (same team, account, deadline), through the rest of the stack, so that it is counted
/// and limited as the account's attempt like any other call.
pub(super) fn recheck_request(token_request: &Request<Bytes>, scan_ref: &str) -> Request<Bytes> {
    let body = serde_json::json!({ "scanRef": scan_ref }).to_string();
    let mut req = Request::new(Bytes::from(body));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("/api/v2/status");
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    *req.extensions_mut() = token_request.extensions().clone();
    req.extensions_mut().remove::<ClientId>();
    req.context_mut().route = Some(STATUS_ROUTE);
    req
}

/// Ends replay for a scanRef, from outside the layer (a final webhook). Cloning shares the
/// handle; it points at the replay store of the dedup state in use, which a config reload may
/// replace ([`super::DedupLayer::point`]).
#[derive(Clone)]
pub struct SessionEnds {
    pub(super) dedup: Arc<ArcSwapOption<super::Shared>>,
}

impl SessionEnds {
    /// A handle that points at no dedup state yet: it ends nothing until a layer is pointed at
    /// it.
    pub fn unset() -> Self {
        SessionEnds {
            dedup: Arc::default(),
        }
    }

    /// The session `scan_ref` is over (`signal`: a bounded label such as `webhook`): its replay
    /// entry, if any, is removed, here and, in fleet mode, in the fleet's store (so that no
    /// replica replays it). `true` if this replica held one.
    pub fn end(&self, scan_ref: &str, signal: &'static str) -> bool {
        match self.dedup.load_full() {
            Some(dedup) => dedup.end(scan_ref, signal),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_is_live() {
        let ok = StatusCode::OK;
        assert_eq!(
            verdict(ok, br#"{"status":"ACTIVE","scanRef":"s"}"#),
            Verdict::Live
        );
        for word in ["APPROVED", "DENIED", "EXPIRED", "DELETED", "REVIEWING"] {
            let body = format!(r#"{{"status":"{word}","scanRef":"s-1"}}"#);
            assert_eq!(
                verdict(ok, body.as_bytes()),
                Verdict::Over {
                    scan_ref: Some("s-1".into())
                },
                "{word}"
            );
        }
        assert_eq!(
            verdict(ok, br#"{"status":{"overall":"DENIED"}}"#),
            Verdict::Over { scan_ref: None }
        );
    }

    #[test]
    fn anything_else_says_nothing() {
        let ok = StatusCode::OK;
        assert_eq!(
            verdict(StatusCode::NOT_FOUND, br#"{"status":"APPROVED"}"#),
            Verdict::Unknown
        );
        assert_eq!(verdict(ok, b"not json"), Verdict::Unknown);
        assert_eq!(verdict(ok, br#"{"docFirstName":"A"}"#), Verdict::Unknown);
        assert_eq!(verdict(ok, br#"{"status":7}"#), Verdict::Unknown);
    }

    #[test]
    fn the_recheck_is_a_status_call_of_the_same_caller() {
        let mut token = Request::new(Bytes::from_static(br#"{"clientId":"c"}"#));
        token.extensions_mut().insert(ClientId("c".into()));
        token.context_mut().route = Some(Route {
            kind: RouteKind::KycToken,
            label: "/api/v2/token",
        });
        let req = recheck_request(&token, "scan-9");
        assert_eq!(req.uri().path(), "/api/v2/status");
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.body().as_ref(), br#"{"scanRef":"scan-9"}"#);
        assert_eq!(req.route(), Some(STATUS_ROUTE));
        assert!(req.extensions().get::<ClientId>().is_none());
    }
}
