//! Production counts from a PLC's part counter.
//!
//! The delta between two readings is the parts made, whatever the counter did in between:
//! - it went up: the difference;
//! - it went down right after the device was unreachable or read bad (a PLC restart): it was
//!   reset, and counted up from zero since, so the parts are the new value;
//! - it went down by more than half its range: it rolled over (a u16 or u32 counter passing its
//!   maximum), so the parts are those up to the maximum plus the new value;
//! - it went down otherwise: it was reset (a shift change) and counted up from zero since.
//!
//! No phantom parts are counted as long as fewer parts than half the counter's range are made
//! between two polls, and a reset from the counter's upper half comes with an outage.
//! Bad readings are skipped: the next good one counts everything since the last good one.
//! With a bound on the machine's pace (`parts_max_per_s`), a reading that would add more parts
//! than the machine can have made since the last good one, a minute at least (a garbage value,
//! a 64-bit counter read as 2^50), adds none and is said in an event: the next reading counts
//! from the last good one again, or, if it goes on from the refused one (a counter preset to a
//! new value), from there.
//! Outputs: parts per interval (aligned to the clock), an event every N parts of a shift, and the
//! shift's total when a shift ends (shifts aligned to the clock: e.g. 8 h from 06:00 UTC).

use airlock_model::{AssetPath, Sample, Severity, Timestamp};

use crate::{EdgeEvent, Output, ProductionRecord, Transform, Transition};

/// How a counter is read and reported.
#[derive(Debug, Clone)]
pub struct CounterConfig {
    /// The machine, and its name in messages.
    pub asset: AssetPath,
    pub name: String,
    /// The counter's range and the machine's pace.
    pub range: CounterRange,
    pub interval_ms: i64,
    pub shift_ms: i64,
    /// Where shifts start, from midnight UTC (e.g. 6 h).
    pub shift_offset_ms: i64,
    /// An event every this many parts of a shift.
    pub every_parts: Option<u64>,
}

/// A part counter's last good reading, and whether a bad one came since: the parts each new
/// reading adds are counted from them (by the counter tile and by the OEE rule alike).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tally {
    /// The last good reading and its time (ms).
    last: Option<(u64, i64)>,
    /// A bad reading came since the last good one: a decrease is then a reset.
    outage: bool,
    /// The last reading refused as more than the machine can make, and its time.
    refused: Option<(u64, i64)>,
}

/// What a reading adds to a tally: parts, and whether it began a run of refused readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tallied {
    pub parts: u64,
    pub refused: Option<Refusal>,
}

/// A reading refused as more parts than the machine's pace allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Refusal {
    pub reading: u64,
    /// The last good reading, and the seconds from it.
    pub last: u64,
    pub seconds: f64,
}

/// A part counter's range and the machine's pace.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CounterRange {
    /// 65,536 for a u16, 4,294,967,296 for a u32; `None` never rolls over.
    pub modulus: Option<u64>,
    /// The most parts the machine makes in a second, if known.
    pub parts_max_per_s: Option<f64>,
}

/// The pace is held against the time since the last good reading, and never less than this
/// (ms): it catches garbage (a reading orders of magnitude off), not a burst of parts, a late
/// answer, or two readings stamped at once.
const PACE_WINDOW_MS: i64 = 60_000;

