//! The range every duration key accepts, checked by `validate` and documented beside each key in
//! `config/sidecar.toml`. A bound keeps a key meaningful (a zero timeout or deadline would refuse
//! everything; a zero pool sweep period panics in `tokio::time::interval`) and keeps every
//! `Instant + duration` on the request path far from overflowing (a deadline of "100y" did).

use std::time::Duration;

use crate::deadline::MIN_ATTEMPT_TIME;

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// An inclusive range of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Range {
    pub min: Duration,
    pub max: Duration,
}

/// A timeout the listener or the upstream client sets on one step (a head, a body, a connect,
/// an attempt): 10ms..1h. Shorter cannot be met even on loopback; longer is a connection held
/// for nothing.
pub(crate) const TIMEOUT: Range = Range::new(Duration::from_millis(10), HOUR);

/// `upstream.deadline`: 100ms..1h. Below [`MIN_ATTEMPT_TIME`] no attempt is ever started.
pub(crate) const DEADLINE: Range = Range::new(MIN_ATTEMPT_TIME, HOUR);

/// `listen.shutdown_grace`: 0..1h (zero: close what is in flight at once).
pub(crate) const SHUTDOWN_GRACE: Range = Range::new(Duration::ZERO, HOUR);

/// `upstream.pool_idle_timeout`: 1s..1d. It is also the period of the pool's sweep.
pub(crate) const POOL_IDLE: Range = Range::new(SECOND, DAY);

/// `retry.base` and `retry.cap` (and base ≤ cap): 1ms..1h.
pub(crate) const BACKOFF: Range = Range::new(MS, HOUR);

/// `dedup.default_lifetime`: 1s..30d, iDenfy's longest token lifetime (2,592,000 s).
pub(crate) const TOKEN_LIFETIME: Range = Range::new(SECOND, Duration::from_secs(2_592_000));

/// `dedup.safety_margin`: 0..1h.
pub(crate) const SAFETY_MARGIN: Range = Range::new(Duration::ZERO, HOUR);

/// `dedup.recheck_after`: 0..30d (zero: recheck before every replay; 30 days: never, as no
/// token lives longer).
pub(crate) const RECHECK_AFTER: Range = Range::new(Duration::ZERO, Duration::from_secs(2_592_000));

/// `webhooks.max_age`: 1s..30d (short values are for tests and drills).
pub(crate) const WEBHOOK_MAX_AGE: Range = Range::new(SECOND, Duration::from_secs(2_592_000));

/// `webhooks.reclaim_after`: 1s..1h (a replica renews its claims three times within it).
pub(crate) const RECLAIM_AFTER: Range = Range::new(SECOND, HOUR);

/// `state.timeout`, one Redis operation: 1ms..10s (a round trip on a LAN is well under 1 ms;
/// longer than seconds would hold requests on a Redis that is gone).
pub(crate) const REDIS_TIMEOUT: Range = Range::new(MS, Duration::from_secs(10));

/// `limits.max_wait`: 0..1h (zero: never queue, answer 429 at once), and never more than
/// `upstream.deadline` (checked in `validate`).
pub(crate) const MAX_WAIT: Range = Range::new(Duration::ZERO, HOUR);

impl Range {
    pub(crate) const fn new(min: Duration, max: Duration) -> Self {
        Range { min, max }
    }

    pub(crate) fn contains(&self, value: Duration) -> bool {
        (self.min..=self.max).contains(&value)
    }

