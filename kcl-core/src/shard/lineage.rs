//! Shard lineage as plain functions: which leases to create, whether a child may start, and
//! which finished leases to delete.

use std::collections::{HashMap, HashSet};

use crate::checkpoint::Checkpoint;
use crate::config::InitialPosition;
use crate::lease::Lease;
use crate::shard::ShardId;
use crate::source::ShardDescription;

/// Leases to create for shards that have none, parents before children.
///
/// - A shard whose parent has (or gets, in this pass) a lease that is not a skipped root is a
///   child: it starts at `TRIM_HORIZON`, so nothing after its parent is missed.
/// - Other shards are roots: they start at `initial`. With [`InitialPosition::Latest`], a
///   closed root is created already at `SHARD_END` (its data predates the application), and
///   its descendants are treated as roots too.
/// - A shard that has no lease but a descendant that has is finished (its lease was cleaned
///   up): it is not created again.
pub(crate) fn leases_to_create(
    shards: &[ShardDescription],
    existing: &HashMap<ShardId, Checkpoint>,
    initial: InitialPosition,
) -> Vec<Lease> {
    let by_id: HashMap<&ShardId, &ShardDescription> = shards.iter().map(|s| (&s.id, s)).collect();
    // Ancestors of shards that have leases are finished (their leases were cleaned up).
    let mut finished: HashSet<&ShardId> = HashSet::new();
    let mut walk: Vec<&ShardId> = shards.iter().filter(|s| existing.contains_key(&s.id)).map(|s| &s.id).collect();
    while let Some(id) = walk.pop() {
        for p in by_id.get(id).map(|s| s.parent_ids.as_slice()).unwrap_or_default() {
            if !existing.contains_key(p) && finished.insert(p) {
                walk.push(p);
            }
        }
    }
    // Shards handled so far in this pass: true when "real" (a child may follow it), false when
    // a root skipped because of LATEST.
    let mut decided: HashMap<&ShardId, bool> = HashMap::new();
    let mut out = Vec::new();
    // Depth-first over parents, iteratively, so that long lineages do not recurse deeply.
    for start in shards {
        let mut stack = vec![start];
        while let Some(shard) = stack.last().copied() {
            if decided.contains_key(&shard.id) {
                stack.pop();
                continue;
            }
            let pending: Vec<&ShardDescription> = shard
                .parent_ids
                .iter()
                .filter(|p| !decided.contains_key(p) && !existing.contains_key(*p))
                .filter_map(|p| by_id.get(p).copied())
                .collect();
            if !pending.is_empty() {
                stack.extend(pending);
                continue;
            }
            stack.pop();
            if existing.contains_key(&shard.id) {
                decided.insert(&shard.id, true);
                continue;
            }
            if finished.contains(&shard.id) {
                decided.insert(&shard.id, true);
                continue;
            }
            let has_real_parent =
                shard.parent_ids.iter().any(|p| existing.contains_key(p) || decided.get(p).copied().unwrap_or(false));
            let checkpoint = match (has_real_parent, initial) {
                (true, _) | (false, InitialPosition::TrimHorizon) => Checkpoint::TrimHorizon,
                (false, InitialPosition::Latest) if shard.is_closed() => Checkpoint::ShardEnd,
                (false, InitialPosition::Latest) => Checkpoint::Latest,
            };
            decided.insert(&shard.id, checkpoint != Checkpoint::ShardEnd);
            out.push(Lease::new_for_shard(&shard.id, checkpoint, shard.parent_ids.clone()));
        }
    }
    out
}

/// Whether a child may start: every parent's lease is at `SHARD_END`, or gone (cleaned up
/// after finishing, or never created because the parent left the stream).
pub(crate) fn first_unfinished_parent(
    parents: &[ShardId],
    checkpoint_of: impl Fn(&ShardId) -> Option<Checkpoint>,
) -> Option<&ShardId> {
    parents.iter().find(|p| checkpoint_of(p).is_some_and(|c| !c.is_shard_end()))
}

