//! Sparkplug B, send-only: the edge node's state (the payload types are in `airlock-sparkplug`): which
//! metrics each device has, their aliases and types, `bdSeq` and the 0–255 message `seq`.
//!
//! What airlock publishes, for edge node `E` in group `G`:
//! - `spBv1.0/G/NDEATH/E` as the MQTT last will: the `bdSeq` of this connection;
//! - after every connect, and again every `birth_interval`: `spBv1.0/G/NBIRTH/E` (`seq` 0, metrics
//!   `bdSeq` and `Node Control/Rebirth`), then one `spBv1.0/G/DBIRTH/E/D` per device known so far
//!   with every metric's name, alias, datatype and last value;
//! - `spBv1.0/G/DDATA/E/D` with one metric by alias per record; a record for a metric its device
//!   has not announced (or whose type changed) is sent as a new DBIRTH of that device instead;
//! - `spBv1.0/G/NDATA/E` with airlock's own events: the node metric `airlock/event` (String,
//!   announced in every NBIRTH) holding the event's JSON (as the JSON sinks send it, id first).
//!
//! A sample's metric is the last segment of its tag's asset path, its device the segment before;
//! its datatype is the tag's configured type (bool → Boolean, u16 → UInt16, i16 → Int16, u32 →
//! UInt32, i32 → Int32, u64 → UInt64, i64 → Int64, f32 → Float, f64 and scaled numbers → Double,
//! string → String), so a metric's datatype never changes while the config does not, and a
//! value's sign never causes a birth. Signed 8- to 32-bit values travel in `int_value` as two's
//! complement of their own width (-5 as Int16 is 65531), as the specification's reference
//! implementations do. Aggregates are `<tag>.window` (Double, the average), production
//! `parts.interval` (UInt64) and OEE `oee` (Double), each under its machine. A value that does
//! not fit its tag's type (it cannot happen with a config-typed tag) goes as null.
//!
//! Records older than the connection are marked `is_historical` (a backlog replayed after an
//! outage). Each metric carries the sample's quality as the property `Quality` (Int32, OPC UA
//! style: 192 good, 64 uncertain, 0 bad).
//!
//! Deviations from the specification, because nothing may come back down through the airlock:
//! the edge node never subscribes to NCMD, DCMD or STATE, so it cannot answer a Rebirth request
//! or wait for a primary host; it re-sends its births on its own schedule and after every
//! reconnect instead. And it publishes at QoS 1 (the specification says 0), so that the outbox
//! lets go of a record only when the broker has acknowledged it.

use std::collections::BTreeMap;

use airlock_model::{Quality, Timestamp, Value, ValueType};
use airlock_upstream::Upstream;

pub use airlock_sparkplug::{datatype, proto};

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// A metric the node has announced.
#[derive(Debug, Clone)]
struct Known {
    alias: u64,
    datatype: u32,
    last: proto::Metric,
}

/// The edge node's state across connections.
#[derive(Debug)]
pub struct EdgeNode {
    group: String,
    node: String,
    /// This connection's birth/death sequence number.
    bd_seq: u64,
    /// Connections the broker accepted so far: the next one's `bdSeq` (modulo 256).
    sessions: u64,
    seq: u8,
    next_alias: u64,
    /// Device name to its metrics by name.
    devices: BTreeMap<String, BTreeMap<String, Known>>,
    /// The node's own metrics (events) by name.
    node_metrics: BTreeMap<String, Known>,
}

/// The node metric that carries airlock's own events.
pub const EVENT_METRIC: &str = "airlock/event";

/// What a record says, as a metric.
struct Reading {
    device: Option<String>,
    metric: String,
    time_ms: u64,
    value: Option<proto::MetricValue>,
    datatype: u32,
    quality: u32,
}

