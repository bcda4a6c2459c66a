//! Which window a record belongs to and when an open window is over: [`Tumbling`], plain data
//! and functions over it (tested table-driven), shared by a shard's deliverer and its
//! checkpointer through [`WindowSlot`].

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::WindowState;

/// The tumbling windows of one shard: the open window with its state, where the last closed
/// one ended, and the stream's clock as last seen.
#[derive(Debug)]
pub(crate) struct Tumbling {
    size: Duration,
    open: Option<WindowState>,
    /// The end of the last window closed here: no record goes into a window before it.
    closed_end: Option<SystemTime>,
    /// The creation time of the last record read, and when (on this worker's clock) it was.
    seen: Option<(SystemTime, Instant)>,
}

/// A run of consecutive records that belong to one window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    /// How many records.
    pub(crate) len: usize,
    /// The bounds of the window the run opens; `None` for the window open now.
    pub(crate) opens: Option<(SystemTime, SystemTime)>,
}

impl Tumbling {
    /// Windows of `size`, continuing `stored` (the state on the lease) if there is one. A
    /// continued window counts as seen at its start `now`: with no record beyond it, it is
    /// over at the latest one window length after the consumer started.
    pub(crate) fn new(size: Duration, stored: Option<WindowState>, now: Instant) -> Self {
        let seen = stored.as_ref().map(|w| (w.start, now));
        Self { size, open: stored, closed_end: None, seen }
    }

    /// The window, aligned on the Unix epoch, that holds `t`.
    fn aligned(&self, t: SystemTime) -> (SystemTime, SystemTime) {
        let size_ms = self.size.as_millis().max(1);
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
        let start_ms = u64::try_from(ms - ms % size_ms).unwrap_or(u64::MAX);
        let start = UNIX_EPOCH + Duration::from_millis(start_ms);
        (start, start + self.size)
    }

    /// The window for a record created at `t` when no window may start before `after`: its
    /// aligned window, or the one right after `after` for a record that comes late.
    fn bounds_after(&self, t: SystemTime, after: Option<SystemTime>) -> (SystemTime, SystemTime) {
        let (start, end) = self.aligned(t);
        match after {
            Some(a) if start < a => (a, a + self.size),
            _ => (start, end),
        }
    }

    /// Splits records created at `times` (in stream order) into runs of one window each. A
    /// record without a creation time stays in the window open at that point, or opens the
    /// window of `fallback` (the stream's clock as estimated now).
    pub(crate) fn runs(&self, times: impl IntoIterator<Item = Option<SystemTime>>, fallback: SystemTime) -> Vec<Run> {
        let mut current = self.open.as_ref().map(|w| (w.start, w.end));
        let mut after = self.closed_end;
        let mut runs: Vec<Run> = Vec::new();
        for t in times {
            let stays = match current {
                Some((_, end)) => t.is_none_or(|t| t < end),
                None => false,
            };
            if stays {
                match runs.last_mut() {
                    Some(run) => run.len += 1,
                    None => runs.push(Run { len: 1, opens: None }),
                }
                continue;
            }
            after = current.map(|(_, end)| end).or(after);
            let bounds = self.bounds_after(t.unwrap_or(fallback), after);
            runs.push(Run { len: 1, opens: Some(bounds) });
            current = Some(bounds);
        }
        runs
    }

    /// Opens the window `bounds` with an empty state.
    pub(crate) fn open(&mut self, (start, end): (SystemTime, SystemTime)) {
        self.open = Some(WindowState::new(start, end, Vec::new()));
    }

    /// Closes the open window, returning it.
    pub(crate) fn close(&mut self) -> Option<WindowState> {
        let closed = self.open.take();
        if let Some(w) = &closed {
            self.closed_end = Some(w.end);
        }
        closed
    }

    /// The open window, with its state.
    pub(crate) fn current(&self) -> Option<&WindowState> {
        self.open.as_ref()
    }

    /// The open window's new state (from a `process_window` call that returned `Ok`).
    pub(crate) fn set_state(&mut self, state: Vec<u8>) {
        if let Some(w) = &mut self.open {
            w.state = state;
        }
    }

    /// A record created at `t` was read at `at`.
    pub(crate) fn saw(&mut self, t: SystemTime, at: Instant) {
        self.seen = Some((t, at));
    }

    /// The stream's clock at `now`, as estimated from the last record read.
    pub(crate) fn stream_now(&self, now: Instant) -> Option<SystemTime> {
        self.seen.map(|(t, at)| t + now.saturating_duration_since(at))
    }

    /// When the open window is over if no record of a later window comes first.
    pub(crate) fn close_due(&self) -> Option<Instant> {
        let w = self.open.as_ref()?;
        let (t, at) = self.seen?;
        Some(at + w.end.duration_since(t).unwrap_or(Duration::ZERO))
    }

    /// Whether the open window's time is over at `now`.
    pub(crate) fn is_over(&self, now: Instant) -> bool {
        self.close_due().is_some_and(|due| due <= now)
    }
}

/// A shard's [`Tumbling`] windows, shared by its deliverer (which opens, fills and closes
/// them) and its checkpointer (which stores the open window with each checkpoint).
#[derive(Debug)]
pub(crate) struct WindowSlot(Mutex<Tumbling>);

impl WindowSlot {
    pub(crate) fn new(windows: Tumbling) -> Self {
        Self(Mutex::new(windows))
    }

