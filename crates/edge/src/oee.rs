//! OEE per machine and shift, from three tags of the machine: its state (running or not), its
//! part counter and its reject counter, with the ideal cycle time.
//!
//! - availability = time running / time of the shift so far (since airlock first saw the machine
//!   in this shift, if it started later: what came before is not known);
//! - performance  = ideal cycle time × parts / time running;
//! - quality      = (parts − rejects) / parts;
//! - OEE = availability × performance × quality.
//!
//! The running state holds from one state sample to the next. Parts and rejects are counted with
//! the counter rules (rollover, resets). A rolling figure goes out every interval; and when the
//! performance over the last `compare` of running time falls by at least `drop_percent` below
//! the baseline (the performance over the first `baseline` of running time in the shift), an
//! event says so with the numbers; it clears when performance recovers.

use std::collections::VecDeque;

use airlock_model::{AssetPath, Sample, Severity, TagId, Timestamp};

use crate::counter::{CounterRange, Tally};
use crate::{EdgeEvent, OeeRecord, Output, Transform, Transition};

/// How a machine's OEE is computed.
#[derive(Debug, Clone)]
pub struct OeeConfig {
    pub asset: AssetPath,
    pub name: String,
    pub state_tag: TagId,
    pub running_value: f64,
    pub parts_tag: TagId,
    /// The parts counter's range and the machine's pace (see [`CounterRange`]).
    pub parts_range: CounterRange,
    pub rejects_tag: Option<TagId>,
    pub rejects_range: CounterRange,
    pub ideal_cycle_s: f64,
    pub shift_ms: i64,
    pub shift_offset_ms: i64,
    pub interval_ms: i64,
    pub baseline_ms: i64,
    pub compare_ms: i64,
    pub drop_percent: f64,
}

/// The performance history keeps a point per this much running time.
const HISTORY_STEP_MS: i64 = 1000;

#[derive(Debug, Clone)]
pub struct Oee {
    c: OeeConfig,
    shift_start_ms: Option<i64>,
    /// When airlock first saw the machine in this shift: what came before is not known.
    observed_from_ms: Option<i64>,
    running: Option<(i64, bool)>,
    running_ms: i64,
    parts: u64,
    rejects: u64,
    last_parts: Tally,
    last_rejects: Tally,
    next_report_ms: Option<i64>,
    /// `(running ms, parts)` checkpoints of the shift, for performance over a stretch.
    history: VecDeque<(i64, u64)>,
    baseline: Option<f64>,
    dropped: bool,
}

impl Oee {
    /// The machine's tags moved to other ids (a reload): the shift so far goes on.
    pub fn move_tags(&mut self, to: &dyn Fn(TagId) -> TagId) {
        self.c.state_tag = to(self.c.state_tag);
        self.c.parts_tag = to(self.c.parts_tag);
        self.c.rejects_tag = self.c.rejects_tag.map(to);
    }

    pub fn new(c: OeeConfig) -> Self {
        Self {
            c,
            shift_start_ms: None,
            observed_from_ms: None,
            running: None,
            running_ms: 0,
            parts: 0,
            rejects: 0,
            last_parts: Tally::default(),
            last_rejects: Tally::default(),
            next_report_ms: None,
            history: VecDeque::new(),
            baseline: None,
            dropped: false,
        }
    }

    fn shift_start(&self, t: i64) -> i64 {
        (t - self.c.shift_offset_ms).div_euclid(self.c.shift_ms) * self.c.shift_ms + self.c.shift_offset_ms
    }

    /// The running time up to `t`, with the current state held until then.
    fn running_until(&mut self, t: i64) {
        if let Some((since, true)) = self.running
            && t > since
        {
            self.running_ms += t - since;
        }
        if let Some((since, state)) = self.running
            && t > since
        {
            self.running = Some((t, state));
        }
    }

    /// The OEE figures of the machine at `t` (ms) in its shift (fractions, 1.0 = 100 %).
    pub fn figures(&self, t: i64) -> OeeRecord {
        let start = self.shift_start_ms.unwrap_or(t);
        let elapsed = (t - self.observed_from_ms.unwrap_or(start).max(start)).max(1) as f64;
        let run = self.running_ms as f64;
        let availability = (run / elapsed).min(1.0);
        let performance = if run > 0.0 { self.c.ideal_cycle_s * 1000.0 * self.parts as f64 / run } else { 0.0 };
        let quality =
            if self.parts > 0 { (self.parts.saturating_sub(self.rejects)) as f64 / self.parts as f64 } else { 1.0 };
        OeeRecord {
            asset: self.c.asset.clone(),
            time: Timestamp::from_millis(t),
            shift_start: Timestamp::from_millis(start),
            availability,
            performance,
            quality,
            oee: availability * performance * quality,
            parts: self.parts,
            rejects: self.rejects,
            running_s: run / 1000.0,
        }
    }

