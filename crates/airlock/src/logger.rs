//! A minimal logger: one line per record to standard error or to a file, either as text
//! (`time level target: message`) or, with `--log-format json` or `AIRLOCK_LOG_FORMAT=json`, as
//! one JSON object per line: `time`, `level`, `target`, `message`, and `device` or `sink` when
//! the message is about one (airlock's messages start `device NAME: ` or `sink NAME: `). The
//! level comes from `AIRLOCK_LOG` (error, warn, info, debug, trace; default info).

use std::fs::File;
use std::io::Write;
use std::sync::Mutex;

use airlock_model::Timestamp;

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// `time level target: message`
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// The format from `AIRLOCK_LOG_FORMAT` (`text` or `json`), text when unset or unknown (an
    /// unknown one is said when the logger starts).
    pub fn from_env() -> Self {
        match std::env::var("AIRLOCK_LOG_FORMAT").as_deref() {
            Ok("json") => Format::Json,
            _ => Format::Text,
        }
    }
}

/// The format chosen by `--log-format` (set once at start; text until then).
static FORMAT: Mutex<Option<Format>> = Mutex::new(None);

/// Sets the format the next [`init`] uses (the command line's `--log-format`).
pub fn set_format(format: Format) {
    if let Ok(mut f) = FORMAT.lock() {
        *f = Some(format);
    }
}

struct Logger {
    level: log::LevelFilter,
    format: Format,
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
        let line = match self.format {
            Format::Text => {
                format!("{} {:<5} {}: {}\n", Timestamp::now(), record.level(), record.target(), record.args())
            }
            Format::Json => json_line(Timestamp::now(), record.level(), record.target(), &record.args().to_string()),
        };
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

/// One record as a JSON line; a message about a device or a sink names it in a field too.
fn json_line(time: Timestamp, level: log::Level, target: &str, message: &str) -> String {
    let mut object = serde_json::Map::new();
    object.insert("time".into(), time.to_string().into());
    object.insert("level".into(), level.as_str().to_ascii_lowercase().into());
    object.insert("target".into(), target.into());
    object.insert("message".into(), message.into());
    for field in ["device", "sink"] {
        let name = message
            .strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|rest| rest.split_once(": ").or_else(|| rest.split_once(':')))
            .map(|(name, _)| name)
            .filter(|name| !name.is_empty() && !name.contains(' '));
        if let Some(name) = name {
            object.insert(field.into(), name.into());
        }
    }
    let mut line = serde_json::Value::Object(object).to_string();
    line.push('\n');
    line
}

/// Installs the logger; `file` sends lines there instead of standard error.
pub fn init(file: Option<File>) {
    let level = std::env::var("AIRLOCK_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(log::LevelFilter::Info);
    let format = FORMAT.lock().ok().and_then(|f| *f).unwrap_or_else(Format::from_env);
    let logger = Logger { level, format, file: file.map(Mutex::new) };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
    let (level, format) = (std::env::var("AIRLOCK_LOG").ok(), std::env::var("AIRLOCK_LOG_FORMAT").ok());
    for warning in env_warnings(level.as_deref(), format.as_deref()) {
        log::warn!("{warning}");
    }
}

/// What is wrong with the log's settings from the environment (each is then left at its
/// default: info, text).
fn env_warnings(level: Option<&str>, format: Option<&str>) -> Vec<String> {
    let mut said = Vec::new();
    if let Some(level) = level.filter(|l| l.parse::<log::LevelFilter>().is_err()) {
        said.push(format!(
            "AIRLOCK_LOG={level:?} is not a log level (error, warn, info, debug, trace, off): logging at info"
        ));
    }
    if let Some(format) = format.filter(|f| !matches!(*f, "text" | "json")) {
        said.push(format!("AIRLOCK_LOG_FORMAT={format:?} is neither text nor json: writing text"));
    }
    said
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A value of AIRLOCK_LOG or AIRLOCK_LOG_FORMAT that is not one of theirs is said (it was
    /// dropped silently, for info and text), naming what it takes.
    #[test]
    fn an_unknown_log_setting_is_said() {
        assert!(env_warnings(None, None).is_empty());
        assert!(env_warnings(Some("debug"), Some("json")).is_empty());
        assert!(env_warnings(Some("WARN"), Some("text")).is_empty());
        let said = env_warnings(Some("loud"), Some("xml"));
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("AIRLOCK_LOG=\"loud\"") && said[0].contains("error, warn, info, debug, trace"));
        assert!(said[1].contains("AIRLOCK_LOG_FORMAT=\"xml\"") && said[1].contains("neither text nor json"));
    }

    #[test]
    fn a_json_line_is_one_object_with_the_device_or_sink_named() {
        let t = Timestamp::from_millis(1_800_000_000_000);
        let line = json_line(t, log::Level::Warn, "airlock_south_mqtt", "device press1: broker down \"x\"\nnext");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{line:?}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["target"], "airlock_south_mqtt");
        assert_eq!(v["device"], "press1");
        assert_eq!(v["message"], "device press1: broker down \"x\"\nnext");
        assert_eq!(v["time"], t.to_string());
        assert!(v.get("sink").is_none());
        let v: serde_json::Value =
            serde_json::from_str(&json_line(t, log::Level::Info, "n", "sink erp: 3 delivered")).unwrap();
        assert_eq!((v["sink"].as_str(), v.get("device")), (Some("erp"), None));
        let v: serde_json::Value = serde_json::from_str(&json_line(t, log::Level::Info, "n", "devices up: 3")).unwrap();
        assert!(v.get("device").is_none(), "{v}");
    }
}
