//! Pacing as plain state: the reconnect [`Backoff`] of every driver and sink, and a rate cap: the generic cell rate algorithm (GCRA, the virtual-scheduling form
//! of a token bucket). Used by the southbound drivers (requests to a device) and the northbound
//! sinks (messages to IT). It takes `now` as an argument and never reads a clock.

use std::time::{Duration, Instant};

/// At most `rate` events per second. A slot is due every `1 / rate`; an event may run ahead of
/// its slot by at most `burst - 1` slots, where `burst` is the number of slots in one millisecond
/// (at least 1). Below 1000 per second no two events are ever closer than `1 / rate`; above, the
/// cap holds over every window of a millisecond or more. Idle time is not saved up beyond that.
#[derive(Debug, Clone)]
pub struct RateCap {
    spacing: Duration,
    /// How far ahead of its slot an event may go: `(burst - 1) * spacing`.
    tolerance: Duration,
    /// The theoretical time of the next slot.
    next: Option<Instant>,
}

impl RateCap {
    pub fn new(rate_per_s: f64) -> Self {
        let rate = rate_per_s.max(1e-6);
        let spacing = Duration::from_secs_f64(1.0 / rate);
        let burst = (rate / 1000.0).floor().max(1.0);
        Self { spacing, tolerance: spacing.mul_f64(burst - 1.0), next: None }
    }

    /// Books the next slot at or after `now` and returns when the event may happen.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let slot = self.next.map_or(now, |n| n.max(now));
        let start = slot.checked_sub(self.tolerance).map_or(now, |early| early.max(now));
        self.next = Some(slot + self.spacing);
        start
    }

    /// When the next event may happen, without booking it.
    pub fn ready_at(&self, now: Instant) -> Instant {
        let slot = self.next.map_or(now, |n| n.max(now));
        slot.checked_sub(self.tolerance).map_or(now, |early| early.max(now))
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
    fn slow_caps_space_every_event() {
        let mut p = RateCap::new(10.0);
        let t0 = Instant::now();
        let slots: Vec<Instant> = (0..5).map(|_| p.reserve(t0)).collect();
        for w in slots.windows(2) {
            assert_eq!(w[1] - w[0], Duration::from_millis(100));
        }
        // After idling, the next slot is now, not in the past (no burst of saved-up slots).
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.ready_at(later), later);
        assert_eq!(p.reserve(later), later);
        assert_eq!(p.reserve(later), later + Duration::from_millis(100));
    }

    #[test]
    fn fast_caps_allow_one_millisecond_of_burst_and_no_more() {
        let mut p = RateCap::new(100_000.0);
        let t0 = Instant::now();
        let starts: Vec<Instant> = (0..1000).map(|_| p.reserve(t0)).collect();
        assert_eq!(starts.iter().filter(|s| **s == t0).count(), 100);
        for (i, s) in starts.iter().enumerate() {
            let allowed = t0 + Duration::from_micros(10) * i as u32;
            assert!(*s + Duration::from_micros(990) >= allowed, "event {i} went too early");
        }
        assert!(*starts.last().unwrap() <= t0 + Duration::from_millis(10));
    }

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
