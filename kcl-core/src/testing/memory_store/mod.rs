//! [`MemoryLeaseStore`]: an in-memory [`LeaseStore`] with DynamoDB's conditional-write
//! semantics, a history log of applied writes, call statistics and deterministic fault
//! injection (outages, error rates, latency, writes applied but reported as failed).
//!
//! It passes the same contract suite as the DynamoDB lease table
//! ([`crate::testing::contract::lease_store`]).
//!
//! ```
//! use kcl_core::testing::memory_store::{LeaseOp, MemoryLeaseStore};
//! use kcl_core::{Checkpoint, Lease, LeaseStore, LeaseUpdate, ShardId, WorkerId};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store = MemoryLeaseStore::new();
//! let lease = Lease::new_for_shard(&ShardId::new("shard-1"), Checkpoint::TrimHorizon, vec![]);
//! let _ = store.create_if_absent(lease.clone()).await;
//! let taken = store.take(&lease, &WorkerId::new("w1")).await.ok().and_then(LeaseUpdate::applied);
//! assert_eq!(taken.map(|l| l.counter), Some(1));
//! // A second take from the same (now stale) view loses the race.
//! assert_eq!(store.take(&lease, &WorkerId::new("w2")).await.ok(), Some(LeaseUpdate::Lost));
//! let ops: Vec<_> = store.history().iter().map(|e| e.op).collect();
//! assert_eq!(ops, [LeaseOp::Create, LeaseOp::Take]);
//! # }
//! ```

mod faults;
mod history;
#[cfg(test)]
mod tests;

pub use history::{CallCounts, HistoryMode, LeaseEvent, LeaseOp, LeaseOpKind, MemoryStoreStats};

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use self::faults::{Faults, ambiguous_error};
use crate::checkpoint::Checkpoint;
use crate::lease::{
    HandoffRequest, Lease, LeaseKey, LeaseStore, LeaseStoreError, LeaseStoreErrorKind, LeaseUpdate, WorkerId,
};
use crate::window::WindowState;

/// An in-memory lease table.
///
/// Every mutation is conditional exactly as documented on [`LeaseStore`]: it applies only if
/// the stored item has the `counter` and `owner` of `expected` (a create only if the key is
/// absent); otherwise it returns [`LeaseUpdate::Lost`] and changes nothing. Applied writes
/// return the stored lease. A take bumps `owner_switches_since_checkpoint` only when the owner
/// actually changes.
///
/// Cloning is cheap and every clone shares the same table, so one store can be handed to
/// several simulated workers while the test inspects it. The state sits behind a
/// [`std::sync::Mutex`] that is never held across an `.await`; a call that is dropped while it
/// waits for the configured latency has not happened.
///
/// ## History
/// Applied mutations are appended to a log ([`MemoryLeaseStore::history`]) according to the
/// [`HistoryMode`]: [`MemoryLeaseStore::new`] records every mutation except renewals (which
/// dominate the traffic), [`MemoryLeaseStore::with_full_history`] records renewals too, and
/// [`HistoryMode::Off`] records nothing. [`MemoryLeaseStore::stats`] counts every call
/// whatever the mode.
///
/// ## Faults
/// Each call first sleeps for the configured latency ([`tokio::time::sleep`], so paused time
/// applies), then may fail before touching the table: while the store is unavailable, when a
/// [`fail_next`](MemoryLeaseStore::fail_next) rule matches, or at the random error rate. An
/// applied write may be reported as a transient error at the ambiguous write rate. The random
/// draws come from one seeded generator: a single-threaded test with a fixed seed sees the
/// same faults every run.
#[derive(Clone, Default)]
pub struct MemoryLeaseStore {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    items: BTreeMap<LeaseKey, Lease>,
    history: Vec<LeaseEvent>,
    history_mode: HistoryMode,
    stats: MemoryStoreStats,
    faults: Faults,
    /// Renewals of these keys that never answer, by key: how many are left.
    hanging_renewals: BTreeMap<LeaseKey, u32>,
}

impl fmt::Debug for MemoryLeaseStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryLeaseStore")
            .field("items", &state.items.len())
            .field("history_mode", &state.history_mode)
            .field("history", &state.history.len())
            .field("faults", &state.faults)
            .finish()
    }
}

impl MemoryLeaseStore {
    /// An empty table that records every applied mutation except renewals.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records renewals in the history too ([`HistoryMode::Full`]).
    pub fn with_full_history(self) -> Self {
        self.with_history(HistoryMode::Full)
    }

    /// Sets which mutations the history records.
    pub fn with_history(self, mode: HistoryMode) -> Self {
        self.set_history_mode(mode);
        self
    }

    /// Changes which mutations the history records from now on.
    pub fn set_history_mode(&self, mode: HistoryMode) {
        self.lock().history_mode = mode;
    }

    /// Inserts (or overwrites) an item directly, as if it had been in the table before the
    /// test began. Not recorded in the history or the statistics; no fault applies.
    pub fn seed(&self, lease: Lease) {
        self.lock().items.insert(lease.key.clone(), lease);
    }

