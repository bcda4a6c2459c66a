//! The invariant checker: judges, after a scenario, whether the worker kept the promises of
//! the design ("Promises to the user") on what the simulator, the recording processors and the
//! in-memory lease store observed.
//!
//! Feed [`check`] an [`Observed`]: the records written and trimmed by the simulator, the
//! [`DeliveryLog`] of the recording processors, the lease store's history and the shard
//! lineage. It returns a [`Report`] with every [`Violation`] and some [`Stats`];
//! [`Report::assert_ok`] panics with a readable summary. The rules:
//!
//! 1. **At-least-once**: every written record that was not trimmed was processed
//!    ([`Violation::Lost`]); nothing is delivered that was never written
//!    ([`Violation::NotWritten`]).
//! 2. **Shard order**: within a session of a worker on a shard (from one `initialize` to the
//!    next), delivered sequence numbers strictly increase in each lane (the whole shard without
//!    lanes), except that the batch after a failed batch may start again further back
//!    ([`Violation::ShardOrder`]). Across lanes only item order holds (rule 3).
//! 3. **Item order**: when version `v` of an item is first processed, every retained earlier
//!    version has already been processed ([`Violation::ItemOrder`]).
//! 4. **Parents first**: a child shard's first processed record comes after the first
//!    processing of every retained record of its parents
//!    ([`Violation::ChildBeforeParent`]) and, when the parent had a lease, after that lease was
//!    checkpointed at `SHARD_END` ([`Violation::ChildBeforeParentEnd`]).
//! 5. **One owner**: a worker delivers a shard only if it owned the shard's lease at some time
//!    within one lease duration before the delivery ([`Violation::TwoOwners`]).
//! 6. **Checkpoints**: a lease's checkpoint never moves backwards
//!    ([`Violation::CheckpointBackwards`]), is written by the lease's owner
//!    ([`Violation::CheckpointNotFenced`]) and never passes the highest record the owner had
//!    processed for the shard ([`Violation::CheckpointBeyondDelivered`]).
//! 8. **No checkpoint past an unfinished record** (this is what lanes must keep): when a
//!    lease is checkpointed at `s`, every retained record of the shard up to `s` (filtered
//!    ones aside) was delivered by a call that had returned by then
//!    ([`Violation::CheckpointPastUnfinished`]); and a record the filter drops is never
//!    delivered ([`Violation::FilteredDelivered`]).
//! 7. **Redeliveries have a cause**: a record processed twice was, in between, retried after
//!    a failed batch of the same worker, or its lease was taken or released, or a processor of
//!    the shard saw `lease_lost` or `shutdown_requested`
//!    ([`Violation::RedeliveryWithoutMove`]). A take or release away from one of the two
//!    workers up to one lease duration before the first delivery counts as well: a worker whose
//!    lease was stolen may go on delivering until its fencing window closes.
//!
//! Log entries carry tokio [`Instant`]s; under paused time many are equal, and the position in
//! the log breaks ties. Lease events and log entries are compared by time only, with equal
//! times counting in the worker's favour. Rules 5 and 7 need the lease history and are skipped
//! when it is empty (a store with history turned off). The checker runs in O(n log n) in the
//! size of its input.

mod lanes;
mod rules;
#[cfg(test)]
mod tests;
mod violation;

pub use violation::Violation;

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::shard::ShardId;
use crate::testing::memory_store::LeaseEvent;
use crate::testing::recording::{DeliveryLog, LogEntry};
use crate::testing::sim::record::SimRecord;

/// Everything a scenario observed, borrowed for [`check`].
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// Every record written to the stream, in write order (the simulator's `written()`).
    pub written: &'a [SimRecord],
    /// The records removed by retention (the simulator's `trimmed()`).
    pub trimmed: &'a [SimRecord],
    /// What the recording processors logged.
    pub log: &'a DeliveryLog,
    /// The lease store's history (renewals may be left out).
    pub lease_history: &'a [LeaseEvent],
    /// The workers' lease duration.
    pub lease_duration: Duration,
    /// Every shard with its parents (shards without parents may be left out).
    pub parents: &'a [(ShardId, Vec<ShardId>)],
    /// The scenario's event filter, if any: true for a record the filter drops. Such records
    /// need no delivery (rules 1, 3 and 8 leave them out) and must never be delivered
    /// ([`Violation::FilteredDelivered`]).
    pub filtered: Option<fn(&SimRecord) -> bool>,
}