impl Tally {
    /// The parts `s` adds to a counter of `range`. A bad reading, or one outside the range
    /// (which the drivers refuse, but a counter must not trust them: it would underflow into
    /// phantom parts), adds none and counts as an outage. A reading that adds more parts than
    /// the machine's pace allows in the time since the last good one (a minute at least) adds
    /// none either; the reading after it is counted from the last good one, or from the refused
    /// one if it goes on from there within the pace (the counter was preset: the jump is not
    /// counted).
    pub fn parts(&mut self, s: &Sample, range: CounterRange) -> Tallied {
        let counted = |parts| Tallied { parts, refused: None };
        let now = s.value.as_ref().filter(|_| s.quality.is_good()).and_then(|v| v.as_f64());
        let Some(now) = now.and_then(|f| reading(f, range.modulus)) else {
            self.outage = true;
            return counted(0);
        };
        let at = s.gateway_time.as_millis();
        let Some((last, last_at)) = self.last else {
            *self = Self { last: Some((now, at)), ..Self::default() };
            return counted(0);
        };
        let parts = delta(last, now, range.modulus, self.outage);
        // Whether `parts` fit the pace from a reading at `from` to this one.
        let plausible = |parts: u64, from: i64| {
            range.parts_max_per_s.is_none_or(|max| {
                let window_ms = at.saturating_sub(from).max(PACE_WINDOW_MS);
                parts as f64 <= (max * window_ms as f64 / 1000.0).ceil()
            })
        };
        if plausible(parts, last_at) {
            *self = Self { last: Some((now, at)), ..Self::default() };
            return counted(parts);
        }
        let first_refused = match self.refused {
            Some((refused, refused_at)) => {
                let since_refused = delta(refused, now, range.modulus, false);
                if plausible(since_refused, refused_at) {
                    *self = Self { last: Some((now, at)), ..Self::default() };
                    return counted(since_refused);
                }
                None
            }
            None => Some(Refusal { reading: now, last, seconds: at.saturating_sub(last_at) as f64 / 1000.0 }),
        };
        self.refused = Some((now, at));
        Tallied { parts: 0, refused: first_refused }
    }
}

#[derive(Debug, Clone)]
pub struct Counter {
    c: CounterConfig,
    tally: Tally,
    /// Parts since the counter was first read.
    pub total: u64,
    interval_start_ms: Option<i64>,
    interval_parts: u64,
    shift_start_ms: Option<i64>,
    shift_parts: u64,
}

impl Counter {
    pub fn new(c: CounterConfig) -> Self {
        Self {
            c,
            tally: Tally::default(),
            total: 0,
            interval_start_ms: None,
            interval_parts: 0,
            shift_start_ms: None,
            shift_parts: 0,
        }
    }

    fn shift_start(&self, t: i64) -> i64 {
        (t - self.c.shift_offset_ms).div_euclid(self.c.shift_ms) * self.c.shift_ms + self.c.shift_offset_ms
    }

    /// Closes the interval and the shift that end by `t`.
    fn roll(&mut self, t: i64, out: &mut Vec<Output>) {
        if let Some(start) = self.interval_start_ms
            && t >= start + self.c.interval_ms
        {
            out.push(Output::Production(ProductionRecord {
                asset: self.c.asset.clone(),
                start: Timestamp::from_millis(start),
                end: Timestamp::from_millis(start + self.c.interval_ms),
                parts: self.interval_parts,
                shift_parts: self.shift_parts,
            }));
            self.interval_parts = 0;
            self.interval_start_ms = Some(t.div_euclid(self.c.interval_ms) * self.c.interval_ms);
        }
        if let Some(start) = self.shift_start_ms
            && t >= start + self.c.shift_ms
        {
            let (from, to) = (Timestamp::from_millis(start), Timestamp::from_millis(start + self.c.shift_ms));
            out.push(Output::Event(EdgeEvent {
                time: to,
                asset: self.c.asset.clone(),
                kind: "shift_production",
                severity: Severity::Info,
                transition: Transition::Once,
                message: format!("{} made {} parts in the shift from {from} to {to}", self.c.name, self.shift_parts),
                body: vec![("parts", self.shift_parts as f64)],
            }));
            self.shift_parts = 0;
            self.shift_start_ms = Some(self.shift_start(t));
        }
    }
}

/// The parts between readings `last` and `now` of a counter of range `modulus` (both
/// readings below it: `Tally::parts` skips any other).
fn delta(last: u64, now: u64, modulus: Option<u64>, after_outage: bool) -> u64 {
    match modulus {
        _ if now >= last => now - last,
        Some(m) if !after_outage && last - now > m / 2 => now.saturating_add(m.saturating_sub(last)),
        _ => now,
    }
}

/// A counter's reading as a count within its range (`modulus`), or `None` outside it. A
/// signed counter's negative reading is its two's complement (an `i16` counts on from 32767 to
/// -32768); without a range, a negative reading is 0 (a reset).
fn reading(value: f64, modulus: Option<u64>) -> Option<u64> {
    let count = match modulus {
        Some(m) if value < 0.0 => {
            let wrapped = value + m as f64;
            (wrapped >= m as f64 / 2.0).then_some(wrapped)?
        }
        _ => value.max(0.0),
    } as u64;
    Some(count).filter(|&v| modulus.is_none_or(|m| v < m))
}

