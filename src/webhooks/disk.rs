//! The webhook store on local disk (`state.backend = "memory"`): redb, an embedded, crash-safe
//! key-value store (copy-on-write B-trees, checksummed, each commit fsynced before it returns),
//! in one file, `webhooks.redb`, under `webhooks.dir`. Pure Rust, maintained, and small: no
//! hand-written log and no recovery code of our own.
//!
//! Durability: a webhook is committed with an fsync (`Durability::Immediate`, redb's default)
//! before its 200, and so are dead letters, re-sends and routes. The bookkeeping of attempts —
//! `delivered` and `retry_later` — is committed *lazily* (`Durability::None`, but one in 64
//! durable): it reaches the disk with the next durable commit. A crash can only forget such a step, and a forgotten step
//! means a webhook sent once more (still at least once, same `x-gateway-delivery-id`) or retried
//! sooner; never one lost. Without it, a receiver that is down makes every retry an fsync,
//! queued in front of the fsync that acknowledges the next webhook (docs/benchmarks.md §7).
//!
//! Tables: `events` (seq → metadata JSON and raw body), `pending` (seq → attempts, next time),
//! `dead` (seq → burial JSON), `seen` (redelivery key → seq, time), `routes` (scanRef → team,
//! kept until), `counters` (the next seq).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::store::{
    Accepted, Burial, DeadLetter, Meta, NewEvent, Pending, StoreError, WebhookStore,
};

const EVENTS: TableDefinition<u64, (&str, &[u8])> = TableDefinition::new("events");
const PENDING: TableDefinition<u64, (u32, u64)> = TableDefinition::new("pending");
const DEAD: TableDefinition<u64, &str> = TableDefinition::new("dead");
const SEEN: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("seen");
const ROUTES: TableDefinition<&str, (&str, u64)> = TableDefinition::new("routes");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

/// The store file, under `webhooks.dir`.
pub const FILE: &str = "webhooks.redb";

/// The redb-backed [`WebhookStore`].
pub struct DiskStore {
    db: Database,
    /// Lazy commits so far: every [`DURABLE_EVERY`]th is durable after all.
    lazy: AtomicU64,
}

/// A lazy commit keeps the pages it frees until a durable one: during an outage without new
/// webhooks (only retries), the file would grow; one bookkeeping commit in this many is durable.
const DURABLE_EVERY: u64 = 64;

fn err(op: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError(format!("{op}: {e}"))
}

macro_rules! tx {
    ($op:literal, $e:expr) => {
        $e.map_err(|e| err($op)(e.into()))?
    };
}

impl DiskStore {
    /// Opens (or creates) the store under `dir`, creating `dir` if needed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(FILE);
        let db = Database::create(&path)
            .map_err(|e| StoreError(format!("cannot open {}: {e}", path.display())))?;
        let store = DiskStore {
            db,
            lazy: AtomicU64::new(0),
        };
        // Create every table once, so that readers never meet a missing one.
        let w = tx!("open", store.db.begin_write());
        {
            tx!("open", w.open_table(EVENTS));
            tx!("open", w.open_table(PENDING));
            tx!("open", w.open_table(DEAD));
            tx!("open", w.open_table(SEEN));
            tx!("open", w.open_table(ROUTES));
            tx!("open", w.open_table(COUNTERS));
        }
        tx!("open", w.commit());
        Ok(store)
    }
}

impl DiskStore {
    /// The durability of a bookkeeping commit (see the module docs).
    fn bookkeeping(&self) -> Durability {
        match self.lazy.fetch_add(1, Ordering::Relaxed) % DURABLE_EVERY {
            0 => Durability::Immediate,
            _ => Durability::None,
        }
    }
}

fn meta_of(json: &str) -> Result<Meta, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError(format!("corrupt event metadata: {e}")))
}

impl WebhookStore for DiskStore {
    fn accept(&self, event: &NewEvent) -> Result<Accepted, StoreError> {
        let meta =
            serde_json::to_string(&event.meta).map_err(|e| StoreError(format!("encode: {e}")))?;
        let w = tx!("accept", self.db.begin_write());
        let seq = {
            let mut seen = tx!("accept", w.open_table(SEEN));
            if tx!("accept", seen.get(&event.dedup_key[..])).is_some() {
                return Ok(Accepted::Duplicate);
            }
            let mut counters = tx!("accept", w.open_table(COUNTERS));
            let seq = tx!("accept", counters.get("next_seq")).map_or(0, |v| v.value());
            tx!("accept", counters.insert("next_seq", seq + 1));
            let received = event.meta.received_ms;
            tx!("accept", seen.insert(&event.dedup_key[..], (seq, received)));
            let mut events = tx!("accept", w.open_table(EVENTS));
            tx!(
                "accept",
                events.insert(seq, (meta.as_str(), &event.body[..]))
            );
            let mut pending = tx!("accept", w.open_table(PENDING));
            tx!("accept", pending.insert(seq, (0u32, received)));
            seq
        };
        tx!("accept", w.commit());
        Ok(Accepted::Queued(seq))
    }

