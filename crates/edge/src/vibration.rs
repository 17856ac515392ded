//! Vibration severity from a velocity RMS tag (mm/s), after ISO 10816-3 / ISO 20816-3: the zone
//! of the machine (A new, B long-term operation, C restricted, D damage occurs), and a trend
//! over days that says how soon zone D will be reached, with maintenance advice.
//!
//! Readings are grouped per hour, and each hour's maximum stands for the hour (a machine idling
//! vibrates less; its worst running value is what wears the bearing). When an hour closes:
//! - its zone is judged: entering C or D raises an event (C a warning, D an alarm), returning to
//!   A/B clears it;
//! - the hourly maxima of the last `trend_days` are fitted with a parabola (bearing wear
//!   accelerates; a straight line would promise too much time) or, when the curve bends down or
//!   there are few points, a straight line; if it meets the C/D boundary within `advice_days`, an
//!   advice event says when, and to order the bearing in time. It is given again, with the new
//!   numbers, when the time left has halved since; it clears if the trend recedes.

use std::collections::VecDeque;

use airlock_model::{AssetPath, Sample, Severity, Timestamp};

use crate::{EdgeEvent, Output, Transform, Transition};

/// Zone boundaries A/B, B/C, C/D in mm/s (velocity RMS) for a machine group and foundation.
/// Group 1: large machines (300 kW to 50 MW); group 2: medium machines (15 kW to 300 kW).
pub fn iso_zones(group: u8, rigid: bool) -> [f64; 3] {
    match (group, rigid) {
        (1, true) => [2.3, 4.5, 7.1],
        (1, false) => [3.5, 7.1, 11.0],
        (_, true) => [1.4, 2.8, 4.5],
        (_, false) => [2.3, 4.5, 7.1],
    }
}

#[derive(Debug, Clone)]
pub struct VibrationConfig {
    pub asset: AssetPath,
    pub name: String,
    pub zones: [f64; 3],
    /// Advise maintenance when zone D is this close (days).
    pub advice_days: f64,
    /// The trend looks back this far (days).
    pub trend_days: f64,
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: f64 = 86_400_000.0;

#[derive(Debug, Clone)]
pub struct Vibration {
    c: VibrationConfig,
    /// The open hour and its maximum so far.
    hour: Option<(i64, f64)>,
    /// Closed hours' maxima `(hour start ms, max)`.
    history: VecDeque<(i64, f64)>,
    zone: usize,
    /// The days to zone D last advised, while advice stands.
    advised: Option<f64>,
}

impl Vibration {
    pub fn new(c: VibrationConfig) -> Self {
        Self { c, hour: None, history: VecDeque::new(), zone: 0, advised: None }
    }

    fn zone_of(&self, v: f64) -> usize {
        self.c.zones.iter().filter(|b| v >= **b).count()
    }

    fn close_hour(&mut self, start: i64, max: f64, out: &mut Vec<Output>) {
        let time = Timestamp::from_millis(start + HOUR_MS);
        self.history.push_back((start, max));
        let keep_from = start - (self.c.trend_days * DAY_MS) as i64;
        while self.history.front().is_some_and(|(t, _)| *t < keep_from) {
            self.history.pop_front();
        }
        self.judge_zone(time, max, out);
        self.judge_trend(time, out);
    }

    fn judge_zone(&mut self, time: Timestamp, max: f64, out: &mut Vec<Output>) {
        let zone = self.zone_of(max);
        let (was_bad, is_bad) = (self.zone >= 2, zone >= 2);
        if zone == self.zone || (!was_bad && !is_bad) {
            self.zone = zone;
            return;
        }
        let letter = ["A", "B", "C", "D"][zone];
        let [_, bc, cd] = self.c.zones;
        let (transition, severity, message) = match zone {
            3 => (
                Transition::Raised,
                Severity::Alarm,
                format!(
                    "{} vibration in zone D ({max:.2} mm/s, limit {cd}): damage occurs, stop and repair",
                    self.c.name
                ),
            ),
            2 => (
                Transition::Raised,
                Severity::Warning,
                format!("{} vibration in zone C ({max:.2} mm/s, limit {bc}): plan maintenance", self.c.name),
            ),
            _ => (
                Transition::Cleared,
                Severity::Info,
                format!("{} vibration back in zone {letter} ({max:.2} mm/s)", self.c.name),
            ),
        };
        out.push(Output::Event(EdgeEvent {
            time,
            asset: self.c.asset.clone(),
            kind: "vibration_zone",
            severity,
            transition,
            message,
            body: vec![("velocity_rms_mm_s", max), ("zone", zone as f64)],
        }));
        self.zone = zone;
    }

