//! What one run counted. The upstream side comes from the simulator's counters (what "iDenfy"
//! received and created), the app's side from the clients' own records; nothing from the
//! gateway's metrics: the referee is not the player.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use idenfy_gateway::simulator::Counters;

use super::client::Call;
use super::clock::simulated;

/// One row of the table: a scenario on one path.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// HTTP requests the app sent, retries included.
    pub app_calls: u64,
    /// API requests the simulator received.
    pub upstream_calls: u64,
    /// KYC sessions the simulator created (each one billed).
    pub sessions: u64,
    /// Sessions beyond the first of a clientId.
    pub duplicates: u64,
    /// Answers the app received, by kind.
    pub seen_409: u64,
    pub seen_429: u64,
    pub seen_5xx: u64,
    /// Every answer that was not a usable token, and connections that failed without an answer.
    pub errors_seen: u64,
    /// User visits that ended with a usable token, of all visits.
    pub successes: usize,
    pub visits: usize,
    /// Time from a visit's first click to its first usable token, simulated time.
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    /// Real time of the run, and what it stands for in simulated time.
    pub wall: Duration,
    /// clientIds that saw a 409 although the simulator created a session for them.
    pub conflicts_on_created: BTreeSet<String>,
}

impl Tally {
    pub fn count(calls: &[Call], visits: usize, counters: &Counters, wall: Duration) -> Tally {
        let mut t = Tally {
            upstream_calls: counters.total_requests(),
            sessions: counters.sessions_created(),
            duplicates: counters.duplicate_sessions(),
            visits,
            wall,
            ..Tally::default()
        };
        for call in calls {
            t.app_calls += call.attempts.len() as u64;
            for (i, seen) in call.attempts.iter().enumerate() {
                let last_with_token = call.token_at.is_some() && i + 1 == call.attempts.len();
                match seen {
                    Some(409) => t.seen_409 += 1,
                    Some(429) => t.seen_429 += 1,
                    Some(500..=599) => t.seen_5xx += 1,
                    _ => {}
                }
                if !last_with_token {
                    t.errors_seen += 1;
                }
            }
            let conflicted = call.attempts.contains(&Some(409));
            if conflicted && counters.tokens_created_for(&call.client_id) > 0 {
                t.conflicts_on_created.insert(call.client_id.clone());
            }
        }
        // Per visit: the first click and the first token.
        let mut by_visit: BTreeMap<usize, (std::time::Instant, Option<std::time::Instant>)> =
            BTreeMap::new();
        for call in calls {
            let entry = by_visit
                .entry(call.visit)
                .or_insert((call.started, call.token_at));
            entry.0 = entry.0.min(call.started);
            entry.1 = match (entry.1, call.token_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let mut waits: Vec<Duration> = by_visit
            .values()
            .filter_map(|(first, token)| Some(simulated(token.as_ref()?.duration_since(*first))))
            .collect();
        waits.sort();
        t.successes = waits.len();
        t.p50 = percentile(&waits, 50.0);
        t.p99 = percentile(&waits, 99.0);
        t
    }
}

/// Nearest-rank percentile of sorted durations (`None` when empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}
