//! `kcl-admin status`: who is alive, who holds what, how far each shard has come and how far
//! behind it is. [`report`] is pure over a [`Snapshot`] and the lags measured by [`lag`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use kcl_core::{Checkpoint, Lease, ShardId, StartPosition, StreamRecord, StreamSource};
use serde::Serialize;

use super::{ADMIN_OWNER, Snapshot};

/// Reads [`lag`] follows past empty pages before it calls a shard caught up.
const EMPTY_PAGES: usize = 3;

/// Where a shard is in its lineage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineageState {
    /// Checkpointed at SHARD_END: done, its children may start.
    Finished,
    /// A parent's lease is not finished yet: nobody processes it until it is.
    WaitingForParents,
    /// Owned by a worker.
    Processing,
    /// Owned by nobody: the next take cycle of a worker takes it.
    Unowned,
}

impl LineageState {
    fn as_str(self) -> &'static str {
        match self {
            LineageState::Finished => "finished",
            LineageState::WaitingForParents => "waiting_for_parents",
            LineageState::Processing => "processing",
            LineageState::Unowned => "unowned",
        }
    }
}

/// How far behind a shard is: the age of its oldest record not yet checkpointed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "lag", rename_all = "snake_case")]
pub enum Lag {
    /// Not measured (no stream given).
    Unknown,
    /// Finished: nothing left to read.
    None,
    /// Nothing after the checkpoint (or the shard starts at LATEST).
    CaughtUp,
    /// The oldest unprocessed record is this old.
    Behind {
        /// Its age, in milliseconds, from its approximate creation time.
        oldest_unprocessed_ms: u64,
    },
    /// The stream could not be read at the checkpoint.
    Unreadable {
        /// Why.
        error: String,
    },
}

impl Lag {
    fn shown(&self) -> String {
        match self {
            Lag::Unknown => "-".to_owned(),
            Lag::None => "none".to_owned(),
            Lag::CaughtUp => "caught up".to_owned(),
            Lag::Behind { oldest_unprocessed_ms } => {
                format!("{:.1}s behind", Duration::from_millis(*oldest_unprocessed_ms).as_secs_f64())
            }
            Lag::Unreadable { error } => format!("unreadable: {error}"),
        }
    }
}

/// One worker in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkerRow {
    /// The worker's id.
    pub worker: String,
    /// Whether its heartbeat changed while the admin watched.
    pub alive: bool,
    /// Leases it owns that are not finished.
    pub leases: usize,
}

/// One shard in the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ShardRow {
    /// The shard id (the lease key).
    pub shard: String,
    /// Its owner, if any.
    pub owner: Option<String>,
    /// Its checkpoint, as stored.
    pub checkpoint: String,
    /// Where it is in its lineage.
    pub state: LineageState,
    /// Its parents.
    pub parents: Vec<String>,
    /// How far behind it is.
    #[serde(flatten)]
    pub lag: Lag,
}

/// What `status` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    /// The application (the lease table).
    pub application: String,
    /// How long the heartbeats were watched, in milliseconds.
    pub observed_for_ms: u64,
    /// Every worker with a heartbeat, and every owner without one.
    pub workers: Vec<WorkerRow>,
    /// Every shard lease.
    pub shards: Vec<ShardRow>,
}

/// The keys of the leases not finished yet, for [`lineage_state`].
pub fn unfinished(leases: &[Lease]) -> HashSet<&str> {
    leases.iter().filter(|l| !l.checkpoint.is_shard_end()).map(|l| l.key.as_str()).collect()
}

/// The lineage state of `lease`, given the keys of the leases not finished yet
/// ([`unfinished`]).
pub fn lineage_state(lease: &Lease, unfinished: &HashSet<&str>) -> LineageState {
    if lease.checkpoint.is_shard_end() {
        return LineageState::Finished;
    }
    let parent_open = lease.parent_shard_ids.iter().any(|p| unfinished.contains(p.as_str()));
    match (&lease.owner, parent_open) {
        (_, true) => LineageState::WaitingForParents,
        (Some(_), false) => LineageState::Processing,
        (None, false) => LineageState::Unowned,
    }
}

