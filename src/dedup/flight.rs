//! In-flight coalescing, the core of the `dedup` layer (after `validate`, before the team limit):
//! one piece of work per key at a time, its outcome fanned out to every caller that asked for it.
//!
//! The first caller for a key is the leader: its work runs detached in a spawned task, so dropping
//! any caller's future (a client that disconnects, a deadline) cancels nobody else's answer. The
//! key leaves the map when the work ends, however it ends (a value, a panic, a runtime shutdown).
//! Each flight carries its leader's owner (for `dedup`, the team), which a later caller sees
//! before it waits; a caller that joins gets its own work back unused, to lead with later.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::watch;

/// The in-flight work, keyed; each flight owned by an `O`. Cloning shares the map.
pub struct Flights<K, V, O = ()> {
    inner: Arc<Inner<K, V, O>>,
}

struct Inner<K, V, O> {
    map: DashMap<K, Flight<V, O>>,
    next_id: AtomicU64,
}

/// One running piece of work: who started it and how to subscribe to its outcome.
struct Flight<V, O> {
    /// Tells this flight from a later one for the same key, so that only its own entry is removed.
    id: u64,
    owner: O,
    outcome: watch::Receiver<Option<V>>,
}

/// How a caller entered: it leads a new flight, or it joined the one already running.
pub enum Entered<V, O, F> {
    /// Its work was spawned.
    Led(Ticket<V>),
    /// The key had a flight: that flight's owner, a ticket for its outcome, and the caller's
    /// own work, not run.
    Joined {
        owner: O,
        ticket: Ticket<V>,
        work: F,
    },
}

/// A caller's place in a flight: the way to its copy of the outcome.
pub struct Ticket<V> {
    outcome: watch::Receiver<Option<V>>,
}

impl<V: Clone> Ticket<V> {
    /// The flight's outcome, or `None` when the work ended without one (it panicked, or the runtime
    /// dropped its task). Dropping this future leaves the flight untouched.
    pub async fn outcome(mut self) -> Option<V> {
        let value = self.outcome.wait_for(Option::is_some).await.ok()?;
        value.clone()
    }
}

