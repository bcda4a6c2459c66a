//! The [`StreamSource`] contract: what every stream source must do, checked the same way
//! against the stream simulator and the DynamoDB Streams adapter (on DynamoDB Local), so the
//! fake behaves as the real thing.
//!
//! Writing records and rolling shards over differ per backend, so a check drives the stream
//! through a [`SourceFixture`]. [`run_all`] runs every check, each on a fresh fixture (a fresh
//! stream) from the given factory; each check is also public (`check_*`), for running one
//! alone. A failing check panics with a message naming the check, the step and what differed.
//!
//! The contract holds only what DynamoDB Streams and DynamoDB Local both really do. It leaves
//! open: how many shards a fresh stream has and how keys spread over them, the order of
//! `list_shards`, whether a read returns fewer records than `limit` allows (only `<= limit`
//! is required), and whether children of a closed shard are listed at once (they are looked
//! up again with backoff, like the Java adapter does). Trimmed data and expired iterators
//! need control over time that the emulator lacks; the simulator's own tests cover them.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use kcl_core::testing::contract::source;
//! use kcl_core::testing::sim::SimFixture;
//!
//! source::run_all(|| async { SimFixture::new() }).await;
//! # }
//! ```

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::time::Duration;

use crate::checkpoint::SequenceNumber;
use crate::shard::ShardId;
use crate::source::{
    RecordBatch, ShardDescription, ShardIterator, SourceError, SourceErrorKind, StartPosition, StreamRecord,
    StreamSource,
};

/// A shard id in DynamoDB's format that no stream has.
pub const UNKNOWN_SHARD_ID: &str = "shardId-00000000000000000000-00000000";

/// Reads of an open shard that come back empty in a row before a check takes it as drained.
const EMPTY_READS_AT_HEAD: usize = 3;
/// Reads one drain may make before the check gives up.
const MAX_READS_PER_DRAIN: usize = 500;

/// A stream under test, with the backend-specific ways to change it.
pub trait SourceFixture: Send + Sync {
    /// The source under test.
    type Source: StreamSource;

    /// The source under test, reading a fresh stream (no shards from earlier tests).
    fn source(&self) -> &Self::Source;

    /// Writes a change for `key` (an insert, or a modify if the key exists) and returns once
    /// the change is readable from the stream.
    fn put(&self, key: &str) -> impl Future<Output = ()> + Send;

    /// Closes every open shard, each getting one child with the same hash range (DynamoDB
    /// Local: `triggerShardRollovers`). Children may be listed late.
    fn rollover(&self) -> impl Future<Output = ()> + Send;

    /// How a change put for `key` shows in [`StreamRecord::partition_key`]. Default: `key`.
    fn partition_key_for(&self, key: &str) -> String {
        key.to_owned()
    }
}

/// Runs every check of the contract, each against a fresh fixture from `make_fixture`.
///
/// Panics at the first check that fails.
pub async fn run_all<F, M, Fut>(make_fixture: M)
where
    F: SourceFixture,
    M: Fn() -> Fut,
    Fut: Future<Output = F>,
{
    check_lists_shards_with_ranges(&make_fixture().await).await;
    check_trim_horizon_reads_all_in_order(&make_fixture().await).await;
    check_latest_skips_existing(&make_fixture().await).await;
    check_at_and_after_sequence_number(&make_fixture().await).await;
    check_limit_is_respected_and_over_1000_rejected(&make_fixture().await).await;
    check_unknown_shard_is_not_found(&make_fixture().await).await;
    check_garbage_iterator_is_rejected(&make_fixture().await).await;
    check_rereading_an_iterator_returns_the_same_records(&make_fixture().await).await;
    check_rollover_closes_shard_and_links_child(&make_fixture().await).await;
    check_sequence_numbers_are_decimal_of_at_least_21_digits(&make_fixture().await).await;
}

