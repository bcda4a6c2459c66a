//! The [`LeaseStore`] contract: what every lease table must do, checked the same way against
//! the in-memory store and the DynamoDB lease table, so the fake behaves as the real thing.
//!
//! [`run_all`] runs every check, each with a fresh, empty store from the given factory. Each
//! check is also public (`check_*`), for running one alone. A failing check panics with a
//! message naming the check, the step and what differed.
//!
//! What the contract leaves open: the order of [`LeaseStore::list`] (compared as a set) and
//! the order of `parent_shard_ids` and `child_shard_ids` (sets: DynamoDB stores them as string
//! sets). What a checkpoint does to `pending_checkpoint` is not checked.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use kcl_core::testing::contract::lease_store;
//! use kcl_core::testing::memory_store::MemoryLeaseStore;
//!
//! lease_store::run_all(|| async { MemoryLeaseStore::new() }).await;
//! # }
//! ```

use std::fmt::Debug;
use std::future::Future;

use crate::checkpoint::{Checkpoint, SequenceNumber};
use crate::lease::{HandoffRequest, Lease, LeaseKey, LeaseStore, LeaseStoreError, LeaseUpdate, WorkerId};
use crate::shard::ShardId;
use crate::window::WindowState;

/// Runs every check of the contract, each against a fresh, empty store from `make_store`.
///
/// Panics at the first check that fails.
pub async fn run_all<S, F, Fut>(make_store: F)
where
    S: LeaseStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    check_empty_store(&make_store().await).await;
    check_create_if_absent(&make_store().await).await;
    check_renew(&make_store().await).await;
    check_writes_change_only_their_attributes(&make_store().await).await;
    check_take(&make_store().await).await;
    check_concurrent_takes(&make_store().await).await;
    check_checkpoint_variants(&make_store().await).await;
    check_stale_checkpoint(&make_store().await).await;
    check_release_then_take(&make_store().await).await;
    check_delete(&make_store().await).await;
    check_writes_to_missing_items(&make_store().await).await;
    check_list_fields(&make_store().await).await;
    check_list_many(&make_store().await).await;
    check_owner_none_round_trips(&make_store().await).await;
    check_large_counters(&make_store().await).await;
    check_handoff_requests(&make_store().await).await;
    check_checkpoint_window(&make_store().await).await;
    check_peek(&make_store().await).await;
}

