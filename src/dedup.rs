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

mod flight;
mod metrics;
mod replay;
mod shared;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};
use tracing::Instrument;

pub use self::flight::{Flights, Role, Ticket};
pub use self::metrics::DedupMetrics;
pub use self::replay::{
    replay_ttl, token_lifetime, LifetimePolicy, Replay, ReplayStore, MAX_LIFETIME,
};
pub use self::shared::{DedupOutcome, SharedResponse, X_GATEWAY_DEDUP, X_GATEWAY_DEDUP_MISMATCH};

use crate::body::{response_future, Body, ResponseFuture};
use crate::config;
use crate::context::{ClientId, ContextExt, Deadline, Route, RouteKind};
use crate::error::GatewayError;
use crate::metrics::GaugeGuard;

/// What a flight hands each of its waiters.
#[derive(Clone)]
struct Outcome {
    result: Result<Arc<SharedResponse>, GatewayError>,
    /// Fingerprint of the request body that created the session (or tried to).
    fingerprint: u64,
    /// The answer came from the replay store, not from this flight's upstream call.
    replayed: bool,
}

impl Outcome {
    fn replayed(hit: Replay) -> Self {
        Outcome {
            result: Ok(hit.response),
            fingerprint: hit.fingerprint,
            replayed: true,
        }
    }
}

/// The dedup key: never merged across accounts or route kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DedupKey {
    account: usize,
    kind: RouteKind,
    client_id: Arc<str>,
}

/// What the layer needs of a token request, from the extensions outer layers set.
#[derive(Clone)]
struct Ticketed {
    key: DedupKey,
    team: Arc<str>,
    /// The team's index in the config (for its metric handles).
    team_index: usize,
    route: &'static str,
    deadline: Option<Deadline>,
    fingerprint: u64,
}

impl Ticketed {
    /// `None` for requests dedup leaves alone: not a token route, or no clientId or caller.
    fn of(req: &Request<Bytes>) -> Option<Self> {
        let route = req.route().filter(Route::creates_token)?;
        let client_id = req.extensions().get::<ClientId>()?;
        let caller = req.caller()?;
        Some(Ticketed {
            key: DedupKey {
                account: caller.account,
                kind: route.kind,
                client_id: Arc::clone(&client_id.0),
            },
            team: Arc::clone(&caller.team_name),
            team_index: caller.team,
            route: route.label,
            deadline: req.deadline(),
            fingerprint: fingerprint(req.body()),
        })
    }
}

/// A cheap hash of the request body, to flag a coalesced or replayed answer to another body.
fn fingerprint(body: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    body.hash(&mut hasher);
    hasher.finish()
}

/// State shared by every clone of the layer and its services.
struct Shared {
    flights: Flights<DedupKey, Outcome>,
    /// `None` when `dedup.replay` is off.
    replay: Option<ReplayStore<DedupKey>>,
    lifetimes: LifetimePolicy,
    max_body: u64,
    metrics: DedupMetrics,
}

impl Shared {
    fn replay_hit(&self, key: &DedupKey) -> Option<Replay> {
        self.replay.as_ref()?.get(key)
    }

    /// Stores `response` for replay if it is a live token.
    fn remember(&self, key: &DedupKey, response: &Arc<SharedResponse>, request: &[u8], fp: u64) {
        let Some(store) = &self.replay else { return };
        let ttl = replay_ttl(response.status(), response.body(), request, &self.lifetimes);
        if let Some(ttl) = ttl {
            let replay = Replay {
                response: Arc::clone(response),
                fingerprint: fp,
            };
            store.insert(key.clone(), replay, ttl);
        }
    }
}

/// Coalesces and replays token requests; see the module docs.
#[derive(Clone)]
pub struct DedupLayer {
    shared: Arc<Shared>,
}

impl DedupLayer {
    /// `max_body` bounds the upstream token response read into memory (`limits.max_body`).
    pub fn new(cfg: &config::Dedup, max_body: u64, metrics: DedupMetrics) -> Self {
        let replay = cfg.replay.then(|| {
            ReplayStore::new(
                cfg.max_entries,
                cfg.max_bytes,
                metrics.replay_entries.clone(),
            )
        });
        DedupLayer {
            shared: Arc::new(Shared {
                flights: Flights::new(),
                replay,
                lifetimes: LifetimePolicy {
                    default: cfg.default_lifetime,
                    margin: cfg.safety_margin,
                },
                max_body,
                metrics,
            }),
        }
    }

