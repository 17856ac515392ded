//! Aggregates and interpolation over a tag's points, as pure functions.
//!
//! Only good samples carry values into results; a bad or uncertain sample counts as "no value
//! known" from its time until the next good one. Definitions:
//! - `count`, `min`, `max`, `avg` (arithmetic mean), `first`, `last`: over the good samples
//!   whose time falls in the bucket `[start, start + every)`.
//! - `twa`, the time-weighted average: each good value holds from its time until the next
//!   sample (sample-and-hold, as a polled value is only known at its poll), clipped to the
//!   bucket, including a value carried in from before the bucket; stretches with no good value
//!   are left out of the weighting. `None` if no good value covers any of the bucket.
//! - Interpolation at time `t`: linear between the good samples just before and just after `t`
//!   (the sample itself at an exact hit); `None` outside the data or when a neighbour is bad.

/// One stored sample as queries see it: time in milliseconds, value if good.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub time_ms: i64,
    pub value: f64,
    pub good: bool,
}

/// Aggregates of one interval.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bucket {
    pub start_ms: i64,
    pub count: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
    pub first: Option<f64>,
    pub last: Option<f64>,
    pub twa: Option<f64>,
}

/// Buckets of `every_ms` aligned to multiples of `every_ms` since the epoch, covering
/// `[from_ms, to_ms)`. `points` are sorted by time and may start before `from_ms` (the last one
/// before it is carried into the first bucket's time-weighted average).
pub fn aggregate(points: &[Point], from_ms: i64, to_ms: i64, every_ms: i64) -> Vec<Bucket> {
    let every = every_ms.max(1);
    let mut out = Vec::new();
    let mut start = from_ms.div_euclid(every) * every;
    while start < to_ms {
        out.push(bucket(points, start, (start + every).min(to_ms)));
        start += every;
    }
    out
}

fn bucket(points: &[Point], start: i64, end: i64) -> Bucket {
    let inside = &points[points.partition_point(|p| p.time_ms < start)..points.partition_point(|p| p.time_ms < end)];
    let good = || inside.iter().filter(|p| p.good).map(|p| p.value);
    let count = good().count() as u64;
    Bucket {
        start_ms: start,
        count,
        min: good().reduce(f64::min),
        max: good().reduce(f64::max),
        avg: (count > 0).then(|| good().sum::<f64>() / count as f64),
        first: good().next(),
        last: inside.iter().rev().find(|p| p.good).map(|p| p.value),
        twa: time_weighted(points, start, end),
    }
}

fn time_weighted(points: &[Point], start: i64, end: i64) -> Option<f64> {
    let first_inside = points.partition_point(|p| p.time_ms < start);
    let carried = first_inside.checked_sub(1).map(|i| points[i]);
    let mut held = carried.map(|p| (start, p));
    let (mut weighted, mut span) = (0.0, 0i64);
    for p in points[first_inside..].iter().take_while(|p| p.time_ms < end) {
        if let Some((since, h)) = held
            && h.good
        {
            weighted += h.value * (p.time_ms - since) as f64;
            span += p.time_ms - since;
        }
        held = Some((p.time_ms, *p));
    }
    if let Some((since, h)) = held
        && h.good
    {
        weighted += h.value * (end - since) as f64;
        span += end - since;
    }
    (span > 0).then(|| weighted / span as f64)
}

/// The value at `t_ms`, interpolated linearly between its good neighbours.
pub fn interpolate(points: &[Point], t_ms: i64) -> Option<f64> {
    let after = points.partition_point(|p| p.time_ms < t_ms);
    let next = points.get(after)?;
    if next.time_ms == t_ms {
        return next.good.then_some(next.value);
    }
    let prev = points.get(after.checked_sub(1)?)?;
    if !(prev.good && next.good) {
        return None;
    }
    let f = (t_ms - prev.time_ms) as f64 / (next.time_ms - prev.time_ms) as f64;
    Some(prev.value + (next.value - prev.value) * f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(time_ms: i64, value: f64) -> Point {
        Point { time_ms, value, good: true }
    }

    #[test]
    fn buckets_by_hand() {
        let points =
            [p(-5, 10.0), p(0, 1.0), p(4, 3.0), Point { time_ms: 6, value: 99.0, good: false }, p(8, 5.0), p(12, 7.0)];
        let b = aggregate(&points, 0, 20, 10);
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].count, b[0].min, b[0].max, b[0].first, b[0].last),
            (3, Some(1.0), Some(5.0), Some(1.0), Some(5.0))
        );
        assert_eq!(b[0].avg, Some(3.0));
        // 1.0 for 4 ms, 3.0 for 2 ms, nothing known for 2 ms (bad), 5.0 for 2 ms: 20 / 8.
        assert_eq!(b[0].twa, Some(2.5));
        // 5.0 carried in for 2 ms, then 7.0 for 8 ms.
        assert_eq!(b[1].twa, Some((5.0 * 2.0 + 7.0 * 8.0) / 10.0));
        assert_eq!(aggregate(&[], 0, 10, 10)[0], Bucket { start_ms: 0, ..Bucket::default() });
    }

    #[test]
    fn interpolation_by_hand() {
        let points = [p(0, 0.0), p(10, 10.0), Point { time_ms: 20, value: 0.0, good: false }, p(30, 3.0)];
        assert_eq!(interpolate(&points, 0), Some(0.0));
        assert_eq!(interpolate(&points, 4), Some(4.0));
        assert_eq!(interpolate(&points, 15), None);
        assert_eq!(interpolate(&points, 20), None);
        assert_eq!(interpolate(&points, -1), None);
        assert_eq!(interpolate(&points, 31), None);
    }
}
