//! Rate limits: a quota per team on logical requests ([`TeamLimit`], after dedup, before the
//! retry loop) and a quota per iDenfy account on upstream attempts ([`AccountLimit`], inside the
//! retry loop, so retries spend it too), plus the account pause after iDenfy's own 429.
//!
//! Each quota is a governor GCRA limiter on tokio's clock with a FIFO line ([`quota`]). A request
//! over its quota waits for its cell when that is within `limits.max_wait` and leaves at least
//! [`crate::deadline::MIN_ATTEMPT_TIME`] before its deadline; otherwise it is refused at once with
//! `GatewayError::RateLimited` and a `Retry-After` from the limiter. Coalesced and replayed
//! requests are answered by dedup, outside, and spend nothing here.

pub mod account;
pub mod carry;
pub mod clock;
pub mod metrics;
pub mod quota;
pub mod team;

use std::time::Duration;

pub use self::account::{AccountLimit, AccountLimitLayer};
pub use self::carry::Quotas;
pub use self::metrics::LimitMetrics;
pub use self::quota::Quota;
pub use self::team::{TeamLimit, TeamLimitLayer};

use self::metrics::QuotaMetrics;
use crate::error::{GatewayError, Limit};

/// Waits for a cell of `quota` within `budget`, counting the outcome.
async fn admit(
    quota: &Quota,
    metrics: &QuotaMetrics,
    limit: Limit,
    budget: Duration,
) -> Result<(), GatewayError> {
    match quota.acquire(budget).await {
        Ok(waited) => {
            metrics.admitted(waited);
            Ok(())
        }
        Err(refused) => {
            metrics.refused();
            Err(GatewayError::RateLimited {
                limit,
                retry_after: refused.retry_after,
            })
        }
    }
}

#[cfg(test)]
mod tests;
