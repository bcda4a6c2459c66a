//! `kcl-admin reset`: moves an application's checkpoints, for example back after a bad
//! deploy.
//!
//! The decision is pure: [`chosen`] picks each selected shard's new checkpoint from the
//! [`ResetTarget`] (a time needs the stream: [`checkpoint_before`] over the shard's records),
//! and [`plan`] adds what lineage needs: a lease whose parent is not finished after the reset
//! goes back to TRIM_HORIZON, so a child is never ahead of its parent.
//!
//! [`apply`] then writes the plan in three rounds: it takes every planned lease as
//! [`ADMIN_OWNER`] (fencing its owner, so nothing planned is processed meanwhile), writes
//! each checkpoint, and releases them parents first, so the fleet starts each at its new
//! checkpoint and no child runs ahead of a parent while the rounds are under way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::time::SystemTime;

use kcl_core::{
    Checkpoint, Lease, LeaseKey, LeaseStore, SequenceNumber, ShardId, StartPosition, StreamRecord, StreamSource,
    WorkerId,
};

use super::{ADMIN_OWNER, AdminError};

/// Attempts at each conditional write when a racing fleet changes the lease in between.
const ATTEMPTS: usize = 8;

/// Records read per page while looking for a time.
const PAGE: usize = 1_000;

/// Where to move the checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetTarget {
    /// Every record still in the stream is processed again.
    TrimHorizon,
    /// Skip what is in the stream: open shards at LATEST, closed ones finished.
    Latest,
    /// Every record created at or after this time is processed again (as far as the stream
    /// retains it); earlier ones are not.
    Time(SystemTime),
    /// Resume right after this sequence number (one shard only: sequence numbers are per
    /// shard).
    Sequence(SequenceNumber),
}

impl FromStr for ResetTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "trim-horizon" => return Ok(ResetTarget::TrimHorizon),
            "latest" => return Ok(ResetTarget::Latest),
            _ => {}
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return SequenceNumber::parse(s).map(ResetTarget::Sequence).map_err(|e| format!("{s}: {e}"));
        }
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        match time::OffsetDateTime::parse(s, rfc3339) {
            Ok(t) => Ok(ResetTarget::Time(t.into())),
            Err(e) => Err(format!(
                "{s:?} is not a reset target ({e}): give trim-horizon, latest, an RFC 3339 time \
                 (2026-12-04T08:00:00Z) or a sequence number (digits)"
            )),
        }
    }
}

/// One lease to rewrite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The lease.
    pub key: LeaseKey,
    /// Its checkpoint before.
    pub from: Checkpoint,
    /// Its checkpoint after.
    pub to: Checkpoint,
}

/// Whether the shard of `lease` is known to be closed: finished, with children recorded, or
/// named as a parent by another lease.
fn is_closed(lease: &Lease, named_as_parent: &HashSet<&str>) -> bool {
    lease.checkpoint.is_shard_end() || !lease.child_shard_ids.is_empty() || named_as_parent.contains(lease.key.as_str())
}

/// The new checkpoint of each selected lease (`shards` empty: every lease) for targets that
/// need no stream. [`ResetTarget::Time`] is [`checkpoint_before`]'s.
pub fn chosen(
    leases: &[Lease],
    target: &ResetTarget,
    shards: &[ShardId],
) -> Result<BTreeMap<LeaseKey, Checkpoint>, AdminError> {
    for s in shards {
        if !leases.iter().any(|l| l.key.as_str() == s.as_str()) {
            return Err(AdminError::Usage(format!(
                "shard {s} has no lease in this application's lease table (see `kcl-admin status`)"
            )));
        }
    }
    if matches!(target, ResetTarget::Sequence(_)) && shards.len() != 1 {
        return Err(AdminError::Usage(
            "a sequence number belongs to one shard: give exactly one --shard with it".to_owned(),
        ));
    }
    let selected = leases.iter().filter(|l| shards.is_empty() || shards.iter().any(|s| s.as_str() == l.key.as_str()));
    let named_as_parent: HashSet<&str> =
        leases.iter().flat_map(|l| l.parent_shard_ids.iter().map(|p| p.as_str())).collect();
    let mut out = BTreeMap::new();
    for lease in selected {
        let to = match target {
            ResetTarget::TrimHorizon => Checkpoint::TrimHorizon,
            ResetTarget::Latest if is_closed(lease, &named_as_parent) => Checkpoint::ShardEnd,
            ResetTarget::Latest => Checkpoint::Latest,
            ResetTarget::Sequence(seq) => Checkpoint::At(seq.clone()),
            ResetTarget::Time(_) => {
                return Err(AdminError::Usage("a reset to a time needs the stream (--table or --stream-arn)".into()));
            }
        };
        out.insert(lease.key.clone(), to);
    }
    Ok(out)
}

/// The checkpoint that makes a shard resume at its first record created at or after `t`:
/// `records` are the shard's (sequence number, creation time) in order, from its oldest
/// retained record; `closed` says whether they are all of them. A record without a time is
/// treated as at or after `t` (processed again rather than skipped).
pub fn checkpoint_before(records: &[(SequenceNumber, Option<SystemTime>)], closed: bool, t: SystemTime) -> Checkpoint {
    match records.iter().position(|(_, time)| time.is_none_or(|time| time >= t)) {
        Some(0) => Checkpoint::TrimHorizon,
        Some(i) => Checkpoint::At(records[i - 1].0.clone()),
        None if closed => Checkpoint::ShardEnd,
        None => records.last().map_or(Checkpoint::TrimHorizon, |(seq, _)| Checkpoint::At(seq.clone())),
    }
}

