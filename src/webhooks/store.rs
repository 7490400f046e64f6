//! What the webhook queue needs of its storage, as one small trait: the durable queue of
//! received webhooks (pending, delivered, dead), the redelivery check, and the scanRef→team map.
//! `state.backend = "memory"` keeps it on local disk ([`super::disk`]); a Redis backend can
//! implement the same trait.
//!
//! Calls block (a disk write is an fsync): async code calls them through
//! `tokio::task::spawn_blocking`. Times are wall-clock milliseconds since the Unix epoch, given by
//! the caller (so that tests can run the queue on paused time).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A storage failure. The message names the operation and the cause, never a body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("webhook store: {0}")]
pub struct StoreError(pub String);

/// What the gateway keeps of a received webhook besides its body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The stable delivery id (`x-gateway-delivery-id`), also the dead letter's id.
    pub id: String,
    /// The account whose URL it was posted to.
    pub account: String,
    /// Its `scanRef` (empty when the body named none).
    pub scan_ref: String,
    /// Its `Idenfy-Event-Type` (empty when absent).
    pub event_type: String,
    /// Its `Content-Type`, passed on to the team.
    pub content_type: Option<String>,
    pub received_ms: u64,
}

/// A webhook to store: its metadata, raw body, and the key that tells a redelivery of the same
/// event (account, scanRef, event type, body) from a new one.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub meta: Meta,
    pub body: Bytes,
    pub dedup_key: [u8; 32],
}

/// What storing a webhook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Stored and queued for delivery, as `seq`.
    Queued(u64),
    /// The same event was already received: nothing stored.
    Duplicate,
}

/// A queued delivery, in the order received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: u64,
    pub scan_ref: String,
    pub attempts: u32,
    /// Not to be attempted before this time.
    pub next_at_ms: u64,
    pub received_ms: u64,
}

/// Why a delivery was given up, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burial {
    /// A bounded word: `expired`, `refused_<status>`, `no_team`, `no_webhook_url`.
    pub reason: String,
    /// The team it was meant for, when known.
    pub team: Option<String>,
    pub attempts: u32,
    pub dead_ms: u64,
}

/// A dead letter as the admin endpoint lists it: never the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: String,
    pub account: String,
    pub scan_ref: String,
    pub event_type: String,
    pub team: Option<String>,
    pub reason: String,
    pub attempts: u32,
    pub received_ms: u64,
    pub dead_ms: u64,
}

impl DeadLetter {
    /// The listing of a stored webhook given up as `burial` says.
    pub fn of(meta: Meta, burial: Burial) -> Self {
        DeadLetter {
            id: meta.id,
            account: meta.account,
            scan_ref: meta.scan_ref,
            event_type: meta.event_type,
            team: burial.team,
            reason: burial.reason,
            attempts: burial.attempts,
            received_ms: meta.received_ms,
            dead_ms: burial.dead_ms,
        }
    }
}

/// The webhook queue's storage; see the module docs.
pub trait WebhookStore: Send + Sync + 'static {
    /// Stores `event` durably (when this returns `Queued`, a crash loses nothing), or says it is a
    /// redelivery of one already received.
    fn accept(&self, event: &NewEvent) -> Result<Accepted, StoreError>;
    /// Every queued delivery, oldest first.
    fn pending(&self) -> Result<Vec<Pending>, StoreError>;
    /// A stored webhook (queued or dead).
    fn event(&self, seq: u64) -> Result<Option<(Meta, Bytes)>, StoreError>;
    /// Delivered: off the queue, body dropped (the redelivery check remains).
    fn delivered(&self, seq: u64) -> Result<(), StoreError>;
    /// Failed: try again after `next_at_ms`.
    fn retry_later(&self, seq: u64, attempts: u32, next_at_ms: u64) -> Result<(), StoreError>;
    /// Given up: off the queue, into dead letters (the body kept for a re-send).
    fn bury(&self, seq: u64, burial: &Burial) -> Result<(), StoreError>;
    /// The dead letters, oldest first.
    fn dead(&self) -> Result<Vec<DeadLetter>, StoreError>;
    /// Moves dead letter `id` back to the queue, due now, its age counted from `now_ms` (so that
    /// it gets a full `max_age` of retries again): the delivery queued, or `None` when there is
    /// no such dead letter.
    fn revive(&self, id: &str, now_ms: u64) -> Result<Option<Pending>, StoreError>;
    /// Remembers which team created each scanRef, until the given time.
    fn learn(&self, routes: &[(String, String, u64)]) -> Result<(), StoreError>;
    /// The team that created `scan_ref`, if remembered.
    fn team_of(&self, scan_ref: &str) -> Result<Option<String>, StoreError>;
    /// Forgets routes kept past their time, and redelivery keys received before `seen_before_ms`.
    fn prune(&self, now_ms: u64, seen_before_ms: u64) -> Result<(), StoreError>;
}
