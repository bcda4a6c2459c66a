//! Reading and judging the `jsonl` outputs of a fleet of `worker` processes.
//!
//! Each output file is a sequence of record lines and lifecycle lines (see
//! `kcl_worker::jsonl`). A *tenure* is one worker's holding of one shard: from an
//! `initialize` line to the `shard_ended`, `lease_lost` or `shutdown_requested` line that ends
//! it, or to the end of the file of a worker that was killed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;

/// One change as the test wrote it: what a processor must see for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Label {
    /// `INSERT`, `MODIFY` or `REMOVE`.
    pub(crate) event: &'static str,
    /// The new image's `v`, or for a REMOVE the old image's.
    pub(crate) v: i64,
}

/// How a tenure ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TenureEnd {
    ShardEnded,
    LeaseLost,
    Shutdown,
    /// No end line: the worker was killed while holding the shard.
    Killed,
}

/// One processed record.
#[derive(Clone, Debug)]
pub(crate) struct Occurrence {
    pub(crate) worker: String,
    pub(crate) shard: String,
    pub(crate) seq: u128,
    pub(crate) pk: String,
    pub(crate) label: Label,
    pub(crate) ts: u64,
    /// Index into [`Outputs::tenures`].
    pub(crate) tenure: usize,
}

/// One worker's holding of one shard.
#[derive(Clone, Debug)]
pub(crate) struct Tenure {
    pub(crate) worker: String,
    pub(crate) shard: String,
    pub(crate) end: TenureEnd,
    /// Indexes into [`Outputs::occurrences`], in file order.
    pub(crate) records: Vec<usize>,
    /// Wall-clock nanoseconds of its `initialize` line, and of its end line (`None` when the
    /// worker was killed holding the shard).
    pub(crate) began: u64,
    pub(crate) ended: Option<u64>,
}

/// Everything the fleet wrote.
#[derive(Debug, Default)]
pub(crate) struct Outputs {
    pub(crate) occurrences: Vec<Occurrence>,
    pub(crate) tenures: Vec<Tenure>,
}

fn label_of(line: &Value) -> Result<Label, String> {
    let event = match line["event"].as_str() {
        Some("INSERT") => "INSERT",
        Some("MODIFY") => "MODIFY",
        Some("REMOVE") => "REMOVE",
        other => return Err(format!("unexpected event {other:?}")),
    };
    let field = if event == "REMOVE" { "old_v" } else { "v" };
    let v = line[field].as_i64().ok_or_else(|| format!("{event} without `{field}`"))?;
    Ok(Label { event, v })
}

