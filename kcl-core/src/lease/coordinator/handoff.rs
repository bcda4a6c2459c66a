//! Balancing by handoff: a worker under its target does not overwrite a live owner's lease.
//! It asks the owner (a request added to the owner's heartbeat, which the owner reads back in
//! the answer of its next renewal); the owner checkpoints what it processed, lets its
//! processor flush (`shutdown_requested`) and releases the lease; the asker then takes it as
//! unowned and starts exactly at that checkpoint. A request still unanswered after a lease
//! duration is treated as one to a dead owner: the lease is taken.
//!
//! Which leases to ask for and which to take is [`plan_handoffs`], a pure function over the
//! steals the balance wants, the table's owners and the requests in flight.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use super::Coordinator;
use crate::lease::balance::TakeReason;
use crate::lease::{Lease, LeaseKey, LeaseStore, LeaseUpdate, WorkerId};

/// A request this worker made and has not seen answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) owner: WorkerId,
    pub(super) since: Instant,
}

/// What to do about the steals a take cycle wants.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct HandoffPlan {
    /// Leases to ask their owners for.
    pub(super) ask: Vec<LeaseKey>,
    /// Leases asked for a whole `wait` ago and still with the same owner: taken now.
    pub(super) force: Vec<LeaseKey>,
    /// Requests still in flight (with their owner unchanged), to remember.
    pub(super) pending: HashMap<LeaseKey, Pending>,
}

/// Decides the handoffs of one take cycle.
///
/// `wanted` are the steals the balance asks for (lease and its owner); `owner_of` gives each
/// shard lease's owner in the current snapshot; `pending` are the requests in flight. For each
/// owner, the requests already in flight count towards what is wanted from it (so a cycle
/// never asks for more than the balance needs, whichever leases it picked this time); those
/// older than `wait` are taken, oldest first; the rest of what is wanted is asked for. A
/// request whose lease changed owner (handed over, or taken by anyone) is done with.
pub(super) fn plan_handoffs(
    wanted: &[(LeaseKey, WorkerId)],
    owner_of: impl Fn(&LeaseKey) -> Option<WorkerId>,
    pending: &HashMap<LeaseKey, Pending>,
    now: Instant,
    wait: Duration,
) -> HandoffPlan {
    let mut still: Vec<(&LeaseKey, &Pending)> =
        pending.iter().filter(|(k, p)| owner_of(k).as_ref() == Some(&p.owner)).collect();
    still.sort_by(|a, b| (a.1.since, a.0).cmp(&(b.1.since, b.0)));
    let mut want_from: HashMap<&WorkerId, Vec<&LeaseKey>> = HashMap::new();
    for (key, owner) in wanted {
        want_from.entry(owner).or_default().push(key);
    }
    let mut plan = HandoffPlan::default();
    for (owner, keys) in want_from {
        let in_flight: Vec<&(&LeaseKey, &Pending)> = still.iter().filter(|(_, p)| &p.owner == owner).collect();
        let due = in_flight.iter().filter(|(_, p)| now.saturating_duration_since(p.since) >= wait);
        plan.force.extend(due.take(keys.len()).map(|(k, _)| (*k).clone()));
        let more = keys.len().saturating_sub(in_flight.len());
        let asked: Vec<&LeaseKey> = in_flight.iter().map(|(k, _)| *k).collect();
        plan.ask.extend(keys.iter().filter(|k| !asked.contains(k)).take(more).map(|k| (*k).clone()));
    }
    plan.force.sort();
    plan.ask.sort();
    for (key, p) in still {
        if !plan.force.contains(key) {
            plan.pending.insert(key.clone(), p.clone());
        }
    }
    for key in &plan.ask {
        if let Some(owner) = owner_of(key) {
            plan.pending.insert(key.clone(), Pending { owner, since: now });
        }
    }
    plan
}

impl<S: LeaseStore> Coordinator<S> {
    /// Hands over each held lease another worker asked for: its consumer stops as on a
    /// graceful shutdown (processor's `shutdown_requested`, checkpoint of what it processed)
    /// and releases the lease.
    pub(super) fn answer_handoff_requests(&self, requested: &[LeaseKey]) {
        for key in requested {
            let held = self.held.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned();
            if let Some(h) = held.filter(|h| !h.handoff_requested()) {
                tracing::info!(shard = %h.shard_id, "another worker asked for this lease; handing it over");
                self.metrics.lease_handoffs.with_label_values(&["given"]).inc();
                h.request_handoff();
            }
        }
    }

