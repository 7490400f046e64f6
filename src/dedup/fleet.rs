//! Dedup across replicas (fleet mode): the flight of a token key and its replay entry in Redis.
//!
//! Only a replica's local leader comes here (its own callers for the key coalesce in memory
//! first). One script (`ENTER`) answers from the stored replay entry, or says who holds the
//! key's lease, or, the key being free, takes the lease (`SET PX`, the value naming this
//! replica's flight and its team) and, in the same script, the request's team cell and its
//! first attempt's account cell ([`crate::ratelimit::decided`]):
//! - **lead**: the decision goes to the team limit as a request extension; the upstream call
//!   runs with the lease renewed every third of its TTL; at the end one script (`FINISH`)
//!   stores a live token for replay (TTL = its lifetime − margin, entries over [`MAX_ENTRY`]
//!   bytes are not stored), releases the lease and publishes the answer to the followers (a
//!   failure is published, never stored). Two round trips for a leader, its quota included.
//! - **refused** by its team's quota: no lease is taken (nobody waits on a flight that will not
//!   call upstream) and nothing is spent; the team limit answers 429. One round trip.
//! - **wait**: another team's flight is `client_id_in_use` at once; the same team's is waited for
//!   on a subscription (pub/sub, not polling), bounded by the caller's deadline. The subscription
//!   is taken before the script runs again, so no answer is missed. While the lease lives the
//!   wait is renewed a lease TTL at a time; once a dead leader's lease expires, the next `ENTER`
//!   of one waiter wins `SET NX` and leads: exactly one more upstream call.
//! - a **stored** entry is the replay (or `client_id_in_use` for another team's): one round trip.
//!   While Redis answers this is the only replay store asked (a replica's memory copy is the
//!   fallback), so that a session ended anywhere ([`FleetDedup::end`]) is replayed nowhere.
//!   `ENTER` also says how long ago the session was last known live (stored, or confirmed by a
//!   recheck on any replica: [`FleetDedup::confirm`]), so that `dedup.recheck_after` holds
//!   fleet-wide; a recheck that finds it over removes the entry ([`FleetDedup::forget`]).
//!
//! Keys: `{prefix}{account}:flight:{kind}:{id}` (the lease), `…:replay:{kind}:{id}`,
//! `…:live:{kind}:{id}` (when its session was last known live, Redis time), the channel
//! `…:done:{kind}:{id}` and `…:session:{scanRef}` (which replay entry a session's end removes);
//! `id` is a SHA-256 of the clientId, which never reaches Redis as it is.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::key::Ticketed;
use super::{Outcome, SharedResponse};
use crate::context::{Deadline, RouteKind};
use crate::deadline::WaitBudget;
use crate::error::GatewayError;
use crate::ratelimit::{AheadQuotas, Decided};
use crate::state::quota::{FirstDecision, FirstQuotas};
use crate::state::{Op, SharedState, StateError};

mod scripts;
use scripts::{CONFIRM_SCRIPT, END_SCRIPT, ENTER_SCRIPT, FINISH_SCRIPT, RENEW_SCRIPT};

/// How long a lease lives unless renewed: a replica that dies mid-call holds its keys this long.
pub const LEASE_TTL: Duration = Duration::from_secs(3);

/// The largest answer stored for replay in Redis (iDenfy's token answers are under 2 KiB).
pub const MAX_ENTRY: usize = 64 * 1024;

/// The fleet's side of dedup: names of the accounts and teams (keys and owners are names in
/// Redis, positions in memory) and this replica's id.
pub(super) struct FleetDedup {
    state: SharedState,
    accounts: Vec<String>,
    teams: Vec<String>,
    replica: String,
}

/// Where a local leader stands in the fleet's flight.
pub(super) enum Entry {
    /// An answer: another team's (`client_id_in_use`), or a remote leader's.
    Answer(Outcome),
    /// The team's stored answer (a replay), and how long ago its session was last known live
    /// (`None`: unknown).
    Stored(Outcome, Option<Duration>),
    /// This replica leads: call upstream, then [`Lease::finish`]; with the request's first
    /// quota decision when the team limit's quotas were given.
    Lead(Lease, Option<Decided>),
    /// The key was free but the team's quota refused the request: no lease was taken.
    Refused(Decided),
}