/// The report for `snapshot`, with the lags measured per shard (missing: [`Lag::Unknown`]).
pub fn report(application: &str, snapshot: &Snapshot, lags: &HashMap<ShardId, Lag>) -> StatusReport {
    let mut workers: BTreeMap<String, WorkerRow> = BTreeMap::new();
    for w in &snapshot.workers {
        let row = workers.entry(w.worker.as_str().to_owned()).or_insert_with(|| WorkerRow {
            worker: w.worker.as_str().to_owned(),
            alive: false,
            leases: 0,
        });
        row.alive |= w.alive;
    }
    let mut shards = Vec::new();
    let open = unfinished(&snapshot.leases);
    for lease in &snapshot.leases {
        let state = lineage_state(lease, &open);
        if let (Some(owner), false) = (&lease.owner, state == LineageState::Finished) {
            workers
                .entry(owner.as_str().to_owned())
                .or_insert_with(|| WorkerRow { worker: owner.as_str().to_owned(), alive: false, leases: 0 })
                .leases += 1;
        }
        let shard = lease.key.shard_id().unwrap_or_else(|| ShardId::new(lease.key.as_str()));
        let lag =
            if state == LineageState::Finished { Lag::None } else { lags.get(&shard).cloned().unwrap_or(Lag::Unknown) };
        shards.push(ShardRow {
            shard: lease.key.as_str().to_owned(),
            owner: lease.owner.as_ref().map(|o| o.as_str().to_owned()),
            checkpoint: lease.checkpoint.to_store_string(),
            state,
            parents: lease.parent_shard_ids.iter().map(|p| p.as_str().to_owned()).collect(),
            lag,
        });
    }
    StatusReport {
        application: application.to_owned(),
        observed_for_ms: u64::try_from(snapshot.observed_for.as_millis()).unwrap_or(u64::MAX),
        workers: workers.into_values().collect(),
        shards,
    }
}

