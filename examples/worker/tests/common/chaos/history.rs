//! The exact lease history, rebuilt from the lease table's stream and dated by the clock.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One lease item as a write left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LeaseImage {
    pub(crate) owner: Option<String>,
    pub(crate) counter: u64,
    pub(crate) checkpoint: Checkpoint,
}

pub(crate) fn is_heartbeat(key: &str) -> bool {
    key.starts_with(LeaseKey::HEARTBEAT_PREFIX)
}

pub(crate) fn lease_image(item: Option<&HashMap<String, StreamValue>>) -> Option<LeaseImage> {
    let item = item?;
    let counter = stream_n(Some(item), "leaseCounter").and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
    let checkpoint = stream_s(Some(item), "checkpoint")
        .map(|s| Checkpoint::parse_store_string(&s).unwrap_or_else(|e| panic!("checkpoint {s:?}: {e}")))
        .unwrap_or(Checkpoint::TrimHorizon);
    Some(LeaseImage { owner: stream_s(Some(item), "leaseOwner"), counter, checkpoint })
}

/// One applied lease write, as the lease table's stream tells it.
#[derive(Clone, Debug)]
pub(crate) struct LeaseWrite {
    pub(crate) seq: SequenceNumber,
    pub(crate) key: String,
    pub(crate) op: LeaseOp,
    pub(crate) before: Option<LeaseImage>,
    pub(crate) after: Option<LeaseImage>,
    /// Sent time of the last tick before it, and return time of the first tick after it.
    pub(crate) earliest: u64,
    pub(crate) latest: u64,
}

impl LeaseWrite {
    pub(crate) fn owner_before(&self) -> Option<&str> {
        self.before.as_ref().and_then(|b| b.owner.as_deref())
    }
    pub(crate) fn owner_after(&self) -> Option<&str> {
        self.after.as_ref().and_then(|a| a.owner.as_deref())
    }
}

/// The clock: tick sequence numbers in order, each with its tick.
pub(crate) struct ClockMap {
    pub(crate) seqs: Vec<SequenceNumber>,
    pub(crate) ticks: Vec<Tick>,
}

impl ClockMap {
    pub(crate) fn new(clock: &Dump, ticks: &[Tick]) -> Self {
        let mut pairs: Vec<(SequenceNumber, Tick)> = clock
            .records
            .iter()
            .filter_map(|r| {
                let n = usize::try_from(stream_n(r.new.as_ref(), "n")?).ok()?;
                Some((r.seq.clone(), *ticks.get(n)?))
            })
            .collect();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let (seqs, ticks) = pairs.into_iter().unzip();
        Self { seqs, ticks }
    }

    /// (sent time of the last tick before `seq`, return time of the first tick after it).
    pub(crate) fn bounds(&self, seq: &SequenceNumber, fallback: (u64, u64)) -> (u64, u64) {
        let i = self.seqs.partition_point(|s| s < seq);
        let earliest = i.checked_sub(1).and_then(|j| self.ticks.get(j)).map_or(fallback.0, |t| t.sent);
        let latest = self.ticks.get(i).map_or(fallback.1, |t| t.returned);
        (earliest, latest)
    }
}

