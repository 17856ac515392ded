//! What goes upstream, as one typed record: [`Upstream`]. The edge decides what IT gets (a
//! condensed sample, a window's aggregates, parts per interval, OEE, an event) and the outbox adds
//! its own reports (a gap when records were dropped, a recovery after a crash); each is a variant
//! here, carrying typed values: the tag's configured [`ValueType`], unit, quality with its reason,
//! source and gateway time, and the asset path. A record is encoded once, compactly and versioned
//! ([`codec`]), into the outbox; each sink renders it for its wire (JSON for JSON Lines, MQTT and
//! HTTP: [`json`]; Sparkplug B from the typed value). No sink parses JSON back, and a new output
//! kind is a new variant that the compiler makes every sink handle.

pub mod codec;
pub mod json;

use airlock_model::{AssetPath, Quality, Severity, Timestamp, Transition, Value, ValueType};

pub use codec::{DecodeError, FORMAT_VERSION, decode, encode};

/// One record for IT.
#[derive(Debug, Clone, PartialEq)]
pub enum Upstream {
    /// A tag's sample that the edge let through (condensed series or a plain change).
    Sample(SampleRecord),
    /// A tag's aggregates over a closed window.
    Aggregate(AggregateRecord),
    /// Parts a machine made in an interval.
    Production(ProductionRecord),
    /// A machine's OEE so far in its shift.
    Oee(OeeRecord),
    /// A conclusion drawn at the edge: an alarm, parts produced, maintenance advice.
    Event(EventRecord),
    /// The outbox dropped records that some sink had not taken (full, or too old).
    Gap(GapRecord),
    /// The outbox was opened after a crash and skipped corrupt bytes.
    Recovered(RecoveryRecord),
    /// A record in the outbox that this version cannot read (from a newer version, or corrupt);
    /// it stands in the unreadable record's place, under its id, so that the loss is reported.
    Undecodable(UndecodableRecord),
    /// A record written as JSON by a version before the typed records (read after an upgrade,
    /// so nothing queued is lost); sent on as it was written.
    Legacy(LegacyRecord),
}

/// A tag's sample, on the topic of the tag's asset path.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleRecord {
    pub path: AssetPath,
    /// The tag's configured type: what a consumer is told the tag is, whatever this value.
    pub value_type: ValueType,
    pub unit: Option<Box<str>>,
    /// `None` when no value is known (a bad sample).
    pub value: Option<Value>,
    pub quality: Quality,
    pub source_time: Option<Timestamp>,
    pub gateway_time: Timestamp,
}

/// A tag's aggregates over `[start, end)`, on the topic `<tag path>.window`; values of good
/// samples only, `None` when the window held none.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateRecord {
    /// The tag's path (the topic appends `.window`).
    pub path: AssetPath,
    pub unit: Option<Box<str>>,
    pub start: Timestamp,
    pub end: Timestamp,
    pub count: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
    pub stddev: Option<f64>,
    pub first: Option<f64>,
    pub last: Option<f64>,
    /// Time-weighted average, each value held until the next sample.
    pub twa: Option<f64>,
}

/// Parts a machine made in `[start, end)`, and in its shift so far, on
/// `<machine path>/parts.interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductionRecord {
    pub asset: AssetPath,
    pub start: Timestamp,
    pub end: Timestamp,
    pub parts: u64,
    pub shift_parts: u64,
}

/// A machine's OEE so far in its shift, on `<machine path>/oee`; fractions from 0 to 1.
#[derive(Debug, Clone, PartialEq)]
pub struct OeeRecord {
    pub asset: AssetPath,
    pub time: Timestamp,
    pub shift_start: Timestamp,
    pub availability: f64,
    pub performance: f64,
    pub quality: f64,
    pub oee: f64,
    pub parts: u64,
    pub rejects: u64,
    pub running_s: f64,
}

/// An event, on `_airlock/events/<kind>`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub time: Timestamp,
    pub asset: AssetPath,
    /// Machine-readable kind, e.g. `alarm_high`, `parts_produced`.
    pub kind: Box<str>,
    pub severity: Severity,
    pub state: Transition,
    /// One line for a person, with the numbers in it.
    pub message: Box<str>,
    /// The numbers, for machines.
    pub body: Vec<(Box<str>, f64)>,
}

/// Why the outbox dropped records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapCause {
    /// Its disk budget was full (the lowest class goes first).
    Full,
    /// They were older than the outbox keeps.
    Age,
    /// They were accepted, but writing them failed (a full disk): they never reached it.
    WriteFailed,
    /// Sent through a diode, never received whole: the blocks that held them could not be
    /// decoded (more loss than the repair covers, or the receiver's buffer overflowed).
    DiodeLost,
    /// Sent through a diode while its receiver was down, or before the sender restarted and
    /// sent them again too late to be put back in order.
    DiodeDown,
}

