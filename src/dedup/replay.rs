//! The replay store of the `dedup` layer: a successful token response is kept for the token's
//! lifetime, so that a later request for the same key gets the live session instead of a 409 or a
//! second billable session.
//!
//! Bounded in entries and bytes (moka, LRU). Expiry is checked against `tokio::time::Instant`,
//! stored with each entry, so that paused-time tests see it; moka's own expiry, on the wall clock
//! with the same lifetime, only frees the memory.
//!
//! An entry also ends with its session: the store keeps an index from the token's `scanRef` to
//! its key, so that a signal naming only the scanRef (a final webhook, a status answer other than
//! `ACTIVE`, a recheck) removes the entry ([`ReplayStore::end`]). Each entry remembers when its
//! session was last known to be live (stored, or confirmed by a recheck): `dedup` rechecks an
//! entry older than `dedup.recheck_after` before replaying it.

use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;

use http::StatusCode;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use prometheus::IntGauge;
use serde_json::Value;
use tokio::time::Instant;

use super::session::scan_ref_of;
use super::shared::SharedResponse;

/// iDenfy's longest token lifetime (30 days, the maximum of `expiryTime` and `lifetime`). Longer
/// claims are clamped to it, so that no arithmetic on instants can overflow.
pub const MAX_LIFETIME: Duration = Duration::from_secs(2_592_000);

/// How long tokens live when neither body says, and how long before their end replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifetimePolicy {
    pub default: Duration,
    pub margin: Duration,
}

/// How long a response may be replayed, or `None` when it must not be kept: it is not a successful
/// token response (200 or 201 whose JSON body has a non-empty `authToken` or `tokenString`), or the
/// token lives no longer than the safety margin.
pub fn replay_ttl(
    status: StatusCode,
    response: &[u8],
    request: &[u8],
    policy: &LifetimePolicy,
) -> Option<Duration> {
    if !matches!(status, StatusCode::OK | StatusCode::CREATED) {
        return None;
    }
    let response: Value = serde_json::from_slice(response).ok()?;
    if !has_token(&response) {
        return None;
    }
    let request = serde_json::from_slice(request).unwrap_or(Value::Null);
    let lifetime = token_lifetime(&response, &request, policy.default);
    lifetime
        .checked_sub(policy.margin)
        .filter(|ttl| !ttl.is_zero())
}

fn has_token(response: &Value) -> bool {
    ["authToken", "tokenString"].iter().any(|field| {
        response
            .get(field)
            .and_then(Value::as_str)
            .is_some_and(|token| !token.is_empty())
    })
}

/// The token's lifetime: `expiryTime` (seconds) of the response (what iDenfy applied), else
/// `expiryTime` of the request, else `lifetime` of the request (KYB and the newer KYC schema), else
/// `default`; never more than [`MAX_LIFETIME`]. A value that is not whole seconds (a non-negative
/// integer, or a string of one) is ignored.
pub fn token_lifetime(response: &Value, request: &Value, default: Duration) -> Duration {
    seconds(response, "expiryTime")
        .or_else(|| seconds(request, "expiryTime"))
        .or_else(|| seconds(request, "lifetime"))
        .unwrap_or(default)
        .min(MAX_LIFETIME)
}