impl EdgeNode {
    pub fn new(group: &str, node: &str) -> Self {
        let event = proto::Metric { value: Some(proto::MetricValue::String(String::new())), ..Default::default() };
        let event = Known { alias: 2, datatype: datatype::STRING, last: event };
        Self {
            group: group.to_owned(),
            node: node.to_owned(),
            bd_seq: 0,
            sessions: 0,
            seq: 0,
            next_alias: 3,
            devices: BTreeMap::new(),
            node_metrics: BTreeMap::from([(EVENT_METRIC.to_owned(), event)]),
        }
    }

    fn topic(&self, kind: &str, device: Option<&str>) -> String {
        match device {
            Some(d) => format!("spBv1.0/{}/{kind}/{}/{d}", self.group, self.node),
            None => format!("spBv1.0/{}/{kind}/{}", self.group, self.node),
        }
    }

    /// The NDEATH for the next connection (its last will). `bdSeq` starts at 0 and counts the
    /// connections the broker accepted: an attempt that never got through does not use one up.
    pub fn next_death(&mut self) -> Message {
        self.bd_seq = self.sessions % 256;
        let metric = bd_seq_metric(self.bd_seq);
        let payload = proto::Payload { timestamp: Some(now_ms()), metrics: vec![metric], seq: None };
        Message { topic: self.topic("NDEATH", None), payload: encode(&payload) }
    }

    /// The broker accepted the connection whose last will `next_death` made.
    pub fn connected(&mut self) {
        self.sessions += 1;
    }

    /// NBIRTH (seq 0) and a DBIRTH per known device.
    pub fn births(&mut self) -> Vec<Message> {
        self.seq = 0;
        let rebirth = proto::Metric {
            name: Some("Node Control/Rebirth".into()),
            alias: Some(1),
            datatype: Some(datatype::BOOLEAN),
            value: Some(proto::MetricValue::Boolean(false)),
            ..Default::default()
        };
        let mut metrics = vec![bd_seq_metric(self.bd_seq), rebirth];
        metrics.extend(self.node_metrics.iter().map(|(name, k)| birth_metric(name, k)));
        let mut out = vec![self.message("NBIRTH", None, metrics)];
        let names: Vec<String> = self.devices.keys().cloned().collect();
        out.extend(names.iter().map(|d| self.device_birth(d)));
        out
    }

    fn device_birth(&mut self, device: &str) -> Message {
        let metrics = self
            .devices
            .get(device)
            .map(|m| m.iter().map(|(name, k)| birth_metric(name, k)).collect())
            .unwrap_or_default();
        self.message("DBIRTH", Some(device), metrics)
    }

    fn message(&mut self, kind: &str, device: Option<&str>, metrics: Vec<proto::Metric>) -> Message {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let payload = proto::Payload { timestamp: Some(now_ms()), metrics, seq: Some(u64::from(seq)) };
        Message { topic: self.topic(kind, device), payload: encode(&payload) }
    }

    /// The message carrying one outbox record (message id `id`): a DDATA (or NDATA for events),
    /// or a DBIRTH when the record brings a metric its device has not announced. `None` for a
    /// record Sparkplug cannot carry (a waveform, or a legacy JSON record that is not an event).
    pub fn record(&mut self, id: &str, record: &Upstream, historical_before_ms: u64) -> Option<Message> {
        let r = reading(id, record)?;
        let historical = r.time_ms < historical_before_ms;
        let metrics = match &r.device {
            Some(d) => self.devices.entry(d.clone()).or_default(),
            None => &mut self.node_metrics,
        };
        let mut metric = proto::Metric {
            timestamp: Some(r.time_ms),
            is_historical: historical.then_some(true),
            is_null: r.value.is_none().then_some(true),
            properties: Some(quality_property(r.quality)),
            value: r.value,
            ..Default::default()
        };
        let fresh = match metrics.get_mut(&r.metric) {
            Some(k) if k.datatype == r.datatype || metric.value.is_none() => {
                metric.alias = Some(k.alias);
                metric.datatype = None;
                k.last = metric.clone();
                false
            }
            _ => {
                let alias = metrics.get(&r.metric).map_or(self.next_alias, |k| k.alias);
                if alias == self.next_alias {
                    self.next_alias += 1;
                }
                metric.alias = Some(alias);
                metrics.insert(r.metric.clone(), Known { alias, datatype: r.datatype, last: metric.clone() });
                true
            }
        };
        Some(match (&r.device, fresh) {
            (Some(d), true) => self.device_birth(d),
            (Some(d), false) => self.message("DDATA", Some(d), vec![metric]),
            (None, _) => self.message("NDATA", None, vec![metric]),
        })
    }
}

