//! The proxy listener's connection slots (`listen.max_connections`), and what happens when they
//! are all taken: the connection idle for longest is asked to close, and the new one gets its
//! slot (what nginx does with its "reusable" connections).
//!
//! A connection is *idle* while no byte of a request is on its way: from accept to the first
//! byte of its first head, between a response and the first byte of the next head, and while it
//! lingers after a refusal (counted as idle since ever, so that it goes first). From the first
//! byte of a head until its response is written it is *busy*, and is never asked to close.
//!
//! Each connection's state is one atomic word, written by the connection at each change (two
//! uncontended stores per request) and read by the listener only when it is full: it then scans
//! every connection once for the oldest idle stamp. The connection learns it was evicted from
//! that word and a waker, polled where it waits for its next head.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// While every slot is taken and no connection is idle, the listener looks again this often for
/// one that went idle (its keep-alive timeout would otherwise be the first to free a slot).
const LOOK_AGAIN: Duration = Duration::from_millis(50);

/// A connection's state: busy, evicted, or idle since a stamp (`IDLE_SINCE_EVER` ..).
const BUSY: u64 = 0;
const EVICTED: u64 = u64::MAX;
/// The stamp of a lingering connection: older than any idle one.
const IDLE_SINCE_EVER: u64 = 1;

/// The slots of one listener.
pub struct Slots {
    permits: Arc<Semaphore>,
    count: usize,
    registry: Arc<Registry>,
}

struct Registry {
    /// Stamps are nanoseconds from here (plus 2).
    base: Instant,
    next_id: AtomicU64,
    connections: Mutex<HashMap<u64, Arc<Slot>>>,
}

/// One connection's state, shared by the connection and the listener.
pub struct Slot {
    state: AtomicU64,
    /// Woken when the connection is evicted.
    waker: Mutex<Option<Waker>>,
    base: Instant,
}

/// A connection's slot: its place under the limit and its entry in the registry, both given
/// back when the ticket is dropped (with the socket, once it is closed).
pub struct Ticket {
    _permit: OwnedSemaphorePermit,
    id: u64,
    slot: Arc<Slot>,
    registry: Arc<Registry>,
}

impl Slots {
    pub fn new(count: usize) -> Self {
        Slots {
            permits: Arc::new(Semaphore::new(count)),
            count,
            registry: Arc::new(Registry {
                base: Instant::now(),
                next_id: AtomicU64::new(0),
                connections: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// A slot for a connection just accepted: a free one at once; else the longest-idle
    /// connection is evicted and its slot taken once it has closed. While no connection is idle,
    /// waits for one to close or go idle.
    pub async fn acquire(&self) -> Ticket {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.acquire_when_full().await,
        };
        self.register(permit)
    }

    async fn acquire_when_full(&self) -> OwnedSemaphorePermit {
        loop {
            let evicted = self.registry.evict_longest_idle();
            let permit = self.permits.clone().acquire_owned();
            let permit = if evicted {
                // The evicted connection gives its slot back as it closes.
                Some(permit.await)
            } else {
                tokio::time::timeout(LOOK_AGAIN, permit).await.ok()
            };
            if let Some(permit) = permit {
                return permit.expect("the semaphore is never closed");
            }
        }
    }

    fn register(&self, permit: OwnedSemaphorePermit) -> Ticket {
        let registry = self.registry.clone();
        let slot = Arc::new(Slot {
            state: AtomicU64::new(BUSY),
            waker: Mutex::new(None),
            base: registry.base,
        });
        slot.idle(Instant::now());
        let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&registry.connections).insert(id, slot.clone());
        Ticket {
            _permit: permit,
            id,
            slot,
            registry,
        }
    }

    /// Resolves once every slot is free: every connection closed.
    pub async fn all_free(&self) {
        let all = u32::try_from(self.count).unwrap_or(u32::MAX);
        let _ = self.permits.acquire_many(all).await;
    }
}

impl Registry {
    /// Evicts the connection idle for longest; `false` when none is idle.
    fn evict_longest_idle(&self) -> bool {
        let connections = lock(&self.connections);
        // A connection may turn busy between the scan and the eviction: then scan again.
        loop {
            let oldest = connections
                .values()
                .map(|slot| (slot.state.load(Ordering::Acquire), slot))
                .filter(|(state, _)| *state != BUSY && *state != EVICTED)
                .min_by_key(|(state, _)| *state);
            let Some((stamp, slot)) = oldest else {
                return false;
            };
            if slot.evict_if(stamp) {
                return true;
            }
        }
    }
}

impl Ticket {
    /// The connection's state, for the code that serves it.
    pub fn slot(&self) -> &Arc<Slot> {
        &self.slot
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        lock(&self.registry.connections).remove(&self.id);
    }
}

impl Slot {
    /// The connection is idle from `since`: no byte of a request is on its way.
    pub fn idle(&self, since: Instant) {
        let nanos = since.saturating_duration_since(self.base).as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX - 3) + 2;
        self.set(stamp);
    }

    /// The connection lingers after a refusal: it is the first to be evicted.
    pub fn lingering(&self) {
        self.set(IDLE_SINCE_EVER);
    }

    /// A request is on its way; `false` when the connection was evicted (it closes).
    pub fn busy(&self) -> bool {
        self.set(BUSY)
    }

    /// When the connection went idle; `None` while it is busy or once it is evicted.
    pub fn idle_since(&self) -> Option<Instant> {
        match self.state.load(Ordering::Acquire) {
            BUSY | EVICTED => None,
            IDLE_SINCE_EVER => Some(self.base),
            stamp => Some(self.base + Duration::from_nanos(stamp - 2)),
        }
    }

    pub fn is_evicted(&self) -> bool {
        self.state.load(Ordering::Acquire) == EVICTED
    }

    /// Ready once the connection is evicted. `registered` is the waker this connection last
    /// left here: while the task's waker is the same, polling is one atomic load.
    pub fn poll_evicted(&self, cx: &mut Context<'_>, registered: &mut Option<Waker>) -> Poll<()> {
        if self.is_evicted() {
            return Poll::Ready(());
        }
        if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        *registered = Some(cx.waker().clone());
        *lock(&self.waker) = Some(cx.waker().clone());
        // Evicted between the first look and the waker being left: it would not be woken.
        if self.is_evicted() {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Resolves once the connection is evicted.
    pub async fn evicted(&self) {
        let mut registered = None;
        std::future::poll_fn(|cx| self.poll_evicted(cx, &mut registered)).await;
    }

    /// Sets the state unless the connection was evicted; `false` when it was.
    fn set(&self, to: u64) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != EVICTED).then_some(to)
            })
            .is_ok()
    }

    /// Evicts the connection if it is still idle since `stamp`, and wakes it.
    fn evict_if(&self, stamp: u64) -> bool {
        let evicted = self
            .state
            .compare_exchange(stamp, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if evicted {
            if let Some(waker) = lock(&self.waker).take() {
                waker.wake();
            }
        }
        evicted
    }
}

