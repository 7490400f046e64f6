//! The retry budget: over a sliding window, retries may add at most `retry.budget_ratio` of the
//! requests seen, plus `retry.min_retries_per_second` as a floor, so that an iDenfy outage does
//! not multiply the load the gateway sends it.
//!
//! Not `tower::retry::budget::TpsBudget`, although it has the same shape and runs on tokio time:
//! it turns the ratio into `1 / ratio` withdrawals truncated to an integer (0.3 allows 33 %), the
//! slot that becomes current keeps the value it had one window ago until it is committed (the
//! window is up to one slot longer than configured), and it panics on an out-of-range ratio.
//! Here every request deposits `ratio` retries in thousandths and every retry withdraws one.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The sliding window: 10 s, kept as 10 slots of 1 s.
pub const WINDOW: Duration = Duration::from_secs(10);
const SLOTS: usize = 10;
/// A retry in budget units: ratios are exact to a thousandth.
const UNIT: i64 = 1000;
/// Largest ratio taken from config (ten retries per request).
const MAX_RATIO: f32 = 10.0;

/// A shared retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    /// Units each request deposits: `ratio * UNIT`.
    deposit: i64,
    /// The floor: `min_per_second` retries per second of window, always available.
    reserve: i64,
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    /// Net deposits (positive) and withdrawals (negative) per slot.
    slots: [i64; SLOTS],
    current: usize,
    /// When the current slot began.
    started: Instant,
}

impl RetryBudget {
    /// `ratio` is clamped to `0..=10` (NaN reads as 0).
    pub fn new(ratio: f32, min_per_second: u32) -> Self {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, MAX_RATIO)
        };
        RetryBudget {
            deposit: (f64::from(ratio) * UNIT as f64).round() as i64,
            reserve: i64::from(min_per_second) * WINDOW.as_secs() as i64 * UNIT,
            ring: Mutex::new(Ring {
                slots: [0; SLOTS],
                current: 0,
                started: Instant::now(),
            }),
        }
    }

    /// A request arrived: it earns `ratio` retries for the window.
    pub fn deposit(&self) {
        self.with_ring(|ring| ring.slots[ring.current] += self.deposit);
    }

    /// May one retry go? If so, it is paid for now (a retry in backoff is already withdrawn).
    pub fn withdraw(&self) -> bool {
        self.with_ring(|ring| {
            let balance = self.reserve + ring.slots.iter().sum::<i64>();
            let allowed = balance >= UNIT;
            if allowed {
                ring.slots[ring.current] -= UNIT;
            }
            allowed
        })
    }

    /// A retry paid for was not sent after all (the account limit refused it): its cost is
    /// given back.
    pub fn refund(&self) {
        self.with_ring(|ring| ring.slots[ring.current] += UNIT);
    }

    fn with_ring<T>(&self, f: impl FnOnce(&mut Ring) -> T) -> T {
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.rotate(Instant::now());
        f(&mut ring)
    }
}

impl Ring {
    /// Moves the current slot to `now`, clearing every slot it passes.
    fn rotate(&mut self, now: Instant) {
        let slot = WINDOW / SLOTS as u32;
        let steps = now.saturating_duration_since(self.started).as_nanos() / slot.as_nanos();
        if steps == 0 {
            return;
        }
        for _ in 0..steps.min(SLOTS as u128) {
            self.current = (self.current + 1) % SLOTS;
            self.slots[self.current] = 0;
        }
        self.started = if steps >= SLOTS as u128 {
            now
        } else {
            self.started + slot * steps as u32
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn drain(budget: &RetryBudget) -> usize {
        std::iter::from_fn(|| budget.withdraw().then_some(())).count()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_fraction_of_requests() {
        let budget = RetryBudget::new(0.2, 0);
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(drain(&budget), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn ratios_are_not_truncated() {
        let budget = RetryBudget::new(0.3, 0);
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(drain(&budget), 30);
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_allows_retries_without_traffic() {
        let budget = RetryBudget::new(0.2, 1);
        assert_eq!(drain(&budget), 10, "1/s over a 10 s window");
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_and_withdrawals_age_out_of_the_window() {
        let budget = RetryBudget::new(0.5, 0);
        for _ in 0..10 {
            budget.deposit();
        }
        advance(WINDOW + Duration::from_secs(1)).await;
        assert!(!budget.withdraw(), "old requests earn nothing");
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(drain(&budget), 2);
        advance(WINDOW + Duration::from_secs(1)).await;
        for _ in 0..4 {
            budget.deposit();
        }
        assert_eq!(drain(&budget), 2, "old withdrawals no longer count");
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_slides_slot_by_slot() {
        let budget = RetryBudget::new(1.0, 0);
        budget.deposit();
        advance(Duration::from_secs(5)).await;
        budget.deposit();
        advance(Duration::from_secs(5)).await;
        assert_eq!(
            drain(&budget),
            1,
            "the first deposit left, the second is 5 s old"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refund_gives_a_retry_back() {
        let budget = RetryBudget::new(0.2, 0);
        for _ in 0..5 {
            budget.deposit();
        }
        assert!(budget.withdraw());
        assert!(!budget.withdraw());
        budget.refund();
        assert_eq!(drain(&budget), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_range_ratios_are_clamped() {
        let none = RetryBudget::new(f32::NAN, 0);
        none.deposit();
        assert!(!none.withdraw());
        let negative = RetryBudget::new(-1.0, 0);
        negative.deposit();
        assert!(!negative.withdraw());
    }
}
