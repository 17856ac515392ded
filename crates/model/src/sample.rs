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

    /// A whole-number value (`I64`, `U64`), exactly: an f64 holds every whole number only up
    /// to 2^53, so a 64-bit counter past it is compared or measured as this.
    pub fn as_whole(&self) -> Option<i128> {
        match self {
            Value::I64(v) => Some(i128::from(*v)),
            Value::U64(v) => Some(i128::from(*v)),
            _ => None,
        }
    }
}

/// A number as people read it: the nearest one of at most 15 significant digits, the most a
/// double holds faithfully. A value the historian stores at a stated resolution is a whole
/// number times it (57 × 0.01 is 0.5700000000000001 as a double): read back for a person or a
/// JSON client it is 0.57. At most half a unit of the 15th significant digit off (a part in
/// 10^14 or less). A whole number, a number that is not finite, or one that would round past
/// the largest double, is returned as it is. For display and JSON only: exports, meant for
/// further computing (`airlock export`, CSV and Parquet), keep the stored bits.
pub fn readable(value: f64) -> f64 {
    // A whole number is read as it is, however many digits it has (a counter past 10^15); every
    // double from 2^52 on is one.
    if !value.is_finite() || value.fract() == 0.0 {
        return value;
    }
    // Near the largest double, 15 digits may round past it: then the value stays as it is.
    format!("{value:.14e}").parse().ok().filter(|v: &f64| v.is_finite()).unwrap_or(value)
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

    /// Whether `value` fits this type: an integer within its range (a float only if it is a
    /// whole number within it), a float within `f32`'s range for `F32`, any number for `F64`,
    /// text or a waveform only for their own types. Not-a-number is left to `NotFinite`.
    pub fn admits(self, value: &Value) -> bool {
        let range = |min: i128, max: i128| match value {
            Value::Bool(_) => true,
            Value::I64(v) => (min..=max).contains(&i128::from(*v)),
            Value::U64(v) => (min..=max).contains(&i128::from(*v)),
            Value::F64(v) => !v.is_finite() || (v.fract() == 0.0 && *v >= min as f64 && *v <= max as f64),
            Value::Text(_) | Value::Waveform(_) => false,
        };
        match self {
            ValueType::Bool => matches!(value, Value::Bool(_)) || range(0, 1),
            ValueType::U16 => range(0, i128::from(u16::MAX)),
            ValueType::I16 => range(i128::from(i16::MIN), i128::from(i16::MAX)),
            ValueType::U32 => range(0, i128::from(u32::MAX)),
            ValueType::I32 => range(i128::from(i32::MIN), i128::from(i32::MAX)),
            ValueType::U64 => range(0, i128::from(u64::MAX)),
            ValueType::I64 => range(i128::from(i64::MIN), i128::from(i64::MAX)),
            ValueType::F32 => match value {
                Value::F64(v) => !v.is_finite() || v.abs() <= f64::from(f32::MAX),
                Value::Text(_) | Value::Waveform(_) => false,
                _ => true,
            },
            ValueType::F64 => !matches!(value, Value::Text(_) | Value::Waveform(_)),
            ValueType::Text => !matches!(value, Value::Waveform(_)),
            ValueType::Waveform => matches!(value, Value::Waveform(_)),
        }
    }
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
    /// The value does not fit the tag's configured type (70,000 for a u16, -1 for a u32).
    OutOfRange,
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
            Reason::OutOfRange => f.write_str("out of range"),
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
    fn a_number_is_read_to_fifteen_significant_digits_at_most() {
        // Products of a whole number and a resolution, as the historian stores them.
        assert_eq!((57.0 * 0.01f64).to_string(), "0.5700000000000001");
        assert_eq!(readable(57.0 * 0.01).to_string(), "0.57");
        assert_eq!(readable(12.0 * 0.1).to_string(), "1.2");
        assert_eq!(readable(0.1 + 0.2).to_string(), "0.3");
        assert_eq!(readable(-3.0 * 0.1).to_string(), "-0.3");
        // What needs no more digits stays bit for bit.
        // (The largest double would round past itself: it stays.)
        // Nor does a whole number of 16 digits or more (a counter), which 15 digits would round.
        for v in
            [0.0, -0.0, 1.0, 1234.5, 65_535.0, 1e-300, 6.02214076e23, 41.27, f64::MAX, f64::MIN].into_iter().chain([
                1_234_567_890_123_456.0,
                (1u64 << 60) as f64,
                9_007_199_254_740_993.0,
                -((1u64 << 53) as f64) - 2.0,
            ])
        {
            assert_eq!(readable(v).to_bits(), v.to_bits(), "{v}");
        }
        // Never more than a part in 10^14 off.
        for v in [std::f64::consts::PI, 1.0 / 3.0, 123_456.789_012_345_67, -9.876_543_210_987_654e-7, f64::MIN_POSITIVE]
        {
            assert!(((readable(v) - v) / v).abs() < 1e-14, "{v}");
        }
        assert!(readable(f64::NAN).is_nan());
        assert_eq!(readable(f64::INFINITY), f64::INFINITY);
        assert_eq!(readable(f64::NEG_INFINITY), f64::NEG_INFINITY);
    }

    #[test]
    fn a_value_fits_its_type_or_is_out_of_range() {
        use ValueType as T;
        let fits = [
            (T::U16, Value::U64(65_535)),
            (T::U16, Value::I64(0)),
            (T::I16, Value::I64(-32_768)),
            (T::U32, Value::F64(4_294_967_295.0)),
            (T::I32, Value::U64(2_147_483_647)),
            (T::U64, Value::U64(u64::MAX)),
            (T::I64, Value::I64(i64::MIN)),
            (T::Bool, Value::Bool(true)),
            (T::Bool, Value::U64(1)),
            (T::F32, Value::F64(3.4e38)),
            (T::F64, Value::I64(-5)),
            (T::F64, Value::F64(f64::MAX)),
            (T::Text, Value::Text("ok".into())),
            (T::Text, Value::F64(1.5)),
            (T::U16, Value::F64(f64::NAN)),
        ];
        for (t, v) in fits {
            assert!(t.admits(&v), "{t:?} refused {v:?}");
        }
        let outside = [
            (T::U16, Value::U64(70_000)),
            (T::U16, Value::I64(-1)),
            (T::I16, Value::I64(-32_769)),
            (T::I16, Value::U64(40_000)),
            (T::U32, Value::I64(-1)),
            (T::U32, Value::F64(4_294_967_296.0)),
            (T::I32, Value::F64(1.5)),
            (T::U64, Value::I64(-1)),
            (T::I64, Value::U64(u64::MAX)),
            (T::U64, Value::F64(1e300)),
            (T::Bool, Value::U64(2)),
            (T::F32, Value::F64(1e39)),
            (T::F64, Value::Text("1.5".into())),
            (T::U16, Value::Text("7".into())),
            (T::Waveform, Value::F64(1.0)),
            (T::Text, Value::Waveform(std::sync::Arc::from(vec![1.0f32]))),
        ];
        for (t, v) in outside {
            assert!(!t.admits(&v), "{t:?} took {v:?}");
        }
        assert_eq!(Reason::OutOfRange.to_string(), "out of range");
    }

    #[test]
    fn quality_reads_as_words() {
        assert_eq!(Quality::Good.to_string(), "good");
        assert_eq!(Quality::Bad(Reason::Exception(2)).to_string(), "bad (exception 0x02)");
        assert_eq!(Quality::Uncertain(Reason::Stale).to_string(), "uncertain (stale)");
        assert_eq!(Value::Bool(true).as_f64(), Some(1.0));
        assert_eq!(Value::Text("x".into()).as_f64(), None);
    }
}
