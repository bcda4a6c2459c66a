//! The simulator's state: the shard table, the write log, key routing, rotation, splits,
//! retention and positions. Plain data and functions over it; the lock and the async calls
//! live in `mod.rs`.
//!
//! Every record ever written stays in one log in write order (it backs `written()` and
//! `trimmed()`); a shard holds the log indices of its records. Trimming moves a single
//! watermark through the log (writes are in time order, so the trimmed records are a prefix),
//! and a shard's oldest retained record is found by binary search. Positions in a shard are
//! absolute (records written to it before), so they stay valid as the front is trimmed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::builder::Settings;
use super::faults::Faults;
use super::iterator::IterState;
use super::record::{ChangeKind, SimRecord};
use super::{MAX_READ_LIMIT, SimError, SimStats};
use crate::checkpoint::SequenceNumber;
use crate::shard::ShardId;
use crate::source::{RecordBatch, ShardDescription, ShardIterator, SourceError, SourceErrorKind, StartPosition};

/// The simulated wall clock at the moment the simulator was built (14 Nov 2023).
const BASE_UNIX_SECS: u64 = 1_700_000_000;
/// Sequence numbers start above this: 21 digits, like DynamoDB Local's counter.
const FIRST_SEQ: u128 = 100_000_000_000_000_000_000;
/// The seed picks a starting offset below this.
const SEQ_OFFSET_SPAN: u64 = 1_000_000_000_000;
/// Each sequence number is 1..=this above the previous one.
const MAX_SEQ_STEP: u64 = 64;
/// Keys hash into [0, 2^64).
const HASH_SPACE: u128 = 1 << 64;

/// The simulated wall-clock time `ns` nanoseconds after the simulator was built.
pub(super) fn wall_clock(ns: u64) -> SystemTime {
    wall_clock_from(None, ns)
}

/// Like [`wall_clock`], from `base` when the simulator runs on the real wall clock.
pub(super) fn wall_clock_from(base: Option<SystemTime>, ns: u64) -> SystemTime {
    base.unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(BASE_UNIX_SECS)) + Duration::from_nanos(ns)
}

/// Whole nanoseconds of a duration, saturating at `u64::MAX` (about 584 years).
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A sequence number from its value, formatted by hand through `u64` halves: `u128`'s own
/// formatting divides in 128 bits per digit, which showed up in reads of large batches.
fn seq_number(n: u128) -> SequenceNumber {
    const SPLIT: u128 = 10_000_000_000_000_000_000; // 10^19
    let mut buf = [b'0'; 40];
    let mut at = buf.len();
    let Ok(mut high) = u64::try_from(n / SPLIT) else {
        return SequenceNumber::from_u128(n); // 39 digits: far beyond what the simulator issues
    };
    let mut low = (n % SPLIT) as u64; // below 10^19 < 2^64
    for _ in 0..19 {
        at -= 1;
        buf[at] = b'0' + (low % 10) as u8;
        low /= 10;
    }
    while high > 0 {
        at -= 1;
        buf[at] = b'0' + (high % 10) as u8;
        high /= 10;
    }
    // `parse` drops the leading zeros; the buffer holds only ASCII digits, at most 39 of them.
    let digits = std::str::from_utf8(&buf[at..]).unwrap_or("0");
    SequenceNumber::parse(digits).unwrap_or_else(|_| SequenceNumber::from_u128(n))
}

