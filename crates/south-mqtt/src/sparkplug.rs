//! Sparkplug B from the host's side, read-only: follows one edge node through its births (which
//! name every metric and give its alias and datatype), data (metrics by alias or name) and deaths
//! (the node's or one device's tags go bad). Pure: topic and bytes in, readings out.
//!
//! A host may ask an edge node for a rebirth (an NCMD); airlock never publishes on the OT side,
//! so it cannot. Data that names its metrics is taken before any birth; data by alias waits for
//! the node's next birth, and is counted as undecodable until then.

use std::collections::HashMap;

use airlock_config::MqttSource;
use airlock_model::{Quality, Reason, Timestamp, Value};
use airlock_sparkplug::datatype as dt;
use airlock_sparkplug::proto::{Metric, MetricValue, Payload};
use prost::Message as _;

use crate::json::Reading;

/// What a birth taught about one node or device: metric name and datatype by alias.
#[derive(Debug, Default)]
struct Birth {
    aliases: HashMap<u64, (String, u32)>,
    types: HashMap<String, u32>,
}

/// One edge node of one group, and which tags read which of its metrics.
#[derive(Debug)]
pub struct EdgeNode {
    group: String,
    node: String,
    /// device -> metric -> tag indices; device `None` for the node's own metrics.
    tags: HashMap<Option<String>, HashMap<String, Vec<usize>>>,
    births: HashMap<Option<String>, Birth>,
    /// The `bdSeq` of the node's last NBIRTH: an NDEATH with another one is an old session's will.
    bd_seq: Option<u64>,
}

/// The message types of the Sparkplug topic namespace that a host reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    NBirth,
    NData,
    NDeath,
    DBirth,
    DData,
    DDeath,
}

impl EdgeNode {
    /// `sources[i]` feeds tag `i`; JSON sources are ignored here.
    pub fn new(group: &str, node: &str, sources: &[MqttSource]) -> Self {
        let mut tags: HashMap<Option<String>, HashMap<String, Vec<usize>>> = HashMap::new();
        for (i, s) in sources.iter().enumerate() {
            if let MqttSource::Sparkplug { device, metric } = s {
                tags.entry(device.clone()).or_default().entry(metric.clone()).or_default().push(i);
            }
        }
        Self { group: group.into(), node: node.into(), tags, births: HashMap::new(), bd_seq: None }
    }

    /// The one subscription that covers the node's and its devices' messages.
    pub fn filter(&self) -> String {
        format!("spBv1.0/{}/+/{}/#", self.group, self.node)
    }

    /// The readings a message gives; `Err` says why the message could not be used (the tags
    /// it would have fed, when known, come back bad). Messages of other types (commands) give
    /// nothing.
    pub fn on_message(&mut self, topic: &str, payload: &[u8]) -> (Vec<Reading>, Option<String>) {
        let Some((kind, device)) = self.parse_topic(topic) else { return (Vec::new(), None) };
        let decoded = match metrics_in(payload) {
            Err(at) => Err(format!("no protobuf field past byte {at}")),
            Ok(n) if n > METRICS_MAX => Err(format!("{n} metrics, more than the {METRICS_MAX} taken in one payload")),
            Ok(_) => Payload::decode(payload).map_err(|e| e.to_string()),
        };
        let payload = match decoded {
            Ok(p) => p,
            Err(e) => {
                let bad = match kind {
                    Kind::DData | Kind::DBirth => self.tags_of(device.as_deref(), Reason::DecodeError),
                    _ => self.tags_of(None, Reason::DecodeError),
                };
                return (bad, Some(format!("not a Sparkplug B payload ({e})")));
            }
        };
        match kind {
            Kind::NBirth => {
                self.births.clear();
                self.bd_seq = bd_seq(&payload);
                self.birth(None, &payload)
            }
            Kind::DBirth => self.birth(device, &payload),
            Kind::NData | Kind::DData => self.data(device, &payload),
            Kind::NDeath => {
                if let (Some(theirs), Some(ours)) = (bd_seq(&payload), self.bd_seq)
                    && theirs != ours
                {
                    return (Vec::new(), None);
                }
                self.births.clear();
                let all = self
                    .tags
                    .values()
                    .flat_map(HashMap::values)
                    .flatten()
                    .map(|&t| Reading::bad(t, Reason::SourceOffline))
                    .collect();
                (all, None)
            }
            Kind::DDeath => {
                self.births.remove(&device);
                (self.tags_of(device.as_deref(), Reason::SourceOffline), None)
            }
        }
    }

