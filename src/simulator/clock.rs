//! The simulator's clock: real (tokio) time plus whatever a test has advanced it by, so expiry can
//! be tested without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Simulated time, as a duration since the simulator started.
#[derive(Debug)]
pub struct SimClock {
    start: Instant,
    start_wall: DateTime<Utc>,
    /// Milliseconds added by [`SimClock::advance`].
    advanced_ms: AtomicU64,
}

impl SimClock {
    pub fn new() -> Self {
        SimClock {
            start: Instant::now(),
            start_wall: Utc::now(),
            advanced_ms: AtomicU64::new(0),
        }
    }

    /// Time since start, advances included.
    pub fn now(&self) -> Duration {
        self.start.elapsed() + Duration::from_millis(self.advanced_ms.load(Ordering::Relaxed))
    }

    /// Moves simulated time forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.advanced_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The wall-clock time of a simulated instant, for timestamps in bodies.
    pub fn wall(&self, at: Duration) -> DateTime<Utc> {
        self.start_wall + chrono::TimeDelta::from_std(at).unwrap_or(chrono::TimeDelta::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_now_forward() {
        let clock = SimClock::new();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() - before >= Duration::from_secs(3600));
    }

    #[test]
    fn wall_time_follows_simulated_time() {
        let clock = SimClock::new();
        let hour = clock.wall(Duration::from_secs(3600)) - clock.wall(Duration::ZERO);
        assert_eq!(hour.num_seconds(), 3600);
    }
}
