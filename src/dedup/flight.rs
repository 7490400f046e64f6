//! In-flight coalescing, the core of the `dedup` layer (after `validate`, before the team limit):
//! one piece of work per key at a time, its outcome fanned out to every caller that asked for it.
//!
//! The first caller for a key is the leader: its work runs detached in a spawned task, so dropping
//! any caller's future (a client that disconnects, a deadline) cancels nobody else's answer. The
//! key leaves the map when the work ends, however it ends (a value, a panic, a runtime shutdown).

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::watch;

/// Whether a caller started the work or joined work already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

/// The in-flight work, keyed. Cloning shares the map.
pub struct Flights<K, V> {
    inner: Arc<Inner<K, V>>,
}

struct Inner<K, V> {
    map: DashMap<K, Flight<V>>,
    next_id: AtomicU64,
}

/// One running piece of work: how to subscribe to its outcome.
struct Flight<V> {
    /// Tells this flight from a later one for the same key, so that only its own entry is removed.
    id: u64,
    outcome: watch::Receiver<Option<V>>,
}

/// A caller's place in a flight: its role, and the way to its copy of the outcome.
pub struct Ticket<V> {
    role: Role,
    outcome: watch::Receiver<Option<V>>,
}

impl<V: Clone> Ticket<V> {
    pub fn role(&self) -> Role {
        self.role
    }

    /// The flight's outcome, or `None` when the work ended without one (it panicked, or the runtime
    /// dropped its task). Dropping this future leaves the flight untouched.
    pub async fn outcome(mut self) -> Option<V> {
        let value = self.outcome.wait_for(Option::is_some).await.ok()?;
        value.clone()
    }
}

impl<K, V> Clone for Flights<K, V> {
    fn clone(&self) -> Self {
        Flights {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> Default for Flights<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> Flights<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new() -> Self {
        Flights {
            inner: Arc::new(Inner {
                map: DashMap::new(),
                next_id: AtomicU64::new(0),
            }),
        }
    }

    /// Keys with work in flight.
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.map.is_empty()
    }

    /// Joins the flight for `key`, or leads a new one: then `work` is called once and its future
    /// spawned. Must be called within a tokio runtime.
    pub fn join_or_lead<F, Fut>(&self, key: K, work: F) -> Ticket<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (tx, outcome, id) = match self.inner.map.entry(key.clone()) {
            Entry::Occupied(flight) => {
                return Ticket {
                    role: Role::Follower,
                    outcome: flight.get().outcome.clone(),
                }
            }
            Entry::Vacant(slot) => {
                let (tx, outcome) = watch::channel(None);
                let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                slot.insert(Flight {
                    id,
                    outcome: outcome.clone(),
                });
                (tx, outcome, id)
            }
        };
        // Created before `work` runs, so that even a panic in `work` itself ends the flight.
        let landing = Landing {
            flights: Arc::clone(&self.inner),
            key,
            id,
        };
        let fut = work();
        tokio::spawn(async move {
            let value = fut.await;
            // Off the map first, then the answer: a caller that arrives in between leads anew
            // (and finds a stored replay, if there is one) instead of joining a finished flight.
            drop(landing);
            tx.send_replace(Some(value));
        });
        Ticket {
            role: Role::Leader,
            outcome,
        }
    }
}

/// Removes its flight from the map when dropped: after the work, or while unwinding a panic, or
/// when the runtime drops the task.
struct Landing<K: Eq + Hash, V> {
    flights: Arc<Inner<K, V>>,
    key: K,
    id: u64,
}

