//! The quota decision on Redis: GCRA with a line of reserved places, as the memory quota
//! ([`crate::ratelimit::quota`]) decides it, in one Lua script on Redis's own clock (`TIME`), so
//! that replicas with skewed clocks agree; and the shared account pause, read by the same
//! script (one round trip per decision) and set by another.
//!
//! The state of a quota is its theoretical arrival time (TAT, µs since the epoch). A request
//! arriving at `now` takes the cell that conforms at `allow = max(tat, start) + interval -
//! burst·interval`, `start` being the end of the pause (or `now`): at once when `allow ≤ now`,
//! after waiting `allow − now` when that is within its budget (the place is reserved: the TAT
//! moves on), or it is refused with `Retry-After = allow − now` and nothing changes. A request
//! that reserved a place and gives up leaves its cell unused (never over-spends), as in memory.

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use super::client::{Op, SharedState, StateError};

/// `KEYS[1]` the quota's TAT, `KEYS[2]` (optional) the account's pause; `ARGV` the emission
/// interval and the burst in µs and cells, the wait budget in µs. Returns `{0, wait_µs}` (let
/// through, now or after the wait) or `{1, retry_after_µs}` (refused).
const DECIDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local start = now
if KEYS[2] then
  local left = redis.call('PTTL', KEYS[2])
  if left > 0 then start = now + left * 1000 end
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < start then tat = start end
local next_tat = tat + interval
local allow = next_tat - burst * interval
if allow < start then allow = start end
local wait = allow - now
if wait > budget then return {1, wait} end
if wait < 0 then wait = 0 end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return {0, wait}
"#;

/// `KEYS[1]` the account's pause; `ARGV[1]` its length in ms. Keeps a longer pause already set.
const PAUSE: &str = r#"
local left = redis.call('PTTL', KEYS[1])
local ms = tonumber(ARGV[1])
if left < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 0
"#;

static DECIDE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DECIDE));
static PAUSE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PAUSE));

/// What Redis decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through after waiting this long (zero: at once); the place is reserved.
    After(Duration),
    /// Refused: a cell could be free after this long.
    Refused(Duration),
}

/// One quota in Redis: a team's or an account's (with the account's pause).
#[derive(Debug, Clone)]
pub struct SharedQuota {
    state: SharedState,
    tat: String,
    pause: Option<String>,
    interval_us: u64,
    burst: u32,
}

impl SharedQuota {
    /// A team's quota: its keys under its account's hash tag.
    pub fn team(state: &SharedState, account: &str, team: &str, rate: Rate) -> Self {
        Self::new(
            state,
            state.key(account, &format!("team:{team}:tat")),
            None,
            rate,
        )
    }

    /// An account's quota, paused by [`SharedQuota::pause`].
    pub fn account(state: &SharedState, account: &str, rate: Rate) -> Self {
        let pause = Some(state.key(account, "pause"));
        Self::new(state, state.key(account, "account:tat"), pause, rate)
    }

    fn new(state: &SharedState, tat: String, pause: Option<String>, rate: Rate) -> Self {
        SharedQuota {
            state: state.clone(),
            tat,
            pause,
            interval_us: (rate.interval.as_micros() as u64).max(1),
            burst: rate.burst,
        }
    }

    /// The client, for its fallback setting and metrics.
    pub fn state(&self) -> &SharedState {
        &self.state
    }

    /// One decision for a request that may wait `budget`: one round trip.
    pub async fn decide(&self, budget: Duration) -> Result<Decision, StateError> {
        let mut invocation = DECIDE_SCRIPT.key(&self.tat);
        if let Some(pause) = &self.pause {
            invocation.key(pause);
        }
        invocation
            .arg(self.interval_us)
            .arg(self.burst)
            .arg(budget.as_micros() as u64);
        let call = |mut conn: ConnectionManager| async move {
            invocation.invoke_async::<(u8, i64)>(&mut conn).await
        };
        let (refused, us) = self.state.run(Op::Quota, call).await?;
        let after = Duration::from_micros(us.max(0) as u64);
        Ok(match refused {
            0 => Decision::After(after),
            _ => Decision::Refused(after),
        })
    }

    /// Holds the account's attempts on every replica for `pause` (keeps a longer one).
    pub async fn pause(&self, pause: Duration) -> Result<(), StateError> {
        let Some(key) = &self.pause else {
            return Ok(());
        };
        let ms = (pause.as_millis() as u64).max(1);
        let mut invocation = PAUSE_SCRIPT.key(key);
        invocation.arg(ms);
        let call = |mut conn: ConnectionManager| async move {
            invocation.invoke_async::<()>(&mut conn).await
        };
        self.state.run(Op::Pause, call).await
    }
}

/// A quota's shape in the units of the scripts.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Time between two cells.
    pub interval: Duration,
    /// Cells available at once.
    pub burst: u32,
}
