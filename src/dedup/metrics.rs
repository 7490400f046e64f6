//! Metrics of the `dedup` layer: how token requests were answered, the sessions they opened at
//! iDenfy, upstream 409s, clientIds refused as another team's, and the size of the flight map and
//! the replay store.
//!
//! `dedup_requests_total` counts exactly the answers that carry `x-gateway-dedup`, under the
//! header's value: a request the gateway refuses (429, 504, 409 `client_id_in_use`, …) carries no
//! such header and is not counted there.

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::shared::DedupOutcome;
use crate::context::RouteKind;
use crate::metrics::HandleTable;

/// Labels are team and route names from config and fixed outcomes: never a clientId.
#[derive(Clone)]
pub struct DedupMetrics {
    /// `idenfy_gateway_dedup_requests_total{team,route,outcome}`
    pub(super) requests: IntCounterVec,
    /// `idenfy_gateway_sessions_created_total{team,route}`
    pub(super) sessions: IntCounterVec,
    /// `idenfy_gateway_upstream_conflicts_total{team,route}`
    pub(super) conflicts: IntCounterVec,
    /// `idenfy_gateway_dedup_client_id_in_use_total{team,route}`
    pub(super) in_use: IntCounterVec,
    /// `idenfy_gateway_dedup_in_flight`
    pub(super) in_flight: IntGauge,
    /// `idenfy_gateway_dedup_replay_entries`
    pub(super) replay_entries: IntGauge,
    /// `idenfy_gateway_dedup_waiting`
    pub(super) waiting: IntGauge,
    /// `idenfy_gateway_dedup_rechecks_total{result}`: live | over | failed
    pub(super) rechecks: IntCounterVec,
    /// `idenfy_gateway_dedup_replay_ended_total{signal}`: answer | recheck | webhook
    pub(super) replay_ended: IntCounterVec,
    /// `requests` handles by team index, then (route kind, outcome): resolved on first use.
    answered: Arc<HandleTable<IntCounter>>,
}

