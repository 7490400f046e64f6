//! Dedup: one clientId, one session. After `validate`, before the team limit.
//!
//! Token-creating requests (`POST /api/v2/token`, `POST /kyb/tokens/`) are keyed by (account,
//! route kind, clientId). While one request for a key is upstream, the others with that key wait
//! for it and each get a copy of its answer (`x-gateway-dedup: coalesced`); its own caller gets
//! `leader`. The upstream call runs detached, so a leader whose client goes away still completes
//! it for the waiters, and a waiter that leaves (disconnect, its own deadline) cancels nothing.
//! A successful token response (200/201 with `authToken` or `tokenString`) is stored for the
//! token's lifetime minus a safety margin and replayed to later requests for the key
//! (`replayed`) without a call to iDenfy, which would otherwise answer 409 or bill a second
//! session. Failures (non-2xx answers, gateway errors) are shared with the waiters of that flight
//! but never stored. An upstream 409 is passed through as iDenfy sent it, unless a live token for
//! the key is stored by then: that token is served instead.
//!
//! # Same clientId, different body
//!
//! A request that joins a flight or hits a replay gets the session of the request that created
//! it, even if its own body differs (other name, country, URLs, `expiryTime`): **the first request
//! for a clientId wins**. iDenfy itself keeps one active session per clientId (or answers 409),
//! so a second, different session for the same clientId is not something the gateway could
//! honestly offer; creating one would also bill twice, which is what dedup exists to prevent.
//! So that the difference is not silent, such an answer carries `x-gateway-dedup-mismatch: true`.
//! "Differs" means the request body bytes differ (a 64-bit hash of the body is kept with the
//! flight and the replay entry), so re-ordered or re-spaced JSON also counts as a mismatch: the
//! flag errs towards telling. A caller that wants a new session for new data uses a new clientId.
//!
//! # Teams
//!
//! Teams that share an account share iDenfy's clientId space, so the key has no team in it; but
//! a session belongs to the team whose request created it. Each flight and each replay entry
//! keeps that team, and a request of another team for the key is answered 409
//! `client_id_in_use` (what iDenfy would answer to a second session), at once, whether the
//! session is stored or still being created. It never gets that team's answer.
//!
//! # Sessions end
//!
//! Replay exists to spare a second bill for one *live* session, not to pin a clientId to its
//! past. An entry ends as soon as its session is known to be over ([`session`]):
//! - a proxied answer of `POST /api/v2/status` or `/api/v2/data` with a status other than
//!   `ACTIVE` for the entry's scanRef (the store indexes entries by scanRef);
//! - a recheck: an entry whose session was last known live longer ago than
//!   `dedup.recheck_after` is checked with `POST /api/v2/status` before it is replayed, as a
//!   flight (one recheck per key at a time; the waiters share its outcome). It goes through the
//!   team limit, the retry loop and the account limit like any call, so it is the account's
//!   attempt. If it fails (error, timeout, quota), the entry is replayed all the same: a failed
//!   recheck says nothing about the session, and the alternative, a new token, would bill a
//!   second session or meet iDenfy's 409 for a clientId that may well still be live;
//! - a final webhook ([`SessionEnds`], called by the webhook listener).
//!
//! Once an entry has ended, the next request for its key leads a new upstream call.
//!
//! # Limits
//!
//! A flight runs with the configured `upstream.deadline` from its start, its body read included,
//! not with its leader's `x-gateway-timeout`: when it passes, the flight ends and the key is free.
//! Each caller (the leader's own included) waits for the flight only until its own deadline, then
//! gets its own 504. A flight refused by its leader's team quota (429 `rate_limited_team`, before
//! any upstream call) is the leader's answer only: each follower then enters again as if it had
//! just arrived, leading (and meeting its own team limit) or joining a newer flight. In fleet
//! mode the script that would give the leader the fleet's lease decides its quota first
//! ([`crate::ratelimit::decided`]): a leader its team refuses takes no lease, so no replica
//! waits on a flight that will not call upstream.

mod fleet;
mod flight;
mod key;
mod lead;
mod metrics;
mod replay;
mod session;
mod shared;