/// `peek` (eventually consistent) of an absent key is `None`, and after a write it returns,
/// within a few seconds, what `get` returns.
pub async fn check_peek<S: LeaseStore>(store: &S) {
    let c = Check::new("peek", store);
    let absent = c.ok("peek of an absent key", store.peek(&key(1)).await);
    c.assert_eq("peek of an absent key", &absent, &None);
    let created = c.applied("create", store.create_if_absent(lease(1, Some("w1"), 0)).await);
    let renewed = c.applied("renew", store.renew(&created).await);
    let want = c.get(&key(1)).await;
    c.assert_eq("get after the renew", &want.as_ref().map(|l| l.counter), &Some(renewed.counter));
    let mut got = None;
    for _ in 0..50 {
        got = c.ok("peek", store.peek(&key(1)).await).map(|l| normalized(&l));
        if got == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    c.fail("peek never returned what get returns", &(got, want));
}

/// A fresh store: `get` of any key is `None` and `list` is empty.
pub async fn check_empty_store<S: LeaseStore>(store: &S) {
    let c = Check::new("empty_store", store);
    c.assert_eq("get of an absent key", &c.get(&key(1)).await, &None);
    c.assert_eq("get of an absent heartbeat", &c.get(&LeaseKey::heartbeat(&worker("a"), 1)).await, &None);
    c.assert_eq("list of an empty table", &c.list().await, &Vec::new());
}

/// `create_if_absent` creates the lease exactly as given, once; a second create of the same
/// key is `Lost` and leaves the first item alone.
pub async fn check_create_if_absent<S: LeaseStore>(store: &S) {
    let c = Check::new("create_if_absent", store);
    let first = lease(1, None, 0);
    let created = c.applied("first create", store.create_if_absent(first.clone()).await);
    c.assert_lease("lease returned by the first create", &created, &first);
    c.assert_stored("item after the first create", &first).await;

    let mut second = lease(1, Some("w1"), 5);
    second.checkpoint = Checkpoint::ShardEnd;
    c.lost("second create of the same key", store.create_if_absent(second).await);
    c.assert_stored("item after the second create", &first).await;
}

/// `renew` bumps the counter and requires the stored counter and owner; after `Lost` the item
/// is unchanged.
pub async fn check_renew<S: LeaseStore>(store: &S) {
    let c = Check::new("renew", store);
    let mut original = lease(1, Some("w1"), 3);
    original.owner_switches_since_checkpoint = 2;
    let original = c.create(original).await;

    let renewed = c.applied("renew with the stored counter and owner", store.renew(&original).await);
    c.assert_lease("renewed lease", &renewed, &Lease { counter: 4, ..original.clone() });
    c.assert_stored("item after renew", &renewed).await;

    c.lost("renew with a stale counter", store.renew(&original).await);
    c.lost("renew with another owner", store.renew(&Lease { owner: Some(worker("w2")), ..renewed.clone() }).await);
    c.lost("renew with no owner", store.renew(&Lease { owner: None, ..renewed.clone() }).await);
    c.lost("renew with a counter ahead", store.renew(&Lease { counter: 5, ..renewed.clone() }).await);
    c.assert_stored("item after rejected renewals", &renewed).await;

    let again = c.applied("second renew", store.renew(&renewed).await);
    c.assert_eq("counter after the second renew", &again.counter, &5);
}

/// The condition covers only counter and owner, and each write changes only its own
/// attributes: a caller whose copy differs in other fields still succeeds, and the applied
/// lease (as returned and as stored) keeps the stored values of the other fields.
pub async fn check_writes_change_only_their_attributes<S: LeaseStore>(store: &S) {
    let c = Check::new("writes_change_only_their_attributes", store);
    let mut stored = lease(1, Some("w1"), 10);
    stored.checkpoint = at("100000000000000000042");
    stored.parent_shard_ids = vec![shard(100)];
    stored.owner_switches_since_checkpoint = 1;
    let stored = c.create(stored).await;
    let skewed = |l: &Lease| Lease {
        checkpoint: Checkpoint::TrimHorizon,
        parent_shard_ids: Vec::new(),
        child_shard_ids: vec![shard(7)],
        owner_switches_since_checkpoint: 9,
        ..l.clone()
    };

    let renewed = c.applied("renew from a copy differing in other fields", store.renew(&skewed(&stored)).await);
    c.assert_lease("renewed lease", &renewed, &Lease { counter: 11, ..stored.clone() });
    c.assert_stored("item after renew", &renewed).await;

    let taken =
        c.applied("take from a copy differing in other fields", store.take(&skewed(&renewed), &worker("w2")).await);
    let want = Lease { counter: 12, owner: Some(worker("w2")), owner_switches_since_checkpoint: 2, ..stored.clone() };
    c.assert_lease("taken lease", &taken, &want);
    c.assert_stored("item after take", &taken).await;

    let released = c.applied("release from a copy differing in other fields", store.release(&skewed(&taken)).await);
    c.assert_lease("released lease", &released, &Lease { counter: 13, owner: None, ..taken.clone() });
    c.assert_stored("item after release", &released).await;
}

/// `take` sets the owner, bumps the counter and (when the owner changes) the owner switches;
/// a take from a stale view is `Lost`.
pub async fn check_take<S: LeaseStore>(store: &S) {
    let c = Check::new("take", store);
    let unowned = c.create(lease(1, None, 0)).await;

    let t1 = c.applied("take of an unowned lease", store.take(&unowned, &worker("w1")).await);
    let want = Lease { owner: Some(worker("w1")), counter: 1, owner_switches_since_checkpoint: 1, ..unowned.clone() };
    c.assert_lease("lease after take by w1", &t1, &want);
    c.assert_stored("item after take by w1", &t1).await;

    let t2 = c.applied("steal by w2", store.take(&t1, &worker("w2")).await);
    let want = Lease { owner: Some(worker("w2")), counter: 2, owner_switches_since_checkpoint: 2, ..unowned.clone() };
    c.assert_lease("lease after steal by w2", &t2, &want);

    c.lost("take from a stale view", store.take(&t1, &worker("w3")).await);
    c.lost("take from the unowned view", store.take(&unowned, &worker("w3")).await);
    c.lost(
        "take with the right counter but wrong owner",
        store.take(&Lease { owner: None, ..t2.clone() }, &worker("w3")).await,
    );
    c.assert_stored("item after rejected takes", &t2).await;

    let t3 = c.applied("take by the current owner", store.take(&t2, &worker("w2")).await);
    c.assert_lease("lease after a take by its own owner", &t3, &Lease { counter: 3, ..t2.clone() });
}

/// Two concurrent takes from the same view: exactly one is applied, and the stored owner is
/// the winner.
pub async fn check_concurrent_takes<S: LeaseStore>(store: &S) {
    let c = Check::new("concurrent_takes", store);
    let unowned = c.create(lease(1, None, 0)).await;
    let (wa, wb) = (worker("a"), worker("b"));
    let (a, b) = tokio::join!(store.take(&unowned, &wa), store.take(&unowned, &wb));
    let (a, b) = (c.ok("take by a", a), c.ok("take by b", b));
    let winner = match (a, b) {
        (LeaseUpdate::Applied(l), LeaseUpdate::Lost) | (LeaseUpdate::Lost, LeaseUpdate::Applied(l)) => l,
        (a, b) => c.fail("exactly one of two concurrent takes applied", &(a, b)),
    };
    c.assert_eq("counter of the winner", &winner.counter, &1);
    c.assert_stored("item after the concurrent takes", &winner).await;
}

/// `checkpoint` stores each variant exactly (through `get` and `list`), bumps the counter,
/// keeps the owner and resets the owner switches.
pub async fn check_checkpoint_variants<S: LeaseStore>(store: &S) {
    let c = Check::new("checkpoint_variants", store);
    let mut current = lease(1, Some("w1"), 0);
    current.owner_switches_since_checkpoint = 3;
    let mut current = c.create(current).await;
    let variants = [
        at("1234567890123456789012345678901234567890"),
        Checkpoint::TrimHorizon,
        Checkpoint::Latest,
        at("100000000000000000001"),
        at("9999999999999999999999999999999999999999"),
        Checkpoint::ShardEnd,
    ];
    for (i, cp) in variants.into_iter().enumerate() {
        let owner = if i % 2 == 0 { "w2" } else { "w1" };
        let taken = c.applied("take before checkpoint", store.take(&current, &worker(owner)).await);
        if taken.owner_switches_since_checkpoint == 0 {
            c.fail("owner switches after a take are above 0", &taken);
        }
        let written = c.applied(&format!("checkpoint {cp}"), store.checkpoint(&taken, &cp, None).await);
        let want =
            Lease { checkpoint: cp.clone(), counter: taken.counter + 1, owner_switches_since_checkpoint: 0, ..taken };
        c.assert_lease(&format!("lease after checkpoint {cp}"), &written, &want);
        c.assert_stored(&format!("item after checkpoint {cp}"), &written).await;
        c.assert_eq(&format!("list after checkpoint {cp}"), &c.list().await, &vec![normalized(&written)]);
        current = written;
    }
}

/// A checkpoint stores the tumbling window given with it (every byte value of its state),
/// in the same write; renewals, takes and releases keep it, so the next owner reads it; an
/// empty state round-trips; a checkpoint without a window removes it.
pub async fn check_checkpoint_window<S: LeaseStore>(store: &S) {
    let c = Check::new("checkpoint_window", store);
    let owned = c.create(lease(1, Some("w1"), 0)).await;
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_040_000);
    let end = start + std::time::Duration::from_secs(60);
    let state: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    let window = WindowState::new(start, end, state);
    let cp = at("100000000000000000300");
    let written = c.applied("checkpoint with a window", store.checkpoint(&owned, &cp, Some(&window)).await);
    let want =
        Lease { checkpoint: cp.clone(), counter: owned.counter + 1, window: Some(Box::new(window.clone())), ..owned };
    c.assert_lease("lease after a checkpoint with a window", &written, &want);
    c.assert_stored("item after a checkpoint with a window", &written).await;
    let renewed = c.applied("renew", store.renew(&written).await);
    let taken = c.applied("take by the next owner", store.take(&renewed, &worker("w2")).await);
    c.assert_eq("window the next owner reads", &c.get(&key(1)).await.and_then(|l| l.window.map(|w| *w)), &Some(window));
    let empty = WindowState::new(end, end + std::time::Duration::from_secs(60), Vec::new());
    let written = c.applied("checkpoint with an empty state", store.checkpoint(&taken, &cp, Some(&empty)).await);
    c.assert_eq("window with an empty state", &written.window.as_deref(), &Some(&empty));
    c.assert_stored("item after a checkpoint with an empty state", &written).await;
    let written = c.applied("checkpoint without a window", store.checkpoint(&written, &cp, None).await);
    c.assert_eq("window after a checkpoint without one", &written.window, &None);
    c.assert_stored("item after a checkpoint without a window", &written).await;
}

