//! Balancing by handoff: a worker under its target does not overwrite a live owner's lease.
//! It asks the owner for a number of leases (one small request on the owner's heartbeat,
//! which the owner reads back in the answer of its next renewal); the owner picks that many,
//! and for each checkpoints what it processed, lets its processor flush
//! (`shutdown_requested`) and releases the lease; the asker then takes them as unowned and
//! starts exactly at those checkpoints. A request still unanswered after a lease duration is
//! treated as one to a dead owner: the leases the balance wants are taken.
//!
//! What to ask and what to take is [`plan_handoffs`], a pure function over the steals the
//! balance wants and the requests in flight. A request is one entry per (asker, owner),
//! whatever the count, so heartbeats stay small however unbalanced the fleet is.

use std::collections::{BTreeMap, HashMap};
use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use super::Coordinator;
use crate::lease::balance::TakeReason;
use crate::lease::{HandoffRequest, Lease, LeaseKey, LeaseStore, LeaseUpdate, WorkerId};

/// A request this worker made to one owner and has not seen answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) leases: u32,
    pub(super) since: Instant,
}

/// What to do about the steals a take cycle wants.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct HandoffPlan {
    /// Owners to ask, with how many leases.
    pub(super) ask: Vec<(WorkerId, u32)>,
    /// Leases whose owner was asked a whole `wait` ago and still holds what the balance
    /// wants from it: taken now.
    pub(super) force: Vec<LeaseKey>,
    /// Requests in flight, by owner, to remember.
    pub(super) pending: HashMap<WorkerId, Pending>,
}

/// Decides the handoffs of one take cycle.
///
/// `wanted` are the steals the balance asks for (lease and its owner), `pending` the requests
/// in flight by owner. For each owner the balance still wants leases from: with no request in
/// flight, ask for that many; with one in flight for a whole `wait`, take the wanted leases;
/// otherwise wait (asking again, with the same start, when the count changed). A request to an
/// owner the balance no longer wants anything from was answered: done with.
pub(super) fn plan_handoffs(
    wanted: &[(LeaseKey, WorkerId)],
    pending: &HashMap<WorkerId, Pending>,
    now: Instant,
    wait: Duration,
) -> HandoffPlan {
    let mut want_from: BTreeMap<&WorkerId, Vec<&LeaseKey>> = BTreeMap::new();
    for (key, owner) in wanted {
        want_from.entry(owner).or_default().push(key);
    }
    let mut plan = HandoffPlan::default();
    for (owner, keys) in want_from {
        let count = u32::try_from(keys.len()).unwrap_or(u32::MAX);
        match pending.get(owner) {
            Some(p) if now.saturating_duration_since(p.since) >= wait => {
                plan.force.extend(keys.into_iter().cloned());
            }
            Some(p) => {
                if p.leases != count {
                    plan.ask.push((owner.clone(), count));
                }
                plan.pending.insert(owner.clone(), Pending { leases: count, since: p.since });
            }
            None => {
                plan.ask.push((owner.clone(), count));
                plan.pending.insert(owner.clone(), Pending { leases: count, since: now });
            }
        }
    }
    plan.force.sort();
    plan
}

/// Which held leases to hand over for `requests`: for each, up to its count among those not
/// handing over already (`free`, in the order given), never the same lease twice.
pub(super) fn pick_handoffs<'a>(requests: &[HandoffRequest], free: &[&'a LeaseKey]) -> Vec<(&'a LeaseKey, WorkerId)> {
    let mut left = free.iter();
    let mut out = Vec::new();
    for r in requests {
        out.extend(left.by_ref().take(r.leases as usize).map(|k| (*k, r.from.clone())));
    }
    out
}

impl<S: LeaseStore> Coordinator<S> {
    /// Hands over as many held leases as other workers asked for: each consumer stops as on
    /// a graceful shutdown (processor's `shutdown_requested`, checkpoint of what it
    /// processed) and releases its lease.
    pub(super) fn answer_handoff_requests(&self, requests: &[HandoffRequest]) {
        if requests.is_empty() {
            return;
        }
        let held: HashMap<LeaseKey, _> =
            self.held().into_iter().filter(|h| !h.handoff_requested()).map(|h| (h.key.clone(), h)).collect();
        let mut keys: Vec<&LeaseKey> = held.keys().collect();
        keys.sort();
        for (key, to) in pick_handoffs(requests, &keys) {
            let Some(h) = held.get(key) else { continue };
            tracing::info!(shard = %h.shard_id, %to, "another worker asked for leases; handing this one over");
            self.metrics.lease_handoffs.with_label_values(&["given"]).inc();
            h.request_handoff();
        }
    }

