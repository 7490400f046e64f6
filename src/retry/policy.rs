//! Retry policy: which upstream answers and failures deserve another attempt. Pure functions of
//! the status, the error `identifier`, the transport error and the route.

use http::StatusCode;
use serde::Deserialize;

use crate::context::RouteKind;
use crate::error::GatewayError;

/// iDenfy's identifier for its hourly request limit (sent with 400 by older deployments).
pub const TOO_MANY_REQUESTS: &str = "TOO_MANY_REQUESTS";

/// Why an attempt is retried: a fixed set, also the `reason` label of the retry metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// HTTP 429 from iDenfy.
    Status429,
    /// HTTP 400 with identifier `TOO_MANY_REQUESTS`.
    TooManyRequests,
    /// HTTP 500, 502, 503 or 504 from iDenfy.
    Status5xx,
    /// Refused or reset before the request was sent.
    Connect,
    /// The attempt timeout passed after the request was sent.
    Timeout,
    /// The connection broke after the request was sent.
    Protocol,
}

impl RetryReason {
    pub const ALL: [RetryReason; 6] = [
        RetryReason::Status429,
        RetryReason::TooManyRequests,
        RetryReason::Status5xx,
        RetryReason::Connect,
        RetryReason::Timeout,
        RetryReason::Protocol,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Status429 => "status_429",
            RetryReason::TooManyRequests => "too_many_requests",
            RetryReason::Status5xx => "status_5xx",
            RetryReason::Connect => "connect",
            RetryReason::Timeout => "timeout",
            RetryReason::Protocol => "protocol",
        }
    }

    /// The failure proves iDenfy did not act on the request: nothing was sent, or iDenfy
    /// refused it for its rate limit before doing anything.
    pub fn before_effect(self) -> bool {
        matches!(
            self,
            RetryReason::Status429 | RetryReason::TooManyRequests | RetryReason::Connect
        )
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The answer is final: pass it on.
    Done,
    /// Another attempt may succeed (if attempts, budget and deadline allow).
    Retry(RetryReason),
}

/// The retry policy of one gateway.
///
/// # Token creation is not idempotent
///
/// `POST /api/v2/token` and `POST /kyb/tokens/` open a billable session, and iDenfy has no
/// idempotency key. A 5xx, a timeout or a connection that broke after the request was sent may
/// come *after* iDenfy created the session: retrying then can open a second session (billed, and
/// possibly answered with 409 for the clientId). So by default (`retry.retry_token_after_send =
/// false`) the gateway retries a token request only when it certainly created nothing — the
/// connection was refused before sending, or iDenfy answered 429 / `TOO_MANY_REQUESTS` — and
/// passes a 5xx, a timeout or a broken connection straight to the caller after one attempt, who
/// can decide (for example by looking the clientId up with `GET /kyc/identifications/?clientId=`).
/// Turning the switch on retries those like any other route: better availability during iDenfy
/// incidents, at the risk of an occasional duplicate session. Other routes are retried either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub retry_token_after_send: bool,
}

impl Policy {
    /// Classify an upstream answer; `identifier` is the body's, when it was read (see
    /// [`needs_identifier`]).
    pub fn classify_response(
        &self,
        kind: RouteKind,
        status: StatusCode,
        identifier: Option<&str>,
    ) -> Verdict {
        let reason = match status.as_u16() {
            429 => RetryReason::Status429,
            400 if identifier == Some(TOO_MANY_REQUESTS) => RetryReason::TooManyRequests,
            500 | 502 | 503 | 504 => RetryReason::Status5xx,
            _ => return Verdict::Done,
        };
        self.gate(kind, reason)
    }

    /// Classify a failed attempt.
    pub fn classify_error(&self, kind: RouteKind, err: &GatewayError) -> Verdict {
        let reason = match err {
            GatewayError::UpstreamConnect => RetryReason::Connect,
            GatewayError::UpstreamTimedOut => RetryReason::Timeout,
            GatewayError::UpstreamProtocol => RetryReason::Protocol,
            _ => return Verdict::Done,
        };
        self.gate(kind, reason)
    }

    fn gate(&self, kind: RouteKind, reason: RetryReason) -> Verdict {
        let creates_token = matches!(kind, RouteKind::KycToken | RouteKind::KybToken);
        if creates_token && !reason.before_effect() && !self.retry_token_after_send {
            Verdict::Done
        } else {
            Verdict::Retry(reason)
        }
    }
}

/// Answers whose classification depends on the body's `identifier`.
pub fn needs_identifier(status: StatusCode) -> bool {
    status == StatusCode::BAD_REQUEST
}

/// iDenfy's rate-limit answer (429, or 400 `TOO_MANY_REQUESTS`): it pauses the whole account.
pub fn is_throttled(status: StatusCode, identifier: Option<&str>) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::BAD_REQUEST && identifier == Some(TOO_MANY_REQUESTS))
}