/// Finished leases that may be deleted: at `SHARD_END`, unowned, and either every child has
/// started (moved past its start position) or the shard left the stream with every child it
/// had holding a lease.
pub(crate) fn leases_to_delete<'a>(leases: &'a [Lease], shards: &[ShardDescription]) -> Vec<&'a Lease> {
    let in_stream: HashSet<&ShardId> = shards.iter().map(|s| &s.id).collect();
    let mut children: HashMap<&ShardId, Vec<&ShardId>> = HashMap::new();
    for s in shards {
        for p in &s.parent_ids {
            children.entry(p).or_default().push(&s.id);
        }
    }
    let by_shard: HashMap<ShardId, &Lease> = leases.iter().filter_map(|l| l.key.shard_id().map(|id| (id, l))).collect();
    let started = |id: &ShardId| {
        by_shard.get(id).is_some_and(|l| matches!(l.checkpoint, Checkpoint::At(_) | Checkpoint::ShardEnd))
    };
    let mut out = Vec::new();
    for lease in leases {
        let Some(id) = lease.key.shard_id() else { continue };
        if !lease.checkpoint.is_shard_end() || lease.owner.is_some() {
            continue;
        }
        let mut kids: Vec<&ShardId> = children.get(&id).cloned().unwrap_or_default();
        kids.extend(lease.child_shard_ids.iter());
        let deletable = if in_stream.contains(&id) {
            !kids.is_empty() && kids.iter().all(|k| started(k))
        } else {
            kids.iter().all(|k| by_shard.contains_key(*k))
        };
        if deletable {
            out.push(lease);
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::checkpoint::SequenceNumber;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ShardDescription {
        ShardDescription {
            id: ShardId::new(id),
            parent_ids: parents.iter().map(|p| ShardId::new(*p)).collect(),
            starting_sequence_number: Some(SequenceNumber::from_u128(1)),
            ending_sequence_number: closed.then(|| SequenceNumber::from_u128(9)),
        }
    }

    fn created(
        shards: &[ShardDescription],
        existing: &[(&str, Checkpoint)],
        initial: InitialPosition,
    ) -> Vec<(String, Checkpoint)> {
        let existing: HashMap<ShardId, Checkpoint> =
            existing.iter().map(|(id, c)| (ShardId::new(*id), c.clone())).collect();
        leases_to_create(shards, &existing, initial).into_iter().map(|l| (l.key.to_string(), l.checkpoint)).collect()
    }

    #[test]
    fn creation_table() {
        use Checkpoint::*;
        use InitialPosition as P;
        // Listing deliberately puts children before parents.
        let lineage = vec![
            shard("c1", &["p"], false),
            shard("c2", &["p"], false),
            shard("p", &["g"], true),
            shard("g", &[], true),
        ];
        type Case<'a> = (Vec<(&'a str, Checkpoint)>, P, Vec<(&'a str, Checkpoint)>);
        let cases: Vec<Case<'_>> = vec![
            // Fresh table, TRIM_HORIZON: everything from the start, parents first.
            (
                vec![],
                P::TrimHorizon,
                vec![("g", TrimHorizon), ("p", TrimHorizon), ("c1", TrimHorizon), ("c2", TrimHorizon)],
            ),
            // Fresh table, LATEST: closed ancestors skipped, open leaves at LATEST.
            (vec![], P::Latest, vec![("g", ShardEnd), ("p", ShardEnd), ("c1", Latest), ("c2", Latest)]),
            // Parent already leased: children are children (TRIM_HORIZON) whatever the initial position.
            (
                vec![("g", ShardEnd), ("p", At(SequenceNumber::from_u128(5)))],
                P::Latest,
                vec![("c1", TrimHorizon), ("c2", TrimHorizon)],
            ),
            // A cleaned-up ancestor is not created again when its children have leases.
            (vec![("c1", TrimHorizon), ("c2", TrimHorizon)], P::TrimHorizon, vec![]),
        ];
        for (existing, initial, want) in cases {
            let got = created(&lineage, &existing, initial);
            let want: Vec<(String, Checkpoint)> = want.into_iter().map(|(k, c)| (k.to_owned(), c)).collect();
            assert_eq!(got, want, "existing={existing:?} initial={initial:?}");
        }
    }

    #[test]
    fn child_records_parents() {
        let got = leases_to_create(
            &[shard("p", &[], true), shard("c", &["p"], false)],
            &HashMap::new(),
            InitialPosition::TrimHorizon,
        );
        assert_eq!(got[1].parent_shard_ids, vec![ShardId::new("p")]);
    }

    #[test]
    fn parents_gate() {
        let parents = vec![ShardId::new("a"), ShardId::new("b")];
        let state = |a: Option<Checkpoint>, b: Option<Checkpoint>| {
            move |id: &ShardId| if id.as_str() == "a" { a.clone() } else { b.clone() }
        };
        let at = Checkpoint::At(SequenceNumber::from_u128(3));
        assert_eq!(
            first_unfinished_parent(&parents, state(Some(Checkpoint::ShardEnd), Some(Checkpoint::ShardEnd))),
            None
        );
        assert_eq!(first_unfinished_parent(&parents, state(None, Some(Checkpoint::ShardEnd))), None);
        assert_eq!(first_unfinished_parent(&parents, state(None, None)), None);
        assert_eq!(
            first_unfinished_parent(&parents, state(Some(Checkpoint::ShardEnd), Some(at))).map(ShardId::as_str),
            Some("b")
        );
        assert_eq!(
            first_unfinished_parent(&parents, state(Some(Checkpoint::TrimHorizon), None)).map(ShardId::as_str),
            Some("a")
        );
    }

    #[test]
    fn deletion_table() {
        let lease = |id: &str, cp: Checkpoint, owner: Option<&str>| {
            let mut l = Lease::new_for_shard(&ShardId::new(id), cp, vec![]);
            l.owner = owner.map(crate::lease::WorkerId::new);
            l
        };
        let at = || Checkpoint::At(SequenceNumber::from_u128(3));
        let listing = vec![shard("p", &[], true), shard("c", &["p"], false)];
        let cases = vec![
            (vec![lease("p", Checkpoint::ShardEnd, None), lease("c", at(), Some("w"))], listing.clone(), vec!["p"]),
            (
                vec![lease("p", Checkpoint::ShardEnd, None), lease("c", Checkpoint::TrimHorizon, Some("w"))],
                listing.clone(),
                vec![],
            ),
            (vec![lease("p", Checkpoint::ShardEnd, Some("w")), lease("c", at(), None)], listing.clone(), vec![]),
            (vec![lease("p", at(), None), lease("c", at(), None)], listing.clone(), vec![]),
            // Gone from the stream, child leased: delete even though the child is idle.
            (
                vec![lease("p", Checkpoint::ShardEnd, None), lease("c", Checkpoint::TrimHorizon, None)],
                vec![shard("c", &["p"], false)],
                vec!["p"],
            ),
            // Closed with no children listed yet: keep (children may appear late).
            (vec![lease("p", Checkpoint::ShardEnd, None)], vec![shard("p", &[], true)], vec![]),
        ];
        for (leases, shards, want) in cases {
            let got: Vec<&str> = leases_to_delete(&leases, &shards).iter().map(|l| l.key.as_str()).collect();
            assert_eq!(got, want, "{leases:?}");
        }
    }
}