/// Every listed shard has a unique id and a starting sequence number, a closed one an ending
/// one not below it, at least one shard is open, and every record read from a shard lies
/// within its range.
pub async fn check_lists_shards_with_ranges<F: SourceFixture>(fixture: &F) {
    let c = Check::new("lists_shards_with_ranges", fixture);
    let keys = c.put_keys("ranges", 5).await;
    let shards = c.list().await;
    c.ensure(!shards.is_empty(), "list_shards returned no shard after writes");
    let ids: HashSet<&ShardId> = shards.iter().map(|s| &s.id).collect();
    c.ensure(ids.len() == shards.len(), format!("shard ids are not unique: {shards:?}"));
    c.ensure(shards.iter().any(|s| !s.is_closed()), format!("no open shard: {shards:?}"));
    let mut found = Vec::new();
    for shard in &shards {
        let start = shard.starting_sequence_number.as_ref();
        let start = start.unwrap_or_else(|| c.fail(format!("shard {} has no starting sequence number", shard.id)));
        c.ensure(!shard.parent_ids.contains(&shard.id), format!("shard {} is its own parent", shard.id));
        if let Some(end) = &shard.ending_sequence_number {
            c.ensure(end >= start, format!("shard {} ends ({end}) before it starts ({start})", shard.id));
        }
        let read = c.drain_from(&shard.id, &StartPosition::TrimHorizon, 100).await;
        for record in &read.records {
            let seq = record.sequence_number();
            let inside = seq >= start && shard.ending_sequence_number.as_ref().is_none_or(|end| seq <= end);
            c.ensure(inside, format!("record {seq} lies outside the range of {shard:?}"));
            found.push(record.partition_key().to_owned());
        }
    }
    c.same_keys("keys read from all shards", found, &keys);
}

/// Twenty-five changes read from TRIM_HORIZON with limit 10, paging until the shards are
/// drained: each change exactly once, sequence numbers strictly increasing in each shard.
pub async fn check_trim_horizon_reads_all_in_order<F: SourceFixture>(fixture: &F) {
    let c = Check::new("trim_horizon_reads_all_in_order", fixture);
    let keys = c.put_keys("horizon", 25).await;
    let mut found = Vec::new();
    for shard in c.list().await {
        let read = c.drain_from(&shard.id, &StartPosition::TrimHorizon, 10).await;
        c.ensure_increasing(&shard.id, &read.records);
        found.extend(read.records.iter().map(|r| r.partition_key().to_owned()));
    }
    c.same_keys("keys read from TRIM_HORIZON", found, &keys);
}

/// An iterator at LATEST reads nothing of what was written before it (an empty batch with a
/// next iterator, the shard being open) and then exactly what was written after it.
pub async fn check_latest_skips_existing<F: SourceFixture>(fixture: &F) {
    let c = Check::new("latest_skips_existing", fixture);
    c.put_keys("latest-old", 3).await;
    let mut next = Vec::new();
    for shard in c.list().await.into_iter().filter(|s| !s.is_closed()) {
        let iterator = c.iterator(&shard.id, &StartPosition::Latest).await;
        let batch = c.read(&iterator, 100).await;
        c.ensure(batch.records.is_empty(), format!("LATEST of {} read old records: {:?}", shard.id, batch.records));
        let iterator = batch
            .next_iterator
            .unwrap_or_else(|| c.fail(format!("open shard {} has no next iterator after LATEST", shard.id)));
        next.push((shard.id, iterator));
    }
    let keys = c.put_keys("latest-new", 3).await;
    let mut found = Vec::new();
    for (shard, iterator) in next {
        let read = c.drain(&shard, iterator, 100).await;
        found.extend(read.records.iter().map(|r| r.partition_key().to_owned()));
    }
    c.same_keys("keys read after LATEST", found, &keys);
}

/// AT_SEQUENCE_NUMBER starts at that record and AFTER_SEQUENCE_NUMBER right after it; after
/// the last record there is nothing.
pub async fn check_at_and_after_sequence_number<F: SourceFixture>(fixture: &F) {
    let c = Check::new("at_and_after_sequence_number", fixture);
    let (shard, records) = c.shard_with_records("at-after", 3).await;
    let seqs = seqs_of(&records);
    let cases = [
        ("AT the first", StartPosition::AtSequenceNumber(seqs[0].clone()), &seqs[..]),
        ("AT the second", StartPosition::AtSequenceNumber(seqs[1].clone()), &seqs[1..]),
        ("AFTER the first", StartPosition::AfterSequenceNumber(seqs[0].clone()), &seqs[1..]),
        ("AFTER the second", StartPosition::AfterSequenceNumber(seqs[1].clone()), &seqs[2..]),
        ("AFTER the last", StartPosition::AfterSequenceNumber(seqs[seqs.len() - 1].clone()), &[]),
    ];
    for (what, start, want) in cases {
        let got = seqs_of(&c.drain_from(&shard, &start, 100).await.records);
        c.ensure(got == want, format!("{what} of {shard}: read {got:?}, want {want:?}"));
    }
}

