//! The outbox encoding of an [`Upstream`] record: compact, versioned, and read back without
//! trusting a byte of it.
//!
//! ```text
//! byte 0     format version (1). A record that starts with `{` is JSON from a version before
//!            the typed records (read as `Upstream::Legacy`); any other version is refused.
//! byte 1     kind: 1 sample, 2 aggregate, 3 production, 4 OEE, 5 event, 6 gap, 7 recovery,
//!            8 undecodable
//! then       the kind's fields, in the order of its struct:
//!            time        i64 little-endian, nanoseconds since the Unix epoch
//!            f64 / f32   IEEE 754 little-endian
//!            u64         LEB128 varint; i64 zigzag then LEB128
//!            string      varint length, then UTF-8 bytes (asset paths checked as asset paths)
//!            optional    a presence bit in the kind's flags byte (sample: unit, source time;
//!                        aggregate: unit and the seven figures)
//!            quality     0 good, 1 uncertain, 2 bad; then for 1 and 2 a reason byte: 0 timeout,
//!                        1 exception (+ u8 code), 2 decode error, 3 not finite, 4 comms lost,
//!                        5 stale, 6 source status (+ u16 LE), 7 source offline, 8 out of
//!                        range (added later in version 1: an older reader reports such a
//!                        record as undecodable, by its id)
//!            value       0 none, 1 bool (+ u8), 2 i64, 3 u64, 4 f64, 5 text, 6 waveform
//!                        (varint count + f32s)
//! ```
//!
//! **Compatibility.** What version 1 bytes mean is frozen: a later version only adds codes (a
//! reason, a gap cause: `8 out of range` and gap causes `2 write failed`, `3 diode lost`, `4 diode down` came so), kinds or a new
//! version byte, and keeps reading version 1 (`tests/compat.rs` holds bytes written by version 1 and reads them).
//! Decoding never panics and never allocates more than the record's own length: every length
//! is checked against the bytes that remain, and trailing bytes are an error.

use airlock_model::{AssetPath, Quality, Reason, Severity, Timestamp, Transition, Value, ValueType};

use crate::{
    AggregateRecord, EventRecord, GapCause, GapRecord, LegacyRecord, OeeRecord, ProductionRecord, RecoveryRecord,
    SampleRecord, UndecodableRecord, Upstream,
};

/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 1;

