//! The workers' jsonl outputs, line by line, and what a paused worker wrote after SIGCONT.

#[allow(clippy::wildcard_imports)]
use super::*;

/// What one output line says.
#[derive(Clone, Debug)]
pub(crate) enum LineKind {
    Record { seq: SequenceNumber, pk: String, label: Label },
    Lifecycle { what: String, checkpoint: Option<String> },
}

/// One complete line of a worker's output.
#[derive(Clone, Debug)]
pub(crate) struct Line {
    /// Byte offset just past the line's newline.
    pub(crate) end: u64,
    pub(crate) worker: String,
    pub(crate) shard: String,
    pub(crate) ts: u64,
    pub(crate) kind: LineKind,
}

impl Line {
    pub(crate) fn is_record_of(&self, shard: &str) -> bool {
        self.shard == shard && matches!(self.kind, LineKind::Record { .. })
    }
}

pub(crate) fn label_of(line: &Value) -> Option<Label> {
    let event = match line["event"].as_str()? {
        "INSERT" => "INSERT",
        "MODIFY" => "MODIFY",
        "REMOVE" => "REMOVE",
        _ => return None,
    };
    let v = line[if event == "REMOVE" { "old_v" } else { "v" }].as_i64()?;
    Some(Label { event, v })
}

/// The complete lines of an output file (a torn last line of a killed worker is left out).
pub(crate) fn read_lines(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut lines = Vec::new();
    let mut end = 0u64;
    for raw in text.split_inclusive('\n') {
        end += raw.len() as u64;
        if !raw.ends_with('\n') {
            break;
        }
        let bad = |why: &str| -> ! { panic!("{}: {why}: {raw}", path.display()) };
        let v: Value = serde_json::from_str(raw).unwrap_or_else(|e| bad(&e.to_string()));
        let worker = v["worker"].as_str().unwrap_or_else(|| bad("no worker")).to_owned();
        let shard = v["shard"].as_str().unwrap_or_else(|| bad("no shard")).to_owned();
        let ts = v["ts"].as_u64().unwrap_or_else(|| bad("no ts"));
        let kind = match v["lifecycle"].as_str() {
            Some(what) => {
                LineKind::Lifecycle { what: what.to_owned(), checkpoint: v["checkpoint"].as_str().map(str::to_owned) }
            }
            None => {
                let seq = v["seq"].as_str().and_then(|s| SequenceNumber::parse(s).ok()).unwrap_or_else(|| bad("seq"));
                let pk = v["keys"]["pk"].as_str().unwrap_or_else(|| bad("no keys.pk")).to_owned();
                LineKind::Record { seq, pk, label: label_of(&v).unwrap_or_else(|| bad("no label")) }
            }
        };
        lines.push(Line { end, worker, shard, ts, kind });
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// Paused workers

/// What a paused worker did after SIGCONT with the shards taken from it while it was stopped.
#[derive(Clone, Debug, Default)]
pub(crate) struct PauseOutcome {
    pub(crate) worker: String,
    pub(crate) paused_for: Duration,
    /// Shards taken from it while it was stopped.
    pub(crate) taken: Vec<String>,
    /// Record lines of taken shards written after the stop, all from a batch it had begun
    /// before the stop.
    pub(crate) inflight_lines: usize,
    /// The last of those lines, in seconds after SIGCONT (negative: rendered before the stop).
    pub(crate) last_line_after_cont: Option<f64>,
}

/// For every record line written after a pause's stop (by file offset): the time its batch
/// began, when that was before the stop (the batch was in flight), else `None`. A batch's
/// lines are appended at once, so they are contiguous in the file; a new batch begins after a
/// gap of at least [`PROCESS_DELAY`].
pub(crate) fn runs_after_stop(lines: &[Line], pause: &Pause) -> HashMap<usize, Option<u64>> {
    let mut out = HashMap::new();
    let mut run: Option<(String, u64, Option<u64>)> = None; // (shard, previous ts, began)
    for (i, line) in lines.iter().enumerate() {
        if line.end <= pause.offset {
            // Written before the stop; a run may still begin in it (a line cut by the stop).
            if matches!(line.kind, LineKind::Record { .. }) {
                run = Some((line.shard.clone(), line.ts, Some(line.ts)));
            } else {
                run = None;
            }
            continue;
        }
        if !matches!(line.kind, LineKind::Record { .. }) {
            run = None;
            continue;
        }
        // A gap over the stop is the pause itself (the worker resumes a little before the test
        // notes SIGCONT, so the stop is the reliable edge: nothing is rendered while stopped).
        let continues = run.as_ref().is_some_and(|(shard, prev, _)| {
            *shard == line.shard
                && (line.ts.saturating_sub(*prev) < PROCESS_DELAY.as_nanos() as u64 / 2
                    || (*prev < pause.stop_wall && line.ts > pause.stop_wall))
        });
        let began = if continues {
            run.as_ref().and_then(|(_, _, b)| *b)
        } else if line.ts < pause.stop_wall {
            Some(line.ts)
        } else {
            None
        };
        out.insert(i, began.filter(|b| *b < pause.stop_wall));
        run = Some((line.shard.clone(), line.ts, began));
    }
    out
}