/// A read returns at most `limit` records; paging with limit 1 reads them all; a limit of
/// 1001 (or 0) is rejected as [`SourceErrorKind::Fatal`] (DynamoDB: ValidationException).
pub async fn check_limit_is_respected_and_over_1000_rejected<F: SourceFixture>(fixture: &F) {
    let c = Check::new("limit_is_respected_and_over_1000_rejected", fixture);
    let (shard, records) = c.shard_with_records("limit", 3).await;
    let iterator = c.iterator(&shard, &StartPosition::TrimHorizon).await;
    let two = c.read(&iterator, 2).await;
    c.ensure(two.records.len() <= 2, format!("limit 2 returned {} records", two.records.len()));
    let one_by_one = c.drain_from(&shard, &StartPosition::TrimHorizon, 1).await;
    c.ensure(one_by_one.max_batch <= 1, format!("limit 1 returned a batch of {}", one_by_one.max_batch));
    c.ensure(
        seqs_of(&one_by_one.records) == seqs_of(&records),
        format!("paging with limit 1 read {:?}, want {:?}", seqs_of(&one_by_one.records), seqs_of(&records)),
    );
    let all = c.read(&iterator, 1000).await;
    c.ensure(all.records.len() <= 1000, "limit 1000 returned more than 1000 records");
    for limit in [1001, 0] {
        let result = fixture.source().read(&iterator, limit).await;
        c.expect_error(&format!("read with limit {limit}"), result.map(|_| ()), &[SourceErrorKind::Fatal]);
    }
}

/// An iterator for a shard the stream does not have is [`SourceErrorKind::NotFound`].
pub async fn check_unknown_shard_is_not_found<F: SourceFixture>(fixture: &F) {
    let c = Check::new("unknown_shard_is_not_found", fixture);
    c.put_keys("unknown", 1).await;
    let unknown = ShardId::new(UNKNOWN_SHARD_ID);
    for start in [StartPosition::TrimHorizon, StartPosition::Latest] {
        let result = fixture.source().shard_iterator(&unknown, &start).await;
        c.expect_error(
            &format!("iterator at {start:?} of {unknown}"),
            result.map(|_| ()),
            &[SourceErrorKind::NotFound],
        );
    }
}

/// Reading an iterator the source never issued fails without being retryable:
/// [`SourceErrorKind::Fatal`] (DynamoDB: ValidationException) or [`SourceErrorKind::NotFound`].
pub async fn check_garbage_iterator_is_rejected<F: SourceFixture>(fixture: &F) {
    let c = Check::new("garbage_iterator_is_rejected", fixture);
    c.put_keys("garbage", 1).await;
    let result = fixture.source().read(&ShardIterator("garbage".to_owned()), 10).await;
    c.expect_error(
        "read of a garbage iterator",
        result.map(|_| ()),
        &[SourceErrorKind::Fatal, SourceErrorKind::NotFound],
    );
}

/// An iterator names a position, not a cursor: reading it twice returns the same records (the
/// consumer relies on this to retry a failed read with the same iterator).
pub async fn check_rereading_an_iterator_returns_the_same_records<F: SourceFixture>(fixture: &F) {
    let c = Check::new("rereading_an_iterator_returns_the_same_records", fixture);
    let (shard, records) = c.shard_with_records("reread", 2).await;
    let iterator = c.iterator(&shard, &StartPosition::TrimHorizon).await;
    let first = seqs_of(&c.read(&iterator, 1000).await.records);
    let second = seqs_of(&c.read(&iterator, 1000).await.records);
    c.ensure(first == seqs_of(&records), format!("first read of {shard}: {first:?}, want {:?}", seqs_of(&records)));
    c.ensure(first == second, format!("second read of the same iterator of {shard}: {second:?}, first {first:?}"));
}