    /// Performance over the last `span` ms of running time, if the shift has run that long.
    fn performance_over_last(&self, span: i64) -> Option<f64> {
        let &(run_now, parts_now) = self.history.back()?;
        let from = run_now - span;
        if from < 0 {
            return None;
        }
        let i = self.history.partition_point(|(r, _)| *r < from);
        let &(run_then, parts_then) = self.history.get(i)?;
        let run = (run_now - run_then) as f64;
        (run > 0.0).then(|| self.c.ideal_cycle_s * 1000.0 * (parts_now - parts_then) as f64 / run)
    }

    fn new_shift(&mut self, t: i64, out: &mut Vec<Output>) {
        let start = self.shift_start(t);
        // The shift just before the one going on is a clock set back across their boundary:
        // the shift goes on. Further back is a clock put right after a jump ahead: the shift
        // of the jump closes, and the present one is taken up.
        if self.shift_start_ms.is_some_and(|old| start < old && old.saturating_sub(start) <= self.c.shift_ms) {
            return;
        }
        if let Some(old) = self.shift_start_ms
            && old != start
        {
            self.running_until(old + self.c.shift_ms);
            let f = self.figures(old + self.c.shift_ms);
            out.push(Output::Oee(f));
            self.running_ms = 0;
            self.parts = 0;
            self.rejects = 0;
            self.history.clear();
            self.baseline = None;
            self.observed_from_ms = Some(start);
            if let Some((_, state)) = self.running {
                self.running = Some((start, state));
            }
        }
        self.shift_start_ms = Some(start);
    }

    fn check_performance(&mut self, t: Timestamp, out: &mut Vec<Output>) {
        // One point a second of running time (the newest moves within it), and none older than
        // the longest span looked back over: at a 1 ms poll over a 24 h shift the history held
        // 86 million points.
        let before_last = self.history.len().checked_sub(2).and_then(|i| self.history.get(i)).map(|p| p.0);
        match (before_last, self.history.back_mut()) {
            (Some(r), Some(last)) if self.running_ms - r < HISTORY_STEP_MS => *last = (self.running_ms, self.parts),
            _ => self.history.push_back((self.running_ms, self.parts)),
        }
        let span = if self.baseline.is_none() { self.c.baseline_ms.max(self.c.compare_ms) } else { self.c.compare_ms };
        while self.history.get(1).is_some_and(|(r, _)| *r <= self.running_ms - span) {
            self.history.pop_front();
        }
        if self.baseline.is_none() && self.running_ms >= self.c.baseline_ms {
            self.baseline = self.performance_over_last(self.c.baseline_ms);
        }
        let (Some(baseline), Some(now)) = (self.baseline, self.performance_over_last(self.c.compare_ms)) else {
            return;
        };
        let drop = (baseline - now) / baseline * 100.0;
        let low = drop >= self.c.drop_percent;
        if low != self.dropped {
            self.dropped = low;
            let (transition, message) = if low {
                (
                    Transition::Raised,
                    format!(
                        "{} performance down {drop:.1} % ({:.1} % against a {:.1} % baseline)",
                        self.c.name,
                        now * 100.0,
                        baseline * 100.0
                    ),
                )
            } else {
                (
                    Transition::Cleared,
                    format!(
                        "{} performance back to {:.1} % (baseline {:.1} %)",
                        self.c.name,
                        now * 100.0,
                        baseline * 100.0
                    ),
                )
            };
            out.push(Output::Event(EdgeEvent {
                time: t,
                asset: self.c.asset.clone(),
                kind: "performance_drop",
                severity: Severity::Warning,
                transition,
                message,
                body: vec![("performance", now), ("baseline", baseline), ("drop_percent", drop)],
            }));
        }
    }
}

