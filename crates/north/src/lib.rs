//! The IT chamber: sinks that carry what the outbox holds up to IT. A sink only ever holds an
//! [`OutboxReader`] (read and acknowledge; it cannot append, delete, or reach a device: this
//! crate does not depend on any southbound crate, and `tests/architecture.rs` checks it).
//! Each sink runs on its own thread ([`spawn`]): it reads a batch after its position, delivers
//! it, and acknowledges it only once delivered, so delivery is at-least-once and in order per
//! class. Records go on the wire with the message id `<gateway>-<record id>`, stable across
//! restarts, by which a consumer drops duplicates.

pub mod http;
mod jsonl;
pub mod mqtt;
pub mod sparkplug;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::Duration;

use airlock_model::pace::Backoff;
use airlock_store::{OutboxReader, OutboxRecord, StoreError};

pub use jsonl::JsonlSink;

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{action} {target}: {source}")]
    Io {
        action: &'static str,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{target}: {what}")]
    Rejected { target: String, what: String },
}

/// Somewhere upstream records go.
pub trait Sink: Send {
    /// The sink's name; its cursor in the outbox is kept under it.
    fn name(&self) -> &str;

    /// Delivers `records` in order; `Ok` means every one of them is delivered.
    fn deliver(&mut self, records: &[OutboxRecord]) -> Result<(), SinkError>;

    /// The most records one delivery carries.
    fn batch_max(&self) -> usize {
        BATCH_RECORDS
    }
}

/// A record's message id on the wire: `<gateway>-<record id>`, stable across restarts.
pub fn message_id(gateway: &str, record: &OutboxRecord) -> String {
    format!("{gateway}-{}", record.id)
}

/// Appends a record as it goes on the wire in JSON: its fields with the message id first.
pub fn wire_json(gateway: &str, record: &OutboxRecord, out: &mut Vec<u8>) {
    airlock_upstream::json::render(&message_id(gateway, record), &record.record, out);
}

/// Counters of a running sink.
#[derive(Debug, Default)]
pub struct SinkHealth {
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
    /// Records a receiver refused for good, parked as dead letters.
    pub dead_lettered: AtomicU64,
}

/// Records read per delivery.
const BATCH_RECORDS: usize = 1000;
/// How long a sink waits at most when the outbox has nothing new (it is woken as soon as records
/// become visible; this bounds how late it sees a stop).
const IDLE: Duration = Duration::from_millis(100);

/// A flag the outbox sets when records become visible, and a condition to sleep on until then.
#[derive(Debug, Default)]
pub struct NewRecords {
    flag: std::sync::Mutex<bool>,
    changed: std::sync::Condvar,
}

impl NewRecords {
    /// Registers with `reader`: every commit that makes records visible sets the flag.
    pub fn watch(reader: &OutboxReader) -> Result<Arc<Self>, StoreError> {
        let this = Arc::new(Self::default());
        let waker = Arc::clone(&this);
        reader.on_new_records(move || waker.set())?;
        Ok(this)
    }

    fn set(&self) {
        if let Ok(mut f) = self.flag.lock() {
            *f = true;
            self.changed.notify_all();
        }
    }

    /// Clears the flag: call before reading the outbox, so a commit after the read is not missed.
    pub fn clear(&self) {
        if let Ok(mut f) = self.flag.lock() {
            *f = false;
        }
    }

    /// Sleeps until the flag is set or `timeout` has passed.
    pub fn wait(&self, timeout: Duration) {
        if let Ok(f) = self.flag.lock() {
            let _ = self.changed.wait_timeout_while(f, timeout, |set| !*set);
        }
    }
}

/// Runs `sink` on its own thread until `stop` is set; then it delivers what is left (one try
/// if the sink is failing) and persists its cursor.
pub fn spawn(
    mut sink: Box<dyn Sink>,
    reader: OutboxReader,
    stop: Arc<AtomicBool>,
    health: Arc<SinkHealth>,
) -> std::io::Result<JoinHandle<()>> {
    let h = health;
    let name = format!("sink-{}", sink.name());
    let handle = std::thread::Builder::new().name(name).spawn(move || {
        if let Err(e) = run(sink.as_mut(), &reader, &stop, &h) {
            log::error!("sink {}: stopped: {e}", sink.name());
        }
        if let Err(e) = reader.persist_cursors() {
            log::error!("sink {}: save its position: {e}", sink.name());
        }
    })?;
    Ok(handle)
}

fn run(sink: &mut dyn Sink, reader: &OutboxReader, stop: &AtomicBool, health: &SinkHealth) -> Result<(), StoreError> {
    let mut position = reader.position(sink.name())?;
    let mut backoff = sink_backoff(sink.name());
    let mut failing = false;
    let new_records = NewRecords::watch(reader)?;
    loop {
        let stopping = stop.load(Relaxed);
        new_records.clear();
        let batch = reader.read(&position, sink.batch_max())?;
        if batch.is_empty() {
            if stopping {
                return Ok(());
            }
            new_records.wait(IDLE);
            continue;
        }
        match sink.deliver(&batch) {
            Ok(()) => {
                for r in &batch {
                    position.advance(r.id);
                }
                for id in last_per_class(batch.iter().map(|r| r.id)) {
                    reader.ack(sink.name(), id)?;
                }
                health.delivered.fetch_add(batch.len() as u64, Relaxed);
                if std::mem::take(&mut failing) {
                    log::info!("sink {}: delivering again", sink.name());
                }
                backoff.reset();
            }
            Err(e) => {
                health.failures.fetch_add(1, Relaxed);
                if !std::mem::replace(&mut failing, true) {
                    log::warn!("sink {}: {e}; the records wait in the outbox, retrying with backoff", sink.name());
                }
                if stopping {
                    return Ok(());
                }
                std::thread::sleep(backoff.next_delay());
            }
        }
    }
}

/// A sink's reconnect and retry backoff: 100 ms doubling to 30 s, with jitter (the model's one
/// backoff, as every driver uses), seeded from the sink's name and the clock.
pub(crate) fn sink_backoff(name: &str) -> Backoff {
    let seed =
        name.bytes().fold(airlock_model::Timestamp::now().as_nanos() as u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    Backoff::new(Duration::from_millis(100), Duration::from_secs(30), seed)
}

/// The last id of each class among `ids`: what a cumulative acknowledgement per class names.
fn last_per_class(ids: impl IntoIterator<Item = airlock_store::RecordId>) -> Vec<airlock_store::RecordId> {
    let mut last: [Option<airlock_store::RecordId>; 4] = [None; 4];
    for id in ids {
        last[id.class as usize] = Some(id);
    }
    last.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::Timestamp;
    use airlock_store::{Class, RecordId};
    use airlock_upstream::{RecoveryRecord, Upstream};

    #[test]
    fn the_message_id_goes_first() {
        let record = Upstream::Recovered(RecoveryRecord { time: Timestamp(0), corrupt_records: 0, torn_bytes: 3 });
        let r = OutboxRecord { id: RecordId { class: Class::Event, seq: 42 }, time: Timestamp(0), record };
        let mut out = Vec::new();
        wire_json("plant7", &r, &mut out);
        assert!(String::from_utf8(out).unwrap().starts_with("{\"id\":\"plant7-e42\",\"corrupt_records\":0,"));
    }
}
