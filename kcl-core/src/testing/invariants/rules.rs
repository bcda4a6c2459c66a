//! The rules of the checker, each a pass over an [`Index`] of the observations.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use super::{Observed, Stats, Violation};
use crate::checkpoint::{Checkpoint, SequenceNumber};
use crate::lease::WorkerId;
use crate::shard::ShardId;
use crate::testing::memory_store::{LeaseEvent, LeaseOp};
use crate::testing::recording::{Delivery, DeliveryOutcome, LifecycleKind, LogEntry};
use crate::testing::sim::record::SimRecord;

/// When a log entry happened: its instant, then its position in the log as the tiebreak.
type Order = (Instant, usize);

/// The observations, indexed once for every rule.
pub(super) struct Index<'a> {
    pub(super) origin: Option<Instant>,
    pub(super) written: &'a [SimRecord],
    trimmed: usize,
    /// Per written record: still in the stream (not trimmed) and not dropped by the filter.
    pub(super) retained: Vec<bool>,
    /// Per written record: dropped by the scenario's event filter.
    pub(super) filtered: Vec<bool>,
    entries: &'a [LogEntry],
    /// Every delivery with its position in the log, in log order.
    pub(super) deliveries: Vec<(usize, &'a Delivery)>,
    /// Per delivery: the written record it carries.
    pub(super) written_of: Vec<Option<usize>>,
    /// Per written record: its first processed delivery (index into `deliveries`).
    first_processed: Vec<Option<(Order, usize)>>,
    /// Lease events per lease key, ordered by time (history order for equal times).
    pub(super) leases: HashMap<&'a str, Vec<&'a LeaseEvent>>,
    processed: usize,
    failed: usize,
    distinct_unwritten: usize,
}

fn entry_at(entry: &LogEntry) -> Instant {
    match entry {
        LogEntry::Delivery(d) => d.at,
        LogEntry::Lifecycle(l) => l.at,
        LogEntry::CheckpointCall(c) => c.at,
    }
}

/// True when `sorted` holds a value in `lo..=hi` but not `lo` itself.
fn any_in_half_open<T: Ord>(sorted: &[T], lo: &T, hi: &T) -> bool {
    let i = sorted.partition_point(|x| x <= lo);
    sorted.get(i).is_some_and(|x| x <= hi)
}

/// True when `sorted` holds a value strictly between `lo` and `hi`.
fn any_in_open<T: Ord>(sorted: &[T], lo: &T, hi: &T) -> bool {
    let i = sorted.partition_point(|x| x <= lo);
    sorted.get(i).is_some_and(|x| x < hi)
}

impl<'a> Index<'a> {
    pub(super) fn build(observed: &Observed<'a>, entries: &'a [LogEntry]) -> Self {
        let written = observed.written;
        let written_ix: HashMap<(&str, &SequenceNumber), usize> =
            written.iter().enumerate().map(|(i, r)| ((r.shard_id.as_str(), &r.sequence_number), i)).collect();
        let mut retained = vec![true; written.len()];
        for r in observed.trimmed {
            if let Some(&i) = written_ix.get(&(r.shard_id.as_str(), &r.sequence_number)) {
                retained[i] = false;
            }
        }
        let filtered: Vec<bool> = match observed.filtered {
            Some(drops) => written.iter().map(drops).collect(),
            None => vec![false; written.len()],
        };
        for (i, f) in filtered.iter().enumerate() {
            if *f {
                retained[i] = false;
            }
        }
        let mut deliveries = Vec::new();
        let mut written_of = Vec::new();
        let mut first_processed: Vec<Option<(Order, usize)>> = vec![None; written.len()];
        let mut unwritten_processed = HashSet::new();
        let (mut processed, mut failed) = (0, 0);
        for (pos, entry) in entries.iter().enumerate() {
            let LogEntry::Delivery(d) = entry else { continue };
            let w = written_ix.get(&(d.shard_id.as_str(), &d.sequence_number)).copied();
            let di = deliveries.len();
            deliveries.push((pos, d));
            written_of.push(w);
            match d.outcome {
                DeliveryOutcome::Failed => failed += 1,
                DeliveryOutcome::Processed => {
                    processed += 1;
                    match w {
                        Some(w) => {
                            let order = (d.at, pos);
                            let first = &mut first_processed[w];
                            if first.is_none_or(|(o, _)| order < o) {
                                *first = Some((order, di));
                            }
                        }
                        None => {
                            unwritten_processed.insert((d.shard_id.as_str(), &d.sequence_number));
                        }
                    }
                }
            }
        }
        let mut leases: HashMap<&str, Vec<&LeaseEvent>> = HashMap::new();
        for e in observed.lease_history {
            leases.entry(e.key.as_str()).or_default().push(e);
        }
        for events in leases.values_mut() {
            events.sort_by_key(|e| e.at); // stable: history order among equal times
        }
        let origin = entries.iter().map(entry_at).chain(observed.lease_history.iter().map(|e| e.at)).min();
        Self {
            origin,
            written,
            trimmed: observed.trimmed.len(),
            retained,
            filtered,
            entries,
            deliveries,
            written_of,
            first_processed,
            leases,
            processed,
            failed,
            distinct_unwritten: unwritten_processed.len(),
        }
    }