impl Outputs {
    /// Reads one worker's file. A torn last line (no newline) is accepted only when `killed`.
    pub(crate) fn read_file(&mut self, path: &Path, killed: bool) -> Result<(), String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        let torn = &text[complete.len()..];
        if !torn.is_empty() && !killed {
            return Err(format!("{}: torn last line {torn:?} from a worker that was not killed", path.display()));
        }
        let mut open: HashMap<String, usize> = HashMap::new();
        for (n, raw) in complete.lines().enumerate() {
            let bad = |why: String| format!("{}:{}: {why}: {raw}", path.display(), n + 1);
            let line: Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
            let worker = line["worker"].as_str().ok_or_else(|| bad("no worker".into()))?.to_owned();
            let shard = line["shard"].as_str().ok_or_else(|| bad("no shard".into()))?.to_owned();
            let at = line["ts"].as_u64().ok_or_else(|| bad("no ts".into()))?;
            if let Some(what) = line["lifecycle"].as_str() {
                let end = match what {
                    "initialize" => {
                        if open.contains_key(&shard) {
                            return Err(bad("initialize while the shard's tenure is open".into()));
                        }
                        self.tenures.push(Tenure {
                            worker,
                            shard: shard.clone(),
                            end: TenureEnd::Killed,
                            records: Vec::new(),
                            began: at,
                            ended: None,
                        });
                        open.insert(shard, self.tenures.len() - 1);
                        continue;
                    }
                    "shard_ended" => TenureEnd::ShardEnded,
                    "lease_lost" => TenureEnd::LeaseLost,
                    "shutdown_requested" => TenureEnd::Shutdown,
                    other => return Err(bad(format!("unknown lifecycle {other}"))),
                };
                // A lease lost while waiting on parents has no tenure: nothing was delivered.
                if let Some(t) = open.remove(&shard) {
                    self.tenures[t].end = end;
                    self.tenures[t].ended = Some(at);
                }
                continue;
            }
            let tenure = *open.get(&shard).ok_or_else(|| bad("record outside a tenure".into()))?;
            let seq = line["seq"].as_str().and_then(|s| s.parse::<u128>().ok()).ok_or_else(|| bad("bad seq".into()))?;
            let pk = line["keys"]["pk"].as_str().ok_or_else(|| bad("no keys.pk".into()))?.to_owned();
            let ts = at;
            let label = label_of(&line).map_err(bad)?;
            self.tenures[tenure].records.push(self.occurrences.len());
            self.occurrences.push(Occurrence { worker, shard, seq, pk, label, ts, tenure });
        }
        if !killed && !open.is_empty() {
            let shards: Vec<&String> = open.keys().collect();
            return Err(format!("{}: tenures never ended for {shards:?} (worker was not killed)", path.display()));
        }
        Ok(())
    }

    /// Per item, its distinct changes (deduplicated by sequence number), ordered by when they
    /// were first processed.
    pub(crate) fn timelines(&self) -> Result<BTreeMap<String, Vec<FirstSeen>>, String> {
        let mut first: HashMap<u128, &Occurrence> = HashMap::new();
        for o in &self.occurrences {
            match first.get(&o.seq) {
                Some(seen) if seen.pk != o.pk || seen.label != o.label => {
                    return Err(format!("sequence number {} seen as {:?} and as {:?}", o.seq, seen, o));
                }
                Some(seen) if seen.ts <= o.ts => {}
                _ => {
                    first.insert(o.seq, o);
                }
            }
        }
        let mut by_item: BTreeMap<String, Vec<FirstSeen>> = BTreeMap::new();
        for (seq, o) in first {
            let seen = FirstSeen { seq, label: o.label.clone(), ts: o.ts, worker: o.worker.clone() };
            by_item.entry(o.pk.clone()).or_default().push(seen);
        }
        for changes in by_item.values_mut() {
            changes.sort_by_key(|c| (c.ts, c.seq));
        }
        Ok(by_item)
    }
}

/// A change, where it was first processed.
#[derive(Clone, Debug)]
pub(crate) struct FirstSeen {
    pub(crate) seq: u128,
    pub(crate) label: Label,
    /// Wall-clock nanoseconds.
    pub(crate) ts: u64,
    pub(crate) worker: String,
}

/// What the duplicate analysis found.
#[derive(Debug, Default)]
pub(crate) struct Duplicates {
    /// Records processed again after the worker holding them was killed.
    pub(crate) after_kill: usize,
    /// Records processed again after their worker lost the lease (stolen or expired).
    pub(crate) after_lease_loss: usize,
    /// The largest number of repeated records in one tenure.
    pub(crate) largest_tail: usize,
    /// Per occurrence: whether it is a repetition (an extra delivery the promises allow).
    pub(crate) repeated: Vec<bool>,
}

