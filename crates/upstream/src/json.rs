//! The JSON a record becomes on the wire (JSON Lines, MQTT Unified Namespace, HTTP, Kafka):
//! one object, the message id first (`"id":"<gateway>-<record id>"`), then the record's fields
//! in name order. This is the shape documented in README.md, and `tests/golden/` holds one
//! rendering of every variant. Numbers are written as serde_json writes them (shortest form that
//! reads back the same; NaN and infinities as `null`), strings escaped as serde_json escapes them.

use std::borrow::Cow;
use std::io::Write as _;

use airlock_model::{Quality, Timestamp, Value};

use crate::Upstream;

/// One field's value.
enum Field<'a> {
    Str(Cow<'a, str>),
    Time(Timestamp),
    F64(f64),
    OptF64(Option<f64>),
    U64(u64),
    Value(Option<&'a Value>),
}

/// Appends `record` as a JSON object with the message `id` first.
pub fn render(id: &str, record: &Upstream, out: &mut Vec<u8>) {
    if let Upstream::Legacy(l) = record {
        return legacy(id, &l.json, out);
    }
    let topic = record.topic();
    let mut fields = fields(record);
    fields.insert(0, ("topic", Field::Str(topic.into())));
    // Name order, as the records were always written; a later field of the same name wins.
    fields.sort_by(|a, b| a.0.cmp(b.0));
    fields.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    out.extend_from_slice(b"{\"id\":");
    string(id, out);
    for (name, value) in &fields {
        out.push(b',');
        string(name, out);
        out.push(b':');
        field(value, out);
    }
    out.push(b'}');
}

/// `render` into a new vector.
pub fn to_vec(id: &str, record: &Upstream) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    render(id, record, &mut out);
    out
}

fn fields(record: &Upstream) -> Vec<(&str, Field<'_>)> {
    use Field::*;
    let time = |t: Timestamp| Time(t);
    match record {
        Upstream::Sample(s) => {
            let mut f = vec![
                ("value", Value(s.value.as_ref())),
                ("quality", Str(s.quality.word().into())),
                ("gateway_time", time(s.gateway_time)),
            ];
            quality_reason(s.quality, &mut f);
            if let Some(unit) = &s.unit {
                f.push(("unit", Str(unit.as_ref().into())));
            }
            if let Some(t) = s.source_time {
                f.push(("source_time", time(t)));
            }
            f
        }
        Upstream::Aggregate(a) => {
            let mut f = vec![
                ("value", OptF64(a.avg)),
                ("quality", Str(if a.count > 0 { "good" } else { "bad" }.into())),
                ("min", OptF64(a.min)),
                ("max", OptF64(a.max)),
                ("avg", OptF64(a.avg)),
                ("stddev", OptF64(a.stddev)),
                ("first", OptF64(a.first)),
                ("last", OptF64(a.last)),
                ("twa", OptF64(a.twa)),
                ("count", U64(a.count)),
                ("start", time(a.start)),
                ("gateway_time", time(a.end)),
            ];
            if let Some(unit) = &a.unit {
                f.push(("unit", Str(unit.as_ref().into())));
            }
            f
        }
        Upstream::Production(p) => vec![
            ("value", U64(p.parts)),
            ("quality", Str("good".into())),
            ("unit", Str("parts".into())),
            ("shift_parts", U64(p.shift_parts)),
            ("start", time(p.start)),
            ("end", time(p.end)),
            ("gateway_time", time(p.end)),
        ],
        Upstream::Oee(o) => vec![
            ("value", F64(o.oee)),
            ("quality", Str("good".into())),
            ("availability", F64(o.availability)),
            ("performance", F64(o.performance)),
            ("quality_rate", F64(o.quality)),
            ("parts", U64(o.parts)),
            ("rejects", U64(o.rejects)),
            ("running_s", F64(o.running_s)),
            ("shift_start", time(o.shift_start)),
            ("gateway_time", time(o.time)),
        ],
        Upstream::Event(e) => {
            let mut f = event(&e.kind, e.severity.word(), e.state.word(), e.message.as_ref().into());
            f.push(("asset", Str(e.asset.as_str().into())));
            f.extend(e.body.iter().map(|(k, v)| (k.as_ref(), F64(*v))));
            f.push(("gateway_time", time(e.time)));
            f
        }
        Upstream::Gap(g) => {
            let mut f = event(g.cause.kind(), "warning", "once", g.message().into());
            f.extend([
                ("class", Str(g.class.as_ref().into())),
                ("records", U64(g.records)),
                ("first_id", Str(g.first_id.as_ref().into())),
                ("last_id", Str(g.last_id.as_ref().into())),
                ("from", time(g.from)),
                ("to", time(g.to)),
                ("gateway_time", time(g.time)),
            ]);
            f
        }
        Upstream::Recovered(r) => {
            let mut f = event("outbox_recovered", "warning", "once", r.message().into());
            f.extend([
                ("corrupt_records", U64(r.corrupt_records)),
                ("torn_bytes", U64(r.torn_bytes)),
                ("gateway_time", time(r.time)),
            ]);
            f
        }
        Upstream::Undecodable(u) => {
            let mut f = event("outbox_undecodable", "warning", "once", u.message().into());
            f.extend([("record_id", Str(u.record_id.as_ref().into())), ("gateway_time", time(u.time))]);
            f
        }
        Upstream::Legacy(_) => Vec::new(),
    }
}

/// The fields every event has (its time goes last: it wins over a body number of its name).
fn event<'a>(kind: &'a str, severity: &'a str, state: &'a str, message: Cow<'a, str>) -> Vec<(&'a str, Field<'a>)> {
    vec![
        ("kind", Field::Str(kind.into())),
        ("severity", Field::Str(severity.into())),
        ("state", Field::Str(state.into())),
        ("message", Field::Str(message)),
    ]
}

fn quality_reason<'a>(q: Quality, f: &mut Vec<(&'a str, Field<'a>)>) {
    if let Some(reason) = q.reason() {
        f.push(("reason", Field::Str(reason.to_string().into())));
    }
}

fn field(f: &Field<'_>, out: &mut Vec<u8>) {
    match f {
        Field::Str(s) => string(s, out),
        // RFC 3339 needs no escaping.
        Field::Time(t) => {
            let _ = write!(out, "\"{t}\"");
        }
        Field::F64(v) => number(*v, out),
        Field::OptF64(None) => out.extend_from_slice(b"null"),
        Field::OptF64(Some(v)) => number(*v, out),
        Field::U64(v) => {
            let _ = write!(out, "{v}");
        }
        Field::Value(v) => value(*v, out),
    }
}

fn value(v: Option<&Value>, out: &mut Vec<u8>) {
    match v {
        None => out.extend_from_slice(b"null"),
        Some(Value::Bool(b)) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Some(Value::I64(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::U64(u)) => {
            let _ = write!(out, "{u}");
        }
        Some(Value::F64(f)) => number(*f, out),
        Some(Value::Text(t)) => string(t, out),
        // A waveform never goes upstream whole; what it shows does (bearing events).
        Some(Value::Waveform(w)) => {
            let _ = write!(out, "{{\"samples\":{}}}", w.len());
        }
    }
}

/// A number as serde_json writes it (`null` when not finite).
fn number(v: f64, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &v);
}

/// A string, quoted and escaped as serde_json does.
fn string(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A legacy record: its JSON with the message id put first.
fn legacy(id: &str, json: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":");
    string(id, out);
    let body = json.trim().strip_prefix('{').unwrap_or(json).trim_start();
    if !body.starts_with('}') {
        out.push(b',');
    }
    out.extend_from_slice(body.as_bytes());
}
