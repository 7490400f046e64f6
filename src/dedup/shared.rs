//! The response a flight shares: the leader's upstream answer read into memory once, then copied
//! into a fresh `Response` for each waiter of the flight and for each replay.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::body::Body;
use crate::error::GatewayError;
use crate::headers::strip_hop_by_hop;
use crate::retry::X_GATEWAY_ATTEMPTS;

/// Says how a token response was obtained: `leader | coalesced | replayed`.
pub const X_GATEWAY_DEDUP: &str = "x-gateway-dedup";

/// `true` when the request that got this answer had another body than the one that created the
/// session (same clientId, other fields).
pub const X_GATEWAY_DEDUP_MISMATCH: &str = "x-gateway-dedup-mismatch";

/// How a caller got its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupOutcome {
    /// Its request went upstream.
    Leader,
    /// It waited for another request's upstream call with the same key.
    Coalesced,
    /// It got a live token stored from an earlier response.
    Replayed,
}

impl DedupOutcome {
    /// The header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DedupOutcome::Leader => "leader",
            DedupOutcome::Coalesced => "coalesced",
            DedupOutcome::Replayed => "replayed",
        }
    }
}

/// A buffered response: status, end-to-end headers and the whole body.
#[derive(Debug)]
pub struct SharedResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl SharedResponse {
    /// Keeps `status`, `headers` without the hop-by-hop ones, and `body`, in memory of their
    /// own: hyper hands out header values and body chunks as slices of its connection read
    /// buffer, and a stored slice would keep the whole buffer (kilobytes) alive for the token's
    /// lifetime. One small copy per upstream answer instead (the replay store held ~6 KiB per
    /// 417-byte token before).
    pub fn new(status: StatusCode, mut headers: HeaderMap, body: Bytes) -> Self {
        strip_hop_by_hop(&mut headers);
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let mut own = HeaderValue::from_bytes(value.as_bytes()).unwrap_or(value.clone());
                own.set_sensitive(value.is_sensitive());
                (name.clone(), own)
            })
            .collect();
        SharedResponse {
            status,
            headers,
            body: Bytes::copy_from_slice(&body),
        }
    }

    /// Reads `res` whole. A body over `max_body` bytes, or one that fails mid-way, is an upstream
    /// failure: nothing half-read is ever shared.
    pub async fn buffer(res: Response<Body>, max_body: u64) -> Result<Self, GatewayError> {
        let (parts, body) = res.into_parts();
        let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
        let body = Limited::new(body, limit).collect().await.map_err(|_| {
            tracing::warn!(
                limit = max_body,
                "upstream token response unreadable or too large"
            );
            GatewayError::UpstreamProtocol
        })?;
        Ok(Self::new(parts.status, parts.headers, body.to_bytes()))
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Approximate bytes held, for the replay store's memory bound.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        self.body.len() + headers + std::mem::size_of::<Self>()
    }

    /// A fresh response for one caller, marked with how it got it.
    pub fn to_response(&self, outcome: DedupOutcome, mismatch: bool) -> Response<Body> {
        let mut res = Response::new(Body::full(self.body.clone()));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        let headers = res.headers_mut();
        // Header names built at compile time: inserting by `&str` parses and allocates each time.
        const DEDUP: HeaderName = HeaderName::from_static(X_GATEWAY_DEDUP);
        const ATTEMPTS: HeaderName = HeaderName::from_static(X_GATEWAY_ATTEMPTS);
        const MISMATCH: HeaderName = HeaderName::from_static(X_GATEWAY_DEDUP_MISMATCH);
        headers.insert(DEDUP, HeaderValue::from_static(outcome.as_str()));
        if outcome == DedupOutcome::Replayed {
            // This request made no upstream attempt: the stored copy is not its answer's history.
            headers.insert(ATTEMPTS, HeaderValue::from_static("0"));
        }
        if mismatch {
            headers.insert(MISMATCH, HeaderValue::from_static("true"));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn upstream(body: &'static str) -> Response<Body> {
        Response::builder()
            .status(StatusCode::CREATED)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONNECTION, "keep-alive, x-hop")
            .header("keep-alive", "timeout=5")
            .header("x-hop", "1")
            .header(header::TRANSFER_ENCODING, "chunked")
            .body(Body::full(body))
            .unwrap()
    }

    #[tokio::test]
    async fn buffers_the_body_and_drops_hop_by_hop_headers() {
        let shared = SharedResponse::buffer(upstream(r#"{"authToken":"t"}"#), 1024)
            .await
            .unwrap();
        assert_eq!(shared.status(), StatusCode::CREATED);
        assert_eq!(shared.body().as_ref(), br#"{"authToken":"t"}"#);
        assert_eq!(shared.headers()[header::CONTENT_TYPE], "application/json");
        for gone in ["connection", "keep-alive", "x-hop", "transfer-encoding"] {
            assert!(!shared.headers().contains_key(gone), "{gone} kept");
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_an_upstream_failure() {
        let err = SharedResponse::buffer(upstream("0123456789"), 9)
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::UpstreamProtocol));
    }

    #[tokio::test]
    async fn each_copy_is_a_whole_response_marked_with_its_outcome() {
        let shared = SharedResponse::new(StatusCode::OK, HeaderMap::new(), Bytes::from("abc"));
        for (outcome, mismatch) in [
            (DedupOutcome::Leader, false),
            (DedupOutcome::Coalesced, true),
            (DedupOutcome::Replayed, false),
        ] {
            let res = shared.to_response(outcome, mismatch);
            assert_eq!(res.status(), StatusCode::OK);
            assert_eq!(res.headers()[X_GATEWAY_DEDUP], outcome.as_str());
            assert_eq!(
                res.headers().contains_key(X_GATEWAY_DEDUP_MISMATCH),
                mismatch
            );
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.as_ref(), b"abc");
        }
    }
}