    fn parse_topic(&self, topic: &str) -> Option<(Kind, Option<String>)> {
        let mut parts = topic.split('/');
        if parts.next()? != "spBv1.0" || parts.next()? != self.group {
            return None;
        }
        let kind = parts.next()?;
        if parts.next()? != self.node {
            return None;
        }
        let device = parts.next().map(str::to_owned);
        let kind = match (kind, &device) {
            ("NBIRTH", None) => Kind::NBirth,
            ("NDATA", None) => Kind::NData,
            ("NDEATH", None) => Kind::NDeath,
            ("DBIRTH", Some(_)) => Kind::DBirth,
            ("DDATA", Some(_)) => Kind::DData,
            ("DDEATH", Some(_)) => Kind::DDeath,
            _ => return None,
        };
        Some((kind, device))
    }

    fn tags_of(&self, device: Option<&str>, reason: Reason) -> Vec<Reading> {
        self.tags
            .iter()
            .filter(|(d, _)| d.as_deref() == device)
            .flat_map(|(_, metrics)| metrics.values().flatten().map(|&t| Reading::bad(t, reason)))
            .collect()
    }

    /// A birth teaches aliases and datatypes; only those of configured devices and metrics are
    /// kept, so what a publisher announces cannot grow memory past the config.
    fn birth(&mut self, device: Option<String>, payload: &Payload) -> (Vec<Reading>, Option<String>) {
        let Some(ours) = self.tags.get(&device) else { return (Vec::new(), None) };
        let mut birth = Birth::default();
        for m in &payload.metrics {
            let (Some(name), Some(datatype)) = (&m.name, m.datatype) else { continue };
            if !ours.contains_key(name) {
                continue;
            }
            if let Some(alias) = m.alias {
                birth.aliases.insert(alias, (name.clone(), datatype));
            }
            birth.types.insert(name.clone(), datatype);
        }
        self.births.insert(device.clone(), birth);
        self.data(device, payload)
    }

    fn data(&self, device: Option<String>, payload: &Payload) -> (Vec<Reading>, Option<String>) {
        let birth = self.births.get(&device);
        let ours = self.tags.get(&device);
        let mut problem = None;
        let mut readings = Vec::new();
        for m in &payload.metrics {
            let known = match (&m.name, m.alias) {
                (Some(name), _) => Some((name.as_str(), m.datatype.or_else(|| birth?.types.get(name).copied()))),
                (None, Some(alias)) => birth.and_then(|b| b.aliases.get(&alias)).map(|(n, t)| (n.as_str(), Some(*t))),
                (None, None) => None,
            };
            let Some((name, datatype)) = known else {
                problem.get_or_insert_with(|| match m.alias {
                    Some(a) => format!("metric alias {a} before any birth that names it"),
                    None => "a metric with neither name nor alias".to_owned(),
                });
                continue;
            };
            let Some(tags) = ours.and_then(|metrics| metrics.get(name)) else { continue };
            let time = m.timestamp.or(payload.timestamp).map(|t| Timestamp::from_millis(t as i64));
            let reading = |tag: usize| match metric_value(m, datatype) {
                Ok(value) => Reading { tag, value: Some(value), quality: quality(m), source_time: time },
                Err(reason) => Reading { tag, value: None, quality: Quality::Bad(reason), source_time: time },
            };
            readings.extend(tags.iter().map(|&t| reading(t)));
        }
        (readings, problem)
    }
}

/// Metrics decoded from one payload, at most. Each decodes into some 150 bytes however few it
/// takes on the wire (an empty one takes two), so a megabyte of them would take 75 MB to decode;
/// this many take about 3 MB. A birth of a large edge node has some thousands.
const METRICS_MAX: usize = 20_000;

