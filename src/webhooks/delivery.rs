//! The delivery queue: each stored webhook goes to the team that created its scanRef, re-signed
//! with the team's key, at least once and in order per scanRef.
//!
//! One loop loads the store's pending deliveries into the [`Schedule`] at start, then starts the
//! deliveries that are due (only the oldest undelivered webhook of each scanRef, so a scanRef's
//! webhooks arrive in the order iDenfy sent them), and sleeps until the next is due or a new
//! webhook arrives. A failed attempt is tried again after a
//! full-jitter backoff between `webhooks.retry_base` and `webhooks.retry_cap`, until
//! `webhooks.max_age` after receipt; then it goes to dead letters. Every state change is stored
//! before the next step, so a restart resumes where the last process stopped (a delivery that
//! was in flight is sent again: at least once, never lost; receivers drop duplicates by
//! `x-gateway-delivery-id`).
//!
//! Answers: 2xx ends the delivery. 400, 405, 410, 413, 415 and 422 give up at once (the endpoint
//! says this request itself is wrong or gone: sending it again cannot help, and an operator
//! re-sends it from dead letters after fixing the endpoint). Every other answer (401/403 during a
//! key rotation, 404 during a deploy, 408, 409, 429, 5xx) and every error or timeout is retried.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::sync::{watch, Notify};

use super::fleet::{FleetStore, ORDER_WAIT};
use super::intake::{WebhookKey, IDENFY_EVENT_TYPE};
use super::metrics::WebhookMetrics;
use super::schedule::Schedule;
use super::signature::{sign, IDENFY_SIGNATURE};
use super::store::{Burial, DeadLetter, Pending, StoreError, WebhookStore};
use super::Clock;
use crate::config::UnknownScanRef;

/// The id a receiver drops duplicates by: the same for every attempt of one webhook.
pub const X_GATEWAY_DELIVERY_ID: &str = "x-gateway-delivery-id";

/// Answers that end a delivery at once, into dead letters (see the module docs).
const GIVE_UP: [u16; 6] = [400, 405, 410, 413, 415, 422];

/// How often routes past their time and old redelivery keys are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Sends one delivery; the real one is HTTP ([`HttpTransport`]).
pub trait Transport: Send + Sync + 'static {
    /// POSTs `body` with `headers` to `url`: the answer's status, or why there is none.
    fn post(
        &self,
        url: &Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<StatusCode, String>> + Send>>;
}

/// An HTTP/1.1 client for webhook deliveries: plain, or TLS with the webpki roots. The
/// simulator's webhook sender uses it too.
pub type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A new [`HttpsClient`].
pub fn https_client() -> HttpsClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(https)
}

/// Deliveries over HTTP/1.1 (plain, or TLS with the webpki roots).
pub struct HttpTransport(HttpsClient);

impl HttpTransport {
    pub fn new() -> Self {
        HttpTransport(https_client())
    }
}

impl Default for HttpTransport {
    fn default() -> Self {
        Self::new()
    }
}

impl Transport for HttpTransport {
    fn post(
        &self,
        url: &Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<StatusCode, String>> + Send>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = url.clone();
        *req.headers_mut() = headers;
        let sent = self.0.request(req);
        Box::pin(async move {
            let res = sent.await.map_err(|e| e.to_string())?;
            Ok(res.status())
        })
    }
}

/// A team as the queue sees it: its name and, when configured, where and how to deliver.
pub struct Target {
    pub name: String,
    pub webhook: Option<(Uri, WebhookKey)>,
}

/// Timing of deliveries (`[webhooks]`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub retry_base: Duration,
    pub retry_cap: Duration,
    pub max_age: Duration,
    pub delivery_timeout: Duration,
}

/// The queue: see the module docs.
pub struct Queue {
    pub store: Arc<dyn WebhookStore>,
    pub teams: Vec<Target>,
    pub unknown: UnknownScanRef,
    /// Routes learnt but maybe not yet stored (see `RouteBook`).
    pub recent: Arc<DashMap<String, String>>,
    pub timing: Timing,
    pub transport: Arc<dyn Transport>,
    pub metrics: WebhookMetrics,
    pub clock: Clock,
    pub wake: Arc<Notify>,
    /// What is due when; shared with the intake and the dead letters, which add to it (and in
    /// a fleet with the group's feed instead).
    pub schedule: Arc<Mutex<Schedule>>,
    /// A fleet's queue ([`super::fleet`]): a webhook waits for the ones before it in its lane
    /// that other replicas hold.
    pub fleet: Option<Arc<FleetStore>>,
}

/// How one attempt ended.
enum Attempted {
    Delivered(String),
    GiveUp(Option<String>, String),
    Retry(String),
    /// The webhook is no longer stored (delivered or re-sent meanwhile).
    Gone,
    /// An earlier webhook of its scanRef is still undelivered, held by another replica: not
    /// attempted, looked at again after [`ORDER_WAIT`].
    NotYet,
}