impl Transform for Oee {
    fn on_sample(&mut self, s: &Sample, out: &mut Vec<Output>) {
        let t = s.gateway_time.as_millis();
        if ![Some(self.c.state_tag), Some(self.c.parts_tag), self.c.rejects_tag].contains(&Some(s.tag)) {
            return;
        }
        self.new_shift(t, out);
        self.observed_from_ms.get_or_insert(t);
        self.running_until(t);
        if s.tag == self.c.state_tag {
            let running =
                s.quality.is_good() && s.value.as_ref().and_then(|v| v.as_f64()) == Some(self.c.running_value);
            self.running = Some((t, running));
        }
        if s.tag == self.c.parts_tag {
            // Counted as the counter tile counts them (a decrease after an outage is a reset).
            self.parts = self.parts.saturating_add(self.last_parts.parts(s, self.c.parts_range).parts);
            self.check_performance(s.gateway_time, out);
        }
        if Some(s.tag) == self.c.rejects_tag {
            self.rejects = self.rejects.saturating_add(self.last_rejects.parts(s, self.c.rejects_range).parts);
        }
        let next = *self.next_report_ms.get_or_insert((t.div_euclid(self.c.interval_ms) + 1) * self.c.interval_ms);
        if t >= next {
            self.next_report_ms = Some((t.div_euclid(self.c.interval_ms) + 1) * self.c.interval_ms);
            out.push(Output::Oee(self.figures(t)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::Value;

    fn config() -> OeeConfig {
        OeeConfig {
            asset: AssetPath::parse("acme/line3/press1").unwrap(),
            name: "press1".into(),
            state_tag: TagId(0),
            running_value: 1.0,
            parts_tag: TagId(1),
            parts_range: CounterRange { modulus: Some(65_536), parts_max_per_s: None },
            rejects_tag: Some(TagId(2)),
            rejects_range: CounterRange { modulus: Some(1 << 32), parts_max_per_s: None },
            ideal_cycle_s: 2.0,
            shift_ms: 8 * 3_600_000,
            shift_offset_ms: 0,
            interval_ms: 600_000,
            baseline_ms: 1_800_000,
            compare_ms: 600_000,
            drop_percent: 5.0,
        }
    }

    fn feed(o: &mut Oee, t_s: i64, tag: u32, v: u64, out: &mut Vec<Output>) {
        o.on_sample(&Sample::good(TagId(tag), Value::U64(v), Timestamp::from_millis(t_s * 1000)), out);
    }

    /// A 64-bit parts counter that reads u64::MAX once (a garbage register): the sum saturated
    /// nowhere, so every later part overflowed it and panicked the collector, for every device,
    /// until the shift ended. Now a reading is counted as the counter tile counts it.
    #[test]
    fn a_garbage_reading_of_a_64_bit_counter_is_no_panic() {
        let mut o = Oee::new(OeeConfig { parts_range: CounterRange::default(), ..config() });
        let mut out = Vec::new();
        feed(&mut o, 0, 0, 1, &mut out);
        for (s, v) in [(1, 1000), (2, u64::MAX), (3, 1001), (4, 1002), (5, 1003)] {
            feed(&mut o, s, 1, v, &mut out);
        }
        // The glitch is counted (a 64-bit counter has no range to refuse it by), but the sum
        // saturates instead of overflowing, and the figures are still made.
        let f = o.figures(6_000);
        assert_eq!(f.parts, u64::MAX, "{f:?}");
        // With the machine's pace known, the glitch is refused and the parts are the true ones.
        let range = CounterRange { modulus: None, parts_max_per_s: Some(1.0) };
        let mut o = Oee::new(OeeConfig { parts_range: range, ..config() });
        feed(&mut o, 0, 0, 1, &mut out);
        for (s, v) in [(1, 1000), (2, u64::MAX), (3, 1001), (4, 1002), (5, 1003)] {
            feed(&mut o, s, 1, v, &mut out);
        }
        assert_eq!(o.figures(6_000).parts, 3);
    }

    /// Parts read every millisecond for two hours of running: the performance history keeps
    /// a point a second over the span it looks back over, not one a reading.
    #[test]
    fn the_performance_history_is_bounded_whatever_the_poll() {
        let mut o = Oee::new(config());
        let mut out = Vec::new();
        o.on_sample(&Sample::good(TagId(0), Value::U64(1), Timestamp::from_millis(0)), &mut out);
        let mut most = 0;
        for ms in 1..=7_200_000i64 {
            let parts = (ms / 2_000) as u64 % 65_536;
            o.on_sample(&Sample::good(TagId(1), Value::U64(parts), Timestamp::from_millis(ms)), &mut out);
            most = most.max(o.history.len());
        }
        assert!(most <= 1_810, "{most} points: about one a second of the 30 minutes looked back over");
        // The figures are those of the unthinned history: performance 1 (a part every 2 s).
        let f = o.figures(7_200_001);
        assert!((f.performance - 1.0).abs() < 1e-3, "{f:?}");
        assert!(o.performance_over_last(600_000).is_some_and(|p| (p - 1.0).abs() < 0.01));
    }

    /// The clock set back a second across a shift boundary (14:00:00.5 to 13:59:59.5): the
    /// shift that began goes on. Before, the 06:00 shift was taken up again, and both it and
    /// the 14:00 one were closed with made-up figures.
    #[test]
    fn a_clock_set_back_across_a_shift_boundary_closes_no_shift() {
        let mut o = Oee::new(config());
        let mut out = Vec::new();
        let at = |ms: i64| Timestamp::from_millis(ms);
        let eight = 8 * 3_600_000;
        o.on_sample(&Sample::good(TagId(0), Value::U64(1), at(eight - 10_000)), &mut out);
        o.on_sample(&Sample::good(TagId(0), Value::U64(1), at(eight + 500)), &mut out);
        // A shift closes with a record at its end.
        let closed = |out: &[Output]| {
            out.iter().filter(|o| matches!(o, Output::Oee(f) if f.time.as_millis() % eight == 0)).count()
        };
        let before = closed(&out);
        o.on_sample(&Sample::good(TagId(0), Value::U64(1), at(eight - 500)), &mut out);
        o.on_sample(&Sample::good(TagId(0), Value::U64(1), at(eight + 1_500)), &mut out);
        assert_eq!(closed(&out), before, "a shift closed again: {out:#?}");
    }

    /// A u16 parts counter at 40000, the device gone, then back reading 10 (the PLC
    /// restarted): 10 parts, as the counter tile counts them, not a rollover of 25546.
    #[test]
    fn a_restart_after_an_outage_is_no_rollover() {
        let mut o = Oee::new(config());
        let mut out = Vec::new();
        feed(&mut o, 0, 0, 1, &mut out);
        feed(&mut o, 1, 1, 40_000, &mut out);
        o.on_sample(&Sample::bad(TagId(1), airlock_model::Reason::CommsLost, Timestamp::from_millis(2_000)), &mut out);
        feed(&mut o, 3, 1, 10, &mut out);
        assert_eq!(o.figures(4_000).parts, 10);
        // A reading past the counter's range counts as bad, not as parts.
        feed(&mut o, 5, 1, 70_000, &mut out);
        feed(&mut o, 6, 1, 12, &mut out);
        assert_eq!(o.figures(7_000).parts, 12);
    }

    #[test]
    fn figures_by_hand() {
        // Running 3 of 4 hours at 2.5 s a part (ideal 2 s): 4320 parts, 43 rejects.
        let mut o = Oee::new(config());
        let mut out = Vec::new();
        let (mut parts, mut rejects) = (0u64, 0u64);
        for s in 0..=4 * 3600 {
            if s % 60 == 0 {
                feed(&mut o, s, 0, u64::from(s < 3 * 3600), &mut out);
                feed(&mut o, s, 1, parts % 65_536, &mut out);
                feed(&mut o, s, 2, rejects, &mut out);
            }
            if s < 3 * 3600 && s % 5 == 4 {
                parts += 2; // two parts every 5 s
                if parts % 200 == 0 {
                    rejects += 2;
                }
            }
        }
        let f = o.figures(4 * 3_600_000);
        assert_eq!((f.parts, f.rejects), (4320, 42));
        assert!((f.availability - 0.75).abs() < 1e-9, "{f:?}");
        assert!((f.performance - 2.0 * 4320.0 / (3.0 * 3600.0)).abs() < 1e-9, "{f:?}");
        assert!((f.quality - (4320.0 - 42.0) / 4320.0).abs() < 1e-12);
        assert!((f.oee - f.availability * f.performance * f.quality).abs() < 1e-12);
        assert!(out.iter().filter(|o| matches!(o, Output::Oee(_))).count() >= 20, "a figure every 10 minutes");
    }

    #[test]
    fn a_performance_drop_raises_once_and_clears() {
        let mut o = Oee::new(config());
        let mut out = Vec::new();
        let mut made = 0.0f64;
        // Ideal speed for an hour, 15 % slower for 40 minutes, then ideal again.
        for s in (0..=3 * 3600).step_by(30) {
            let cycle = if (3600..6000).contains(&s) { 2.3 } else { 2.0 };
            feed(&mut o, s, 0, 1, &mut out);
            feed(&mut o, s, 1, made as u64, &mut out);
            made += 30.0 / cycle;
        }
        let events: Vec<&EdgeEvent> =
            out.iter().filter_map(|o| if let Output::Event(e) = o { Some(e) } else { None }).collect();
        assert_eq!(
            events.iter().map(|e| e.transition).collect::<Vec<_>>(),
            [Transition::Raised, Transition::Cleared],
            "{events:#?}"
        );
        assert!(events[0].message.starts_with("press1 performance down "), "{}", events[0].message);
        assert!(events[0].message.contains("against a 100.0 % baseline"), "{}", events[0].message);
    }
}