/// The `identifier` of an iDenfy error body `{"identifier": "...", ...}`, if it has one.
pub fn error_identifier(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Shape {
        identifier: Option<String>,
    }
    serde_json::from_slice::<Shape>(body).ok()?.identifier
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Policy = Policy {
        retry_token_after_send: false,
    };
    const EAGER: Policy = Policy {
        retry_token_after_send: true,
    };

    fn status(code: u16) -> StatusCode {
        StatusCode::from_u16(code).unwrap()
    }

    #[test]
    fn throttling_and_server_errors_are_retried() {
        let other = RouteKind::Other;
        for (code, id, reason) in [
            (429, None, RetryReason::Status429),
            (400, Some(TOO_MANY_REQUESTS), RetryReason::TooManyRequests),
            (500, None, RetryReason::Status5xx),
            (502, None, RetryReason::Status5xx),
            (503, None, RetryReason::Status5xx),
            (504, None, RetryReason::Status5xx),
        ] {
            assert_eq!(
                DEFAULT.classify_response(other, status(code), id),
                Verdict::Retry(reason),
                "{code}"
            );
        }
    }

    #[test]
    fn client_errors_and_credit_exhaustion_are_final() {
        for (code, id) in [
            (200, None),
            (201, None),
            (400, Some("BAD_VALUE")),
            (400, Some("PERMISSIONS_ERROR")),
            (400, None),
            (401, None),
            (402, None),
            (403, None),
            (404, None),
            (409, None),
            (422, None),
            (501, None),
        ] {
            for kind in [RouteKind::Other, RouteKind::KycToken] {
                assert_eq!(
                    EAGER.classify_response(kind, status(code), id),
                    Verdict::Done,
                    "{code} {id:?}"
                );
            }
        }
    }

    #[test]
    fn transport_failures_are_retried_other_errors_are_not() {
        let other = RouteKind::Other;
        let retried = |e: GatewayError| DEFAULT.classify_error(other, &e);
        assert_eq!(
            retried(GatewayError::UpstreamConnect),
            Verdict::Retry(RetryReason::Connect)
        );
        assert_eq!(
            retried(GatewayError::UpstreamTimedOut),
            Verdict::Retry(RetryReason::Timeout)
        );
        assert_eq!(
            retried(GatewayError::UpstreamProtocol),
            Verdict::Retry(RetryReason::Protocol)
        );
        assert_eq!(retried(GatewayError::DeadlineExceeded), Verdict::Done);
        assert_eq!(retried(GatewayError::Internal), Verdict::Done);
    }

    #[test]
    fn token_requests_are_retried_after_send_only_when_switched_on() {
        for kind in [RouteKind::KycToken, RouteKind::KybToken] {
            assert_eq!(
                DEFAULT.classify_response(kind, status(503), None),
                Verdict::Done
            );
            assert_eq!(
                DEFAULT.classify_error(kind, &GatewayError::UpstreamTimedOut),
                Verdict::Done
            );
            assert_eq!(
                DEFAULT.classify_error(kind, &GatewayError::UpstreamProtocol),
                Verdict::Done
            );
            assert_eq!(
                EAGER.classify_response(kind, status(503), None),
                Verdict::Retry(RetryReason::Status5xx)
            );
            assert_eq!(
                EAGER.classify_error(kind, &GatewayError::UpstreamTimedOut),
                Verdict::Retry(RetryReason::Timeout)
            );
        }
    }

    #[test]
    fn token_requests_that_created_nothing_are_always_retried() {
        let kind = RouteKind::KycToken;
        assert_eq!(
            DEFAULT.classify_error(kind, &GatewayError::UpstreamConnect),
            Verdict::Retry(RetryReason::Connect)
        );
        assert_eq!(
            DEFAULT.classify_response(kind, status(429), None),
            Verdict::Retry(RetryReason::Status429)
        );
        assert_eq!(
            DEFAULT.classify_response(kind, status(400), Some(TOO_MANY_REQUESTS)),
            Verdict::Retry(RetryReason::TooManyRequests)
        );
    }

    #[test]
    fn reads_the_identifier_of_an_error_body() {
        let body = br#"{"identifier":"TOO_MANY_REQUESTS","message":"Requests per hour limit has been reached."}"#;
        assert_eq!(error_identifier(body).as_deref(), Some(TOO_MANY_REQUESTS));
        assert_eq!(error_identifier(br#"{"message":"Partner inactive"}"#), None);
        assert_eq!(error_identifier(b"<html>bad gateway</html>"), None);
        assert_eq!(error_identifier(br#"{"identifier":7}"#), None);
    }

    #[test]
    fn throttled_answers_are_recognised() {
        assert!(is_throttled(status(429), None));
        assert!(is_throttled(status(400), Some(TOO_MANY_REQUESTS)));
        assert!(!is_throttled(status(400), Some("PERMISSIONS_ERROR")));
        assert!(!is_throttled(status(503), None));
    }
}