/// The report as the aligned text `status` prints without `--json`.
pub fn render(report: &StatusReport) -> String {
    let alive = report.workers.iter().filter(|w| w.alive).count();
    let held = report.shards.iter().filter(|s| s.state == LineageState::Processing).count();
    let finished = report.shards.iter().filter(|s| s.state == LineageState::Finished).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "application {}: {alive} worker(s) alive, {} lease(s) ({held} processing, {finished} finished); \
         heartbeats watched for {:.1}s",
        report.application,
        report.shards.len(),
        Duration::from_millis(report.observed_for_ms).as_secs_f64()
    );
    let workers: Vec<Vec<String>> = report
        .workers
        .iter()
        .map(|w| {
            let alive = if w.alive {
                "yes"
            } else if w.worker == ADMIN_OWNER {
                "admin"
            } else {
                "no"
            };
            vec![w.worker.clone(), alive.to_owned(), w.leases.to_string()]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(&["WORKER", "ALIVE", "LEASES"], &workers));
    let shards: Vec<Vec<String>> = report
        .shards
        .iter()
        .map(|s| {
            vec![
                s.shard.clone(),
                s.owner.clone().unwrap_or_else(|| "-".to_owned()),
                s.checkpoint.clone(),
                s.state.as_str().to_owned(),
                s.lag.shown(),
                if s.parents.is_empty() { "-".to_owned() } else { s.parents.join(",") },
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(&["SHARD", "OWNER", "CHECKPOINT", "STATE", "LAG", "PARENTS"], &shards));
    out
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// How far behind `shard` is at `checkpoint`: reads the first record after it (following up
/// to a few empty pages) and takes its age at `now`.
pub async fn lag<S: StreamSource>(source: &S, shard: &ShardId, checkpoint: &Checkpoint, now: SystemTime) -> Lag {
    let position = match checkpoint {
        Checkpoint::ShardEnd => return Lag::None,
        Checkpoint::Latest => return Lag::CaughtUp,
        Checkpoint::TrimHorizon => StartPosition::TrimHorizon,
        Checkpoint::At(seq) => StartPosition::AfterSequenceNumber(seq.clone()),
    };
    let unreadable = |e: kcl_core::SourceError| Lag::Unreadable { error: e.to_string() };
    let mut iterator = match source.shard_iterator(shard, &position).await {
        Ok(it) => it,
        Err(e) => return unreadable(e),
    };
    for _ in 0..EMPTY_PAGES {
        let batch = match source.read(&iterator, 1).await {
            Ok(b) => b,
            Err(e) => return unreadable(e),
        };
        if let Some(record) = batch.records.first() {
            let age = record.approximate_creation_time().and_then(|t| now.duration_since(t).ok());
            return Lag::Behind {
                oldest_unprocessed_ms: age.map_or(0, |a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
            };
        }
        match batch.next_iterator {
            Some(next) => iterator = next,
            None => return Lag::CaughtUp,
        }
    }
    Lag::CaughtUp
}

#[cfg(test)]
mod tests {
    use kcl_core::{LeaseKey, SequenceNumber, WorkerId};

    use super::super::WorkerSeen;
    use super::*;

    fn lease(id: &str, owner: Option<&str>, cp: Checkpoint, parents: &[&str]) -> Lease {
        let mut l = Lease::new_for_shard(&ShardId::new(id), cp, parents.iter().map(|p| ShardId::new(*p)).collect());
        l.owner = owner.map(WorkerId::new);
        l
    }

    #[test]
    fn lineage_states() {
        let seq = || Checkpoint::At(SequenceNumber::from_u128(5));
        let leases = vec![
            lease("p-done", None, Checkpoint::ShardEnd, &[]),
            lease("p-open", Some("a"), seq(), &[]),
            lease("c-ready", None, Checkpoint::TrimHorizon, &["p-done"]),
            lease("c-waiting", Some("b"), Checkpoint::TrimHorizon, &["p-open"]),
            lease("orphan", Some("b"), seq(), &["gone"]),
        ];
        let expected = [
            LineageState::Finished,
            LineageState::Processing,
            LineageState::Unowned,
            LineageState::WaitingForParents,
            LineageState::Processing,
        ];
        for (l, want) in leases.iter().zip(expected) {
            assert_eq!(lineage_state(l, &unfinished(&leases)), want, "{}", l.key);
        }
    }

    #[test]
    fn report_counts_unfinished_leases_per_worker_and_lists_silent_owners() {
        let snapshot = Snapshot {
            leases: vec![
                lease("s1", Some("a"), Checkpoint::TrimHorizon, &[]),
                lease("s2", Some("a"), Checkpoint::ShardEnd, &[]),
                lease("s3", Some("dead"), Checkpoint::TrimHorizon, &[]),
            ],
            workers: vec![WorkerSeen {
                worker: WorkerId::new("a"),
                heartbeat: LeaseKey::heartbeat(&WorkerId::new("a"), 1),
                alive: true,
            }],
            observed_for: Duration::from_secs(4),
        };
        let lags = HashMap::from([(ShardId::new("s1"), Lag::Behind { oldest_unprocessed_ms: 2_500 })]);
        let r = report("app", &snapshot, &lags);
        assert_eq!(
            r.workers,
            vec![
                WorkerRow { worker: "a".into(), alive: true, leases: 1 },
                WorkerRow { worker: "dead".into(), alive: false, leases: 1 },
            ]
        );
        assert_eq!(r.shards[0].lag, Lag::Behind { oldest_unprocessed_ms: 2_500 });
        assert_eq!(r.shards[1].lag, Lag::None);
        assert_eq!(r.shards[2].lag, Lag::Unknown);
        let text = render(&r);
        assert!(
            text.starts_with("application app: 1 worker(s) alive, 3 lease(s) (2 processing, 1 finished)"),
            "{text}"
        );
        assert!(text.contains("2.5s behind"), "{text}");
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["shards"][0]["lag"], "behind", "{json}");
        assert_eq!(json["shards"][0]["oldest_unprocessed_ms"], 2_500, "{json}");
        assert_eq!(json["shards"][2]["state"], "processing", "{json}");
    }
}
