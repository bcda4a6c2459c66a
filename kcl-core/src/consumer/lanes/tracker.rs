//! How far a shard with lanes may be checkpointed: the highest record below which every
//! record is handled, whichever lane it went to. Pure bookkeeping, no I/O.

use std::collections::VecDeque;

use crate::checkpoint::SequenceNumber;

/// The records of one shard dispatched to lanes (or filtered out) and not yet passed by the
/// checkpoint, in sequence order. Bounded by what the lanes' queues hold.
#[derive(Debug, Default)]
pub(crate) struct LaneTracker {
    /// Each record: its number, its lane (`None`: filtered out, handled at once), and whether
    /// it is handled.
    entries: VecDeque<Entry>,
    /// The highest record the checkpoint may pass: every record up to it is handled.
    safe: Option<SequenceNumber>,
}

#[derive(Debug)]
struct Entry {
    seq: SequenceNumber,
    lane: Option<usize>,
    handled: bool,
}

impl LaneTracker {
    /// A record went to `lane`. Records must come in sequence order.
    pub(crate) fn dispatched(&mut self, lane: usize, seq: SequenceNumber) {
        self.entries.push_back(Entry { seq, lane: Some(lane), handled: false });
    }

    /// A record needs no lane (filtered out): handled once every record before it is.
    pub(crate) fn skipped(&mut self, seq: SequenceNumber) {
        self.entries.push_back(Entry { seq, lane: None, handled: true });
        self.advance();
    }

    /// `lane` has handled all its records up to `upto` (a batch returned `Ok`, a partial
    /// failure handled a prefix, records were dead-lettered, or the processor checkpointed).
    pub(crate) fn handled(&mut self, lane: usize, upto: &SequenceNumber) {
        for e in self.entries.iter_mut() {
            if e.seq > *upto {
                break;
            }
            if e.lane == Some(lane) {
                e.handled = true;
            }
        }
        self.advance();
    }

    fn advance(&mut self) {
        while self.entries.front().is_some_and(|e| e.handled) {
            self.safe = self.entries.pop_front().map(|e| e.seq);
        }
    }

    /// The highest record below which every record is handled, if any moved since the start.
    pub(crate) fn safe_point(&self) -> Option<&SequenceNumber> {
        self.safe.as_ref()
    }
}

/// The lane of an item key: a stable hash (FNV-1a, the same in every process and version),
/// so the changes of one item always go to one lane.
pub(crate) fn lane_of(key: &str, lanes: usize) -> usize {
    if lanes <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % lanes as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> SequenceNumber {
        SequenceNumber::parse(&format!("{n:021}")).unwrap_or_else(|e| panic!("{e}"))
    }

    enum Op {
        To(usize, u64),
        Skip(u64),
        Done(usize, u64),
    }
    use Op::*;

    #[test]
    fn safe_point_never_passes_an_unfinished_lane() {
        let cases: Vec<(&str, Vec<Op>, Option<u64>)> = vec![
            ("nothing yet", vec![], None),
            ("one lane done", vec![To(0, 1), To(0, 2), Done(0, 2)], Some(2)),
            ("slow lane holds the point", vec![To(0, 1), To(1, 2), To(0, 3), Done(0, 3)], Some(1)),
            ("slow lane finishes", vec![To(0, 1), To(1, 2), To(0, 3), Done(0, 3), Done(1, 2)], Some(3)),
            ("partial lane progress", vec![To(1, 1), To(0, 2), To(1, 3), To(1, 4), Done(0, 2), Done(1, 3)], Some(3)),
            ("filtered after done", vec![To(0, 1), Skip(2), Skip(3), Done(0, 1)], Some(3)),
            ("filtered only", vec![Skip(5), Skip(6)], Some(6)),
            ("filtered behind unfinished", vec![To(2, 1), Skip(2), To(0, 3), Done(0, 3)], None),
            ("done of another lane is not mine", vec![To(0, 1), To(1, 2), Done(1, 2)], None),
            ("done beyond dispatched covers only dispatched", vec![To(0, 1), Done(0, 9), To(0, 10)], Some(1)),
        ];
        for (name, ops, want) in cases {
            let mut t = LaneTracker::default();
            for op in ops {
                match op {
                    To(l, n) => t.dispatched(l, s(n)),
                    Skip(n) => t.skipped(s(n)),
                    Done(l, n) => t.handled(l, &s(n)),
                }
            }
            assert_eq!(t.safe_point(), want.map(s).as_ref(), "{name}");
        }
    }

    #[test]
    fn lanes_are_stable_and_spread() {
        assert_eq!(lane_of("anything", 1), 0);
        assert_eq!(lane_of("order#1", 4), lane_of("order#1", 4));
        let mut counts = [0usize; 10];
        for i in 0..10_000 {
            counts[lane_of(&format!("item-{i}"), 10)] += 1;
        }
        // Every lane gets a fair share of many keys (each within ±20 % of 1,000).
        assert!(counts.iter().all(|&c| (800..=1200).contains(&c)), "{counts:?}");
    }
}