impl Transform for Counter {
    fn on_sample(&mut self, s: &Sample, out: &mut Vec<Output>) {
        let t = s.gateway_time.as_millis();
        self.interval_start_ms.get_or_insert(t.div_euclid(self.c.interval_ms) * self.c.interval_ms);
        let shift_start = self.shift_start(t);
        self.shift_start_ms.get_or_insert(shift_start);
        self.roll(t, out);
        let Tallied { parts, refused } = self.tally.parts(s, self.c.range);
        if let (Some(r), Some(max)) = (refused, self.c.range.parts_max_per_s) {
            out.push(Output::Event(EdgeEvent {
                time: s.gateway_time,
                asset: self.c.asset.clone(),
                kind: "counter_reading_refused",
                severity: Severity::Warning,
                transition: Transition::Once,
                message: format!(
                    "{}'s counter read {}, {:.0} s after {}: more than {max} parts a second allow; not counted",
                    self.c.name, r.reading, r.seconds, r.last
                ),
                body: vec![("reading", r.reading as f64), ("last", r.last as f64), ("seconds", r.seconds)],
            }));
        }
        self.total = self.total.saturating_add(parts);
        self.interval_parts = self.interval_parts.saturating_add(parts);
        let before = self.shift_parts;
        self.shift_parts = self.shift_parts.saturating_add(parts);
        if let Some(n) = self.c.every_parts.filter(|n| *n > 0)
            && self.shift_parts / n > before / n
        {
            let reached = self.shift_parts / n * n;
            out.push(Output::Event(EdgeEvent {
                time: s.gateway_time,
                asset: self.c.asset.clone(),
                kind: "parts_produced",
                severity: Severity::Info,
                transition: Transition::Once,
                message: format!("{} produced {reached} parts this shift", self.c.name),
                body: vec![("parts", reached as f64), ("total", self.total as f64)],
            }));
        }
    }

