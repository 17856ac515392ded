//! Deadband, or report by exception: a sample passes when its value has moved more than the band
//! from the last one that passed, when its quality changed, or when the heartbeat is due (so a
//! steady value is still heard from). Text and bool values pass when they change.

use airlock_model::{Quality, Sample, Timestamp, Value};

use crate::{Output, Transform, ms_between};

/// Lets a sample through only when it says something new.
#[derive(Debug, Clone)]
pub struct Deadband {
    /// Absolute band in engineering units (a percent of span is converted when configured).
    band: f64,
    /// The band's whole part, what a difference of whole numbers must pass (a band that is not
    /// a number: none passes, as in the float path). Worked out once, not a sample.
    whole_band: u128,
    heartbeat_ms: Option<i64>,
    last: Option<(Option<Value>, Quality, Timestamp)>,
}

impl Deadband {
    pub fn new(band: f64, heartbeat_ms: Option<i64>) -> Self {
        let band = band.abs();
        let whole_band = if band.is_nan() { u128::MAX } else { band.floor() as u128 };
        Self { band, whole_band, heartbeat_ms, last: None }
    }

    /// Whether `s` passes; if it does, it becomes the one the next are measured from.
    pub fn admit(&mut self, s: &Sample) -> bool {
        let passes = self.passes(s);
        if passes {
            self.last = Some((s.value.clone(), s.quality, s.gateway_time));
        }
        passes
    }

    fn passes(&self, s: &Sample) -> bool {
        let Some((value, quality, time)) = &self.last else { return true };
        if *quality != s.quality || self.heartbeat_ms.is_some_and(|hb| ms_between(*time, s.gateway_time) >= hb) {
            return true;
        }
        // Whole numbers are measured exactly: an f64 holds every whole number only up to 2^53,
        // so a 64-bit counter past it that moved by one would look unchanged.
        if let (Some(a), Some(b)) =
            (value.as_ref().and_then(Value::as_whole), s.value.as_ref().and_then(Value::as_whole))
        {
            // Past the band's whole part: a whole difference is past 1.5 when it is past 1.
            return (b - a).unsigned_abs() > self.whole_band;
        }
        match (value.as_ref().and_then(Value::as_f64), s.value.as_ref().and_then(Value::as_f64)) {
            (Some(a), Some(b)) if !matches!(s.value, Some(Value::Bool(_))) => (b - a).abs() > self.band,
            _ => *value != s.value,
        }
    }
}