    /// Days from now until the fitted trend of the hourly maxima reaches `level`, with the
    /// fitted value now and its rise per day now. `None` without enough data or without a rise.
    fn trend(&self, level: f64) -> Option<(f64, f64, f64)> {
        let n = self.history.len();
        if n < 12 {
            return None;
        }
        let t0 = self.history.back()?.0;
        let points: Vec<(f64, f64)> = self.history.iter().map(|(t, v)| ((t - t0) as f64 / DAY_MS, *v)).collect();
        // A parabola a + b t + c t^2 (t in days, 0 = now), then a line if it does not curve up.
        let (a, b, c) = fit_quadratic(&points).filter(|(_, _, c)| *c > 0.0 && n >= 24).unwrap_or(fit_line(&points)?);
        let days = if c > 0.0 {
            // c t^2 + b t + (a - level) = 0, the root ahead.
            let disc = b * b - 4.0 * c * (a - level);
            (disc >= 0.0).then(|| (-b + disc.sqrt()) / (2.0 * c))?
        } else if b > 0.0 {
            (level - a) / b
        } else {
            return None;
        };
        (b > 0.0 || c > 0.0).then_some((days.max(0.0), a, b))
    }
    fn judge_trend(&mut self, time: Timestamp, out: &mut Vec<Output>) {
        let cd = self.c.zones[2];
        let (days, now, per_day) =
            self.trend(cd).unwrap_or((f64::INFINITY, self.history.back().map_or(0.0, |h| h.1), 0.0));
        let advise = days <= self.c.advice_days;
        // Advice stands until the trend eases; it is given again only when the time left has
        // halved since (an escalation with new numbers, not a repeat).
        let escalate = self.advised.is_some_and(|last| days < last / 2.0);
        if advise == self.advised.is_some() && !escalate {
            return;
        }
        self.advised = advise.then_some(days);
        let (transition, message) = if advise {
            let order_within = days.floor().max(0.0);
            (
                Transition::Raised,
                format!(
                    "{} vibration {now:.2} mm/s, rising {per_day:.2} mm/s per day: zone D ({cd} mm/s) in about {:.1} days; order a bearing within {order_within} days",
                    self.c.name,
                    days.max(0.0)
                ),
            )
        } else {
            (
                Transition::Cleared,
                format!("{} vibration trend eased ({now:.2} mm/s, {per_day:.2} mm/s per day)", self.c.name),
            )
        };
        out.push(Output::Event(EdgeEvent {
            time,
            asset: self.c.asset.clone(),
            kind: "maintenance_advice",
            severity: Severity::Warning,
            transition,
            message,
            body: vec![("velocity_rms_mm_s", now), ("rise_mm_s_per_day", per_day), ("days_to_zone_d", days.min(1e9))],
        }));
    }
}

impl Transform for Vibration {
    fn on_sample(&mut self, s: &Sample, out: &mut Vec<Output>) {
        let Some(v) = s.value.as_ref().filter(|_| s.quality.is_good()).and_then(|v| v.as_f64()) else { return };
        let t = s.gateway_time.as_millis();
        let start = t.div_euclid(HOUR_MS) * HOUR_MS;
        match self.hour {
            Some((h, max)) if h == start => self.hour = Some((h, max.max(v))),
            Some((h, max)) => {
                self.close_hour(h, max, out);
                self.hour = Some((start, v));
            }
            None => self.hour = Some((start, v)),
        }
    }

