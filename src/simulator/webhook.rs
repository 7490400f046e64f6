//! Finishing a session and its webhook: iDenfy's KYC payload (idenfy-api.md §6), signed with
//! `Idenfy-Signature` = lowercase hex HMAC-SHA256 of the raw body, sent with `Idenfy-Event-Type`
//! to the session's `callbackUrl` (or the configured URL), retried once on failure.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, Request, Uri};
use http_body_util::Full;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;

use super::clock::SimClock;
use super::sessions::{Outcome, Session};
use super::state::Shared;
use super::verification::{check_results, document_data};
use crate::webhooks::delivery::{https_client, HttpsClient};

/// How long a receiver has to answer: iDenfy's documented 10 seconds.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Delivery attempts: iDenfy's old FAQ says it "will repeat a call once".
const ATTEMPTS: usize = 2;
/// The statuses a session may finish with.
pub const FINISH_STATUSES: [&str; 5] = ["APPROVED", "DENIED", "SUSPECTED", "REVIEWING", "EXPIRED"];

/// The client that delivers webhooks (plain HTTP, or HTTPS with the webpki roots).
pub struct WebhookClient(HttpsClient);

impl std::fmt::Debug for WebhookClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookClient")
    }
}

impl WebhookClient {
    pub fn new() -> Self {
        WebhookClient(https_client())
    }
}

/// How to finish a session (`POST /__sim/sessions/{scanRef}/finish`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Finish {
    /// `APPROVED`, `DENIED`, `SUSPECTED`, `REVIEWING` or `EXPIRED`.
    pub status: String,
    /// The payload's `final` (default true).
    #[serde(rename = "final", default = "yes")]
    pub is_final: bool,
    /// `Idenfy-Event-Type`; by default `IDENTIFICATION_EXPIRED` for `EXPIRED`, else
    /// `IDENTIFICATION_MANUAL_FINISHED` when final and `IDENTIFICATION_AUTO_FINISHED` when not.
    #[serde(default)]
    pub event_type: Option<String>,
    /// Deliver to this URL instead of the session's `callbackUrl` or the configured URL.
    #[serde(default)]
    pub url: Option<String>,
}

fn yes() -> bool {
    true
}

impl Finish {
    /// A final result with the default event type and URL.
    pub fn new(status: &str) -> Self {
        Finish {
            status: status.to_owned(),
            is_final: true,
            event_type: None,
            url: None,
        }
    }

    fn event_type(&self) -> String {
        self.event_type.clone().unwrap_or_else(|| {
            match (self.status.as_str(), self.is_final) {
                ("EXPIRED", _) => "IDENTIFICATION_EXPIRED",
                (_, true) => "IDENTIFICATION_MANUAL_FINISHED",
                (_, false) => "IDENTIFICATION_AUTO_FINISHED",
            }
            .to_owned()
        })
    }
}

/// What finishing did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinishReport {
    pub scan_ref: String,
    pub status: String,
    /// `None` when no webhook URL was known.
    pub webhook: Option<Delivery>,
}

/// One webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub url: String,
    pub event_type: String,
    /// Whether an attempt was answered 2xx.
    pub delivered: bool,
    /// Each attempt's status, or its error.
    pub attempts: Vec<Attempt>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Why a session could not be finished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FinishError {
    #[error("no session with this scanRef")]
    UnknownScanRef,
    #[error("status must be one of APPROVED, DENIED, SUSPECTED, REVIEWING, EXPIRED")]
    BadStatus,
}

/// Finishes a session (it is no longer active) and delivers its webhook.
pub async fn finish(
    shared: &Shared,
    scan_ref: &str,
    finish: Finish,
) -> Result<FinishReport, FinishError> {
    if !FINISH_STATUSES.contains(&finish.status.as_str()) {
        return Err(FinishError::BadStatus);
    }
    let (body, url, key, retry_delay) = {
        let now = shared.clock.now();
        let mut guard = shared.state();
        let st = &mut *guard;
        let session = st
            .sessions
            .get_mut(scan_ref)
            .ok_or(FinishError::UnknownScanRef)?;
        session.outcome = Some(Outcome {
            status: finish.status.clone(),
            is_final: finish.is_final,
            at: now,
        });
        let body = Bytes::from(payload(session, &shared.clock, now).to_string());
        let callback = session.request.get("callbackUrl").and_then(Value::as_str);
        let url = finish
            .url
            .clone()
            .or(callback.map(str::to_owned))
            .or(st.settings.webhook_url.clone());
        let delay = Duration::from_millis(st.settings.webhook_retry_delay_ms);
        (body, url, st.settings.webhook_key.clone(), delay)
    };
    let mut report = FinishReport {
        scan_ref: scan_ref.to_owned(),
        status: finish.status.clone(),
        webhook: None,
    };
    if let Some(url) = url {
        let signature = key.map(|k| sign(k.as_bytes(), &body));
        let delivery = deliver(
            &shared.webhooks,
            url,
            finish.event_type(),
            signature,
            body,
            retry_delay,
        )
        .await;
        let mut st = shared.state();
        match delivery.delivered {
            true => st.counters.webhooks.delivered += 1,
            false => st.counters.webhooks.failed += 1,
        }
        report.webhook = Some(delivery);
    }
    Ok(report)
}