use std::future::Future;

use arc_swap::ArcSwapOption;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service};
use tracing::Instrument;

pub use self::flight::{Entered, Flights, Ticket};
pub use self::metrics::DedupMetrics;
pub use self::replay::{
    replay_ttl, token_lifetime, Freshness, LifetimePolicy, Replay, ReplayStore, MAX_LIFETIME,
};
pub use self::session::SessionEnds;
pub use self::shared::{DedupOutcome, SharedResponse, X_GATEWAY_DEDUP, X_GATEWAY_DEDUP_MISMATCH};

use self::fleet::FleetDedup;
use self::key::{DedupKey, Ticketed};
use self::session::Verdict;

use crate::body::{Body, ResponseFuture};
use crate::config;
use crate::context::ContextExt;
use crate::error::{GatewayError, Limit};
use crate::metrics::GaugeGuard;
use crate::ratelimit::AheadQuotas;
use crate::stack::Inner;

/// Told of every session a token response opened (the webhook queue learns which team each
/// scanRef belongs to). Called on the request path: it must not block.
pub trait SessionObserver: Send + Sync + 'static {
    /// Team index `team` created session `scan_ref`, whose token lives `lifetime`.
    fn created(&self, team: usize, scan_ref: &str, lifetime: Duration);
}

/// What a flight hands each of its waiters.
#[derive(Clone)]
struct Outcome {
    result: Result<Arc<SharedResponse>, GatewayError>,
    /// Fingerprint of the request body that created the session (or tried to).
    fingerprint: u64,
    /// The answer came from the replay store, not from this flight's upstream call.
    replayed: bool,
    /// The answer came from another replica's flight (fleet mode): coalesced, not led.
    remote: bool,
}

impl Outcome {
    fn replayed(hit: Replay) -> Self {
        Outcome {
            result: Ok(hit.response),
            fingerprint: hit.fingerprint,
            replayed: true,
            remote: false,
        }
    }

    /// Another team's session holds the key.
    fn in_use() -> Self {
        Outcome {
            result: Err(GatewayError::ClientIdInUse),
            fingerprint: 0,
            replayed: false,
            remote: false,
        }
    }

    fn failed(err: GatewayError, fingerprint: u64) -> Self {
        Outcome {
            result: Err(err),
            fingerprint,
            replayed: false,
            remote: false,
        }
    }

    /// The same answer, as another replica's flight gave it.
    fn remote(mut self) -> Self {
        self.remote = true;
        self
    }

    /// The leader's team quota refused the flight before any upstream call: an answer for the
    /// leader alone, never shared.
    fn refused_by_team_limit(&self) -> bool {
        matches!(
            self.result,
            Err(GatewayError::RateLimited {
                limit: Limit::Team,
                ..
            })
        )
    }
}

/// State shared by every clone of the layer and its services.
struct Shared {
    /// Each flight owned by its leader's team index.
    flights: Flights<DedupKey, Outcome, usize>,
    /// `None` when `dedup.replay` is off.
    replay: Option<Arc<ReplayStore<DedupKey>>>,
    lifetimes: LifetimePolicy,
    /// Entries last known live longer ago are rechecked before a replay (`dedup.recheck_after`).
    recheck_after: Duration,
    max_body: u64,
    /// How long a flight may take, from its start (`upstream.deadline`).
    deadline: Duration,
    metrics: DedupMetrics,
    observer: Option<Arc<dyn SessionObserver>>,
    /// Fleet mode: the flight and the replay entry of each key shared through Redis.
    fleet: Option<FleetDedup>,
}

/// What the replay store holds for a key.
enum Stored {
    /// Nothing: the request goes upstream.
    Miss,
    /// An answer to give at once.
    Answer(Outcome),
    /// An entry to recheck first (its session's scanRef), as a flight.
    Recheck(Replay, Arc<str>),
}

