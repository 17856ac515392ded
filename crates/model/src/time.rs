//! Wall-clock time as nanoseconds since the Unix epoch (UTC), valid until the year 2262.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time: nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time. The only clock read in this crate; callers that must be
    /// deterministic take a `Timestamp` as an argument instead.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    pub const fn from_millis(ms: i64) -> Self {
        Self(ms.saturating_mul(1_000_000))
    }

    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1_000_000)
    }

    /// The later time `d` after `self`, saturating at the end of the representable range.
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)))
    }
}

/// The gateway's clock: the wall clock, or, for a simulated plant only, a clock that starts at
/// a stated time and runs `speed` times faster than the wall clock (`[gateway] clock_speed`), so
/// that a simulator's hours are hours to the edge's windows, the historian and upstream too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clock {
    /// The wall-clock time the clock was started, and the time it showed then.
    wall_start: Timestamp,
    start: Timestamp,
    speed: f64,
}

impl Clock {
    /// The wall clock itself.
    pub fn wall() -> Self {
        let now = Timestamp::now();
        Self { wall_start: now, start: now, speed: 1.0 }
    }

    /// A clock that shows `start` now and runs `speed` times faster than the wall clock (a
    /// speed that is not finite and above zero counts as 1).
    pub fn simulated(start: Timestamp, speed: f64) -> Self {
        let speed = if speed.is_finite() && speed > 0.0 { speed } else { 1.0 };
        Self { wall_start: Timestamp::now(), start, speed }
    }

    pub fn is_wall(&self) -> bool {
        self.speed == 1.0 && self.start == self.wall_start
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// The time this clock shows now.
    pub fn now(&self) -> Timestamp {
        if self.is_wall() { Timestamp::now() } else { self.at(Timestamp::now()) }
    }

    /// The time this clock showed (or will show) when the wall clock showed `wall`.
    pub fn at(&self, wall: Timestamp) -> Timestamp {
        if self.is_wall() {
            return wall;
        }
        let elapsed = wall.0.saturating_sub(self.wall_start.0) as f64 * self.speed;
        Self::clamp(self.start.0 as f64 + elapsed)
    }

    fn clamp(nanos: f64) -> Timestamp {
        // `as` saturates a float at the integer's bounds (and makes NaN 0).
        Timestamp(nanos as i64)
    }
}

/// Parses a span: `500ms`, `30s`, `5m` (or `5min`), `2h`, `7d`, decimals (`1.5h`), or a plain
/// number of seconds. Refuses other units, negative or unrepresentable spans.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 500ms"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m, h or d")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

impl Timestamp {
    /// A time as a person writes it in a query: `now`, `-1h` (a [`parse_duration`] span before
    /// `now`), RFC 3339 or a date (see [`Timestamp::parse_rfc3339`]), or epoch milliseconds.
    pub fn parse_at(s: &str, now: Timestamp) -> Result<Timestamp, String> {
        let s = s.trim();
        if s == "now" {
            return Ok(now);
        }
        if let Some(ago) = s.strip_prefix('-')
            && let Ok(d) = parse_duration(ago)
        {
            return Ok(Timestamp(now.0.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))));
        }
        if let Some(t) = Timestamp::parse_rfc3339(s) {
            return Ok(t);
        }
        if let Ok(ms) = s.parse::<i64>() {
            return Ok(Timestamp::from_millis(ms));
        }
        Err(format!("{s:?} is not a time: use now, -1h, 2026-11-28T12:00:00Z, 2026-11-28 or epoch milliseconds"))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX)),
        }
    }
}

/// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-28T12:00:00.125Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
        let (y, m, d) = civil_from_days(days);
        let s = ms_of_day / 1000;
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", s / 3600, s / 60 % 60, s % 60, ms_of_day % 1000)
    }
}

impl Timestamp {
    /// Parses RFC 3339 (`2026-11-28T12:00:00Z`, with optional fractional seconds up to
    /// nanoseconds, `z`, or an offset such as `+02:00`) or a plain date (`2026-11-28`, midnight
    /// UTC). Refuses what is not a real time: fields of the wrong width or with a sign, a day
    /// the month does not have, an hour past 23, and anything outside what a `Timestamp` holds
    /// (the years 1677 to 2262). Never panics, whatever the text.
    pub fn parse_rfc3339(s: &str) -> Option<Self> {
        let (date, time) = match s.split_once(['T', 't', ' ']) {
            Some((d, t)) => (d, Some(t)),
            None => (s, None),
        };
        let b = date.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let (y, m, d) = (digits(&date[..4])?, digits(&date[5..7])?, digits(&date[8..])?);
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return None;
        }
        let days = days_from_civil(y, m as u32, d as u32);
        let nanos = match time {
            None => 0,
            Some(t) => parse_time_of_day(t)?,
        };
        days.checked_mul(86_400_000_000_000)?.checked_add(nanos).map(Self)
    }
}

