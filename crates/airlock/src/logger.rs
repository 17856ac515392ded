//! A minimal logger: one line per record, `time level target: message`, to standard error or to
//! a file. The level comes from `AIRLOCK_LOG` (error, warn, info, debug, trace; default info).

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use airlock_model::Timestamp;

struct Logger {
    level: log::LevelFilter,
    file: Option<Mutex<File>>,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // The OPC UA library narrates every connection attempt, even at error level, once per
        // retry; airlock's drivers log each change of state with its cause. Its lines show with
        // AIRLOCK_LOG=debug.
        let library = metadata.target().starts_with("opcua") || metadata.target() == "tracing::span";
        if library {
            return self.level >= log::LevelFilter::Debug && metadata.level() <= self.level;
        }
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!("{} {:<5} {}: {}\n", Timestamp::now(), record.level(), record.target(), record.args());
        match &self.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = f.write_all(line.as_bytes());
                }
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the logger; `file` sends lines there instead of standard error.
pub fn init(file: Option<File>) {
    let level = std::env::var("AIRLOCK_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(log::LevelFilter::Info);
    let logger = Logger { level, file: file.map(Mutex::new) };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
