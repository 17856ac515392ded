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
//!   announced in every NBIRTH) holding the event's JSON.
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

use airlock_model::Timestamp;
use serde_json::Value;

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

/// What a record says, read from its JSON.
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

    /// The message carrying one outbox record: a DDATA (or NDATA for airlock's events), or a
    /// DBIRTH when the record brings a metric its device has not announced.
    pub fn record(&mut self, json: &[u8], historical_before_ms: u64) -> Option<Message> {
        let r = reading(json)?;
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

/// Device, metric, time, value and quality of an upstream record's JSON.
fn reading(json: &[u8]) -> Option<Reading> {
    let v: Value = serde_json::from_slice(json).ok()?;
    let topic = v["topic"].as_str()?;
    let time_ms = v["gateway_time"]
        .as_str()
        .and_then(Timestamp::parse_rfc3339)
        .map_or_else(now_ms, |t| t.as_millis().max(0) as u64);
    if topic.starts_with("_airlock/events/") {
        return Some(Reading {
            device: None,
            metric: EVENT_METRIC.to_owned(),
            time_ms,
            value: Some(proto::MetricValue::String(String::from_utf8_lossy(json).into_owned())),
            datatype: datatype::STRING,
            quality: 192,
        });
    }
    let mut segments = topic.rsplitn(3, '/');
    let metric = segments.next()?.to_owned();
    let device = segments.next()?.to_owned();
    let quality = match v["quality"].as_str() {
        Some("good") => 192,
        Some("uncertain") => 64,
        _ => 0,
    };
    let (value, datatype) = match &v["value"] {
        Value::Bool(b) => (Some(proto::MetricValue::Boolean(*b)), datatype::BOOLEAN),
        Value::Number(n) if n.is_u64() => (n.as_u64().map(proto::MetricValue::Long), datatype::UINT64),
        Value::Number(n) if n.is_i64() => (n.as_i64().map(|i| proto::MetricValue::Long(i as u64)), datatype::INT64),
        Value::Number(n) => (n.as_f64().map(proto::MetricValue::Double), datatype::DOUBLE),
        Value::String(s) => (Some(proto::MetricValue::String(s.clone())), datatype::STRING),
        _ => (None, datatype::DOUBLE),
    };
    Some(Reading { device: Some(device), metric, time_ms, value, datatype, quality })
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    fn decode(m: &Message) -> proto::Payload {
        proto::Payload::decode(&m.payload[..]).unwrap()
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
        let record = br#"{"topic":"acme/s/a/l/c/press1/speed","value":1480.5,"quality":"good","gateway_time":"2026-11-28T12:00:00.000Z"}"#;
        let first = node.record(record, 0).unwrap();
        assert_eq!(first.topic, "spBv1.0/plant/DBIRTH/line3/press1");
        let birth = decode(&first);
        assert_eq!(birth.seq, Some(1));
        assert_eq!(birth.metrics[0].name.as_deref(), Some("speed"));
        assert_eq!(birth.metrics[0].datatype, Some(datatype::DOUBLE));
        let alias = birth.metrics[0].alias;
        let again = node.record(record, 0).unwrap();
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
        let record = br#"{"topic":"a/d/t","value":1,"quality":"bad","gateway_time":"2026-11-28T12:00:00.000Z"}"#;
        let mut seqs = Vec::new();
        for _ in 0..300 {
            seqs.push(decode(&node.record(record, u64::MAX).unwrap()).seq.unwrap());
        }
        assert_eq!(seqs[254..258], [255, 0, 1, 2]);
        let m = &decode(&node.record(record, u64::MAX).unwrap()).metrics[0];
        assert_eq!(m.is_historical, Some(true));
        assert_eq!(m.properties.as_ref().unwrap().values[0].int_value, Some(0));
    }
}