fn seconds(body: &Value, field: &str) -> Option<Duration> {
    let secs = match body.get(field)? {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

/// A stored token response, the fingerprint of the request body that created the session, and
/// the team whose request that was: only that team is ever given the session.
#[derive(Debug, Clone)]
pub struct Replay {
    pub response: Arc<SharedResponse>,
    pub fingerprint: u64,
    /// The creating team, an index into `Config::teams`.
    pub team: usize,
}

/// What the store knows of an entry's session besides its answer.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// The session's `scanRef`, from the stored token response (`None`: the body named none).
    pub scan_ref: Option<Arc<str>>,
    /// When the session was last known live: stored, or confirmed `ACTIVE` by a recheck.
    pub confirmed_at: Instant,
}

struct Stored {
    /// Tells this entry from a later one for the same key and scanRef, in the index.
    id: u64,
    replay: Replay,
    scan_ref: Option<Arc<str>>,
    confirmed_at: Mutex<Instant>,
    expires_at: Instant,
    ttl: Duration,
    weight: u32,
}

/// Live token responses by key, and the key of each session by its scanRef.
pub struct ReplayStore<K> {
    cache: Cache<K, Arc<Stored>>,
    /// scanRef → key (and id) of the entry holding that session; an entry's removal removes its
    /// own mapping (the eviction listener), never a newer entry's.
    index: Arc<DashMap<Arc<str>, (K, u64)>>,
    next_id: AtomicU64,
    /// Bytes one entry weighs at least: `max_bytes / max_entries`.
    slot: u32,
    entries: IntGauge,
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> ReplayStore<K> {
    /// Holds about `max_entries` entries and `max_bytes` bytes at most (moka evicts the least
    /// recently used on its next housekeeping): each entry weighs its size but at least one slot of
    /// `max_bytes / max_entries`, against a capacity of `max_entries` slots. `entries` follows the
    /// number of entries.
    pub fn new(max_entries: u64, max_bytes: u64, entries: IntGauge) -> Self {
        let slot = (max_bytes / max_entries.max(1)).clamp(1, u64::from(u32::MAX));
        let gauge = entries.clone();
        let index: Arc<DashMap<Arc<str>, (K, u64)>> = Arc::default();
        let unindex = Arc::clone(&index);
        let cache = Cache::builder()
            .max_capacity(slot.saturating_mul(max_entries))
            .weigher(|_, stored: &Arc<Stored>| stored.weight)
            .expire_after(TokenExpiry)
            .eviction_policy(EvictionPolicy::lru())
            .eviction_listener(move |_, stored: Arc<Stored>, _| {
                gauge.dec();
                if let Some(scan_ref) = &stored.scan_ref {
                    unindex.remove_if(scan_ref, |_, (_, id)| *id == stored.id);
                }
            })
            .build();
        ReplayStore {
            cache,
            index,
            next_id: AtomicU64::new(0),
            slot: slot as u32,
            entries,
        }
    }

    /// Keeps `replay` for `ttl` from now.
    pub fn insert(&self, key: K, replay: Replay, ttl: Duration) {
        let ttl = ttl.min(MAX_LIFETIME);
        let size = u32::try_from(replay.response.weight()).unwrap_or(u32::MAX);
        let scan_ref = scan_ref_of(replay.response.body());
        let now = Instant::now();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stored = Stored {
            id,
            replay,
            scan_ref: scan_ref.clone(),
            confirmed_at: Mutex::new(now),
            expires_at: now + ttl,
            ttl,
            weight: size.max(self.slot),
        };
        self.entries.inc();
        if let Some(scan_ref) = scan_ref {
            self.index.insert(scan_ref, (key.clone(), id));
        }
        self.cache.insert(key, Arc::new(stored));
    }

    /// The live replay for `key`, if any. An entry past its expiry is removed (that entry only: a
    /// fresh one stored meanwhile stays).
    pub fn get(&self, key: &K) -> Option<Replay> {
        self.lookup(key).map(|(replay, _)| replay)
    }

    /// [`Self::get`], with what the store knows of the session's liveness.
    pub fn lookup(&self, key: &K) -> Option<(Replay, Freshness)> {
        let stored = self.cache.get(key)?;
        if Instant::now() < stored.expires_at {
            let confirmed_at = *stored
                .confirmed_at
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let freshness = Freshness {
                scan_ref: stored.scan_ref.clone(),
                confirmed_at,
            };
            return Some((stored.replay.clone(), freshness));
        }
        self.remove_if_same(key, &stored);
        None
    }

    /// Removes the entry for `key` if it is still `stored` (not a newer one).
    fn remove_if_same(&self, key: &K, stored: &Arc<Stored>) {
        self.cache
            .entry(key.clone())
            .and_compute_with(|current| match current {
                Some(entry) if Arc::ptr_eq(entry.value(), stored) => Op::Remove,
                _ => Op::Nop,
            });
    }

    /// The session `scan_ref` is over: its entry is removed, so the next request for its key goes
    /// upstream. `true` if an entry was removed.
    pub fn end(&self, scan_ref: &str) -> bool {
        let Some((key, id)) = self.index.get(scan_ref).map(|e| e.value().clone()) else {
            return false;
        };
        self.index
            .remove_if(scan_ref, |_, (_, indexed)| *indexed == id);
        let Some(stored) = self.cache.get(&key) else {
            return false;
        };
        if stored.id != id {
            return false;
        }
        self.remove_if_same(&key, &stored);
        true
    }

    /// A recheck found the session of `key`'s entry (`scan_ref`) still `ACTIVE`: its age starts
    /// again from now.
    pub fn confirm(&self, key: &K, scan_ref: &str) {
        if let Some(stored) = self.cache.get(key) {
            if stored.scan_ref.as_deref() == Some(scan_ref) {
                *stored
                    .confirmed_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Instant::now();
            }
        }
    }

    /// Whether any entry is indexed by a scanRef, so that an answer could end it (exact: the
    /// index is updated as entries are stored and removed, not on moka's housekeeping).
    pub fn holds_sessions(&self) -> bool {
        !self.index.is_empty()
    }

    /// scanRefs indexed (tests and diagnostics).
    pub fn indexed(&self) -> usize {
        self.cache.run_pending_tasks();
        self.index.len()
    }

    /// Entries held, after pending housekeeping (tests and diagnostics).
    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// moka's expiry: the token's lifetime on the wall clock, a memory bound behind the check in `get`.
struct TokenExpiry;

impl<K> Expiry<K, Arc<Stored>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _: &K,
        stored: &Arc<Stored>,
        _: std::time::Instant,
    ) -> Option<Duration> {
        Some(stored.ttl)
    }

    fn expire_after_update(
        &self,
        _: &K,
        stored: &Arc<Stored>,
        _: std::time::Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(stored.ttl)
    }
}

#[cfg(test)]
mod tests;
