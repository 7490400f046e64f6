//! The delivery queue's schedule, in memory: which stored webhook to attempt next, and when. Each
//! scanRef is a lane, in the order received; only a lane's head is ever due, so a scanRef's
//! webhooks are delivered in order. Heads wait in a heap by the time they are due. Every operation
//! is O(log n), so a backlog of hours (an endpoint down) costs nothing per new webhook.
//!
//! The store is the truth: the schedule is rebuilt from its pending deliveries at start, and
//! changed only after the store was.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use super::store::Pending;

#[derive(Debug, Clone)]
struct Entry {
    pending: Pending,
    /// Handed out by [`Schedule::take_due`] and not yet settled.
    in_flight: bool,
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Schedule {
    entries: BTreeMap<u64, Entry>,
    lanes: HashMap<String, VecDeque<u64>>,
    /// (due time, seq) of lane heads; an entry that no longer matches is skipped when popped.
    due: BinaryHeap<Reverse<(u64, u64)>>,
}

impl Schedule {
    /// Adds a pending delivery (received, revived, or loaded at start); one already scheduled is
    /// left as it is.
    pub fn add(&mut self, pending: Pending) {
        let seq = pending.seq;
        if self.entries.contains_key(&seq) {
            return;
        }
        let lane = self.lanes.entry(pending.scan_ref.clone()).or_default();
        let at = lane.partition_point(|&s| s < seq);
        lane.insert(at, seq);
        let head = at == 0;
        let next_at = pending.next_at_ms;
        self.entries.insert(
            seq,
            Entry {
                pending,
                in_flight: false,
            },
        );
        if head {
            self.due.push(Reverse((next_at, seq)));
        }
    }

    /// The deliveries due at `now` (lane heads not in flight), marked in flight.
    pub fn take_due(&mut self, now: u64) -> Vec<Pending> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, seq))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            if !self.is_waiting_head(seq, at) {
                continue;
            }
            if let Some(entry) = self.entries.get_mut(&seq) {
                entry.in_flight = true;
                out.push(entry.pending.clone());
            }
        }
        out
    }

    fn is_waiting_head(&self, seq: u64, at: u64) -> bool {
        let Some(entry) = self.entries.get(&seq) else {
            return false;
        };
        let head = self
            .lanes
            .get(&entry.pending.scan_ref)
            .and_then(|lane| lane.front())
            == Some(&seq);
        head && !entry.in_flight && entry.pending.next_at_ms == at
    }

    /// When the next delivery is due, if any is waiting.
    pub fn next_due(&mut self) -> Option<u64> {
        while let Some(&Reverse((at, seq))) = self.due.peek() {
            if self.is_waiting_head(seq, at) {
                return Some(at);
            }
            self.due.pop();
        }
        None
    }

    /// `seq` is delivered or dead: off its lane, whose next webhook becomes due.
    pub fn finished(&mut self, seq: u64) {
        let Some(entry) = self.entries.remove(&seq) else {
            return;
        };
        let scan_ref = entry.pending.scan_ref;
        let Some(lane) = self.lanes.get_mut(&scan_ref) else {
            return;
        };
        lane.retain(|&s| s != seq);
        match lane.front().and_then(|s| self.entries.get(s)) {
            Some(next) if !next.in_flight => {
                self.due
                    .push(Reverse((next.pending.next_at_ms, next.pending.seq)));
            }
            Some(_) => {}
            None => {
                self.lanes.remove(&scan_ref);
            }
        }
    }

    /// `seq` failed and is due again at `next_at_ms`.
    pub fn retry_at(&mut self, seq: u64, attempts: u32, next_at_ms: u64) {
        if let Some(entry) = self.entries.get_mut(&seq) {
            entry.in_flight = false;
            entry.pending.attempts = attempts;
            entry.pending.next_at_ms = next_at_ms;
            self.due.push(Reverse((next_at_ms, seq)));
        }
    }

    /// `seq` was handed out but its outcome could not be stored: due again at `next_at_ms`, as
    /// the store still has it.
    pub fn release(&mut self, seq: u64, next_at_ms: u64) {
        if let Some(entry) = self.entries.get_mut(&seq) {
            let attempts = entry.pending.attempts;
            self.retry_at(seq, attempts, next_at_ms);
        }
    }

    /// The seqs scheduled here, in flight or waiting.
    pub fn seqs(&self) -> Vec<u64> {
        self.entries.keys().copied().collect()
    }

    /// Webhooks waiting for delivery.
    pub fn depth(&self) -> usize {
        self.entries.len()
    }

    /// When the oldest of them (the first received) arrived.
    pub fn oldest_received(&self) -> Option<u64> {
        self.entries.values().next().map(|e| e.pending.received_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(seq: u64, scan_ref: &str, at: u64) -> Pending {
        Pending {
            seq,
            scan_ref: scan_ref.into(),
            attempts: 0,
            next_at_ms: at,
            received_ms: at,
        }
    }

    fn seqs(due: Vec<Pending>) -> Vec<u64> {
        due.into_iter().map(|p| p.seq).collect()
    }

    #[test]
    fn only_lane_heads_are_due_and_the_next_follows_its_head() {
        let mut s = Schedule::default();
        s.add(pending(0, "a", 10));
        s.add(pending(1, "a", 10));
        s.add(pending(2, "b", 20));
        assert_eq!(s.next_due(), Some(10));
        assert_eq!(seqs(s.take_due(5)), Vec::<u64>::new());
        assert_eq!(seqs(s.take_due(30)), [0, 2]);
        assert_eq!(seqs(s.take_due(30)), Vec::<u64>::new(), "in flight");
        s.finished(0);
        assert_eq!(seqs(s.take_due(30)), [1]);
        assert_eq!(s.depth(), 2);
        s.finished(1);
        s.finished(2);
        assert_eq!((s.depth(), s.next_due()), (0, None));
    }

    #[test]
    fn a_retried_head_keeps_its_lane_waiting() {
        let mut s = Schedule::default();
        s.add(pending(0, "a", 0));
        s.add(pending(1, "a", 0));
        assert_eq!(seqs(s.take_due(0)), [0]);
        s.retry_at(0, 1, 100);
        assert_eq!(s.next_due(), Some(100));
        assert_eq!(seqs(s.take_due(99)), Vec::<u64>::new());
        assert_eq!(seqs(s.take_due(100)), [0]);
        assert_eq!(s.oldest_received(), Some(0));
    }

    #[test]
    fn adding_twice_changes_nothing_and_a_revived_older_one_goes_first() {
        let mut s = Schedule::default();
        s.add(pending(5, "a", 0));
        s.add(pending(5, "a", 0));
        assert_eq!(s.depth(), 1);
        s.add(pending(2, "a", 0));
        assert_eq!(seqs(s.take_due(0)), [2]);
        s.finished(2);
        assert_eq!(seqs(s.take_due(0)), [5]);
    }
}