impl<K: Eq + Hash, V> Drop for Landing<K, V> {
    fn drop(&mut self) {
        self.flights
            .map
            .remove_if(&self.key, |_, flight| flight.id == self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::sync::Notify;

    use super::*;

    /// Work that counts its runs and waits for `gate` before answering `value`.
    fn held(
        runs: &Arc<AtomicUsize>,
        gate: &Arc<Notify>,
        value: u32,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = u32> + Send>> {
        let (runs, gate) = (Arc::clone(runs), Arc::clone(gate));
        move || {
            runs.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                gate.notified().await;
                value
            })
        }
    }

    #[tokio::test]
    async fn followers_share_the_leaders_outcome() {
        let flights: Flights<&str, u32> = Flights::new();
        let (runs, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let leader = flights.join_or_lead("k", held(&runs, &gate, 7));
        let followers: Vec<_> = (0..5)
            .map(|_| flights.join_or_lead("k", held(&runs, &gate, 99)))
            .collect();
        assert_eq!(leader.role(), Role::Leader);
        assert!(followers.iter().all(|t| t.role() == Role::Follower));
        assert_eq!(flights.len(), 1);
        gate.notify_one();
        assert_eq!(leader.outcome().await, Some(7));
        for follower in followers {
            assert_eq!(follower.outcome().await, Some(7));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn distinct_keys_fly_separately() {
        let flights: Flights<&str, u32> = Flights::new();
        let a = flights.join_or_lead("a", || async { 1 });
        let b = flights.join_or_lead("b", || async { 2 });
        assert_eq!((a.role(), b.role()), (Role::Leader, Role::Leader));
        assert_eq!((a.outcome().await, b.outcome().await), (Some(1), Some(2)));
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn dropped_leader_does_not_cancel_the_work() {
        let flights: Flights<&str, u32> = Flights::new();
        let (runs, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        drop(flights.join_or_lead("k", held(&runs, &gate, 7)));
        let follower = flights.join_or_lead("k", held(&runs, &gate, 99));
        assert_eq!(follower.role(), Role::Follower);
        gate.notify_one();
        assert_eq!(follower.outcome().await, Some(7));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn dropped_follower_disturbs_nobody() {
        let flights: Flights<&str, u32> = Flights::new();
        let (runs, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let leader = flights.join_or_lead("k", held(&runs, &gate, 7));
        drop(flights.join_or_lead("k", held(&runs, &gate, 99)));
        gate.notify_one();
        assert_eq!(leader.outcome().await, Some(7));
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn panicking_work_ends_the_flight_without_an_outcome() {
        let flights: Flights<&str, u32> = Flights::new();
        let gate = Arc::new(Notify::new());
        let wait = Arc::clone(&gate);
        let leader = flights.join_or_lead("k", || async move {
            wait.notified().await;
            panic!("upstream exploded")
        });
        let follower = flights.join_or_lead("k", || async { 99 });
        gate.notify_one();
        assert_eq!(leader.outcome().await, None);
        assert_eq!(follower.outcome().await, None);
        assert!(flights.is_empty());
        // The key is free again: the next caller leads.
        let next = flights.join_or_lead("k", || async { 3 });
        assert_eq!(next.role(), Role::Leader);
        assert_eq!(next.outcome().await, Some(3));
    }

    #[test]
    fn runtime_shutdown_cancels_the_flight_and_frees_the_key() {
        let flights: Flights<&str, u32> = Flights::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ticket = runtime.block_on(async {
            let ticket = flights.join_or_lead("k", std::future::pending::<u32>);
            tokio::task::yield_now().await;
            ticket
        });
        assert_eq!(flights.len(), 1);
        drop(runtime);
        assert!(flights.is_empty());
        let outcome = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(ticket.outcome());
        assert_eq!(outcome, None);
    }

    #[tokio::test]
    async fn a_key_is_led_anew_once_its_flight_has_landed() {
        let flights: Flights<&str, u32> = Flights::new();
        let (runs, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let first = flights.join_or_lead("k", || async { 1 });
        assert_eq!(first.outcome().await, Some(1));
        let second = flights.join_or_lead("k", held(&runs, &gate, 2));
        assert_eq!(second.role(), Role::Leader);
        assert_eq!(flights.len(), 1);
        gate.notify_one();
        assert_eq!(second.outcome().await, Some(2));
        assert!(flights.is_empty());
    }
}
