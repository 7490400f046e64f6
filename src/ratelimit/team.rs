//! The team limit: one quota per team on logical requests, after dedup and before the retry loop
//! (a request and its retries count once here).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

use super::metrics::{LimitMetrics, QuotaMetrics};
use super::{denied, AheadQuotas, Gate, Gates, Quotas};
use crate::body::{Body, ResponseFuture};
use crate::config;
use crate::context::ContextExt;
use crate::deadline::WaitBudget;
use crate::error::{GatewayError, Limit};

/// Adds the per-team quota to a service.
#[derive(Clone)]
pub struct TeamLimitLayer {
    shared: Arc<Shared>,
}

/// The per-team quota in front of the retry loop.
#[derive(Clone)]
pub struct TeamLimit<S> {
    inner: S,
    shared: Arc<Shared>,
}

struct Shared {
    /// Indexed like `Config::teams` (governor's keyed limiter would give every key one quota).
    teams: Vec<(Gate, QuotaMetrics)>,
    max_wait: Duration,
    /// Fleet mode: the quotas a script decides ahead of this limit ([`AheadQuotas`]).
    ahead: Option<AheadQuotas>,
}

impl TeamLimitLayer {
    pub fn new(teams: &[config::Team], limits: &config::Limits, metrics: &LimitMetrics) -> Self {
        let gates = Gates {
            quotas: &Quotas::default(),
            state: None,
        };
        Self::keeping(teams, &[], limits, metrics, gates)
    }

    /// [`new`](Self::new) with the gates of `gates`: local quotas kept for teams whose rate and
    /// burst are unchanged (a config reload), or the fleet's in Redis. `accounts` are the teams'
    /// accounts (in Redis: the hash tag of a team's keys, and the quota its first attempt's
    /// decision is taken on).
    pub fn keeping(
        teams: &[config::Team],
        accounts: &[config::Account],
        limits: &config::Limits,
        metrics: &LimitMetrics,
        gates: Gates<'_>,
    ) -> Self {
        let teams: Vec<_> = teams
            .iter()
            .map(|t| {
                let gate = gates.team(t, accounts.get(t.account));
                (gate, metrics.quota(Limit::Team, &t.name))
            })
            .collect();
        let ahead = gates.state.map(|_| {
            let quotas = teams.iter().map(|(gate, _)| gate.first_quotas()).collect();
            AheadQuotas::new(quotas, limits.max_wait)
        });
        TeamLimitLayer {
            shared: Arc::new(Shared {
                teams,
                max_wait: limits.max_wait,
                ahead,
            }),
        }
    }

    /// Fleet mode: the teams' quotas, for dedup's lease script to decide a leader's first round
    /// trip ahead of this limit ([`super::Decided`]); `None` in memory mode.
    pub fn ahead(&self) -> Option<AheadQuotas> {
        self.shared.ahead.clone()
    }
}

impl<S> Layer<S> for TeamLimitLayer {
    type Service = TeamLimit<S>;

    fn layer(&self, inner: S) -> TeamLimit<S> {
        TeamLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl<S> Service<Request<Bytes>> for TeamLimit<S>
where
    S: Service<
            Request<Bytes>,
            Response = Response<Body>,
            Error = GatewayError,
            Future = ResponseFuture,
        > + Clone
        + Send
        + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Bytes>) -> Self::Future {
        // The common case, decided here: a free cell, nobody in line. The inner service is
        // called in place (it is always ready), without a clone or a wrapping state machine.
        let team = req.caller().map(|c| c.team);
        if let Some((gate, metrics)) = team.and_then(|t| self.shared.teams.get(t)) {
            if gate.take_free() {
                metrics.admitted(Duration::ZERO);
                return self.inner.call(req);
            }
        }
        let (mut inner, shared) = (self.inner.clone(), self.shared.clone());
        Box::pin(async move {
            // `identify` always sets the caller; without one the stack is miswired.
            let team = req.caller().map(|c| c.team);
            let (gate, metrics) = team
                .and_then(|t| shared.teams.get(t))
                .ok_or(GatewayError::Internal)?;
            let budget = WaitBudget::new(shared.max_wait, req.deadline().as_ref());
            // Fleet mode: decided already when dedup's lease script took the decision along.
            let admitted = gate.acquire_request(budget, req.extensions_mut()).await;
            let admitted = admitted.map_err(|d| denied(d, metrics, Limit::Team))?;
            metrics.admitted(admitted.waited);
            // Fleet mode: the account limit's decision for the first attempt, already taken.
            if let Some(first_attempt) = admitted.first_attempt {
                req.extensions_mut().insert(first_attempt);
            }
            inner.ready().await?.call(req).await
        })
    }
}
