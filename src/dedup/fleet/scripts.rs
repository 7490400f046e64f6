//! The fleet flight's Lua scripts: each step on a key's lease, replay entry and session index
//! is one script, atomic and one round trip; all of a key's keys share its account's hash tag.

use std::sync::LazyLock;

use redis::Script;

use crate::state::quota::FIRST_DECISION_LUA;

/// `KEYS` replay, lease, live, then (optional) the first decision's quotas; `ARGV` the lease's
/// value and TTL (ms), then the decision's arguments ([`crate::state::quota::FirstQuotas::push`]).
/// `{'stored', entry, {}, age}` (how long ago, in ms, its session was last known live: stored or
/// confirmed by a recheck; -1 unknown), `{'wait', lease value, {}, 0}` (nothing decided: no quota
/// spent), or `{'lead', '', decision, 0}`:
/// the key is free, and the request's first quota decision is taken (`{}` without quotas). The
/// lease is taken unless the team's quota refused the request (`decision[1] == 1`): a refused
/// leader holds nothing that others would wait for. Prefixed with [`FIRST_DECISION_LUA`].
const ENTER: &str = r#"
local stored = redis.call('GET', KEYS[1])
if stored then
  local live = tonumber(redis.call('GET', KEYS[3]) or '')
  local age = -1
  if live then
    local t = redis.call('TIME')
    age = math.max(0, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - live)
  end
  return {'stored', stored, {}, age}
end
local holder = redis.call('GET', KEYS[2])
if holder then return {'wait', holder, {}, 0} end
local decision = {}
if KEYS[4] then decision = decide_first(4, 3) end
if decision[1] ~= 1 then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return {'lead', '', decision, 0}
"#;

/// `KEYS` live, replay: the session was just found live (a recheck): its time is now, for as
/// long as the replay entry lives.
const CONFIRM: &str = r#"
local ttl = redis.call('PTTL', KEYS[2])
if ttl <= 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], string.format('%d', now), 'PX', ttl)
return 1
"#;

/// `KEYS` lease; `ARGV` its value and TTL (ms): renewed while it is still ours.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"#;

/// `KEYS` replay, lease, session, live; `ARGV` lease value, answer, replay TTL (ms, 0: not
/// stored), channel.
const FINISH: &str = r#"
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
  redis.call('SET', KEYS[3], KEYS[1], 'PX', ttl)
  redis.call('SET', KEYS[4], string.format('%d', now), 'PX', ttl)
end
if redis.call('GET', KEYS[2]) == ARGV[1] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[2])
return 0
"#;

/// `KEYS` session: its replay entry and itself removed.
const END: &str = r#"
local entry = redis.call('GET', KEYS[1])
if entry then redis.call('DEL', entry) end
redis.call('DEL', KEYS[1])
return 0
"#;

pub(super) static ENTER_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{}{ENTER}", *FIRST_DECISION_LUA)));
pub(super) static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(RENEW));
pub(super) static FINISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FINISH));
pub(super) static CONFIRM_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CONFIRM));
pub(super) static END_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(END));
