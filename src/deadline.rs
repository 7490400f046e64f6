//! The request deadline: how long a whole request may take (limiter waits, attempts and backoff
//! together). An outer layer sets [`crate::context::Deadline`] from [`deadline_for`]; the team limit,
//! the retry loop and the account limit never start a wait or an attempt that cannot end before it.

use std::time::Duration;

use http::HeaderValue;

use crate::context::Deadline;

/// Caller header that may shorten (never lengthen) `upstream.deadline` for one request.
///
/// Accepted forms: a `humantime` duration (`"5s"`, `"250ms"`, `"1m 30s"`) or a bare integer, read
/// as milliseconds (`"1500"`). Anything else, zero, or a longer value than configured is ignored.
pub const X_GATEWAY_TIMEOUT: &str = "x-gateway-timeout";

/// The least time an upstream attempt needs: 100 ms. A wait (limiter, pause or backoff) is only
/// taken, and an attempt only started, if at least this much of the deadline is left afterwards;
/// less than that cannot plausibly reach iDenfy and come back.
pub const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(100);

/// The deadline for one request: `configured`, shortened by `asked`, the request's
/// [`X_GATEWAY_TIMEOUT`] (its first value), when valid.
pub fn deadline_for(asked: Option<&HeaderValue>, configured: Duration) -> Duration {
    asked
        .and_then(|v| v.to_str().ok())
        .and_then(parse_timeout)
        .map_or(configured, |asked| asked.min(configured))
}

fn parse_timeout(text: &str) -> Option<Duration> {
    let text = text.trim();
    let asked = match text.parse::<u64>() {
        Ok(ms) => Duration::from_millis(ms),
        Err(_) => humantime::parse_duration(text).ok()?,
    };
    (!asked.is_zero()).then_some(asked)
}

/// How long a request may queue for quota: `max_wait`, and never so long that less than
/// [`MIN_ATTEMPT_TIME`] of the deadline would be left for the attempt.
pub fn wait_budget(max_wait: Duration, deadline: Option<&Deadline>) -> Duration {
    WaitBudget::new(max_wait, deadline).from_now()
}

/// The waits for quota of one request, when several are decided at once (the team's and the
/// first attempt's account's, in fleet mode): each at most `max_wait` from its own start, and
/// all of them within `room`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitBudget {
    /// `limits.max_wait`: the longest one wait may last.
    pub max_wait: Duration,
    /// The deadline less [`MIN_ATTEMPT_TIME`], from now; `None`: the request has no deadline.
    pub room: Option<Duration>,
}

impl WaitBudget {
    pub fn new(max_wait: Duration, deadline: Option<&Deadline>) -> Self {
        WaitBudget {
            max_wait,
            room: deadline.map(|d| d.remaining().saturating_sub(MIN_ATTEMPT_TIME)),
        }
    }

    /// How long a wait that starts now may last ([`wait_budget`]).
    pub fn from_now(&self) -> Duration {
        self.room
            .map_or(self.max_wait, |room| room.min(self.max_wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_header(value: &str) -> Option<HeaderValue> {
        Some(HeaderValue::from_str(value).unwrap())
    }

    const CONFIGURED: Duration = Duration::from_secs(30);

    #[test]
    fn without_header_the_configured_deadline_applies() {
        assert_eq!(deadline_for(None, CONFIGURED), CONFIGURED);
    }

    #[test]
    fn header_shortens_the_deadline() {
        assert_eq!(
            deadline_for(with_header("5s").as_ref(), CONFIGURED),
            Duration::from_secs(5)
        );
        assert_eq!(
            deadline_for(with_header("250ms").as_ref(), CONFIGURED),
            Duration::from_millis(250)
        );
        assert_eq!(
            deadline_for(with_header(" 1500 ").as_ref(), CONFIGURED),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn header_never_lengthens_the_deadline() {
        assert_eq!(
            deadline_for(with_header("5m").as_ref(), CONFIGURED),
            CONFIGURED
        );
        assert_eq!(
            deadline_for(with_header("600000").as_ref(), CONFIGURED),
            CONFIGURED
        );
    }

    #[test]
    fn garbage_and_zero_are_ignored() {
        for bad in ["soon", "-5", "5 parsecs", "", "0", "0ms"] {
            assert_eq!(
                deadline_for(with_header(bad).as_ref(), CONFIGURED),
                CONFIGURED,
                "{bad}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn wait_budget_leaves_time_for_an_attempt() {
        let max_wait = Duration::from_secs(2);
        assert_eq!(wait_budget(max_wait, None), max_wait);
        let far = Deadline(tokio::time::Instant::now() + Duration::from_secs(10));
        assert_eq!(wait_budget(max_wait, Some(&far)), max_wait);
        let near = Deadline(tokio::time::Instant::now() + Duration::from_millis(600));
        assert_eq!(
            wait_budget(max_wait, Some(&near)),
            Duration::from_millis(500)
        );
        let gone = Deadline(tokio::time::Instant::now() + Duration::from_millis(50));
        assert_eq!(wait_budget(max_wait, Some(&gone)), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_budget_keeps_the_room_for_later_waits() {
        let max_wait = Duration::from_secs(2);
        let far = Deadline(tokio::time::Instant::now() + Duration::from_secs(10));
        let budget = WaitBudget::new(max_wait, Some(&far));
        assert_eq!(budget.room, Some(Duration::from_millis(9900)));
        assert_eq!(budget.from_now(), max_wait);
        assert_eq!(WaitBudget::new(max_wait, None).room, None);
    }
}
