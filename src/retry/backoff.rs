//! Backoff between attempts: full jitter, `random(0, min(cap, base * 2^n))`, and never less
//! than the `Retry-After` an answer carried.

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderValue};

/// The longest `Retry-After` believed: 1 h (iDenfy's limit is per hour). A larger value is read as
/// this, so a stray header cannot hold an account for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Full-jitter exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The ceiling before retry `n` (`n = 0` for the first retry): `min(cap, base * 2^n)`.
    pub fn ceiling(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The sleep before retry `n`: uniform in `[0, ceiling(n)]`, at least `retry_after`.
    pub fn delay(
        &self,
        n: u32,
        retry_after: Option<Duration>,
        rng: &mut fastrand::Rng,
    ) -> Duration {
        let ceiling = u64::try_from(self.ceiling(n).as_nanos()).unwrap_or(u64::MAX);
        let jitter = Duration::from_nanos(rng.u64(0..=ceiling));
        jitter.max(retry_after.unwrap_or_default())
    }
}

/// The `Retry-After` of an answer: delta-seconds or an HTTP-date, at most [`MAX_RETRY_AFTER`].
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(header::RETRY_AFTER)?, SystemTime::now())
}

/// `Retry-After` read at wall-clock `now`; a date in the past means "now" (zero).
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    let after = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(text).ok()?;
            at.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(after.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_millis(200),
        cap: Duration::from_secs(5),
    };

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let ms = |n| BACKOFF.ceiling(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5)],
            [200, 400, 800, 1600, 3200, 5000]
        );
        assert_eq!(BACKOFF.ceiling(40), BACKOFF.cap, "no overflow");
    }

    #[test]
    fn delays_vary_and_stay_under_the_ceiling() {
        let mut rng = fastrand::Rng::with_seed(7);
        for n in 0..8 {
            let delays: Vec<_> = (0..50).map(|_| BACKOFF.delay(n, None, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= BACKOFF.ceiling(n)));
            let distinct: std::collections::HashSet<_> = delays.iter().collect();
            assert!(distinct.len() > 40, "full jitter spreads retries");
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let mut rng = fastrand::Rng::with_seed(1);
        for _ in 0..50 {
            let d = BACKOFF.delay(0, Some(Duration::from_secs(1)), &mut rng);
            assert!(d >= Duration::from_secs(1));
        }
        // A Retry-After beyond the cap is still honoured.
        let d = BACKOFF.delay(0, Some(Duration::from_secs(30)), &mut rng);
        assert_eq!(d, Duration::from_secs(30));
    }

    #[test]
    fn parses_delta_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let parse = |s: &'static str| parse_retry_after(&HeaderValue::from_static(s), now);
        assert_eq!(parse("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse(" 0 "), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        let later = HeaderValue::from_str(&later).unwrap();
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        let earlier = HeaderValue::from_str(&earlier).unwrap();
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse("soon"), None);
        assert_eq!(parse("-1"), None);
        assert_eq!(parse("99999999"), Some(MAX_RETRY_AFTER));
    }
}
