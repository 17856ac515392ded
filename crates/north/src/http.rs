//! The HTTP sink: an ERP web hook receiving JSON batches.
//!
//! Each delivery POSTs a JSON array of records (each with its message id first) to the URL,
//! over rustls for `https://`, with the header `Idempotency-Key: <gateway>-<first id>..<last id>`
//! so the receiver can drop a batch it has already taken (every record also carries its own id).
//! - a 2xx answer acknowledges the batch;
//! - a 5xx, 408 or 429 answer, a timeout or a connection failure is retried with backoff
//!   (the batch stays in the outbox, nothing is lost);
//! - a 3xx is a misconfigured URL, never followed: airlock does not let IT decide where the
//!   gateway connects, and counting a redirect as delivered would lose the batch. The batch
//!   stays in the outbox and is retried with backoff; the sink's health and an upstream event
//!   (`sink_failing`) name the status and the `Location` (which is not connected to);
//! - a 4xx that refuses the sink's settings, not its records (401, 403, 404, 405, 407, 410,
//!   421, 426: an expired token, a wrong url) is retried with backoff like a 5xx: the records
//!   wait until the settings are put right, rather than drain into dead letters;
//! - any other 4xx means the receiver will never take this batch: it is parked as a dead letter
//!   (appended to `<data_dir>/deadletter/<sink>.jsonl` with the status and the answer's first
//!   kilobyte), counted and logged, and the sink moves on. Nothing is retried forever. The
//!   dead-letter files keep to `dead_letters_max_mb`: the oldest half is removed, counted.
//! - any status outside those classes (a 1xx, or 600 to 999 from a broken middlebox) refuses
//!   nothing: it is retried like a 5xx.
//!
//! An answer's body is read up to a kilobyte, never more. No proxy is taken from the
//! environment: the sink connects to the configured URL's host, or to the configured `proxy`.
//!
//! Only the configured classes are sent (events by default); the sink acknowledges the others
//! without sending them.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use airlock_config::HttpSink as HttpConfig;
use airlock_store::space::FreeSpace;
use airlock_store::{Class, OutboxRecord};

use airlock_model::Timestamp;

use crate::{Ledger, Limits, Sent, Sink, SinkError, SinkHealth, message_id, wire_json};

pub struct HttpSink {
    name: String,
    gateway: String,
    config: HttpConfig,
    classes: Vec<Class>,
    agent: ureq::Agent,
    token: Option<String>,
    dead_letters: PathBuf,
    health: Arc<SinkHealth>,
    ledger: Arc<Ledger>,
    space: Option<Arc<FreeSpace>>,
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
        // Only the configured proxy, never one from the environment.
        let proxy = match &config.proxy {
            Some(p) => Some(ureq::Proxy::new(p).map_err(|e| format!("the proxy {p:?}: {e}"))?),
            None => None,
        };
        let agent_config = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(proxy)
            .build();
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
            ledger: Arc::default(),
            space: None,
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
        if let Some(space) = self.space.as_ref().filter(|s| !s.has_room()) {
            self.health.dead_letters_dropped.fetch_add(records.len() as u64, Relaxed);
            log::warn!(
                "sink {}: {} refused records not parked: the disk's free-space reserve ({} bytes) is reached",
                self.name,
                records.len(),
                space.reserve()
            );
            return Ok(());
        }
        let io = |action, source| SinkError::Io { action, target: self.dead_letters.display().to_string(), source };
        if let Some(dir) = self.dead_letters.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create", e))?;
        }
        self.keep_to_budget().map_err(|e| io("rotate", e))?;
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

impl HttpSink {
    /// Keeps to the file system's free-space reserve: past it, refused records are counted as
    /// dropped dead letters instead of written.
    pub fn keeping(mut self, space: Arc<FreeSpace>) -> Self {
        self.space = Some(space);
        self
    }

