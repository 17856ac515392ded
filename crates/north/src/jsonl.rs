//! The JSON Lines sink: appends each record as one line to a file, written and synced to disk
//! (`fdatasync`) before the records are acknowledged in the outbox.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use airlock_store::space::FreeSpace;

use airlock_store::OutboxRecord;

use airlock_model::Timestamp;

use crate::{Ledger, Sent, Sink, SinkError, wire_json};

pub struct JsonlSink {
    name: String,
    gateway: String,
    path: PathBuf,
    file: Option<BufWriter<File>>,
    space: Option<Arc<FreeSpace>>,
    ledger: Arc<Ledger>,
}

impl JsonlSink {
    pub fn new(name: &str, gateway: &str, path: &Path) -> Self {
        Self {
            name: name.to_owned(),
            gateway: gateway.to_owned(),
            path: path.to_owned(),
            file: None,
            space: None,
            ledger: Arc::default(),
        }
    }

    /// Keeps to the file system's free-space reserve: past it, nothing is written (the records
    /// wait in the outbox, the sink retries with backoff).
    pub fn keeping(mut self, space: Arc<FreeSpace>) -> Self {
        self.space = Some(space);
        self
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> SinkError {
        SinkError::Io { action, target: self.path.display().to_string(), source }
    }

    fn append_lines(&mut self, records: &[OutboxRecord]) -> Result<(), SinkError> {
        if let Some(space) = self.space.as_ref().filter(|s| !s.has_room()) {
            let what = format!("the disk's free-space reserve ({} bytes) is reached", space.reserve());
            return Err(SinkError::Rejected { target: self.path.display().to_string(), what });
        }
        if self.file.is_none() {
            let f = OpenOptions::new().create(true).append(true).open(&self.path).map_err(|e| self.io("open", e))?;
            self.file = Some(BufWriter::new(f));
        }
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        let mut line = Vec::with_capacity(256);
        let mut result = Ok(());
        for r in records {
            line.clear();
            wire_json(&self.gateway, r, &mut line);
            line.push(b'\n');
            result = file.write_all(&line);
            if result.is_ok() {
                self.ledger.sent(Timestamp::now(), &r.record.topic(), std::slice::from_ref(r), &line);
            }
            if result.is_err() {
                break;
            }
        }
        // On disk before the records are acknowledged: a power cut loses nothing acknowledged.
        result
            .and_then(|()| file.flush())
            .and_then(|()| file.get_ref().sync_data())
            .map_err(|e| self.io("append to", e))
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn ledger(&mut self, ledger: Arc<Ledger>) {
        self.ledger = ledger;
    }

    async fn open(&mut self) -> Result<(), SinkError> {
        self.file = None; // reopened at the next write; a partly written batch is written again
        Ok(())
    }

    async fn send(&mut self, records: &[OutboxRecord]) -> Result<Sent, SinkError> {
        self.append_lines(records).map(|()| Sent::Delivered)
    }
}