/// The metrics (field 2) at the top level of a protobuf payload, counted without decoding them;
/// `Err` with the offset of the first field that is not one of a Sparkplug payload's kinds
/// (a group, which prost would skip unseen, or bytes that are not protobuf).
fn metrics_in(bytes: &[u8]) -> Result<usize, usize> {
    fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let (mut at, mut metrics) = (0usize, 0usize);
    while at < bytes.len() {
        let field = at;
        let Some(key) = varint(bytes, &mut at) else { return Err(field) };
        let skip = match key & 7 {
            0 => varint(bytes, &mut at).map(|_| 0),
            1 => Some(8),
            2 => varint(bytes, &mut at).and_then(|n| usize::try_from(n).ok()),
            5 => Some(4),
            _ => None,
        };
        let Some(end) = skip.and_then(|n| at.checked_add(n)).filter(|end| *end <= bytes.len()) else {
            return Err(field);
        };
        if key >> 3 == 2 && key & 7 == 2 {
            metrics += 1;
        }
        at = end;
    }
    Ok(metrics)
}

/// The `bdSeq` metric of a birth or death: which connection of the edge node it belongs to.
fn bd_seq(payload: &Payload) -> Option<u64> {
    payload.metrics.iter().find(|m| m.name.as_deref() == Some("bdSeq")).and_then(|m| match m.value {
        Some(MetricValue::Long(v)) => Some(v),
        Some(MetricValue::Int(v)) => Some(u64::from(v)),
        _ => None,
    })
}

/// A metric's value in our terms, read by its datatype. Signed integers travel as their two's
/// complement in the unsigned fields; a null metric is bad with OPC UA's generic Bad.
fn metric_value(m: &Metric, datatype: Option<u32>) -> Result<Value, Reason> {
    if m.is_null == Some(true) {
        return Err(Reason::SourceStatus(0x8000));
    }
    let value = m.value.as_ref().ok_or(Reason::DecodeError)?;
    Ok(match (datatype, value) {
        (Some(dt::INT8), MetricValue::Int(v)) => Value::I64(i64::from(*v as u8 as i8)),
        (Some(dt::INT16), MetricValue::Int(v)) => Value::I64(i64::from(*v as u16 as i16)),
        (Some(dt::INT32), MetricValue::Int(v)) => Value::I64(i64::from(*v as i32)),
        (Some(dt::INT64), MetricValue::Long(v)) => Value::I64(*v as i64),
        (_, MetricValue::Int(v)) => Value::U64(u64::from(*v)),
        (_, MetricValue::Long(v)) => Value::U64(*v),
        (_, MetricValue::Float(v)) if v.is_finite() => Value::F64(f64::from(*v)),
        (_, MetricValue::Double(v)) if v.is_finite() => Value::F64(*v),
        (_, MetricValue::Float(_) | MetricValue::Double(_)) => return Err(Reason::NotFinite),
        (_, MetricValue::Boolean(b)) => Value::Bool(*b),
        (_, MetricValue::String(s)) => Value::Text(s.as_str().into()),
    })
}

