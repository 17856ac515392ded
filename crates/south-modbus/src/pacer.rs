//! Pacing: the per-device rate cap and the reconnect backoff, as plain state that takes `now`.

use std::time::Duration;

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

    /// Waits for the next request slot.
    pub async fn wait(&mut self) {
        let now = Instant::now();
        let at = Instant::from_std(self.cap.reserve(now.into_std()));
        if at > now {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// Exponential backoff with jitter: attempt `n` waits a random time in `[d/2, d]` where
/// `d = min(max, initial * 2^n)`, so a plant's worth of gateways restarting together do not
/// reconnect in lockstep.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Self { initial, max, attempt: 0, rng: seed | 1 }
    }

    /// The wait before the next attempt; each call doubles the ceiling up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.initial.saturating_mul(1u32 << self.attempt.min(20)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let fraction = 0.5 + 0.5 * (self.next_random() as f64 / u64::MAX as f64);
        ceiling.mul_f64(fraction)
    }

    /// A success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// xorshift64*: tiny, and good enough to spread reconnects.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_max_with_jitter_and_resets() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        let mut b = Backoff::new(initial, max, 42);
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for ceiling in ceilings {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(ceiling);
            assert!(d <= ceiling && d >= ceiling / 2, "{d:?} not in [{:?}, {ceiling:?}]", ceiling / 2);
        }
        b.reset();
        assert!(b.next_delay() <= initial);
    }
}