/// This replica's lease on a key, renewed until it is finished or dropped.
pub(super) struct Lease {
    keys: Keys,
    value: String,
    state: SharedState,
    renew: tokio::task::JoinHandle<()>,
}

struct Keys {
    replay: String,
    lease: String,
    channel: String,
    /// When the replay entry's session was last known live (Redis time, ms).
    live: String,
}

/// An answer as it travels through Redis (replay entry and published message).
#[derive(Serialize, Deserialize)]
struct Wire {
    team: String,
    fingerprint: u64,
    /// `Some`: an answer from iDenfy; `None`: the flight failed (`error` says how).
    status: Option<u16>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    error: String,
}

impl FleetDedup {
    pub(super) fn new(state: SharedState, accounts: Vec<String>, teams: Vec<String>) -> Self {
        FleetDedup {
            state,
            accounts,
            teams,
            replica: uuid::Uuid::new_v4().simple().to_string(),
        }
    }

    pub(super) fn state(&self) -> &SharedState {
        &self.state
    }

    fn keys(&self, t: &Ticketed) -> Keys {
        let account = self.accounts.get(t.key.account).map_or("", String::as_str);
        let kind = match t.key.kind {
            RouteKind::KycToken => "kyc",
            RouteKind::KybToken => "kyb",
            RouteKind::Other => "other",
        };
        let id = hex::encode(&Sha256::digest(t.key.client_id.as_bytes())[..16]);
        Keys {
            replay: self.state.key(account, &format!("replay:{kind}:{id}")),
            lease: self.state.key(account, &format!("flight:{kind}:{id}")),
            channel: self.state.key(account, &format!("done:{kind}:{id}")),
            live: self.state.key(account, &format!("live:{kind}:{id}")),
        }
    }

    /// Enters the fleet's flight for `t`'s key: an answer, or the lead, with the request's
    /// first quota decision on `ahead` taken in the same round trip. Waits for a remote leader
    /// until `deadline` at most (and takes over its lease if it dies). `Err`: Redis failed (the
    /// caller falls back or refuses).
    pub(super) async fn enter(
        &self,
        t: &Ticketed,
        deadline: Instant,
        ahead: Option<&AheadQuotas>,
    ) -> Result<Entry, StateError> {
        let keys = self.keys(t);
        let team = self.teams.get(t.team_index).cloned().unwrap_or_default();
        let value = format!("{}:{}", self.replica, team);
        let mut subscription = None;
        loop {
            // The budget as it stands now (a waiter that takes over has waited).
            let quotas = ahead.and_then(|a| a.of_team(t.team_index, Some(&Deadline(deadline))));
            let (verdict, detail, decision, age) = self.run_enter(&keys, &value, quotas).await?;
            let decided =
                (!decision.is_empty()).then(|| Decided::now(FirstDecision::of(&decision)));
            match (verdict.as_str(), decided) {
                ("stored", _) => {
                    let outcome = self.outcome(t, &detail, true);
                    if !outcome.replayed {
                        return Ok(Entry::Answer(outcome));
                    }
                    let age = u64::try_from(age).ok().map(Duration::from_millis);
                    return Ok(Entry::Stored(outcome, age));
                }
                ("lead", Some(decided)) if decided.team_refused() => {
                    return Ok(Entry::Refused(decided))
                }
                ("lead", decided) => return Ok(Entry::Lead(self.lease(keys, value), decided)),
                _ => {}
            }
            if detail.split_once(':').map(|(_, owner)| owner) != Some(team.as_str()) {
                return Ok(Entry::Answer(Outcome::in_use()));
            }
            let Some(stream) = subscription.as_mut() else {
                // Subscribed first, then asked again: an answer published in between is seen.
                subscription = Some(self.state.subscribe(&keys.channel).await?);
                continue;
            };
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(LEASE_TTL);
            if wait.is_zero() {
                return Ok(Entry::Answer(Outcome::failed(
                    GatewayError::DeadlineExceeded,
                    t.fingerprint,
                )));
            }
            match tokio::time::timeout(wait, stream.next()).await {
                Ok(Some(msg)) => {
                    let payload: String = msg.get_payload().unwrap_or_default();
                    let outcome = self.outcome(t, &payload, false);
                    if !outcome.refused_by_team_limit() {
                        return Ok(Entry::Answer(outcome.remote()));
                    }
                }
                // The subscription's connection went: subscribe again.
                Ok(None) => subscription = None,
                // A lease TTL without an answer: the leader may be gone; ask again.
                Err(_) => {}
            }
        }
    }