    fn on_tick(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        self.roll(now.as_millis(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::{TagId, Value};

    fn config(modulus: Option<u64>, every: Option<u64>) -> CounterConfig {
        CounterConfig {
            asset: AssetPath::parse("acme/line3/press1").unwrap(),
            name: "press1".into(),
            range: CounterRange { modulus, parts_max_per_s: None },
            interval_ms: 60_000,
            shift_ms: 8 * 3_600_000,
            shift_offset_ms: 6 * 3_600_000,
            every_parts: every,
        }
    }

    /// As [`config`], for a machine that makes at most `max` parts a second.
    fn paced_config(modulus: Option<u64>, max: f64) -> CounterConfig {
        CounterConfig { range: CounterRange { modulus, parts_max_per_s: Some(max) }, ..config(modulus, None) }
    }

    fn check(modulus: Option<u64>, readings: &[u64], expected_total: u64) {
        let mut c = Counter::new(config(modulus, None));
        let mut out = Vec::new();
        for (i, r) in readings.iter().enumerate() {
            c.on_sample(&Sample::good(TagId(0), Value::U64(*r), Timestamp::from_millis(i as i64 * 1000)), &mut out);
        }
        assert_eq!(c.total, expected_total, "{readings:?}");
    }

    #[test]
    fn deltas_survive_rollover_and_resets() {
        check(Some(65_536), &[100, 105, 110], 10);
        check(Some(65_536), &[65_530, 65_535, 3, 10], 16);
        check(Some(65_536), &[500, 510, 0, 4], 14);
        check(Some(65_536), &[500, 510, 7], 17);
        check(None, &[u64::MAX - 5, 2], 2);
        check(Some(1 << 32), &[4_294_967_290, 4], 10);
    }

    /// A signed 16-bit counter (an `i16` register) counts on through its wrap from 32767 to
    /// -32768: read as its two's complement, as the PLC counts. Negative readings were taken
    /// for 0, a reset: some 32,768 parts lost at every wrap.
    #[test]
    fn a_signed_counter_counts_on_through_its_wrap() {
        let mut c = Counter::new(config(Some(65_536), None));
        let mut out = Vec::new();
        for (i, v) in [32_766i64, 32_767, -32_768, -32_767, -1, 0, 1].into_iter().enumerate() {
            c.on_sample(&Sample::good(TagId(0), Value::I64(v), Timestamp::from_millis(i as i64 * 1000)), &mut out);
        }
        assert_eq!(c.total, 3 + 32_766 + 2);
        assert_eq!(reading(-1.0, Some(65_536)), Some(65_535));
        assert_eq!(reading(-40_000.0, Some(65_536)), None, "below an i16");
        assert_eq!(reading(-1.0, None), Some(0), "no range to wrap in: a reset");
    }

    #[test]
    fn a_reading_outside_the_counters_range_counts_no_parts() {
        // A u16 counter read as 70,000 (a driver that did not check the type): before, the next
        // reading of 5 underflowed into 18 quintillion parts. It is skipped like a bad reading.
        check(Some(65_536), &[100, 70_000, 5], 5);
        check(Some(65_536), &[100, 70_000, 110], 10);
        check(Some(65_536), &[70_000, 100, 110], 10);
        let mut c = Counter::new(config(Some(65_536), None));
        let mut out = Vec::new();
        c.on_sample(&Sample::good(TagId(0), Value::F64(1e300), Timestamp::from_millis(0)), &mut out);
        c.on_sample(&Sample::good(TagId(0), Value::U64(3), Timestamp::from_millis(1000)), &mut out);
        assert_eq!(c.total, 0);
    }

    /// Readings a second apart of a counter whose machine makes at most `max` parts a second.
    fn paced(modulus: Option<u64>, max: f64, readings: &[u64]) -> u64 {
        let mut c = Counter::new(paced_config(modulus, max));
        let mut out = Vec::new();
        for (i, r) in readings.iter().enumerate() {
            c.on_sample(&Sample::good(TagId(0), Value::U64(*r), Timestamp::from_millis(i as i64 * 1000)), &mut out);
        }
        c.total
    }

    /// A 64-bit counter read once as garbage (2^50): without a range nothing told it from
    /// production, so a shift "made" a quadrillion parts, and the sums saturated for good. With
    /// the machine's pace it adds none, and counting goes on from the last good reading.
    #[test]
    fn a_reading_beyond_the_machines_pace_counts_no_parts() {
        assert_eq!(paced(None, 10.0, &[100, 105, 1 << 50, 110, 112]), 12);
        assert_eq!(paced(None, 10.0, &[100, 105, 1 << 50, 1 << 60, 110]), 10, "two garbage readings in a row");
        assert_eq!(paced(Some(65_536), 10.0, &[100, 105, 60_000, 110]), 10, "within the range, past the pace");
        // A counter preset to a new value goes on from it: the jump is not counted, what follows is.
        assert_eq!(paced(None, 10.0, &[100, 105, 5_000, 5_003, 5_006]), 5 + 3 + 3);
        // The pace allows for the time since the last good reading, and a reset is still one.
        assert_eq!(paced(None, 10.0, &[100, 105, 0, 4]), 5 + 4, "5, none at the reset to 0, then 4");
        assert_eq!(paced(None, 0.01, &[100, 101, 102]), 2, "a part a poll at least");
        let mut c = Counter::new(paced_config(None, 10.0));
        let mut out = Vec::new();
        c.on_sample(&Sample::good(TagId(0), Value::U64(100), Timestamp::from_millis(0)), &mut out);
        c.on_sample(&Sample::good(TagId(0), Value::U64(700), Timestamp::from_millis(60_000)), &mut out);
        assert_eq!(c.total, 600, "a minute at ten a second");
        // Without a pace a jump is production, as before.
        check(None, &[100, 105, 5_000], 4_900);
    }

    /// The pace is a bound on garbage, not on a poll: a shot of 4 parts every 2 s read every
    /// 500 ms at a pace of 2 a second, or an answer that came late and holds more parts, is
    /// counted whole. (The bound was per poll: each shot was refused, and the next reading was
    /// counted from the refused one, so the machine showed no parts at all while it ran.)
    #[test]
    fn parts_that_come_in_bursts_at_the_machines_pace_are_counted() {
        let mut c = Counter::new(paced_config(None, 2.0));
        let mut out = Vec::new();
        let mut parts = 0;
        for i in 0..40i64 {
            if i % 4 == 1 {
                parts += 4;
            }
            c.on_sample(&Sample::good(TagId(0), Value::U64(parts), Timestamp::from_millis(i * 500)), &mut out);
        }
        assert_eq!(c.total, parts);
        assert_eq!(paced(None, 10.0, &[0, 10, 39, 45]), 45, "29 parts in a second after a late answer");
    }

    /// A refused reading is said, once until a reading is counted again: an event names the
    /// reading, the last good one and the pace.
    #[test]
    fn a_refused_reading_is_said_once_a_run() {
        let mut c = Counter::new(paced_config(None, 10.0));
        let mut out = Vec::new();
        for (i, v) in [100u64, 1 << 50, 1 << 51, 105, 1 << 52].into_iter().enumerate() {
            c.on_sample(&Sample::good(TagId(0), Value::U64(v), Timestamp::from_millis(i as i64 * 1000)), &mut out);
        }
        let refused: Vec<&str> = out
            .iter()
            .filter_map(|o| match o {
                Output::Event(e) if e.kind == "counter_reading_refused" => Some(e.message.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(refused.len(), 2, "{refused:?}");
        assert!(
            refused[0].contains("press1's counter read 1125899906842624, 1 s after 100")
                && refused[0].contains("10 parts a second"),
            "{}",
            refused[0]
        );
        assert_eq!(c.total, 5);
    }

    #[test]
    fn events_every_n_parts_and_intervals_and_shifts() {
        let mut c = Counter::new(config(Some(65_536), Some(100)));
        let mut out = Vec::new();
        let shift_start = 6 * 3_600_000;
        for i in 0..=300i64 {
            let t = shift_start + i * 1000;
            c.on_sample(&Sample::good(TagId(0), Value::U64(i as u64), Timestamp::from_millis(t)), &mut out);
        }
        let events: Vec<&String> =
            out.iter().filter_map(|o| if let Output::Event(e) = o { Some(&e.message) } else { None }).collect();
        assert_eq!(
            events,
            [
                "press1 produced 100 parts this shift",
                "press1 produced 200 parts this shift",
                "press1 produced 300 parts this shift"
            ]
        );
        let intervals: Vec<u64> =
            out.iter().filter_map(|o| if let Output::Production(p) = o { Some(p.parts) } else { None }).collect();
        assert_eq!(intervals, [59, 60, 60, 60, 60], "the first reading sets the base");
        out.clear();
        c.on_tick(Timestamp::from_millis(shift_start + 8 * 3_600_000), &mut out);
        let shift = out.iter().find_map(|o| if let Output::Event(e) = o { Some(e) } else { None }).unwrap();
        assert_eq!(shift.kind, "shift_production");
        assert!(
            shift.message.starts_with("press1 made 300 parts in the shift from 1970-01-01T06:00:00.000Z"),
            "{}",
            shift.message
        );
    }

    /// Property: over any run of production with rollovers and resets (to zero, at most half the
    /// range made between polls), the deltas sum to the true production.
    #[test]
    fn deltas_over_rollovers_and_resets_sum_to_the_true_production() {
        let mut rng = 0xdead_beef_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for modulus in [256u64, 65_536, 1 << 32] {
            for _ in 0..200 {
                let mut c = Counter::new(config(Some(modulus), None));
                let mut out = Vec::new();
                let mut counter = next() % modulus;
                let mut truth = 0u64;
                for i in 0..500i64 {
                    if i > 0 {
                        let made = next() % (modulus / 4).max(1);
                        // A reset shows as a counter going down (a reset that ends above the old
                        // value looks like production and cannot be told from it).
                        if next() % 50 == 0 && made < counter {
                            // A reset to zero, then some parts; from the upper half it is a PLC
                            // restart, which the driver sees as the device unreachable first.
                            if counter > modulus / 2 - 1 || next() % 2 == 0 {
                                let bad = Sample::bad(
                                    TagId(0),
                                    airlock_model::Reason::CommsLost,
                                    Timestamp::from_millis(i * 500 - 1),
                                );
                                c.on_sample(&bad, &mut out);
                            }
                            counter = made;
                            truth += made;
                        } else {
                            let made = next() % (modulus / 2 - 1).clamp(1, 40);
                            counter = (counter + made) % modulus;
                            truth += made;
                        }
                    }
                    c.on_sample(
                        &Sample::good(TagId(0), Value::U64(counter), Timestamp::from_millis(i * 500)),
                        &mut out,
                    );
                }
                assert_eq!(c.total, truth, "modulus {modulus}");
            }
        }
    }
}