    /// `value`, or why not: `must be between 100ms and 1h, got "100y"` (`text` is what the file
    /// said).
    pub(crate) fn check(&self, value: Duration, text: &str) -> Result<Duration, String> {
        if self.contains(value) {
            return Ok(value);
        }
        let max = humantime::format_duration(self.max);
        Err(if self.min.is_zero() {
            format!("must be at most {max}, got {text:?}")
        } else {
            let min = humantime::format_duration(self.min);
            format!("must be between {min} and {max}, got {text:?}")
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const MINIMAL: &str = "[[account]]\nname = \"main\"\napi_key = \"k\"\napi_secret = \"s\"\n\
                           [[team]]\nname = \"app\"\n";

    /// The problems of a minimal config with `extra` (TOML sections) added, as `path: message`.
    fn problems(extra: &str) -> Vec<String> {
        let text = format!("{MINIMAL}{extra}");
        match Config::parse(&text, &|_| None) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .0
                .into_iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect(),
        }
    }

    /// Every duration key: the least and the most it accepts, values just outside (zero is the
    /// least where none is below), and the range as `config/sidecar.toml` documents it.
    const KEYS: &str = "
        listen.header_read_timeout  10ms   1h   9ms,61m     10ms..1h
        listen.body_read_timeout    10ms   1h   9ms,61m     10ms..1h
        listen.idle_timeout         10ms   1h   9ms,61m     10ms..1h
        listen.shutdown_grace       0s     1h   61m         0..1h
        upstream.connect_timeout    10ms   1h   0s,2h       10ms..1h
        upstream.attempt_timeout    10ms   1h   0s,100y     10ms..1h
        upstream.deadline           100ms  1h   99ms,100y   100ms..1h
        upstream.pool_idle_timeout  1s     1d   0s,25h      1s..1d
        retry.cap                   1ms    1h   0s,61m      1ms..1h
        dedup.default_lifetime      1s     30d  999ms,31d   1s..30d
        dedup.safety_margin         0s     1h   61m         0..1h
        limits.max_wait             0s     30s  31s         0..deadline
    ";

    /// The columns of each row of [`KEYS`].
    fn rows() -> impl Iterator<Item = Vec<&'static str>> {
        KEYS.lines()
            .map(|row| row.split_whitespace().collect::<Vec<_>>())
            .filter(|cols| !cols.is_empty())
    }

    #[test]
    fn every_duration_key_accepts_its_range_and_refuses_outside_it() {
        for row in rows() {
            let [path, least, most, outside, _] = row[..] else {
                panic!("{row:?}")
            };
            let (section, key) = path.split_once('.').unwrap();
            // The least cap would be shorter than the default base (200ms): take the base down too.
            let base = if path == "retry.cap" {
                "base = \"1ms\"\n"
            } else {
                ""
            };
            let with = |value: &str| problems(&format!("[{section}]\n{base}{key} = \"{value}\"\n"));
            assert_eq!(with(least), Vec::<String>::new(), "{path} = {least}");
            assert_eq!(with(most), Vec::<String>::new(), "{path} = {most}");
            for value in outside.split(',') {
                let found = with(value);
                assert_eq!(found.len(), 1, "{path} = {value}: {found:?}");
                assert!(found[0].starts_with(&format!("{path}: must ")), "{found:?}");
                assert!(found[0].ends_with(&format!("got {value:?}")), "{found:?}");
            }
        }
    }

    #[test]
    fn names_both_ends_of_the_range_in_the_message() {
        assert_eq!(
            problems("[upstream]\ndeadline = \"100y\"\n"),
            [r#"upstream.deadline: must be between 100ms and 1h, got "100y""#]
        );
        assert_eq!(
            problems("[listen]\nshutdown_grace = \"2h\"\n"),
            [r#"listen.shutdown_grace: must be at most 1h, got "2h""#]
        );
    }

    #[test]
    fn retry_base_may_not_exceed_the_cap() {
        assert_eq!(
            problems("[retry]\nbase = \"10s\"\ncap = \"5s\"\n"),
            [r#"retry.base: must not exceed retry.cap (5s), got "10s""#]
        );
        assert_eq!(
            problems("[retry]\nbase = \"5s\"\ncap = \"5s\"\n"),
            Vec::<String>::new()
        );
        assert_eq!(
            problems("[retry]\nbase = \"0s\"\n"),
            [r#"retry.base: must be between 1ms and 1h, got "0s""#]
        );
    }

    #[test]
    fn max_wait_may_not_exceed_the_deadline() {
        assert_eq!(
            problems("[upstream]\ndeadline = \"1s\"\n[limits]\nmax_wait = \"2s\"\n"),
            [r#"limits.max_wait: must not exceed upstream.deadline (1s), got "2s""#]
        );
    }

    #[test]
    fn the_sidecar_example_documents_every_range() {
        let text = std::fs::read_to_string("config/sidecar.toml").unwrap();
        let documented = |key: &str, range: &str| {
            text.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                line.starts_with(&format!("{key} = ")) && line.contains(&format!("[{range}]"))
            })
        };
        for row in rows() {
            let (key, range) = (row[0].split_once('.').unwrap().1, row[4]);
            assert!(
                documented(key, range),
                "{key} [{range}] not in sidecar.toml"
            );
        }
        assert!(documented("base", "1ms..cap"));
    }
}