    /// The windows; the lock is never held across an `.await`.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tumbling> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The open window (to store with a checkpoint, or to hand to the processor).
    pub(crate) fn snapshot(&self) -> Option<WindowState> {
        self.lock().current().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn bounds(start: u64, end: u64) -> Option<(SystemTime, SystemTime)> {
        Some((at(start), at(end)))
    }

    fn run(len: usize, opens: Option<(SystemTime, SystemTime)>) -> Run {
        Run { len, opens }
    }

    /// (open window, last closed end, record times in seconds (None: no time), runs)
    type RunCase = (Option<(u64, u64)>, Option<u64>, Vec<Option<u64>>, Vec<Run>);

    #[test]
    fn records_split_into_runs_of_one_window() {
        let cases: Vec<RunCase> = vec![
            // Nothing open: the first record opens its aligned window.
            (None, None, vec![Some(1_003)], vec![run(1, bounds(1_000, 1_010))]),
            // Records of the open window stay in it, one run.
            (Some((1_000, 1_010)), None, vec![Some(1_001), Some(1_009)], vec![run(2, None)]),
            // A later record opens the next window; records after it follow it.
            (
                Some((1_000, 1_010)),
                None,
                vec![Some(1_005), Some(1_010), Some(1_012), Some(1_031)],
                vec![run(1, None), run(2, bounds(1_010, 1_020)), run(1, bounds(1_030, 1_040))],
            ),
            // A record older than the open window (late) stays in it.
            (Some((1_000, 1_010)), None, vec![Some(990)], vec![run(1, None)]),
            // A late record after a close joins the window right after the closed one.
            (None, Some(1_010), vec![Some(1_004), Some(1_012)], vec![run(2, bounds(1_010, 1_020))]),
            // ...but a record beyond it opens its own window.
            (None, Some(1_010), vec![Some(1_045)], vec![run(1, bounds(1_040, 1_050))]),
            // No creation time: the open window, or the fallback's (1_055) window.
            (Some((1_000, 1_010)), None, vec![None], vec![run(1, None)]),
            (None, None, vec![None, Some(1_051)], vec![run(2, bounds(1_050, 1_060))]),
            // Nothing to split.
            (Some((1_000, 1_010)), None, vec![], vec![]),
        ];
        for (i, (open, closed, times, want)) in cases.into_iter().enumerate() {
            let stored = open.map(|(s, e)| WindowState::new(at(s), at(e), Vec::new()));
            let mut w = Tumbling::new(Duration::from_secs(10), stored, Instant::now());
            if let Some(end) = closed {
                w.open((at(end - 10), at(end)));
                w.close();
            }
            let got = w.runs(times.into_iter().map(|t| t.map(at)), at(1_055));
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn windows_align_on_the_epoch_in_milliseconds() {
        let w = Tumbling::new(Duration::from_millis(1_500), None, Instant::now());
        let t = UNIX_EPOCH + Duration::from_millis(4_600);
        let (s, e) = w.aligned(t);
        assert_eq!((s, e), (UNIX_EPOCH + Duration::from_millis(4_500), UNIX_EPOCH + Duration::from_millis(6_000)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_window_is_over_when_the_stream_clock_passes_its_end() {
        let now = Instant::now();
        let mut w = Tumbling::new(Duration::from_secs(10), None, now);
        assert_eq!(w.close_due(), None, "nothing open");
        w.open((at(1_000), at(1_010)));
        assert_eq!(w.close_due(), None, "no record seen: no clock");
        w.saw(at(1_004), now);
        assert_eq!(w.close_due(), Some(now + Duration::from_secs(6)));
        assert!(!w.is_over(now + Duration::from_secs(5)));
        assert!(w.is_over(now + Duration::from_secs(6)));
        assert_eq!(w.stream_now(now + Duration::from_secs(2)), Some(at(1_006)));
        // A record already past the end: over at once.
        w.saw(at(1_012), now);
        assert_eq!(w.close_due(), Some(now));
        // Closed: nothing due; the next window may not start before its end.
        let closed = w.close();
        assert_eq!(closed.map(|c| c.end), Some(at(1_010)));
        assert_eq!(w.close_due(), None);
        // A continued window counts as seen at its start when the consumer started.
        let stored = WindowState::new(at(2_000), at(2_010), b"7".to_vec());
        let w = Tumbling::new(Duration::from_secs(10), Some(stored), now);
        assert_eq!(w.close_due(), Some(now + Duration::from_secs(10)));
        assert_eq!(w.current().map(|c| c.state.clone()), Some(b"7".to_vec()));
    }

    #[test]
    fn state_replaces_and_close_records_the_end() {
        let mut w = Tumbling::new(Duration::from_secs(10), None, Instant::now());
        w.set_state(b"ignored".to_vec());
        assert!(w.current().is_none(), "no window: nothing to set");
        w.open((at(10), at(20)));
        w.set_state(b"1".to_vec());
        w.set_state(b"2".to_vec());
        assert_eq!(w.current().map(|c| c.state.as_slice()), Some(&b"2"[..]));
        assert_eq!(w.runs([Some(at(12))], at(0)), vec![run(1, None)]);
        w.close();
        assert_eq!(w.runs([Some(at(12))], at(0)), vec![run(1, bounds(20, 30))], "late record after close");
    }
}
