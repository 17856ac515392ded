//! Live counters of one device, written by its driver task and read by views and metrics; and
//! the board on which any part of the gateway reports a problem that should go upstream.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use crate::{Severity, Timestamp, Transition};

/// Where a device's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    Connecting = 0,
    Up = 1,
    /// Down, waiting before the next connection attempt.
    Backoff = 2,
}

/// Counters of one device. Relaxed atomics: each counter is independent and only ever grows, and
/// readers (the terminal view, metrics) want a recent figure, not a consistent snapshot.
#[derive(Debug, Default)]
pub struct DeviceHealth {
    state: AtomicU8,
    pub polls: AtomicU64,
    pub requests: AtomicU64,
    pub samples: AtomicU64,
    /// Responses that carried a protocol exception.
    pub exceptions: AtomicU64,
    /// Timeouts, refused or dropped connections, malformed frames.
    pub comm_errors: AtomicU64,
    /// Batches the driver could not hand on because the next stage was full.
    pub batches_dropped: AtomicU64,
    /// Times the device's task died (a panic) or ended unasked, and was started again.
    pub restarts: AtomicU64,
    /// How long each request took to be answered (or to fail).
    pub latency: Latency,
    /// The last problem, for people; held only while it is being replaced or read.
    last_error: Mutex<String>,
}

/// A histogram of request latencies in fixed buckets (upper bounds in [`Latency::BOUNDS_MS`]),
/// lock-free: a driver records, the dashboard and `/metrics` read.
#[derive(Debug, Default)]
pub struct Latency {
    /// Requests at or under each bound, not cumulative; the last slot is above every bound.
    buckets: [AtomicU64; Latency::BOUNDS_MS.len() + 1],
    sum_us: AtomicU64,
}

impl Latency {
    /// The buckets' upper bounds in milliseconds.
    pub const BOUNDS_MS: [f64; 12] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

    pub fn record(&self, took: std::time::Duration) {
        let ms = took.as_secs_f64() * 1000.0;
        let slot = Self::BOUNDS_MS.iter().position(|b| ms <= *b).unwrap_or(Self::BOUNDS_MS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Per bucket the count (not cumulative, the last above every bound), and the sum in seconds.
    pub fn read(&self) -> ([u64; Latency::BOUNDS_MS.len() + 1], f64) {
        let counts = std::array::from_fn(|i| self.buckets[i].load(Relaxed));
        (counts, self.sum_us.load(Relaxed) as f64 / 1e6)
    }
}

impl LinkState {
    /// `connecting`, `up` or `down` (waiting to reconnect): the word people read.
    pub fn word(self) -> &'static str {
        match self {
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
            LinkState::Backoff => "down",
        }
    }
}

impl DeviceHealth {
    pub fn state(&self) -> LinkState {
        match self.state.load(Relaxed) {
            1 => LinkState::Up,
            2 => LinkState::Backoff,
            _ => LinkState::Connecting,
        }
    }

    pub fn set_state(&self, s: LinkState) {
        self.state.store(s as u8, Relaxed);
    }

    pub fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    pub fn set_last_error(&self, e: String) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }

    pub fn last_error(&self) -> String {
        self.last_error.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// A problem of the gateway itself (a sink whose receiver redirects, a task restarted), raised
/// and later cleared, for the collector to send upstream as an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub time: Timestamp,
    /// Machine-readable kind, e.g. `sink_failing`.
    pub kind: &'static str,
    pub severity: Severity,
    pub state: Transition,
    /// One line for a person: what failed and why.
    pub message: String,
}

/// Problems waiting to go upstream. Bounded: beyond [`Problems::WAITING_MAX`] the newest are
/// dropped and counted, so a component failing in a loop cannot fill memory.
#[derive(Debug, Default)]
pub struct Problems {
    waiting: Mutex<VecDeque<Problem>>,
    pub dropped: AtomicU64,
}

impl Problems {
    pub const WAITING_MAX: usize = 256;

    pub fn report(&self, problem: Problem) {
        match self.waiting.lock() {
            Ok(mut w) if w.len() < Self::WAITING_MAX => w.push_back(problem),
            _ => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    /// Everything waiting, oldest first.
    pub fn take(&self) -> Vec<Problem> {
        self.waiting.lock().map(|mut w| w.drain(..).collect()).unwrap_or_default()
    }
}

/// The message a panic carried, if it was text (for logs and events about a restarted task).
pub fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast::<&str>().map_or_else(|_| "(no message)".to_owned(), |s| (*s).to_owned()),
    }
}

/// Counters of the collector (the OT chamber's store writer), for the live view and the
/// dashboard.
#[derive(Debug, Default)]
pub struct CollectorHealth {
    pub samples_stored: AtomicU64,
    pub records_queued: AtomicU64,
    pub store_errors: AtomicU64,
    /// Times the collector panicked and went on.
    pub restarts: AtomicU64,
    /// The collector's edge ticks (ten a second while it runs): a watchdog sees it alive.
    pub ticks: AtomicU64,
    /// The last events put into the outbox, for the live view and the dashboard.
    pub events: EventFeed,
}

/// One event as a person reads it in a feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    /// Its id in the outbox (`e17`).
    pub id: String,
    pub time: Timestamp,
    pub asset: String,
    pub kind: String,
    pub severity: Severity,
    pub state: Transition,
    pub message: String,
}

/// The last [`EventFeed::KEPT`] events queued upstream, newest last.
#[derive(Debug, Default)]
pub struct EventFeed {
    events: Mutex<VecDeque<FeedEvent>>,
    /// Events queued since the start, per kind.
    by_kind: Mutex<BTreeMap<String, u64>>,
}

impl EventFeed {
    pub const KEPT: usize = 500;

    /// One more event queued upstream.
    pub fn push(&self, event: FeedEvent) {
        if let Ok(mut k) = self.by_kind.lock() {
            *k.entry(event.kind.clone()).or_default() += 1;
        }
        let Ok(mut events) = self.events.lock() else { return };
        events.push_back(event);
        while events.len() > Self::KEPT {
            events.pop_front();
        }
    }

    /// The last `n` events, newest first.
    pub fn last(&self, n: usize) -> Vec<FeedEvent> {
        self.events.lock().map(|e| e.iter().rev().take(n).cloned().collect()).unwrap_or_default()
    }

    /// Events queued since the start, per kind.
    pub fn counts(&self) -> Vec<(String, u64)> {
        self.by_kind.lock().map(|k| k.iter().map(|(k, n)| (k.clone(), *n)).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod latency_tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn latencies_fall_in_their_buckets() {
        let l = Latency::default();
        l.record(Duration::from_micros(900));
        l.record(Duration::from_millis(1));
        l.record(Duration::from_millis(7));
        l.record(Duration::from_secs(60));
        let (counts, sum) = l.read();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[3], 1, "7 ms is in the 10 ms bucket");
        assert_eq!(counts[12], 1, "a minute is above every bound");
        assert_eq!(counts.iter().sum::<u64>(), 4);
        assert!((sum - 60.0089).abs() < 1e-6, "{sum}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_is_bounded_and_counts_what_it_drops() {
        let board = Problems::default();
        let p = Problem {
            time: Timestamp(0),
            kind: "sink_failing",
            severity: Severity::Warning,
            state: Transition::Raised,
            message: "x".into(),
        };
        for _ in 0..Problems::WAITING_MAX + 5 {
            board.report(p.clone());
        }
        assert_eq!(board.take().len(), Problems::WAITING_MAX);
        assert_eq!(board.dropped.load(Relaxed), 5);
        assert!(board.take().is_empty());
    }
}
