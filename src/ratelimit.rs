//! Rate limits: a quota per team on logical requests ([`TeamLimit`], after dedup, before the
//! retry loop) and a quota per iDenfy account on upstream attempts ([`AccountLimit`], inside the
//! retry loop, so retries spend it too), plus the account pause after iDenfy's own 429.
//!
//! Each quota is a governor GCRA limiter on tokio's clock with a FIFO line ([`quota`]). A request
//! over its quota waits for its cell when that is within `limits.max_wait` and leaves at least
//! [`crate::deadline::MIN_ATTEMPT_TIME`] before its deadline; otherwise it is refused at once with
//! `GatewayError::RateLimited` and a `Retry-After` from the limiter. With `state.backend =
//! "redis"` the quotas and the pause are the fleet's, decided in Redis ([`gate`], and
//! [`crate::state::quota`]) with the same semantics; a request's team cell and its first
//! attempt's account cell in one round trip ([`first_attempt`]), which for a token request that
//! leads its flight is dedup's lease script ([`decided`]). Coalesced and replayed requests are
//! answered by dedup, outside, and spend nothing here.

pub mod account;
pub mod carry;
pub mod clock;
pub mod decided;
pub mod first_attempt;
pub mod gate;
pub mod metrics;
pub mod quota;
pub mod team;

pub use self::account::{AccountLimit, AccountLimitLayer};
pub use self::carry::Quotas;
pub use self::decided::{AheadQuotas, Decided};
pub use self::first_attempt::FirstAttempt;
pub use self::gate::{Admitted, Denied, Gate, Gates};
pub use self::metrics::LimitMetrics;
pub use self::quota::Quota;
pub use self::team::{TeamLimit, TeamLimitLayer};

use self::metrics::QuotaMetrics;
use crate::error::{GatewayError, Limit};

/// A request or attempt denied its cell by `limit`: counted, and its error.
fn denied(denied: Denied, metrics: &QuotaMetrics, limit: Limit) -> GatewayError {
    match denied {
        Denied::Refused(refused) => {
            metrics.refused();
            GatewayError::RateLimited {
                limit,
                retry_after: refused.retry_after,
            }
        }
        Denied::Unavailable => GatewayError::StateUnavailable,
    }
}

#[cfg(test)]
mod tests;
