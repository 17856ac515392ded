//! Tumbling windows aligned to the wall clock (a 1-minute window runs from :00 to :00), emitted
//! when they close: count, min, max, avg, standard deviation, first, last and the time-weighted
//! average (each good value held until the next sample; the value before the window is carried
//! in). A window closes when a sample of a later window arrives or when time passes its end.
//! Windows with no sample are not emitted.

use airlock_model::{Sample, TagId, Timestamp};

use crate::{Aggregate, Output, Transform};

#[derive(Debug, Clone)]
pub struct Window {
    tag: TagId,
    width_ms: i64,
    open: Option<Acc>,
    /// The last sample's time and value (None if bad), carried into the next window.
    held: Option<(i64, Option<f64>)>,
    /// Where the last window closed ended: none before it is opened again.
    closed_end: i64,
}

#[derive(Debug, Clone)]
struct Acc {
    start_ms: i64,
    count: u64,
    sum: f64,
    sum_sq: f64,
    min: Option<f64>,
    max: Option<f64>,
    first: Option<f64>,
    last: Option<f64>,
    weighted: f64,
    span_ms: i64,
    /// The value holding at the current point of the window.
    holding: Option<(i64, Option<f64>)>,
}

impl Window {
    pub fn new(tag: TagId, width_ms: i64) -> Self {
        Self { tag, width_ms: width_ms.max(1), open: None, held: None, closed_end: i64::MIN }
    }

    /// The tag it aggregates moved to another id (a reload): its open window goes on.
    pub fn move_tags(&mut self, to: &dyn Fn(TagId) -> TagId) {
        self.tag = to(self.tag);
    }

    fn start_of(&self, t_ms: i64) -> i64 {
        t_ms.div_euclid(self.width_ms) * self.width_ms
    }

    fn close(&mut self, out: &mut Vec<Output>) {
        let Some(mut acc) = self.open.take() else { return };
        let end = acc.start_ms + self.width_ms;
        self.closed_end = end;
        hold_until(&mut acc, end);
        let mean = (acc.count > 0).then(|| acc.sum / acc.count as f64);
        let stddev = mean.map(|m| (acc.sum_sq / acc.count as f64 - m * m).max(0.0).sqrt());
        out.push(Output::Aggregate(Aggregate {
            tag: self.tag,
            start: Timestamp::from_millis(acc.start_ms),
            end: Timestamp::from_millis(end),
            count: acc.count,
            min: acc.min,
            max: acc.max,
            avg: mean,
            stddev,
            first: acc.first,
            last: acc.last,
            twa: (acc.span_ms > 0).then(|| acc.weighted / acc.span_ms as f64),
        }));
    }
}

/// Adds the held value's weight up to `until`.
fn hold_until(acc: &mut Acc, until: i64) {
    if let Some((since, value)) = acc.holding {
        if let Some(v) = value {
            let dt = until - since.max(acc.start_ms);
            if dt > 0 {
                acc.weighted += v * dt as f64;
                acc.span_ms += dt;
            }
        }
        acc.holding = Some((until, value));
    }
}

impl Transform for Window {
    fn on_sample(&mut self, s: &Sample, out: &mut Vec<Output>) {
        let t = s.gateway_time.as_millis();
        // A sample of a window before the open one, or before the last closed one's end (the
        // clock set back), is counted in the open one or the next: a window closed is never
        // opened again. A step back of more than a window is a clock put right after a jump
        // ahead: the windows go on from the sample's.
        let natural = self.start_of(t);
        let floor = self.open.as_ref().map_or(self.closed_end, |a| a.start_ms);
        let start = if natural < floor && floor.saturating_sub(natural) <= self.width_ms { floor } else { natural };
        if self.open.as_ref().is_some_and(|a| a.start_ms != start) {
            self.close(out);
        }
        let carried = self.held.map(|(_, v)| (start, v));
        let acc = self.open.get_or_insert(Acc {
            start_ms: start,
            count: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: None,
            max: None,
            first: None,
            last: None,
            weighted: 0.0,
            span_ms: 0,
            holding: carried,
        });
        hold_until(acc, t);
        let value = if s.quality.is_good() { s.value.as_ref().and_then(|v| v.as_f64()) } else { None };
        if let Some(v) = value {
            acc.count += 1;
            acc.sum += v;
            acc.sum_sq += v * v;
            acc.min = Some(acc.min.map_or(v, |m| m.min(v)));
            acc.max = Some(acc.max.map_or(v, |m| m.max(v)));
            acc.first.get_or_insert(v);
            acc.last = Some(v);
        }
        acc.holding = Some((t, value));
        self.held = Some((t, value));
    }

