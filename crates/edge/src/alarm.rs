//! Alarms on one tag, each a small state machine that raises once and clears once:
//! - **high / low** limits with hysteresis (a high alarm clears only below `high - hysteresis`)
//!   and delays (the condition must hold `on_delay` before it raises, and be gone `off_delay`
//!   before it clears), so a noisy signal near a limit does not chatter;
//! - **rate of change** above a limit (units per second, between consecutive good samples);
//! - **stale**: no good sample for `stale_ms` (a machine or link down), raised by time passing.

use airlock_model::{AssetPath, Quality, Sample, Severity, Timestamp};

use crate::{EdgeEvent, Output, Transform, Transition, ms_between, num};

/// What the alarms of a tag watch for.
#[derive(Debug, Clone, Default)]
pub struct AlarmConfig {
    pub high: Option<f64>,
    pub low: Option<f64>,
    pub hysteresis: f64,
    pub on_delay_ms: i64,
    pub off_delay_ms: i64,
    /// Units per second.
    pub rate_max: Option<f64>,
    pub stale_ms: Option<i64>,
    pub unit: Option<String>,
}

/// One condition's state.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Normal,
    /// The condition holds since then, not long enough yet.
    Rising(Timestamp),
    Active,
    /// The condition is gone since then, not long enough yet.
    Falling(Timestamp),
}

#[derive(Debug, Clone)]
pub struct Alarms {
    asset: AssetPath,
    c: AlarmConfig,
    high: State,
    low: State,
    rate: State,
    stale: bool,
    last_good: Option<(Timestamp, f64)>,
    last_seen: Option<Timestamp>,
}

impl Alarms {
    pub fn new(asset: AssetPath, c: AlarmConfig) -> Self {
        Self {
            asset,
            c,
            high: State::Normal,
            low: State::Normal,
            rate: State::Normal,
            stale: false,
            last_good: None,
            last_seen: None,
        }
    }

    fn unit(&self) -> String {
        self.c.unit.as_deref().map(|u| format!(" {u}")).unwrap_or_default()
    }

    fn event(
        &self,
        time: Timestamp,
        kind: &'static str,
        severity: Severity,
        transition: Transition,
        message: String,
        body: Vec<(&'static str, f64)>,
    ) -> Output {
        Output::Event(EdgeEvent { time, asset: self.asset.clone(), kind, severity, transition, message, body })
    }
}

/// Moves `state` given whether the condition holds at `now`; returns a transition if one happened.
fn step(state: &mut State, holds: bool, clear: bool, now: Timestamp, on_ms: i64, off_ms: i64) -> Option<Transition> {
    let (next, transition) = match (*state, holds, clear) {
        (State::Normal, true, _) if on_ms <= 0 => (State::Active, Some(Transition::Raised)),
        (State::Normal, true, _) => (State::Rising(now), None),
        (State::Rising(since), true, _) if ms_between(since, now) >= on_ms => (State::Active, Some(Transition::Raised)),
        (State::Rising(_), false, _) => (State::Normal, None),
        (State::Active, _, true) if off_ms <= 0 => (State::Normal, Some(Transition::Cleared)),
        (State::Active, _, true) => (State::Falling(now), None),
        (State::Falling(since), _, true) if ms_between(since, now) >= off_ms => {
            (State::Normal, Some(Transition::Cleared))
        }
        (State::Falling(_), _, false) => (State::Active, None),
        (s, _, _) => (s, None),
    };
    *state = next;
    transition
}

impl Transform for Alarms {
    fn on_sample(&mut self, s: &Sample, out: &mut Vec<Output>) {
        let now = s.gateway_time;
        self.last_seen = Some(now);
        let value = match (&s.value, s.quality) {
            (Some(v), Quality::Good) => v.as_f64(),
            _ => None,
        };
        let Some(v) = value else { return };
        if std::mem::take(&mut self.stale) {
            out.push(self.event(
                now,
                "stale",
                Severity::Warning,
                Transition::Cleared,
                format!("{} reads again: {}{}", self.asset, num(v), self.unit()),
                vec![("value", v)],
            ));
        }
        let (on, off, hyst) = (self.c.on_delay_ms, self.c.off_delay_ms, self.c.hysteresis);
        if let Some(high) = self.c.high
            && let Some(t) = step(&mut self.high, v > high, v < high - hyst, now, on, off)
        {
            let msg = match t {
                Transition::Raised => {
                    format!("{} is above {}{u}: {}{u}", self.asset, num(high), num(v), u = self.unit())
                }
                _ => format!("{} is back below {}{u}: {}{u}", self.asset, num(high), num(v), u = self.unit()),
            };
            out.push(self.event(now, "alarm_high", Severity::Alarm, t, msg, vec![("value", v), ("limit", high)]));
        }
        if let Some(low) = self.c.low
            && let Some(t) = step(&mut self.low, v < low, v > low + hyst, now, on, off)
        {
            let msg = match t {
                Transition::Raised => {
                    format!("{} is below {}{u}: {}{u}", self.asset, num(low), num(v), u = self.unit())
                }
                _ => format!("{} is back above {}{u}: {}{u}", self.asset, num(low), num(v), u = self.unit()),
            };
            out.push(self.event(now, "alarm_low", Severity::Alarm, t, msg, vec![("value", v), ("limit", low)]));
        }
        if let (Some(max), Some((t0, v0))) = (self.c.rate_max, self.last_good) {
            let dt = ms_between(t0, now) as f64 / 1000.0;
            if dt > 0.0 {
                let rate = (v - v0) / dt;
                if let Some(t) = step(&mut self.rate, rate.abs() > max, rate.abs() <= max, now, on, off) {
                    let msg = match t {
                        Transition::Raised => {
                            format!("{} changes at {rate:.3}{u}/s, more than {max}{u}/s", self.asset, u = self.unit())
                        }
                        _ => format!(
                            "{} changes at {rate:.3}{u}/s again, within {max}{u}/s",
                            self.asset,
                            u = self.unit()
                        ),
                    };
                    out.push(self.event(
                        now,
                        "rate_of_change",
                        Severity::Warning,
                        t,
                        msg,
                        vec![("rate_per_s", rate), ("limit", max)],
                    ));
                }
            }
        }
        self.last_good = Some((now, v));
    }