/// After a rollover every formerly open shard is closed with an ending sequence number not
/// below its records, has a listed child naming it as parent, reads to its end with no next
/// iterator, and holds the changes from before; changes put after are in the children only.
pub async fn check_rollover_closes_shard_and_links_child<F: SourceFixture>(fixture: &F) {
    let c = Check::new("rollover_closes_shard_and_links_child", fixture);
    let before = c.put_keys("rollover-before", 4).await;
    let parents: BTreeSet<ShardId> = c.list().await.into_iter().filter(|s| !s.is_closed()).map(|s| s.id).collect();
    fixture.rollover().await;
    let after = c.put_keys("rollover-after", 4).await;
    let linked = |shards: &[ShardDescription]| {
        parents.iter().all(|p| {
            shards.iter().any(|s| &s.id == p && s.is_closed()) && shards.iter().any(|s| s.parent_ids.contains(p))
        })
    };
    let shards = c.list_until("every parent closed with a listed child", linked).await;
    let (mut in_parents, mut in_children) = (Vec::new(), Vec::new());
    for shard in &shards {
        if parents.contains(&shard.id) {
            let read = c.drain_from(&shard.id, &StartPosition::TrimHorizon, 100).await;
            c.ensure(read.ended, format!("closed shard {} still gave a next iterator at its end", shard.id));
            c.ensure_increasing(&shard.id, &read.records);
            if let (Some(last), Some(end)) = (read.records.last(), &shard.ending_sequence_number) {
                let seq = last.sequence_number();
                c.ensure(seq <= end, format!("record {seq} lies after the end {end} of {}", shard.id));
            }
            in_parents.extend(read.records.iter().map(|r| r.partition_key().to_owned()));
        } else if shard.parent_ids.iter().any(|p| parents.contains(p)) {
            c.ensure(!shard.is_closed(), format!("child {} is already closed", shard.id));
            let read = c.drain_from(&shard.id, &StartPosition::TrimHorizon, 100).await;
            c.ensure_increasing(&shard.id, &read.records);
            in_children.extend(read.records.iter().map(|r| r.partition_key().to_owned()));
        }
    }
    c.same_keys("keys read from the closed parents", in_parents, &before);
    c.same_keys("keys read from the children", in_children, &after);
}

/// Sequence numbers of records and shard ranges are decimal strings of 21 to 40 digits.
pub async fn check_sequence_numbers_are_decimal_of_at_least_21_digits<F: SourceFixture>(fixture: &F) {
    let c = Check::new("sequence_numbers_are_decimal_of_at_least_21_digits", fixture);
    c.put_keys("digits", 5).await;
    let mut all = Vec::new();
    for shard in c.list().await {
        all.extend(shard.starting_sequence_number.clone());
        all.extend(shard.ending_sequence_number.clone());
        all.extend(seqs_of(&c.drain_from(&shard.id, &StartPosition::TrimHorizon, 100).await.records));
    }
    for seq in all {
        let s = seq.as_str();
        let ok = (21..=SequenceNumber::MAX_DIGITS).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
        c.ensure(ok, format!("sequence number {s} is not a decimal string of 21 to 40 digits"));
    }
}

fn seqs_of<R: StreamRecord>(records: &[R]) -> Vec<SequenceNumber> {
    records.iter().map(|r| r.sequence_number().clone()).collect()
}

/// What a drain of a shard read.
struct Drained<R> {
    records: Vec<R>,
    /// The shard ended: the last read gave no next iterator.
    ended: bool,
    /// The largest batch seen.
    max_batch: usize,
}

/// One running check: its name for messages, and the fixture.
struct Check<'a, F> {
    name: &'static str,
    fixture: &'a F,
}

impl<'a, F: SourceFixture> Check<'a, F> {
    fn new(name: &'static str, fixture: &'a F) -> Self {
        Self { name, fixture }
    }

    fn fail(&self, message: impl std::fmt::Display) -> ! {
        panic!("StreamSource contract, check {}: {message}", self.name)
    }

    fn ensure(&self, condition: bool, message: impl std::fmt::Display) {
        if !condition {
            self.fail(message);
        }
    }

    fn ok<T>(&self, what: &str, result: Result<T, SourceError>) -> T {
        result.unwrap_or_else(|e| self.fail(format!("{what} failed with {:?}: {e}", e.kind())))
    }

    fn expect_error(&self, what: &str, result: Result<(), SourceError>, kinds: &[SourceErrorKind]) {
        match result {
            Ok(()) => self.fail(format!("{what} succeeded; want an error of kind {kinds:?}")),
            Err(e) if !kinds.contains(&e.kind()) => {
                self.fail(format!("{what} failed with {:?} ({e}); want one of {kinds:?}", e.kind()))
            }
            Err(e) => self.ensure(!e.is_retryable(), format!("{what}: error {e} claims to be retryable")),
        }
    }

