//! Swinging door compression, as process historians use it, in the variant that keeps its
//! promise: the line between two consecutive archived points passes within `comp_dev` of every
//! sample between them, so a reconstruction by linear interpolation is never further than
//! `comp_dev` from what was read.
//!
//! From the last archived point A, every later sample i opens a corridor of slopes
//! `[(v_i - dev - v_A) / dt_i, (v_i + dev - v_A) / dt_i]`; the doors are the narrowest such
//! corridor so far. A new sample P may end the segment if the slope A→P lies within the doors of
//! the samples before it; otherwise the last sample that could (the held one) is archived and
//! becomes the new A. (The textbook test, "the doors opened", lets the error reach twice
//! `comp_dev`; this one does not.) A held sample is also archived when `comp_max` has passed
//! since A, when quality changes, and when a value is not a number.

use airlock_model::{Sample, Timestamp, Value};

use crate::{Output, Transform, ms_between};

#[derive(Debug, Clone)]
pub struct SwingingDoor {
    comp_dev: f64,
    comp_max_ms: i64,
    /// The last archived sample.
    archived: Option<Sample>,
    /// The latest sample, not archived yet: the segment's end so far.
    held: Option<Sample>,
    /// The doors: the slope corridor of the samples after `archived`, up to and with `held`.
    slope_low: f64,
    slope_high: f64,
}

impl SwingingDoor {
    /// The tag it compresses moved to another id (a reload): the points it holds go on under
    /// the new one.
    pub fn move_tags(&mut self, to: &dyn Fn(airlock_model::TagId) -> airlock_model::TagId) {
        for s in [&mut self.archived, &mut self.held].into_iter().flatten() {
            s.tag = to(s.tag);
        }
    }

    pub fn new(comp_dev: f64, comp_max_ms: i64) -> Self {
        Self {
            comp_dev: comp_dev.abs(),
            comp_max_ms,
            archived: None,
            held: None,
            slope_low: f64::NEG_INFINITY,
            slope_high: f64::INFINITY,
        }
    }

    fn archive(&mut self, s: Sample, out: &mut Vec<Output>) {
        out.push(Output::Sample(s.clone()));
        self.archived = Some(s);
        self.slope_low = f64::NEG_INFINITY;
        self.slope_high = f64::INFINITY;
    }

    /// The corridor of slopes from `a` that keeps `p` within the deviation.
    fn corridor(&self, a: &Sample, p: &Sample) -> Option<(f64, f64)> {
        let (va, vp) = (number(a)?, number(p)?);
        let dt = ms_between(a.gateway_time, p.gateway_time) as f64;
        if dt <= 0.0 {
            return None;
        }
        Some(((vp - self.comp_dev - va) / dt, (vp + self.comp_dev - va) / dt))
    }

    /// Archives the held sample, if any, and restarts the doors from it.
    fn archive_held(&mut self, out: &mut Vec<Output>) {
        if let Some(h) = self.held.take() {
            self.archive(h, out);
        }
    }

    /// Archives what is held, if there is something (at the end of data).
    pub fn flush(&mut self, out: &mut Vec<Output>) {
        self.archive_held(out);
    }
}

fn number(s: &Sample) -> Option<f64> {
    match &s.value {
        Some(Value::Bool(_) | Value::Text(_) | Value::Waveform(_)) | None => None,
        Some(v) => v.as_f64().filter(|f| f.is_finite()),
    }
}

impl Transform for SwingingDoor {
    fn on_sample(&mut self, p: &Sample, out: &mut Vec<Output>) {
        let Some(a) = self.archived.clone() else { return self.archive(p.clone(), out) };
        let simple = number(p).is_none() || number(&a).is_none() || a.quality != p.quality;
        if simple {
            self.archive_held(out);
            let changed = self.archived.as_ref().is_none_or(|last| last.value != p.value || last.quality != p.quality);
            if changed || number(p).is_some() {
                self.archive(p.clone(), out);
            }
            return;
        }
        if ms_between(a.gateway_time, p.gateway_time) > self.comp_max_ms {
            self.archive_held(out);
        }
        let a = self.archived.clone().unwrap_or_else(|| p.clone());
        let Some((low, high)) = self.corridor(&a, p) else {
            // Not later than A (a clock step back): start afresh from P.
            self.archive_held(out);
            return self.archive(p.clone(), out);
        };
        let slope = (low + high) / 2.0; // the slope A→P
        if slope < self.slope_low || slope > self.slope_high {
            // P cannot end this segment: the held sample does; P starts the next one.
            self.archive_held(out);
            let a = self.archived.clone().unwrap_or_else(|| p.clone());
            if let Some((l, h)) = self.corridor(&a, p) {
                self.slope_low = l;
                self.slope_high = h;
            }
        } else {
            self.slope_low = self.slope_low.max(low);
            self.slope_high = self.slope_high.min(high);
        }
        self.held = Some(p.clone());
    }