/// Rebuilds the lease history from the lease table's stream, checking on the way that every
/// item's writes chain (each starts from what the previous left), that each write moves the
/// counter by exactly one, and that checkpoints only move forward. Returns the writes and the
/// problems found.
pub(crate) fn lease_history(leases: &Dump, clock: &ClockMap, fallback: (u64, u64)) -> (Vec<LeaseWrite>, Vec<String>) {
    let mut problems = Vec::new();
    let mut last: HashMap<String, Option<LeaseImage>> = HashMap::new();
    let mut writes = Vec::new();
    for r in &leases.records {
        let key = stream_s(Some(&r.keys), "leaseKey").unwrap_or_else(|| panic!("lease record without leaseKey: {r:?}"));
        let before = lease_image(r.old.as_ref());
        let after = lease_image(r.new.as_ref());
        let op = match (r.event, &before, &after) {
            ("INSERT", _, _) => LeaseOp::Create,
            ("REMOVE", _, _) => LeaseOp::Delete,
            (_, Some(b), Some(a)) if b.owner != a.owner && a.owner.is_some() => LeaseOp::Take,
            (_, Some(b), Some(a)) if b.owner.is_some() && a.owner.is_none() => LeaseOp::Release,
            (_, Some(b), Some(a)) if b.checkpoint != a.checkpoint => LeaseOp::Checkpoint,
            // A handoff request added to a heartbeat leaves its counter alone.
            (_, Some(b), Some(a)) if b.counter == a.counter && is_heartbeat(&key) => LeaseOp::RequestHandoff,
            _ => LeaseOp::Renew,
        };
        let previous = last.get(&key).cloned().flatten();
        match op {
            LeaseOp::Create => {
                if previous.is_some() {
                    problems.push(format!("{key}: created at {} while it existed", r.seq));
                }
                if last.contains_key(&key) && !is_heartbeat(&key) {
                    problems.push(format!("{key}: created again at {} after it was deleted", r.seq));
                }
            }
            _ => {
                if before != previous {
                    problems.push(format!(
                        "{key}: write {} ({op:?}) started from {before:?}, but the previous write left {previous:?}",
                        r.seq
                    ));
                }
            }
        }
        if let (LeaseOp::Take | LeaseOp::Release | LeaseOp::Checkpoint | LeaseOp::Renew, Some(b), Some(a)) =
            (op, &before, &after)
        {
            if a.counter != b.counter + 1 {
                problems.push(format!(
                    "{key}: write {} ({op:?}) moved leaseCounter from {} to {} (a write prepared from a stale lease)",
                    r.seq, b.counter, a.counter
                ));
            }
            if !b.checkpoint.may_advance_to(&a.checkpoint) {
                problems.push(format!(
                    "{key}: write {} moved the checkpoint backwards from {:?} to {:?}",
                    r.seq, b.checkpoint, a.checkpoint
                ));
            }
        }
        last.insert(key.clone(), after.clone());
        let (earliest, latest) = clock.bounds(&r.seq, fallback);
        writes.push(LeaseWrite { seq: r.seq.clone(), key, op, before, after, earliest, latest });
    }
    (writes, problems)
}

/// [`lease_history`]'s problems for a lease table stream, without times (for self-tests).
pub(crate) fn lease_stream_problems(leases: &Dump) -> Vec<String> {
    let clock = ClockMap { seqs: Vec::new(), ticks: Vec::new() };
    lease_history(leases, &clock, (0, 0)).1
}

/// [`judge_pause`]'s problems for one pause (for self-tests).
pub(crate) fn pause_problems(file: &WorkerFile, lines: &[Line], pause: &Pause, writes: &[LeaseWrite]) -> Vec<String> {
    let mut problems = Vec::new();
    let runs = runs_after_stop(lines, pause);
    judge_pause(file, lines, pause, &runs, writes, &mut problems);
    problems
}

/// The checker's lease events. Each write gets the earliest time it can have happened, except
/// checkpoints at a sequence number, which get the latest (what the owner had processed by
/// then is judged generously); then times are made non-decreasing per item in write order.
pub(crate) fn lease_events(writes: &[LeaseWrite], base: &TimeBase) -> Vec<LeaseEvent> {
    let mut last_at: HashMap<&str, u64> = HashMap::new();
    let mut events = Vec::new();
    for w in writes {
        let own = match (&w.op, w.after.as_ref().map(|a| &a.checkpoint)) {
            (LeaseOp::Checkpoint, Some(Checkpoint::At(_))) => w.latest,
            _ => w.earliest,
        };
        let at = last_at.get(w.key.as_str()).map_or(own, |prev| own.max(*prev));
        last_at.insert(&w.key, at);
        let image = w.after.as_ref().or(w.before.as_ref());
        events.push(LeaseEvent {
            at: base.at(at),
            op: w.op,
            key: LeaseKey::from_raw(&w.key),
            owner_before: w.owner_before().map(WorkerId::new),
            owner_after: if w.op == LeaseOp::Delete { None } else { w.owner_after().map(WorkerId::new) },
            counter_after: image.map_or(0, |i| i.counter),
            checkpoint_after: image.map_or(Checkpoint::TrimHorizon, |i| i.checkpoint.clone()),
        });
    }
    events
}
