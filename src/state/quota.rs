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
//!
//! # A request's first round trip
//!
//! A request takes its team's cell, then its first attempt takes the account's. In fleet mode
//! both are decided by one script ([`SharedQuota::decide_first`]), so that a status request makes
//! one round trip: the team's cell as above, then the account's for an arrival when the team's
//! wait ends (with its own `max_wait`, within what is left of the deadline), the pause read too.
//! Both cells are reserved, or neither: a refusal by either quota spends nothing of the other.
//! The team's key is under its account's hash tag, so the script's keys share a Redis Cluster
//! slot. Retries decide on the account alone ([`SharedQuota::decide`]).
//!
//! A token request that leads its key's flight in the fleet has this decision taken by dedup's
//! lease script instead, in the same round trip as its lease: that script is prefixed with
//! [`FIRST_DECISION_LUA`] and calls `decide_first` on the keys [`FirstQuotas::push`] adds (all
//! under the account's hash tag, as its own are); see [`crate::ratelimit::decided`].

use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, ScriptInvocation};

use super::client::{Op, SharedState, StateError};
use crate::deadline::WaitBudget;

/// The GCRA step the decisions share, prepended to each. `place(key, interval, burst, start)`:
/// the cell of a request that may not pass before `start` (µs): when it conforms (`allow`) and
/// the quota's TAT once it is taken. `keep` stores a TAT until its quota is full again.
const GCRA: &str = r#"
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function pause_end(key, now)
  local left = redis.call('PTTL', key)
  if left > 0 then return now + left * 1000 end
  return now
end
local function place(key, interval, burst, start)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < start then tat = start end
  local next_tat = tat + interval
  local allow = next_tat - burst * interval
  if allow < start then allow = start end
  return allow, next_tat
end
local function keep(key, tat, now)
  redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
"#;

/// `KEYS[1]` the quota's TAT, `KEYS[2]` (optional) the account's pause; `ARGV` the emission
/// interval and the burst in µs and cells, the wait budget in µs. Returns `{0, wait_µs}` (let
/// through, now or after the wait) or `{1, retry_after_µs}` (refused).
const DECIDE: &str = r#"
local now = now_us()
local start = now
if KEYS[2] then start = pause_end(KEYS[2], now) end
local allow, tat = place(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), start)
local wait = allow - now
if wait > tonumber(ARGV[3]) then return {1, wait} end
keep(KEYS[1], tat, now)
return {0, wait}
"#;

/// The first decision as a Lua function, for [`DECIDE_FIRST`] and for any script that takes it
/// along with other work (dedup's lease, [`FIRST_DECISION_LUA`]). `decide_first(k, a)` reads
/// `KEYS[k]` the team's TAT, `KEYS[k+1]` the account's, `KEYS[k+2]` (optional) its pause, and
/// `ARGV[a]`… `ARGV[a+5]`: the team's interval and burst, the account's, then `max_wait` and the
/// room left before the deadline (µs, negative: none), as [`FirstQuotas::push`] adds them.
/// Returns `{0, team_wait_µs, account_wait_µs}` (both reserved, each wait from now),
/// `{1, retry_after_µs}` (the team refused) or `{2, retry_after_µs}` (the account refused):
/// nothing is written unless both let the request through.
const DECIDE_FIRST_FN: &str = r#"
local function decide_first(k, a)
  local now = now_us()
  local max_wait, room = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  -- How long a wait that starts `late` µs from now may last.
  local function budget(late)
    if room >= 0 and room - late < max_wait then return room - late end
    return max_wait
  end
  local team, team_tat = place(KEYS[k], tonumber(ARGV[a]), tonumber(ARGV[a + 1]), now)
  if team - now > budget(0) then return {1, team - now} end
  -- The first attempt reaches the account when the team's wait is over.
  local start = team
  if KEYS[k + 2] then start = math.max(team, pause_end(KEYS[k + 2], now)) end
  local account, account_tat =
    place(KEYS[k + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), start)
  if account - team > budget(team - now) then return {2, account - now} end
  keep(KEYS[k], team_tat, now)
  keep(KEYS[k + 1], account_tat, now)
  return {0, team - now, account - now}
end
"#;

/// A status request's first decision alone: [`DECIDE_FIRST_FN`] on every key and argument.
const DECIDE_FIRST: &str = "return decide_first(1, 1)\n";

/// `KEYS[1]` the account's pause; `ARGV[1]` its length in ms. Keeps a longer pause already set.
const PAUSE: &str = r#"
local left = redis.call('PTTL', KEYS[1])
local ms = tonumber(ARGV[1])
if left < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 0
"#;

