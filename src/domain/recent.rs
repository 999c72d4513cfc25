//! The recent part of an app's event log, in memory, so a stream that keeps up reads its events
//! without asking the store. It holds an unbroken run of seqs `(start, end]`: an event that
//! does not continue the run starts a new one, and anything it cannot vouch for (a gap, an
//! event out of order, a write that changed what apps may see) sends readers to the store.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Event, Status};

/// One remembered event.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    seq: u64,
    uid: Arc<str>,
    status: Status,
    at: i64,
}

/// An unbroken run of an app's latest events, at most `capacity` of them.
#[derive(Debug)]
pub struct Recent {
    /// The seq just before the first entry: the run covers `(start, end]`.
    start: u64,
    entries: VecDeque<Entry>,
    capacity: usize,
}

/// What the run holds after a cursor.
#[derive(Debug, PartialEq, Eq)]
pub struct Tail {
    /// The events after the cursor, in seq order, at most the limit asked for.
    pub events: Vec<Event>,
    /// The last seq the answer covers: every event up to it is in `events` or before the cursor.
    pub scanned_to: u64,
    /// Nothing newer than `scanned_to` is held.
    pub complete: bool,
}

impl Recent {
    pub fn new(capacity: usize) -> Recent {
        Recent { start: 0, entries: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// The newest seq held, if any.
    fn end(&self) -> Option<u64> {
        self.entries.back().map(|entry| entry.seq)
    }

    /// Remembers a durable event. One that does not come right after the newest starts a new
    /// run from itself.
    pub fn push(&mut self, seq: u64, uid: Arc<str>, status: Status, at: i64) {
        if self.end().is_none_or(|end| seq != end + 1) {
            self.entries.clear();
            self.start = seq.saturating_sub(1);
        }
        if self.entries.len() == self.capacity {
            if let Some(oldest) = self.entries.pop_front() {
                self.start = oldest.seq;
            }
        }
        self.entries.push_back(Entry { seq, uid, status, at });
    }

    /// Forgets everything: readers go to the store until new events arrive.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The events after `cursor`, or `None` when the run does not start at or before it (or is
    /// empty): the store must answer then.
    pub fn after(&self, cursor: u64, limit: usize) -> Option<Tail> {
        let end = self.end()?;
        if cursor < self.start || cursor > end {
            return None;
        }
        let skip = (cursor - self.start) as usize;
        let events: Vec<Event> = self
            .entries
            .iter()
            .skip(skip)
            .take(limit)
            .map(|entry| Event {
                seq: entry.seq,
                uid: entry.uid.to_string(),
                status: entry.status.name().to_owned(),
                at: entry.at,
            })
            .collect();
        let scanned_to = events.last().map_or(cursor, |event| event.seq);
        Some(Tail { events, scanned_to, complete: scanned_to == end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(tail: &Tail) -> Vec<u64> {
        tail.events.iter().map(|event| event.seq).collect()
    }

    fn filled(range: std::ops::RangeInclusive<u64>, capacity: usize) -> Recent {
        let mut recent = Recent::new(capacity);
        for seq in range {
            recent.push(seq, Arc::from(format!("u_{seq}")), Status::Online, seq as i64);
        }
        recent
    }

    #[test]
    fn a_reader_inside_the_run_gets_what_follows_its_cursor() {
        let recent = filled(5..=9, 16);
        let tail = recent.after(6, 100).unwrap();
        assert_eq!(seqs(&tail), vec![7, 8, 9]);
        assert_eq!((tail.scanned_to, tail.complete), (9, true));
        assert_eq!(tail.events[0].uid, "u_7");
        assert_eq!(tail.events[0].status, "online");
        // From the seq just before the run: all of it.
        assert_eq!(seqs(&recent.after(4, 100).unwrap()), vec![5, 6, 7, 8, 9]);
        // Caught up: nothing, and complete.
        let caught_up = recent.after(9, 100).unwrap();
        assert!(caught_up.events.is_empty() && caught_up.complete && caught_up.scanned_to == 9);
    }

    #[test]
    fn a_reader_before_the_run_or_past_it_goes_to_the_store() {
        let recent = filled(5..=9, 16);
        assert_eq!(recent.after(3, 100), None);
        assert_eq!(recent.after(10, 100), None);
        assert_eq!(Recent::new(4).after(0, 100), None);
    }

    #[test]
    fn a_limit_pages_the_run() {
        let recent = filled(1..=10, 16);
        let first = recent.after(0, 4).unwrap();
        assert_eq!((seqs(&first), first.scanned_to, first.complete), (vec![1, 2, 3, 4], 4, false));
        let next = recent.after(first.scanned_to, 4).unwrap();
        assert_eq!(seqs(&next), vec![5, 6, 7, 8]);
    }

    #[test]
    fn the_oldest_events_leave_when_full() {
        let recent = filled(1..=10, 4);
        assert_eq!(recent.after(5, 100), None, "6 is kept, 5 is gone: a reader at 5 still could be");
        assert_eq!(seqs(&recent.after(6, 100).unwrap()), vec![7, 8, 9, 10]);
    }

    #[test]
    fn a_gap_or_an_event_out_of_order_starts_a_new_run() {
        let mut recent = filled(1..=5, 16);
        recent.push(8, Arc::from("u_8"), Status::Away, 8);
        assert_eq!(recent.after(5, 100), None, "6 and 7 are not held");
        assert_eq!(seqs(&recent.after(7, 100).unwrap()), vec![8]);
        recent.push(6, Arc::from("u_6"), Status::Away, 6);
        assert_eq!(recent.after(7, 100), None, "8 is no longer vouched for after 6 came late");
        assert_eq!(seqs(&recent.after(5, 100).unwrap()), vec![6]);
    }

    #[test]
    fn cleared_it_answers_nothing_until_new_events() {
        let mut recent = filled(1..=5, 16);
        recent.clear();
        assert_eq!(recent.after(5, 100), None);
        recent.push(6, Arc::from("u_6"), Status::Online, 6);
        assert_eq!(seqs(&recent.after(5, 100).unwrap()), vec![6]);
        assert_eq!(recent.after(4, 100), None);
    }
}
