//! A quota: one GCRA limiter (governor on tokio's clock) with a first-come-first-served line of
//! waiting requests and an optional pause. The core of the team limit and the account limit.
//!
//! # Why a line with reserved times
//!
//! Governor only answers "may one cell go *now*?"; its `until_ready` lets every waiter sleep to
//! the same instant and race, so it keeps no order and cannot tell a newcomer how long it would
//! wait. Holding a FIFO mutex across the wait would keep order, but a newcomer would queue behind
//! the mutex before learning that it must be refused. So each request that cannot pass at once
//! *reserves* its place at arrival, under a short synchronous lock: while nobody waits, the place is
//! governor's earliest conforming time; behind others it is the last place plus one emission
//! interval (GCRA hands out exactly one cell per interval once the burst is spent). A request
//! whose place lies beyond its wait budget is refused at once, its `Retry-After` being that place.
//! Waiters sleep until their place and then take the cell from governor, so governor stays the
//! only account of cells spent and order follows arrival. A waiter that gives up leaves its cell
//! unused (never over-spends); the line itself is never re-packed.

use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::RateLimiter;
use tokio::time::{sleep_until, Instant};

use super::clock::{TokioClock, TokioInstant};
use crate::config::Rate;

type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

/// One quota (a team's or an account's).
pub struct Quota {
    gcra: Gcra,
    interval: Duration,
    line: Mutex<Line>,
}

#[derive(Debug, Default)]
struct Line {
    /// Requests holding a reserved place.
    waiting: u32,
    /// The reserved time of the last place in line.
    tail: Option<Instant>,
    /// No cell is handed out before this (an account pause after iDenfy said "too many").
    paused_until: Option<Instant>,
}

/// The request may not wait for the quota: over the wait budget or the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When a cell could be free for it: from the limiter's earliest possible time, the line
    /// ahead of it and any pause.
    pub retry_after: Duration,
}

/// The outcome of arriving at a quota.
#[derive(Debug)]
pub enum Admission<'a> {
    /// A cell was free and is spent.
    Now,
    /// A place in line was reserved; wait for it with [`Place::wait`].
    Queued(Place<'a>),
}

/// A reserved place in line. Dropping it (the request gave up) leaves the line.
#[derive(Debug)]
pub struct Place<'a> {
    quota: &'a Quota,
    at: Instant,
    latest: Instant,
}

impl std::fmt::Debug for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quota")
            .field("interval", &self.interval)
            .field("line", &*self.line())
            .finish()
    }
}

impl Quota {
    /// A quota of `rate` with `burst` cells available at once.
    pub fn new(rate: Rate, burst: NonZeroU32) -> Self {
        let interval = rate.interval().max(Duration::from_nanos(1));
        let quota = governor::Quota::with_period(interval)
            .expect("interval is at least one nanosecond")
            .allow_burst(burst);
        Quota {
            gcra: RateLimiter::direct_with_clock(quota, TokioClock),
            interval,
            line: Mutex::new(Line::default()),
        }
    }

    /// Waits for a cell for at most `budget`: `Ok(waited)`, or refused at once when the cell
    /// cannot be had within the budget.
    pub async fn acquire(&self, budget: Duration) -> Result<Duration, Refused> {
        let start = Instant::now();
        match self.admit(start, budget)? {
            Admission::Now => Ok(Duration::ZERO),
            Admission::Queued(place) => {
                place.wait().await?;
                Ok(start.elapsed())
            }
        }
    }

    /// Takes a free cell now if one is there for the taking (nobody waiting, no pause), changing
    /// nothing otherwise: the synchronous common case of [`Quota::acquire`]. The clock is read
    /// only when a pause is set (governor reads its own): the usual request reads it once here.
    pub fn take_free(&self) -> bool {
        let line = self.line();
        line.waiting == 0
            && line.paused_until.is_none_or(|p| p <= Instant::now())
            && self.gcra.check().is_ok()
    }

    /// Arrival at `now`: take a free cell, reserve a place no later than `now + budget`, or refuse.
    pub fn admit(&self, now: Instant, budget: Duration) -> Result<Admission<'_>, Refused> {
        let latest = now + budget;
        let mut line = self.line();
        let paused = line.paused_until.filter(|p| *p > now);
        let mut at = if line.waiting > 0 {
            line.tail.map_or(now, |t| t + self.interval).max(now)
        } else if paused.is_some() {
            now
        } else {
            match self.gcra.check() {
                Ok(()) => return Ok(Admission::Now),
                Err(not_until) => not_until.earliest_possible().0,
            }
        };
        if let Some(p) = paused {
            at = at.max(p);
        }
        if at > latest {
            return Err(Refused {
                retry_after: at - now,
            });
        }
        line.waiting += 1;
        line.tail = Some(at);
        Ok(Admission::Queued(Place {
            quota: self,
            at,
            latest,
        }))
    }

    /// Hands out no cell before `until` (keeps a later pause already set).
    pub fn pause_until(&self, until: Instant) {
        let mut line = self.line();
        line.paused_until = line.paused_until.max(Some(until));
    }

    /// The end of the current pause, if one is running.
    pub fn paused_until(&self) -> Option<Instant> {
        let now = Instant::now();
        self.line().paused_until.filter(|p| *p > now)
    }

    /// At a reserved place: take the cell, or learn when to look again.
    fn take(&self, now: Instant, latest: Instant) -> Result<Option<Instant>, Refused> {
        let line = self.line();
        let next = match line.paused_until.filter(|p| *p > now) {
            Some(p) => p,
            None => match self.gcra.check() {
                Ok(()) => return Ok(None),
                Err(not_until) => not_until.earliest_possible().0,
            },
        };
        if next > latest {
            return Err(Refused {
                retry_after: next - now,
            });
        }
        Ok(Some(next))
    }

    fn line(&self) -> MutexGuard<'_, Line> {
        // The critical sections cannot panic; a poisoned lock still holds a consistent line.
        self.line.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Place<'_> {
    /// Sleeps until the reserved place, then takes the cell. Refused only if a pause set after
    /// arrival pushes the cell past the budget.
    pub async fn wait(self) -> Result<(), Refused> {
        let mut at = self.at;
        loop {
            sleep_until(at).await;
            match self.quota.take(Instant::now(), self.latest)? {
                None => return Ok(()),
                Some(next) => at = next,
            }
        }
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let mut line = self.quota.line();
        line.waiting -= 1;
        if line.waiting == 0 {
            line.tail = None;
        }
    }
}

#[cfg(test)]
#[path = "quota_tests.rs"]
mod tests;