    /// Turns the plan's steals into handoff requests to their live owners ([`handoff`]):
    /// removes them from `plan`, asks for those not yet asked for, and puts back (as steals)
    /// those asked for a lease duration ago and still unanswered. Marks takes of leases that
    /// were handed over on request. Returns whether anything was asked.
    pub(super) async fn ask_for_steals(
        &self,
        plan: &mut Vec<(LeaseKey, TakeReason)>,
        by_key: &HashMap<&LeaseKey, &Lease>,
        items: &[Lease],
        peers: &HashMap<LeaseKey, WorkerId>,
        now: Instant,
    ) -> bool {
        let wanted: Vec<(LeaseKey, WorkerId)> = plan
            .iter()
            .filter(|(_, r)| *r == TakeReason::Stolen)
            .filter_map(|(k, _)| by_key.get(k).and_then(|l| l.owner.clone()).map(|o| (k.clone(), o)))
            .collect();
        plan.retain(|(_, r)| *r != TakeReason::Stolen);
        let owner_of = |k: &LeaseKey| by_key.get(k).and_then(|l| l.owner.clone());
        let decided = {
            let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            // A free lease this worker asked for was handed over.
            for (key, reason) in plan.iter_mut() {
                if *reason == TakeReason::Unowned && requests.contains_key(key) {
                    *reason = TakeReason::HandedOver;
                }
            }
            let decided = plan_handoffs(&wanted, owner_of, &requests, now, self.config.lease_duration());
            requests.clone_from(&decided.pending);
            decided
        };
        for key in decided.force {
            tracing::warn!(shard = %key, owner = ?owner_of(&key),
                "owner did not answer a handoff request within a lease duration; taking the lease as from a dead owner");
            plan.push((key, TakeReason::Stolen));
        }
        for key in &decided.ask {
            let Some(owner) = owner_of(key) else { continue };
            let heartbeats = items.iter().filter(|l| peers.get(&l.key) == Some(&owner));
            for hb in heartbeats {
                match self.store.request_handoff(hb, key).await {
                    Ok(LeaseUpdate::Applied(_)) => {
                        self.metrics.lease_handoffs.with_label_values(&["asked"]).inc();
                        tracing::info!(shard = %key, %owner, "asked the owner to hand the lease over");
                    }
                    Ok(LeaseUpdate::Lost) => tracing::debug!(shard = %key, %owner, "owner's heartbeat is gone"),
                    Err(e) => tracing::debug!(shard = %key, error = %e, "handoff request failed; the wait runs on"),
                }
            }
        }
        !decided.ask.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u32) -> LeaseKey {
        LeaseKey::from_raw(format!("shard-{n}"))
    }

    fn w(name: &str) -> WorkerId {
        WorkerId::new(name)
    }

    #[test]
    fn table() {
        let t0 = Instant::now();
        let wait = Duration::from_secs(10);
        // (case, wanted, pending (key, owner, age s), table owners, now after t0 s, ask, force)
        type Case<'a> =
            (&'a str, Vec<(u32, &'a str)>, Vec<(u32, &'a str, u64)>, Vec<(u32, &'a str)>, Vec<u32>, Vec<u32>);
        let cases: Vec<Case<'_>> = vec![
            (
                "first cycle asks for what the balance wants",
                vec![(1, "a"), (2, "a")],
                vec![],
                vec![(1, "a"), (2, "a")],
                vec![1, 2],
                vec![],
            ),
            (
                "a request in flight counts, whichever lease was picked",
                vec![(2, "a")],
                vec![(1, "a", 3)],
                vec![(1, "a"), (2, "a")],
                vec![],
                vec![],
            ),
            (
                "unanswered for a whole wait: taken",
                vec![(2, "a")],
                vec![(1, "a", 10)],
                vec![(1, "a"), (2, "a")],
                vec![],
                vec![1],
            ),
            (
                "answered (released) request is done; ask again if still wanted",
                vec![(2, "a")],
                vec![(1, "a", 3)],
                vec![(2, "a")],
                vec![2],
                vec![],
            ),
            ("taken by someone else: done", vec![], vec![(1, "a", 30)], vec![(1, "b")], vec![], vec![]),
            (
                "no longer wanted: kept in flight, never forced",
                vec![],
                vec![(1, "a", 30)],
                vec![(1, "a")],
                vec![],
                vec![],
            ),
            (
                "two owners, each on its own",
                vec![(1, "a"), (3, "b"), (4, "b")],
                vec![(3, "b", 11)],
                vec![(1, "a"), (3, "b"), (4, "b")],
                vec![1, 4],
                vec![3],
            ),
            (
                "forced no more than wanted, oldest first",
                vec![(1, "a")],
                vec![(1, "a", 12), (2, "a", 15)],
                vec![(1, "a"), (2, "a")],
                vec![],
                vec![2],
            ),
        ];
        for (case, wanted, pending, owners, ask, force) in cases {
            let now = t0 + Duration::from_secs(60);
            let wanted: Vec<(LeaseKey, WorkerId)> = wanted.iter().map(|(n, o)| (k(*n), w(o))).collect();
            let pending: HashMap<LeaseKey, Pending> = pending
                .iter()
                .map(|(n, o, age)| (k(*n), Pending { owner: w(o), since: now - Duration::from_secs(*age) }))
                .collect();
            let owners: HashMap<LeaseKey, WorkerId> = owners.iter().map(|(n, o)| (k(*n), w(o))).collect();
            let plan = plan_handoffs(&wanted, |key| owners.get(key).cloned(), &pending, now, wait);
            assert_eq!(plan.ask, ask.iter().map(|n| k(*n)).collect::<Vec<_>>(), "{case}: ask");
            assert_eq!(plan.force, force.iter().map(|n| k(*n)).collect::<Vec<_>>(), "{case}: force");
            for key in plan.ask.iter() {
                assert_eq!(plan.pending.get(key).map(|p| p.since), Some(now), "{case}: asked now");
            }
            for key in plan.force.iter() {
                assert!(!plan.pending.contains_key(key), "{case}: a forced lease is no longer pending");
            }
        }
    }
}