    fn pending(&self) -> Result<Vec<Pending>, StoreError> {
        let r = tx!("pending", self.db.begin_read());
        let pending = tx!("pending", r.open_table(PENDING));
        let events = tx!("pending", r.open_table(EVENTS));
        let mut out = Vec::with_capacity(tx!("pending", pending.len()) as usize);
        for row in tx!("pending", pending.iter()) {
            let (seq, state) = tx!("pending", row);
            let (seq, (attempts, next_at_ms)) = (seq.value(), state.value());
            let Some(event) = tx!("pending", events.get(seq)) else {
                continue;
            };
            let meta = meta_of(event.value().0)?;
            out.push(Pending {
                seq,
                scan_ref: meta.scan_ref,
                attempts,
                next_at_ms,
                received_ms: meta.received_ms,
            });
        }
        Ok(out)
    }

    fn event(&self, seq: u64) -> Result<Option<(Meta, Bytes)>, StoreError> {
        let r = tx!("event", self.db.begin_read());
        let events = tx!("event", r.open_table(EVENTS));
        let Some(event) = tx!("event", events.get(seq)) else {
            return Ok(None);
        };
        let (meta, body) = event.value();
        Ok(Some((meta_of(meta)?, Bytes::copy_from_slice(body))))
    }

    fn delivered(&self, seq: u64) -> Result<(), StoreError> {
        let mut w = tx!("delivered", self.db.begin_write());
        w.set_durability(self.bookkeeping());
        {
            tx!(
                "delivered",
                tx!("delivered", w.open_table(PENDING)).remove(seq)
            );
            tx!(
                "delivered",
                tx!("delivered", w.open_table(EVENTS)).remove(seq)
            );
        }
        tx!("delivered", w.commit());
        Ok(())
    }

    fn retry_later(&self, seq: u64, attempts: u32, next_at_ms: u64) -> Result<(), StoreError> {
        let mut w = tx!("retry", self.db.begin_write());
        w.set_durability(self.bookkeeping());
        {
            let mut pending = tx!("retry", w.open_table(PENDING));
            tx!("retry", pending.insert(seq, (attempts, next_at_ms)));
        }
        tx!("retry", w.commit());
        Ok(())
    }

    fn bury(&self, seq: u64, burial: &Burial) -> Result<(), StoreError> {
        let json = serde_json::to_string(burial).map_err(|e| StoreError(format!("encode: {e}")))?;
        let w = tx!("bury", self.db.begin_write());
        {
            tx!("bury", tx!("bury", w.open_table(PENDING)).remove(seq));
            tx!(
                "bury",
                tx!("bury", w.open_table(DEAD)).insert(seq, json.as_str())
            );
        }
        tx!("bury", w.commit());
        Ok(())
    }

    fn dead(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let r = tx!("dead", self.db.begin_read());
        let dead = tx!("dead", r.open_table(DEAD));
        let events = tx!("dead", r.open_table(EVENTS));
        let mut out = Vec::new();
        for row in tx!("dead", dead.iter()) {
            let (seq, burial) = tx!("dead", row);
            let burial: Burial = serde_json::from_str(burial.value())
                .map_err(|e| StoreError(format!("corrupt dead letter: {e}")))?;
            let Some(event) = tx!("dead", events.get(seq.value())) else {
                continue;
            };
            out.push(DeadLetter::of(meta_of(event.value().0)?, burial));
        }
        Ok(out)
    }

    fn revive(&self, id: &str, now_ms: u64) -> Result<Option<Pending>, StoreError> {
        let w = tx!("revive", self.db.begin_write());
        let revived = {
            let mut dead = tx!("revive", w.open_table(DEAD));
            let mut events = tx!("revive", w.open_table(EVENTS));
            let mut found = None;
            for row in tx!("revive", dead.iter()) {
                let (seq, _) = tx!("revive", row);
                let seq = seq.value();
                if let Some(event) = tx!("revive", events.get(seq)) {
                    let meta = meta_of(event.value().0)?;
                    if meta.id == id {
                        let body = event.value().1.to_vec();
                        found = Some((seq, meta, body));
                        break;
                    }
                }
            }
            let Some((seq, mut meta, body)) = found else {
                return Ok(None);
            };
            // A fresh age, so that `max_age` of retries starts again from the re-send.
            meta.received_ms = now_ms;
            let json =
                serde_json::to_string(&meta).map_err(|e| StoreError(format!("encode: {e}")))?;
            tx!("revive", events.insert(seq, (json.as_str(), &body[..])));
            tx!("revive", dead.remove(seq));
            tx!(
                "revive",
                tx!("revive", w.open_table(PENDING)).insert(seq, (0u32, now_ms))
            );
            Pending {
                seq,
                scan_ref: meta.scan_ref,
                attempts: 0,
                next_at_ms: now_ms,
                received_ms: now_ms,
            }
        };
        tx!("revive", w.commit());
        Ok(Some(revived))
    }