    /// The verdict, its detail (the entry, the lease's holder) and the quota decision.
    async fn run_enter(
        &self,
        keys: &Keys,
        value: &str,
        quotas: Option<(&FirstQuotas, WaitBudget)>,
    ) -> Result<(String, String, Vec<i64>, i64), StateError> {
        let mut invocation = ENTER_SCRIPT.key(&keys.replay);
        invocation
            .key(&keys.lease)
            .key(&keys.live)
            .arg(value)
            .arg(LEASE_TTL.as_millis() as u64);
        if let Some((quotas, budget)) = quotas {
            quotas.push(&mut invocation, budget);
        }
        let call = |mut conn: ConnectionManager| async move {
            invocation
                .invoke_async::<(String, String, Vec<i64>, i64)>(&mut conn)
                .await
        };
        self.state.run(Op::Flight, call).await
    }

    fn lease(&self, keys: Keys, value: String) -> Lease {
        let renew = {
            let (state, lease, value) = (self.state.clone(), keys.lease.clone(), value.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(LEASE_TTL / 3);
                every.tick().await;
                loop {
                    every.tick().await;
                    let mut invocation = RENEW_SCRIPT.key(&lease);
                    invocation.arg(&value).arg(LEASE_TTL.as_millis() as u64);
                    let call = |mut conn: ConnectionManager| async move {
                        invocation.invoke_async::<()>(&mut conn).await
                    };
                    let _ = state.run(Op::Renew, call).await;
                }
            })
        };
        Lease {
            keys,
            value,
            state: self.state.clone(),
            renew,
        }
    }

    /// The outcome a stored entry or a published answer gives `t`'s caller.
    fn outcome(&self, t: &Ticketed, payload: &str, stored: bool) -> Outcome {
        let Ok(wire) = serde_json::from_str::<Wire>(payload) else {
            return Outcome::failed(GatewayError::Internal, t.fingerprint);
        };
        let own = self.teams.get(t.team_index) == Some(&wire.team);
        if !own {
            return Outcome::in_use();
        }
        match wire.into_response() {
            Ok(response) if stored => Outcome {
                result: Ok(Arc::new(response)),
                fingerprint: wire_fingerprint(payload),
                replayed: true,
                remote: false,
            },
            Ok(response) => Outcome {
                result: Ok(Arc::new(response)),
                fingerprint: wire_fingerprint(payload),
                replayed: false,
                remote: true,
            },
            Err(err) => Outcome::failed(err, wire_fingerprint(payload)),
        }
    }

    /// A recheck found the session of `t`'s stored entry live: its age starts again, for every
    /// replica.
    pub(super) async fn confirm(&self, t: &Ticketed) {
        let keys = self.keys(t);
        let mut invocation = CONFIRM_SCRIPT.key(&keys.live);
        invocation.key(&keys.replay);
        let call = |mut conn: ConnectionManager| async move {
            invocation.invoke_async::<()>(&mut conn).await
        };
        let _ = self.state.run(Op::End, call).await;
    }

    /// A recheck found the session of `t`'s stored entry over: the entry goes now (before this
    /// replica enters again), besides [`end`](Self::end)'s removal by its scanRef.
    pub(super) async fn forget(&self, t: &Ticketed) {
        let keys = self.keys(t);
        let call = |mut conn: ConnectionManager| async move {
            redis::cmd("DEL")
                .arg(&keys.replay)
                .arg(&keys.live)
                .query_async::<()>(&mut conn)
                .await
        };
        let _ = self.state.run(Op::End, call).await;
    }

    /// Session `scan_ref` is over: its replay entry goes, on every replica (detached: the
    /// caller's answer does not wait for it). One round trip per account.
    pub(super) fn end(&self, scan_ref: &str) {
        let keys: Vec<String> = (self.accounts.iter())
            .map(|a| self.state.key(a, &format!("session:{scan_ref}")))
            .collect();
        let state = self.state.clone();
        tokio::spawn(async move {
            for key in keys {
                let invocation = END_SCRIPT.key(&key);
                let call = |mut conn: ConnectionManager| async move {
                    invocation.invoke_async::<()>(&mut conn).await
                };
                let _ = state.run(Op::End, call).await;
            }
        });
    }
}