/// Why bytes are not a record this version can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("format version {0} is not known to this version of airlock")]
    UnknownVersion(u8),
    #[error("record kind {0} is not known to this version of airlock")]
    UnknownKind(u8),
    #[error("record ends early, in {0}")]
    Truncated(&'static str),
    #[error("{what} has the unknown code {code}")]
    BadCode { what: &'static str, code: u8 },
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("{what} is not an asset path: {why}")]
    BadPath { what: &'static str, why: String },
    #[error("{0} bytes after the end of the record")]
    Trailing(usize),
    #[error("legacy JSON record: {0}")]
    Legacy(String),
}

const SAMPLE: u8 = 1;
const AGGREGATE: u8 = 2;
const PRODUCTION: u8 = 3;
const OEE: u8 = 4;
const EVENT: u8 = 5;
const GAP: u8 = 6;
const RECOVERED: u8 = 7;
const UNDECODABLE: u8 = 8;

/// Appends the encoding of `record` to `out`.
pub fn encode(record: &Upstream, out: &mut Vec<u8>) {
    if let Upstream::Legacy(l) = record {
        out.extend_from_slice(l.json.as_bytes());
        return;
    }
    out.push(FORMAT_VERSION);
    let mut w = Writer(out);
    match record {
        Upstream::Sample(s) => w.sample(s),
        Upstream::Aggregate(a) => w.aggregate(a),
        Upstream::Production(p) => {
            w.u8(PRODUCTION);
            w.path(&p.asset);
            w.time(p.start);
            w.time(p.end);
            w.varint(p.parts);
            w.varint(p.shift_parts);
        }
        Upstream::Oee(o) => w.oee(o),
        Upstream::Event(e) => w.event(e),
        Upstream::Gap(g) => w.gap(g),
        Upstream::Recovered(r) => {
            w.u8(RECOVERED);
            w.time(r.time);
            w.varint(r.corrupt_records);
            w.varint(r.torn_bytes);
        }
        Upstream::Undecodable(u) => {
            w.u8(UNDECODABLE);
            w.time(u.time);
            w.str(&u.record_id);
            w.str(&u.why);
        }
        Upstream::Legacy(_) => {}
    }
}

/// Reads one record from `bytes` (all of them). `time` is the outbox's own time for the record,
/// used for a legacy JSON record that carries none.
pub fn decode(bytes: &[u8], time: Timestamp) -> Result<Upstream, DecodeError> {
    let (&version, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    match version {
        FORMAT_VERSION => {}
        b'{' => return legacy(bytes, time),
        other => return Err(DecodeError::UnknownVersion(other)),
    }
    let mut r = Reader { bytes: rest };
    let record = match r.u8("kind")? {
        SAMPLE => Upstream::Sample(r.sample()?),
        AGGREGATE => Upstream::Aggregate(r.aggregate()?),
        PRODUCTION => Upstream::Production(ProductionRecord {
            asset: r.path("asset")?,
            start: r.time("start")?,
            end: r.time("end")?,
            parts: r.varint("parts")?,
            shift_parts: r.varint("shift parts")?,
        }),
        OEE => Upstream::Oee(r.oee()?),
        EVENT => Upstream::Event(r.event()?),
        GAP => Upstream::Gap(r.gap()?),
        RECOVERED => Upstream::Recovered(RecoveryRecord {
            time: r.time("time")?,
            corrupt_records: r.varint("corrupt records")?,
            torn_bytes: r.varint("torn bytes")?,
        }),
        UNDECODABLE => Upstream::Undecodable(UndecodableRecord {
            time: r.time("time")?,
            record_id: r.string("record id")?,
            why: r.string("why")?,
        }),
        other => return Err(DecodeError::UnknownKind(other)),
    };
    match r.bytes.len() {
        0 => Ok(record),
        n => Err(DecodeError::Trailing(n)),
    }
}

/// A JSON object from before the typed records: its topic and, if it has one, its time.
fn legacy(bytes: &[u8], time: Timestamp) -> Result<Upstream, DecodeError> {
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8("legacy record"))?;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| DecodeError::Legacy(e.to_string()))?;
    let topic = object.get("topic").and_then(|t| t.as_str()).ok_or(DecodeError::Legacy("no topic".into()))?;
    let time = object.get("gateway_time").and_then(|t| t.as_str()).and_then(Timestamp::parse_rfc3339).unwrap_or(time);
    Ok(Upstream::Legacy(LegacyRecord { time, topic: topic.into(), json: text.into() }))
}