/// A checkpoint from a stale view (or by another owner) is `Lost` and leaves the stored
/// checkpoint alone.
pub async fn check_stale_checkpoint<S: LeaseStore>(store: &S) {
    let c = Check::new("stale_checkpoint", store);
    let mut original = lease(1, Some("w1"), 5);
    original.checkpoint = at("100000000000000000100");
    let original = c.create(original).await;
    let renewed = c.applied("renew", store.renew(&original).await);

    c.lost("checkpoint with a stale counter", store.checkpoint(&original, &at("100000000000000000200"), None).await);
    let other = Lease { owner: Some(worker("w2")), ..renewed.clone() };
    c.lost("checkpoint by another owner", store.checkpoint(&other, &Checkpoint::ShardEnd, None).await);
    c.assert_stored("item after rejected checkpoints", &renewed).await;
}

/// `release` removes the owner and bumps the counter; a stale release is `Lost`; the
/// released lease can then be taken from its ownerless view.
pub async fn check_release_then_take<S: LeaseStore>(store: &S) {
    let c = Check::new("release_then_take", store);
    let owned = c.create(lease(1, Some("w1"), 4)).await;
    let released = c.applied("release", store.release(&owned).await);
    c.assert_lease("released lease", &released, &Lease { owner: None, counter: 5, ..owned.clone() });
    c.assert_stored("item after release", &released).await;
    c.lost("release from a stale view", store.release(&owned).await);

    let taken = c.applied("take of the released lease", store.take(&released, &worker("w2")).await);
    let want = Lease { owner: Some(worker("w2")), counter: 6, owner_switches_since_checkpoint: 1, ..released };
    c.assert_lease("lease taken after release", &taken, &want);
    c.assert_stored("item after take", &taken).await;
}