impl Transform for Deadband {
    fn on_sample(&mut self, s: &Sample, out: &mut Vec<Output>) {
        if self.admit(s) {
            out.push(Output::Sample(s.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::{Reason, TagId};

    fn sample(t_ms: i64, v: f64, good: bool) -> Sample {
        let mut s = Sample::good(TagId(0), Value::F64(v), Timestamp::from_millis(t_ms));
        if !good {
            s.quality = Quality::Bad(Reason::Timeout);
        }
        s
    }

    /// Feeds `(time ms, value, good)` and expects the indices that pass.
    fn check(band: f64, heartbeat_ms: Option<i64>, input: &[(i64, f64, bool)], expected: &[usize]) {
        let mut d = Deadband::new(band, heartbeat_ms);
        let mut passed = Vec::new();
        for (i, (t, v, good)) in input.iter().enumerate() {
            let mut out = Vec::new();
            d.on_sample(&sample(*t, *v, *good), &mut out);
            if !out.is_empty() {
                passed.push(i);
            }
        }
        assert_eq!(passed, expected, "band {band}, heartbeat {heartbeat_ms:?}");
    }

    #[test]
    fn only_moves_beyond_the_band_pass() {
        check(
            0.5,
            None,
            &[(0, 10.0, true), (1, 10.4, true), (2, 10.5, true), (3, 10.6, true), (4, 10.0, true), (5, 11.11, true)],
            &[0, 3, 4, 5],
        );
        check(0.0, None, &[(0, 1.0, true), (1, 1.0, true), (2, 1.5, true)], &[0, 2]);
    }

    #[test]
    fn quality_changes_and_heartbeats_always_pass() {
        check(10.0, None, &[(0, 1.0, true), (1, 1.0, false), (2, 1.0, false), (3, 1.0, true)], &[0, 1, 3]);
        check(
            10.0,
            Some(1000),
            &[(0, 1.0, true), (500, 1.0, true), (1000, 1.0, true), (1999, 1.0, true), (2000, 1.0, true)],
            &[0, 2, 4],
        );
    }

    /// Whole numbers are measured exactly: a 64-bit counter past 2^53 (where an f64 holds only
    /// every other whole number) that moves by one has changed, and a band is measured against
    /// the exact difference.
    #[test]
    fn whole_numbers_past_two_to_the_53_are_measured_exactly() {
        let passes = |band: f64, values: &[Value]| {
            let mut d = Deadband::new(band, None);
            let at = |i: usize| Timestamp::from_millis(i as i64);
            values.iter().enumerate().filter(|(i, v)| d.admit(&Sample::good(TagId(0), (*v).clone(), at(*i)))).count()
        };
        let big = 1u64 << 53;
        assert_eq!(passes(0.0, &[Value::U64(big), Value::U64(big + 1), Value::U64(big + 1)]), 2);
        assert_eq!(passes(0.0, &[Value::U64(u64::MAX - 1), Value::U64(u64::MAX)]), 2);
        let big = 1i64 << 53;
        assert_eq!(passes(0.0, &[Value::I64(-big), Value::I64(-big - 1)]), 2);
        assert_eq!(passes(0.0, &[Value::I64(i64::MIN), Value::I64(i64::MIN + 1), Value::I64(i64::MAX)]), 3);
        // A band of 1.5 around a large counter: a step of 1 stays inside, a step of 2 passes.
        let big = 1u64 << 60;
        assert_eq!(passes(1.5, &[Value::U64(big), Value::U64(big + 1), Value::U64(big + 2)]), 2);
        // A difference past 2^53 is measured against the band exactly too.
        let band = (1u64 << 53) as f64;
        assert_eq!(passes(band, &[Value::U64(0), Value::U64(1 << 53)]), 1, "at the band: not past it");
        assert_eq!(passes(band, &[Value::U64(0), Value::U64((1 << 53) + 1)]), 2);
        // A whole number against a float (a tag's type changed on a reload) is measured as floats.
        assert_eq!(passes(0.0, &[Value::U64(3), Value::F64(3.0), Value::F64(3.5)]), 2);
    }

    #[test]
    fn bools_and_text_pass_on_change() {
        let mut d = Deadband::new(5.0, None);
        let mut out = Vec::new();
        for (t, v) in [(0, true), (1, true), (2, false), (3, false), (4, true)] {
            d.on_sample(&Sample::good(TagId(0), Value::Bool(v), Timestamp::from_millis(t)), &mut out);
        }
        assert_eq!(out.len(), 3);
        let mut d = Deadband::new(5.0, None);
        let mut out = Vec::new();
        for (t, v) in [(0, "A"), (1, "A"), (2, "B")] {
            d.on_sample(&Sample::good(TagId(0), Value::Text(v.into()), Timestamp::from_millis(t)), &mut out);
        }
        assert_eq!(out.len(), 2);
    }

    /// Property: a sample inside the band passes only for a quality change or a heartbeat; a
    /// sample outside it always passes.
    #[test]
    fn never_emits_inside_the_band_unless_quality_or_heartbeat() {
        let mut rng = 0x1234_5678_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..300 {
            let band = (next() % 100) as f64 / 10.0;
            let heartbeat = if next() % 2 == 0 { Some((next() % 5000) as i64 + 1) } else { None };
            let mut d = Deadband::new(band, heartbeat);
            let (mut t, mut v) = (0i64, 0.0f64);
            let mut last: Option<(f64, bool, i64)> = None;
            for _ in 0..200 {
                t += (next() % 700) as i64;
                v += ((next() % 2001) as f64 - 1000.0) / 100.0;
                let good = next() % 20 != 0;
                let mut out = Vec::new();
                d.on_sample(&sample(t, v, good), &mut out);
                let emitted = !out.is_empty();
                match last {
                    None => assert!(emitted, "the first sample passes"),
                    Some((lv, lg, lt)) => {
                        let beyond = (v - lv).abs() > band;
                        let reason = beyond || lg != good || heartbeat.is_some_and(|hb| t - lt >= hb);
                        assert_eq!(emitted, reason, "v {v} last {lv} band {band} t {t} last t {lt} hb {heartbeat:?}");
                    }
                }
                if emitted {
                    last = Some((v, good, t));
                }
            }
        }
    }
}
