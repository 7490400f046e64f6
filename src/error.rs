//! Every answer the gateway makes itself, and the one place where an error becomes a response.
//!
//! Each concern returns a [`GatewayError`]; [`GatewayError::into_response`] turns it into a status,
//! an iDenfy-shaped body `{"identifier","message"}` and an `x-gateway-error: <reason>` header.
//! Whether an error may be retried is decided where it is created ([`GatewayError::is_retryable`]).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::body::Body;

/// Header naming the reason on every answer the gateway made itself.
pub const X_GATEWAY_ERROR: &str = "x-gateway-error";

/// Which quota refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The caller's team quota on logical requests.
    Team,
    /// The iDenfy account's quota on upstream attempts.
    Account,
}

impl Limit {
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Team => "team",
            Limit::Account => "account",
        }
    }
}

/// An error on the request path. `Display` is safe to show to a caller: it never holds a secret,
/// a body or a clientId.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("missing or unknown caller credentials")]
    Unauthorized,
    #[error("no iDenfy API route at this path")]
    RouteNotFound,
    #[error("iDenfy's API has no route for this method")]
    MethodNotAllowed,
    #[error("the request path is not acceptable")]
    BadPath,
    #[error("the request is not well-formed HTTP/1.1")]
    MalformedRequest,
    #[error("the request head is larger than {limit} bytes or has too many header lines")]
    HeadersTooLarge { limit: usize },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("the request body could not be read")]
    BodyRead,
    #[error("the request body did not arrive in time")]
    BodyTimeout,
    /// Never sent: the caller is gone. For the log line and the metrics (nginx's 499).
    #[error("the caller closed the connection before its answer")]
    ClientClosed,
    #[error("{message}")]
    Invalid {
        /// iDenfy's identifier: `JSON_ERROR`, `MISSING_VALUE` or `BAD_VALUE`.
        identifier: &'static str,
        /// The offending field, for the metric label (a field name from iDenfy's schema).
        field: &'static str,
        message: String,
    },
    #[error("{} rate limit reached, retry after {}s", limit.as_str(), retry_after_secs(*retry_after))]
    RateLimited { limit: Limit, retry_after: Duration },
    /// Another team (on the same iDenfy account) holds or is creating the session for this
    /// clientId. The message is iDenfy's own documented words for its 409, capitalised as
    /// iDenfy writes them; it never names the clientId.
    #[error("Client ID already exists")]
    ClientIdInUse,
    #[error("the request deadline passed before iDenfy answered")]
    DeadlineExceeded,
    #[error("iDenfy did not answer within the attempt timeout")]
    UpstreamTimedOut,
    #[error("could not connect to iDenfy")]
    UpstreamConnect,
    #[error("the connection to iDenfy failed")]
    UpstreamProtocol,
    #[error("internal gateway error")]
    Internal,
    /// A webhook without `Idenfy-Signature`.
    #[error("the webhook has no Idenfy-Signature")]
    WebhookUnsigned,
    /// A webhook whose `Idenfy-Signature` is not the account's HMAC of its body.
    #[error("the webhook signature does not match")]
    WebhookBadSignature,
    /// A webhook for an account the gateway does not have (or that has no `webhook_key`).
    #[error("no account with a webhook key at this path")]
    WebhookUnknownAccount,
    /// The webhook could not be stored: not acknowledged, so that iDenfy sends it again.
    #[error("the webhook could not be stored; send it again")]
    WebhookNotStored,
    /// `POST /webhooks/dead/{id}/retry` (admin) for an id with no dead letter.
    #[error("no dead letter with this id")]
    DeadLetterNotFound,
    /// The webhook store could not be read (admin's dead-letter endpoints).
    #[error("the webhook store is unavailable")]
    WebhookStoreUnavailable,
    /// The shared state (Redis) did not answer and `state.on_unavailable = "refuse"`.
    #[error("the gateway's shared state is unavailable; retry shortly")]
    StateUnavailable,
}

fn retry_after_secs(d: Duration) -> u64 {
    // Whole seconds, rounded up, never 0: a client told "retry after 0" would spin.
    d.as_secs() + u64::from(d.subsec_nanos() > 0 || d.is_zero())
}

