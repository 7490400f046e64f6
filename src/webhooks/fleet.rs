//! The webhook queue of a fleet (`state.backend = "redis"`): any replica accepts a webhook, any
//! replica delivers it, and a replica's death loses none.
//!
//! - **Queue.** A Redis Stream, `{webhooks}:wh:queue`, read by one consumer group, `delivery`,
//!   in which each gateway process is a consumer of its own name. A webhook is stored (its
//!   metadata and raw body in a hash, `wh:ev:{seq}`), marked seen (the redelivery key, kept
//!   `webhooks.max_age`) and appended to the stream in one script, before its 200. The group
//!   hands each entry to one replica ([`FleetStore::feed`]: a blocking `XREADGROUP` on a
//!   connection of its own), which schedules it as the single-process queue does; the entry
//!   stays in that consumer's pending list until its delivery is settled (`XACK`, then `XDEL`).
//! - **A replica's death.** Every `webhooks.reclaim_after / 3` a replica renews its claims
//!   (`XCLAIM … JUSTID` of the entries it holds, which resets their idle time) and takes over
//!   entries idle for longer than `webhooks.reclaim_after` (`XAUTOCLAIM`): those of a replica
//!   that stopped renewing. A delivery in flight when its replica died is sent again: at least
//!   once, with the same `x-gateway-delivery-id`.
//! - **Order per scanRef.** Each scanRef's undelivered webhooks are a sorted set
//!   (`wh:lane:{scanRef}`, by seq); a replica delivers a webhook only when it is its lane's
//!   first, and otherwise looks again after [`ORDER_WAIT`]: the one before it is being
//!   delivered by another replica, or waits to be taken over from a dead one.
//! - **Routes.** The scanRef→team map is one key per scanRef (`wh:route:{scanRef}`), expiring
//!   at its time (`PXAT`), so any replica routes a session any replica relayed.
//! - **Dead letters.** A sorted set of seqs (`wh:dead`) and an id→seq hash (`wh:dead:ids`); the
//!   hash of a dead webhook keeps its body for a re-send.
//!
//! All keys carry the hash tag `{webhooks}` after `state.key_prefix`, so that each script's keys
//! share one Cluster slot. Durability is Redis's: with `appendonly yes` (and `appendfsync
//! always` for no loss at all) an acknowledged webhook survives a Redis restart.
//!
//! The [`WebhookStore`] calls block (the trait's contract: the queue calls them on the blocking
//! pool) on the runtime they were created in; [`FleetStore::feed`] is async.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::streams::StreamReadReply;
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};

use super::delivery::lock;
use super::schedule::Schedule;
use super::store::{
    Accepted, Burial, DeadLetter, Meta, NewEvent, Pending, StoreError, WebhookStore,
};
use crate::state::{Op, SharedState, StateError};

mod scripts;

/// The consumer group every replica reads the queue in.
const GROUP: &str = "delivery";

/// How long a webhook waits before looking again whether the one before it in its lane (held by
/// another replica) is settled.
pub const ORDER_WAIT: Duration = Duration::from_millis(200);

/// How many entries one read or take-over hands out at most.
const BATCH: usize = 64;

/// How long a consumer with nothing pending stays in the group after its last read.
const FORGET_CONSUMER_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The webhook store and delivery claims of a fleet; see the module docs.
pub struct FleetStore {
    state: SharedState,
    /// `{prefix}{webhooks}:wh:`: every key of the queue starts with it.
    base: String,
    /// This process's consumer name in the group.
    me: String,
    max_age: Duration,
    reclaim_after: Duration,
    runtime: Handle,
}

fn store_error(e: StateError) -> StoreError {
    StoreError(e.to_string())
}

