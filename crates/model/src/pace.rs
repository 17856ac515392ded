//! A rate cap as plain state: the generic cell rate algorithm (GCRA, the virtual-scheduling form
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
}
