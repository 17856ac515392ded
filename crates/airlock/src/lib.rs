//! The `airlock` gateway as a library: the assembly of the running gateway (device tasks, the
//! pipeline, the sinks), its live view, and the commands' work (`browse`, `check`, `demo`,
//! `query`, `export`, `status`). The `airlock` binary (`main.rs`) is the command line over it; benchmarks and tests
//! use it directly.

pub mod browse;
pub mod check;
#[cfg(feature = "sim")]
pub mod demo;
pub mod gateway;
pub mod import;
pub mod logger;
pub mod parquet_export;
pub mod query;
pub mod receive;
pub mod resend;
pub mod service;
pub mod status;
pub mod view;

/// Writes `text` to standard output. A reader that has gone (`airlock status --json | head -c
/// 1`) ends the process quietly, as a closed pipe ends a Unix tool (exit code 141, as if killed
/// by SIGPIPE, which Rust ignores), where `print!` panicked; any other failure to write is said
/// and ends it with 1.
pub fn print_out(text: &str) {
    if let Err(e) = write_out(text) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("airlock: write to standard output: {e}");
        std::process::exit(1);
    }
}

/// An error and its causes on one line (`{:#}`), a cause left out where the message before it
/// already ends with it (a store error says its I/O cause in its own message, and names it as
/// its source too: `... entity not found: entity not found`).
pub fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let said = cause.to_string();
        if text == said || text.ends_with(&format!(": {said}")) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    text
}

/// Writes `text` to standard output for a command that runs on (`demo`, `receive`): a reader
/// that has gone is no reason to stop it (it stops as it always does, its stores synced), so
/// what cannot be written is dropped.
pub fn print_live(text: &str) {
    let _ = write_out(text);
}

fn write_out(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush())
}

/// `println!` through [`print_live`]: for the commands that run on, where `print!` panicked
/// on a reader that has gone.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::print_live(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// Parses `500ms`, `30s`, `5m`, `2h`, `7d`, or a plain number of seconds (the model's parser,
/// for the command line's arguments).
pub use airlock_model::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A cause the message before it already ends with is said once.
    #[test]
    fn an_error_says_each_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let store = airlock_store::StoreError::Io { action: "open", path: "d/historian".into(), source: io };
        let e = anyhow::Error::new(store).context("query d");
        assert_eq!(error_text(&e), "query d: open d/historian: entity not found");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_text(&e), "outer: inner");
        // A cause the message ends with only in part is said.
        let e = anyhow::anyhow!("denied").context("open x: permission denied");
        assert_eq!(error_text(&e), "open x: permission denied: denied");
    }

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