impl FleetStore {
    /// The queue on `state`; needs a tokio runtime (the blocking calls run on it).
    pub fn new(state: &SharedState, max_age: Duration, reclaim_after: Duration) -> Self {
        FleetStore {
            state: state.clone(),
            base: state.key("webhooks", "wh:"),
            me: uuid::Uuid::new_v4().to_string(),
            max_age,
            reclaim_after,
            runtime: Handle::current(),
        }
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.base)
    }

    /// One operation off the request path, blocking the calling (blocking-pool) thread.
    fn call<T, F>(&self, call: impl FnOnce(ConnectionManager) -> F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.runtime
            .block_on(self.state.run_slow(Op::Webhook, call))
            .map_err(store_error)
    }

    /// Feeds `schedule` with the deliveries the group hands this replica, and keeps its claims
    /// alive, until `stop` turns true.
    pub async fn feed(
        self: Arc<Self>,
        schedule: Arc<Mutex<Schedule>>,
        wake: Arc<Notify>,
        mut stop: watch::Receiver<bool>,
    ) {
        let every = self.reclaim_after / 3;
        let mut conn = None;
        let mut next_care = tokio::time::Instant::now();
        loop {
            let mut claimed = Vec::new();
            let mut failed = false;
            if tokio::time::Instant::now() >= next_care {
                match self.care(&schedule).await {
                    Ok(taken) => claimed.extend(taken),
                    Err(_) => failed = true,
                }
                next_care = tokio::time::Instant::now() + every;
            }
            if conn.is_none() {
                conn = self.state.dedicated().ok();
            }
            if let (Some(c), false) = (&conn, failed) {
                let wait = every.min(Duration::from_secs(2));
                tokio::select! {
                    read = self.read_new(c, wait) => match read {
                        Ok(new) => claimed.extend(new),
                        Err(_) => failed = true,
                    },
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            if !claimed.is_empty() {
                let mut schedule = lock(&schedule);
                for p in claimed {
                    schedule.add(p);
                }
                drop(schedule);
                wake.notify_one();
            }
            if failed || conn.is_none() {
                // Redis down: the client logs it once and probes; look again in a second.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
        }
        // Stopping: what this replica holds is left to the others at once (its claims made to
        // look idle past the reclaim time), rather than after `webhooks.reclaim_after`.
        let _ = self.keep(&schedule, self.reclaim_after * 2).await;
    }

    /// Renews this replica's claims (forgetting those it lost) and takes over a dead replica's.
    async fn care(&self, schedule: &Mutex<Schedule>) -> Result<Vec<Pending>, StateError> {
        self.keep(schedule, Duration::ZERO).await?;
        self.take_over().await
    }

    /// Sets the idle time of this replica's claims to `idle` (zero: renewed), forgetting those
    /// it lost.
    async fn keep(&self, schedule: &Mutex<Schedule>, idle: Duration) -> Result<(), StateError> {
        let held = lock(schedule).seqs();
        if !held.is_empty() {
            let mut invocation = scripts::KEEP.key(self.key("queue"));
            invocation
                .arg(&self.base)
                .arg(GROUP)
                .arg(&self.me)
                .arg(idle.as_millis() as u64)
                .arg(&held);
            let all = held.clone();
            let call = |mut conn: ConnectionManager| async move {
                match invocation.invoke_async::<Vec<u64>>(&mut conn).await {
                    // Redis lost the group (restarted empty): nothing is held any more.
                    Err(e) if e.code() == Some("NOGROUP") => Ok(all),
                    other => other,
                }
            };
            let lost = self.state.run_slow(Op::Claim, call).await?;
            let mut schedule = lock(schedule);
            for seq in lost {
                schedule.finished(seq);
            }
        }
        Ok(())
    }

    /// Takes over the deliveries of replicas that stopped renewing their claims.
    async fn take_over(&self) -> Result<Vec<Pending>, StateError> {
        let mut invocation = scripts::TAKE_OVER.key(self.key("queue"));
        invocation
            .arg(&self.base)
            .arg(GROUP)
            .arg(&self.me)
            .arg(self.reclaim_after.as_millis() as u64)
            .arg(BATCH);
        let call = |mut conn: ConnectionManager| async move {
            match invocation.invoke_async::<Vec<Loaded>>(&mut conn).await {
                Err(e) if e.code() == Some("NOGROUP") => Ok(Vec::new()),
                other => other,
            }
        };
        let taken = self.state.run_slow(Op::Claim, call).await?;
        Ok(taken.into_iter().map(Loaded::pending).collect())
    }

    /// New entries for this replica, waiting up to `wait` for one (on `conn`, its own).
    async fn read_new(
        &self,
        conn: &ConnectionManager,
        wait: Duration,
    ) -> Result<Vec<Pending>, StateError> {
        let queue = self.key("queue");
        let (base, me) = (self.base.clone(), self.me.clone());
        let call = |mut conn: ConnectionManager| async move {
            let read = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&me)
                .arg("COUNT")
                .arg(BATCH)
                .arg("BLOCK")
                .arg(wait.as_millis() as u64)
                .arg("STREAMS")
                .arg(&queue)
                .arg(">")
                .query_async::<Option<StreamReadReply>>(&mut conn)
                .await;
            let reply = match read {
                // A Redis that lost its data (restarted empty), or a first start: the group
                // from the stream's start.
                Err(e) if e.code() == Some("NOGROUP") => {
                    create_group(&mut conn, &queue).await?;
                    return Ok(Vec::new());
                }
                other => other?,
            };
            let pairs: Vec<(String, u64)> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .filter_map(|id| Some((id.get::<u64>("seq")?, id.id)))
                .map(|(seq, id)| (id, seq))
                .collect();
            if pairs.is_empty() {
                return Ok(Vec::new());
            }
            let mut invocation = scripts::CLAIMED.key(&queue);
            invocation.arg(&base).arg(GROUP);
            for (entry, seq) in &pairs {
                invocation.arg(entry).arg(seq);
            }
            invocation.invoke_async::<Vec<Loaded>>(&mut conn).await
        };
        let timeout = wait + self.reclaim_after.min(Duration::from_secs(2));
        let loaded = self.state.run_on(Op::Claim, conn, timeout, call).await?;
        Ok(loaded.into_iter().map(Loaded::pending).collect())
    }

    /// Whether `seq` is the first undelivered webhook of `scan_ref` in the whole fleet.
    pub async fn is_next(&self, seq: u64, scan_ref: &str) -> Result<bool, StoreError> {
        let lane = self.key(&format!("lane:{scan_ref}"));
        let call = |mut conn: ConnectionManager| async move {
            redis::cmd("ZRANGE")
                .arg(&lane)
                .arg(0)
                .arg(0)
                .query_async::<Vec<u64>>(&mut conn)
                .await
        };
        let first = self
            .state
            .run_slow(Op::Webhook, call)
            .await
            .map_err(store_error)?;
        // An empty lane: settled meanwhile; the attempt finds it gone.
        Ok(first.first().is_none_or(|&s| s == seq))
    }

    fn settle(&self, seq: u64, burial: &str) -> Result<(), StoreError> {
        let mut invocation = scripts::SETTLE.key(self.key("queue"));
        invocation.arg(&self.base).arg(seq).arg(GROUP).arg(burial);
        self.call(|mut conn| async move { invocation.invoke_async::<u8>(&mut conn).await })
            .map(drop)
    }
}

/// A claimed entry as the scripts return it.
#[derive(Debug)]
struct Loaded(u64, String, u32, u64);

impl redis::FromRedisValue for Loaded {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let (seq, meta, attempts, next) = redis::from_redis_value(v)?;
        Ok(Loaded(seq, meta, attempts, next))
    }
}