    fn on_tick(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        if self.archived.as_ref().is_some_and(|a| ms_between(a.gateway_time, now) > self.comp_max_ms) {
            self.archive_held(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::TagId;

    fn s(t: i64, v: f64) -> Sample {
        Sample::good(TagId(0), Value::F64(v), Timestamp::from_millis(t))
    }

    /// Feeds `(ms, value)` and expects the archived times (after a final flush).
    fn check(dev: f64, max_ms: i64, input: &[(i64, f64)], expected: &[i64]) {
        let mut sdt = SwingingDoor::new(dev, max_ms);
        let mut out = Vec::new();
        for (t, v) in input {
            sdt.on_sample(&s(*t, *v), &mut out);
        }
        sdt.flush(&mut out);
        let times: Vec<i64> = out
            .iter()
            .map(|o| match o {
                Output::Sample(s) => s.gateway_time.as_millis(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(times, expected);
    }

    #[test]
    fn a_straight_line_keeps_its_ends_only() {
        let line: Vec<(i64, f64)> = (0..100).map(|i| (i * 1000, i as f64 * 0.5)).collect();
        check(0.1, 1_000_000, &line, &[0, 99_000]);
    }

    #[test]
    fn a_step_keeps_the_corners() {
        let step = [(0, 0.0), (1000, 0.0), (2000, 0.0), (3000, 10.0), (4000, 10.0), (5000, 10.0)];
        check(0.5, 1_000_000, &step, &[0, 2000, 3000, 5000]);
    }

    #[test]
    fn comp_max_forces_a_point_on_a_flat_line() {
        let flat: Vec<(i64, f64)> = (0..10).map(|i| (i * 1000, 5.0)).collect();
        check(1.0, 3500, &flat, &[0, 3000, 6000, 9000]);
    }

    /// Property: for any input, interpolating linearly between the archived samples gives every
    /// original sample back within comp_dev.
    #[test]
    fn the_reconstruction_error_never_exceeds_comp_dev() {
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..400 {
            let dev = (next() % 500) as f64 / 100.0;
            let max_ms = (next() % 60_000) as i64 + 1;
            let mut sdt = SwingingDoor::new(dev, max_ms);
            let (mut t, mut v, mut slope) = (0i64, 0.0f64, 0.0f64);
            let mut input = Vec::new();
            let mut out = Vec::new();
            for _ in 0..300 {
                t += 1 + (next() % 2000) as i64;
                if next() % 10 == 0 {
                    slope = ((next() % 2001) as f64 - 1000.0) / 1000.0;
                }
                v += slope + ((next() % 1001) as f64 - 500.0) / 100.0 * if round % 3 == 0 { 0.01 } else { 1.0 };
                input.push((t, v));
                sdt.on_sample(&s(t, v), &mut out);
            }
            sdt.flush(&mut out);
            let kept: Vec<(i64, f64)> = out
                .iter()
                .map(|o| match o {
                    Output::Sample(s) => (s.gateway_time.as_millis(), s.value.as_ref().unwrap().as_f64().unwrap()),
                    _ => panic!(),
                })
                .collect();
            assert_eq!(kept.first().map(|k| k.0), Some(input[0].0));
            assert_eq!(kept.last().map(|k| k.0), Some(t));
            for (ti, vi) in &input {
                let j = kept.partition_point(|k| k.0 < *ti);
                let rebuilt = if kept[j].0 == *ti {
                    kept[j].1
                } else {
                    let ((t0, v0), (t1, v1)) = (kept[j - 1], kept[j]);
                    v0 + (v1 - v0) * (ti - t0) as f64 / (t1 - t0) as f64
                };
                assert!(
                    (rebuilt - vi).abs() <= dev + 1e-9,
                    "round {round}: at {ti} read {vi}, rebuilt {rebuilt}, dev {dev}"
                );
            }
        }
    }
}