/// `delete` is conditional like every write: a stale or foreign delete is `Lost` and the item
/// stays; a matching delete removes it; deleting again is `Lost`.
pub async fn check_delete<S: LeaseStore>(store: &S) {
    let c = Check::new("delete", store);
    let owned = c.create(lease(1, Some("w1"), 2)).await;
    let other = c.create(lease(2, None, 0)).await;

    c.lost("delete with a stale counter", store.delete(&Lease { counter: 1, ..owned.clone() }).await);
    c.lost("delete by another owner", store.delete(&Lease { owner: Some(worker("w2")), ..owned.clone() }).await);
    c.lost("delete with no owner", store.delete(&Lease { owner: None, ..owned.clone() }).await);
    c.assert_stored("item after rejected deletes", &owned).await;

    let deleted = c.applied("delete", store.delete(&owned).await);
    c.assert_eq("key of the deleted lease", &deleted.key, &owned.key);
    c.assert_eq("get after delete", &c.get(&owned.key).await, &None);
    c.assert_eq("list after delete", &c.list().await, &vec![normalized(&other)]);
    c.lost("second delete", store.delete(&owned).await);
}

/// Writes to an absent key are `Lost` and do not create the item (an update in DynamoDB
/// would, without its condition).
pub async fn check_writes_to_missing_items<S: LeaseStore>(store: &S) {
    let c = Check::new("writes_to_missing_items", store);
    for missing in [lease(1, None, 0), lease(1, Some("w1"), 3)] {
        c.lost("renew of a missing item", store.renew(&missing).await);
        c.lost("take of a missing item", store.take(&missing, &worker("w2")).await);
        c.lost("checkpoint of a missing item", store.checkpoint(&missing, &Checkpoint::ShardEnd, None).await);
        c.lost("release of a missing item", store.release(&missing).await);
        c.lost("delete of a missing item", store.delete(&missing).await);
        c.assert_eq("get after writes to a missing item", &c.get(&missing.key).await, &None);
    }
    c.assert_eq("list after writes to missing items", &c.list().await, &Vec::new());
}

