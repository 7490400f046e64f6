//! iDenfy's hourly request limit (default 10,000 requests an hour), as a fixed window of simulated
//! time. The real window kind is undocumented; a fixed window is the simplest that tests can reason
//! about (advance the clock an hour and the count starts again).

use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);

/// Requests counted in the current hour of simulated time.
#[derive(Debug, Clone, Default)]
pub struct HourlyLimit {
    window: u64,
    count: u32,
}

impl HourlyLimit {
    /// Counts a request at `now` and says whether it is within `limit` requests an hour (0: no
    /// limit). Refused requests do not count.
    pub fn admit(&mut self, now: Duration, limit: u32) -> bool {
        let window = now.as_secs() / HOUR.as_secs();
        if window != self.window {
            self.window = window;
            self.count = 0;
        }
        if limit != 0 && self.count >= limit {
            return false;
        }
        self.count += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_until_the_next_hour() {
        let mut limit = HourlyLimit::default();
        let t = Duration::from_secs(10);
        assert!(limit.admit(t, 2) && limit.admit(t, 2));
        assert!(!limit.admit(t + Duration::from_secs(3000), 2));
        assert!(limit.admit(t + HOUR, 2));
    }

    #[test]
    fn zero_means_unlimited() {
        let mut limit = HourlyLimit::default();
        assert!((0..100).all(|_| limit.admit(Duration::ZERO, 0)));
    }
}