impl Shared {
    /// The stored answer for `t`'s key: its team's live token, or `client_id_in_use` when another
    /// team's request created it; or the entry to recheck first when its session was last known
    /// live `recheck_after` ago or longer.
    fn stored_for(&self, t: &Ticketed) -> Stored {
        let Some((hit, fresh)) = self.replay.as_ref().and_then(|s| s.lookup(&t.key)) else {
            return Stored::Miss;
        };
        match fresh.scan_ref {
            Some(scan_ref) if fresh.confirmed_at.elapsed() >= self.recheck_after => {
                Stored::Recheck(hit, scan_ref)
            }
            _ => Stored::Answer(self.answer_from(t, hit)),
        }
    }

    /// [`stored_for`](Self::stored_for) where this replica's store is the one to ask: always
    /// in memory mode; in fleet mode only while Redis is down (the fallback). While Redis is up
    /// the fleet's store answers (the leader's look-up), so that a session ended on any replica
    /// is replayed by none.
    fn stored_here(&self, t: &Ticketed) -> Stored {
        match &self.fleet {
            Some(fleet) if !fleet.state().is_down() => Stored::Miss,
            _ => self.stored_for(t),
        }
    }

    fn answer_from(&self, t: &Ticketed, hit: Replay) -> Outcome {
        if hit.team == t.team_index {
            Outcome::replayed(hit)
        } else {
            Outcome::in_use()
        }
    }

    /// The stored answer for `t`'s key, without a recheck (after a 409: the session is live).
    fn replay_for(&self, t: &Ticketed) -> Option<Outcome> {
        let hit = self.replay.as_ref()?.get(&t.key)?;
        Some(self.answer_from(t, hit))
    }

    /// The session `scan_ref` is over: its entry goes (counted under `signal`), here and in the
    /// fleet's store. `true` if this replica held one.
    fn end(&self, scan_ref: &str, signal: &'static str) -> bool {
        if let Some(fleet) = &self.fleet {
            fleet.end(scan_ref);
        }
        let ended = self
            .replay
            .as_ref()
            .is_some_and(|store| store.end(scan_ref));
        if ended {
            self.metrics.replay_ended.with_label_values(&[signal]).inc();
        }
        ended
    }

    /// Stores `response` for replay, as `t`'s team's, if it is a live token.
    fn remember(&self, t: &Ticketed, response: &Arc<SharedResponse>, request: &[u8]) {
        let Some(store) = &self.replay else { return };
        let ttl = replay_ttl(response.status(), response.body(), request, &self.lifetimes);
        if let Some(ttl) = ttl {
            let replay = Replay {
                response: Arc::clone(response),
                fingerprint: t.fingerprint,
                team: t.team_index,
            };
            store.insert(t.key.clone(), replay, ttl);
        }
    }

    /// One caller's answer from `outcome`, counted: an answer under the `x-gateway-dedup` value
    /// it carries; a refusal (which carries none) only as what it is.
    fn deliver(
        &self,
        t: &Ticketed,
        label: DedupOutcome,
        outcome: Outcome,
    ) -> Result<Response<Body>, GatewayError> {
        match outcome.result {
            Ok(response) => {
                let m = &self.metrics;
                m.answered_by(t.team_index, &t.team, t.key.kind, t.route, label);
                Ok(response.to_response(label, outcome.fingerprint != t.fingerprint))
            }
            Err(GatewayError::ClientIdInUse) => {
                self.metrics.client_id_in_use(&t.team, t.route);
                Err(GatewayError::ClientIdInUse)
            }
            Err(err) => Err(err),
        }
    }
}

/// Coalesces and replays token requests; see the module docs.
#[derive(Clone)]
pub struct DedupLayer {
    shared: Arc<Shared>,
    /// Fleet mode: the quotas of this build's team limit, which a leader's lease script decides
    /// ahead of it. Per build: the `shared` state outlives a reload, the quotas may not.
    ahead: Option<AheadQuotas>,
}

