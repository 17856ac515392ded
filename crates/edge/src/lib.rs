//! The edge: where samples become conclusions, right beside the machine. Everything here is
//! sans-I/O: synchronous transforms that own their state and take time as an argument
//! ([`Transform::on_sample`], [`Transform::on_tick`]); no runtime, no clock reads, no disk. So
//! every transform is tested exhaustively without sleeping and benchmarked in isolation, and the
//! edge keeps working with no uplink at all.
//!
//! Outputs ([`Output`]) are condensed samples (what deadband and swinging door let through),
//! aggregates (closed windows) and events (alarms that raise and clear, part counts, ...), each
//! a short message for IT with the numbers in it.

pub mod alarm;
pub mod counter;
pub mod deadband;
pub mod oee;
pub mod sdt;
pub mod spectrum;
pub mod vibration;
pub mod window;

pub use airlock_model::Transition;
use airlock_model::{AssetPath, Sample, Severity, TagId, Timestamp};
pub use airlock_upstream::{OeeRecord, ProductionRecord};

/// What a transform emits.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A sample worth sending (condensed series).
    Sample(Sample),
    /// A closed window's aggregates.
    Aggregate(Aggregate),
    /// A conclusion for people and machines.
    Event(EdgeEvent),
    /// Parts made by a machine in an interval (already the upstream record: nothing to add).
    Production(ProductionRecord),
    /// A machine's OEE so far in its shift (already the upstream record).
    Oee(OeeRecord),
}

/// The aggregates of one tag over one window `[start, end)`; values of good samples only.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub tag: TagId,
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

/// An event as the edge makes it; the outbox gives it its id.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeEvent {
    pub time: Timestamp,
    pub asset: AssetPath,
    /// Machine-readable kind, e.g. `alarm_high`, `parts_produced`.
    pub kind: &'static str,
    pub severity: Severity,
    pub transition: Transition,
    /// One line for a person, with the numbers in it.
    pub message: String,
    /// The numbers, for machines.
    pub body: Vec<(&'static str, f64)>,
}

/// One step of a tag's chain, or a rule over an asset.
pub trait Transform: Send {
    fn on_sample(&mut self, sample: &Sample, out: &mut Vec<Output>);

    /// Time passes (for windows that close, alarms that go stale, delays that run out).
    fn on_tick(&mut self, _now: Timestamp, _out: &mut Vec<Output>) {}
}

/// A number for a person: at most three decimals, no trailing zeros (`45.4`, `80`, `0.125`).
pub fn num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Milliseconds between two times (saturating).
pub(crate) fn ms_between(from: Timestamp, to: Timestamp) -> i64 {
    to.as_millis().saturating_sub(from.as_millis())
}