    fn on_tick(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        if self.open.as_ref().is_some_and(|a| now.as_millis() >= a.start_ms + self.width_ms) {
            self.close(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::{Quality, Reason, Value};

    fn sample(t: i64, v: f64) -> Sample {
        Sample::good(TagId(3), Value::F64(v), Timestamp::from_millis(t))
    }

    /// Feeds `(ms, value or NaN for bad)`, ticks at `tick_ms`, and expects the windows as
    /// `(start, count, min, max, avg, twa)`.
    fn check(width: i64, input: &[(i64, f64)], tick_ms: i64, expected: &[(i64, u64, f64, f64, f64, f64)]) {
        let mut w = Window::new(TagId(3), width);
        let mut out = Vec::new();
        for (t, v) in input {
            let mut s = sample(*t, *v);
            if v.is_nan() {
                s.quality = Quality::Bad(Reason::CommsLost);
                s.value = None;
            }
            w.on_sample(&s, &mut out);
        }
        w.on_tick(Timestamp::from_millis(tick_ms), &mut out);
        let got: Vec<(i64, u64, f64, f64, f64, f64)> = out
            .iter()
            .map(|o| match o {
                Output::Aggregate(a) => {
                    (a.start.as_millis(), a.count, a.min.unwrap(), a.max.unwrap(), a.avg.unwrap(), a.twa.unwrap())
                }
                _ => panic!(),
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn windows_align_to_the_clock_and_close_on_time() {
        // 0..1000: 1.0 for 250 ms, 3.0 for 750 ms -> twa 2.5; avg 2.0.
        check(1000, &[(250, 1.0), (500, 3.0)], 999, &[]);
        check(1000, &[(0, 1.0), (250, 3.0)], 1000, &[(0, 2, 1.0, 3.0, 2.0, 2.5)]);
        // The value carried in: 3.0 from 1000 to 1500, then 5.0 to 2000.
        check(
            1000,
            &[(0, 1.0), (250, 3.0), (1500, 5.0)],
            2000,
            &[(0, 2, 1.0, 3.0, 2.0, 2.5), (1000, 1, 5.0, 5.0, 5.0, 4.0)],
        );
    }

    #[test]
    fn bad_samples_count_for_nothing_and_empty_windows_are_skipped() {
        // 2.0 for 500 ms, nothing known for 500 ms: twa 2.0 over the known half.
        check(
            1000,
            &[(0, 2.0), (500, f64::NAN), (3200, 4.0)],
            4000,
            &[(0, 1, 2.0, 2.0, 2.0, 2.0), (3000, 1, 4.0, 4.0, 4.0, 4.0)],
        );
    }

    #[test]
    fn stddev_is_the_population_deviation() {
        let mut w = Window::new(TagId(0), 10_000);
        let mut out = Vec::new();
        for (i, v) in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0].iter().enumerate() {
            w.on_sample(&sample(i as i64 * 100, *v), &mut out);
        }
        w.on_tick(Timestamp::from_millis(10_000), &mut out);
        let Output::Aggregate(a) = &out[0] else { panic!() };
        assert_eq!((a.avg, a.stddev, a.first, a.last), (Some(5.0), Some(2.0), Some(2.0), Some(9.0)));
    }

    /// The clock set back a second across a window's start: the sample is counted in the
    /// window that is open, and every window is closed once. Before, the earlier window was
    /// opened again and both were sent twice, in part.
    #[test]
    fn a_clock_set_back_closes_each_window_once() {
        let mut w = Window::new(TagId(3), 60_000);
        let mut out = Vec::new();
        for t in [10_000, 61_000, 59_500, 62_000] {
            w.on_sample(&sample(t, 1.0), &mut out);
        }
        w.on_tick(Timestamp::from_millis(121_000), &mut out);
        // And after a tick closed the window, a sample from before its end.
        w.on_sample(&sample(119_000, 1.0), &mut out);
        w.on_tick(Timestamp::from_millis(181_000), &mut out);
        let starts: Vec<i64> = out
            .iter()
            .filter_map(|o| if let Output::Aggregate(a) = o { Some(a.start.as_millis()) } else { None })
            .collect();
        assert_eq!(starts, [0, 60_000, 120_000]);
        // A clock that jumped a day ahead and is put right: the windows go on from the present.
        let mut w = Window::new(TagId(3), 60_000);
        let mut out = Vec::new();
        for t in [10_000, 86_410_000, 20_000, 70_000] {
            w.on_sample(&sample(t, 1.0), &mut out);
        }
        let starts: Vec<i64> = out
            .iter()
            .filter_map(|o| if let Output::Aggregate(a) = o { Some(a.start.as_millis()) } else { None })
            .collect();
        assert_eq!(starts, [0, 86_400_000, 0], "the day ahead's window closed, the present one goes on");
    }
}