fn value_type_code(t: ValueType) -> u8 {
    ValueType::ALL.iter().position(|v| *v == t).map_or(0, |i| i as u8)
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn zigzag(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }

    fn time(&mut self, t: Timestamp) {
        self.0.extend_from_slice(&t.0.to_le_bytes());
    }

    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn path(&mut self, p: &AssetPath) {
        self.str(p.as_str());
    }

    fn sample(&mut self, s: &SampleRecord) {
        self.u8(SAMPLE);
        self.path(&s.path);
        self.u8(value_type_code(s.value_type));
        self.u8(u8::from(s.unit.is_some()) | u8::from(s.source_time.is_some()) << 1);
        if let Some(unit) = &s.unit {
            self.str(unit);
        }
        self.quality(s.quality);
        self.value(s.value.as_ref());
        if let Some(t) = s.source_time {
            self.time(t);
        }
        self.time(s.gateway_time);
    }

    fn quality(&mut self, q: Quality) {
        let (word, reason) = match q {
            Quality::Good => return self.u8(0),
            Quality::Uncertain(r) => (1, r),
            Quality::Bad(r) => (2, r),
        };
        self.u8(word);
        match reason {
            Reason::Timeout => self.u8(0),
            Reason::Exception(code) => {
                self.u8(1);
                self.u8(code);
            }
            Reason::DecodeError => self.u8(2),
            Reason::NotFinite => self.u8(3),
            Reason::CommsLost => self.u8(4),
            Reason::Stale => self.u8(5),
            Reason::SourceStatus(code) => {
                self.u8(6);
                self.0.extend_from_slice(&code.to_le_bytes());
            }
            Reason::SourceOffline => self.u8(7),
            Reason::OutOfRange => self.u8(8),
        }
    }

    fn value(&mut self, v: Option<&Value>) {
        match v {
            None => self.u8(0),
            Some(Value::Bool(b)) => {
                self.u8(1);
                self.u8(u8::from(*b));
            }
            Some(Value::I64(i)) => {
                self.u8(2);
                self.zigzag(*i);
            }
            Some(Value::U64(u)) => {
                self.u8(3);
                self.varint(*u);
            }
            Some(Value::F64(f)) => {
                self.u8(4);
                self.f64(*f);
            }
            Some(Value::Text(t)) => {
                self.u8(5);
                self.str(t);
            }
            Some(Value::Waveform(w)) => {
                self.u8(6);
                self.varint(w.len() as u64);
                for x in w.iter() {
                    self.0.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
    }

    fn aggregate(&mut self, a: &AggregateRecord) {
        self.u8(AGGREGATE);
        self.path(&a.path);
        let figures = [a.min, a.max, a.avg, a.stddev, a.first, a.last, a.twa];
        let mut flags = u8::from(a.unit.is_some());
        for (i, f) in figures.iter().enumerate() {
            flags |= u8::from(f.is_some()) << (i + 1);
        }
        self.u8(flags);
        if let Some(unit) = &a.unit {
            self.str(unit);
        }
        self.time(a.start);
        self.time(a.end);
        self.varint(a.count);
        for f in figures.into_iter().flatten() {
            self.f64(f);
        }
    }

    fn oee(&mut self, o: &OeeRecord) {
        self.u8(OEE);
        self.path(&o.asset);
        self.time(o.time);
        self.time(o.shift_start);
        for f in [o.availability, o.performance, o.quality, o.oee] {
            self.f64(f);
        }
        self.varint(o.parts);
        self.varint(o.rejects);
        self.f64(o.running_s);
    }

    fn event(&mut self, e: &EventRecord) {
        self.u8(EVENT);
        self.time(e.time);
        self.path(&e.asset);
        self.str(&e.kind);
        self.u8(match e.severity {
            Severity::Info => 0,
            Severity::Warning => 1,
            Severity::Alarm => 2,
        });
        self.u8(match e.state {
            Transition::Once => 0,
            Transition::Raised => 1,
            Transition::Cleared => 2,
        });
        self.str(&e.message);
        self.varint(e.body.len() as u64);
        for (k, v) in &e.body {
            self.str(k);
            self.f64(*v);
        }
    }

    fn gap(&mut self, g: &GapRecord) {
        self.u8(GAP);
        self.time(g.time);
        self.str(&g.class);
        self.varint(g.records);
        self.str(&g.first_id);
        self.str(&g.last_id);
        self.time(g.from);
        self.time(g.to);
        self.u8(match g.cause {
            GapCause::Full => 0,
            GapCause::Age => 1,
            GapCause::WriteFailed => 2,
            GapCause::DiodeLost => 3,
            GapCause::DiodeDown => 4,
        });
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8(what)?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::BadCode { what, code: 0x80 })
    }

    fn zigzag(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        let v = self.varint(what)?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn time(&mut self, what: &'static str) -> Result<Timestamp, DecodeError> {
        Ok(Timestamp(i64::from_le_bytes(self.array(what)?)))
    }

    fn f64(&mut self, what: &'static str) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.array(what)?))
    }

    /// A length that must fit in what remains, `unit` bytes per item.
    fn length(&mut self, unit: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.varint(what)?;
        match usize::try_from(n) {
            Ok(n) if n.checked_mul(unit).is_some_and(|bytes| bytes <= self.bytes.len()) => Ok(n),
            _ => Err(DecodeError::Truncated(what)),
        }
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let n = self.length(1, what)?;
        std::str::from_utf8(self.take(n, what)?).map_err(|_| DecodeError::NotUtf8(what))
    }

    fn string(&mut self, what: &'static str) -> Result<Box<str>, DecodeError> {
        self.str(what).map(Box::from)
    }

    fn path(&mut self, what: &'static str) -> Result<AssetPath, DecodeError> {
        let s = self.str(what)?;
        AssetPath::parse(s).map_err(|e| DecodeError::BadPath { what, why: e.to_string() })
    }

    fn code(&mut self, what: &'static str, max: u8) -> Result<u8, DecodeError> {
        match self.u8(what)? {
            code if code <= max => Ok(code),
            code => Err(DecodeError::BadCode { what, code }),
        }
    }

    fn sample(&mut self) -> Result<SampleRecord, DecodeError> {
        let path = self.path("path")?;
        let value_type = ValueType::ALL[usize::from(self.code("value type", ValueType::ALL.len() as u8 - 1)?)];
        let flags = self.code("sample flags", 0b11)?;
        let unit = if flags & 1 != 0 { Some(self.string("unit")?) } else { None };
        let quality = self.quality()?;
        let value = self.value()?;
        let source_time = if flags & 2 != 0 { Some(self.time("source time")?) } else { None };
        let gateway_time = self.time("gateway time")?;
        Ok(SampleRecord { path, value_type, unit, value, quality, source_time, gateway_time })
    }

    fn quality(&mut self) -> Result<Quality, DecodeError> {
        let word = self.code("quality", 2)?;
        if word == 0 {
            return Ok(Quality::Good);
        }
        let reason = match self.code("reason", 8)? {
            0 => Reason::Timeout,
            1 => Reason::Exception(self.u8("exception code")?),
            2 => Reason::DecodeError,
            3 => Reason::NotFinite,
            4 => Reason::CommsLost,
            5 => Reason::Stale,
            6 => Reason::SourceStatus(u16::from_le_bytes(self.array("source status")?)),
            7 => Reason::SourceOffline,
            _ => Reason::OutOfRange,
        };
        Ok(if word == 1 { Quality::Uncertain(reason) } else { Quality::Bad(reason) })
    }

    fn value(&mut self) -> Result<Option<Value>, DecodeError> {
        Ok(Some(match self.code("value kind", 6)? {
            0 => return Ok(None),
            1 => Value::Bool(self.code("bool", 1)? == 1),
            2 => Value::I64(self.zigzag("integer")?),
            3 => Value::U64(self.varint("integer")?),
            4 => Value::F64(self.f64("number")?),
            5 => Value::Text(self.string("text")?),
            _ => {
                let n = self.length(4, "waveform")?;
                let bytes = self.take(n * 4, "waveform")?;
                let samples: Vec<f32> =
                    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                Value::Waveform(samples.into())
            }
        }))
    }

    fn aggregate(&mut self) -> Result<AggregateRecord, DecodeError> {
        let path = self.path("path")?;
        let flags = self.u8("aggregate flags")?;
        let unit = if flags & 1 != 0 { Some(self.string("unit")?) } else { None };
        let start = self.time("start")?;
        let end = self.time("end")?;
        let count = self.varint("count")?;
        let mut figures = [None; 7];
        for (i, f) in figures.iter_mut().enumerate() {
            if flags & (1 << (i + 1)) != 0 {
                *f = Some(self.f64("figure")?);
            }
        }
        let [min, max, avg, stddev, first, last, twa] = figures;
        Ok(AggregateRecord { path, unit, start, end, count, min, max, avg, stddev, first, last, twa })
    }

    fn oee(&mut self) -> Result<OeeRecord, DecodeError> {
        Ok(OeeRecord {
            asset: self.path("asset")?,
            time: self.time("time")?,
            shift_start: self.time("shift start")?,
            availability: self.f64("availability")?,
            performance: self.f64("performance")?,
            quality: self.f64("quality")?,
            oee: self.f64("oee")?,
            parts: self.varint("parts")?,
            rejects: self.varint("rejects")?,
            running_s: self.f64("running time")?,
        })
    }

    fn event(&mut self) -> Result<EventRecord, DecodeError> {
        let time = self.time("time")?;
        let asset = self.path("asset")?;
        let kind = self.string("kind")?;
        let severity = [Severity::Info, Severity::Warning, Severity::Alarm][usize::from(self.code("severity", 2)?)];
        let state = [Transition::Once, Transition::Raised, Transition::Cleared][usize::from(self.code("state", 2)?)];
        let message = self.string("message")?;
        // Each entry is at least a length byte and eight bytes of number.
        let n = self.length(9, "event body")?;
        let mut body = Vec::with_capacity(n);
        for _ in 0..n {
            body.push((self.string("body key")?, self.f64("body value")?));
        }
        Ok(EventRecord { time, asset, kind, severity, state, message, body })
    }

    fn gap(&mut self) -> Result<GapRecord, DecodeError> {
        Ok(GapRecord {
            time: self.time("time")?,
            class: self.string("class")?,
            records: self.varint("records")?,
            first_id: self.string("first id")?,
            last_id: self.string("last id")?,
            from: self.time("from")?,
            to: self.time("to")?,
            cause: [GapCause::Full, GapCause::Age, GapCause::WriteFailed, GapCause::DiodeLost, GapCause::DiodeDown]
                [usize::from(self.code("gap cause", 4)?)],
        })
    }
}
