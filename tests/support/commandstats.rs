//! What a test's own `redis-server` ran (`INFO commandstats`), to count the round trips of a
//! request: the commands a client sent, and those its scripts ran inside Redis.

use std::collections::BTreeMap;

/// The commands Redis ran since its counters were last reset, by name (`INFO commandstats`:
/// the commands a script runs inside Redis are counted too), asked on `conn`, the test's own
/// connection opened before the reset (a new one would add its handshake). The test's own
/// `INFO` and `CONFIG RESETSTAT` are left out.
pub fn commands(conn: &mut redis::Connection) -> BTreeMap<String, u64> {
    let text: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    text.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(name, _)| !name.starts_with("info") && !name.starts_with("config"))
        .collect()
}

/// Resets the counters [`commands`] reads.
pub fn reset_commands(conn: &mut redis::Connection) {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query::<()>(conn)
        .unwrap();
}

/// `(name, calls)` pairs as [`commands`] returns them.
pub fn counted(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}
