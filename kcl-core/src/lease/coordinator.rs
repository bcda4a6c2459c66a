//! The lease coordinator: this worker's heartbeat, the renewer and the taker.
//!
//! - **Heartbeat**: one item per running worker, renewed every lease duration / 3 on its own
//!   timer. It is what proves that the worker holds its leases: every held lease is fenced on
//!   it, so a worker whose heartbeat stopped changing has stopped delivering. Its renewal's
//!   answer carries the handoff requests of other workers ([`handoff`]).
//! - **Renewer** (only with [`LeaseRenewal::EveryLease`]): also renews each held lease a third
//!   of the lease duration after its last renewal was sent, as Java KCL does. By default a
//!   held lease is not written while nothing changes.
//! - **Taker**: once per take interval, scans the table and judges expiry by the local
//!   monotonic clock: a lease is expired when its owner's heartbeat is judged dead, or when its
//!   owner has no live heartbeat and the lease's counter has not changed for a whole lease
//!   duration as observed here. Takes what is free per [`plan_takes`], and asks live owners
//!   for what the balance wants from them instead of overwriting their leases. Between scans
//!   it reads only the other workers' heartbeats (one small read each); when one has stopped
//!   changing for a lease duration, that worker's leases are taken at once, so failover needs
//!   about one lease duration.
//!
//! [`LeaseRenewal::EveryLease`]: crate::config::LeaseRenewal::EveryLease

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod handoff;
mod identity;
mod renew;
#[cfg(all(test, feature = "testing"))]
mod tenure_tests;
mod watch;

use super::balance::{Candidate, TakeReason, plan_takes};
use super::held::{HeldLease, Liveness};
use super::{Lease, LeaseKey, LeaseStore, LeaseStoreError, LeaseUpdate, WorkerId};
use crate::checkpoint::Checkpoint;
use crate::config::{Config, LeaseRenewal};
use crate::metrics::Metrics;

/// Attempts at registering the heartbeat when a worker starts, for retryable errors.
const START_RETRIES: usize = 10;

/// Which shards' leases this worker considers: those its source consumes
/// ([`StreamSource::consumes`](crate::StreamSource::consumes)). The others are left alone.
#[derive(Clone)]
pub(crate) struct Scope(pub(crate) Arc<dyn Fn(&crate::shard::ShardId) -> bool + Send + Sync>);

impl Scope {
    /// Whether the lease of `key` is this worker's concern (heartbeats always are).
    fn contains(&self, key: &LeaseKey) -> bool {
        key.shard_id().is_none_or(|s| (self.0)(&s))
    }
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scope")
    }
}

/// Concurrent lease-table writes of a take cycle.
const WRITE_CONCURRENCY: usize = 32;

/// A counter value and when this worker first saw it.
#[derive(Debug, Clone, Copy)]
struct Observation {
    counter: u64,
    since: Instant,
}

#[derive(Debug, Default)]
struct Observations {
    by_key: HashMap<LeaseKey, Observation>,
}

impl Observations {
    fn observe(&mut self, key: &LeaseKey, counter: u64, now: Instant) -> Observation {
        let obs = self.by_key.entry(key.clone()).or_insert(Observation { counter, since: now });
        if obs.counter != counter {
            *obs = Observation { counter, since: now };
        }
        *obs
    }
}

/// The last full scan, shared with shard sync so that it needs no scan of its own.
#[derive(Debug, Default, Clone)]
pub(crate) struct TableSnapshot {
    pub(crate) leases: Arc<Vec<Lease>>,
    pub(crate) taken_at: Option<Instant>,
}

/// What a take cycle acquired.
#[derive(Debug, Default)]
pub(crate) struct TakeOutcome {
    pub(crate) acquired: Vec<Arc<HeldLease>>,
    /// Some takes lost a race: worth another cycle soon.
    pub(crate) contended: bool,
    /// Handoffs were asked for: worth another cycle once the owners had a renewal to answer.
    pub(crate) asked: bool,
}

