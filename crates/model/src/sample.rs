//! Samples: one reading of one tag, with its quality and its times.

use std::fmt;

use crate::Timestamp;

/// The index of a tag in the gateway's tag table (dense, assigned at config time), so a sample
/// is small and carries no string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagId(pub u32);

/// A tag's value in engineering units.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Text(Box<str>),
    /// A block of samples taken at a known rate (a vibration waveform), in engineering units.
    Waveform(std::sync::Arc<[f32]>),
}

impl Value {
    /// The value as a number, for trends and arithmetic (`true` is 1). `None` for text.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::I64(v) => Some(*v as f64),
            Value::U64(v) => Some(*v as f64),
            Value::F64(v) => Some(*v),
            Value::Text(_) | Value::Waveform(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(v) => write!(f, "{v}"),
            Value::I64(v) => write!(f, "{v}"),
            Value::U64(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v:.3}"),
            Value::Text(v) => write!(f, "{v:?}"),
            Value::Waveform(w) => write!(f, "[{} samples]", w.len()),
        }
    }
}

/// The type of a tag's values as they go upstream: its configured data type, or `F64` for a
/// scaled number. Fixed by the config, so a consumer's view of a tag never changes type while
/// the config does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    Text,
    Waveform,
}

impl ValueType {
    pub const ALL: [ValueType; 11] = [
        ValueType::Bool,
        ValueType::U16,
        ValueType::I16,
        ValueType::U32,
        ValueType::I32,
        ValueType::U64,
        ValueType::I64,
        ValueType::F32,
        ValueType::F64,
        ValueType::Text,
        ValueType::Waveform,
    ];
}

/// Why a sample is not good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The device did not answer within the request timeout.
    Timeout,
    /// The device answered with a protocol exception (for Modbus, the exception code).
    Exception(u8),
    /// The bytes came back but do not decode as the configured type.
    DecodeError,
    /// The value decoded to NaN or infinity.
    NotFinite,
    /// The connection to the device is down; the last value is no longer current.
    CommsLost,
    /// No fresh value arrived for longer than the tag allows.
    Stale,
    /// The source itself marked the value not good: an OPC UA StatusCode's high 16 bits
    /// (e.g. `0x8034` BadNodeIdUnknown, `0x408f` UncertainLastUsableValue).
    SourceStatus(u16),
    /// The source announced that it went offline (a Sparkplug NDEATH or DDEATH).
    SourceOffline,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Timeout => f.write_str("timeout"),
            Reason::Exception(code) => write!(f, "exception {code:#04x}"),
            Reason::DecodeError => f.write_str("decode error"),
            Reason::NotFinite => f.write_str("not a finite number"),
            Reason::CommsLost => f.write_str("comms lost"),
            Reason::Stale => f.write_str("stale"),
            Reason::SourceStatus(code) => write!(f, "source status {code:#06x}"),
            Reason::SourceOffline => f.write_str("source offline"),
        }
    }
}

/// How far a value can be trusted, OPC UA style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Quality {
    #[default]
    Good,
    Uncertain(Reason),
    Bad(Reason),
}

impl Quality {
    pub fn is_good(self) -> bool {
        self == Quality::Good
    }

    /// `good`, `uncertain` or `bad`: the word used on the wire.
    pub fn word(self) -> &'static str {
        match self {
            Quality::Good => "good",
            Quality::Uncertain(_) => "uncertain",
            Quality::Bad(_) => "bad",
        }
    }

    pub fn reason(self) -> Option<Reason> {
        match self {
            Quality::Good => None,
            Quality::Uncertain(r) | Quality::Bad(r) => Some(r),
        }
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reason() {
            None => f.write_str(self.word()),
            Some(r) => write!(f, "{} ({r})", self.word()),
        }
    }
}

/// One reading of one tag. A bad sample keeps the last value it knew (or none).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub tag: TagId,
    /// `None` when no value could be read (a bad sample with nothing known).
    pub value: Option<Value>,
    pub quality: Quality,
    /// The time the source stamped the value, when the protocol carries one (OPC UA does,
    /// Modbus does not).
    pub source_time: Option<Timestamp>,
    /// The time airlock received the value.
    pub gateway_time: Timestamp,
}

impl Sample {
    pub fn good(tag: TagId, value: Value, gateway_time: Timestamp) -> Self {
        Self { tag, value: Some(value), quality: Quality::Good, source_time: None, gateway_time }
    }

    pub fn bad(tag: TagId, reason: Reason, gateway_time: Timestamp) -> Self {
        Self { tag, value: None, quality: Quality::Bad(reason), source_time: None, gateway_time }
    }
}

/// Samples of one device handed on together: a Modbus request's answer, an OPC UA publish, an
/// MQTT message. Sent as soon as they are in, so no sample waits behind the rest of its poll.
#[derive(Debug)]
pub struct SampleBatch {
    /// The device's index in the config.
    pub device: usize,
    /// The device's poll counter: batches of one poll share it (drivers without polls count
    /// their batches).
    pub poll: u64,
    pub samples: Vec<Sample>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_reads_as_words() {
        assert_eq!(Quality::Good.to_string(), "good");
        assert_eq!(Quality::Bad(Reason::Exception(2)).to_string(), "bad (exception 0x02)");
        assert_eq!(Quality::Uncertain(Reason::Stale).to_string(), "uncertain (stale)");
        assert_eq!(Value::Bool(true).as_f64(), Some(1.0));
        assert_eq!(Value::Text("x".into()).as_f64(), None);
    }
}