impl Loaded {
    fn pending(self) -> Pending {
        let Loaded(seq, meta, attempts, next_at_ms) = self;
        // Metadata that does not parse still gets its attempt, which reports it.
        let meta: Option<Meta> = serde_json::from_str(&meta).ok();
        Pending {
            seq,
            scan_ref: meta
                .as_ref()
                .map(|m| m.scan_ref.clone())
                .unwrap_or_default(),
            attempts,
            next_at_ms,
            received_ms: meta.map_or(next_at_ms, |m| m.received_ms),
        }
    }
}

/// The consumer group, from the stream's first entry (created with the stream if need be).
async fn create_group(conn: &mut ConnectionManager, queue: &str) -> redis::RedisResult<()> {
    let created = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(queue)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async::<()>(conn)
        .await;
    match created {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError(format!("encode: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError(format!("corrupt webhook record: {e}")))
}

impl WebhookStore for FleetStore {
    fn accept(&self, event: &NewEvent) -> Result<Accepted, StoreError> {
        let meta = encode(&event.meta)?;
        let seen = self.key(&format!("seen:{}", hex::encode(event.dedup_key)));
        let mut invocation = scripts::ACCEPT.key(seen);
        invocation
            .key(self.key("seq"))
            .key(self.key("queue"))
            .arg((self.max_age.as_millis() as u64).max(1))
            .arg(meta)
            .arg(&event.body[..])
            .arg(event.meta.received_ms)
            .arg(&event.meta.scan_ref)
            .arg(&self.base)
            .arg(&event.meta.id);
        let seq =
            self.call(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })?;
        Ok(match u64::try_from(seq) {
            Ok(seq) => Accepted::Queued(seq),
            Err(_) => Accepted::Duplicate,
        })
    }

    /// None: a fleet's deliveries are handed out by the group ([`FleetStore::feed`]), also
    /// those a previous process left unsettled (taken over once idle).
    fn pending(&self) -> Result<Vec<Pending>, StoreError> {
        Ok(Vec::new())
    }

    fn event(&self, seq: u64) -> Result<Option<(Meta, Bytes)>, StoreError> {
        let ev = self.key(&format!("ev:{seq}"));
        let (meta, body): (Option<String>, Option<Vec<u8>>) = self.call(|mut conn| async move {
            redis::cmd("HMGET")
                .arg(&ev)
                .arg("meta")
                .arg("body")
                .query_async(&mut conn)
                .await
        })?;
        match (meta, body) {
            (Some(meta), Some(body)) => Ok(Some((decode(&meta)?, Bytes::from(body)))),
            _ => Ok(None),
        }
    }

    fn delivered(&self, seq: u64) -> Result<(), StoreError> {
        self.settle(seq, "")
    }

    fn retry_later(&self, seq: u64, attempts: u32, next_at_ms: u64) -> Result<(), StoreError> {
        let mut invocation = scripts::RETRY.key(self.key(&format!("ev:{seq}")));
        invocation.arg(attempts).arg(next_at_ms);
        self.call(|mut conn| async move { invocation.invoke_async::<u8>(&mut conn).await })
            .map(drop)
    }

    fn bury(&self, seq: u64, burial: &Burial) -> Result<(), StoreError> {
        self.settle(seq, &encode(burial)?)
    }

    fn dead(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut invocation = scripts::DEAD.key(self.key("dead"));
        invocation.arg(&self.base);
        let rows: Vec<(String, String)> =
            self.call(|mut conn| async move { invocation.invoke_async(&mut conn).await })?;
        rows.iter()
            .map(|(meta, burial)| Ok(DeadLetter::of(decode(meta)?, decode(burial)?)))
            .collect()
    }

    fn revive(&self, id: &str, now_ms: u64) -> Result<Option<Pending>, StoreError> {
        let ids = self.key("dead:ids");
        let base = self.base.clone();
        let id_owned = id.to_owned();
        let found: Option<(u64, Option<String>)> = self.call(|mut conn| async move {
            let seq: Option<u64> = redis::cmd("HGET")
                .arg(&ids)
                .arg(&id_owned)
                .query_async(&mut conn)
                .await?;
            let Some(seq) = seq else { return Ok(None) };
            let meta: Option<String> = redis::cmd("HGET")
                .arg(format!("{base}ev:{seq}"))
                .arg("meta")
                .query_async(&mut conn)
                .await?;
            Ok(Some((seq, meta)))
        })?;
        let Some((seq, Some(meta))) = found else {
            return Ok(None);
        };
        let mut meta: Meta = decode(&meta)?;
        // A fresh age, so that `max_age` of retries starts again from the re-send.
        meta.received_ms = now_ms;
        let mut invocation = scripts::REVIVE.key(self.key("queue"));
        invocation
            .arg(&self.base)
            .arg(seq)
            .arg(encode(&meta)?)
            .arg(now_ms)
            .arg(id);
        let revived =
            self.call(|mut conn| async move { invocation.invoke_async::<u8>(&mut conn).await })?;
        Ok((revived == 1).then_some(Pending {
            seq,
            scan_ref: meta.scan_ref,
            attempts: 0,
            next_at_ms: now_ms,
            received_ms: now_ms,
        }))
    }

    fn learn(&self, routes: &[(String, String, u64)]) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for (scan_ref, team, until) in routes {
            pipe.cmd("SET")
                .arg(self.key(&format!("route:{scan_ref}")))
                .arg(team)
                .arg("PXAT")
                .arg(*until)
                .ignore();
        }
        self.call(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
    }

    fn team_of(&self, scan_ref: &str) -> Result<Option<String>, StoreError> {
        let route = self.key(&format!("route:{scan_ref}"));
        self.call(
            |mut conn| async move { redis::cmd("GET").arg(&route).query_async(&mut conn).await },
        )
    }

    /// Routes and redelivery keys expire on their own in Redis; what is left is the group's
    /// consumers of processes long gone (with nothing pending: a dead one's entries were taken
    /// over).
    fn prune(&self, _now_ms: u64, _seen_before_ms: u64) -> Result<(), StoreError> {
        let queue = self.key("queue");
        let forget_after = FORGET_CONSUMER_AFTER.as_millis() as usize;
        self.call(|mut conn| async move {
            let info: redis::RedisResult<redis::streams::StreamInfoConsumersReply> =
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&queue)
                    .arg(GROUP)
                    .query_async(&mut conn)
                    .await;
            let Ok(info) = info else { return Ok(()) };
            for consumer in info.consumers {
                if consumer.pending == 0 && consumer.idle > forget_after {
                    redis::cmd("XGROUP")
                        .arg("DELCONSUMER")
                        .arg(&queue)
                        .arg(GROUP)
                        .arg(&consumer.name)
                        .query_async::<()>(&mut conn)
                        .await?;
                }
            }
            Ok(())
        })
    }
}