/// [`chosen`] for a time: reads each selected shard from its oldest record until the first
/// record at or after `t` (or its end) and applies [`checkpoint_before`].
pub async fn chosen_at_time<S: StreamSource>(
    source: &S,
    leases: &[Lease],
    shards: &[ShardId],
    t: SystemTime,
) -> Result<BTreeMap<LeaseKey, Checkpoint>, AdminError> {
    let keys = chosen(leases, &ResetTarget::TrimHorizon, shards)?;
    let mut out = BTreeMap::new();
    for key in keys.into_keys() {
        let shard = ShardId::new(key.as_str());
        let mut records = Vec::new();
        let mut iterator = source.shard_iterator(&shard, &StartPosition::TrimHorizon).await?;
        let mut empty = 0;
        let closed = loop {
            let batch = source.read(&iterator, PAGE).await?;
            empty = if batch.records.is_empty() { empty + 1 } else { 0 };
            let reached = batch.records.iter().any(|r| r.approximate_creation_time().is_none_or(|c| c >= t));
            records.extend(batch.records.iter().map(|r| (r.sequence_number().clone(), r.approximate_creation_time())));
            match batch.next_iterator {
                None => break true,
                Some(_) if reached || empty >= 3 => break false,
                Some(next) => iterator = next,
            }
        };
        out.insert(key, checkpoint_before(&records, closed, t));
    }
    Ok(out)
}

/// The rewrites: every chosen lease (also when its checkpoint stays, so that its owner's
/// unwritten progress is dropped), and every lease that lineage sends back to TRIM_HORIZON
/// because a parent is not finished after the reset. Parents come before their children.
pub fn plan(leases: &[Lease], chosen: &BTreeMap<LeaseKey, Checkpoint>) -> Vec<Step> {
    let index: HashMap<&str, usize> = leases.iter().enumerate().map(|(i, l)| (l.key.as_str(), i)).collect();
    // Each lease's parents that have a lease, by index.
    let parents: Vec<Vec<usize>> = leases
        .iter()
        .map(|l| l.parent_shard_ids.iter().filter_map(|p| index.get(p.as_str()).copied()).collect())
        .collect();
    let mut depth = vec![None; leases.len()];
    for i in 0..leases.len() {
        generation(i, &parents, &mut depth);
    }
    // Parents first: one pass in this order settles every generation.
    let mut order: Vec<usize> = (0..leases.len()).collect();
    order.sort_by_key(|&i| (depth[i], &leases[i].key));
    let mut after: Vec<Checkpoint> =
        leases.iter().map(|l| chosen.get(&l.key).cloned().unwrap_or_else(|| l.checkpoint.clone())).collect();
    for &i in &order {
        if parents[i].iter().any(|&p| !after[p].is_shard_end()) {
            after[i] = Checkpoint::TrimHorizon;
        }
    }
    order
        .into_iter()
        .filter(|&i| chosen.contains_key(&leases[i].key) || after[i] != leases[i].checkpoint)
        .map(|i| Step { key: leases[i].key.clone(), from: leases[i].checkpoint.clone(), to: after[i].clone() })
        .collect()
}

/// The longest chain of ancestors of lease `i` among the leases (`parents` by index),
/// memoised in `depth`. A lease on a cycle (never in a real lineage) counts as a root.
fn generation(i: usize, parents: &[Vec<usize>], depth: &mut [Option<usize>]) -> usize {
    if let Some(d) = depth[i] {
        return d;
    }
    depth[i] = Some(0);
    let d = parents[i].iter().map(|&p| generation(p, parents, depth) + 1).max().unwrap_or(0);
    depth[i] = Some(d);
    d
}

/// Writes `steps` (see the module docs). Returns the leases as released.
pub async fn apply<S: LeaseStore>(store: &S, steps: &[Step]) -> Result<Vec<Lease>, AdminError> {
    let admin = WorkerId::new(ADMIN_OWNER);
    let mut taken = Vec::with_capacity(steps.len());
    for step in steps {
        match take(store, &step.key, &admin).await {
            Ok(lease) => taken.push(lease),
            Err(e) => {
                // Give back what was taken, unchanged, before failing.
                for lease in &taken {
                    let _ = store.release(lease).await;
                }
                return Err(e);
            }
        }
    }
    let mut written = Vec::with_capacity(steps.len());
    for (lease, step) in taken.iter().zip(steps) {
        // The admin owns the lease now: only a worker judging it expired (a lease duration
        // without change) could move it.
        let lease = store
            .checkpoint(lease, &step.to, None)
            .await?
            .applied()
            .ok_or_else(|| AdminError::Contended(step.key.to_string()))?;
        written.push(lease);
    }
    let mut released = Vec::with_capacity(steps.len());
    for lease in &written {
        let lease =
            store.release(lease).await?.applied().ok_or_else(|| AdminError::Contended(lease.key.to_string()))?;
        released.push(lease);
    }
    Ok(released)
}

async fn take<S: LeaseStore>(store: &S, key: &LeaseKey, admin: &WorkerId) -> Result<Lease, AdminError> {
    for _ in 0..ATTEMPTS {
        let Some(current) = store.get(key).await? else {
            return Err(AdminError::Usage(format!("lease {key} was deleted meanwhile; run the command again")));
        };
        if let Some(lease) = store.take(&current, admin).await?.applied() {
            return Ok(lease);
        }
    }
    Err(AdminError::Contended(key.to_string()))
}

#[cfg(test)]
#[path = "reset_tests.rs"]
mod tests;