/// iDenfy's KYC webhook payload for a finished session.
pub fn payload(session: &Session, clock: &SimClock, now: Duration) -> Value {
    let outcome = session.outcome.as_ref();
    let mut status = check_results(session, now);
    status.insert("overall".into(), json!(session.status(now)));
    let suspicion: &[&str] = match session.status(now) {
        "SUSPECTED" => &["FACE_SUSPECTED"],
        _ => &[],
    };
    status.insert("suspicionReasons".into(), json!(suspicion));
    status.insert("fraudTags".into(), json!([]));
    status.insert("mismatchTags".into(), json!([]));
    status.insert("additionalSteps".into(), Value::Null);
    json!({
        "final": outcome.is_none_or(|o| o.is_final),
        "platform": "PC",
        "status": status,
        "data": document_data(session, now),
        "fileUrls": {},
        "AML": null,
        "LID": null,
        "scanRef": session.scan_ref,
        "externalRef": session.request.get("externalRef").cloned().unwrap_or(Value::Null),
        "clientId": session.client_id_value(),
        "startTime": clock.wall(session.created).timestamp(),
        "finishTime": clock.wall(outcome.map_or(now, |o| o.at)).timestamp(),
        "clientIp": "127.0.0.1",
        "clientIpCountry": "LT",
        "clientLocation": "Vilnius, Lithuania",
    })
}

/// `Idenfy-Signature`: lowercase hex HMAC-SHA256 of the raw body.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

async fn deliver(
    client: &WebhookClient,
    url: String,
    event_type: String,
    signature: Option<String>,
    body: Bytes,
    retry_delay: Duration,
) -> Delivery {
    let mut delivery = Delivery {
        url,
        event_type,
        delivered: false,
        attempts: Vec::new(),
    };
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(retry_delay).await;
        }
        let result = send(client, &delivery, signature.as_deref(), body.clone()).await;
        delivery.delivered = result.status.is_some_and(|s| (200..300).contains(&s));
        delivery.attempts.push(result);
        if delivery.delivered {
            break;
        }
    }
    delivery
}

async fn send(
    client: &WebhookClient,
    to: &Delivery,
    signature: Option<&str>,
    body: Bytes,
) -> Attempt {
    let failed = |error: String| Attempt {
        status: None,
        error: Some(error),
    };
    let uri: Uri = match to.url.parse() {
        Ok(uri) => uri,
        Err(_) => return failed("the webhook URL is not a valid URI".to_owned()),
    };
    let mut req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Idenfy-Event-Type", to.event_type.as_str());
    if let Some(signature) = signature {
        req = req.header("Idenfy-Signature", signature);
    }
    let req = match req.body(Full::new(body)) {
        Ok(req) => req,
        Err(e) => return failed(e.to_string()),
    };
    match tokio::time::timeout(DELIVERY_TIMEOUT, client.0.request(req)).await {
        Ok(Ok(res)) => Attempt {
            status: Some(res.status().as_u16()),
            error: None,
        },
        Ok(Err(e)) => failed(e.to_string()),
        Err(_) => failed("the receiver did not answer within 10 seconds".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn event_type_follows_the_outcome() {
        assert_eq!(
            Finish::new("APPROVED").event_type(),
            "IDENTIFICATION_MANUAL_FINISHED"
        );
        assert_eq!(
            Finish::new("EXPIRED").event_type(),
            "IDENTIFICATION_EXPIRED"
        );
        let auto = Finish {
            is_final: false,
            ..Finish::new("DENIED")
        };
        assert_eq!(auto.event_type(), "IDENTIFICATION_AUTO_FINISHED");
    }

    #[tokio::test]
    async fn payload_has_idenfy_top_level_keys() {
        let clock = SimClock::new();
        let request = serde_json::json!({"clientId": "c-1", "externalRef": "order-9"});
        let mut s = Session::new(
            "c-1".into(),
            request.as_object().cloned().unwrap(),
            clock.now(),
            60,
        );
        s.outcome = Some(Outcome {
            status: "APPROVED".into(),
            is_final: true,
            at: clock.now(),
        });
        let p = payload(&s, &clock, clock.now());
        for key in [
            "final",
            "platform",
            "status",
            "data",
            "scanRef",
            "clientId",
            "externalRef",
            "startTime",
            "finishTime",
        ] {
            assert!(p.get(key).is_some(), "{key} missing");
        }
        assert_eq!(p["status"]["overall"], "APPROVED");
        assert_eq!(p["externalRef"], "order-9");
        assert_eq!(p["final"], true);
    }

    #[test]
    fn finish_body_defaults_to_final() {
        let f: Finish = serde_json::from_str(r#"{"status":"DENIED"}"#).unwrap();
        assert!(f.is_final && f.url.is_none());
        assert!(serde_json::from_str::<Finish>(r#"{"stat":"DENIED"}"#).is_err());
    }
}