/// A field of ASCII digits only (no sign, no space) as a number; at most 18 digits.
fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `HH:MM:SS[.fff…]` and `Z` or `±HH:MM` to nanoseconds since midnight UTC (negative, or a
/// day or more, when an offset moves it across midnight).
fn parse_time_of_day(t: &str) -> Option<i64> {
    let (t, offset_minutes) = if let Some(t) = t.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else {
        let at = t.len().checked_sub(6)?;
        let (t, zone) = (t.get(..at)?, t.get(at..)?);
        let sign = match zone.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (h, m) = (digits(zone.get(1..3)?)?, digits(zone.get(4..6)?)?);
        if zone.as_bytes()[3] != b':' || h > 23 || m > 59 {
            return None;
        }
        (t, sign * (h * 60 + m))
    };
    let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
    let b = hms.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' || frac.len() > 9 || (t.contains('.') && frac.is_empty()) {
        return None;
    }
    let (h, m, s) = (digits(&hms[..2])?, digits(&hms[3..5])?, digits(&hms[6..])?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let frac_nanos = if frac.is_empty() { 0 } else { digits(frac)? * 10i64.pow(9 - frac.len() as u32) };
    Some(((h * 60 + m - offset_minutes) * 60 + s) * 1_000_000_000 + frac_nanos)
}

/// A proleptic Gregorian date to days since the epoch (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days since the epoch to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ms: i64, expected: &str) {
        assert_eq!(Timestamp::from_millis(ms).to_string(), expected);
    }

    #[test]
    fn a_simulated_clock_starts_where_told_and_runs_at_its_speed() {
        let start = Timestamp::from_millis(1_795_867_200_000);
        let clock = Clock::simulated(start, 600.0);
        assert!(!clock.is_wall());
        let wall = clock.wall_start;
        assert_eq!(clock.at(wall), start);
        assert_eq!(clock.at(wall.plus(Duration::from_secs(6))), start.plus(Duration::from_secs(3600)));
        assert!(clock.now() >= start);
        assert!(Clock::wall().is_wall());
        assert_eq!(Clock::simulated(start, f64::NAN).speed(), 1.0);
        let far = Timestamp(i64::MAX - 10);
        assert_eq!(Clock::simulated(far, 1e9).at(wall.plus(Duration::from_secs(3600))), Timestamp(i64::MAX));
    }

    #[test]
    fn parses_what_it_displays() {
        for ms in [0, 951_782_400_123, 1_795_867_200_000, -1, 4_102_444_800_999] {
            let t = Timestamp::from_millis(ms);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Some(t));
        }
        assert_eq!(Timestamp::parse_rfc3339("2026-11-28"), Some(Timestamp::from_millis(1_795_824_000_000)));
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-28T12:00:00+00:00"),
            Some(Timestamp::from_millis(1_795_867_200_000))
        );
        assert_eq!(Timestamp::parse_rfc3339("2026-11-28T12:00:00.5Z"), Some(Timestamp::from_millis(1_795_867_200_500)));
        for bad in
            ["", "2026-13-01", "2026-11-28T25:00:00Z", "2026-11-28T12:00:00", "yesterday", "2026-11-28T12:00:00.x1Z"]
        {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_real_time_and_never_panics() {
        for bad in [
            "99999999999999-01-01T00:00:00Z",
            "9223372036854775807-01-01",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "2026-11-28T-1:00:00Z",
            "2026-11-28T+1:00:00Z",
            "2026-11-28T-01:00:00Z",
            "+2026-11-28",
            "-2026-11-28",
            "2026-1-1",
            "2026-02-29",
            "2026-02-31T00:00:00Z",
            "2026-04-31",
            "2026-11-28T12:00:00.Z",
            "2026-11-28T12:00:00.1234567890Z",
            "2026-11-28T12:00:00+24:00",
            "2026-11-28T12:00:00+02:60",
            "2026-11-28T12:00:00+0200",
            "2026-11-28T12:00:00 +02:00",
            "2026-11-28T1:00:00Z",
            "2026-11-28T12:0:00Z",
            "2026-11-28T12:00:61Z",
            "2026-11-28T12:00:00+\u{e9}:00",
            "2026-11-28T\u{e9}\u{e9}:00:00Z",
            "\u{e9}\u{e9}\u{e9}\u{e9}-11-28",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
        // A leap day, and offsets, including one that moves the time across midnight.
        assert!(Timestamp::parse_rfc3339("2024-02-29").is_some());
        let noon = Timestamp::parse_rfc3339("2026-11-28T12:00:00Z");
        assert_eq!(Timestamp::parse_rfc3339("2026-11-28T14:00:00+02:00"), noon);
        assert_eq!(Timestamp::parse_rfc3339("2026-11-28T06:30:00-05:30"), noon);
        assert_eq!(
            Timestamp::parse_rfc3339("2026-11-29T01:00:00+02:00"),
            Timestamp::parse_rfc3339("2026-11-28T23:00:00Z")
        );
        // Every byte string near a real time: nothing panics.
        let base = b"2026-11-28T12:00:00.125+02:00";
        for i in 0..base.len() {
            for byte in [b'0', b'9', b'-', b'+', b':', b'.', b'T', b'Z', 0xff, b' '] {
                let mut v = base.to_vec();
                v[i] = byte;
                if let Ok(text) = std::str::from_utf8(&v) {
                    let _ = Timestamp::parse_rfc3339(text);
                }
                let _ = Timestamp::parse_rfc3339(std::str::from_utf8(&base[..i]).unwrap_or(""));
            }
        }
    }

    #[test]
    fn displays_rfc3339_utc() {
        check(0, "1970-01-01T00:00:00.000Z");
        check(951_782_400_123, "2000-02-29T00:00:00.123Z");
        check(1_795_867_200_000, "2026-11-28T12:00:00.000Z");
        check(-1, "1969-12-31T23:59:59.999Z");
    }
}