    /// Puts `n` distinct keys and returns them as the records will show them.
    async fn put_keys(&self, prefix: &str, n: usize) -> Vec<String> {
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            let key = format!("{prefix}-{i:03}");
            self.fixture.put(&key).await;
            keys.push(self.fixture.partition_key_for(&key));
        }
        keys
    }

    fn same_keys(&self, what: &str, mut found: Vec<String>, want: &[String]) {
        let mut want = want.to_vec();
        found.sort();
        want.sort();
        self.ensure(found == want, format!("{what}: got {found:?}, want each of {want:?} exactly once"));
    }

    fn ensure_increasing<R: StreamRecord>(&self, shard: &ShardId, records: &[R]) {
        for pair in records.windows(2) {
            let (a, b) = (pair[0].sequence_number(), pair[1].sequence_number());
            self.ensure(a < b, format!("sequence numbers of {shard} do not increase: {a} then {b}"));
        }
    }

    async fn list(&self) -> Vec<ShardDescription> {
        self.ok("list_shards", self.fixture.source().list_shards().await)
    }

    /// Lists until `done` holds, with backoff (children of a closed shard may appear late).
    async fn list_until(&self, what: &str, done: impl Fn(&[ShardDescription]) -> bool) -> Vec<ShardDescription> {
        let mut delay = Duration::from_millis(50);
        for _ in 0..10 {
            let shards = self.list().await;
            if done(&shards) {
                return shards;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        let shards = self.list().await;
        self.ensure(done(&shards), format!("{what}: never became true; last listing {shards:?}"));
        shards
    }

    async fn iterator(&self, shard: &ShardId, start: &StartPosition) -> ShardIterator {
        let result = self.fixture.source().shard_iterator(shard, start).await;
        self.ok(&format!("shard_iterator({shard}, {start:?})"), result)
    }

    async fn read(&self, iterator: &ShardIterator, limit: usize) -> RecordBatch<<F::Source as StreamSource>::Record> {
        self.ok(&format!("read({iterator:?}, {limit})"), self.fixture.source().read(iterator, limit).await)
    }

    async fn drain_from(
        &self,
        shard: &ShardId,
        start: &StartPosition,
        limit: usize,
    ) -> Drained<<F::Source as StreamSource>::Record> {
        let iterator = self.iterator(shard, start).await;
        self.drain(shard, iterator, limit).await
    }

    /// Reads from `iterator` until the shard ends or, open, gives a few empty batches in a row.
    async fn drain(
        &self,
        shard: &ShardId,
        mut iterator: ShardIterator,
        limit: usize,
    ) -> Drained<<F::Source as StreamSource>::Record> {
        let mut drained = Drained { records: Vec::new(), ended: false, max_batch: 0 };
        let mut empty_in_a_row = 0;
        for _ in 0..MAX_READS_PER_DRAIN {
            let batch = self.read(&iterator, limit).await;
            drained.max_batch = drained.max_batch.max(batch.records.len());
            empty_in_a_row = if batch.records.is_empty() { empty_in_a_row + 1 } else { 0 };
            drained.records.extend(batch.records);
            match batch.next_iterator {
                None => {
                    drained.ended = true;
                    return drained;
                }
                Some(_) if empty_in_a_row >= EMPTY_READS_AT_HEAD => return drained,
                Some(next) => iterator = next,
            }
        }
        self.fail(format!("shard {shard} did not drain in {MAX_READS_PER_DRAIN} reads"))
    }

    /// Puts keys until some shard holds at least `n` of them; returns that shard and its records.
    async fn shard_with_records(&self, prefix: &str, n: usize) -> (ShardId, Vec<<F::Source as StreamSource>::Record>) {
        for round in 0..16 {
            self.put_keys(&format!("{prefix}-{round:02}"), 4).await;
            let mut best: Option<(ShardId, Vec<_>)> = None;
            for shard in self.list().await {
                let read = self.drain_from(&shard.id, &StartPosition::TrimHorizon, 1000).await;
                if best.as_ref().is_none_or(|(_, r)| read.records.len() > r.len()) {
                    best = Some((shard.id, read.records));
                }
            }
            if let Some((shard, records)) = best.filter(|(_, r)| r.len() >= n) {
                return (shard, records);
            }
        }
        self.fail(format!("no shard got {n} records out of 64 keys"))
    }
}