impl GatewayError {
    /// The HTTP status of the gateway's answer.
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            Unauthorized => StatusCode::UNAUTHORIZED,
            RouteNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            BadPath | MalformedRequest | BodyRead | Invalid { .. } => StatusCode::BAD_REQUEST,
            HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ClientIdInUse => StatusCode::CONFLICT,
            DeadlineExceeded | UpstreamTimedOut => StatusCode::GATEWAY_TIMEOUT,
            UpstreamConnect | UpstreamProtocol => StatusCode::BAD_GATEWAY,
            Internal => StatusCode::INTERNAL_SERVER_ERROR,
            WebhookUnsigned | WebhookBadSignature => StatusCode::UNAUTHORIZED,
            WebhookUnknownAccount => StatusCode::NOT_FOUND,
            WebhookNotStored | WebhookStoreUnavailable | StateUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DeadLetterNotFound => StatusCode::NOT_FOUND,
        }
    }

    /// The `identifier` of the body: iDenfy's own where the meaning is the same.
    pub fn identifier(&self) -> &'static str {
        use GatewayError::*;
        match self {
            Unauthorized => "UNAUTHORIZED",
            RouteNotFound => "NOT_FOUND",
            MethodNotAllowed => "METHOD_NOT_ALLOWED",
            BadPath => "BAD_VALUE",
            MalformedRequest => "BAD_REQUEST",
            HeadersTooLarge { .. } => "HEADERS_TOO_LARGE",
            PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            BodyRead => "ENCODING_ERROR",
            BodyTimeout => "REQUEST_TIMEOUT",
            ClientClosed => "CLIENT_CLOSED_REQUEST",
            Invalid { identifier, .. } => identifier,
            RateLimited { .. } => "TOO_MANY_REQUESTS",
            // iDenfy documents its 409 without an identifier (idenfy-api.md §4.2-4.3): the
            // gateway's own, named after the status like NOT_FOUND and BAD_GATEWAY.
            ClientIdInUse => "CONFLICT",
            DeadlineExceeded | UpstreamTimedOut => "GATEWAY_TIMEOUT",
            UpstreamConnect | UpstreamProtocol => "BAD_GATEWAY",
            Internal => "INTERNAL_ERROR",
            WebhookUnsigned | WebhookBadSignature => "UNAUTHORIZED",
            WebhookUnknownAccount => "NOT_FOUND",
            WebhookNotStored | WebhookStoreUnavailable | StateUnavailable => "SERVICE_UNAVAILABLE",
            DeadLetterNotFound => "NOT_FOUND",
        }
    }

    /// The `x-gateway-error` reason: short, stable, bounded (also a metric label).
    pub fn reason(&self) -> &'static str {
        use GatewayError::*;
        match self {
            Unauthorized => "unauthorized",
            RouteNotFound => "route_not_found",
            MethodNotAllowed => "method_not_allowed",
            BadPath => "bad_path",
            MalformedRequest => "malformed_request",
            HeadersTooLarge { .. } => "headers_too_large",
            PayloadTooLarge { .. } => "payload_too_large",
            BodyRead => "body_read",
            BodyTimeout => "body_timeout",
            ClientClosed => "client_closed",
            Invalid { .. } => "validation",
            RateLimited {
                limit: Limit::Team, ..
            } => "rate_limited_team",
            RateLimited {
                limit: Limit::Account,
                ..
            } => "rate_limited_account",
            ClientIdInUse => "client_id_in_use",
            DeadlineExceeded => "deadline",
            UpstreamTimedOut => "upstream_timeout",
            UpstreamConnect => "upstream_connect",
            UpstreamProtocol => "upstream_protocol",
            Internal => "internal",
            WebhookUnsigned => "webhook_unsigned",
            WebhookBadSignature => "webhook_bad_signature",
            WebhookUnknownAccount => "webhook_unknown_account",
            WebhookNotStored => "webhook_not_stored",
            DeadLetterNotFound => "dead_letter_not_found",
            WebhookStoreUnavailable => "webhook_store_unavailable",
            StateUnavailable => "state_unavailable",
        }
    }

    /// May another attempt succeed where this one failed? Decided here, where the error is known.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            GatewayError::UpstreamTimedOut
                | GatewayError::UpstreamConnect
                | GatewayError::UpstreamProtocol
        )
    }

    /// `Retry-After` for 429 and 503 answers.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::RateLimited { retry_after, .. } => Some(*retry_after),
            GatewayError::WebhookNotStored | GatewayError::StateUnavailable => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }

    /// The one place where an error becomes a response.
    pub fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({
            "identifier": self.identifier(),
            "message": self.to_string(),
        });
        let mut res = Response::new(Body::full(Bytes::from(body.to_string())));
        *res.status_mut() = self.status();
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // Built at compile time: inserting by `&str` parses and allocates each time.
        const ERROR: http::HeaderName = http::HeaderName::from_static(X_GATEWAY_ERROR);
        headers.insert(ERROR, HeaderValue::from_static(self.reason()));
        if let Some(after) = self.retry_after() {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(after)),
            );
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(res: Response<Body>) -> serde_json::Value {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn payload_too_large_maps_to_413() {
        let res = GatewayError::PayloadTooLarge { limit: 10 }.into_response();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(res.headers()[X_GATEWAY_ERROR], "payload_too_large");
        let json = body_json(res).await;
        assert_eq!(json["identifier"], "PAYLOAD_TOO_LARGE");
        assert!(json["message"].as_str().unwrap().contains("10 bytes"));
    }

    #[tokio::test]
    async fn rate_limited_maps_to_429_with_retry_after_rounded_up() {
        let err = GatewayError::RateLimited {
            limit: Limit::Team,
            retry_after: Duration::from_millis(1200),
        };
        let res = err.into_response();
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::RETRY_AFTER], "2");
        assert_eq!(res.headers()[X_GATEWAY_ERROR], "rate_limited_team");
        assert_eq!(body_json(res).await["identifier"], "TOO_MANY_REQUESTS");
    }

    #[tokio::test]
    async fn client_id_in_use_maps_to_409_without_naming_the_client_id() {
        let res = GatewayError::ClientIdInUse.into_response();
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(res.headers()[X_GATEWAY_ERROR], "client_id_in_use");
        assert!(!GatewayError::ClientIdInUse.is_retryable());
        let json = body_json(res).await;
        assert_eq!(json["identifier"], "CONFLICT");
        assert_eq!(json["message"], "Client ID already exists");
    }

    #[tokio::test]
    async fn state_unavailable_maps_to_503_with_retry_after() {
        let res = GatewayError::StateUnavailable.into_response();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[X_GATEWAY_ERROR], "state_unavailable");
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
        assert!(!GatewayError::StateUnavailable.is_retryable());
        assert_eq!(body_json(res).await["identifier"], "SERVICE_UNAVAILABLE");
    }

    #[test]
    fn retry_after_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn only_upstream_failures_are_retryable() {
        assert!(GatewayError::UpstreamConnect.is_retryable());
        assert!(GatewayError::UpstreamTimedOut.is_retryable());
        assert!(!GatewayError::Unauthorized.is_retryable());
        assert!(!GatewayError::DeadlineExceeded.is_retryable());
    }

    #[tokio::test]
    async fn every_error_has_the_idenfy_shape() {
        for err in [
            GatewayError::Unauthorized,
            GatewayError::RouteNotFound,
            GatewayError::MethodNotAllowed,
            GatewayError::BadPath,
            GatewayError::MalformedRequest,
            GatewayError::HeadersTooLarge { limit: 16384 },
            GatewayError::BodyRead,
            GatewayError::BodyTimeout,
            GatewayError::ClientIdInUse,
            GatewayError::ClientClosed,
            GatewayError::DeadlineExceeded,
            GatewayError::UpstreamTimedOut,
            GatewayError::UpstreamConnect,
            GatewayError::UpstreamProtocol,
            GatewayError::Internal,
            GatewayError::DeadLetterNotFound,
            GatewayError::WebhookStoreUnavailable,
        ] {
            let status = err.status();
            let res = err.into_response();
            assert_eq!(res.status(), status);
            assert!(res.headers().contains_key(X_GATEWAY_ERROR));
            let json = body_json(res).await;
            assert!(json["identifier"].is_string() && json["message"].is_string());
        }
    }
}