static DECIDE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(&format!("{GCRA}{DECIDE}")));
static DECIDE_FIRST_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{}{DECIDE_FIRST}", *FIRST_DECISION_LUA)));

/// The Lua a script needs to take a request's first decision along with its own work: the GCRA
/// prelude and `decide_first(k, a)` ([`DECIDE_FIRST_FN`]). Prepend it to the script.
pub static FIRST_DECISION_LUA: LazyLock<String> =
    LazyLock::new(|| format!("{GCRA}{DECIDE_FIRST_FN}"));
static PAUSE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PAUSE));

/// What Redis decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let through after waiting this long (zero: at once); the place is reserved.
    After(Duration),
    /// Refused: a cell could be free after this long.
    Refused(Duration),
}

/// What Redis decided for a request at its team's quota and for its first attempt at its
/// account's, together ([`SharedQuota::decide_first`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstDecision {
    /// Both cells reserved: the team's after the first wait, the account's after the second
    /// (each from now; the second is never shorter).
    After { team: Duration, account: Duration },
    /// The team's quota refused: a cell could be free after this long. Nothing was spent.
    TeamRefused(Duration),
    /// The account's quota refused the first attempt: a cell could be free after this long.
    /// Nothing was spent, the team's cell neither.
    AccountRefused(Duration),
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
            .arg(micros(budget));
        let call = |mut conn: ConnectionManager| async move {
            invocation.invoke_async::<(u8, i64)>(&mut conn).await
        };
        let (refused, us) = self.state.run(Op::Quota, call).await?;
        let after = duration(us);
        Ok(match refused {
            0 => Decision::After(after),
            _ => Decision::Refused(after),
        })
    }

    /// A team's decision (`self`) and its `account`'s for the request's first attempt, in one
    /// script: one round trip, both cells reserved or neither.
    pub async fn decide_first(
        &self,
        account: &SharedQuota,
        budget: WaitBudget,
    ) -> Result<FirstDecision, StateError> {
        let mut invocation = DECIDE_FIRST_SCRIPT.prepare_invoke();
        push_first(self, account, &mut invocation, budget);
        let call = |mut conn: ConnectionManager| async move {
            invocation.invoke_async::<Vec<i64>>(&mut conn).await
        };
        let answer = self.state.run(Op::Quota, call).await?;
        Ok(FirstDecision::of(&answer))
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

/// The quotas of a request's first round trip: its team's and its account's, for a script that
/// decides them ([`FIRST_DECISION_LUA`]).
#[derive(Debug, Clone)]
pub struct FirstQuotas {
    team: SharedQuota,
    account: SharedQuota,
}

impl FirstQuotas {
    pub fn new(team: SharedQuota, account: SharedQuota) -> Self {
        FirstQuotas { team, account }
    }

    /// Adds the decision's keys (2 or 3) and its 6 arguments to `invocation`, after those it
    /// has: `decide_first(k, a)` then reads them from `k` and `a`, the positions of the first.
    pub fn push(&self, invocation: &mut ScriptInvocation<'_>, budget: WaitBudget) {
        push_first(&self.team, &self.account, invocation, budget);
    }
}

/// [`FirstQuotas::push`] of `team` and `account`.
fn push_first(
    team: &SharedQuota,
    account: &SharedQuota,
    invocation: &mut ScriptInvocation<'_>,
    budget: WaitBudget,
) {
    let room = budget
        .room
        .map_or(-1, |room| i64::try_from(micros(room)).unwrap_or(i64::MAX));
    invocation.key(&team.tat).key(&account.tat);
    if let Some(pause) = &account.pause {
        invocation.key(pause);
    }
    invocation
        .arg(team.interval_us)
        .arg(team.burst)
        .arg(account.interval_us)
        .arg(account.burst)
        .arg(micros(budget.max_wait))
        .arg(room);
}

impl FirstDecision {
    /// The decision `decide_first` answered.
    pub fn of(answer: &[i64]) -> Self {
        let us = |i: usize| duration(answer.get(i).copied().unwrap_or(0));
        match answer.first() {
            Some(0) => FirstDecision::After {
                team: us(1),
                account: us(2),
            },
            Some(1) => FirstDecision::TeamRefused(us(1)),
            _ => FirstDecision::AccountRefused(us(1)),
        }
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

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// A script's µs as a duration (a negative one as zero).
fn duration(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}
