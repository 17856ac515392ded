//! Plain JSON payloads: each tag names a topic, a JSON pointer (RFC 6901) to its value and,
//! optionally, one to its time. Pure: bytes in, readings out.

use std::collections::HashMap;

use airlock_config::{DataType, MqttSource, Tag};
use airlock_model::{Quality, Reason, Timestamp, Value};
use serde_json::Value as Json;

/// What one message says about one tag (its index in the device's tags).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub tag: usize,
    pub value: Option<Value>,
    pub quality: Quality,
    pub source_time: Option<Timestamp>,
}

impl Reading {
    pub fn good(tag: usize, value: Value, source_time: Option<Timestamp>) -> Self {
        Self { tag, value: Some(value), quality: Quality::Good, source_time }
    }

    pub fn bad(tag: usize, reason: Reason) -> Self {
        Self { tag, value: None, quality: Quality::Bad(reason), source_time: None }
    }
}

#[derive(Debug, Clone)]
struct Pointer {
    tag: usize,
    value: String,
    time: Option<String>,
    data_type: DataType,
}

/// The JSON tags of a device, by topic.
#[derive(Debug, Clone, Default)]
pub struct JsonTopics {
    topics: HashMap<String, Vec<Pointer>>,
}

impl JsonTopics {
    /// `sources[i]` feeds `tags[i]`; Sparkplug sources are ignored here.
    pub fn new(sources: &[MqttSource], tags: &[Tag]) -> Self {
        let mut topics: HashMap<String, Vec<Pointer>> = HashMap::new();
        for (i, (source, tag)) in sources.iter().zip(tags).enumerate() {
            if let MqttSource::Json { topic, value_pointer, time_pointer } = source {
                topics.entry(topic.clone()).or_default().push(Pointer {
                    tag: i,
                    value: value_pointer.clone(),
                    time: time_pointer.clone(),
                    data_type: tag.data_type,
                });
            }
        }
        Self { topics }
    }

    /// The topics to subscribe to, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.topics.keys().cloned().collect();
        t.sort();
        t
    }

    /// The readings a message gives, and what was wrong with it (for the log) if anything.
    /// A payload that is not JSON makes every tag of its topic bad; a pointer that finds
    /// nothing, or a value of the wrong kind, makes that one tag bad.
    pub fn decode(&self, topic: &str, payload: &[u8]) -> (Vec<Reading>, Option<String>) {
        let Some(pointers) = self.topics.get(topic) else { return (Vec::new(), None) };
        let doc: Json = match serde_json::from_slice(payload) {
            Ok(d) => d,
            Err(e) => {
                let all = pointers.iter().map(|p| Reading::bad(p.tag, Reason::DecodeError)).collect();
                return (all, Some(format!("not JSON ({e})")));
            }
        };
        let mut problem = None;
        let readings = pointers
            .iter()
            .map(|p| {
                let value = doc
                    .pointer(&p.value)
                    .ok_or_else(|| format!("nothing at {:?}", p.value))
                    .and_then(|v| to_value(v, p.data_type));
                let time = match &p.time {
                    None => Ok(None),
                    Some(ptr) => {
                        doc.pointer(ptr).ok_or_else(|| format!("no time at {ptr:?}")).and_then(|t| to_time(t).map(Some))
                    }
                };
                match (value, time) {
                    (Ok(v), Ok(t)) => Reading::good(p.tag, v, t),
                    (Err(why), _) | (_, Err(why)) => {
                        problem.get_or_insert(why);
                        Reading::bad(p.tag, Reason::DecodeError)
                    }
                }
            })
            .collect();
        (readings, problem)
    }
}

/// The first whole numbers past u64 and i64 (exact as doubles): below them, a whole double
/// converts exactly.
const TWO_TO_THE_64: f64 = 18_446_744_073_709_551_616.0;
const TWO_TO_THE_63: f64 = 9_223_372_036_854_775_808.0;

