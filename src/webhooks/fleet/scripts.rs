//! The fleet queue's Lua scripts: each step that touches several keys is one script, so that
//! it is atomic and one round trip. Key names are built from the key base inside the scripts
//! (every key shares the `{webhooks}` hash tag).

use std::sync::LazyLock;

use redis::Script;

/// Stores a webhook unless seen: the redelivery key, the seq, the event hash, the stream entry
/// and the lane, together. KEYS: seen, seq counter, queue. ARGV: seen TTL (ms), metadata, body,
/// due time, scanRef, key base, delivery id.
const ACCEPT_LUA: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return -1 end
local seq = redis.call('INCR', KEYS[2])
local entry = redis.call('XADD', KEYS[3], '*', 'seq', seq)
redis.call('HSET', ARGV[6] .. 'ev:' .. seq, 'meta', ARGV[2], 'body', ARGV[3], 'attempts', 0,
  'next', ARGV[4], 'entry', entry, 'lane', ARGV[5], 'id', ARGV[7])
redis.call('ZADD', ARGV[6] .. 'lane:' .. ARGV[5], seq, seq)
return seq
"#;

/// What claimed entries hold, as `{seq, metadata, attempts, due}` each; an entry whose webhook
/// is no longer queued under it (delivered, buried, re-sent under a new entry) is acknowledged
/// and dropped. Shared by the two scripts that claim.
const LOAD: &str = r#"
local function load(base, queue, group, list)
  local out = {}
  for i = 1, #list, 2 do
    local entry, seq = list[i], list[i + 1]
    local ev = redis.call('HMGET', base .. 'ev:' .. seq, 'meta', 'attempts', 'next', 'entry')
    if ev[1] and ev[4] == entry then
      out[#out + 1] = {tonumber(seq), ev[1], tonumber(ev[2]), tonumber(ev[3])}
    else
      redis.call('XACK', queue, group, entry)
      redis.call('XDEL', queue, entry)
    end
  end
  return out
end
"#;

/// Entries handed out by the group (KEYS: queue; ARGV: key base, group, entry/seq pairs).
pub(super) static CLAIMED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LOAD}\nreturn load(ARGV[1], KEYS[1], ARGV[2], {{unpack(ARGV, 3)}})"
    ))
});

/// Takes over entries idle longer than the reclaim time (KEYS: queue; ARGV: key base, group,
/// this consumer, min idle ms, count).
pub(super) static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{LOAD}
local got = redis.call('XAUTOCLAIM', KEYS[1], ARGV[2], ARGV[3], ARGV[4], '0-0', 'COUNT', ARGV[5])
local list = {{}}
for _, e in ipairs(got[2]) do
  if e and e[2] then
    for j = 1, #e[2], 2 do
      if e[2][j] == 'seq' then list[#list + 1] = e[1]; list[#list + 1] = e[2][j + 1] end
    end
  end
end
return load(ARGV[1], KEYS[1], ARGV[2], list)"#
    ))
});

/// Sets the idle time of this consumer's claims on the given seqs (0: renewed; past the reclaim
/// time: left to the others); returns the seqs no longer its own (taken over, or settled
/// elsewhere). KEYS: queue; ARGV: key base, group, this consumer, idle (ms), seqs.
const KEEP_LUA: &str = r#"
local lost = {}
for i = 5, #ARGV do
  local entry = redis.call('HGET', ARGV[1] .. 'ev:' .. ARGV[i], 'entry')
  local p = entry and redis.call('XPENDING', KEYS[1], ARGV[2], entry, entry, 1)[1]
  if p and p[2] == ARGV[3] then
    redis.call('XCLAIM', KEYS[1], ARGV[2], ARGV[3], 0, entry, 'IDLE', ARGV[4], 'JUSTID')
  else
    lost[#lost + 1] = tonumber(ARGV[i])
  end
end
return lost
"#;

/// Ends a delivery: off the stream and its lane; then either gone (delivered: ARGV[4] empty) or
/// a dead letter (ARGV[4] the burial). KEYS: queue; ARGV: key base, seq, group, burial.
const SETTLE_LUA: &str = r#"
local ev = ARGV[1] .. 'ev:' .. ARGV[2]
local f = redis.call('HMGET', ev, 'entry', 'lane', 'id')
if not f[1] then return 0 end
redis.call('XACK', KEYS[1], ARGV[3], f[1])
redis.call('XDEL', KEYS[1], f[1])
redis.call('ZREM', ARGV[1] .. 'lane:' .. f[2], ARGV[2])
if ARGV[4] == '' then
  redis.call('DEL', ev)
else
  redis.call('HDEL', ev, 'entry')
  redis.call('HSET', ev, 'burial', ARGV[4])
  redis.call('ZADD', ARGV[1] .. 'dead', ARGV[2], ARGV[2])
  redis.call('HSET', ARGV[1] .. 'dead:ids', f[3], ARGV[2])
end
return 1
"#;

/// A failed attempt's count and next time, while the webhook is still queued. KEYS: event.
const RETRY_LUA: &str = r#"
if redis.call('HEXISTS', KEYS[1], 'entry') == 0 then return 0 end
redis.call('HSET', KEYS[1], 'attempts', ARGV[1], 'next', ARGV[2])
return 1
"#;

/// A dead letter queued again, under a new entry, with fresh metadata. KEYS: queue; ARGV: key
/// base, seq, metadata, due time, delivery id.
const REVIVE_LUA: &str = r#"
local ev = ARGV[1] .. 'ev:' .. ARGV[2]
if redis.call('ZREM', ARGV[1] .. 'dead', ARGV[2]) == 0 then return 0 end
redis.call('HDEL', ARGV[1] .. 'dead:ids', ARGV[5])
local entry = redis.call('XADD', KEYS[1], '*', 'seq', ARGV[2])
local lane = redis.call('HGET', ev, 'lane')
redis.call('HDEL', ev, 'burial')
redis.call('HSET', ev, 'meta', ARGV[3], 'attempts', 0, 'next', ARGV[4], 'entry', entry)
redis.call('ZADD', ARGV[1] .. 'lane:' .. lane, ARGV[2], ARGV[2])
return 1
"#;

/// The dead letters, oldest first, as `{metadata, burial}`. KEYS: dead; ARGV: key base.
const DEAD_LUA: &str = r#"
local out = {}
for _, seq in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[1] .. 'ev:' .. seq, 'meta', 'burial')
  if f[1] and f[2] then out[#out + 1] = {f[1], f[2]} end
end
return out
"#;

pub(super) static ACCEPT: LazyLock<Script> = LazyLock::new(|| Script::new(ACCEPT_LUA));
pub(super) static KEEP: LazyLock<Script> = LazyLock::new(|| Script::new(KEEP_LUA));
pub(super) static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_LUA));
pub(super) static RETRY: LazyLock<Script> = LazyLock::new(|| Script::new(RETRY_LUA));
pub(super) static REVIVE: LazyLock<Script> = LazyLock::new(|| Script::new(REVIVE_LUA));
pub(super) static DEAD: LazyLock<Script> = LazyLock::new(|| Script::new(DEAD_LUA));
