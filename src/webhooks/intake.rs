//! The webhook listener's one endpoint, `POST /webhooks/idenfy/{account}`: check the signature
//! with the account's `webhook_key`, store the raw body durably, then acknowledge (200). A final
//! webhook also ends replay for its scanRef. Anything else is refused (401/404/405/413), counted
//! by reason and stored nowhere.
//!
//! The acknowledgement waits only for the store (one fsync), never for a team's endpoint: the
//! delivery queue does that work later.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::metrics::WebhookMetrics;
use super::schedule::Schedule;
use super::signature::{verify, IDENFY_SIGNATURE};
use super::store::{Accepted, Meta, NewEvent, Pending, WebhookStore};
use super::Clock;
use crate::body::Body;
use crate::dedup::SessionEnds;
use crate::error::GatewayError;
use crate::secret::SecretSource;

/// The only path prefix the listener serves.
pub const PATH_PREFIX: &str = "/webhooks/idenfy/";

/// `Idenfy-Event-Type`, kept on delivery.
pub const IDENFY_EVENT_TYPE: &str = "idenfy-event-type";

/// A webhook key (an account's, or a team's): inline, or a file, re-read when a signature does
/// not match or the file could not be read before (so that
/// a rotated key is picked up without a restart).
pub struct WebhookKey {
    source: SecretSource,
    cached: std::sync::Mutex<Option<Arc<str>>>,
}

impl WebhookKey {
    pub fn new(source: SecretSource) -> Self {
        WebhookKey {
            source,
            cached: std::sync::Mutex::new(None),
        }
    }

    pub(super) fn read(&self, fresh: bool) -> Option<Arc<str>> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if fresh || cached.is_none() {
            let value = match &self.source {
                SecretSource::Inline(secret) => Some(Arc::from(secret.expose())),
                SecretSource::File(path) => crate::credentials::read_secret_file(path)
                    .ok()
                    .map(Arc::from),
            };
            if value.is_some() {
                *cached = value;
            }
        }
        cached.clone()
    }

    /// Does `signature` sign `body` with this key? A file key is read again once on a mismatch.
    fn verifies(&self, body: &[u8], signature: &[u8]) -> bool {
        let check =
            |key: Option<Arc<str>>| key.is_some_and(|k| verify(k.as_bytes(), body, signature));
        check(self.read(false))
            || (matches!(self.source, SecretSource::File(_)) && check(self.read(true)))
    }
}

/// What the endpoint needs.
pub struct Intake {
    /// Accounts with a `webhook_key`, by name.
    pub accounts: HashMap<String, WebhookKey>,
    pub store: Arc<dyn WebhookStore>,
    pub ends: SessionEnds,
    pub metrics: WebhookMetrics,
    /// Wakes the delivery queue.
    pub wake: Arc<Notify>,
    /// The delivery queue's schedule: a stored webhook is added to it. `None` in a fleet, whose
    /// queue hands each stored webhook to one replica ([`super::fleet`]).
    pub schedule: Option<Arc<std::sync::Mutex<Schedule>>>,
    pub max_body: u64,
    pub body_timeout: Duration,
    pub clock: Clock,
}

impl Intake {
    /// One request's answer: 200 once stored, or the refusal in iDenfy's error shape.
    pub async fn handle(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let started = Instant::now();
        match self.accept(req).await {
            Ok(()) => {
                self.metrics.ack.observe(started.elapsed().as_secs_f64());
                let mut res = Response::new(Body::empty());
                *res.status_mut() = StatusCode::OK;
                res
            }
            Err(err) => {
                self.metrics
                    .refused
                    .with_label_values(&[err.reason()])
                    .inc();
                err.into_response()
            }
        }
    }