/// Counts that describe a scenario's run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records written.
    pub written: usize,
    /// Records trimmed by retention.
    pub trimmed: usize,
    /// Processed deliveries, duplicates included.
    pub delivered: usize,
    /// Deliveries whose batch failed.
    pub failed: usize,
    /// Distinct records processed at least once.
    pub distinct_delivered: usize,
    /// Processed deliveries beyond the first of each record.
    pub duplicates: usize,
    /// Retained records never processed.
    pub lost: usize,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "written {}, trimmed {}, processed {} ({} distinct, {} duplicates), failed {}, lost {}",
            self.written,
            self.trimmed,
            self.delivered,
            self.distinct_delivered,
            self.duplicates,
            self.failed,
            self.lost
        )
    }
}

/// What [`check`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Every broken promise, grouped by rule.
    pub violations: Vec<Violation>,
    /// Counts of the run.
    pub stats: Stats,
    /// The earliest instant observed; the times in violations are offsets from it.
    pub origin: Option<Instant>,
}

impl Report {
    /// Most violations [`Report::assert_ok`] lists.
    pub const SHOWN_VIOLATIONS: usize = 20;

    /// True when no promise was broken.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations of one kind (see [`Violation::kind`]).
    pub fn of_kind(&self, kind: &str) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |v| v.kind() == kind)
    }

    /// Panics when a promise was broken, listing the first
    /// [`SHOWN_VIOLATIONS`](Report::SHOWN_VIOLATIONS) violations, the count of each kind and
    /// the stats.
    #[track_caller]
    pub fn assert_ok(&self) {
        if self.is_ok() {
            return;
        }
        panic!("{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_ok() {
            return write!(f, "all invariants hold; {}", self.stats);
        }
        let mut kinds: Vec<(&str, usize)> = Vec::new();
        for v in &self.violations {
            match kinds.iter_mut().find(|(k, _)| *k == v.kind()) {
                Some((_, n)) => *n += 1,
                None => kinds.push((v.kind(), 1)),
            }
        }
        let summary: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        writeln!(f, "{} invariant violations ({}):", self.violations.len(), summary.join(", "))?;
        for v in self.violations.iter().take(Self::SHOWN_VIOLATIONS) {
            writeln!(f, "  - {v}")?;
        }
        if self.violations.len() > Self::SHOWN_VIOLATIONS {
            writeln!(f, "  ... and {} more", self.violations.len() - Self::SHOWN_VIOLATIONS)?;
        }
        write!(f, "stats: {}", self.stats)
    }
}

/// Checks every rule of the module documentation against `observed`.
pub fn check(observed: &Observed<'_>) -> Report {
    observed.log.with_entries(|entries| check_entries(observed, entries))
}

fn check_entries(observed: &Observed<'_>, entries: &[LogEntry]) -> Report {
    let ix = rules::Index::build(observed, entries);
    let mut violations = Vec::new();
    rules::at_least_once(&ix, &mut violations);
    let lost = violations.iter().filter(|v| matches!(v, Violation::Lost { .. })).count();
    rules::shard_order(&ix, &mut violations);
    rules::item_order(&ix, &mut violations);
    rules::parents_first(&ix, observed.parents, &mut violations);
    if !observed.lease_history.is_empty() {
        rules::one_owner(&ix, observed.lease_duration, &mut violations);
    }
    rules::checkpoints(&ix, &mut violations);
    lanes::no_checkpoint_past_unfinished(&ix, &mut violations);
    lanes::filtered_not_delivered(&ix, &mut violations);
    if !observed.lease_history.is_empty() {
        rules::redeliveries(&ix, observed.lease_duration, &mut violations);
    }
    let stats = ix.stats(lost);
    Report { violations, stats, origin: ix.origin }
}