/// This worker's side of the lease table.
#[derive(Debug)]
pub(crate) struct Coordinator<S> {
    store: Arc<S>,
    config: Arc<Config>,
    metrics: Metrics,
    liveness: Arc<Liveness>,
    heartbeat: tokio::sync::Mutex<Lease>,
    held: Mutex<HashMap<LeaseKey, Arc<HeldLease>>>,
    observations: Mutex<Observations>,
    /// Heartbeat keys of other workers, by owner, from the last scan.
    peers: Mutex<HashMap<LeaseKey, WorkerId>>,
    /// Workers judged dead by their heartbeats, remembered until they own no lease (another
    /// worker may delete a dead heartbeat before this one has taken what it needs) or until
    /// they have a live heartbeat again (a new incarnation, after a pause or a partition).
    dead: Mutex<HashSet<WorkerId>>,
    /// The heartbeats judged dead, with the counter they had then. A dead heartbeat whose
    /// counter moved since belongs to a worker that came back before it was removed: alive.
    dead_heartbeats: Mutex<HashMap<LeaseKey, u64>>,
    snapshot: Mutex<TableSnapshot>,
    /// The change notice's counter at the last read (`Some(None)`: read, absent).
    notice_seen: Mutex<Option<Option<u64>>>,
    /// Handoff requests this worker made and has not seen answered.
    requests: Mutex<HashMap<WorkerId, handoff::Pending>>,
    token: CancellationToken,
    seed: u64,
    cycles: std::sync::atomic::AtomicU64,
    /// Whether a live heartbeat of another process with this worker id was reported.
    twin_reported: std::sync::atomic::AtomicBool,
    /// The shards whose leases this worker considers.
    scope: Scope,
}

impl<S: LeaseStore> Coordinator<S> {
    /// Registers this worker's heartbeat. Fails when the lease table cannot be written.
    pub(crate) async fn start(
        store: Arc<S>,
        config: Arc<Config>,
        metrics: Metrics,
        token: CancellationToken,
        scope: Scope,
    ) -> Result<Self, LeaseStoreError> {
        let seed = incarnation_seed(config.worker_id());
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(config.min_retry_backoff)
            .with_max_delay(config.max_retry_backoff)
            .with_jitter()
            .with_max_times(START_RETRIES)
            .build();
        let (sent, heartbeat) = loop {
            let sent = Instant::now();
            match register_heartbeat(&*store, config.worker_id(), seed).await {
                Ok(hb) => break (sent, hb),
                Err(e) if e.is_retryable() => match delays.next() {
                    Some(d) => {
                        tracing::warn!(error = %e, retry_in = ?d, "cannot register in the lease table yet; retrying");
                        tokio::time::sleep(d).await;
                    }
                    None => return Err(e),
                },
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            twin_reported: std::sync::atomic::AtomicBool::new(false),
            scope,
            store,
            metrics,
            liveness: Arc::new(Liveness::new(sent)),
            heartbeat: tokio::sync::Mutex::new(heartbeat),
            held: Mutex::new(HashMap::new()),
            observations: Mutex::new(Observations::default()),
            peers: Mutex::new(HashMap::new()),
            dead: Mutex::new(HashSet::new()),
            dead_heartbeats: Mutex::new(HashMap::new()),
            snapshot: Mutex::new(TableSnapshot::default()),
            requests: Mutex::new(HashMap::new()),
            notice_seen: Mutex::new(None),
            token,
            seed,
            cycles: std::sync::atomic::AtomicU64::new(0),
            config,
        })
    }

    pub(crate) fn me(&self) -> &WorkerId {
        self.config.worker_id()
    }

    pub(crate) fn held(&self) -> Vec<Arc<HeldLease>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// Whether the last scan saw another live worker.
    pub(crate) fn has_peers(&self) -> bool {
        !self.peers.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
    }