impl DedupLayer {
    /// `max_body` bounds the upstream token response read into memory (`limits.max_body`);
    /// `deadline` bounds each flight, its body read included (`upstream.deadline`).
    pub fn new(
        cfg: &config::Dedup,
        max_body: u64,
        deadline: Duration,
        metrics: DedupMetrics,
    ) -> Self {
        let replay = cfg.replay.then(|| {
            Arc::new(ReplayStore::new(
                cfg.max_entries,
                cfg.max_bytes,
                metrics.replay_entries.clone(),
            ))
        });
        DedupLayer {
            shared: Arc::new(Shared {
                flights: Flights::new(),
                replay,
                lifetimes: LifetimePolicy {
                    default: cfg.default_lifetime,
                    margin: cfg.safety_margin,
                },
                recheck_after: cfg.recheck_after,
                max_body,
                // No flight needs longer than a token lives; and no instant arithmetic overflows.
                deadline: deadline.min(MAX_LIFETIME),
                metrics,
                observer: None,
                fleet: None,
            }),
            ahead: None,
        }
    }

    /// Shares the flights and the replay entries with the fleet through `state`, `accounts`
    /// and `teams` naming the positions in keys. Call it on a new layer, before cloning it.
    pub fn shared_through(
        mut self,
        state: &crate::state::SharedState,
        accounts: Vec<String>,
        teams: Vec<String>,
    ) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.fleet = Some(FleetDedup::new(state.clone(), accounts, teams));
        }
        self
    }

    /// Fleet mode: a leader's team cell and first attempt's account cell are decided by the
    /// script that gives it the lease, in the same round trip, on `ahead`, the quotas of the
    /// team limit below ([`crate::ratelimit::TeamLimitLayer::ahead`]).
    pub fn deciding_ahead(mut self, ahead: Option<AheadQuotas>) -> Self {
        self.ahead = ahead;
        self
    }

    /// Keys with an upstream call in flight.
    pub fn in_flight(&self) -> usize {
        self.shared.flights.len()
    }

    /// Tells `observer` of every session created. Call it on a new layer, before cloning it (a
    /// layer already shared is left as it is).
    pub fn observed_by(mut self, observer: Arc<dyn SessionObserver>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.observer = Some(observer);
        }
        self
    }

    /// The handle that ends replay for a scanRef from outside the layer (a final webhook).
    pub fn session_ends(&self) -> SessionEnds {
        SessionEnds {
            dedup: Arc::new(ArcSwapOption::new(Some(self.shared.clone()))),
        }
    }

    /// Points `ends` at this layer's dedup state (a new one after a config reload).
    pub fn point(&self, ends: &SessionEnds) {
        ends.dedup.store(Some(self.shared.clone()));
    }
}

impl<S> Layer<S> for DedupLayer {
    type Service = Dedup<S>;

    fn layer(&self, inner: S) -> Dedup<S> {
        Dedup {
            inner,
            shared: Arc::clone(&self.shared),
            ahead: self.ahead.clone(),
        }
    }
}

/// The dedup service: answers from the replay store or a flight, or passes the request on.
#[derive(Clone)]
pub struct Dedup<S> {
    inner: S,
    shared: Arc<Shared>,
    ahead: Option<AheadQuotas>,
}

impl<S> Service<Request<Bytes>> for Dedup<S>
where
    S: Inner + Service<Request<Bytes>, Future = ResponseFuture>,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    /// The decision (replay, lead or join) is made here, when the request arrives; the returned
    /// future only waits for the answer (and enters again after a follower-only refusal).
    fn call(&mut self, req: Request<Bytes>) -> ResponseFuture {
        let Some(t) = Ticketed::of(&req) else {
            // Not deduplicated: readiness was the inner service's, call it in place.
            // Only while some stored session could end: reading and parsing every status answer
            // cost ~2,300 instructions a request, for nothing when no replay entry is held.
            // In fleet mode any replica's entry may be this session's: every answer is read.
            let holds_sessions = self.shared.fleet.is_some()
                || (self.shared.replay.as_ref()).is_some_and(|r| r.holds_sessions());
            let watch = holds_sessions && req.route().is_some_and(session::reports_status);
            if watch {
                return Box::pin(watch_status(
                    Arc::clone(&self.shared),
                    req.body().clone(),
                    self.inner.call(req),
                ));
            }
            return self.inner.call(req);
        };
        if let Stored::Answer(outcome) = self.shared.stored_here(&t) {
            let res = self.shared.deliver(&t, DedupOutcome::Replayed, outcome);
            return Box::pin(std::future::ready(res));
        }
        let shared = Arc::clone(&self.shared);
        let work = {
            let (shared, inner, t) = (Arc::clone(&shared), self.inner.clone(), t.clone());
            let ahead = self.ahead.clone();
            move || {
                let in_flight = GaugeGuard::enter(&shared.metrics.in_flight);
                let lead = lead::lead(Arc::clone(&shared), inner, req, t, ahead);
                async move {
                    let _in_flight = in_flight;
                    lead.await
                }
                .in_current_span()
            }
        };
        let entered = shared
            .flights
            .join_or_lead(t.key.clone(), t.team_index, work);
        let deadline = t.deadline;
        let answer = answer(shared, t, entered);
        Box::pin(async move {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline.0, answer)
                    .await
                    .map_err(|_| GatewayError::DeadlineExceeded)?,
                None => answer.await,
            }
        })
    }
}