    fn on_tick(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        if let Some((h, max)) = self.hour
            && now.as_millis() >= h + HOUR_MS
        {
            self.hour = None;
            self.close_hour(h, max, out);
        }
    }
}

/// Least squares `y = a + b x`.
fn fit_line(p: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let n = p.len() as f64;
    let (mx, my) = (p.iter().map(|q| q.0).sum::<f64>() / n, p.iter().map(|q| q.1).sum::<f64>() / n);
    let sxx: f64 = p.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let sxy: f64 = p.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    (sxx > 0.0).then(|| {
        let b = sxy / sxx;
        (my - b * mx, b, 0.0)
    })
}

/// Least squares `y = a + b x + c x^2`, by the normal equations.
fn fit_quadratic(p: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let s = |k: i32| p.iter().map(|(x, _)| x.powi(k)).sum::<f64>();
    let t = |k: i32| p.iter().map(|(x, y)| x.powi(k) * y).sum::<f64>();
    let m = [[p.len() as f64, s(1), s(2)], [s(1), s(2), s(3)], [s(2), s(3), s(4)]];
    let r = [t(0), t(1), t(2)];
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    if d.abs() < 1e-12 {
        return None;
    }
    let with = |col: usize| {
        let mut q = m;
        for row in 0..3 {
            q[row][col] = r[row];
        }
        det(&q) / d
    };
    Some((with(0), with(1), with(2)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::{TagId, Value};

    fn vib() -> Vibration {
        Vibration::new(VibrationConfig {
            asset: AssetPath::parse("acme/line3/press2").unwrap(),
            name: "press2".into(),
            zones: iso_zones(2, true),
            advice_days: 14.0,
            trend_days: 7.0,
        })
    }

    /// Feeds one reading per 10 minutes of `value(day)` for `days`; returns the events.
    fn run(days: f64, value: impl Fn(f64) -> f64) -> Vec<EdgeEvent> {
        let mut v = vib();
        let mut out = Vec::new();
        let steps = (days * 144.0) as i64;
        for i in 0..=steps {
            let t = i * 600_000;
            v.on_sample(
                &Sample::good(TagId(0), Value::F64(value(t as f64 / DAY_MS)), Timestamp::from_millis(t)),
                &mut out,
            );
        }
        out.into_iter().filter_map(|o| if let Output::Event(e) = o { Some(e) } else { None }).collect()
    }

    #[test]
    fn zones_follow_the_standard() {
        assert_eq!(iso_zones(2, true), [1.4, 2.8, 4.5]);
        assert_eq!(iso_zones(1, false), [3.5, 7.1, 11.0]);
        let v = vib();
        assert_eq!([1.0, 1.4, 2.7, 2.8, 4.4, 4.5, 9.0].map(|x| v.zone_of(x)), [0, 1, 1, 2, 2, 3, 3]);
    }

    #[test]
    fn a_steady_machine_says_nothing() {
        assert!(run(10.0, |_| 1.2).is_empty());
    }

    #[test]
    fn a_wearing_bearing_gets_advice_before_zone_d() {
        // 1.1 mm/s growing 0.6 mm/s per day: zone C on day 2.8, zone D on day 5.7.
        let events = run(7.0, |day| 1.1 + 0.6 * day);
        let advice = events.iter().find(|e| e.kind == "maintenance_advice").expect("advice");
        let zone_d = events.iter().find(|e| e.kind == "vibration_zone" && e.body[1].1 == 3.0).expect("zone D");
        assert!(advice.time < zone_d.time, "advice at {} before zone D at {}", advice.time, zone_d.time);
        assert!(advice.message.contains("order a bearing within"), "{}", advice.message);
        let zone_c = events.iter().find(|e| e.kind == "vibration_zone").unwrap();
        assert!(zone_c.message.starts_with("press2 vibration in zone C"), "{}", zone_c.message);
        let day_c = zone_c.time.as_millis() as f64 / DAY_MS;
        assert!((2.7..3.0).contains(&day_c), "zone C on day {day_c}");
    }
}
