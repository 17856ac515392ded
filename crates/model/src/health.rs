//! Live counters of one device, written by its driver task and read by views and metrics.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

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
    /// The last problem, for people; held only while it is being replaced or read.
    last_error: Mutex<String>,
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