/// A proxied status or data answer, passed on unchanged; one that shows its session over ends
/// that session's replay entry. Only an answer held whole is read (iDenfy's small JSON answers
/// are; a streamed one passes unread, and the recheck or the webhook ends its session instead).
async fn watch_status(
    shared: Arc<Shared>,
    request: Bytes,
    answer: impl Future<Output = Result<Response<Body>, GatewayError>>,
) -> Result<Response<Body>, GatewayError> {
    /// Larger answers are passed on without being read.
    const MAX_READ: u64 = 64 * 1024;
    let res = answer.await?;
    let small = http_body::Body::size_hint(res.body())
        .exact()
        .is_some_and(|n| n <= MAX_READ);
    if res.status() != StatusCode::OK || !small {
        return Ok(res);
    }
    let (parts, body) = res.into_parts();
    let bytes = match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(GatewayError::UpstreamProtocol),
    };
    if let Verdict::Over { scan_ref } = session::verdict(parts.status, &bytes) {
        if let Some(scan_ref) = scan_ref.or_else(|| session::scan_ref_of(&request)) {
            shared.end(&scan_ref, "answer");
        }
    }
    Ok(Response::from_parts(parts, Body::full(bytes)))
}

/// One caller's answer from the flight it entered. A caller that joined another team's flight
/// is answered `client_id_in_use` at once; one whose flight was refused by the leader's team
/// limit enters again with its own request (`work`).
async fn answer<F, Fut>(
    shared: Arc<Shared>,
    t: Ticketed,
    mut entered: Entered<Outcome, usize, F>,
) -> Result<Response<Body>, GatewayError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    loop {
        let (ticket, work) = match entered {
            Entered::Led(ticket) => {
                // No outcome: the upstream call panicked or its task was dropped.
                let outcome = ticket.outcome().await.ok_or(GatewayError::Internal)?;
                let label = match (outcome.replayed, outcome.remote) {
                    (true, _) => DedupOutcome::Replayed,
                    (false, true) => DedupOutcome::Coalesced,
                    (false, false) => DedupOutcome::Leader,
                };
                return shared.deliver(&t, label, outcome);
            }
            Entered::Joined { owner, .. } if owner != t.team_index => {
                return shared.deliver(&t, DedupOutcome::Coalesced, Outcome::in_use());
            }
            Entered::Joined { ticket, work, .. } => (ticket, work),
        };
        let waiting = GaugeGuard::enter(&shared.metrics.waiting);
        let outcome = ticket.outcome().await.ok_or(GatewayError::Internal)?;
        drop(waiting);
        if !outcome.refused_by_team_limit() {
            // A flight that rechecked and replayed a stored session gave a stored answer.
            let label = match outcome.replayed {
                true => DedupOutcome::Replayed,
                false => DedupOutcome::Coalesced,
            };
            return shared.deliver(&t, label, outcome);
        }
        entered = shared
            .flights
            .join_or_lead(t.key.clone(), t.team_index, work);
    }
}

#[cfg(test)]
mod tests;
