//! Per shard, how long processing stood still: the rolling-deploy test's figures.
//!
//! For two consecutive changes of a shard (in the shard's sequence order), `a` then `b`, the
//! *wait* of `b` is the time from when `b` could first have been processed (its predecessor
//! processed and `b` itself written, whichever is later) to when it was first processed. The
//! longest wait of a shard is its lag spike: a pause of the writer (a slow emulator) is not
//! counted, a consumer that stopped reading while there was work is. The write's *send* time
//! is used, never its return: the record exists no earlier, so the wait is never understated.
//! The raw longest gap between consecutive processed changes is kept as well.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;

use super::outputs::{Label, Occurrence};

/// One shard's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ShardGaps {
    /// Distinct changes processed.
    pub(crate) changes: usize,
    /// Deliveries beyond the first of a change.
    pub(crate) duplicates: usize,
    /// The longest wait (ns) and when the change that waited it was processed (wall ns).
    pub(crate) longest_wait: u64,
    pub(crate) longest_wait_at: u64,
    /// The longest time (ns) between two consecutive processed changes, writer pauses included.
    pub(crate) longest_gap: u64,
    /// The workers that processed its changes, in the order they took over.
    pub(crate) owners: Vec<String>,
}

/// The figures of every shard in `occurrences`; `sent_at` holds when each (item, change) was
/// written (a change not found there waits from its predecessor's processing).
pub(crate) fn shard_gaps(
    occurrences: &[Occurrence],
    sent_at: &HashMap<(String, Label), u64>,
) -> BTreeMap<String, ShardGaps> {
    shard_gaps_in(occurrences, sent_at, &(0..=u64::MAX))
}

/// [`shard_gaps`], with the waits and gaps of only the changes first processed in `window`
/// (wall ns); the counts are of every change.
pub(crate) fn shard_gaps_in(
    occurrences: &[Occurrence],
    sent_at: &HashMap<(String, Label), u64>,
    window: &RangeInclusive<u64>,
) -> BTreeMap<String, ShardGaps> {
    // Per shard: the first processing of each sequence number, and the delivery count.
    let mut first: BTreeMap<&str, BTreeMap<u128, &Occurrence>> = BTreeMap::new();
    let mut deliveries: BTreeMap<&str, usize> = BTreeMap::new();
    for o in occurrences {
        *deliveries.entry(&o.shard).or_default() += 1;
        let seen = first.entry(&o.shard).or_default().entry(o.seq).or_insert(o);
        if o.ts < seen.ts {
            *seen = o;
        }
    }
    let mut out = BTreeMap::new();
    for (shard, by_seq) in first {
        let mut g =
            ShardGaps { changes: by_seq.len(), duplicates: deliveries[shard] - by_seq.len(), ..ShardGaps::default() };
        let ordered: Vec<&Occurrence> = by_seq.into_values().collect();
        for o in &ordered {
            if g.owners.last() != Some(&o.worker) {
                g.owners.push(o.worker.clone());
            }
        }
        for pair in ordered.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if !window.contains(&b.ts) {
                continue;
            }
            let written = sent_at.get(&(b.pk.clone(), b.label.clone())).copied().unwrap_or(0);
            let wait = b.ts.saturating_sub(a.ts.max(written));
            if wait > g.longest_wait {
                (g.longest_wait, g.longest_wait_at) = (wait, b.ts);
            }
            g.longest_gap = g.longest_gap.max(b.ts.saturating_sub(a.ts));
        }
        out.insert(shard.to_owned(), g);
    }
    out
}
