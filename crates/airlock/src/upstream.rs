//! What would go upstream, written as JSON Lines: one record per tag whose value or quality
//! changed since the last record of that tag (report by exception, with no deadband yet).
//!
//! Each record carries a message id `<gateway>-<sequence>`, the tag's asset path as its topic,
//! the value, quality (with its reason), unit and both times. Ids are unique within one run
//! only; stable ids across restarts come with the outbox.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_model::{Quality, Sample, Value};
use serde_json::{Map, Value as Json, json};

use crate::gateway::TagInfo;

/// The upstream writer. `none()` writes nothing (for `run` without `--out`).
pub struct Upstream {
    file: Option<(PathBuf, BufWriter<File>)>,
    tags: Arc<Vec<TagInfo>>,
    gateway: String,
    last: Vec<Option<(Option<Value>, Quality)>>,
    sequence: u64,
    failed: bool,
    /// Records reach the file at least this often, so a reader can follow it live.
    flushed_at: Instant,
}

const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

impl Upstream {
    pub fn none() -> Self {
        Self {
            file: None,
            tags: Arc::default(),
            gateway: String::new(),
            last: Vec::new(),
            sequence: 0,
            failed: false,
            flushed_at: Instant::now(),
        }
    }

    pub fn to_file(path: &Path, tags: Arc<Vec<TagInfo>>, gateway: &str) -> std::io::Result<Self> {
        let file = BufWriter::new(File::create(path)?);
        let last = vec![None; tags.len()];
        Ok(Self {
            file: Some((path.to_owned(), file)),
            tags,
            gateway: gateway.to_owned(),
            last,
            sequence: 0,
            failed: false,
            flushed_at: Instant::now(),
        })
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.sequence
    }

    pub fn write(&mut self, samples: &[Sample]) {
        if self.file.is_none() {
            return;
        }
        for s in samples {
            let Some(last) = self.last.get_mut(s.tag.0 as usize) else { continue };
            if last.as_ref().is_some_and(|(v, q)| *v == s.value && *q == s.quality) {
                continue;
            }
            *last = Some((s.value.clone(), s.quality));
            self.sequence += 1;
            let record = self.record(s);
            self.append(&record);
        }
        if self.flushed_at.elapsed() >= FLUSH_INTERVAL {
            self.flush();
        }
    }

    fn record(&self, s: &Sample) -> Json {
        let tag = &self.tags[s.tag.0 as usize];
        let mut r = Map::new();
        r.insert("id".into(), json!(format!("{}-{:010}", self.gateway, self.sequence)));
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
        Json::Object(r)
    }

    fn append(&mut self, record: &Json) {
        let Some((path, file)) = self.file.as_mut() else { return };
        let result = serde_json::to_writer(&mut *file, record)
            .map_err(std::io::Error::from)
            .and_then(|()| file.write_all(b"\n"));
        match result {
            Ok(()) => self.failed = false,
            Err(e) if !self.failed => {
                log::error!("write upstream record to {}: {e}", path.display());
                self.failed = true;
            }
            Err(_) => {}
        }
    }

    pub fn flush(&mut self) {
        self.flushed_at = Instant::now();
        if let Some((path, file)) = self.file.as_mut()
            && let Err(e) = file.flush()
        {
            log::error!("flush {}: {e}", path.display());
        }
    }
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
