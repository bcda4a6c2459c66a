//! Rule 8: no checkpoint past a record that no returned call had delivered yet (what lanes
//! must keep), and no delivery of a record the event filter drops.

use std::collections::HashMap;

use tokio::time::Instant;

use super::Violation;
use super::rules::Index;
use crate::checkpoint::{Checkpoint, SequenceNumber};
use crate::testing::memory_store::LeaseOp;

/// A shard's record in sequence order: its number, the latest first-done time of the records
/// up to it (`None` once one of them was never delivered), and the record that sets it.
type Row<'a> = (&'a SequenceNumber, Option<Instant>, usize);

/// Rule 8a: a checkpoint at `s` at time `t` needs every retained record of the shard up to
/// `s` delivered by a call that had returned at or before `t` (any outcome: a record that
/// kept failing is dead-lettered after its failed calls).
pub(super) fn no_checkpoint_past_unfinished(ix: &Index<'_>, out: &mut Vec<Violation>) {
    // When each written record was first delivered by a returned call.
    let mut first_done: Vec<Option<Instant>> = vec![None; ix.written.len()];
    for (di, (_, d)) in ix.deliveries.iter().enumerate() {
        if let Some(w) = ix.written_of[di] {
            let f = &mut first_done[w];
            if f.is_none_or(|t| d.finished < t) {
                *f = Some(d.finished);
            }
        }
    }
    // Per shard, its retained records in sequence order with the running latest first-done
    // time (`None` once a record up to there was never delivered).
    let mut shards: HashMap<&str, Vec<(&SequenceNumber, usize)>> = HashMap::new();
    for (i, r) in ix.written.iter().enumerate() {
        if ix.retained[i] {
            shards.entry(r.shard_id.as_str()).or_default().push((&r.sequence_number, i));
        }
    }
    let mut prefix: HashMap<&str, Vec<Row<'_>>> = HashMap::new();
    for (shard, mut list) in shards {
        list.sort_by(|a, b| a.0.cmp(b.0));
        let mut worst: Option<(Option<Instant>, usize)> = None;
        let mut rows = Vec::with_capacity(list.len());
        for (seq, i) in list {
            let done = first_done[i];
            worst = match worst {
                None => Some((done, i)),
                Some((None, w)) => Some((None, w)),
                Some((Some(t), w)) => match done {
                    None => Some((None, i)),
                    Some(d) if d > t => Some((Some(d), i)),
                    Some(_) => Some((Some(t), w)),
                },
            };
            let (t, w) = worst.unwrap_or((None, i));
            rows.push((seq, t, w));
        }
        prefix.insert(shard, rows);
    }
    let mut keys: Vec<&&str> = ix.leases.keys().collect();
    keys.sort_unstable();
    for key in keys {
        let Some(rows) = prefix.get(*key) else { continue };
        for e in &ix.leases[*key] {
            let (LeaseOp::Checkpoint, Checkpoint::At(seq)) = (e.op, &e.checkpoint_after) else { continue };
            let n = rows.partition_point(|(s, _, _)| *s <= seq);
            let Some((_, done, worst)) = n.checked_sub(1).map(|i| rows[i]) else { continue };
            if done.is_none_or(|t| t > e.at) {
                let r = &ix.written[worst];
                out.push(Violation::CheckpointPastUnfinished {
                    key: e.key.clone(),
                    checkpoint: seq.clone(),
                    unfinished: r.sequence_number.clone(),
                    item: r.key.clone(),
                    at: ix.since(e.at),
                });
            }
        }
    }
}

/// Rule 8b: a record the filter drops is never delivered.
pub(super) fn filtered_not_delivered(ix: &Index<'_>, out: &mut Vec<Violation>) {
    for (di, (_, d)) in ix.deliveries.iter().enumerate() {
        if ix.written_of[di].is_some_and(|w| ix.filtered[w]) {
            out.push(Violation::FilteredDelivered {
                shard: d.shard_id.clone(),
                sequence_number: d.sequence_number.clone(),
                worker: d.worker.clone(),
                at: ix.since(d.at),
            });
        }
    }
}