    /// An instant as an offset from the origin.
    pub(super) fn since(&self, at: Instant) -> Duration {
        self.origin.map(|o| at.saturating_duration_since(o)).unwrap_or_default()
    }

    fn delivery(&self, di: usize) -> &'a Delivery {
        self.deliveries[di].1
    }

    pub(super) fn stats(&self, lost: usize) -> Stats {
        let distinct = self.first_processed.iter().filter(|f| f.is_some()).count() + self.distinct_unwritten;
        Stats {
            written: self.written.len(),
            trimmed: self.trimmed,
            delivered: self.processed,
            failed: self.failed,
            distinct_delivered: distinct,
            duplicates: self.processed - distinct,
            lost,
        }
    }
}

/// Rule 1: every retained record processed; nothing delivered that was never written.
pub(super) fn at_least_once(ix: &Index<'_>, out: &mut Vec<Violation>) {
    for (i, r) in ix.written.iter().enumerate() {
        if ix.retained[i] && ix.first_processed[i].is_none() {
            out.push(Violation::Lost {
                shard: r.shard_id.clone(),
                sequence_number: r.sequence_number.clone(),
                key: r.key.clone(),
                version: r.version,
            });
        }
    }
    for (di, (_, d)) in ix.deliveries.iter().enumerate() {
        if ix.written_of[di].is_none() {
            out.push(Violation::NotWritten {
                worker: d.worker.clone(),
                shard: d.shard_id.clone(),
                sequence_number: d.sequence_number.clone(),
                at: ix.since(d.at),
            });
        }
    }
}

/// Rule 2: within a session, sequence numbers increase unless the previous batch failed.
pub(super) fn shard_order(ix: &Index<'_>, out: &mut Vec<Violation>) {
    let mut last: HashMap<(&WorkerId, &str, usize), (&SequenceNumber, DeliveryOutcome)> = HashMap::new();
    for entry in ix.entries {
        match entry {
            LogEntry::Lifecycle(l) if matches!(l.kind, LifecycleKind::Initialized(_)) => {
                last.retain(|(w, s, _), _| !(*w == &l.worker && *s == l.shard_id.as_str()));
            }
            LogEntry::Delivery(d) => {
                let prev = last.insert((&d.worker, d.shard_id.as_str(), d.lane), (&d.sequence_number, d.outcome));
                if let Some((prev_seq, prev_outcome)) = prev
                    && prev_outcome != DeliveryOutcome::Failed
                    && d.sequence_number <= *prev_seq
                {
                    out.push(Violation::ShardOrder {
                        worker: d.worker.clone(),
                        shard: d.shard_id.clone(),
                        previous: prev_seq.clone(),
                        sequence_number: d.sequence_number.clone(),
                        at: ix.since(d.at),
                    });
                }
            }
            _ => {}
        }
    }
}

/// Rule 3: an item's versions are first processed in version order (retained ones).
pub(super) fn item_order(ix: &Index<'_>, out: &mut Vec<Violation>) {
    let mut by_item: Vec<usize> = (0..ix.written.len()).collect();
    by_item.sort_unstable_by(|&a, &b| {
        let (ra, rb) = (&ix.written[a], &ix.written[b]);
        ra.key.cmp(&rb.key).then(ra.version.cmp(&rb.version))
    });
    for item in by_item.chunk_by(|&a, &b| ix.written[a].key == ix.written[b].key) {
        // The latest first-processing among the retained versions seen so far.
        let mut latest: Option<(Order, usize)> = None;
        for &w in item {
            let Some((order, di)) = ix.first_processed[w] else { continue };
            if let Some((latest_order, lw)) = latest
                && order < latest_order
            {
                let (r, lr) = (&ix.written[w], &ix.written[lw]);
                out.push(Violation::ItemOrder {
                    key: r.key.clone(),
                    version: r.version,
                    shard: r.shard_id.clone(),
                    sequence_number: r.sequence_number.clone(),
                    at: ix.since(ix.delivery(di).at),
                    earlier_version: lr.version,
                    earlier_shard: lr.shard_id.clone(),
                    earlier_sequence_number: lr.sequence_number.clone(),
                    earlier_at: ix.since(latest_order.0),
                });
            }
            if ix.retained[w] && latest.is_none_or(|(o, _)| order > o) {
                latest = Some((order, w));
            }
        }
    }
}

