//! The account's decision for a request's first attempt, taken by the team limit together with
//! the team's (fleet mode: one Redis round trip for both, [`crate::state::quota::FirstDecision`])
//! and carried across the retry loop to the account limit as a request extension.
//!
//! Every attempt of a request is handed the same request, so the decision is taken once (an
//! atomic flag): the first attempt to reach the account limit applies it, later attempts
//! (retries) decide on their own. A request that never reaches the account limit (its deadline
//! passed first) leaves its reserved cell unused, as a waiter that gives up does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
use tokio::time::{sleep_until, Instant};

use super::quota::Refused;

/// The first attempt's account cell: reserved at an instant, or refused.
#[derive(Debug, Clone)]
pub struct FirstAttempt {
    cell: Result<Instant, Refused>,
    taken: Arc<AtomicBool>,
}

impl FirstAttempt {
    /// A cell reserved for the first attempt at `at`.
    pub fn at(at: Instant) -> Self {
        Self::new(Ok(at))
    }

    /// The first attempt refused by the account's quota.
    pub fn refused(refused: Refused) -> Self {
        Self::new(Err(refused))
    }

    fn new(cell: Result<Instant, Refused>) -> Self {
        FirstAttempt {
            cell,
            taken: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The decision carried by a request's `extensions`, to the first attempt that asks; `None`
    /// for later ones, and when the team limit took none (memory, or Redis unavailable).
    pub fn take(extensions: &Extensions) -> Option<Self> {
        let first = extensions.get::<FirstAttempt>()?;
        (!first.taken.swap(true, Ordering::Relaxed)).then(|| first.clone())
    }

    /// Waits for the reserved cell: `Ok(waited)`, or the refusal.
    pub async fn wait(self) -> Result<Duration, Refused> {
        let at = self.cell?;
        let now = Instant::now();
        if at <= now {
            return Ok(Duration::ZERO);
        }
        sleep_until(at).await;
        Ok(at - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn only_the_first_attempt_takes_the_decision() {
        let mut extensions = Extensions::new();
        assert!(FirstAttempt::take(&extensions).is_none());
        let at = Instant::now() + Duration::from_millis(300);
        extensions.insert(FirstAttempt::at(at));
        let first = FirstAttempt::take(&extensions).expect("the first attempt's");
        assert!(FirstAttempt::take(&extensions).is_none());
        assert_eq!(first.wait().await, Ok(Duration::from_millis(300)));
        assert_eq!(Instant::now(), at);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_or_a_cell_already_due_is_answered_at_once() {
        let refused = Refused {
            retry_after: Duration::from_secs(3),
        };
        assert_eq!(FirstAttempt::refused(refused).wait().await, Err(refused));
        let past = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(FirstAttempt::at(past).wait().await, Ok(Duration::ZERO));
    }
}
