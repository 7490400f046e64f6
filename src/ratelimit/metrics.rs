//! Metrics of the team and account limits: what each quota decided, how long requests queued,
//! and which accounts iDenfy has paused.

use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::error::Limit;

/// Buckets of `idenfy_gateway_limiter_wait_seconds`: 0 (passed at once) up to 10 s. `max_wait`
/// defaults to 2 s, so the 2 s bucket holds every wait unless the operator raised it.
pub const WAIT_BUCKETS: &[f64] = &[
    0.0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
];

/// Metrics of the team and account limits.
#[derive(Debug, Clone)]
pub struct LimitMetrics {
    /// `idenfy_gateway_limiter_decisions_total{limit, name, outcome}`: `limit` is `team` or
    /// `account`, `name` the team's or account's name, `outcome` `passed` (at once), `delayed`
    /// (waited, then passed) or `refused` (429).
    decisions: IntCounterVec,
    /// `idenfy_gateway_limiter_wait_seconds{limit}`: queueing time of every request let through
    /// (0 when it passed at once).
    wait: HistogramVec,
    /// `idenfy_gateway_account_paused{account}`: 1 while iDenfy's 429 / `TOO_MANY_REQUESTS`
    /// holds every attempt on the account, else 0.
    paused: IntGaugeVec,
    /// `idenfy_gateway_account_pauses_total{account}`: throttled answers that paused the account.
    pauses: IntCounterVec,
}

impl LimitMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let decisions = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_limiter_decisions_total",
                "Rate limiter decisions by limit (team|account), name and outcome (passed|delayed|refused)",
            ),
            &["limit", "name", "outcome"],
        )?;
        let wait = HistogramVec::new(
            HistogramOpts::new(
                "idenfy_gateway_limiter_wait_seconds",
                "Time requests queued for quota before passing",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
            &["limit"],
        )?;
        let paused = IntGaugeVec::new(
            Opts::new(
                "idenfy_gateway_account_paused",
                "1 while iDenfy's rate limit answer pauses every attempt on the account",
            ),
            &["account"],
        )?;
        let pauses = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_account_pauses_total",
                "Throttled iDenfy answers (429 or TOO_MANY_REQUESTS) that paused the account",
            ),
            &["account"],
        )?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(wait.clone()))?;
        registry.register(Box::new(paused.clone()))?;
        registry.register(Box::new(pauses.clone()))?;
        Ok(LimitMetrics {
            decisions,
            wait,
            paused,
            pauses,
        })
    }

    /// The handles of one quota, resolved once at start.
    pub(crate) fn quota(&self, limit: Limit, name: &str) -> QuotaMetrics {
        let outcome = |o: &str| self.decisions.with_label_values(&[limit.as_str(), name, o]);
        QuotaMetrics {
            passed: outcome("passed"),
            delayed: outcome("delayed"),
            refused: outcome("refused"),
            wait: self.wait.with_label_values(&[limit.as_str()]),
        }
    }

    /// The pause handles of one account.
    pub(crate) fn pause(&self, account: &str) -> PauseMetrics {
        let paused = self.paused.with_label_values(&[account]);
        paused.set(0);
        PauseMetrics {
            paused,
            pauses: self.pauses.with_label_values(&[account]),
        }
    }
}

/// One quota's metric handles.
#[derive(Debug, Clone)]
pub(crate) struct QuotaMetrics {
    passed: IntCounter,
    delayed: IntCounter,
    refused: IntCounter,
    wait: Histogram,
}

impl QuotaMetrics {
    pub(crate) fn admitted(&self, waited: Duration) {
        if waited.is_zero() {
            self.passed.inc();
        } else {
            self.delayed.inc();
        }
        self.wait.observe(waited.as_secs_f64());
    }

    pub(crate) fn refused(&self) {
        self.refused.inc();
    }
}

/// One account's pause handles.
#[derive(Debug, Clone)]
pub(crate) struct PauseMetrics {
    pub(crate) paused: IntGauge,
    pub(crate) pauses: IntCounter,
}