impl<K, V, O> Clone for Flights<K, V, O> {
    fn clone(&self) -> Self {
        Flights {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V, O> Default for Flights<K, V, O>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V, O> Flights<K, V, O>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
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

    /// Joins the flight for `key`, or leads a new one owned by `owner`: then `work` is called
    /// once and its future spawned. Must be called within a tokio runtime.
    pub fn join_or_lead<F, Fut>(&self, key: K, owner: O, work: F) -> Entered<V, O, F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (tx, outcome, id) = match self.inner.map.entry(key.clone()) {
            Entry::Occupied(flight) => {
                let flight = flight.get();
                let ticket = Ticket {
                    outcome: flight.outcome.clone(),
                };
                let owner = flight.owner.clone();
                return Entered::Joined {
                    owner,
                    ticket,
                    work,
                };
            }
            Entry::Vacant(slot) => {
                let (tx, outcome) = watch::channel(None);
                let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                slot.insert(Flight {
                    id,
                    owner,
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
        Entered::Led(Ticket { outcome })
    }
}

/// Removes its flight from the map when dropped: after the work, or while unwinding a panic, or
/// when the runtime drops the task.
struct Landing<K: Eq + Hash, V, O> {
    flights: Arc<Inner<K, V, O>>,
    key: K,
    id: u64,
}

impl<K: Eq + Hash, V, O> Drop for Landing<K, V, O> {
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

    type Work = Box<dyn FnOnce() -> std::pin::Pin<Box<dyn Future<Output = u32> + Send>> + Send>;

    /// Work that counts its runs and waits for `gate` before answering `value`.
    fn held(runs: &Arc<AtomicUsize>, gate: &Arc<Notify>, value: u32) -> Work {
        let (runs, gate) = (Arc::clone(runs), Arc::clone(gate));
        Box::new(move || {
            runs.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                gate.notified().await;
                value
            })
        })
    }

    /// Work that answers `value` at once.
    fn now(value: u32) -> Work {
        Box::new(move || Box::pin(async move { value }))
    }

    /// The ticket of a caller that must have led.
    fn led<O, F>(entered: Entered<u32, O, F>) -> Ticket<u32> {
        match entered {
            Entered::Led(ticket) => ticket,
            Entered::Joined { .. } => panic!("joined where it should have led"),
        }
    }

    /// The flight's owner, the ticket and the unused work of a caller that must have joined.
    fn joined<O, F>(entered: Entered<u32, O, F>) -> (O, Ticket<u32>, F) {
        match entered {
            Entered::Joined {
                owner,
                ticket,
                work,
            } => (owner, ticket, work),
            Entered::Led(_) => panic!("led where it should have joined"),
        }
    }

    #[tokio::test]
    async fn followers_share_the_leaders_outcome() {
        let flights: Flights<&str, u32> = Flights::new();
        let (runs, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let leader = led(flights.join_or_lead("k", (), held(&runs, &gate, 7)));
        let followers: Vec<_> = (0..5)
            .map(|_| joined(flights.join_or_lead("k", (), held(&runs, &gate, 99))).1)
            .collect();
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
    async fn a_follower_sees_the_leaders_owner_and_keeps_its_own_work() {
        let flights: Flights<&str, u32, &str> = Flights::new();
        let (runs, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let leader = led(flights.join_or_lead("k", "alpha", held(&runs, &gate, 7)));
        let (owner, ticket, work) = joined(flights.join_or_lead("k", "beta", now(99)));
        assert_eq!(owner, "alpha");
        gate.notify_one();
        assert_eq!(
            (leader.outcome().await, ticket.outcome().await),
            (Some(7), Some(7))
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // The unused work leads a later flight, owned by its caller.
        let again = led(flights.join_or_lead("k", "beta", work));
        let (owner, ticket, _) = joined(flights.join_or_lead("k", "alpha", now(1)));
        assert_eq!(owner, "beta");
        assert_eq!(
            (again.outcome().await, ticket.outcome().await),
            (Some(99), Some(99))
        );
    }

    #[tokio::test]
    async fn distinct_keys_fly_separately() {
        let flights: Flights<&str, u32> = Flights::new();
        let a = led(flights.join_or_lead("a", (), now(1)));
        let b = led(flights.join_or_lead("b", (), now(2)));
        assert_eq!((a.outcome().await, b.outcome().await), (Some(1), Some(2)));
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn dropped_leader_does_not_cancel_the_work() {
        let flights: Flights<&str, u32> = Flights::new();
        let (runs, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        drop(flights.join_or_lead("k", (), held(&runs, &gate, 7)));
        let (_, follower, _) = joined(flights.join_or_lead("k", (), held(&runs, &gate, 99)));
        gate.notify_one();
        assert_eq!(follower.outcome().await, Some(7));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn dropped_follower_disturbs_nobody() {
        let flights: Flights<&str, u32> = Flights::new();
        let (runs, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        let leader = led(flights.join_or_lead("k", (), held(&runs, &gate, 7)));
        drop(flights.join_or_lead("k", (), held(&runs, &gate, 99)));
        gate.notify_one();
        assert_eq!(leader.outcome().await, Some(7));
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn panicking_work_ends_the_flight_without_an_outcome() {
        let flights: Flights<&str, u32> = Flights::new();
        let gate = Arc::new(Notify::new());
        let wait = Arc::clone(&gate);
        let leader = led(flights.join_or_lead("k", (), || async move {
            wait.notified().await;
            panic!("upstream exploded")
        }));
        let (_, follower, _) = joined(flights.join_or_lead("k", (), now(99)));
        gate.notify_one();
        assert_eq!(leader.outcome().await, None);
        assert_eq!(follower.outcome().await, None);
        assert!(flights.is_empty());
        // The key is free again: the next caller leads.
        let next = led(flights.join_or_lead("k", (), now(3)));
        assert_eq!(next.outcome().await, Some(3));
    }

    #[test]
    fn runtime_shutdown_cancels_the_flight_and_frees_the_key() {
        let flights: Flights<&str, u32> = Flights::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ticket = runtime.block_on(async {
            let ticket = led(flights.join_or_lead("k", (), std::future::pending::<u32>));
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
        let first = led(flights.join_or_lead("k", (), now(1)));
        assert_eq!(first.outcome().await, Some(1));
        let second = led(flights.join_or_lead("k", (), held(&runs, &gate, 2)));
        assert_eq!(flights.len(), 1);
        gate.notify_one();
        assert_eq!(second.outcome().await, Some(2));
        assert!(flights.is_empty());
    }
}