    pub(crate) fn held_count(&self) -> usize {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    pub(crate) fn snapshot(&self) -> TableSnapshot {
        self.snapshot.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Forgets one tenure of a lease this worker stopped consuming (released, ended or lost),
    /// and stops it. Only that tenure: when the lease was taken again since (a handoff this
    /// worker's next take cycle undid, as it was under target), the new tenure stays held.
    pub(crate) fn forget(&self, held: &HeldLease) {
        {
            let mut map = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if map.get(&held.key).is_some_and(|h| std::ptr::eq(Arc::as_ptr(h), held)) {
                map.remove(&held.key);
            }
        }
        held.mark_lost();
        self.metrics.leases_held.set(self.held_count() as i64);
    }

    fn lost(&self, held: &HeldLease) {
        tracing::warn!(shard = %held.shard_id, "lease lost to another worker; stopping delivery");
        self.metrics.leases_lost.inc();
        self.forget(held);
    }

    async fn renew_one(&self, h: &Arc<HeldLease>) {
        let mut lease = h.lock().await;
        if h.is_lost() {
            return;
        }
        let sent = Instant::now();
        match self.store.renew(&lease).await {
            Ok(LeaseUpdate::Applied(updated)) => {
                *lease = updated;
                h.renewed(sent);
            }
            Ok(LeaseUpdate::Lost) => {
                drop(lease);
                self.lost(h);
            }
            Err(e) => {
                self.metrics.renewal_failures.inc();
                tracing::warn!(shard = %h.shard_id, error = %e, "lease renewal failed; will retry");
            }
        }
    }

    /// Renews this worker's heartbeat (every lease is fenced on it).
    pub(crate) async fn renew_heartbeat(&self) {
        let mut hb = self.heartbeat.lock().await;
        let sent = Instant::now();
        match self.store.renew(&hb).await {
            Ok(LeaseUpdate::Applied(updated)) => {
                self.liveness.heartbeat_renewed(sent);
                self.answer_handoff_requests(&updated.handoff_requests);
                // Kept as the expected value: the next renewal removes the requests seen now.
                *hb = updated;
            }
            Ok(LeaseUpdate::Lost) => {
                // Another worker judged this one dead and removed its heartbeat: it may take
                // every lease now, so stop them all and start over as a new incarnation.
                tracing::error!(worker = %self.me(), "heartbeat was removed by another worker; dropping all leases");
                for h in self.held() {
                    self.lost(&h);
                }
                match register_heartbeat(&*self.store, self.me(), incarnation_seed(self.me())).await {
                    Ok(fresh) => {
                        *hb = fresh;
                        self.liveness.heartbeat_renewed(sent);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot register a new heartbeat; will retry"),
                }
            }
            Err(e) => {
                self.metrics.renewal_failures.inc();
                tracing::warn!(error = %e, "heartbeat renewal failed; will retry");
            }
        }
    }

    /// Reads the heartbeats this worker watches ([`watch`]) and the change notice. Returns
    /// true when a worker was newly judged dead, here or by another worker: time to take.
    pub(crate) async fn poll_heartbeats(&self) -> bool {
        let peers: Vec<(LeaseKey, WorkerId)> = self
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, w)| (k.clone(), w.clone()))
            .collect();
        let peers = watch::watched(self.me(), &peers, watch::WATCHERS);
        let mut newly_dead = false;
        for (key, worker) in peers {
            // Eventually consistent: a stale counter only makes the worker look alive longer.
            let read = self.store.peek(&key).await;
            // Taken after the read: a change is dated when this worker learned of it, never
            // earlier (a worker paused between sending and reading the answer would otherwise
            // date a fresh renewal back to before its pause and judge a live peer dead).
            let now = Instant::now();
            let expired = match read {
                Ok(Some(item)) => {
                    let obs = self.observations.lock().unwrap_or_else(PoisonError::into_inner).observe(
                        &key,
                        item.counter,
                        now,
                    );
                    (now.duration_since(obs.since) >= self.config.lease_duration()).then_some(Some(item.counter))
                }
                // Gone: its owner removed it on a clean stop, or another worker judged it dead.
                Ok(None) => Some(None),
                Err(e) => {
                    tracing::debug!(error = %e, "heartbeat read failed");
                    None
                }
            };
            if let Some(counter) = expired {
                self.peers.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
                if let Some(counter) = counter {
                    self.dead_heartbeats.lock().unwrap_or_else(PoisonError::into_inner).insert(key.clone(), counter);
                }
                let first_time = self.dead.lock().unwrap_or_else(PoisonError::into_inner).insert(worker.clone());
                if first_time {
                    tracing::info!(%worker, heartbeat = %key, removed = counter.is_none(),
                        "worker stopped renewing its heartbeat; taking over its leases");
                    newly_dead = true;
                }
            }
        }
        if newly_dead {
            self.announce_change().await;
            return true;
        }
        self.notice_changed().await
    }

    /// One take cycle: scan, judge expiry, take and steal.
    pub(crate) async fn take_cycle(&self) -> TakeOutcome {
        let items = match self.store.list().await {
            Ok(mut items) => {
                // Leases of streams this worker is not configured for are not its concern.
                items.retain(|l| self.scope.contains(&l.key));
                Arc::new(items)
            }
            Err(e) => {
                self.metrics.lease_table_errors.with_label_values(&["list"]).inc();
                tracing::warn!(error = %e, "lease table scan failed; will retry next cycle");
                return TakeOutcome::default();
            }
        };
        let now = Instant::now();
        let lease_duration = self.config.lease_duration();
        let my_heartbeat = self.heartbeat.lock().await.key.clone();
        let mut live: BTreeSet<WorkerId> = BTreeSet::new();
        let mut peers = HashMap::new();
        let mut dead_heartbeats = Vec::new();
        let mut expired_keys: HashMap<LeaseKey, std::time::Duration> = HashMap::new();
        let dead_before = self.dead.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let dead_heartbeats_before = self.dead_heartbeats.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut dead_heartbeats_now = HashMap::new();
        {
            let mut obs = self.observations.lock().unwrap_or_else(PoisonError::into_inner);
            let present: HashSet<&LeaseKey> = items.iter().map(|l| &l.key).collect();
            obs.by_key.retain(|k, _| present.contains(k));
            for item in items.iter() {
                let o = obs.observe(&item.key, item.counter, now);
                let unchanged_for = now.duration_since(o.since);
                if unchanged_for >= lease_duration {
                    expired_keys.insert(item.key.clone(), unchanged_for);
                }
            }
        }
        let mut dead: HashSet<WorkerId> = HashSet::new();
        let mut twin = false;
        for item in items.iter().filter(|l| l.key.is_heartbeat() && l.key != my_heartbeat) {
            let Some(owner) = item.owner.clone() else { continue };
            if &owner == self.me() && !expired_keys.contains_key(&item.key) {
                // Another process with this id (it passed its start check while this one was
                // paused): leases owned by this id are not leftovers then.
                twin = true;
                if !self.twin_reported.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::error!(worker = %owner, heartbeat = %item.key,
                        "another live process uses this worker id; give every process its own worker id");
                }
                continue;
            }
            // Judged by this heartbeat alone: a worker remembered as dead that registered a new
            // incarnation, or renewed the old one since, is alive.
            let judged_dead = dead_heartbeats_before.get(&item.key) == Some(&item.counter);
            if let Some(unchanged_for) = expired_keys.get(&item.key)
                && !judged_dead
            {
                tracing::info!(worker = %owner, heartbeat = %item.key, counter = item.counter, ?unchanged_for,
                    "heartbeat unchanged for a lease duration; the worker is judged dead");
            }
            if expired_keys.contains_key(&item.key) || judged_dead {
                dead_heartbeats.push(item);
                dead_heartbeats_now.insert(item.key.clone(), item.counter);
                dead.insert(owner);
            } else {
                live.insert(owner.clone());
                peers.insert(item.key.clone(), owner);
            }
        }
        // Remembered dead workers stay dead while they still own leases; a worker id with a
        // live incarnation is alive.
        let owners: HashSet<&WorkerId> = items.iter().filter_map(|l| l.owner.as_ref()).collect();
        dead.extend(dead_before.iter().filter(|w| owners.contains(w)).cloned());
        dead.retain(|w| !live.contains(w));
        self.dead.lock().unwrap_or_else(PoisonError::into_inner).clone_from(&dead);
        *self.dead_heartbeats.lock().unwrap_or_else(PoisonError::into_inner) = dead_heartbeats_now;
        for hb in dead_heartbeats {
            // Removed before any of its leases is taken, conditional on the counter seen: the
            // worker then finds its heartbeat gone at its next renewal and drops every lease.
            // A worker that renewed since (it was paused, not dead) wins: it is alive, and
            // none of its leases is taken.
            if self.remove_dead_heartbeat(hb).await {
                continue;
            }
            if let Some(owner) = &hb.owner {
                tracing::info!(worker = %owner, heartbeat = %hb.key,
                    "worker judged dead renewed its heartbeat since (or its removal failed); none of its leases is taken now");
                dead.remove(owner);
                self.dead.lock().unwrap_or_else(PoisonError::into_inner).remove(owner);
                self.dead_heartbeats.lock().unwrap_or_else(PoisonError::into_inner).remove(&hb.key);
                live.insert(owner.clone());
                peers.insert(hb.key.clone(), owner.clone());
            }
        }
        *self.peers.lock().unwrap_or_else(PoisonError::into_inner) = peers.clone();

        let renewed_each = self.config.lease_renewal == LeaseRenewal::EveryLease;
        let me_owned = self.me().clone();
        let me = &me_owned;
        let held_keys: HashSet<LeaseKey> =
            self.held.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        // A held lease that the table shows with another owner is lost.
        for item in items.iter() {
            if held_keys.contains(&item.key) && !item.is_owned_by(me) {
                // Bind first: the guard must be gone before `lost` locks `held` again.
                let held = self.held.lock().unwrap_or_else(PoisonError::into_inner).get(&item.key).cloned();
                match held {
                    // Released by its own consumer on a handoff, which is finishing: not lost.
                    Some(h) if item.owner.is_none() && h.handoff_requested() => self.forget(&h),
                    Some(h) => self.lost(&h),
                    None => {}
                }
            }
        }
        let shard_leases: Vec<&Lease> =
            items.iter().filter(|l| !l.key.is_heartbeat() && l.checkpoint != Checkpoint::ShardEnd).collect();
        let candidates: Vec<Candidate<'_>> = shard_leases
            .iter()
            .filter(|l| !held_keys.contains(&l.key))
            .map(|l| Candidate {
                lease: l,
                expired: match &l.owner {
                    None => false,
                    // Left over from an earlier run of this worker id (none other is alive).
                    Some(o) if o == me => !twin,
                    // A live owner's lease is never expired by its counter alone: by default
                    // leases are not renewed, only the heartbeat is.
                    Some(o) => {
                        dead.contains(o) || (expired_keys.contains_key(&l.key) && (renewed_each || !live.contains(o)))
                    }
                },
            })
            .chain(
                shard_leases
                    .iter()
                    .filter(|l| held_keys.contains(&l.key))
                    .map(|l| Candidate { lease: l, expired: false }),
            )
            .collect();
        let held_now = self.held_count();
        let mut plan = plan_takes(
            me,
            &candidates,
            &live,
            held_now,
            self.config.max_leases_per_worker,
            self.seed ^ self.cycles.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        // A lease the table shows as this worker's that no consumer of it holds (a take whose
        // answer was lost, an earlier run of this id) is taken back at once, whatever the
        // balance: otherwise it is neither consumed nor renewed, nor released on a graceful
        // stop, until peers judge it expired.
        // Past `max_leases_per_worker`, such a lease is released instead, for others to take.
        if !twin {
            for l in shard_leases.iter().filter(|l| l.is_owned_by(me) && !held_keys.contains(&l.key)) {
                if plan.iter().any(|(k, _)| k == &l.key) {
                    continue;
                }
                if held_now + plan.len() < self.config.max_leases_per_worker {
                    plan.push((l.key.clone(), TakeReason::Expired));
                } else if let Ok(LeaseUpdate::Applied(_)) = self.store.release(l).await {
                    tracing::info!(shard = %l.key, "released a lease this worker owned without consuming it");
                }
            }
        }
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) =
            TableSnapshot { leases: items.clone(), taken_at: Some(now) };
        let by_key: HashMap<&LeaseKey, &Lease> = shard_leases.iter().map(|l| (&l.key, *l)).collect();
        let asked = self.ask_for_steals(&mut plan, &by_key, &items, &peers, now).await;
        if plan.is_empty() {
            return TakeOutcome { asked, ..TakeOutcome::default() };
        }
        let takes: Vec<(&Lease, TakeReason)> =
            plan.iter().filter_map(|(k, r)| by_key.get(k).map(|l| (*l, *r))).collect();
        let mut acquired: Vec<Arc<HeldLease>> = Vec::new();
        for chunk in takes.chunks(WRITE_CONCURRENCY) {
            let taken = futures::future::join_all(chunk.iter().map(|(l, r)| self.take_one(l, *r))).await;
            acquired.extend(taken.into_iter().flatten());
        }
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            for h in &acquired {
                held.insert(h.key.clone(), h.clone());
            }
        }
        self.metrics.leases_held.set(self.held_count() as i64);
        // Lost races (another worker took the same lease) leave this worker under target:
        // scan again soon rather than a whole take interval later.
        let contended = acquired.len() < takes.len();
        TakeOutcome { acquired, contended, asked }
    }

    /// Deletes a dead worker's heartbeat, conditional on the counter seen. True when it is
    /// gone (deleted now, or by another worker); false when it was renewed since.
    async fn remove_dead_heartbeat(&self, hb: &Lease) -> bool {
        match self.store.delete(hb).await {
            Ok(LeaseUpdate::Applied(_)) => {
                tracing::debug!(key = %hb.key, "removed a dead worker's heartbeat");
                true
            }
            Ok(LeaseUpdate::Lost) => match self.store.get(&hb.key).await {
                Ok(Some(now)) => now.owner != hb.owner,
                Ok(None) => true,
                Err(_) => false,
            },
            // Unknown: judged again next cycle, none of its leases taken in this one.
            Err(_) => false,
        }
    }

    async fn take_one(&self, lease: &Lease, reason: TakeReason) -> Option<Arc<HeldLease>> {
        let sent = Instant::now();
        match self.store.take(lease, self.me()).await {
            Ok(LeaseUpdate::Applied(taken)) => {
                self.metrics.lease_takes.with_label_values(&[reason.as_str()]).inc();
                tracing::info!(shard = %lease.key, reason = reason.as_str(), from = ?lease.owner, "took lease");
                let renewed_each = self.config.lease_renewal == LeaseRenewal::EveryLease;
                HeldLease::new(taken, sent, self.liveness.clone(), self.config.fence_after(), renewed_each, &self.token)
                    .map(Arc::new)
            }
            Ok(LeaseUpdate::Lost) => None,
            Err(e) => {
                self.metrics.lease_table_errors.with_label_values(&["take"]).inc();
                tracing::debug!(shard = %lease.key, error = %e, "take failed");
                None
            }
        }
    }

    /// Releases one held lease (the stall watchdog's action): conditional, then stops its
    /// consumer, which can no longer checkpoint.
    pub(crate) async fn release(&self, key: &LeaseKey) {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner).get(key).cloned();
        let Some(held) = held else { return };
        self.release_held(&held).await;
    }

    /// [`release`](Self::release) of one tenure (a no-op once it is lost).
    pub(crate) async fn release_held(&self, held: &HeldLease) {
        if held.is_lost() {
            self.forget(held);
            return;
        }
        {
            let lease = held.lock().await;
            match self.store.release(&lease).await {
                Ok(_) => tracing::warn!(shard = %held.shard_id, "released a stalled shard's lease"),
                Err(e) => tracing::warn!(shard = %held.shard_id, error = %e, "could not release a stalled lease"),
            }
        }
        self.forget(held);
    }

    /// Removes this worker's heartbeat on a clean stop, so peers stop watching it at once.
    pub(crate) async fn deregister(&self) {
        let hb = self.heartbeat.lock().await;
        if let Err(e) = self.store.delete(&hb).await {
            tracing::debug!(error = %e, "could not remove heartbeat; it will expire");
        }
    }

    pub(crate) fn store(&self) -> &Arc<S> {
        &self.store
    }
}

async fn register_heartbeat<S: LeaseStore>(
    store: &S,
    me: &WorkerId,
    incarnation: u64,
) -> Result<Lease, LeaseStoreError> {
    let mut lease = Lease::new_for_shard(&crate::shard::ShardId::new("-"), Checkpoint::TrimHorizon, Vec::new());
    lease.key = LeaseKey::heartbeat(me, incarnation);
    lease.owner = Some(me.clone());
    match store.create_if_absent(lease.clone()).await? {
        LeaseUpdate::Applied(created) => Ok(created),
        // A 64-bit incarnation collided with a live item: vanishingly rare; take it over.
        LeaseUpdate::Lost => match store.get(&lease.key).await? {
            Some(existing) => Ok(store.take(&existing, me).await?.applied().unwrap_or(existing)),
            None => Ok(lease),
        },
    }
}

fn incarnation_seed(me: &WorkerId) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(me.as_str().as_bytes());
    h.finish()
}