/// Full jitter between `base` and `min(cap, base·2^(attempt-1))`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(30))
        .min(cap)
        .max(base);
    let spread = (ceiling - base).as_millis() as u64;
    base + Duration::from_millis(fastrand::u64(0..=spread))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError(format!("store task failed: {e}")))?
}

/// Locks the schedule (a poisoned lock is still a consistent schedule: every change is one call).
pub(super) fn lock(schedule: &Mutex<Schedule>) -> std::sync::MutexGuard<'_, Schedule> {
    schedule.lock().unwrap_or_else(|e| e.into_inner())
}

impl Queue {
    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        lock(&self.schedule)
    }

    /// Runs until `stop` turns true: loads what the store has pending, then starts deliveries as
    /// they fall due, sleeping until the next is due or a webhook arrives.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let store = Arc::clone(&self.store);
            match blocking(move || store.pending()).await {
                Ok(pending) => {
                    let mut schedule = self.schedule();
                    for p in pending {
                        schedule.add(p);
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhook queue unreadable; trying again in 1s")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let mut next_prune = self.clock.now_ms();
        loop {
            let now = self.clock.now_ms();
            if now >= next_prune {
                self.prune(now).await;
                next_prune = now + PRUNE_EVERY.as_millis() as u64;
            }
            let next = self.dispatch(now);
            let until = next.unwrap_or(u64::MAX).min(next_prune);
            let sleep = Duration::from_millis(until.saturating_sub(self.clock.now_ms()));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    async fn prune(&self, now: u64) {
        let store = Arc::clone(&self.store);
        let seen_before = now.saturating_sub(self.timing.max_age.as_millis() as u64);
        if let Err(e) = blocking(move || store.prune(now, seen_before)).await {
            tracing::warn!(error = %e, "webhook store prune failed");
        }
    }

    /// Starts every delivery due at `now`; the time the next one is due.
    fn dispatch(self: &Arc<Self>, now: u64) -> Option<u64> {
        let (due, next, depth, oldest) = {
            let mut schedule = self.schedule();
            let due = schedule.take_due(now);
            let next = schedule.next_due();
            (due, next, schedule.depth(), schedule.oldest_received())
        };
        self.metrics.depth.set(depth as i64);
        let age = oldest.map_or(0, |t| now.saturating_sub(t) / 1000);
        self.metrics.oldest.set(age as i64);
        for p in due {
            tokio::spawn(Arc::clone(self).deliver(p));
        }
        next
    }

    /// One attempt of `p`, and its consequence stored, then scheduled.
    async fn deliver(self: Arc<Self>, p: Pending) {
        let attempted = self.attempt(&p).await;
        if let Err(e) = self.settle(&p, attempted).await {
            tracing::warn!(error = %e, "webhook delivery state not stored; it will be sent again");
            // The store still has it as it was: due again in a second (not at once, in a loop).
            let again = self.clock.now_ms() + 1000;
            self.schedule().release(p.seq, again);
        }
        self.wake.notify_one();
    }

    async fn settle(&self, p: &Pending, attempted: Attempted) -> Result<(), StoreError> {
        let store = Arc::clone(&self.store);
        let (seq, now) = (p.seq, self.clock.now_ms());
        let attempts = p.attempts + 1;
        match attempted {
            Attempted::Gone => {
                self.schedule().finished(seq);
                Ok(())
            }
            Attempted::NotYet => {
                self.schedule()
                    .release(seq, now + ORDER_WAIT.as_millis() as u64);
                Ok(())
            }
            Attempted::Delivered(team) => {
                blocking(move || store.delivered(seq)).await?;
                self.schedule().finished(seq);
                self.metrics.delivered.with_label_values(&[&team]).inc();
                Ok(())
            }
            Attempted::GiveUp(team, reason) => self.bury(p, team, reason, attempts).await,
            Attempted::Retry(team) => {
                let age_limit = p.received_ms + self.timing.max_age.as_millis() as u64;
                if now >= age_limit {
                    return self.bury(p, Some(team), "expired".into(), attempts).await;
                }
                let delay = backoff(attempts, self.timing.retry_base, self.timing.retry_cap);
                let next = (now + delay.as_millis() as u64).min(age_limit);
                blocking(move || store.retry_later(seq, attempts, next)).await?;
                self.schedule().retry_at(seq, attempts, next);
                self.metrics.retries.with_label_values(&[&team]).inc();
                Ok(())
            }
        }
    }

    async fn bury(
        &self,
        p: &Pending,
        team: Option<String>,
        reason: String,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let label = team.clone().unwrap_or_else(|| "unknown".into());
        let burial = Burial {
            reason: reason.clone(),
            team,
            attempts,
            dead_ms: self.clock.now_ms(),
        };
        let (store, seq) = (Arc::clone(&self.store), p.seq);
        blocking(move || store.bury(seq, &burial)).await?;
        self.schedule().finished(seq);
        tracing::warn!(team = %label, reason = %reason, attempts, "webhook delivery given up: in dead letters");
        self.metrics
            .dead
            .with_label_values(&[&label, &reason])
            .inc();
        Ok(())
    }

    /// The team `scan_ref` belongs to: learnt from a token response, else `webhooks.unknown`.
    async fn team_for(&self, scan_ref: &str) -> Result<Option<&Target>, StoreError> {
        let learnt = match self.recent.get(scan_ref) {
            Some(team) => Some(team.value().clone()),
            None => {
                let (store, scan_ref) = (Arc::clone(&self.store), scan_ref.to_owned());
                blocking(move || store.team_of(&scan_ref)).await?
            }
        };
        Ok(match learnt {
            Some(name) => self.teams.iter().find(|t| t.name == name),
            None => match self.unknown {
                UnknownScanRef::Team(i) => self.teams.get(i),
                UnknownScanRef::Dead => None,
            },
        })
    }

    async fn attempt(&self, p: &Pending) -> Attempted {
        if let Some(fleet) = &self.fleet {
            // Unknown (Redis down) counts as not yet: order is kept, nothing is lost.
            if !fleet.is_next(p.seq, &p.scan_ref).await.unwrap_or(false) {
                return Attempted::NotYet;
            }
        }
        let store = Arc::clone(&self.store);
        let seq = p.seq;
        let event = match blocking(move || store.event(seq)).await {
            Ok(Some(event)) => event,
            Ok(None) => return Attempted::Gone,
            Err(e) => {
                tracing::warn!(error = %e, "webhook unreadable");
                return Attempted::Retry("unknown".into());
            }
        };
        let (meta, body) = event;
        let team = match self.team_for(&meta.scan_ref).await {
            Ok(Some(team)) => team,
            Ok(None) => return Attempted::GiveUp(None, "no_team".into()),
            Err(e) => {
                tracing::warn!(error = %e, "webhook route unreadable");
                return Attempted::Retry("unknown".into());
            }
        };
        let name = team.name.clone();
        let Some((url, key)) = &team.webhook else {
            return Attempted::GiveUp(Some(name), "no_webhook_url".into());
        };
        let Some(key) = key.read(false).or_else(|| key.read(true)) else {
            tracing::warn!(team = %name, "team webhook key unreadable");
            return Attempted::Retry(name);
        };
        let headers = delivery_headers(&meta, key.as_bytes(), &body);
        let sent = self.transport.post(url, headers, body);
        match tokio::time::timeout(self.timing.delivery_timeout, sent).await {
            Ok(Ok(status)) if status.is_success() => Attempted::Delivered(name),
            Ok(Ok(status)) if GIVE_UP.contains(&status.as_u16()) => {
                Attempted::GiveUp(Some(name), format!("refused_{}", status.as_u16()))
            }
            _ => Attempted::Retry(name),
        }
    }
}

/// The headers of a delivery: the body's content type, iDenfy's event type, the team's
/// signature and the delivery id.
fn delivery_headers(meta: &super::store::Meta, key: &[u8], body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = |s: &str| HeaderValue::from_str(s).ok();
    let content_type = meta.content_type.as_deref().unwrap_or("application/json");
    if let Some(v) = value(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    if let Some(v) = value(&meta.event_type).filter(|_| !meta.event_type.is_empty()) {
        headers.insert(HeaderName::from_static(IDENFY_EVENT_TYPE), v);
    }
    if let Some(v) = value(&sign(key, body)) {
        headers.insert(HeaderName::from_static(IDENFY_SIGNATURE), v);
    }
    if let Some(v) = value(&meta.id) {
        headers.insert(HeaderName::from_static(X_GATEWAY_DELIVERY_ID), v);
    }
    headers
}

/// Dead letters, for the admin endpoints.
#[derive(Clone)]
pub struct DeadLetters {
    pub store: Arc<dyn WebhookStore>,
    /// `None` in a fleet, whose queue hands a re-sent webhook to one replica.
    pub schedule: Option<Arc<Mutex<Schedule>>>,
    pub wake: Arc<Notify>,
    pub clock: Clock,
}

impl DeadLetters {
    pub async fn list(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let store = Arc::clone(&self.store);
        blocking(move || store.dead()).await
    }

    /// Queues dead letter `id` again, due now. `false`: no such dead letter.
    pub async fn retry(&self, id: &str) -> Result<bool, StoreError> {
        let (store, id, now) = (Arc::clone(&self.store), id.to_owned(), self.clock.now_ms());
        let Some(revived) = blocking(move || store.revive(&id, now)).await? else {
            return Ok(false);
        };
        if let Some(schedule) = &self.schedule {
            lock(schedule).add(revived);
            self.wake.notify_one();
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