/// `list` returns every item with every field: 0, 1 and 2 parents, children, every
/// checkpoint variant, a pending checkpoint, owned and unowned, heartbeat keys.
pub async fn check_list_fields<S: LeaseStore>(store: &S) {
    let c = Check::new("list_fields", store);
    let mut no_parents = lease(1, None, 0);
    no_parents.checkpoint = Checkpoint::Latest;
    let mut one_parent = lease(2, Some("w1"), 7);
    one_parent.parent_shard_ids = vec![shard(1)];
    one_parent.checkpoint = at("1234567890123456789012345678901234567890");
    let mut two_parents = lease(3, Some("w2"), 12);
    two_parents.parent_shard_ids = vec![shard(2), shard(1)];
    two_parents.owner_switches_since_checkpoint = 4;
    two_parents.pending_checkpoint = Some(at("100000000000000000300"));
    let mut ended = lease(4, Some("w1"), 30);
    ended.parent_shard_ids = vec![shard(3)];
    ended.checkpoint = Checkpoint::ShardEnd;
    ended.child_shard_ids = vec![shard(6), shard(5)];
    let mut heartbeat = lease(0, Some("w1"), 99);
    heartbeat.key = LeaseKey::heartbeat(&worker("w1"), 0x0123_4567_89ab_cdef);
    let mut foreign_heartbeat = lease(0, Some("w2"), 1);
    foreign_heartbeat.key = LeaseKey::heartbeat(&worker("w2"), 1);

    let all = [no_parents, one_parent, two_parents, ended, heartbeat, foreign_heartbeat];
    for l in &all {
        c.create(l.clone()).await;
    }
    for l in &all {
        c.assert_stored(&format!("get of {}", l.key), l).await;
    }
    let mut want: Vec<_> = all.iter().map(normalized).collect();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    c.assert_eq("list of six items", &c.list().await, &want);
}

/// `list` returns all of 250 items of about 5 KB each (over 1 MB together: more than one page
/// of a DynamoDB scan), each exactly once and exactly as created.
pub async fn check_list_many<S: LeaseStore>(store: &S) {
    let c = Check::new("list_many", store);
    let children: Vec<ShardId> =
        (0..120).map(|i| ShardId::new(format!("shardId-00000001700000000000-child{i:08}"))).collect();
    let mut want = Vec::with_capacity(250);
    for i in 0..250 {
        let mut l = lease(1000 + i, if i % 3 == 0 { None } else { Some("w1") }, i);
        l.parent_shard_ids = vec![shard(i)];
        l.child_shard_ids = children.clone();
        c.create(l.clone()).await;
        want.push(normalized(&l));
    }
    want.sort_by(|a, b| a.key.cmp(&b.key));
    let listed = c.list().await;
    c.assert_eq("number of listed items", &listed.len(), &250);
    c.assert_eq("listed items", &listed, &want);
}

/// An unowned lease round-trips as `None` (not an empty string), both when created so and
/// after a release, and conditions on a `None` owner match it.
pub async fn check_owner_none_round_trips<S: LeaseStore>(store: &S) {
    let c = Check::new("owner_none_round_trips", store);
    let unowned = c.create(lease(1, None, 0)).await;
    c.assert_eq("owner of a created unowned lease", &c.get(&unowned.key).await.and_then(|l| l.owner), &None);
    let renewed = c.applied("renew of an unowned lease", store.renew(&unowned).await);
    c.assert_eq("owner after renewing an unowned lease", &renewed.owner, &None);
    c.lost(
        "renew claiming an empty-string owner",
        store.renew(&Lease { owner: Some(worker("")), ..renewed.clone() }).await,
    );

    let taken = c.applied("take", store.take(&renewed, &worker("w1")).await);
    let released = c.applied("release", store.release(&taken).await);
    c.assert_eq("owner after release", &released.owner, &None);
    c.assert_stored("item after release", &released).await;
    let listed = c.list().await;
    c.assert_eq(
        "owners in list after release",
        &listed.iter().map(|l| l.owner.clone()).collect::<Vec<_>>(),
        &vec![None],
    );
}

