//! Metrics of the retry loop: retries by reason, retries denied and why, attempts per request.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};

use super::policy::RetryReason;

/// Buckets of `idenfy_gateway_attempts_per_request`: one per attempt count up to 6, then 8 and 10
/// (`retry.max_attempts` defaults to 4).
pub const ATTEMPT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0];

/// Why a retry the policy wanted did not happen: a fixed set, the `cause` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// `retry.max_attempts` reached.
    MaxAttempts,
    /// The retry budget is spent (a budget refusal).
    Budget,
    /// The backoff plus a minimal attempt would not end before the deadline.
    Deadline,
    /// After the backoff, the account limit could not admit the retry in time (iDenfy's pause,
    /// or the account's quota): nothing was sent.
    AccountLimit,
}

impl Denied {
    pub fn as_str(self) -> &'static str {
        match self {
            Denied::MaxAttempts => "max_attempts",
            Denied::Budget => "budget",
            Denied::Deadline => "deadline",
            Denied::AccountLimit => "account_limit",
        }
    }
}

/// Metrics of the retry loop.
#[derive(Debug, Clone)]
pub struct RetryMetrics {
    /// `idenfy_gateway_retries_total{reason}`: retry attempts sent (past the account limit), by
    /// [`RetryReason`]: the sum over answers of `x-gateway-attempts` minus one.
    retries: IntCounterVec,
    /// `idenfy_gateway_retries_denied_total{cause}`: retries the policy wanted but that did not
    /// happen; `cause="budget"` counts budget refusals.
    denied: IntCounterVec,
    /// `idenfy_gateway_attempts_per_request`: upstream attempts per request that reached iDenfy.
    attempts: Histogram,
}

impl RetryMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let retries = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_retries_total",
                "Retry attempts sent upstream, by reason",
            ),
            &["reason"],
        )?;
        let denied = IntCounterVec::new(
            Opts::new(
                "idenfy_gateway_retries_denied_total",
                "Retries not made, by cause (max_attempts|budget|deadline|account_limit)",
            ),
            &["cause"],
        )?;
        let attempts = Histogram::with_opts(
            HistogramOpts::new(
                "idenfy_gateway_attempts_per_request",
                "Upstream attempts per request",
            )
            .buckets(ATTEMPT_BUCKETS.to_vec()),
        )?;
        for reason in RetryReason::ALL {
            retries.with_label_values(&[reason.as_str()]);
        }
        for cause in [
            Denied::MaxAttempts,
            Denied::Budget,
            Denied::Deadline,
            Denied::AccountLimit,
        ] {
            denied.with_label_values(&[cause.as_str()]);
        }
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(denied.clone()))?;
        registry.register(Box::new(attempts.clone()))?;
        Ok(RetryMetrics {
            retries,
            denied,
            attempts,
        })
    }

    pub(crate) fn retried(&self, reason: RetryReason) {
        self.retries.with_label_values(&[reason.as_str()]).inc();
    }

    pub(crate) fn denied(&self, cause: Denied) {
        self.denied.with_label_values(&[cause.as_str()]).inc();
    }

    pub(crate) fn attempts(&self, n: u32) {
        self.attempts.observe(f64::from(n));
    }

    /// Retries sent for `reason` (for tests and the admin page).
    pub fn retries(&self, reason: RetryReason) -> u64 {
        self.retries.with_label_values(&[reason.as_str()]).get()
    }

    /// Retries denied for `cause`.
    pub fn denied_count(&self, cause: Denied) -> u64 {
        self.denied.with_label_values(&[cause.as_str()]).get()
    }
}
