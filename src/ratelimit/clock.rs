//! Governor on tokio's clock, so that limiter decisions and the waits they cause use the same time
//! (and paused-time tests cover both).

use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use tokio::time::Instant;

/// A `tokio::time::Instant` as governor's clock reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(pub Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        TokioInstant(self.0 + Duration::from(other))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        self.0
            .checked_sub(Duration::from(duration))
            .map_or(*self, TokioInstant)
    }
}

/// Governor's [`Clock`] reading `tokio::time::Instant::now()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let before = TokioClock.now();
        tokio::time::advance(Duration::from_millis(1500)).await;
        let after = TokioClock.now();
        assert_eq!(
            Duration::from(after.duration_since(before)),
            Duration::from_millis(1500)
        );
        assert_eq!(before.duration_since(after), Nanos::from(0u64));
        assert_eq!(
            after.saturating_sub(Duration::from_millis(1500).into()),
            before
        );
    }
}