/// Rule 4: a child's first processed record comes after its parents' records and ends.
pub(super) fn parents_first(ix: &Index<'_>, parents: &[(ShardId, Vec<ShardId>)], out: &mut Vec<Violation>) {
    // Per shard: the first processed delivery of any of its records.
    let mut shard_first: HashMap<&str, (Order, usize)> = HashMap::new();
    for (di, (pos, d)) in ix.deliveries.iter().enumerate() {
        if d.outcome == DeliveryOutcome::Processed {
            let order = (d.at, *pos);
            let first = shard_first.entry(d.shard_id.as_str()).or_insert((order, di));
            if order < first.0 {
                *first = (order, di);
            }
        }
    }
    // Per shard: the last first-processing of its retained records, and record counts.
    let mut shard_done: HashMap<&str, (Order, usize)> = HashMap::new();
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for (w, r) in ix.written.iter().enumerate() {
        let count = counts.entry(r.shard_id.as_str()).or_default();
        count.0 += 1;
        if !ix.retained[w] {
            continue;
        }
        count.1 += 1;
        if let Some((order, _)) = ix.first_processed[w] {
            let done = shard_done.entry(r.shard_id.as_str()).or_insert((order, w));
            if order > done.0 {
                *done = (order, w);
            }
        }
    }
    for (child, child_parents) in parents {
        let Some(&((child_at, _), child_di)) = shard_first.get(child.as_str()) else { continue };
        let child_first = ix.delivery(child_di);
        for parent in child_parents {
            if let Some(&(parent_order, pw)) = shard_done.get(parent.as_str())
                && parent_order > (child_at, ix.deliveries[child_di].0)
            {
                out.push(Violation::ChildBeforeParent {
                    child: child.clone(),
                    child_sequence_number: child_first.sequence_number.clone(),
                    child_at: ix.since(child_at),
                    parent: parent.clone(),
                    parent_sequence_number: ix.written[pw].sequence_number.clone(),
                    parent_at: ix.since(parent_order.0),
                });
            }
            let Some(events) = ix.leases.get(parent.as_str()) else { continue };
            // A parent whose every record was trimmed is gone from the stream: no wait.
            let gone = counts.get(parent.as_str()).is_some_and(|&(all, retained)| all > 0 && retained == 0);
            let end = events.iter().find(|e| e.checkpoint_after.is_shard_end()).map(|e| e.at);
            if !gone && end.is_none_or(|end| child_at < end) {
                out.push(Violation::ChildBeforeParentEnd {
                    child: child.clone(),
                    child_sequence_number: child_first.sequence_number.clone(),
                    child_at: ix.since(child_at),
                    parent: parent.clone(),
                    parent_end_at: end.map(|e| ix.since(e)),
                });
            }
        }
    }
}