/// A JSON value as a tag of type `ty`. Numbers written as strings are taken for numeric tags
/// (many PLC gateways send `"12.5"`).
pub fn to_value(v: &Json, ty: DataType) -> Result<Value, String> {
    let number = |v: &Json| -> Option<f64> {
        match v {
            Json::Number(n) => n.as_f64(),
            Json::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
    };
    let wrong = || format!("{} is not {}", short(v), type_name(ty));
    match ty {
        DataType::Bool => match v {
            Json::Bool(b) => Ok(Value::Bool(*b)),
            Json::Number(n) if n.as_u64() == Some(0) => Ok(Value::Bool(false)),
            Json::Number(n) if n.as_u64() == Some(1) => Ok(Value::Bool(true)),
            _ => Err(wrong()),
        },
        DataType::U16 | DataType::U32 | DataType::U64 => match v.as_u64() {
            Some(n) => Ok(Value::U64(n)),
            _ => number(v)
                .filter(|x| *x >= 0.0 && x.fract() == 0.0 && *x < TWO_TO_THE_64)
                .map(|x| Value::U64(x as u64))
                .ok_or_else(wrong),
        },
        DataType::I16 | DataType::I32 | DataType::I64 => match v.as_i64() {
            Some(n) => Ok(Value::I64(n)),
            _ => number(v)
                .filter(|x| x.fract() == 0.0 && (-TWO_TO_THE_63..TWO_TO_THE_63).contains(x))
                .map(|x| Value::I64(x as i64))
                .ok_or_else(wrong),
        },
        DataType::F32 | DataType::F64 => number(v).filter(|x| x.is_finite()).map(Value::F64).ok_or_else(wrong),
        DataType::String { length_chars } => {
            let text = match v {
                Json::String(s) => s.clone(),
                Json::Number(_) | Json::Bool(_) => v.to_string(),
                _ => return Err(wrong()),
            };
            let n = text.chars().count();
            if length_chars > 0 && n > usize::from(length_chars) {
                return Err(format!("a text of {n} characters, longer than the tag's length_chars {length_chars}"));
            }
            Ok(Value::Text(text.into()))
        }
        DataType::Waveform { samples, .. } => {
            let Json::Array(items) = v else { return Err(wrong()) };
            if items.len() != usize::from(samples) {
                return Err(format!("a waveform of {} samples, expected {samples}", items.len()));
            }
            let values: Option<Vec<f32>> = items.iter().map(|x| x.as_f64().map(|x| x as f32)).collect();
            values.map(|v| Value::Waveform(v.into())).ok_or_else(wrong)
        }
    }
}

/// A time: epoch milliseconds (a number) or RFC 3339 text.
pub fn to_time(v: &Json) -> Result<Timestamp, String> {
    match v {
        Json::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|x| x.is_finite() && x.abs() < 9.2e18).map(|x| x as i64))
            .map(Timestamp::from_millis)
            .ok_or_else(|| format!("{n} is not epoch milliseconds")),
        Json::String(s) => Timestamp::parse_rfc3339(s).ok_or_else(|| format!("{s:?} is not an RFC 3339 time")),
        other => Err(format!("{} is not a time", short(other))),
    }
}

fn type_name(ty: DataType) -> &'static str {
    match ty {
        DataType::Bool => "a bool",
        DataType::String { .. } => "a string",
        DataType::Waveform { .. } => "a waveform (an array of numbers)",
        DataType::U16 | DataType::U32 | DataType::U64 => "a non-negative integer",
        DataType::I16 | DataType::I32 | DataType::I64 => "an integer",
        DataType::F32 | DataType::F64 => "a number",
    }
}