/// Counters above 2^53 (where a float would round) are stored, compared and bumped exactly.
pub async fn check_large_counters<S: LeaseStore>(store: &S) {
    let c = Check::new("large_counters", store);
    let big = (1u64 << 53) + 1;
    let original = c.create(lease(1, Some("w1"), big)).await;
    c.lost("renew with a counter one below (2^53)", store.renew(&Lease { counter: big - 1, ..original.clone() }).await);
    let renewed = c.applied("renew at 2^53 + 1", store.renew(&original).await);
    c.assert_eq("counter after renew", &renewed.counter, &(big + 1));
    let written = c.applied("checkpoint at 2^53 + 2", store.checkpoint(&renewed, &Checkpoint::ShardEnd, None).await);
    c.assert_eq("counter after checkpoint", &written.counter, &(big + 2));
    c.assert_stored("item with a large counter", &written).await;

    let other = c.create(lease(2, None, (1u64 << 53) - 1)).await;
    let taken = c.applied("take at 2^53 - 1", store.take(&other, &worker("w2")).await);
    c.assert_eq("counter after take", &taken.counter, &(1u64 << 53));
}

/// One running check: its name for messages and the store under test.
struct Check<'a, S> {
    name: &'static str,
    store: &'a S,
}

impl<'a, S: LeaseStore> Check<'a, S> {
    fn new(name: &'static str, store: &'a S) -> Self {
        Self { name, store }
    }

    fn fail(&self, what: &str, got: &dyn Debug) -> ! {
        panic!("lease store contract `{}`: {what}: got {got:#?}", self.name)
    }

    fn assert_eq<T: PartialEq + Debug>(&self, what: &str, actual: &T, expected: &T) {
        if actual != expected {
            panic!("lease store contract `{}`: {what}:\n expected {expected:#?}\n      got {actual:#?}", self.name);
        }
    }

    /// Compares leases, with parent and child ids as sets.
    fn assert_lease(&self, what: &str, actual: &Lease, expected: &Lease) {
        self.assert_eq(what, &normalized(actual), &normalized(expected));
    }

    fn ok<T>(&self, what: &str, result: Result<T, LeaseStoreError>) -> T {
        result.unwrap_or_else(|e| panic!("lease store contract `{}`: {what}: unexpected error {e:?}", self.name))
    }

    fn applied(&self, what: &str, result: Result<LeaseUpdate, LeaseStoreError>) -> Lease {
        match self.ok(what, result) {
            LeaseUpdate::Applied(lease) => lease,
            LeaseUpdate::Lost => panic!("lease store contract `{}`: {what}: expected Applied, got Lost", self.name),
        }
    }

    fn lost(&self, what: &str, result: Result<LeaseUpdate, LeaseStoreError>) {
        match self.ok(what, result) {
            LeaseUpdate::Lost => {}
            LeaseUpdate::Applied(lease) => {
                panic!("lease store contract `{}`: {what}: expected Lost, got Applied({lease:#?})", self.name)
            }
        }
    }

    async fn get(&self, key: &LeaseKey) -> Option<Lease> {
        self.ok(&format!("get {key}"), self.store.get(key).await).map(|l| normalized(&l))
    }

