//! Pacing: the per-device rate cap and the reconnect backoff, as plain state that takes `now`.

pub use airlock_model::pace::Backoff;
use airlock_model::pace::RateCap;
use tokio::time::Instant;

/// The per-device rate cap ([`RateCap`]) on the tokio clock: a poll that needs more requests
/// than the cap allows simply takes longer.
#[derive(Debug)]
pub struct Pacer {
    cap: RateCap,
}

impl Pacer {
    pub fn new(rate_max_per_s: f64) -> Self {
        Self { cap: RateCap::new(rate_max_per_s) }
    }

    /// When the next request slot comes, without taking it.
    pub fn ready_at(&self) -> Instant {
        Instant::from_std(self.cap.ready_at(Instant::now().into_std()))
    }

    /// Takes the next request slot: when it comes (now, or later if the cap says so).
    pub fn reserve(&mut self) -> Instant {
        Instant::from_std(self.cap.reserve(Instant::now().into_std()))
    }
}