    async fn accept<B>(&self, req: Request<B>) -> Result<(), GatewayError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let account = account_of(req.uri().path()).ok_or(GatewayError::RouteNotFound)?;
        if req.method() != Method::POST {
            return Err(GatewayError::MethodNotAllowed);
        }
        let key = self
            .accounts
            .get(account)
            .ok_or(GatewayError::WebhookUnknownAccount)?;
        let account = account.to_owned();
        let signature = req
            .headers()
            .get(IDENFY_SIGNATURE)
            .map(|v| v.as_bytes().to_vec())
            .ok_or(GatewayError::WebhookUnsigned)?;
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let event_type = header(IDENFY_EVENT_TYPE).unwrap_or_default();
        let content_type = header(http::header::CONTENT_TYPE.as_str());
        let body = self.read_body(req.into_body()).await?;
        if !key.verifies(&body, &signature) {
            return Err(GatewayError::WebhookBadSignature);
        }
        let facts = Facts::of(&body);
        let received_ms = self.clock.now_ms();
        let event = NewEvent {
            dedup_key: dedup_key(&account, &facts.scan_ref, &event_type, &body),
            meta: Meta {
                id: uuid::Uuid::new_v4().to_string(),
                account: account.clone(),
                scan_ref: facts.scan_ref.clone(),
                event_type,
                content_type,
                received_ms,
            },
            body,
        };
        let store = Arc::clone(&self.store);
        let stored = tokio::task::spawn_blocking(move || store.accept(&event))
            .await
            .map_err(|_| GatewayError::WebhookNotStored)?
            .map_err(|e| {
                tracing::error!(error = %e, "webhook not stored");
                GatewayError::WebhookNotStored
            })?;
        self.metrics.received.with_label_values(&[&account]).inc();
        match stored {
            Accepted::Queued(seq) => {
                if let Some(schedule) = &self.schedule {
                    super::delivery::lock(schedule).add(Pending {
                        seq,
                        scan_ref: facts.scan_ref.clone(),
                        attempts: 0,
                        next_at_ms: received_ms,
                        received_ms,
                    });
                    self.wake.notify_one();
                }
            }
            Accepted::Duplicate => self.metrics.duplicates.with_label_values(&[&account]).inc(),
        }
        if facts.is_final && !facts.scan_ref.is_empty() {
            self.ends.end(&facts.scan_ref, "webhook");
        }
        Ok(())
    }

    async fn read_body<B>(&self, body: B) -> Result<Bytes, GatewayError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limit = usize::try_from(self.max_body).unwrap_or(usize::MAX);
        let read = Limited::new(body, limit).collect();
        match tokio::time::timeout(self.body_timeout, read).await {
            Err(_) => Err(GatewayError::BodyTimeout),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                Err(GatewayError::PayloadTooLarge {
                    limit: self.max_body,
                })
            }
            Ok(Err(_)) => Err(GatewayError::BodyRead),
        }
    }
}

/// `{account}` of `/webhooks/idenfy/{account}`: one non-empty segment.
fn account_of(path: &str) -> Option<&str> {
    let account = path.strip_prefix(PATH_PREFIX)?;
    (!account.is_empty() && !account.contains('/')).then_some(account)
}

/// Tells a redelivery of an event from a new event: the account, scanRef, event type and body.
fn dedup_key(account: &str, scan_ref: &str, event_type: &str, body: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [
        account.as_bytes(),
        scan_ref.as_bytes(),
        event_type.as_bytes(),
    ] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.update(body);
    hash.finalize().into()
}

/// What the gateway reads of a webhook body: its scanRef, and whether it is final (`final:
/// true`, or an overall status other than `ACTIVE`).
#[derive(Debug, PartialEq, Eq)]
pub struct Facts {
    pub scan_ref: String,
    pub is_final: bool,
}

impl Facts {
    pub fn of(body: &[u8]) -> Facts {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let scan_ref = value
            .get("scanRef")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let overall = value
            .get("status")
            .and_then(|s| s.get("overall"))
            .and_then(Value::as_str);
        let is_final = value.get("final").and_then(Value::as_bool) == Some(true)
            || overall.is_some_and(|o| o != "ACTIVE");
        Facts { scan_ref, is_final }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_account_is_one_segment() {
        assert_eq!(account_of("/webhooks/idenfy/main"), Some("main"));
        for path in [
            "/webhooks/idenfy/",
            "/webhooks/idenfy/a/b",
            "/webhooks/x",
            "/",
        ] {
            assert_eq!(account_of(path), None, "{path}");
        }
    }

    #[test]
    fn final_means_final_true_or_a_status_other_than_active() {
        let f = |s: &str| Facts::of(s.as_bytes()).is_final;
        assert!(f(
            r#"{"final":true,"scanRef":"s","status":{"overall":"ACTIVE"}}"#
        ));
        assert!(f(r#"{"final":false,"status":{"overall":"APPROVED"}}"#));
        assert!(!f(r#"{"final":false,"status":{"overall":"ACTIVE"}}"#));
        assert!(!f("not json"));
        assert_eq!(Facts::of(br#"{"scanRef":"s-1"}"#).scan_ref, "s-1");
    }

    #[test]
    fn the_dedup_key_covers_every_part() {
        let base = dedup_key("a", "s", "E", b"{}");
        assert_eq!(base, dedup_key("a", "s", "E", b"{}"));
        assert_ne!(base, dedup_key("b", "s", "E", b"{}"));
        assert_ne!(base, dedup_key("a", "t", "E", b"{}"));
        assert_ne!(base, dedup_key("a", "s", "F", b"{}"));
        assert_ne!(base, dedup_key("a", "s", "E", b"{ }"));
        // Lengths are part of it: moving a byte between parts is another key.
        assert_ne!(dedup_key("ab", "", "E", b""), dedup_key("a", "b", "E", b""));
    }
}