    /// The stored item, read synchronously without faults or latency.
    pub fn get_now(&self, key: &LeaseKey) -> Option<Lease> {
        self.lock().items.get(key).cloned()
    }

    /// Every stored item sorted by key, read synchronously without faults or latency.
    pub fn leases(&self) -> Vec<Lease> {
        self.lock().items.values().cloned().collect()
    }

    /// The number of stored items.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// True when the table holds no item.
    pub fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// The applied mutations recorded so far, oldest first (see [`HistoryMode`]).
    pub fn history(&self) -> Vec<LeaseEvent> {
        self.lock().history.clone()
    }

    /// Forgets the recorded history.
    pub fn clear_history(&self) {
        self.lock().history.clear();
    }

    /// How the calls so far ended, by kind.
    pub fn stats(&self) -> MemoryStoreStats {
        self.lock().stats.clone()
    }

    /// Makes the next `count` calls of kind `op` (of any kind for `None`) fail with `kind`
    /// without touching the table. Rules queue up: the oldest rule matching a call fires.
    pub fn fail_next(&self, op: impl Into<Option<LeaseOpKind>>, kind: LeaseStoreErrorKind, count: u32) {
        self.lock().faults.fail_next(op.into(), kind, count);
    }

    /// While `true`, every call fails with [`LeaseStoreErrorKind::Transient`]: a lease table
    /// outage.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.lock().faults.set_unavailable(unavailable);
    }

    /// Makes each call fail with probability `probability` (clamped to 0..=1), as
    /// [`Throttled`](LeaseStoreErrorKind::Throttled) or
    /// [`Transient`](LeaseStoreErrorKind::Transient) with equal odds, drawn from a generator
    /// reseeded with `seed`.
    pub fn set_error_rate(&self, probability: f64, seed: u64) {
        self.lock().faults.set_error_rate(probability, seed);
    }

    /// Makes each applied write, with probability `probability` (clamped to 0..=1), report
    /// [`Transient`](LeaseStoreErrorKind::Transient) although it was applied: the timeout
    /// after commit that real DynamoDB can produce. Uses the generator of
    /// [`set_error_rate`](Self::set_error_rate) (seed 0 unless set).
    pub fn set_ambiguous_write_rate(&self, probability: f64) {
        self.lock().faults.set_ambiguous_write_rate(probability);
    }

    /// Makes each call sleep for `latency` ([`tokio::time::sleep`]) before it acts.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().faults.latency = latency;
    }

    /// Makes the next `count` renewals of `key` never answer: the call waits forever, as on a
    /// connection that went silent (the worker's call timeout cuts it off).
    pub fn hang_next_renewals(&self, key: &LeaseKey, count: u32) {
        self.lock().hanging_renewals.insert(key.clone(), count);
    }

    /// Removes every fault (rules, outage, rates); the latency stays.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the table consistent: every mutation is
        // computed before it is stored.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits the configured latency. Runs before the call acts, without the lock.
    async fn delay(&self) {
        let latency = self.lock().faults.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// Applies the fault rules for a call of `op`, counting a failure.
    fn admit(state: &mut State, op: LeaseOpKind) -> Result<(), LeaseStoreError> {
        state.faults.admit(op).inspect_err(|_| state.stats.count(op).failed += 1)
    }

    /// A conditional update of an existing item: `change` is applied when the stored item has
    /// the counter and owner of `expected`, then the counter is bumped.
    fn update(
        &self,
        op: LeaseOp,
        expected: &Lease,
        change: impl FnOnce(&mut Lease),
    ) -> Result<LeaseUpdate, LeaseStoreError> {
        let mut guard = self.lock();
        let state = &mut *guard;
        Self::admit(state, op.into())?;
        let Some(stored) = state.items.get_mut(&expected.key).filter(|stored| condition_holds(stored, expected)) else {
            state.stats.count(op.into()).lost += 1;
            return Ok(LeaseUpdate::Lost);
        };
        let Some(counter) = stored.counter.checked_add(1) else {
            return Err(LeaseStoreError::new(
                LeaseStoreErrorKind::Fatal,
                format!("lease counter overflow on {}", stored.key),
            ));
        };
        let owner_before = stored.owner.clone();
        change(stored);
        stored.counter = counter;
        let lease = stored.clone();
        state.applied(op, owner_before, lease.owner.clone(), &lease);
        state.report(op, LeaseUpdate::Applied(lease))
    }
}

impl State {
    /// Records an applied write in the history (per the mode).
    fn applied(&mut self, op: LeaseOp, owner_before: Option<WorkerId>, owner_after: Option<WorkerId>, lease: &Lease) {
        if self.history_mode.records(op) {
            self.history.push(LeaseEvent {
                at: Instant::now(),
                op,
                key: lease.key.clone(),
                owner_before,
                owner_after,
                counter_after: lease.counter,
                checkpoint_after: lease.checkpoint.clone(),
            });
        }
    }

    /// Reports an applied write: as applied, or at the ambiguous rate as a transient error.
    fn report(&mut self, op: LeaseOp, update: LeaseUpdate) -> Result<LeaseUpdate, LeaseStoreError> {
        let counts = self.stats.count(op.into());
        if self.faults.ambiguous() {
            counts.ambiguous += 1;
            Err(ambiguous_error(op.into()))
        } else {
            counts.ok += 1;
            Ok(update)
        }
    }
}