/// FNV-1a, 64 bit: a fixed, platform-independent hash.
fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Where a key lands in the hash space: FNV-1a, then MurmurHash3's 64-bit finalizer. FNV
/// alone barely moves the high bits for keys that differ in their last characters
/// (`item-1`, `item-2`, …), and shards own ranges of the high bits.
fn key_hash(key: &str) -> u64 {
    let mut h = fnv1a(key);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// A bijection on u32 (lowbias32), so distinct shard counters give distinct id suffixes.
fn permute(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// One change, stored compactly; turned into a [`SimRecord`] when read.
#[derive(Debug)]
struct LogEntry {
    seq: u128,
    key: Arc<str>,
    version: u64,
    at_ns: u64,
    shard: usize,
    kind: ChangeKind,
}

/// One shard, open or closed.
#[derive(Debug)]
struct Shard {
    /// What `list_shards` reports, kept up to date so listing only clones.
    desc: ShardDescription,
    parent: Option<usize>,
    /// Half-open hash range `[start, end)`.
    range: (u128, u128),
    created_ns: u64,
    closed_ns: Option<u64>,
    starting_seq: u128,
    ending_seq: Option<u128>,
    /// Log indices of the shard's records, increasing.
    positions: Vec<usize>,
    /// Reads of this shard in flight.
    in_flight: usize,
}

/// Everything the simulator knows, behind its mutex.
#[derive(Debug)]
pub(super) struct State {
    settings: Settings,
    rng: SmallRng,
    id_key: u32,
    next_seq: u128,
    shards: Vec<Shard>,
    by_id: HashMap<ShardId, usize>,
    /// Open shards by the start of their hash range; together they cover the hash space.
    open: BTreeMap<u128, usize>,
    log: Vec<LogEntry>,
    /// Log entries below this index are trimmed.
    watermark: usize,
    /// Per key: the shared key string and its last version.
    versions: HashMap<Arc<str>, (Arc<str>, u64)>,
    rotations_done: u64,
    splits_done: u64,
    /// The latest time seen, in nanoseconds since the simulator was built.
    clock_ns: u64,
    pub(super) faults: Faults,
    pub(super) stats: SimStats,
    /// Shards whose reads are stuck: no records, and the same iterator back.
    pub(super) stuck: HashSet<usize>,
    /// Records a read cannot decode, and whether the error names them (see
    /// `StreamSimulator::make_undecodable`).
    pub(super) undecodable: HashMap<SequenceNumber, bool>,
}

impl State {
    pub(super) fn new(settings: Settings) -> Self {
        let mut rng = SmallRng::seed_from_u64(settings.seed);
        let id_key = rng.random::<u32>();
        let next_seq = FIRST_SEQ + u128::from(rng.random_range(0..SEQ_OFFSET_SPAN));
        let mut state = Self {
            faults: Faults::new(settings.seed),
            stuck: HashSet::new(),
            undecodable: HashMap::new(),
            settings,
            rng,
            id_key,
            next_seq,
            shards: Vec::new(),
            by_id: HashMap::new(),
            open: BTreeMap::new(),
            log: Vec::new(),
            watermark: 0,
            versions: HashMap::new(),
            rotations_done: 0,
            splits_done: 0,
            clock_ns: 0,
            stats: SimStats::default(),
        };
        let n = state.settings.initial_shards as u128;
        for i in 0..n {
            state.create_shard(None, (HASH_SPACE * i / n, HASH_SPACE * (i + 1) / n), 0);
        }
        state
    }

    fn take_seq(&mut self) -> u128 {
        let seq = self.next_seq;
        self.next_seq += u128::from(self.rng.random_range(1..=MAX_SEQ_STEP));
        seq
    }

    fn create_shard(&mut self, parent: Option<usize>, range: (u128, u128), at_ns: u64) -> usize {
        let index = self.shards.len();
        // Truncation is fine: ids stay unique for the first 2^32 shards.
        let suffix = permute((index as u32).wrapping_add(self.id_key));
        let millis = BASE_UNIX_SECS * 1000 + at_ns / 1_000_000;
        let id = ShardId::new(format!("shardId-{millis:020}-{suffix:08x}"));
        let starting_seq = self.take_seq();
        let desc = ShardDescription {
            id: id.clone(),
            parent_ids: parent.map(|p| vec![self.shards[p].desc.id.clone()]).unwrap_or_default(),
            starting_sequence_number: Some(seq_number(starting_seq)),
            ending_sequence_number: None,
        };
        self.shards.push(Shard {
            desc,
            parent,
            range,
            created_ns: at_ns,
            closed_ns: None,
            starting_seq,
            ending_seq: None,
            positions: Vec::new(),
            in_flight: 0,
        });
        self.by_id.insert(id, index);
        self.open.insert(range.0, index);
        index
    }

    fn close_shard(&mut self, index: usize, at_ns: u64) {
        let ending = self.take_seq();
        let shard = &mut self.shards[index];
        shard.ending_seq = Some(ending);
        shard.closed_ns = Some(at_ns);
        shard.desc.ending_sequence_number = Some(seq_number(ending));
        self.open.remove(&shard.range.0);
    }

    fn open_index(&self, id: &ShardId) -> Result<usize, SimError> {
        let &index = self.by_id.get(id).ok_or_else(|| SimError::UnknownShard(id.clone()))?;
        if self.shards[index].closed_ns.is_some() {
            return Err(SimError::ShardClosed(id.clone()));
        }
        Ok(index)
    }

    fn rotate_index(&mut self, index: usize, at_ns: u64) -> usize {
        let range = self.shards[index].range;
        self.close_shard(index, at_ns);
        self.create_shard(Some(index), range, at_ns)
    }

    fn split_index(&mut self, index: usize, at_ns: u64) -> (usize, usize) {
        let (start, end) = self.shards[index].range;
        let mid = start + (end - start) / 2;
        self.close_shard(index, at_ns);
        let low = self.create_shard(Some(index), (start, mid), at_ns);
        let high = self.create_shard(Some(index), (mid, end), at_ns);
        (low, high)
    }

    pub(super) fn rotate(&mut self, id: &ShardId, now_ns: u64) -> Result<ShardId, SimError> {
        let index = self.open_index(id)?;
        let child = self.rotate_index(index, now_ns);
        Ok(self.shards[child].desc.id.clone())
    }

    pub(super) fn rotate_all(&mut self, now_ns: u64) -> Vec<ShardId> {
        let open: Vec<usize> = self.open.values().copied().collect();
        open.into_iter()
            .map(|i| {
                let child = self.rotate_index(i, now_ns);
                self.shards[child].desc.id.clone()
            })
            .collect()
    }

    pub(super) fn split(&mut self, id: &ShardId, now_ns: u64) -> Result<(ShardId, ShardId), SimError> {
        let index = self.open_index(id)?;
        let (start, end) = self.shards[index].range;
        if end - start < 2 {
            return Err(SimError::CannotSplit(id.clone()));
        }
        let (low, high) = self.split_index(index, now_ns);
        Ok((self.shards[low].desc.id.clone(), self.shards[high].desc.id.clone()))
    }

    /// Moves the clock to `now_ns` (never backwards: callers on other threads may read the
    /// clock in one order and take the lock in the other), applies the automatic rotations
    /// and splits due by then in time order, trims, and returns the clock.
    pub(super) fn advance(&mut self, now_ns: u64) -> u64 {
        let now_ns = now_ns.max(self.clock_ns);
        self.clock_ns = now_ns;
        let due = |period: Option<Duration>, done: u64| {
            period.map(|p| p.as_nanos() * u128::from(done + 1)).filter(|&t| t <= u128::from(now_ns))
        };
        loop {
            let rotate_at = due(self.settings.auto_rotate_every, self.rotations_done);
            let split_at = due(self.settings.auto_split_every, self.splits_done);
            let (rotate, at) = match (rotate_at, split_at) {
                (None, None) => break,
                (Some(r), Some(s)) if s < r => (false, s),
                (Some(r), _) => (true, r),
                (None, Some(s)) => (false, s),
            };
            // `at <= now_ns`, so it fits in u64.
            let at = u64::try_from(at).unwrap_or(now_ns);
            if rotate {
                self.rotations_done += 1;
                self.rotate_all(at);
            } else {
                self.splits_done += 1;
                let busiest = self
                    .open
                    .values()
                    .copied()
                    .filter(|&i| self.shards[i].range.1 - self.shards[i].range.0 >= 2)
                    .max_by_key(|&i| (self.shards[i].positions.len(), std::cmp::Reverse(i)));
                if let Some(index) = busiest {
                    self.split_index(index, at);
                }
            }
        }
        let retention = nanos(self.settings.retention);
        while self.watermark < self.log.len() && now_ns.saturating_sub(self.log[self.watermark].at_ns) > retention {
            self.watermark += 1;
        }
        now_ns
    }

    pub(super) fn write(&mut self, key: &str, kind: ChangeKind, now_ns: u64) -> SimRecord {
        let hash = u128::from(key_hash(key));
        let shard = match self.open.range(..=hash).next_back() {
            Some((_, &index)) => index,
            // Open shards always cover [0, 2^64): each close opens children over the same range.
            None => unreachable!("simulator: no open shard owns hash {hash}"),
        };
        let seq = self.take_seq();
        let (key, version) = match self.versions.get_mut(key) {
            Some((shared, version)) => {
                *version += 1;
                (Arc::clone(shared), *version)
            }
            None => {
                let shared: Arc<str> = Arc::from(key);
                self.versions.insert(Arc::clone(&shared), (Arc::clone(&shared), 1));
                (shared, 1)
            }
        };
        let global = self.log.len();
        self.log.push(LogEntry { seq, key, version, at_ns: now_ns, shard, kind });
        self.shards[shard].positions.push(global);
        self.stats.records_written += 1;
        self.materialize(global)
    }

    pub(super) fn version(&self, key: &str) -> u64 {
        self.versions.get(key).map_or(0, |(_, v)| *v)
    }

    fn materialize(&self, global: usize) -> SimRecord {
        let e = &self.log[global];
        SimRecord {
            sequence_number: seq_number(e.seq),
            shard_id: self.shards[e.shard].desc.id.clone(),
            key: e.key.to_string(),
            kind: e.kind,
            version: e.version,
            created_at: wall_clock_from(self.settings.wall_clock_base, e.at_ns),
        }
    }

    fn first_retained(&self, index: usize) -> usize {
        self.shards[index].positions.partition_point(|&g| g < self.watermark)
    }

    /// Closed longer than retention with every record trimmed: DynamoDB no longer lists it.
    fn is_gone(&self, index: usize, now_ns: u64) -> bool {
        let shard = &self.shards[index];
        let retention = nanos(self.settings.retention);
        shard.closed_ns.is_some_and(|c| now_ns.saturating_sub(c) > retention)
            && self.first_retained(index) == shard.positions.len()
    }

    fn is_listed(&self, index: usize, now_ns: u64) -> bool {
        let shard = &self.shards[index];
        let delay = nanos(self.settings.child_listing_delay);
        let child_visible = shard.parent.is_none() || now_ns.saturating_sub(shard.created_ns) >= delay;
        child_visible && !self.is_gone(index, now_ns)
    }

    pub(super) fn list(&self, now_ns: u64) -> Vec<ShardDescription> {
        (0..self.shards.len()).filter(|&i| self.is_listed(i, now_ns)).map(|i| self.shards[i].desc.clone()).collect()
    }

    pub(super) fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub(super) fn open_shards(&self) -> Vec<ShardId> {
        let mut open: Vec<usize> = self.open.values().copied().collect();
        open.sort_unstable();
        open.into_iter().map(|i| self.shards[i].desc.id.clone()).collect()
    }

    pub(super) fn written(&self) -> Vec<SimRecord> {
        (0..self.log.len()).map(|g| self.materialize(g)).collect()
    }

    pub(super) fn trimmed(&self) -> Vec<SimRecord> {
        (0..self.watermark).map(|g| self.materialize(g)).collect()
    }

    /// The retained records of a shard, or `None` for an unknown shard.
    pub(super) fn shard_records(&self, id: &ShardId) -> Option<Vec<SimRecord>> {
        let &index = self.by_id.get(id)?;
        let first = self.first_retained(index);
        Some(self.shards[index].positions[first..].iter().map(|&g| self.materialize(g)).collect())
    }

    fn seq_at(&self, index: usize, position: usize) -> u128 {
        self.log[self.shards[index].positions[position]].seq
    }

    /// The absolute position `start` denotes in shard `index`.
    fn start_position(&self, index: usize, start: &StartPosition) -> Result<usize, SourceError> {
        let first = self.first_retained(index);
        let shard = &self.shards[index];
        let (seq, after) = match start {
            StartPosition::TrimHorizon => return Ok(first),
            StartPosition::Latest => return Ok(shard.positions.len()),
            StartPosition::AtSequenceNumber(s) => (s, false),
            StartPosition::AfterSequenceNumber(s) => (s, true),
        };
        // Up to 40 digits: anything beyond u128 is above every sequence number issued here.
        let s = seq.as_str().parse::<u128>().unwrap_or(u128::MAX);
        if first > 0 {
            let last_trimmed = self.seq_at(index, first - 1);
            if s < last_trimmed || (s == last_trimmed && !after) {
                return Err(SourceError::new(
                    SourceErrorKind::TrimmedData,
                    format!("simulator: sequence number {seq} of shard {} is trimmed", shard.desc.id),
                ));
            }
        }
        if s < shard.starting_seq || shard.ending_seq.is_some_and(|e| s > e) {
            return Err(SourceError::new(
                SourceErrorKind::Fatal,
                format!("simulator: sequence number {seq} is outside the range of shard {}", shard.desc.id),
            ));
        }
        let log = &self.log;
        let position = shard.positions.partition_point(|&g| if after { log[g].seq <= s } else { log[g].seq < s });
        Ok(position.max(first))
    }

    pub(super) fn iterator(
        &self,
        id: &ShardId,
        start: &StartPosition,
        now_ns: u64,
    ) -> Result<ShardIterator, SourceError> {
        let not_found = || SourceError::new(SourceErrorKind::NotFound, format!("simulator: no shard {id}"));
        let &index = self.by_id.get(id).ok_or_else(not_found)?;
        if self.is_gone(index, now_ns) {
            return Err(not_found());
        }
        let position = self.start_position(index, start)?;
        Ok(IterState { shard: index, position, issued_ns: now_ns }.encode())
    }

    /// Reads at `iterator`; on success the shard's in-flight count was raised and the caller
    /// must lower it with [`Self::release`] once the read is over. Returns the shard index too.
    pub(super) fn read(
        &mut self,
        iterator: &ShardIterator,
        limit: usize,
        now_ns: u64,
    ) -> Result<(RecordBatch<SimRecord>, usize), SourceError> {
        if !(1..=MAX_READ_LIMIT).contains(&limit) {
            return Err(SourceError::new(
                SourceErrorKind::Fatal,
                format!("simulator: limit {limit} is outside 1..={MAX_READ_LIMIT}"),
            ));
        }
        let it = IterState::decode(iterator)?;
        let Some(shard) = self.shards.get(it.shard).filter(|s| it.position <= s.positions.len()) else {
            return Err(SourceError::new(SourceErrorKind::Fatal, format!("simulator: invalid iterator {iterator:?}")));
        };
        let id = &shard.desc.id;
        if shard.in_flight >= self.settings.max_readers_per_shard {
            return Err(SourceError::new(SourceErrorKind::Throttled, format!("simulator: too many readers of {id}")));
        }
        if now_ns.saturating_sub(it.issued_ns) > nanos(self.settings.iterator_ttl) {
            return Err(SourceError::new(
                SourceErrorKind::ExpiredIterator,
                format!("simulator: iterator of {id} expired"),
            ));
        }
        if self.is_gone(it.shard, now_ns) {
            return Err(SourceError::new(SourceErrorKind::NotFound, format!("simulator: shard {id} is gone")));
        }
        if it.position < self.first_retained(it.shard) {
            return Err(SourceError::new(
                SourceErrorKind::TrimmedData,
                format!("simulator: records of {id} at the iterator were trimmed"),
            ));
        }
        let len = shard.positions.len();
        let end = len.min(it.position.saturating_add(limit));
        let records: Vec<SimRecord> = shard.positions[it.position..end].iter().map(|&g| self.materialize(g)).collect();
        let next_iterator = if shard.closed_ns.is_some() && end == len {
            None
        } else {
            Some(IterState { shard: it.shard, position: end, issued_ns: now_ns }.encode())
        };
        self.shards[it.shard].in_flight += 1;
        Ok((RecordBatch { records, next_iterator }, it.shard))
    }

    /// The error of a read whose answer holds an undecodable record: like a client that
    /// cannot parse a response, it fails the whole read, and names the answer's first record
    /// (when that one is named), as a source reading the raw answer can.
    pub(super) fn undecodable_in(&self, records: &[SimRecord]) -> Option<SourceError> {
        let bad = records.iter().find(|r| self.undecodable.contains_key(&r.sequence_number))?;
        let message = format!("simulator: cannot decode record {} of {}", bad.sequence_number, bad.shard_id);
        let first = records.first()?;
        Some(match self.undecodable.get(&first.sequence_number) {
            Some(true) => SourceError::undecodable(
                message,
                crate::source::UndecodableRecord::new(
                    first.sequence_number.clone(),
                    format!("{{\"key\":{:?}}}", first.key),
                ),
            ),
            _ => SourceError::new(SourceErrorKind::Undecodable, message),
        })
    }

    /// The index of a shard, for [`Self::stuck`].
    pub(super) fn index_of(&self, shard: &ShardId) -> Option<usize> {
        self.by_id.get(shard).copied()
    }

    /// Ends a read started by [`Self::read`].
    pub(super) fn release(&mut self, index: usize) {
        if let Some(shard) = self.shards.get_mut(index) {
            shard.in_flight = shard.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn seq_number_formats_like_u128() {
        for n in [0, 7, FIRST_SEQ, FIRST_SEQ + 123_456_789, u128::from(u64::MAX) * 1_000, u128::MAX] {
            assert_eq!(seq_number(n), SequenceNumber::from_u128(n), "{n}");
        }
    }

    #[test]
    fn permute_is_injective_on_a_sample() {
        let mut seen: Vec<u32> = (0..100_000u32).map(permute).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 100_000);
    }
}