/// Rule 5: a worker delivers a shard only within a lease duration of owning its lease.
pub(super) fn one_owner(ix: &Index<'_>, lease_duration: Duration, out: &mut Vec<Violation>) {
    // Per (lease, owner): when writes left the lease owned by that owner.
    let mut owned_at: HashMap<(&str, &WorkerId), Vec<Instant>> = HashMap::new();
    for (&key, events) in &ix.leases {
        for e in events {
            if let Some(owner) = &e.owner_after {
                owned_at.entry((key, owner)).or_default().push(e.at);
            }
        }
    }
    let owner_at = |key: &str, t: Instant| -> Option<&WorkerId> {
        let events = ix.leases.get(key)?;
        let n = events.partition_point(|e| e.at <= t);
        events.get(n.checked_sub(1)?)?.owner_after.as_ref()
    };
    let mut last_reported: Option<(&WorkerId, &ShardId, Instant)> = None;
    for (_, d) in &ix.deliveries {
        let key = d.shard_id.as_str();
        let from = d.at.checked_sub(lease_duration);
        let owned_at_start = from.is_some_and(|from| owner_at(key, from) == Some(&d.worker));
        let owned_later = owned_at.get(&(key, &d.worker)).is_some_and(|times| match from {
            // Owned from an event in (from, at].
            Some(from) => any_in_half_open(times, &from, &d.at),
            None => times.first().is_some_and(|t| *t <= d.at),
        });
        if owned_at_start || owned_later {
            continue;
        }
        // One report per batch: the records of a batch share worker, shard and time.
        if last_reported == Some((&d.worker, &d.shard_id, d.at)) {
            continue;
        }
        last_reported = Some((&d.worker, &d.shard_id, d.at));
        out.push(Violation::TwoOwners {
            worker: d.worker.clone(),
            shard: d.shard_id.clone(),
            sequence_number: d.sequence_number.clone(),
            at: ix.since(d.at),
            owner: owner_at(key, d.at).cloned(),
        });
    }
}

/// Rule 6: checkpoints move forward, are written by the owner, and never pass what it processed.
pub(super) fn checkpoints(ix: &Index<'_>, out: &mut Vec<Violation>) {
    // Per (worker, shard): processed deliveries by time, with the running highest sequence number.
    let mut processed: HashMap<(&WorkerId, &str), Vec<(Instant, &SequenceNumber)>> = HashMap::new();
    for (_, d) in &ix.deliveries {
        if d.outcome == DeliveryOutcome::Processed {
            processed.entry((&d.worker, d.shard_id.as_str())).or_default().push((d.at, &d.sequence_number));
        }
    }
    for list in processed.values_mut() {
        list.sort_by_key(|(at, _)| *at);
        let mut highest: Option<&SequenceNumber> = None;
        for (_, seq) in list.iter_mut() {
            let top = highest.map_or(*seq, |h| h.max(*seq));
            highest = Some(top);
            *seq = top;
        }
    }
    // Per shard, the records the filter does not drop, in order: a checkpoint may pass the
    // highest processed record over dropped ones only.
    let mut unfiltered: HashMap<&str, Vec<&SequenceNumber>> = HashMap::new();
    for (i, r) in ix.written.iter().enumerate() {
        if !ix.filtered[i] {
            unfiltered.entry(r.shard_id.as_str()).or_default().push(&r.sequence_number);
        }
    }
    for list in unfiltered.values_mut() {
        list.sort_unstable();
    }
    let passes_unfiltered = |shard: &str, highest: Option<&SequenceNumber>, seq: &SequenceNumber| {
        let Some(list) = unfiltered.get(shard) else { return false };
        let from = highest.map_or(0, |h| list.partition_point(|s| *s <= h));
        list.get(from).is_some_and(|next| *next <= seq)
    };
    let mut keys: Vec<&&str> = ix.leases.keys().collect();
    keys.sort_unstable(); // deterministic report order
    for key in keys {
        let mut prev: Option<&Checkpoint> = None;
        for e in &ix.leases[*key] {
            let before = prev;
            match e.op {
                LeaseOp::Create => {
                    prev = Some(&e.checkpoint_after);
                    continue;
                }
                LeaseOp::Delete => {
                    prev = None;
                    continue;
                }
                _ => {}
            }
            if let Some(p) = prev
                && !p.may_advance_to(&e.checkpoint_after)
            {
                out.push(Violation::CheckpointBackwards {
                    key: e.key.clone(),
                    from: p.clone(),
                    to: e.checkpoint_after.clone(),
                    at: ix.since(e.at),
                });
            }
            prev = Some(&e.checkpoint_after);
            if e.op != LeaseOp::Checkpoint {
                continue;
            }
            let Some(owner) = e.owner_after.as_ref().filter(|_| e.owner_before == e.owner_after) else {
                out.push(Violation::CheckpointNotFenced {
                    key: e.key.clone(),
                    owner_before: e.owner_before.clone(),
                    owner_after: e.owner_after.clone(),
                    checkpoint: e.checkpoint_after.clone(),
                    at: ix.since(e.at),
                });
                continue;
            };
            let Checkpoint::At(seq) = &e.checkpoint_after else { continue };
            let highest = processed.get(&(owner, *key)).and_then(|list| {
                let n = list.partition_point(|(at, _)| *at <= e.at);
                Some(list.get(n.checked_sub(1)?)?.1)
            });
            // Records up to the checkpoint this one replaces were handled (by whichever owner):
            // beyond them and the owner's own highest, only dropped records may be passed.
            let handled_before = match before {
                Some(Checkpoint::At(b)) => Some(b),
                _ => None,
            };
            let base = match (highest, handled_before) {
                (Some(h), Some(b)) => Some(h.max(b)),
                (h, b) => h.or(b),
            };
            if highest.is_none_or(|h| seq > h) && passes_unfiltered(key, base, seq) {
                out.push(Violation::CheckpointBeyondDelivered {
                    key: e.key.clone(),
                    worker: owner.clone(),
                    checkpoint: seq.clone(),
                    highest_processed: highest.cloned(),
                    at: ix.since(e.at),
                });
            }
        }
    }
}