    /// Keys with an upstream call in flight.
    pub fn in_flight(&self) -> usize {
        self.shared.flights.len()
    }
}

impl<S> Layer<S> for DedupLayer {
    type Service = Dedup<S>;

    fn layer(&self, inner: S) -> Dedup<S> {
        Dedup {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The dedup service: answers from the replay store or a flight, or passes the request on.
#[derive(Clone)]
pub struct Dedup<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<Bytes>> for Dedup<S>
where
    S: Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    /// The decision (replay, lead or join) is made here, when the request arrives; the returned
    /// future only waits for the answer.
    fn call(&mut self, req: Request<Bytes>) -> ResponseFuture {
        let Some(ticketed) = Ticketed::of(&req) else {
            // Not deduplicated: readiness was the inner service's, call it in place.
            return response_future(self.inner.call(req));
        };
        let inner = self.inner.clone();
        let shared = &self.shared;
        if let Some(hit) = shared.replay_hit(&ticketed.key) {
            let outcome = DedupOutcome::Replayed;
            let mismatch = hit.fingerprint != ticketed.fingerprint;
            let res = hit.response.to_response(outcome, mismatch);
            shared.metrics.answered_by(
                ticketed.team_index,
                &ticketed.team,
                ticketed.key.kind,
                ticketed.route,
                outcome,
            );
            return Box::pin(std::future::ready(Ok(res)));
        }
        let ticket = shared.flights.join_or_lead(ticketed.key.clone(), || {
            let in_flight = GaugeGuard::enter(&shared.metrics.in_flight);
            let lead = lead(Arc::clone(shared), inner, req, ticketed.clone());
            async move {
                let _in_flight = in_flight;
                lead.await
            }
            .in_current_span()
        });
        let waiting =
            (ticket.role() == Role::Follower).then(|| GaugeGuard::enter(&shared.metrics.waiting));
        let answer = answer(Arc::clone(shared), ticket, ticketed);
        Box::pin(async move {
            let _waiting = waiting;
            answer.await
        })
    }
}

/// The leader's upstream call, run detached: its outcome goes to every waiter of the flight.
async fn lead<S>(shared: Arc<Shared>, inner: S, req: Request<Bytes>, t: Ticketed) -> Outcome
where
    S: Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError>,
{
    // A flight for this key may have stored its token between our look-up and our lead.
    if let Some(hit) = shared.replay_hit(&t.key) {
        return Outcome::replayed(hit);
    }
    let request_body = req.body().clone();
    let upstream = match inner.oneshot(req).await {
        Ok(res) => SharedResponse::buffer(res, shared.max_body).await,
        Err(err) => Err(err),
    };
    let response = match upstream {
        Ok(response) => Arc::new(response),
        Err(err) => {
            return Outcome {
                result: Err(err),
                fingerprint: t.fingerprint,
                replayed: false,
            }
        }
    };
    if response.status() == StatusCode::CONFLICT {
        shared.metrics.conflict(&t.team, t.route);
        // Another gateway (or an earlier flight) holds the live session for this clientId.
        if let Some(hit) = shared.replay_hit(&t.key) {
            return Outcome::replayed(hit);
        }
    }
    if response.status().is_success() {
        shared.metrics.session_created(&t.team, t.route);
    }
    shared.remember(&t.key, &response, &request_body, t.fingerprint);
    Outcome {
        result: Ok(response),
        fingerprint: t.fingerprint,
        replayed: false,
    }
}

/// One caller's wait for its flight, bounded by its own deadline.
async fn answer(
    shared: Arc<Shared>,
    ticket: Ticket<Outcome>,
    t: Ticketed,
) -> Result<Response<Body>, GatewayError> {
    let role = ticket.role();
    let outcome = match t.deadline {
        Some(deadline) => tokio::time::timeout_at(deadline.0, ticket.outcome())
            .await
            .map_err(|_| GatewayError::DeadlineExceeded)?,
        None => ticket.outcome().await,
    };
    // No outcome: the upstream call panicked or its task was dropped.
    let outcome = outcome.ok_or(GatewayError::Internal)?;
    let label = match (role, outcome.replayed) {
        (Role::Follower, _) => DedupOutcome::Coalesced,
        (Role::Leader, true) => DedupOutcome::Replayed,
        (Role::Leader, false) => DedupOutcome::Leader,
    };
    shared
        .metrics
        .answered_by(t.team_index, &t.team, t.key.kind, t.route, label);
    let response = outcome.result?;
    Ok(response.to_response(label, outcome.fingerprint != t.fingerprint))
}

#[cfg(test)]
mod tests;
