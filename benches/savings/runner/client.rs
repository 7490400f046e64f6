//! The baseline: a token client written the way iDenfy's error-handling guide recommends
//! (idenfy-api.md §4.4): retry 429, 500, 502 and 503, sleeping `2^attempt` seconds between
//! attempts (1, 2, 4, 8 s), no jitter, at most 5 attempts. Anything else is final: 201 is a
//! token, 409 and the other 4xx are errors the app has to live with. It does not read
//! `Retry-After` (the guide does not say to) and has no timeout of its own (the guide names none).
//!
//! Every attempt is recorded: the app's side of the count, which the gateway cannot touch.

use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::clock::{real, secs};

/// Attempts in all, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// The statuses the guide retries.
pub const RETRIED: [u16; 4] = [429, 500, 502, 503];

/// One answer the app received: a status, or `None` when the connection failed without one.
pub type Seen = Option<u16>;

/// One token request of the app, with its retries.
#[derive(Debug, Clone)]
pub struct Call {
    pub client_id: String,
    /// The app's user visit this call belongs to (see [`super::app`]).
    pub visit: usize,
    pub started: Instant,
    /// What each attempt got, in order.
    pub attempts: Vec<Seen>,
    /// When a usable token (2xx with an `authToken`) arrived.
    pub token_at: Option<Instant>,
}

/// The baseline client, pointed at iDenfy (the simulator) or at the gateway.
#[derive(Clone)]
pub struct Baseline {
    http: Client<HttpConnector, Full<Bytes>>,
    url: String,
    authorization: Option<String>,
}

impl Baseline {
    /// `base` is `http://ADDR`; `authorization` the Basic key pair when calling iDenfy directly
    /// (a sidecar gateway holds the key pair, and the app sends none).
    pub fn new(base: &str, authorization: Option<String>) -> Self {
        Baseline {
            http: Client::builder(TokioExecutor::new()).build_http(),
            url: format!("{base}/api/v2/token"),
            authorization,
        }
    }

    /// `POST /api/v2/token` for `client_id`, retried as the guide says.
    pub async fn create_token(&self, client_id: &str, visit: usize) -> Call {
        let mut call = Call {
            client_id: client_id.to_owned(),
            visit,
            started: Instant::now(),
            attempts: Vec::new(),
            token_at: None,
        };
        for attempt in 0..MAX_ATTEMPTS {
            let (seen, token) = self.attempt(client_id).await;
            call.attempts.push(seen);
            if token {
                call.token_at = Some(Instant::now());
                break;
            }
            let retried = seen.is_some_and(|s| RETRIED.contains(&s));
            if !retried || attempt + 1 == MAX_ATTEMPTS {
                break;
            }
            tokio::time::sleep(real(secs(1 << attempt))).await;
        }
        call
    }

    /// One attempt: what came back, and whether it was a usable token.
    async fn attempt(&self, client_id: &str) -> (Seen, bool) {
        let body = serde_json::json!({ "clientId": client_id }).to_string();
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&self.url)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.authorization {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
            return (None, false);
        };
        // A safety net against a hung run, far beyond any answer the scenarios produce.
        let sent = tokio::time::timeout(real(secs(600)), self.http.request(req)).await;
        let Ok(Ok(res)) = sent else {
            return (None, false);
        };
        let status = res.status();
        let body = res
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (Some(status.as_u16()), usable(status, &body))
    }
}

/// A 2xx whose body carries an `authToken`: the app can open the verification.
fn usable(status: StatusCode, body: &[u8]) -> bool {
    status.is_success()
        && serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("authToken")?.as_str().map(|t| !t.is_empty()))
            .unwrap_or(false)
}