/// DynamoDB's condition on every mutation: same counter and same owner (absent owner
/// matches only absent owner).
fn condition_holds(stored: &Lease, expected: &Lease) -> bool {
    stored.counter == expected.counter && stored.owner == expected.owner
}

impl LeaseStore for MemoryLeaseStore {
    async fn list(&self) -> Result<Vec<Lease>, LeaseStoreError> {
        self.delay().await;
        let mut guard = self.lock();
        let state = &mut *guard;
        Self::admit(state, LeaseOpKind::List)?;
        state.stats.count(LeaseOpKind::List).ok += 1;
        Ok(state.items.values().cloned().collect())
    }

    async fn get(&self, key: &LeaseKey) -> Result<Option<Lease>, LeaseStoreError> {
        self.delay().await;
        let mut guard = self.lock();
        let state = &mut *guard;
        Self::admit(state, LeaseOpKind::Get)?;
        state.stats.count(LeaseOpKind::Get).ok += 1;
        Ok(state.items.get(key).cloned())
    }

    async fn create_if_absent(&self, lease: Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.delay().await;
        let mut guard = self.lock();
        let state = &mut *guard;
        Self::admit(state, LeaseOpKind::Create)?;
        if state.items.contains_key(&lease.key) {
            state.stats.count(LeaseOpKind::Create).lost += 1;
            return Ok(LeaseUpdate::Lost);
        }
        state.items.insert(lease.key.clone(), lease.clone());
        state.applied(LeaseOp::Create, None, lease.owner.clone(), &lease);
        state.report(LeaseOp::Create, LeaseUpdate::Applied(lease))
    }

    async fn renew(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        let hang = {
            let mut state = self.lock();
            let left = state.hanging_renewals.get_mut(&expected.key).filter(|n| **n > 0);
            left.map(|n| *n -= 1).is_some()
        };
        if hang {
            std::future::pending::<()>().await;
        }
        self.delay().await;
        self.update(LeaseOp::Renew, expected, |stored| {
            stored.handoff_requests.retain(|r| !expected.handoff_requests.iter().any(|seen| seen.from == r.from));
        })
    }

    async fn take(&self, expected: &Lease, new_owner: &WorkerId) -> Result<LeaseUpdate, LeaseStoreError> {
        self.delay().await;
        self.update(LeaseOp::Take, expected, |stored| {
            if stored.owner.as_ref() != Some(new_owner) {
                stored.owner = Some(new_owner.clone());
                stored.owner_switches_since_checkpoint = stored.owner_switches_since_checkpoint.saturating_add(1);
            }
        })
    }

    async fn checkpoint(
        &self,
        expected: &Lease,
        checkpoint: &Checkpoint,
        window: Option<&WindowState>,
    ) -> Result<LeaseUpdate, LeaseStoreError> {
        self.delay().await;
        self.update(LeaseOp::Checkpoint, expected, |stored| {
            stored.checkpoint = checkpoint.clone();
            stored.window = window.cloned().map(Box::new);
            stored.owner_switches_since_checkpoint = 0;
        })
    }

    async fn release(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.delay().await;
        self.update(LeaseOp::Release, expected, |stored| stored.owner = None)
    }

    async fn request_handoff(
        &self,
        heartbeat: &Lease,
        from: &WorkerId,
        leases: u32,
    ) -> Result<LeaseUpdate, LeaseStoreError> {
        self.delay().await;
        let mut guard = self.lock();
        let state = &mut *guard;
        let op = LeaseOp::RequestHandoff;
        Self::admit(state, op.into())?;
        let Some(stored) =
            state.items.get_mut(&heartbeat.key).filter(|s| s.owner.is_some() && s.owner == heartbeat.owner)
        else {
            state.stats.count(op.into()).lost += 1;
            return Ok(LeaseUpdate::Lost);
        };
        stored.handoff_requests.retain(|r| &r.from != from);
        stored.handoff_requests.push(HandoffRequest::new(from.clone(), leases));
        stored.handoff_requests.sort();
        let lease = stored.clone();
        state.applied(op, lease.owner.clone(), lease.owner.clone(), &lease);
        state.report(op, LeaseUpdate::Applied(lease))
    }

    async fn delete(&self, expected: &Lease) -> Result<LeaseUpdate, LeaseStoreError> {
        self.delay().await;
        let mut guard = self.lock();
        let state = &mut *guard;
        Self::admit(state, LeaseOpKind::Delete)?;
        let holds = state.items.get(&expected.key).is_some_and(|stored| condition_holds(stored, expected));
        let Some(deleted) = holds.then(|| state.items.remove(&expected.key)).flatten() else {
            state.stats.count(LeaseOpKind::Delete).lost += 1;
            return Ok(LeaseUpdate::Lost);
        };
        state.applied(LeaseOp::Delete, deleted.owner.clone(), None, &deleted);
        state.report(LeaseOp::Delete, LeaseUpdate::Applied(deleted))
    }
}
