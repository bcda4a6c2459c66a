//! When to read the change notice fast, and whether a stopping worker announces itself first:
//! the decisions of a handover without a lag spike, over plain values (the worker's select
//! loop does the reads and the waits). See [`crate::config::DEFAULT_HANDOVER_POLL_INTERVAL`].

use std::time::Duration;

use tokio::time::Instant;

/// The fast reads of the change notice: due every `every` until a window after the last time
/// releases were expected.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastPoll {
    every: Duration,
    window: Duration,
    /// Polling fast until then (`None`: not polling fast).
    until: Option<Instant>,
    next: Instant,
}

impl FastPoll {
    pub(crate) fn new(every: Duration, window: Duration, now: Instant) -> Self {
        Self { every, window, until: None, next: now }
    }

    /// Leases are expected to be released soon (this worker asked for a handoff, or read a
    /// change): poll fast for a window from `now`.
    pub(crate) fn expect(&mut self, now: Instant) {
        if self.until.is_none_or(|u| u < now) {
            self.next = now + self.every;
        }
        self.until = Some(self.until.map_or(now + self.window, |u| u.max(now + self.window)));
    }

    /// When the next fast read is due, if polling fast.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.until.filter(|u| self.next <= *u).map(|_| self.next)
    }

    /// A fast read was made at `now`.
    pub(crate) fn polled(&mut self, now: Instant) {
        self.next = now + self.every;
        if self.until.is_some_and(|u| self.next > u) {
            self.until = None;
        }
    }
}

/// How long a worker told to stop keeps consuming after announcing it (`None`: it stops at
/// once): only when it holds leases that peers it knows of are to take.
pub(crate) fn departure_wait(held: usize, has_peers: bool, notice: Duration) -> Option<Duration> {
    (held > 0 && has_peers && !notice.is_zero()).then_some(notice)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fast_poll_table() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + MS * ms as u32;
        // (case, steps: (ms, Expect | Polled), due after the steps (ms from t0))
        #[derive(Clone, Copy)]
        enum Step {
            Expect(u64),
            Polled(u64),
        }
        use Step::{Expect, Polled};
        let cases: Vec<(&str, Vec<Step>, Option<u64>)> = vec![
            ("idle: nothing due", vec![], None),
            ("expected: due one interval later", vec![Expect(0)], Some(200)),
            ("polled: the next one an interval after the read", vec![Expect(0), Polled(230)], Some(430)),
            ("the window runs out: nothing due", vec![Expect(0), Polled(900), Polled(1_000)], None),
            ("a read at the window's end is the last", vec![Expect(0), Polled(850)], None),
            (
                "expected again while polling: the window moves, the rhythm stays",
                vec![Expect(0), Polled(200), Expect(300)],
                Some(400),
            ),
            (
                "expected again after the window: starts over",
                vec![Expect(0), Polled(1_000), Expect(5_000)],
                Some(5_200),
            ),
            ("the window is extended, never shortened", vec![Expect(500), Expect(100), Polled(1_100)], Some(1_300)),
        ];
        for (case, steps, want) in cases {
            let mut f = FastPoll::new(MS * 200, MS * 1_000, t0);
            for s in steps {
                match s {
                    Expect(ms) => f.expect(at(ms)),
                    Polled(ms) => f.polled(at(ms)),
                }
            }
            assert_eq!(f.due(), want.map(at), "{case}");
        }
    }

    #[test]
    fn departure_table() {
        let n = Duration::from_millis(1500);
        let cases = [
            ("holds leases, has peers: announce and wait", 3, true, n, Some(n)),
            ("holds nothing: stop at once", 0, true, n, None),
            ("alone: nobody to tell", 3, false, n, None),
            ("notice off", 3, true, Duration::ZERO, None),
        ];
        for (case, held, peers, notice, want) in cases {
            assert_eq!(departure_wait(held, peers, notice), want, "{case}");
        }
    }
}