    /// When the dead-letter file has reached half the budget, it replaces the older file (whose
    /// records are counted as dropped), so both together stay within the budget.
    fn keep_to_budget(&self) -> std::io::Result<()> {
        let size = match std::fs::metadata(&self.dead_letters) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if size < self.config.dead_letters_max_bytes / 2 {
            return Ok(());
        }
        let older = self.dead_letters.with_extension("jsonl.1");
        // Read a letter (one refused batch) at a time: the file may be half of a budget of
        // up to 100 GB.
        let dropped = match std::fs::File::open(&older) {
            Ok(file) => {
                let letters = std::io::BufRead::split(std::io::BufReader::new(file), b'\n');
                letters.map(|l| l.map(|l| records_in_letter(&l))).sum::<std::io::Result<u64>>()?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        std::fs::rename(&self.dead_letters, &older)?;
        if dropped > 0 {
            self.health.dead_letters_dropped.fetch_add(dropped, Relaxed);
            log::warn!(
                "sink {}: {dropped} dead letters removed to keep {} within {} bytes",
                self.name,
                self.dead_letters.display(),
                self.config.dead_letters_max_bytes
            );
        }
        Ok(())
    }
}

/// `url` fit for a log: user and password (`https://user:secret@host/`) replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The number of records in one dead-letter line (0 if it is not one).
fn records_in_letter(line: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("records").and_then(|r| r.as_array()).map(|r| r.len() as u64))
        .unwrap_or(0)
}

impl Sink for HttpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn ledger(&mut self, ledger: Arc<Ledger>) {
        self.ledger = ledger;
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
        let key = format!("{}-{}..{}", self.gateway, first.wire_id(), last.wire_id());
        let mut request = self
            .agent
            .post(&self.config.url)
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &key);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let failed = |what: String| SinkError::Rejected { target: redacted(&self.config.url), what };
        let body = self.body(&wanted);
        self.ledger.sent(Timestamp::now(), &redacted(&self.config.url), wanted.iter().copied(), &body);
        let mut response = request.send(&body[..]).map_err(|e| failed(e.to_string()))?;
        let status = response.status().as_u16();
        let mut answer = String::new();
        let _ = response.body_mut().as_reader().take(1024).read_to_string(&mut answer);
        match status {
            200..=299 => Ok(()),
            300..=399 => {
                let location = response.headers().get("location").and_then(|l| l.to_str().ok()).unwrap_or("nowhere");
                let location: String = location.chars().filter(|c| !c.is_control()).take(200).collect();
                Err(failed(format!(
                    "answered {status} redirecting to {location:?}; airlock never follows a redirect: set the sink's url"
                )))
            }
            408 | 429 | 500..=599 => Err(failed(format!("answered {status}"))),
            // A refusal of the sink's settings, not of its records (credentials, the url, a
            // proxy, the protocol): the records wait until it is put right, as for a 5xx; they
            // are not drained into dead letters.
            401 | 403 | 404 | 405 | 407 | 410 | 421 | 426 => Err(failed(format!(
                "answered {status}: a refusal of the sink's settings (credentials, url), not of the records, which \
                 wait in the outbox"
            ))),
            400..=499 => {
                self.park(&wanted, status, &answer)?;
                self.health.dead_lettered.fetch_add(wanted.len() as u64, Relaxed);
                log::warn!(
                    "sink {}: {} refused {} records with {status}; parked as dead letters in {}",
                    self.name,
                    redacted(&self.config.url),
                    wanted.len(),
                    self.dead_letters.display()
                );
                Ok(())
            }
            // 1xx, 6xx to 999: no answer to a POST, and no refusal of the batch either.
            _ => Err(failed(format!("answered {status}, which is no HTTP answer to a POST"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn credentials_in_a_url_never_reach_a_log() {
        assert_eq!(redacted("https://erp:s3cret@erp.example/hook?x=1"), "https://***@erp.example/hook?x=1");
        assert_eq!(redacted("http://erp.example/a@b"), "http://erp.example/a@b");
        assert_eq!(redacted("https://erp.example"), "https://erp.example");
    }
}