impl DedupMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = DedupMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "idenfy_gateway_dedup_requests_total",
                    "Token answers by their x-gateway-dedup header: leader (went upstream), \
                     coalesced (shared a concurrent request's answer), replayed (a stored live \
                     token); refusals carry no such header and are not counted",
                ),
                &["team", "route", "outcome"],
            )?,
            sessions: IntCounterVec::new(
                Opts::new(
                    "idenfy_gateway_sessions_created_total",
                    "Token requests iDenfy answered with 2xx: sessions it opened, and bills",
                ),
                &["team", "route"],
            )?,
            conflicts: IntCounterVec::new(
                Opts::new(
                    "idenfy_gateway_upstream_conflicts_total",
                    "409 answers from iDenfy to token requests (clientId with an active session)",
                ),
                &["team", "route"],
            )?,
            in_use: IntCounterVec::new(
                Opts::new(
                    "idenfy_gateway_dedup_client_id_in_use_total",
                    "Token requests answered 409 client_id_in_use: another team of the same \
                     account created, or is creating, the session for that clientId",
                ),
                &["team", "route"],
            )?,
            in_flight: IntGauge::new(
                "idenfy_gateway_dedup_in_flight",
                "Token request keys with an upstream call in flight",
            )?,
            replay_entries: IntGauge::new(
                "idenfy_gateway_dedup_replay_entries",
                "Token responses held for replay",
            )?,
            waiting: IntGauge::new(
                "idenfy_gateway_dedup_waiting",
                "Token requests waiting for a concurrent request's answer (coalesced followers)",
            )?,
            rechecks: IntCounterVec::new(
                Opts::new(
                    "idenfy_gateway_dedup_rechecks_total",
                    "Rechecks of a stored session (POST /api/v2/status) before replaying it: \
                     live (replayed), over (replay ended, the request went upstream), failed \
                     (error, timeout or quota: replayed anyway)",
                ),
                &["result"],
            )?,
            replay_ended: IntCounterVec::new(
                Opts::new(
                    "idenfy_gateway_dedup_replay_ended_total",
                    "Replay entries removed because their session is over, by the signal that \
                     said so: answer (a proxied status/data answer), recheck, webhook (final)",
                ),
                &["signal"],
            )?,
            answered: Arc::new(HandleTable::new(0, 0)),
        };
        registry.register(Box::new(metrics.requests.clone()))?;
        registry.register(Box::new(metrics.sessions.clone()))?;
        registry.register(Box::new(metrics.conflicts.clone()))?;
        registry.register(Box::new(metrics.in_use.clone()))?;
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.replay_entries.clone()))?;
        registry.register(Box::new(metrics.waiting.clone()))?;
        registry.register(Box::new(metrics.rechecks.clone()))?;
        registry.register(Box::new(metrics.replay_ended.clone()))?;
        Ok(metrics)
    }

    /// Resolves the `requests` handles once per team (on first use) instead of a label look-up
    /// per answer (`teams`: how many there are in the config).
    pub fn for_teams(mut self, teams: usize) -> Self {
        self.answered = Arc::new(HandleTable::new(teams, 6));
        self
    }

    pub(super) fn answered(&self, team: &str, route: &str, outcome: DedupOutcome) {
        self.requests
            .with_label_values(&[team, route, outcome.as_str()])
            .inc();
    }

    /// [`Self::answered`], through the handle of team index `index` when the table has it.
    pub(super) fn answered_by(
        &self,
        index: usize,
        team: &str,
        kind: RouteKind,
        route: &str,
        outcome: DedupOutcome,
    ) {
        let kind = match kind {
            RouteKind::KycToken => 0,
            RouteKind::KybToken => 1,
            RouteKind::Other => return self.answered(team, route, outcome),
        };
        let col = kind * 3 + outcome as usize;
        let counter = || {
            self.requests
                .with_label_values(&[team, route, outcome.as_str()])
        };
        match self.answered.get(index, col, counter) {
            Some(c) => c.inc(),
            None => counter().inc(),
        }
    }

    pub(super) fn session_created(&self, team: &str, route: &str) {
        self.sessions.with_label_values(&[team, route]).inc();
    }

    pub(super) fn conflict(&self, team: &str, route: &str) {
        self.conflicts.with_label_values(&[team, route]).inc();
    }

    pub(super) fn client_id_in_use(&self, team: &str, route: &str) {
        self.in_use.with_label_values(&[team, route]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_every_metric_once() {
        let registry = Registry::new();
        let metrics = DedupMetrics::new(&registry).unwrap();
        metrics.answered("payments", "/api/v2/token", DedupOutcome::Coalesced);
        metrics.session_created("payments", "/api/v2/token");
        metrics.conflict("payments", "/api/v2/token");
        metrics.client_id_in_use("payments", "/api/v2/token");
        metrics.rechecks.with_label_values(&["live"]).inc();
        metrics.replay_ended.with_label_values(&["answer"]).inc();
        let names: Vec<_> = registry
            .gather()
            .iter()
            .map(|family| family.name().to_owned())
            .collect();
        for name in [
            "idenfy_gateway_dedup_requests_total",
            "idenfy_gateway_sessions_created_total",
            "idenfy_gateway_upstream_conflicts_total",
            "idenfy_gateway_dedup_client_id_in_use_total",
            "idenfy_gateway_dedup_in_flight",
            "idenfy_gateway_dedup_replay_entries",
            "idenfy_gateway_dedup_waiting",
            "idenfy_gateway_dedup_rechecks_total",
            "idenfy_gateway_dedup_replay_ended_total",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing");
        }
        assert!(DedupMetrics::new(&registry).is_err(), "names are unique");
    }

    #[test]
    fn in_flight_guard_counts_while_alive() {
        let gauge = IntGauge::new("g", "test").unwrap();
        let guard = crate::metrics::GaugeGuard::enter(&gauge);
        assert_eq!(gauge.get(), 1);
        drop(guard);
        assert_eq!(gauge.get(), 0);
    }
}