    fn learn(&self, routes: &[(String, String, u64)]) -> Result<(), StoreError> {
        let w = tx!("learn", self.db.begin_write());
        {
            let mut table = tx!("learn", w.open_table(ROUTES));
            for (scan_ref, team, until) in routes {
                tx!(
                    "learn",
                    table.insert(scan_ref.as_str(), (team.as_str(), *until))
                );
            }
        }
        tx!("learn", w.commit());
        Ok(())
    }

    fn team_of(&self, scan_ref: &str) -> Result<Option<String>, StoreError> {
        let r = tx!("route", self.db.begin_read());
        let routes = tx!("route", r.open_table(ROUTES));
        Ok(tx!("route", routes.get(scan_ref)).map(|v| v.value().0.to_owned()))
    }

    fn prune(&self, now_ms: u64, seen_before_ms: u64) -> Result<(), StoreError> {
        let w = tx!("prune", self.db.begin_write());
        {
            let mut routes = tx!("prune", w.open_table(ROUTES));
            tx!("prune", routes.retain(|_, (_, until)| until > now_ms));
            let mut seen = tx!("prune", w.open_table(SEEN));
            tx!("prune", seen.retain(|_, (_, at)| at >= seen_before_ms));
        }
        tx!("prune", w.commit());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, scan_ref: &str, body: &'static str, key: u8) -> NewEvent {
        NewEvent {
            meta: Meta {
                id: id.into(),
                account: "main".into(),
                scan_ref: scan_ref.into(),
                event_type: "IDENTIFICATION_MANUAL_FINISHED".into(),
                content_type: Some("application/json".into()),
                received_ms: 1_000,
            },
            body: Bytes::from_static(body.as_bytes()),
            dedup_key: [key; 32],
        }
    }

    #[test]
    fn accepts_once_queues_in_order_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DiskStore::open(dir.path()).unwrap();
            assert_eq!(
                store.accept(&event("a", "s1", "{1}", 1)).unwrap(),
                Accepted::Queued(0)
            );
            assert_eq!(
                store.accept(&event("b", "s1", "{2}", 2)).unwrap(),
                Accepted::Queued(1)
            );
            assert_eq!(
                store.accept(&event("a2", "s1", "{1}", 1)).unwrap(),
                Accepted::Duplicate
            );
        }
        let store = DiskStore::open(dir.path()).unwrap();
        let pending = store.pending().unwrap();
        assert_eq!(pending.iter().map(|p| p.seq).collect::<Vec<_>>(), [0, 1]);
        let (meta, body) = store.event(0).unwrap().unwrap();
        assert_eq!((meta.id.as_str(), &body[..]), ("a", &b"{1}"[..]));
        store.delivered(0).unwrap();
        assert!(store.event(0).unwrap().is_none());
        assert_eq!(store.pending().unwrap().len(), 1);
        // Still a duplicate after delivery.
        assert_eq!(
            store.accept(&event("a3", "s1", "{1}", 1)).unwrap(),
            Accepted::Duplicate
        );
    }

    #[test]
    fn dead_letters_keep_the_body_and_come_back_on_revive() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        store.accept(&event("a", "s1", "{1}", 1)).unwrap();
        store.retry_later(0, 3, 5_000).unwrap();
        assert_eq!(store.pending().unwrap()[0].attempts, 3);
        let burial = Burial {
            reason: "expired".into(),
            team: Some("payments".into()),
            attempts: 4,
            dead_ms: 9_000,
        };
        store.bury(0, &burial).unwrap();
        assert!(store.pending().unwrap().is_empty());
        let dead = store.dead().unwrap();
        assert_eq!(
            (dead[0].id.as_str(), dead[0].reason.as_str()),
            ("a", "expired")
        );
        assert!(store.revive("nope", 10_000).unwrap().is_none());
        assert_eq!(store.revive("a", 10_000).unwrap().unwrap().seq, 0);
        assert!(store.dead().unwrap().is_empty());
        let pending = store.pending().unwrap();
        assert_eq!((pending[0].attempts, pending[0].received_ms), (0, 10_000));
        assert_eq!(&store.event(0).unwrap().unwrap().1[..], b"{1}");
    }

    #[test]
    fn routes_are_remembered_until_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = DiskStore::open(dir.path()).unwrap();
        store
            .learn(&[
                ("s1".into(), "payments".into(), 100),
                ("s2".into(), "growth".into(), 300),
            ])
            .unwrap();
        assert_eq!(store.team_of("s1").unwrap().as_deref(), Some("payments"));
        store.prune(200, 0).unwrap();
        assert_eq!(store.team_of("s1").unwrap(), None);
        assert_eq!(store.team_of("s2").unwrap().as_deref(), Some("growth"));
    }
}
