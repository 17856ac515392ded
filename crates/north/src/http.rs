//! The HTTP sink: an ERP web hook receiving JSON batches.
//!
//! Each delivery POSTs a JSON array of records (each with its message id first) to the URL,
//! over rustls for `https://`, with the header `Idempotency-Key: <gateway>-<first id>..<last id>`
//! so the receiver can drop a batch it has already taken (every record also carries its own id).
//! - a 2xx answer acknowledges the batch;
//! - a 5xx, 408 or 429 answer, a timeout or a connection failure is retried with backoff
//!   (the batch stays in the outbox, nothing is lost);
//! - any other 4xx means the receiver will never take this batch: it is parked as a dead letter
//!   (appended to `<data_dir>/deadletter/<sink>.jsonl` with the status and the answer's first
//!   kilobyte), counted and logged, and the sink moves on. Nothing is retried forever.
//!
//! Only the configured classes are sent (events by default); the sink acknowledges the others
//! without sending them.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use airlock_config::HttpSink as HttpConfig;
use airlock_store::{Class, OutboxRecord};

use crate::{Limits, Sent, Sink, SinkError, SinkHealth, message_id, wire_json};

pub struct HttpSink {
    name: String,
    gateway: String,
    config: HttpConfig,
    classes: Vec<Class>,
    agent: ureq::Agent,
    token: Option<String>,
    dead_letters: PathBuf,
    health: Arc<SinkHealth>,
}

impl HttpSink {
    /// A sink `name` of `gateway`, parking dead letters under `data_dir/deadletter/`.
    pub fn new(
        name: &str,
        gateway: &str,
        config: &HttpConfig,
        data_dir: &Path,
        health: Arc<SinkHealth>,
    ) -> Result<Self, String> {
        let token = match &config.bearer_token_env {
            Some(var) => Some(std::env::var(var).map_err(|_| format!("the token variable {var} is not set"))?),
            None => None,
        };
        let agent_config =
            ureq::Agent::config_builder().timeout_global(Some(config.timeout)).http_status_as_error(false).build();
        let classes = Class::ALL.into_iter().filter(|c| config.classes.iter().any(|n| n == c.name())).collect();
        Ok(Self {
            name: name.to_owned(),
            gateway: gateway.to_owned(),
            config: config.clone(),
            classes,
            agent: agent_config.new_agent(),
            token,
            dead_letters: data_dir.join("deadletter").join(format!("{name}.jsonl")),
            health,
        })
    }

    fn body(&self, records: &[&OutboxRecord]) -> Vec<u8> {
        let mut body = b"[".to_vec();
        for (i, r) in records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            wire_json(&self.gateway, r, &mut body);
        }
        body.push(b']');
        body
    }

    /// Appends the refused batch to the dead-letter file.
    fn park(&self, records: &[&OutboxRecord], status: u16, answer: &str) -> Result<(), SinkError> {
        let io = |action, source| SinkError::Io { action, target: self.dead_letters.display().to_string(), source };
        if let Some(dir) = self.dead_letters.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&self.dead_letters).map_err(|e| io("open", e))?;
        // One JSON object per line; the records as the body that was refused, not parsed again.
        let head = serde_json::json!({
            "status": status,
            "answer": answer,
            "first_id": message_id(&self.gateway, records[0]),
            "last_id": message_id(&self.gateway, records[records.len() - 1]),
        })
        .to_string();
        let mut line = head.into_bytes();
        line.pop(); // the closing brace: the records follow
        line.extend_from_slice(b",\"records\":");
        line.extend_from_slice(&self.body(records));
        line.extend_from_slice(b"}\n");
        f.write_all(&line).and_then(|()| f.sync_data()).map_err(|e| io("append to", e))
    }
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn limits(&self) -> Limits {
        let batch = self.config.batch_records_max;
        Limits { batch_max: batch, window: batch, ..Limits::default() }
    }

    async fn send(&mut self, records: &[OutboxRecord]) -> Result<Sent, SinkError> {
        self.post(records).map(|()| Sent::Delivered)
    }
}

impl HttpSink {
    /// POSTs the records of the wanted classes as one batch; `Ok` once the receiver took it
    /// or refused it for good (then it is parked as dead letters).
    fn post(&mut self, records: &[OutboxRecord]) -> Result<(), SinkError> {
        let wanted: Vec<&OutboxRecord> = records.iter().filter(|r| self.classes.contains(&r.id.class)).collect();
        let (Some(first), Some(last)) = (wanted.first(), wanted.last()) else { return Ok(()) };
        let key = format!("{}-{}..{}", self.gateway, first.id, last.id);
        let mut request = self
            .agent
            .post(&self.config.url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &key);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let failed = |what: String| SinkError::Rejected { target: self.config.url.clone(), what };
        let mut response = request.send(&self.body(&wanted)[..]).map_err(|e| failed(e.to_string()))?;
        let status = response.status().as_u16();
        let mut answer = String::new();
        let _ = response.body_mut().as_reader().take(1024).read_to_string(&mut answer);
        match status {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => Err(failed(format!("answered {status}"))),
            _ => {
                self.park(&wanted, status, &answer)?;
                self.health.dead_lettered.fetch_add(wanted.len() as u64, Relaxed);
                log::warn!(
                    "sink {}: {} refused {} records with {status}; parked as dead letters in {}",
                    self.name,
                    self.config.url,
                    wanted.len(),
                    self.dead_letters.display()
                );
                Ok(())
            }
        }
    }
}
