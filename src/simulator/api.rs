//! The iDenfy API as the simulator serves it. Each request goes: route table (unknown path → 404),
//! counted, faults (drop, error answer, latency), Basic auth (401), hourly limit (429), method
//! (405), then the endpoint. An error answer "after the effect" runs all of that, then replaces
//! the answer.

use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Map, Value};

use super::counters::bump;
use super::faults::Fault;
use super::reply::{self, Reply};
use super::state::Shared;
use super::{token, verification};
use crate::idenfy::{self, FieldError};

/// The endpoints the simulator knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    KycToken,
    KybToken,
    Status,
    Data,
    Delete,
}

/// Paths exactly as iDenfy spells them (trailing slashes included).
const ROUTES: [(&str, Endpoint); 5] = [
    ("/api/v2/token", Endpoint::KycToken),
    ("/kyb/tokens/", Endpoint::KybToken),
    ("/api/v2/status", Endpoint::Status),
    ("/api/v2/data", Endpoint::Data),
    ("/api/v2/delete", Endpoint::Delete),
];

impl Endpoint {
    fn of(path: &str) -> Option<(&'static str, Endpoint)> {
        ROUTES.iter().copied().find(|(p, _)| *p == path)
    }

    fn creates_token(self) -> bool {
        matches!(self, Endpoint::KycToken | Endpoint::KybToken)
    }
}

/// The service returned this to make hyper close the connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose")]
pub struct Dropped;

/// Serves one API request.
pub async fn handle(shared: &Shared, parts: Parts, body: Bytes) -> Result<Reply, Dropped> {
    let route = Endpoint::of(parts.uri.path());
    let parsed = route
        .filter(|(_, e)| e.creates_token())
        .map(|_| idenfy::parse_body(&body));
    let auth = parts.headers.get(AUTHORIZATION);
    let (fault, latency) = arrive(shared, route, auth, parsed.as_ref());
    if latency > Duration::ZERO {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Fault::Drop => Err(Dropped),
        Fault::Error {
            status,
            retry_after,
        } => Ok(fault_reply(status, retry_after)),
        Fault::ErrorAfterEffect {
            status,
            retry_after,
        } => {
            // The endpoint runs (its session is created and counted); its answer is lost.
            let _lost = serve(shared, route, &parts, &body, parsed);
            Ok(fault_reply(status, retry_after))
        }
        Fault::None => Ok(serve(shared, route, &parts, &body, parsed)),
    }
}

/// Counts the request as received and decides its fault, under one lock.
fn arrive(
    shared: &Shared,
    route: Option<(&'static str, Endpoint)>,
    auth: Option<&HeaderValue>,
    parsed: Option<&Result<Map<String, Value>, FieldError>>,
) -> (Fault, Duration) {
    let mut guard = shared.state();
    let st = &mut *guard;
    let label = route.map_or("other", |(label, _)| label);
    st.counters
        .request(label, auth.and_then(|v| v.to_str().ok()));
    if let (Some((_, endpoint)), Some(Ok(map))) = (route, parsed) {
        if let Some(id) = idenfy::client_id(map) {
            let counts = match endpoint {
                Endpoint::KybToken => &mut st.counters.kyb_token_requests,
                _ => &mut st.counters.token_requests,
            };
            bump(counts, &id);
        }
    }
    let fault = st.faults.decide(fastrand::f64);
    match fault {
        Fault::Drop => st.counters.rejections.dropped += 1,
        Fault::Error { .. } => st.counters.rejections.faults += 1,
        Fault::ErrorAfterEffect { .. } => {
            st.counters.rejections.faults += 1;
            st.counters.rejections.faults_after_effect += 1;
        }
        Fault::None => {}
    }
    (fault, st.faults.latency())
}

/// The answer of an injected error: iDenfy's own shape for 429 and 500, a load balancer's HTML
/// page for 502–504 (what a real outage in front of iDenfy looks like).
fn fault_reply(status: u16, retry_after: Option<u64>) -> Reply {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut res = match status.as_u16() {
        429 => too_many_requests(status),
        500 => reply::error(status, "INTERNAL_ERROR", "Internal server error."),
        502..=504 => {
            let page = format!(
                "<html><head><title>{0} {1}</title></head><body><center><h1>{0} {1}</h1></center></body></html>\n",
                status.as_u16(),
                reason
            );
            reply::with_type(status, Bytes::from(page), "text/html")
        }
        _ => reply::message(status, reason),
    };
    if let Some(secs) = retry_after {
        res.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    res
}

fn too_many_requests(status: StatusCode) -> Reply {
    reply::error(
        status,
        "TOO_MANY_REQUESTS",
        "Requests per hour limit has been reached.",
    )
}

/// Auth, the hourly limit, the method, then the endpoint.
fn serve(
    shared: &Shared,
    route: Option<(&'static str, Endpoint)>,
    parts: &Parts,
    body: &Bytes,
    parsed: Option<Result<Map<String, Value>, FieldError>>,
) -> Reply {
    let Some((_, endpoint)) = route else {
        shared.state().counters.rejections.not_found += 1;
        return reply::error(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found.");
    };
    if let Some(refused) = admit(shared, parts) {
        return refused;
    }
    if parts.method != Method::POST {
        return reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "Method not allowed.",
        );
    }
    match (endpoint, parsed) {
        (Endpoint::KycToken, Some(parsed)) => token::kyc(shared, parsed),
        (Endpoint::KybToken, Some(parsed)) => token::kyb(shared, parsed),
        (Endpoint::Status, _) => verification::status(shared, body),
        (Endpoint::Data, _) => verification::data(shared, body),
        (Endpoint::Delete, _) => verification::delete(shared, body),
        // Token endpoints always come with their parsed body (see `handle`).
        (Endpoint::KycToken | Endpoint::KybToken, None) => {
            reply::empty(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// Basic auth and the hourly limit: `Some(answer)` when the request is refused.
fn admit(shared: &Shared, parts: &Parts) -> Option<Reply> {
    let now = shared.clock.now();
    let mut guard = shared.state();
    let st = &mut *guard;
    let auth = parts.headers.get(AUTHORIZATION).map(HeaderValue::as_bytes);
    if !st.settings.authorizes(auth) {
        st.counters.rejections.unauthorized += 1;
        let mut res = reply::message(
            StatusCode::UNAUTHORIZED,
            "Invalid authorization credentials",
        );
        res.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"api\""),
        );
        return Some(res);
    }
    if !st.limit.admit(now, st.settings.hourly_limit) {
        st.counters.rejections.rate_limited += 1;
        let status = if st.settings.legacy_rate_limit {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        return Some(too_many_requests(status));
    }
    None
}
