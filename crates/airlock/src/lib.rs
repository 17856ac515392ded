//! The `airlock` gateway as a library: the assembly of the running gateway (device tasks, the
//! pipeline, the sinks), its live view, and the commands' work (`browse`, `check`, `demo`,
//! `query`, `export`). The `airlock` binary (`main.rs`) is the command line over it; benchmarks and tests
//! use it directly.

pub mod browse;
pub mod check;
pub mod demo;
pub mod gateway;
pub mod logger;
pub mod parquet_export;
pub mod query;
pub mod receive;
pub mod resend;
pub mod view;

use std::time::Duration;

/// Parses `500ms`, `30s`, `5m`, `2h`, or a plain number of seconds.
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
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("7 days").is_err());
        assert!(parse_duration("s").is_err());
    }
}