/// Checks that records are processed more than once only by tenures that ended by a kill or
/// a lost lease, never twice by tenures that ended with a shard end or a graceful shutdown
/// (those checkpointed what they processed). A lost tenure's extra delivery is either its
/// uncheckpointed tail, repeated by a later owner, or a delivery of a worker that had lost the
/// lease without knowing it yet (a steal or an expiry is learnt at the next renewal): its
/// tenure began before the completed tenure that also delivered the record ended. A record a
/// completed tenure processed and a tenure begun after that one ended processed again is a
/// violation (a new owner that did not start after the checkpoint). The repeated records of a
/// tenure must be its tail, at most `max_tail` long (one batch: the processor checkpoints every
/// batch).
pub(crate) fn check_duplicates(outputs: &Outputs, max_tail: usize) -> Result<Duplicates, String> {
    let mut by_seq: HashMap<u128, Vec<usize>> = HashMap::new();
    for (i, o) in outputs.occurrences.iter().enumerate() {
        by_seq.entry(o.seq).or_default().push(i);
    }
    let tenure_of = |i: usize| &outputs.tenures[outputs.occurrences[i].tenure];
    let completed = |i: usize| matches!(tenure_of(i).end, TenureEnd::ShardEnded | TenureEnd::Shutdown);
    let mut repeated = vec![false; outputs.occurrences.len()];
    let mut found = Duplicates::default();
    for indexes in by_seq.values().filter(|v| v.len() > 1) {
        let mut sorted = indexes.clone();
        sorted.sort_by_key(|i| outputs.occurrences[*i].ts);
        let again = || -> Vec<String> {
            let list = sorted.iter().map(|j| (&outputs.occurrences[*j], tenure_of(*j).end));
            list.map(|(d, end)| format!("{} at {} (tenure ended {end:?})", d.worker, d.ts)).collect()
        };
        let done: Vec<usize> = sorted.iter().copied().filter(|i| completed(*i)).collect();
        // The delivery that stands: the completed one, else the last.
        let kept = match done.as_slice() {
            [] => sorted[sorted.len() - 1],
            [one] => *one,
            [first, ..] => {
                let o = &outputs.occurrences[*first];
                return Err(format!(
                    "record {} ({} {:?}) of shard {} was processed by {} in a tenure that ended with {:?}, and \
                     processed again: {:?}",
                    o.seq,
                    o.pk,
                    o.label,
                    o.shard,
                    o.worker,
                    tenure_of(*first).end,
                    again()
                ));
            }
        };
        let (kept_at, kept_ended) = (outputs.occurrences[kept].ts, tenure_of(kept).ended);
        for &i in sorted.iter().filter(|i| **i != kept) {
            let o = &outputs.occurrences[i];
            let tenure = tenure_of(i);
            let explained = o.ts < kept_at || kept_ended.is_none_or(|end| tenure.began < end);
            if !explained {
                return Err(format!(
                    "record {} ({} {:?}) of shard {} was processed again by {} in a tenure begun after the tenure \
                     that had processed it ended: {:?}",
                    o.seq,
                    o.pk,
                    o.label,
                    o.shard,
                    o.worker,
                    again()
                ));
            }
            match tenure.end {
                TenureEnd::Killed => found.after_kill += 1,
                _ => found.after_lease_loss += 1,
            }
            repeated[i] = true;
        }
    }
    for tenure in &outputs.tenures {
        let flags: Vec<bool> = tenure.records.iter().map(|i| repeated[*i]).collect();
        let Some(first) = flags.iter().position(|r| *r) else { continue };
        if flags[first..].iter().any(|r| !r) {
            return Err(format!(
                "{}'s repeated records of shard {} are not a tail: {} of {} repeated, the first at position {first}",
                tenure.worker,
                tenure.shard,
                flags.iter().filter(|r| **r).count(),
                flags.len()
            ));
        }
        let tail = flags.len() - first;
        if tail > max_tail {
            return Err(format!(
                "{}'s tail on shard {} is {tail} records, more than {max_tail}",
                tenure.worker, tenure.shard
            ));
        }
        found.largest_tail = found.largest_tail.max(tail);
    }
    found.repeated = repeated;
    Ok(found)
}

/// The changes seen in a file so far, read leniently (a worker may be writing it): every
/// complete record line's item and label.
pub(crate) fn seen(path: &Path) -> Vec<(String, Label)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    text.lines()
        .filter_map(|raw| serde_json::from_str::<Value>(raw).ok())
        .filter(|line| line.get("seq").is_some())
        .filter_map(|line| Some((line["keys"]["pk"].as_str()?.to_owned(), label_of(&line).ok()?)))
        .collect()
}