/// Rule 7: a record processed again had a cause in between: a lease move, a failed batch of
/// the redelivering worker, or a `lease_lost` / `shutdown_requested` on the shard. A move away
/// from one of the two delivering workers up to one lease duration before the first delivery
/// counts too: after a steal the old owner may go on delivering until its fencing window
/// closes (rule 5 bounds that).
pub(super) fn redeliveries(ix: &Index<'_>, lease_duration: Duration, out: &mut Vec<Violation>) {
    // Per lease: takes and releases by time, with the owner they moved the lease away from.
    let mut moves: HashMap<&str, Vec<(Instant, Option<&WorkerId>)>> = HashMap::new();
    for (&key, events) in &ix.leases {
        let list = events
            .iter()
            .filter(|e| matches!(e.op, LeaseOp::Take | LeaseOp::Release))
            .map(|e| (e.at, e.owner_before.as_ref()));
        moves.insert(key, list.collect());
    }
    let moved = |key: &str, d1: &Delivery, d2: &Delivery| -> bool {
        let Some(list) = moves.get(key) else { return false };
        let from = d1.at.checked_sub(lease_duration).unwrap_or(d1.at);
        let start = list.partition_point(|(at, _)| *at < from);
        list[start..]
            .iter()
            .take_while(|(at, _)| *at <= d2.at)
            .any(|(at, before)| *at >= d1.at || before.is_some_and(|b| *b == d1.worker || *b == d2.worker))
    };
    let mut failures: HashMap<(&WorkerId, &str), Vec<usize>> = HashMap::new();
    let mut stops: HashMap<&str, Vec<usize>> = HashMap::new();
    for (pos, entry) in ix.entries.iter().enumerate() {
        match entry {
            LogEntry::Delivery(d) if d.outcome == DeliveryOutcome::Failed => {
                failures.entry((&d.worker, d.shard_id.as_str())).or_default().push(pos);
            }
            LogEntry::Lifecycle(l) if matches!(l.kind, LifecycleKind::LeaseLost | LifecycleKind::ShutdownRequested) => {
                stops.entry(l.shard_id.as_str()).or_default().push(pos);
            }
            _ => {}
        }
    }
    let mut by_record: Vec<usize> =
        (0..ix.deliveries.len()).filter(|&di| ix.delivery(di).outcome == DeliveryOutcome::Processed).collect();
    by_record.sort_unstable_by_key(|&di| {
        let (pos, d) = ix.deliveries[di];
        (d.shard_id.as_str(), &d.sequence_number, d.at, pos)
    });
    for pair in by_record.windows(2) {
        let ((p1, d1), (p2, d2)) = (ix.deliveries[pair[0]], ix.deliveries[pair[1]]);
        if d1.shard_id != d2.shard_id || d1.sequence_number != d2.sequence_number {
            continue;
        }
        let key = d2.shard_id.as_str();
        let (lo, hi) = (p1.min(p2), p1.max(p2));
        let moved = moved(key, d1, d2);
        let retried = failures.get(&(&d2.worker, key)).is_some_and(|p| any_in_open(p, &lo, &hi));
        let stopped = stops.get(key).is_some_and(|p| any_in_open(p, &lo, &hi));
        if !(moved || retried || stopped) {
            out.push(Violation::RedeliveryWithoutMove {
                shard: d2.shard_id.clone(),
                sequence_number: d2.sequence_number.clone(),
                first_worker: d1.worker.clone(),
                first_at: ix.since(d1.at),
                worker: d2.worker.clone(),
                at: ix.since(d2.at),
            });
        }
    }
}