/// The `Quality` property, when a metric has one (OPC DA codes: 192 good, 64 uncertain, 0 bad).
fn quality(m: &Metric) -> Quality {
    let code = m.properties.as_ref().and_then(|p| {
        let i = p.keys.iter().position(|k| k == "Quality")?;
        p.values.get(i)?.int_value
    });
    match code {
        None => Quality::Good,
        Some(q) if q >= 192 => Quality::Good,
        Some(q) if q >= 64 => Quality::Uncertain(Reason::SourceStatus(0x4000)),
        Some(_) => Quality::Bad(Reason::SourceStatus(0x8000)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: Option<&str>, alias: Option<u64>, datatype: Option<u32>, value: MetricValue) -> Metric {
        Metric {
            name: name.map(Into::into),
            alias,
            datatype,
            value: Some(value),
            timestamp: Some(1_000),
            ..Metric::default()
        }
    }

    fn bytes(metrics: Vec<Metric>) -> Vec<u8> {
        Payload { timestamp: Some(1_000), metrics, seq: Some(0) }.encode_to_vec()
    }

    fn sp(device: Option<&str>, metric: &str) -> MqttSource {
        MqttSource::Sparkplug { device: device.map(Into::into), metric: metric.into() }
    }

    #[test]
    fn a_payload_of_too_many_metrics_is_refused_before_it_is_decoded() {
        // A megabyte of empty metrics (two bytes each) would decode into some 75 MB.
        let mut node = EdgeNode::new("plant", "edge1", &[sp(None, "Speed")]);
        let flood: Vec<u8> = [0x12, 0x00].repeat(1 << 19);
        let (readings, problem) = node.on_message("spBv1.0/plant/NDATA/edge1", &flood);
        assert_eq!(readings.len(), 1);
        assert_eq!(readings[0].quality, Quality::Bad(Reason::DecodeError));
        assert!(problem.as_deref().is_some_and(|p| p.contains("524288 metrics, more than")), "{problem:?}");
        // Counted exactly, whatever else the payload holds.
        let m = metric(Some("Speed"), None, Some(dt::FLOAT), MetricValue::Float(2.5));
        let many = bytes(vec![m.clone(); METRICS_MAX]);
        assert_eq!(metrics_in(&many), Ok(METRICS_MAX));
        let (readings, problem) = node.on_message("spBv1.0/plant/NDATA/edge1", &many);
        assert_eq!((readings.len(), problem), (METRICS_MAX, None));
        assert_eq!(metrics_in(&bytes(vec![m; METRICS_MAX + 1])), Ok(METRICS_MAX + 1));
        // A group (wire types 3 and 4, which prost skips) first: the scan cannot see past it,
        // so the payload is refused rather than counted as holding no metric.
        let hidden: Vec<u8> = [0x33, 0x34].into_iter().chain([0x12, 0x00].repeat(1 << 19)).collect();
        let (readings, problem) = node.on_message("spBv1.0/plant/NDATA/edge1", &hidden);
        assert_eq!(readings[0].quality, Quality::Bad(Reason::DecodeError));
        assert!(problem.as_deref().is_some_and(|p| p.contains("past byte 0")), "{problem:?}");
        assert_eq!(metrics_in(&[0x12, 0xff, 0xff]), Err(0), "a length past the end");
        assert_eq!(metrics_in(&[]), Ok(0));
    }

    #[test]
    fn births_of_devices_and_metrics_not_configured_are_not_kept() {
        // A hostile publisher announcing a million devices must not grow memory: before, every
        // DBIRTH was kept, whatever its device.
        let mut node = EdgeNode::new("plant", "edge1", &[sp(Some("press1"), "Speed")]);
        for i in 0..1000 {
            let birth = bytes(vec![metric(Some("Speed"), Some(1), Some(dt::FLOAT), MetricValue::Float(1.0))]);
            let (readings, problem) = node.on_message(&format!("spBv1.0/plant/DBIRTH/edge1/stranger{i}"), &birth);
            assert!(readings.is_empty() && problem.is_none());
        }
        let many: Vec<Metric> = (0..5000)
            .map(|i| metric(Some(&format!("m{i}")), Some(i), Some(dt::FLOAT), MetricValue::Float(1.0)))
            .chain([metric(Some("Speed"), Some(99_999), Some(dt::FLOAT), MetricValue::Float(2.0))])
            .collect();
        let (readings, _) = node.on_message("spBv1.0/plant/DBIRTH/edge1/press1", &bytes(many));
        assert_eq!(readings.len(), 1, "the configured metric is read");
        assert_eq!(node.births.len(), 1, "only the configured device's birth is kept");
        let kept = &node.births[&Some("press1".to_owned())];
        assert_eq!((kept.aliases.len(), kept.types.len()), (1, 1), "only the configured metric is kept");
    }

    #[test]
    fn births_teach_aliases_that_data_then_uses_and_deaths_mark_bad() {
        let sources = [sp(None, "Temp"), sp(Some("press1"), "Speed"), sp(Some("press1"), "Offset")];
        let mut node = EdgeNode::new("plant", "edge1", &sources);
        assert_eq!(node.filter(), "spBv1.0/plant/+/edge1/#");
        let nbirth = bytes(vec![
            metric(Some("bdSeq"), None, Some(dt::INT64), MetricValue::Long(7)),
            metric(Some("Temp"), Some(1), Some(dt::FLOAT), MetricValue::Float(21.5)),
        ]);
        let (r, p) = node.on_message("spBv1.0/plant/NBIRTH/edge1", &nbirth);
        assert_eq!(p, None);
        assert_eq!(r, [Reading::good(0, Value::F64(21.5), Some(Timestamp::from_millis(1_000)))]);
        // Data by alias before the device's birth cannot be placed.
        let ddata = bytes(vec![metric(None, Some(2), None, MetricValue::Int(0xffff_fffe))]);
        let (r, p) = node.on_message("spBv1.0/plant/DDATA/edge1/press1", &ddata);
        assert!(r.is_empty());
        assert_eq!(p.as_deref(), Some("metric alias 2 before any birth that names it"));
        let dbirth = bytes(vec![
            metric(Some("Speed"), Some(2), Some(dt::INT32), MetricValue::Int(5)),
            metric(Some("Offset"), Some(3), Some(dt::INT8), MetricValue::Int(0xff)),
        ]);
        let (r, _) = node.on_message("spBv1.0/plant/DBIRTH/edge1/press1", &dbirth);
        assert_eq!(r.len(), 2);
        assert!(r.contains(&Reading::good(2, Value::I64(-1), Some(Timestamp::from_millis(1_000)))));
        let (r, p) = node.on_message("spBv1.0/plant/DDATA/edge1/press1", &ddata);
        assert_eq!((r, p), (vec![Reading::good(1, Value::I64(-2), Some(Timestamp::from_millis(1_000)))], None));
        // Commands and other nodes are not ours.
        assert_eq!(node.on_message("spBv1.0/plant/NCMD/edge1", &nbirth), (Vec::new(), None));
        assert_eq!(node.on_message("spBv1.0/plant/NBIRTH/edge2", &nbirth), (Vec::new(), None));
        // A device death marks its tags bad; a stale node death (another bdSeq) is ignored.
        let (r, _) = node.on_message("spBv1.0/plant/DDEATH/edge1/press1", &bytes(vec![]));
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.quality == Quality::Bad(Reason::SourceOffline) && r.tag != 0));
        let old = bytes(vec![metric(Some("bdSeq"), None, Some(dt::INT64), MetricValue::Long(6))]);
        assert_eq!(node.on_message("spBv1.0/plant/NDEATH/edge1", &old), (Vec::new(), None));
        let death = bytes(vec![metric(Some("bdSeq"), None, Some(dt::INT64), MetricValue::Long(7))]);
        let (r, _) = node.on_message("spBv1.0/plant/NDEATH/edge1", &death);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn garbage_nulls_and_qualities() {
        let sources = [sp(None, "A")];
        let mut node = EdgeNode::new("g", "n", &sources);
        let (r, p) = node.on_message("spBv1.0/g/NDATA/n", b"\xff\xff\xff\xff garbage");
        assert_eq!(r, [Reading::bad(0, Reason::DecodeError)]);
        assert!(p.unwrap().starts_with("not a Sparkplug B payload"));
        let mut null = metric(Some("A"), None, Some(dt::DOUBLE), MetricValue::Double(0.0));
        null.is_null = Some(true);
        let (r, _) = node.on_message("spBv1.0/g/NDATA/n", &bytes(vec![null]));
        assert_eq!(r[0].quality, Quality::Bad(Reason::SourceStatus(0x8000)));
        let mut uncertain = metric(Some("A"), None, Some(dt::DOUBLE), MetricValue::Double(3.0));
        uncertain.properties = Some(airlock_sparkplug::proto::PropertySet {
            keys: vec!["Quality".into()],
            values: vec![airlock_sparkplug::proto::PropertyValue { r#type: Some(dt::INT32), int_value: Some(64) }],
        });
        let (r, _) = node.on_message("spBv1.0/g/NDATA/n", &bytes(vec![uncertain]));
        assert_eq!(
            (r[0].value.clone(), r[0].quality),
            (Some(Value::F64(3.0)), Quality::Uncertain(Reason::SourceStatus(0x4000)))
        );
    }
}