    /// Turns the plan's steals into handoff requests to their live owners: removes them from
    /// `plan`, asks the owners not yet asked, and puts back (as steals) the leases of owners
    /// asked a lease duration ago that still hold them. Marks free leases taken while a
    /// request is in flight as handed over. Returns whether anything was asked.
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
        let decided = {
            let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
            if !requests.is_empty() {
                for (_, reason) in plan.iter_mut().filter(|(_, r)| *r == TakeReason::Unowned) {
                    *reason = TakeReason::HandedOver;
                }
            }
            let decided = plan_handoffs(&wanted, &requests, now, self.config.lease_duration());
            requests.clone_from(&decided.pending);
            decided
        };
        if !decided.force.is_empty() {
            tracing::warn!(
                leases = decided.force.len(),
                "owners did not answer a handoff request within a lease duration; taking the leases as from dead owners"
            );
        }
        plan.extend(decided.force.into_iter().map(|k| (k, TakeReason::Stolen)));
        for (owner, leases) in &decided.ask {
            let heartbeats = items.iter().filter(|l| peers.get(&l.key) == Some(owner));
            for hb in heartbeats {
                match self.store.request_handoff(hb, self.me(), *leases).await {
                    Ok(LeaseUpdate::Applied(_)) => {
                        self.metrics.lease_handoffs.with_label_values(&["asked"]).inc_by(u64::from(*leases));
                        tracing::info!(%owner, leases, "asked the owner to hand leases over");
                    }
                    Ok(LeaseUpdate::Lost) => tracing::debug!(%owner, "owner's heartbeat is gone"),
                    Err(e) => tracing::debug!(%owner, error = %e, "handoff request failed; the wait runs on"),
                }
            }
        }
        !decided.ask.is_empty()
    }
}

impl<S: LeaseStore> Coordinator<S> {
    /// Withdraws this worker's handoff requests (a request for 0 leases to each owner asked):
    /// a worker that stops takes nothing, so a lease handed over to it would wait, unowned,
    /// until its peers see it gone.
    pub(crate) async fn withdraw_handoff_requests(&self) {
        let asked: Vec<WorkerId> =
            self.requests.lock().unwrap_or_else(PoisonError::into_inner).drain().map(|(owner, _)| owner).collect();
        if asked.is_empty() {
            return;
        }
        let snapshot = self.snapshot();
        for owner in &asked {
            let heartbeats = snapshot.leases.iter().filter(|l| l.key.is_heartbeat() && l.owner.as_ref() == Some(owner));
            for hb in heartbeats {
                match self.store.request_handoff(hb, self.me(), 0).await {
                    Ok(_) => tracing::debug!(%owner, "withdrew the handoff request"),
                    Err(e) => tracing::debug!(%owner, error = %e, "could not withdraw the handoff request"),
                }
            }
        }
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
    fn plan_table() {
        let wait = Duration::from_secs(10);
        let now = Instant::now() + Duration::from_secs(60);
        // (case, wanted (lease, owner), pending (owner, count, age s), ask, force, pending after)
        type Case<'a> = (
            &'a str,
            Vec<(u32, &'a str)>,
            Vec<(&'a str, u32, u64)>,
            Vec<(&'a str, u32)>,
            Vec<u32>,
            Vec<(&'a str, u32, u64)>,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "first cycle asks each owner once, with a count",
                vec![(1, "a"), (2, "a"), (3, "b")],
                vec![],
                vec![("a", 2), ("b", 1)],
                vec![],
                vec![("a", 2, 0), ("b", 1, 0)],
            ),
            (
                "in flight: wait, whichever leases were picked",
                vec![(7, "a"), (8, "a")],
                vec![("a", 2, 3)],
                vec![],
                vec![],
                vec![("a", 2, 3)],
            ),
            (
                "count changed: ask again, same start",
                vec![(7, "a")],
                vec![("a", 2, 3)],
                vec![("a", 1)],
                vec![],
                vec![("a", 1, 3)],
            ),
            (
                "unanswered for a whole wait: taken",
                vec![(7, "a"), (8, "a")],
                vec![("a", 2, 10)],
                vec![],
                vec![7, 8],
                vec![],
            ),
            ("answered (nothing wanted any more): done", vec![], vec![("a", 2, 30)], vec![], vec![], vec![]),
            (
                "two owners, each on its own",
                vec![(1, "a"), (3, "b")],
                vec![("b", 1, 11), ("a", 1, 2)],
                vec![],
                vec![3],
                vec![("a", 1, 2)],
            ),
        ];
        for (case, wanted, pending, ask, force, after) in cases {
            let wanted: Vec<(LeaseKey, WorkerId)> = wanted.iter().map(|(n, o)| (k(*n), w(o))).collect();
            let pend = |v: &[(&str, u32, u64)]| -> HashMap<WorkerId, Pending> {
                v.iter()
                    .map(|(o, c, age)| (w(o), Pending { leases: *c, since: now - Duration::from_secs(*age) }))
                    .collect()
            };
            let plan = plan_handoffs(&wanted, &pend(&pending), now, wait);
            assert_eq!(plan.ask, ask.iter().map(|(o, c)| (w(o), *c)).collect::<Vec<_>>(), "{case}: ask");
            assert_eq!(plan.force, force.iter().map(|n| k(*n)).collect::<Vec<_>>(), "{case}: force");
            assert_eq!(plan.pending, pend(&after), "{case}: pending");
        }
    }

    #[test]
    fn picks_each_lease_once_up_to_each_count() {
        let keys: Vec<LeaseKey> = (1..=5).map(k).collect();
        let free: Vec<&LeaseKey> = keys.iter().collect();
        let reqs = [HandoffRequest::new(w("x"), 2), HandoffRequest::new(w("y"), 2)];
        let picked: Vec<(u32, String)> = pick_handoffs(&reqs, &free)
            .into_iter()
            .map(|(key, to)| (keys.iter().position(|x| x == key).map_or(0, |i| i as u32 + 1), to.to_string()))
            .collect();
        assert_eq!(picked, vec![(1, "x".into()), (2, "x".into()), (3, "y".into()), (4, "y".into())]);
        let greedy = [HandoffRequest::new(w("x"), 9)];
        assert_eq!(pick_handoffs(&greedy, &free).len(), 5, "never more than held");
        assert!(pick_handoffs(&greedy, &[]).is_empty());
    }
}
