//! The batching window: records of several reads are gathered into batches of at most
//! `batch_size`, delivered when full or when the window since the first gathered record has
//! passed. Pure bookkeeping; the deliverer owns the timer.

use std::time::Duration;

use tokio::time::Instant;

/// Records gathered and not yet delivered.
#[derive(Debug)]
pub(super) struct Gatherer<R> {
    batch_size: usize,
    window: Duration,
    records: Vec<R>,
    /// When the first of `records` arrived.
    since: Option<Instant>,
}

impl<R> Gatherer<R> {
    pub(super) fn new(batch_size: usize, window: Duration) -> Self {
        Self { batch_size: batch_size.max(1), window, records: Vec::new(), since: None }
    }

    /// Adds the records of one read; returns the batches that are ready: every full batch,
    /// and, without a window, the rest too.
    pub(super) fn push(&mut self, records: Vec<R>, now: Instant) -> Vec<Vec<R>> {
        if records.is_empty() {
            return self.take_if_due(now).into_iter().collect();
        }
        if self.records.is_empty() {
            self.since = Some(now);
        }
        self.records.extend(records);
        let mut ready = Vec::new();
        while self.records.len() >= self.batch_size {
            let rest = self.records.split_off(self.batch_size);
            ready.push(std::mem::replace(&mut self.records, rest));
            // What is left arrived with this read.
            self.since = Some(now);
        }
        if self.records.is_empty() {
            self.since = None;
        } else if self.window.is_zero() {
            ready.extend(self.take());
        }
        ready
    }

    /// When the gathered records are due, if any are gathered.
    pub(super) fn due(&self) -> Option<Instant> {
        self.since.map(|t| t + self.window)
    }

    /// The gathered records if their window has passed.
    pub(super) fn take_if_due(&mut self, now: Instant) -> Option<Vec<R>> {
        if self.due().is_some_and(|d| d <= now) { self.take() } else { None }
    }

    /// Whatever is gathered, at once (shard end, handoff, shutdown, window passed).
    pub(super) fn take(&mut self) -> Option<Vec<R>> {
        self.since = None;
        (!self.records.is_empty()).then(|| std::mem::take(&mut self.records))
    }

    /// Whether records are gathered.
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(batches: &[Vec<u32>]) -> Vec<usize> {
        batches.iter().map(Vec::len).collect()
    }

    #[test]
    fn batches_are_cut_by_size_and_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let recs = |n: u32| (0..n).collect::<Vec<_>>();
        // (name, batch size, window ms, reads as (records, at ms), batch sizes ready after each)
        type Case = (&'static str, usize, u64, Vec<(u32, u64)>, Vec<Vec<usize>>);
        let cases: Vec<Case> = vec![
            ("no window: each read at once", 1000, 0, vec![(5, 0), (3, 10)], vec![vec![5], vec![3]]),
            ("no window: split by size", 4, 0, vec![(10, 0)], vec![vec![4, 4, 2]]),
            ("window: gathered until full", 10, 500, vec![(4, 0), (4, 100), (4, 200)], vec![vec![], vec![], vec![10]]),
            ("window: due after the window", 10, 500, vec![(4, 0), (0, 499), (0, 500)], vec![vec![], vec![], vec![4]]),
            (
                "window restarts with the rest",
                10,
                500,
                vec![(12, 0), (0, 400), (0, 501)],
                vec![vec![10], vec![], vec![2]],
            ),
        ];
        for (name, batch, window, reads, want) in cases {
            let mut g = Gatherer::new(batch, ms(window));
            for ((n, at), want) in reads.into_iter().zip(want) {
                let got = g.push(recs(n), t0 + ms(at));
                assert_eq!(sizes(&got), want, "{name} at {at} ms");
            }
        }
    }

    #[test]
    fn take_hands_back_the_partial_batch() {
        let t0 = Instant::now();
        let mut g = Gatherer::new(10, Duration::from_secs(1));
        assert!(g.push(vec![1, 2, 3], t0).is_empty());
        assert_eq!(g.due(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(g.take(), Some(vec![1, 2, 3]));
        assert!(g.is_empty() && g.due().is_none() && g.take().is_none());
    }
}
