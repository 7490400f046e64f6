//! A flight's leader, run detached (see the module docs of `dedup`): the stored answer or its
//! recheck, the fleet's flight in fleet mode, the upstream call, and what is made of its answer
//! (stored for replay, observed).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::fleet::Entry;
use super::key::Ticketed;
use super::session::{self, Verdict};
use super::{
    replay_ttl, token_lifetime, LifetimePolicy, Outcome, SessionObserver, Shared, SharedResponse,
    Stored,
};
use crate::body::Body;
use crate::config::OnUnavailable;
use crate::context::{ContextExt, Deadline};
use crate::error::GatewayError;
use crate::ratelimit::AheadQuotas;
use crate::state::Op;

/// The leader's upstream call, run detached: its outcome goes to every waiter of the flight.
/// Bounded by the configured deadline from now, the whole call: the head, and the body read.
/// Fleet mode: the script that gives it the fleet's lease decides its quota on `ahead` too.
pub(super) async fn lead<S>(
    shared: Arc<Shared>,
    inner: S,
    mut req: Request<Bytes>,
    t: Ticketed,
    ahead: Option<AheadQuotas>,
) -> Outcome
where
    S: Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError> + Clone,
{
    // The flight answers every waiter: it runs on the configured deadline, not on its leader's
    // `x-gateway-timeout` (each caller's own deadline bounds only its own wait).
    let deadline = Instant::now() + shared.deadline;
    req.context_mut().deadline = Some(Deadline(deadline));
    // A flight for this key may have stored its token between our look-up and our lead; or the
    // stored entry is due for a recheck, which this flight makes.
    match shared.stored_here(&t) {
        Stored::Answer(outcome) => return outcome,
        Stored::Recheck(hit, scan_ref) => {
            if recheck(&shared, inner.clone(), &req, &t, &scan_ref, deadline).await {
                return shared.answer_from(&t, hit);
            }
        }
        Stored::Miss => {}
    }
    let mut lease = None;
    // At most twice: a stored entry whose recheck finds its session over is forgotten, and the
    // second entry leads (or finds another replica's new flight).
    for entering in 0..2 {
        let Some(fleet) = &shared.fleet else { break };
        match fleet.enter(&t, deadline, ahead.as_ref()).await {
            Ok(Entry::Answer(outcome)) => return outcome,
            Ok(Entry::Stored(outcome, age)) => {
                let due = age.is_none_or(|age| age >= shared.recheck_after);
                let stored = outcome.result.as_ref().ok().filter(|_| due);
                let scan_ref = stored.and_then(|res| session::scan_ref_of(res.body()));
                let Some(scan_ref) = scan_ref.filter(|_| entering == 0) else {
                    return outcome;
                };
                if recheck(&shared, inner.clone(), &req, &t, &scan_ref, deadline).await {
                    return outcome;
                }
                fleet.forget(&t).await;
                continue;
            }
            Ok(Entry::Lead(l, decided)) => {
                lease = Some(l);
                // The team limit applies the decision taken with the lease (no round trip).
                if let Some(decided) = decided {
                    req.extensions_mut().insert(decided);
                }
            }
            // No lease was taken, so no follower waits for this flight in the fleet: the team
            // limit answers the refusal (429), to this replica's callers only, who enter again.
            Ok(Entry::Refused(decided)) => {
                req.extensions_mut().insert(decided);
            }
            Err(_) => {
                fleet.state().metrics().fell_back(Op::Flight);
                if fleet.state().on_unavailable() == OnUnavailable::Refuse {
                    return Outcome::failed(GatewayError::StateUnavailable, t.fingerprint);
                }
            }
        }
        break;
    }
    let request_body = req.body().clone();
    let outcome = call(&shared, inner, req, &t, deadline).await;
    if let Some(lease) = lease {
        let (ttl, scan_ref) = match &outcome.result {
            Ok(res) if !outcome.replayed => replay_facts(res, &request_body, &shared.lifetimes),
            _ => (None, None),
        };
        let ttl = ttl.filter(|_| shared.replay.is_some());
        lease
            .finish(&t.team, &outcome, ttl, scan_ref.as_deref())
            .await;
    }
    outcome
}