    fn on_tick(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        let Some(stale_ms) = self.c.stale_ms else { return };
        let since = self.last_good.map(|(t, _)| t).or(self.last_seen);
        if let Some(since) = since
            && !self.stale
            && ms_between(since, now) >= stale_ms
        {
            self.stale = true;
            let secs = ms_between(since, now) as f64 / 1000.0;
            let msg = format!("{}: no good value for {secs:.0} s (machine or link down?)", self.asset);
            out.push(self.event(now, "stale", Severity::Warning, Transition::Raised, msg, vec![("seconds", secs)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::{TagId, Value};

    fn alarms(c: AlarmConfig) -> Alarms {
        Alarms::new(
            AssetPath::parse("acme/line3/press1/temperature").unwrap(),
            AlarmConfig { unit: Some("degC".into()), ..c },
        )
    }

    /// Feeds `(ms, value)` samples and `(ms, NaN)` ticks; expects `(ms, kind, transition)`.
    fn check(c: AlarmConfig, input: &[(i64, f64)], expected: &[(i64, &str, Transition)]) {
        let mut a = alarms(c);
        let mut out = Vec::new();
        for (t, v) in input {
            let now = Timestamp::from_millis(*t);
            if v.is_nan() {
                a.on_tick(now, &mut out);
            } else {
                a.on_sample(&Sample::good(TagId(0), Value::F64(*v), now), &mut out);
            }
        }
        let got: Vec<(i64, &str, Transition)> = out
            .iter()
            .map(|o| match o {
                Output::Event(e) => (e.time.as_millis(), e.kind, e.transition),
                _ => panic!(),
            })
            .collect();
        assert_eq!(got, expected);
    }

    use Transition::*;

    #[test]
    fn a_high_limit_raises_once_and_clears_below_the_hysteresis() {
        let c = AlarmConfig { high: Some(80.0), hysteresis: 2.0, ..Default::default() };
        check(
            c,
            &[(0, 79.0), (1, 81.0), (2, 85.0), (3, 79.0), (4, 81.0), (5, 77.9), (6, 78.5)],
            &[(1, "alarm_high", Raised), (5, "alarm_high", Cleared)],
        );
    }

    #[test]
    fn delays_keep_a_short_excursion_quiet() {
        let c = AlarmConfig { high: Some(80.0), on_delay_ms: 1000, off_delay_ms: 500, ..Default::default() };
        check(c.clone(), &[(0, 81.0), (900, 81.0), (950, 79.0), (2000, 79.0)], &[]);
        check(
            c,
            &[(0, 81.0), (1000, 81.0), (1100, 79.0), (1400, 81.0), (1500, 79.0), (2000, 79.0)],
            &[(1000, "alarm_high", Raised), (2000, "alarm_high", Cleared)],
        );
    }

    #[test]
    fn low_limit_rate_of_change_and_stale() {
        let c = AlarmConfig { low: Some(10.0), ..Default::default() };
        check(c, &[(0, 12.0), (1, 9.0), (2, 11.0)], &[(1, "alarm_low", Raised), (2, "alarm_low", Cleared)]);
        let c = AlarmConfig { rate_max: Some(2.0), ..Default::default() };
        check(
            c,
            &[(0, 20.0), (1000, 21.0), (2000, 25.0), (3000, 26.0)],
            &[(2000, "rate_of_change", Raised), (3000, "rate_of_change", Cleared)],
        );
        let c = AlarmConfig { stale_ms: Some(5000), ..Default::default() };
        check(
            c,
            &[(0, 20.0), (4000, f64::NAN), (5000, f64::NAN), (6000, f64::NAN), (7000, 21.0)],
            &[(5000, "stale", Raised), (7000, "stale", Cleared)],
        );
    }

    #[test]
    fn messages_carry_the_numbers() {
        let mut a = alarms(AlarmConfig { high: Some(80.0), ..Default::default() });
        let mut out = Vec::new();
        a.on_sample(&Sample::good(TagId(0), Value::F64(82.5), Timestamp::from_millis(0)), &mut out);
        let Output::Event(e) = &out[0] else { panic!() };
        assert_eq!(e.message, "acme/line3/press1/temperature is above 80 degC: 82.5 degC");
        assert_eq!(e.body, vec![("value", 82.5), ("limit", 80.0)]);
    }
}
