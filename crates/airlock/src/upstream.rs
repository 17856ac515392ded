//! What goes upstream for now: one record per tag whose value or quality changed since its last
//! record (report by exception without deadband), as a JSON object that a sink completes with
//! its message id. The edge's condensing transforms replace this when they land.

use std::sync::Arc;

use airlock_model::{Quality, Sample, Value};
use serde_json::{Map, Value as Json, json};

use crate::gateway::TagInfo;

pub struct ChangeFilter {
    tags: Arc<Vec<TagInfo>>,
    last: Vec<Option<(Option<Value>, Quality)>>,
}

impl ChangeFilter {
    pub fn new(tags: Arc<Vec<TagInfo>>) -> Self {
        let last = vec![None; tags.len()];
        Self { tags, last }
    }

    /// The upstream payloads of the samples that changed, in order.
    pub fn changed<'s>(&mut self, samples: &'s [Sample]) -> Vec<(&'s Sample, Vec<u8>)> {
        let mut out = Vec::new();
        for s in samples {
            let Some(last) = self.last.get_mut(s.tag.0 as usize) else { continue };
            if last.as_ref().is_some_and(|(v, q)| *v == s.value && *q == s.quality) {
                continue;
            }
            *last = Some((s.value.clone(), s.quality));
            out.push((s, payload(&self.tags[s.tag.0 as usize], s)));
        }
        out
    }
}

/// `{"topic":...,"value":...,"quality":...,"reason":...,"unit":...,"source_time":...,"gateway_time":...}`
fn payload(tag: &TagInfo, s: &Sample) -> Vec<u8> {
    let mut r = Map::new();
    r.insert("topic".into(), json!(tag.path.as_str()));
    r.insert("value".into(), s.value.as_ref().map_or(Json::Null, value_json));
    r.insert("quality".into(), json!(s.quality.word()));
    if let Some(reason) = s.quality.reason() {
        r.insert("reason".into(), json!(reason.to_string()));
    }
    if let Some(unit) = &tag.unit {
        r.insert("unit".into(), json!(unit));
    }
    if let Some(t) = s.source_time {
        r.insert("source_time".into(), json!(t.to_string()));
    }
    r.insert("gateway_time".into(), json!(s.gateway_time.to_string()));
    serde_json::to_vec(&Json::Object(r)).unwrap_or_default()
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::U64(u) => json!(u),
        Value::F64(f) => json!(f),
        Value::Text(t) => json!(t.as_ref()),
    }
}