/// A live token's replay TTL and its session's scanRef.
fn replay_facts(
    res: &SharedResponse,
    request: &[u8],
    lifetimes: &LifetimePolicy,
) -> (Option<Duration>, Option<String>) {
    let ttl = replay_ttl(res.status(), res.body(), request, lifetimes);
    let scan_ref = serde_json::from_slice::<serde_json::Value>(res.body())
        .ok()
        .and_then(|v| Some(v.get("scanRef")?.as_str()?.to_string()));
    (ttl, scan_ref)
}

/// The leader's upstream call and what it makes of the answer (stored for replay, observed).
async fn call<S>(
    shared: &Shared,
    inner: S,
    req: Request<Bytes>,
    t: &Ticketed,
    deadline: Instant,
) -> Outcome
where
    S: Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError> + Clone,
{
    let t = t.clone();
    let request_body = req.body().clone();
    let call = async {
        let res = inner.oneshot(req).await?;
        SharedResponse::buffer(res, shared.max_body).await
    };
    let upstream = tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or(Err(GatewayError::DeadlineExceeded));
    let response = match upstream {
        Ok(response) => Arc::new(response),
        Err(err) => return Outcome::failed(err, t.fingerprint),
    };
    if response.status() == StatusCode::CONFLICT {
        shared.metrics.conflict(&t.team, t.route);
        // Another gateway (or an earlier flight) holds the live session for this clientId.
        if let Some(outcome) = shared.replay_for(&t) {
            return outcome;
        }
    }
    if response.status().is_success() {
        shared.metrics.session_created(&t.team, t.route);
        if let Some(observer) = &shared.observer {
            observe(
                observer.as_ref(),
                &t,
                &response,
                &request_body,
                &shared.lifetimes,
            );
        }
    }
    shared.remember(&t, &response, &request_body);
    Outcome {
        result: Ok(response),
        fingerprint: t.fingerprint,
        replayed: false,
        remote: false,
    }
}

/// Tells `observer` of the session a successful token response opened, if it names a scanRef.
fn observe(
    observer: &dyn SessionObserver,
    t: &Ticketed,
    response: &SharedResponse,
    request: &[u8],
    lifetimes: &LifetimePolicy,
) {
    let Ok(answer) = serde_json::from_slice::<serde_json::Value>(response.body()) else {
        return;
    };
    let Some(scan_ref) = answer.get("scanRef").and_then(|s| s.as_str()) else {
        return;
    };
    let request = serde_json::from_slice(request).unwrap_or(serde_json::Value::Null);
    let lifetime = token_lifetime(&answer, &request, lifetimes.default);
    observer.created(t.team_index, scan_ref, lifetime);
}

/// Rechecks the stored session `scan_ref` of `t`'s key: `true` to replay it (still `ACTIVE`, or
/// the recheck failed), `false` when it is over (the entry is gone: lead).
async fn recheck<S>(
    shared: &Shared,
    inner: S,
    token_request: &Request<Bytes>,
    t: &Ticketed,
    scan_ref: &str,
    deadline: Instant,
) -> bool
where
    S: Service<Request<Bytes>, Response = Response<Body>, Error = GatewayError>,
{
    let req = session::recheck_request(token_request, scan_ref);
    let call = async {
        let res = inner.oneshot(req).await?;
        SharedResponse::buffer(res, shared.max_body).await
    };
    let answer = tokio::time::timeout_at(deadline, call).await;
    let verdict = match answer {
        Ok(Ok(res)) => session::verdict(res.status(), res.body()),
        _ => Verdict::Unknown,
    };
    let result = match verdict {
        Verdict::Live => "live",
        Verdict::Over { .. } => "over",
        Verdict::Unknown => "failed",
    };
    shared.metrics.rechecks.with_label_values(&[result]).inc();
    match verdict {
        Verdict::Live => {
            if let Some(store) = &shared.replay {
                store.confirm(&t.key, scan_ref);
            }
            if let Some(fleet) = &shared.fleet {
                fleet.confirm(t).await;
            }
            true
        }
        Verdict::Over { .. } => {
            shared.end(scan_ref, "recheck");
            false
        }
        Verdict::Unknown => true,
    }
}
