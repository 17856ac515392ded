//! Events: conclusions for people (and machines) about a place in the plant.

use crate::{AssetPath, Timestamp};

/// How urgent an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Alarm,
}

/// Whether an alarm-like event starts or ends a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// A one-off conclusion (parts produced, advice).
    Once,
    Raised,
    Cleared,
}

impl Transition {
    /// `once`, `raised` or `cleared`: the word used on the wire.
    pub fn word(self) -> &'static str {
        match self {
            Transition::Once => "once",
            Transition::Raised => "raised",
            Transition::Cleared => "cleared",
        }
    }
}

impl Severity {
    /// `info`, `warning` or `alarm`: the word used on the wire.
    pub fn word(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Alarm => "alarm",
        }
    }
}

/// A conclusion drawn at the edge: "press1 produced 100 parts", "vibration zone C".
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: Timestamp,
    pub asset: AssetPath,
    /// A short machine-readable kind, e.g. `parts_produced`, `device_down`.
    pub kind: String,
    pub severity: Severity,
    /// One line for a person, with the numbers in it.
    pub message: String,
}