fn wire_fingerprint(payload: &str) -> u64 {
    serde_json::from_str::<Wire>(payload).map_or(0, |w| w.fingerprint)
}

impl Lease {
    /// The flight's answer, to the followers on every replica; a live token (`ttl`) also to the
    /// replay store, indexed by its session `scan_ref`. A failure is published only.
    pub(super) async fn finish(
        self,
        team: &str,
        outcome: &Outcome,
        ttl: Option<Duration>,
        scan_ref: Option<&str>,
    ) {
        self.renew.abort();
        let wire = Wire::of(team, outcome);
        let payload = serde_json::to_string(&wire).unwrap_or_default();
        let ttl = ttl.filter(|_| payload.len() <= MAX_ENTRY);
        let ttl_ms = ttl.map_or(0, |d| (d.as_millis() as u64).max(1));
        let session = match scan_ref {
            Some(scan_ref) => replace_tail(&self.keys.replay, &format!("session:{scan_ref}")),
            None => format!("{}:nosession", self.keys.replay),
        };
        let mut invocation = FINISH_SCRIPT.key(&self.keys.replay);
        invocation
            .key(&self.keys.lease)
            .key(&session)
            .key(&self.keys.live)
            .arg(&self.value)
            .arg(&payload)
            .arg(ttl_ms)
            .arg(&self.keys.channel);
        let call = |mut conn: ConnectionManager| async move {
            invocation.invoke_async::<()>(&mut conn).await
        };
        let _ = self.state.run(Op::Finish, call).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
    }
}

/// `{prefix}{account}:replay:...` → `{prefix}{account}:{tail}` (the same hash tag).
fn replace_tail(key: &str, tail: &str) -> String {
    match key.find("}:") {
        Some(i) => format!("{}{tail}", &key[..i + 2]),
        None => tail.to_string(),
    }
}

impl Wire {
    fn of(team: &str, outcome: &Outcome) -> Wire {
        let mut wire = Wire {
            team: team.to_string(),
            fingerprint: outcome.fingerprint,
            status: None,
            headers: Vec::new(),
            body: String::new(),
            error: String::new(),
        };
        match &outcome.result {
            Ok(response) => {
                wire.status = Some(response.status().as_u16());
                wire.headers = (response.headers().iter())
                    .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                    .collect();
                wire.body = base64::engine::general_purpose::STANDARD.encode(response.body());
            }
            Err(err) => wire.error = err.reason().to_string(),
        }
        wire
    }

    fn into_response(self) -> Result<SharedResponse, GatewayError> {
        let Some(status) = self.status else {
            return Err(error_of(&self.error));
        };
        let status = StatusCode::from_u16(status).map_err(|_| GatewayError::Internal)?;
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                headers.append(k, v);
            }
        }
        let body = base64::engine::general_purpose::STANDARD
            .decode(&self.body)
            .map_err(|_| GatewayError::Internal)?;
        Ok(SharedResponse::new(status, headers, Bytes::from(body)))
    }
}

/// A remote flight's failure as this replica answers it (by its `x-gateway-error` reason).
fn error_of(reason: &str) -> GatewayError {
    match reason {
        "upstream_timeout" => GatewayError::UpstreamTimedOut,
        "upstream_connect" => GatewayError::UpstreamConnect,
        "upstream_protocol" => GatewayError::UpstreamProtocol,
        "deadline" => GatewayError::DeadlineExceeded,
        "rate_limited_team" => GatewayError::RateLimited {
            limit: crate::error::Limit::Team,
            retry_after: Duration::from_secs(1),
        },
        "rate_limited_account" => GatewayError::RateLimited {
            limit: crate::error::Limit::Account,
            retry_after: Duration::from_secs(1),
        },
        "state_unavailable" => GatewayError::StateUnavailable,
        _ => GatewayError::Internal,
    }
}