/// A lock that a panic elsewhere does not poison for good: the data (states, wakers) stays
/// consistent whatever panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn evicts_the_connection_idle_for_longest_and_never_a_busy_one() {
        let slots = Slots::new(3);
        let (oldest, busy, newer) = (
            slots.acquire().await,
            slots.acquire().await,
            slots.acquire().await,
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(busy.slot().busy());
        newer.slot().idle(Instant::now());
        let mut waiting = Box::pin(slots.acquire());
        assert!(futures_poll(&mut waiting).is_pending());
        assert!(oldest.slot().is_evicted());
        assert!(!newer.slot().is_evicted() && !busy.slot().is_evicted());
        assert!(!oldest.slot().busy(), "an evicted connection stays evicted");
        drop(oldest);
        let fourth = waiting.await;
        assert!(fourth.slot().idle_since().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn evicts_a_lingering_connection_before_an_idle_one() {
        let slots = Slots::new(2);
        let (idle, lingering) = (slots.acquire().await, slots.acquire().await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(lingering.slot().busy());
        lingering.slot().lingering();
        let mut waiting = Box::pin(slots.acquire());
        assert!(futures_poll(&mut waiting).is_pending());
        assert!(lingering.slot().is_evicted());
        assert!(!idle.slot().is_evicted());
    }

    #[tokio::test(start_paused = true)]
    async fn waits_while_every_connection_is_busy_then_evicts_the_first_to_go_idle() {
        let slots = Slots::new(1);
        let only = slots.acquire().await;
        assert!(only.slot().busy());
        let waiting =
            tokio::spawn(async move { slots.acquire().await.slot().idle_since().is_some() });
        tokio::task::yield_now().await;
        tokio::time::advance(LOOK_AGAIN * 3).await;
        tokio::task::yield_now().await;
        assert!(!only.slot().is_evicted());
        only.slot().idle(Instant::now());
        only.slot().evicted().await;
        drop(only);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn wakes_the_connection_it_evicts() {
        let slots = Slots::new(1);
        let ticket = slots.acquire().await;
        let slot = ticket.slot().clone();
        let waits = tokio::spawn(async move { slot.evicted().await });
        tokio::task::yield_now().await;
        assert!(slots.registry.evict_longest_idle());
        waits.await.unwrap();
    }

    /// Polls a future once, without a waker to speak of.
    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Poll<F::Output> {
        let mut cx = Context::from_waker(Waker::noop());
        std::pin::Pin::new(f).poll(&mut cx)
    }
}