    /// Every item, normalized and sorted by key.
    async fn list(&self) -> Vec<Lease> {
        let mut all: Vec<_> = self.ok("list", self.store.list().await).iter().map(normalized).collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    async fn create(&self, lease: Lease) -> Lease {
        let created = self.applied(&format!("create {}", lease.key), self.store.create_if_absent(lease.clone()).await);
        self.assert_lease(&format!("lease returned by create {}", lease.key), &created, &lease);
        created
    }

    /// `get` of the key returns exactly `expected`.
    async fn assert_stored(&self, what: &str, expected: &Lease) {
        self.assert_eq(what, &self.get(&expected.key).await, &Some(normalized(expected)));
    }
}

/// The lease with parent and child ids sorted: their order is not part of the contract.
fn normalized(lease: &Lease) -> Lease {
    let mut lease = lease.clone();
    lease.parent_shard_ids.sort();
    lease.child_shard_ids.sort();
    lease
}

fn shard(n: u64) -> ShardId {
    ShardId::new(format!("shardId-00000001700000000000-{n:08x}"))
}

fn key(n: u64) -> LeaseKey {
    LeaseKey::for_shard(&shard(n))
}

fn worker(name: &str) -> WorkerId {
    WorkerId::new(name)
}

fn at(digits: &str) -> Checkpoint {
    match SequenceNumber::parse(digits) {
        Ok(seq) => Checkpoint::At(seq),
        Err(e) => panic!("lease store contract: bad sequence number in the suite itself: {e}"),
    }
}

/// A lease for shard `n` at TRIM_HORIZON with no parents.
fn lease(n: u64, owner: Option<&str>, counter: u64) -> Lease {
    let mut lease = Lease::new_for_shard(&shard(n), Checkpoint::TrimHorizon, Vec::new());
    lease.owner = owner.map(worker);
    lease.counter = counter;
    lease
}

/// `request_handoff` sets one request per asking worker (a second request of the same worker
/// replaces its first), leaves the heartbeat's counter alone (so the owner's renewal still
/// applies), requires the heartbeat's owner (not its counter), and is `Lost` on a missing
/// heartbeat; a renewal removes exactly the requests of the workers its caller has seen
/// asking, keeping those of workers that asked since.
pub async fn check_handoff_requests<S: LeaseStore>(store: &S) {
    let c = Check::new("handoff_requests", store);
    let me = worker("w1");
    let req = |w: &str, n: u32| HandoffRequest::new(worker(w), n);
    let sorted = |l: &Lease| {
        let mut r = l.handoff_requests.clone();
        r.sort();
        r
    };
    let mut hb = Lease::new_for_shard(&ShardId::new("-"), Checkpoint::TrimHorizon, Vec::new());
    hb.key = LeaseKey::heartbeat(&me, 7);
    hb.owner = Some(me.clone());
    let hb = c.create(hb).await;
    let renewed = c.applied("renew before any request", store.renew(&hb).await);
    // The asker read the heartbeat before that renewal: its counter is stale, its owner not.
    let asked = c.applied("first request", store.request_handoff(&hb, &worker("w2"), 3).await);
    c.assert_eq("counter after a request", &asked.counter, &renewed.counter);
    c.assert_eq("requests after the first", &sorted(&asked), &vec![req("w2", 3)]);
    let asked = c.applied("same worker asks again", store.request_handoff(&hb, &worker("w2"), 5).await);
    c.assert_eq("a worker's second request replaces its first", &sorted(&asked), &vec![req("w2", 5)]);
    c.lost(
        "request to another owner",
        store.request_handoff(&Lease { owner: Some(worker("w9")), ..hb.clone() }, &worker("w3"), 1).await,
    );
    let seen = c.applied("owner's renewal after the request", store.renew(&renewed).await);
    c.assert_eq("requests carried back by the renewal", &sorted(&seen), &vec![req("w2", 5)]);
    let asked = c.applied("another worker asks", store.request_handoff(&hb, &worker("w3"), 2).await);
    c.assert_eq("requests of two workers", &sorted(&asked), &vec![req("w2", 5), req("w3", 2)]);
    let cleared = c.applied("renewal that has seen the first request", store.renew(&seen).await);
    c.assert_eq("requests left: only the one not yet seen", &sorted(&cleared), &vec![req("w3", 2)]);
    c.assert_stored("heartbeat after the renewal", &cleared).await;
    let gone = Lease { key: LeaseKey::heartbeat(&me, 8), ..hb.clone() };
    c.lost("request to a missing heartbeat", store.request_handoff(&gone, &worker("w2"), 1).await);
    c.assert_eq("missing heartbeat not created", &c.get(&gone.key).await, &None);
}