fn bd_seq_metric(bd_seq: u64) -> proto::Metric {
    proto::Metric {
        name: Some("bdSeq".into()),
        datatype: Some(datatype::UINT64),
        value: Some(proto::MetricValue::Long(bd_seq)),
        ..Default::default()
    }
}

/// A metric as a birth carries it: name, alias, datatype and last value.
fn birth_metric(name: &str, k: &Known) -> proto::Metric {
    proto::Metric { name: Some(name.to_owned()), alias: Some(k.alias), datatype: Some(k.datatype), ..k.last.clone() }
}

fn quality_property(code: u32) -> proto::PropertySet {
    proto::PropertySet {
        keys: vec!["Quality".into()],
        values: vec![proto::PropertyValue { r#type: Some(datatype::INT32), int_value: Some(code) }],
    }
}

fn encode(p: &proto::Payload) -> Vec<u8> {
    prost::Message::encode_to_vec(p)
}

fn now_ms() -> u64 {
    Timestamp::now().as_millis().max(0) as u64
}

/// Device, metric, time, value, datatype and quality of an upstream record.
fn reading(id: &str, record: &Upstream) -> Option<Reading> {
    let time_ms = record.time().as_millis().max(0) as u64;
    if record.event_kind().is_some() {
        let json = airlock_upstream::json::to_vec(id, record);
        return Some(Reading {
            device: None,
            metric: EVENT_METRIC.to_owned(),
            time_ms,
            value: Some(proto::MetricValue::String(String::from_utf8_lossy(&json).into_owned())),
            datatype: datatype::STRING,
            quality: 192,
        });
    }
    // Device and metric from the record's topic: `<device path>/<tag>`, `<tag path>.window`,
    // `<machine path>/parts.interval`, `<machine path>/oee`.
    let (device, metric) = device_and_metric(&record.topic())?;
    let (value, datatype, quality) = match record {
        Upstream::Sample(s) => {
            let value = s.value.as_ref().and_then(|v| metric_value(v, s.value_type));
            (value, datatype_of(s.value_type)?, quality_code(s.quality))
        }
        Upstream::Aggregate(a) => {
            (a.avg.map(proto::MetricValue::Double), datatype::DOUBLE, if a.count > 0 { 192 } else { 0 })
        }
        Upstream::Production(p) => (Some(proto::MetricValue::Long(p.parts)), datatype::UINT64, 192),
        Upstream::Oee(o) => (Some(proto::MetricValue::Double(o.oee)), datatype::DOUBLE, 192),
        _ => return None,
    };
    Some(Reading { device: Some(device), metric, time_ms, value, datatype, quality })
}

/// The device (the segment before the last) and the metric (the last segment) of a path.
fn device_and_metric(path: &str) -> Option<(String, String)> {
    let mut segments = path.rsplitn(3, '/');
    let metric = segments.next()?.to_owned();
    let device = segments.next()?.to_owned();
    Some((device, metric))
}

/// The Sparkplug datatype of a tag's configured type; `None` for a waveform (not sent).
fn datatype_of(t: ValueType) -> Option<u32> {
    Some(match t {
        ValueType::Bool => datatype::BOOLEAN,
        ValueType::U16 => datatype::UINT16,
        ValueType::I16 => datatype::INT16,
        ValueType::U32 => datatype::UINT32,
        ValueType::I32 => datatype::INT32,
        ValueType::U64 => datatype::UINT64,
        ValueType::I64 => datatype::INT64,
        ValueType::F32 => datatype::FLOAT,
        ValueType::F64 => datatype::DOUBLE,
        ValueType::Text => datatype::STRING,
        ValueType::Waveform => return None,
    })
}

/// `v` as a metric value of type `t`; `None` when it does not fit.
fn metric_value(v: &Value, t: ValueType) -> Option<proto::MetricValue> {
    use proto::MetricValue as M;
    let int = || match v {
        Value::I64(i) => Some(i128::from(*i)),
        Value::U64(u) => Some(i128::from(*u)),
        Value::Bool(b) => Some(i128::from(*b)),
        _ => None,
    };
    Some(match t {
        ValueType::Bool => match v {
            Value::Bool(b) => M::Boolean(*b),
            _ => M::Boolean(int()? != 0),
        },
        ValueType::U16 => M::Int(u32::from(u16::try_from(int()?).ok()?)),
        ValueType::I16 => M::Int(u32::from(i16::try_from(int()?).ok()? as u16)),
        ValueType::U32 => M::Int(u32::try_from(int()?).ok()?),
        ValueType::I32 => M::Int(i32::try_from(int()?).ok()? as u32),
        ValueType::U64 => M::Long(u64::try_from(int()?).ok()?),
        ValueType::I64 => M::Long(i64::try_from(int()?).ok()? as u64),
        ValueType::F32 => M::Float(v.as_f64()? as f32),
        ValueType::F64 => M::Double(v.as_f64()?),
        ValueType::Text => match v {
            Value::Text(t) => M::String(t.to_string()),
            other => M::String(other.to_string()),
        },
        ValueType::Waveform => return None,
    })
}

/// OPC UA style: 192 good, 64 uncertain, 0 bad.
fn quality_code(q: Quality) -> u32 {
    match q {
        Quality::Good => 192,
        Quality::Uncertain(_) => 64,
        Quality::Bad(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn decode(m: &Message) -> proto::Payload {
        proto::Payload::decode(&m.payload[..]).unwrap()
    }

    fn sample(path: &str, value_type: ValueType, value: Option<Value>, quality: Quality) -> Upstream {
        Upstream::Sample(airlock_upstream::SampleRecord {
            path: airlock_model::AssetPath::parse(path).unwrap(),
            value_type,
            unit: None,
            value,
            quality,
            source_time: None,
            gateway_time: Timestamp::parse_rfc3339("2026-11-28T12:00:00.000Z").unwrap(),
        })
    }

    #[test]
    fn births_then_data_by_alias_with_seq() {
        let mut node = EdgeNode::new("plant", "line3");
        let death = node.next_death();
        assert_eq!(death.topic, "spBv1.0/plant/NDEATH/line3");
        assert_eq!(decode(&death).metrics[0].value, Some(proto::MetricValue::Long(0)), "bdSeq starts at 0");
        assert_eq!(
            decode(&node.next_death()).metrics[0].value,
            Some(proto::MetricValue::Long(0)),
            "a failed attempt uses none"
        );
        node.connected();
        assert_eq!(decode(&node.next_death()).metrics[0].value, Some(proto::MetricValue::Long(1)));
        let nbirth = node.births();
        assert_eq!(nbirth.len(), 1);
        assert_eq!(decode(&nbirth[0]).seq, Some(0));
        let record = sample("acme/s/a/l/c/press1/speed", ValueType::F64, Some(Value::F64(1480.5)), Quality::Good);
        let first = node.record("gw-r1", &record, 0).unwrap();
        assert_eq!(first.topic, "spBv1.0/plant/DBIRTH/line3/press1");
        let birth = decode(&first);
        assert_eq!(birth.seq, Some(1));
        assert_eq!(birth.metrics[0].name.as_deref(), Some("speed"));
        assert_eq!(birth.metrics[0].datatype, Some(datatype::DOUBLE));
        let alias = birth.metrics[0].alias;
        let again = node.record("gw-r2", &record, 0).unwrap();
        assert_eq!(again.topic, "spBv1.0/plant/DDATA/line3/press1");
        let data = decode(&again);
        assert_eq!((data.seq, data.metrics[0].alias, data.metrics[0].name.clone()), (Some(2), alias, None));
        assert_eq!(data.metrics[0].timestamp, Some(1_795_867_200_000));
        let births = node.births();
        assert_eq!(births.len(), 2, "a rebirth announces every known device");
        assert_eq!(decode(&births[1]).metrics[0].alias, alias, "aliases stay");
    }

    #[test]
    fn seq_wraps_and_history_is_marked() {
        let mut node = EdgeNode::new("g", "n");
        node.births();
        let record = sample("a/d/t", ValueType::U64, Some(Value::U64(1)), Quality::Bad(airlock_model::Reason::Stale));
        let mut seqs = Vec::new();
        for _ in 0..300 {
            seqs.push(decode(&node.record("gw-r1", &record, u64::MAX).unwrap()).seq.unwrap());
        }
        assert_eq!(seqs[254..258], [255, 0, 1, 2]);
        let m = &decode(&node.record("gw-r1", &record, u64::MAX).unwrap()).metrics[0];
        assert_eq!(m.is_historical, Some(true));
        assert_eq!(m.properties.as_ref().unwrap().values[0].int_value, Some(0));
    }

    #[test]
    fn a_signed_tag_keeps_its_datatype_when_its_sign_changes() {
        let mut node = EdgeNode::new("g", "n");
        node.births();
        let mut births = 0;
        for i in 0..100i64 {
            let v = if i % 2 == 0 { -i } else { i };
            let r = sample("a/press1/offset", ValueType::I16, Some(Value::I64(v)), Quality::Good);
            let m = node.record("gw-r1", &r, 0).unwrap();
            if m.topic.contains("DBIRTH") {
                births += 1;
                assert_eq!(decode(&m).metrics[0].datatype, Some(datatype::INT16));
            }
            let value = decode(&m).metrics[0].value.clone();
            assert_eq!(value, Some(proto::MetricValue::Int(u32::from(v as i16 as u16))), "{v} as Int16");
        }
        assert_eq!(births, 1, "born once, at its first value");
    }

    #[test]
    fn configured_types_map_to_sparkplug_datatypes() {
        use proto::MetricValue as M;
        let cases = [
            (ValueType::Bool, Value::Bool(true), datatype::BOOLEAN, Some(M::Boolean(true))),
            (ValueType::U16, Value::U64(65535), datatype::UINT16, Some(M::Int(65535))),
            (ValueType::U16, Value::U64(65536), datatype::UINT16, None),
            (ValueType::I16, Value::I64(-1), datatype::INT16, Some(M::Int(0xffff))),
            (ValueType::U32, Value::U64(7), datatype::UINT32, Some(M::Int(7))),
            (ValueType::I32, Value::I64(-2), datatype::INT32, Some(M::Int(0xffff_fffe))),
            (ValueType::U64, Value::U64(u64::MAX), datatype::UINT64, Some(M::Long(u64::MAX))),
            (ValueType::I64, Value::I64(-1), datatype::INT64, Some(M::Long(u64::MAX))),
            (ValueType::F32, Value::F64(1.5), datatype::FLOAT, Some(M::Float(1.5))),
            (ValueType::F64, Value::F64(1.5), datatype::DOUBLE, Some(M::Double(1.5))),
            (ValueType::Text, Value::Text("x".into()), datatype::STRING, Some(M::String("x".into()))),
        ];
        for (t, v, dt, expected) in cases {
            assert_eq!(datatype_of(t), Some(dt), "{t:?}");
            assert_eq!(metric_value(&v, t), expected, "{t:?} {v:?}");
        }
        assert_eq!(datatype_of(ValueType::Waveform), None);
    }
}