impl GapCause {
    pub fn words(self) -> &'static str {
        match self {
            GapCause::Full => "outbox full",
            GapCause::Age => "older than the outbox keeps",
            GapCause::WriteFailed => "the disk refused to write them (full, or failing)",
            GapCause::DiodeLost => "lost on the diode (blocks that could not be decoded)",
            GapCause::DiodeDown => "sent while the diode's receiver was not listening",
        }
    }

    /// The event kind it goes upstream as: `outbox_gap`, or `diode_gap` for records lost
    /// between the two halves of a diode.
    pub fn kind(self) -> &'static str {
        match self {
            GapCause::Full | GapCause::Age | GapCause::WriteFailed => "outbox_gap",
            GapCause::DiodeLost | GapCause::DiodeDown => "diode_gap",
        }
    }
}

/// Records of one class dropped before every sink had them: `records` of them, ids
/// `first_id` to `last_id`, written between `from` and `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct GapRecord {
    pub time: Timestamp,
    /// The class's name (`raw`, `series`, `aggregates`, `events`).
    pub class: Box<str>,
    pub records: u64,
    pub first_id: Box<str>,
    pub last_id: Box<str>,
    pub from: Timestamp,
    pub to: Timestamp,
    pub cause: GapCause,
}

/// What the outbox skipped when it was opened after a crash.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryRecord {
    pub time: Timestamp,
    pub corrupt_records: u64,
    pub torn_bytes: u64,
}

/// An outbox record that could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct UndecodableRecord {
    /// When the record was written (from the outbox's own framing).
    pub time: Timestamp,
    /// Its outbox id, e.g. `r1042`.
    pub record_id: Box<str>,
    /// Why it could not be read.
    pub why: Box<str>,
}

/// A record written as JSON before the typed records.
#[derive(Debug, Clone, PartialEq)]
pub struct LegacyRecord {
    pub time: Timestamp,
    /// Its `topic` field.
    pub topic: Box<str>,
    /// The JSON object as it was written (without a message id).
    pub json: Box<str>,
}

impl Upstream {
    /// The record's time: a sample's gateway time, a window's or interval's end, an event's time.
    pub fn time(&self) -> Timestamp {
        match self {
            Upstream::Sample(s) => s.gateway_time,
            Upstream::Aggregate(a) => a.end,
            Upstream::Production(p) => p.end,
            Upstream::Oee(o) => o.time,
            Upstream::Event(e) => e.time,
            Upstream::Gap(g) => g.time,
            Upstream::Recovered(r) => r.time,
            Upstream::Undecodable(u) => u.time,
            Upstream::Legacy(l) => l.time,
        }
    }

    /// The event kind of a record that is an event (`None` for samples and figures).
    pub fn event_kind(&self) -> Option<&str> {
        match self {
            Upstream::Event(e) => Some(&e.kind),
            Upstream::Gap(g) => Some(g.cause.kind()),
            Upstream::Recovered(_) => Some("outbox_recovered"),
            Upstream::Undecodable(_) => Some("outbox_undecodable"),
            Upstream::Legacy(l) => l.topic.strip_prefix(EVENT_TOPIC_PREFIX),
            Upstream::Sample(_) | Upstream::Aggregate(_) | Upstream::Production(_) | Upstream::Oee(_) => None,
        }
    }

    /// The record's topic in a Unified Namespace (before any sink's prefix): the asset path of
    /// what it is about, or `_airlock/events/<kind>`. Every sink takes it from here.
    pub fn topic(&self) -> String {
        match self {
            Upstream::Sample(s) => s.path.as_str().to_owned(),
            Upstream::Aggregate(a) => format!("{}.window", a.path),
            Upstream::Production(p) => format!("{}/parts.interval", p.asset),
            Upstream::Oee(o) => format!("{}/oee", o.asset),
            Upstream::Legacy(l) => l.topic.to_string(),
            Upstream::Event(_) | Upstream::Gap(_) | Upstream::Recovered(_) | Upstream::Undecodable(_) => {
                format!("{EVENT_TOPIC_PREFIX}{}", self.event_kind().unwrap_or_default())
            }
        }
    }
}

/// Where events go in the Unified Namespace.
pub const EVENT_TOPIC_PREFIX: &str = "_airlock/events/";

impl GapRecord {
    /// The one line for a person.
    pub fn message(&self) -> String {
        if self.cause.kind() == "diode_gap" {
            let known = |t: Timestamp| if t.0 == 0 { "?".to_owned() } else { t.to_string() };
            return format!(
                "missing {} {} records ({} to {}), sent between {} and {}: {}",
                self.records,
                self.class,
                self.first_id,
                self.last_id,
                known(self.from),
                known(self.to),
                self.cause.words()
            );
        }
        format!(
            "dropped {} {} records ({} to {}) between {} and {}: {}",
            self.records,
            self.class,
            self.first_id,
            self.last_id,
            self.from,
            self.to,
            self.cause.words()
        )
    }
}

impl RecoveryRecord {
    pub fn message(&self) -> String {
        format!(
            "outbox opened after a crash: {} corrupt records skipped, {} bytes of torn writes cut off",
            self.corrupt_records, self.torn_bytes
        )
    }
}

impl UndecodableRecord {
    pub fn message(&self) -> String {
        format!("outbox record {} cannot be read by this version ({}); skipped", self.record_id, self.why)
    }
}