/// A value for a log line: at most 40 characters of its JSON.
fn short(v: &Json) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::AssetPath;

    fn tag(name: &str, data_type: DataType) -> Tag {
        let path = AssetPath::parse("plant/line").unwrap().child(name).unwrap();
        Tag { name: name.into(), path, data_type, unit: None, historian_resolution: None, edge: Default::default() }
    }

    fn json(topic: &str, value: &str, time: Option<&str>) -> MqttSource {
        MqttSource::Json { topic: topic.into(), value_pointer: value.into(), time_pointer: time.map(Into::into) }
    }

    #[test]
    fn pointers_pick_values_and_times_from_one_message() {
        let sources = [json("m/1", "/speed", Some("/ts")), json("m/1", "/state/running", None), json("m/2", "", None)];
        let tags = [tag("speed", DataType::F64), tag("running", DataType::Bool), tag("count", DataType::U32)];
        let topics = JsonTopics::new(&sources, &tags);
        assert_eq!(topics.topics(), ["m/1", "m/2"]);
        let (r, problem) = topics.decode("m/1", br#"{"speed": 12.5, "ts": 1795867200500, "state": {"running": true}}"#);
        assert_eq!(problem, None);
        assert_eq!(
            r,
            [
                Reading::good(0, Value::F64(12.5), Some(Timestamp::from_millis(1_795_867_200_500))),
                Reading::good(1, Value::Bool(true), None),
            ]
        );
        let (r, _) = topics.decode("m/2", b"42");
        assert_eq!(r, [Reading::good(2, Value::U64(42), None)]);
        assert_eq!(topics.decode("m/3", b"1"), (Vec::new(), None));
    }

    #[test]
    fn garbage_and_missing_values_make_tags_bad_with_a_reason() {
        let sources = [json("m", "/a", None), json("m", "/b", Some("/t"))];
        let tags = [tag("a", DataType::F64), tag("b", DataType::I32)];
        let topics = JsonTopics::new(&sources, &tags);
        let (r, problem) = topics.decode("m", b"\xff\x00{not json");
        assert!(problem.unwrap().starts_with("not JSON"));
        assert_eq!(r, [Reading::bad(0, Reason::DecodeError), Reading::bad(1, Reason::DecodeError)]);
        let (r, problem) = topics.decode("m", br#"{"a": "7.25", "b": 2.5, "t": "2026-11-28T12:00:00Z"}"#);
        assert_eq!(problem.as_deref(), Some("2.5 is not an integer"));
        assert_eq!(r, [Reading::good(0, Value::F64(7.25), None), Reading::bad(1, Reason::DecodeError)]);
        let (r, problem) = topics.decode("m", br#"{"a": 1, "b": -3, "t": "yesterday"}"#);
        assert_eq!(problem.as_deref(), Some("\"yesterday\" is not an RFC 3339 time"));
        assert_eq!(r[1], Reading::bad(1, Reason::DecodeError));
    }

    #[test]
    fn types_convert_or_refuse() {
        assert_eq!(to_value(&Json::from(1), DataType::Bool), Ok(Value::Bool(true)));
        assert!(to_value(&Json::from(2), DataType::Bool).is_err());
        assert!(to_value(&Json::from(-1), DataType::U16).is_err());
        assert_eq!(to_value(&Json::from(-1), DataType::I16), Ok(Value::I64(-1)));
        // Whole numbers past the 64-bit range are refused, not clamped to its end and taken
        // as good; the largest a double holds below it is taken exactly.
        let big = |text: &str| serde_json::from_str::<Json>(text).unwrap();
        assert!(to_value(&big("18500000000000000000.0"), DataType::U64).is_err());
        assert!(to_value(&Json::from("18500000000000000000"), DataType::U64).is_err());
        assert!(to_value(&big("18446744073709551616.0"), DataType::U64).is_err());
        assert_eq!(to_value(&big("18446744073709549568.0"), DataType::U64), Ok(Value::U64(18_446_744_073_709_549_568)));
        assert!(to_value(&big("9223372036854775808.0"), DataType::I64).is_err());
        assert_eq!(to_value(&big("-9223372036854775808.0"), DataType::I64), Ok(Value::I64(i64::MIN)));
        assert_eq!(to_value(&Json::from("ok"), DataType::String { length_chars: 0 }), Ok(Value::Text("ok".into())));
        // A text longer than the tag's length_chars is refused, not carried (it was ignored).
        assert_eq!(to_value(&Json::from("ok"), DataType::String { length_chars: 2 }), Ok(Value::Text("ok".into())));
        let long = to_value(&Json::from("x".repeat(5000)), DataType::String { length_chars: 16 }).unwrap_err();
        assert!(long.contains("5000 characters") && long.contains("length_chars 16"), "{long}");
        let w = DataType::Waveform { samples: 3, rate_hz: 100 };
        assert_eq!(to_value(&serde_json::json!([1, 2.5, -3]), w), Ok(Value::Waveform(vec![1.0, 2.5, -3.0].into())));
        assert!(to_value(&serde_json::json!([1, 2]), w).unwrap_err().contains("expected 3"));
    }
}
