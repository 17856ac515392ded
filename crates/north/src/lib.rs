//! The IT chamber: sinks that carry what the outbox holds up to IT. A sink only ever holds an
//! [`OutboxReader`] (read and acknowledge; it cannot append, delete, or reach a device: this
//! crate does not depend on any southbound crate, and `tests/architecture.rs` checks it).
//! Every sink runs on the one runner ([`spawn`], its own thread): it reads records after the
//! sink's position, sends them, and acknowledges them in the outbox only once the receiver has
//! taken them, so delivery is at-least-once and in order per class. Records go on the wire with the message id `<gateway>-<record id>`, stable across
//! restarts, by which a consumer drops duplicates.

mod broker_gate;
pub mod http;
mod jsonl;
pub mod kafka;
pub mod ledger;
pub mod mqtt;
mod runner;
pub mod sparkplug;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airlock_config::Replay;
use airlock_model::pace::Backoff;
use airlock_model::{Problem, Problems, Severity, Timestamp, Transition};
use airlock_store::{OutboxRecord, RecordId, StoreError};

pub use jsonl::JsonlSink;
pub use ledger::Ledger;
pub use runner::spawn;

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
    #[error("the outbox: {0}")]
    Store(#[from] StoreError),
}

/// What became of records handed to a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Every one of them is delivered (or deliberately not sent, such as a class the sink does
    /// not carry): acknowledge them now.
    Delivered,
    /// On their way: the receiver's acknowledgements come through [`Sink::acknowledged`].
    InFlight,
}

/// How the runner feeds a sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Records handed over in one [`Sink::send`] at most.
    pub batch_max: usize,
    /// Records sent and not yet acknowledged, at most.
    pub window: usize,
    /// Records per second at most, so that a backlog does not choke the IT network.
    pub rate_max_per_s: Option<f64>,
    /// How a backlog (after an outage) is sent.
    pub replay: Replay,
}

impl Default for Limits {
    fn default() -> Self {
        Self { batch_max: BATCH_RECORDS, window: BATCH_RECORDS, rate_max_per_s: None, replay: Replay::InOrder }
    }
}

/// Somewhere upstream records go. The runner ([`spawn`]) calls these methods from one thread;
/// a sink that blocks blocks only itself.
// The runner drives each sink on its own single-threaded runtime, so the futures need no `Send`.
#[allow(async_fn_in_trait)]
pub trait Sink: Send {
    /// The sink's name; its cursor in the outbox is kept under it.
    fn name(&self) -> &str;

    /// Where the sink writes each message it puts on its wire, as it put it there (the runner
    /// hands it over before anything is sent): the egress ledger an auditor reads.
    fn ledger(&mut self, ledger: Arc<Ledger>);

    /// How many records at a time, how many in flight, how fast.
    fn limits(&self) -> Limits {
        Limits::default()
    }

    /// Begins a session (connects, opens a file); called first and again after every failure,
    /// after a backoff. Whatever was in flight is sent again in the new session.
    async fn open(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Sends `records`, in order.
    async fn send(&mut self, records: &[OutboxRecord]) -> Result<Sent, SinkError>;

    /// Waits for the receiver to acknowledge records sent [`Sent::InFlight`] and returns their
    /// ids. It must lose nothing when dropped before it returns (the runner also waits for new
    /// records meanwhile). A sink that delivers synchronously never returns.
    async fn acknowledged(&mut self) -> Result<Vec<RecordId>, SinkError> {
        std::future::pending().await
    }

    /// Called on every turn of the runner, for work on a clock (Sparkplug births when due).
    async fn tick(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// A clean stop with nothing left in flight: say goodbye (an offline status, an NDEATH).
    async fn close(&mut self) {}
}

/// A record's message id on the wire: `<gateway>-<record id>`, stable across restarts (for a
/// record received through a diode, its id on the sending side: [`OutboxRecord::wire_id`]).
pub fn message_id(gateway: &str, record: &OutboxRecord) -> String {
    format!("{gateway}-{}", record.wire_id())
}

/// Appends a record as it goes on the wire in JSON: its fields with the message id first.
pub fn wire_json(gateway: &str, record: &OutboxRecord, out: &mut Vec<u8>) {
    airlock_upstream::json::render(&message_id(gateway, record), &record.record, out);
}

/// Counters of a running sink, and the problem it has now.
#[derive(Debug, Default)]
pub struct SinkHealth {
    pub delivered: AtomicU64,
    pub failures: AtomicU64,
    /// Records a receiver refused for good, parked as dead letters.
    pub dead_lettered: AtomicU64,
    /// Dead letters removed to keep the dead-letter files within their budget.
    pub dead_letters_dropped: AtomicU64,
    /// Times the sink's thread panicked and its runner started again.
    pub restarts: AtomicU64,
    /// What the sink put on its wire (see [`Ledger`]).
    pub ledger: Arc<Ledger>,
    /// Why the sink cannot deliver now; empty while it delivers.
    problem: Mutex<String>,
    /// Where the sink's problems go upstream as events (none where nobody sends them).
    board: Option<Arc<Problems>>,
}

impl SinkHealth {
    /// Health whose problems are reported on `board` (raised, and cleared when delivering again).
    pub fn reporting_to(board: Arc<Problems>) -> Self {
        Self { board: Some(board), ..Self::default() }
    }

    /// Why the sink cannot deliver now; empty while it delivers.
    pub fn problem(&self) -> String {
        self.problem.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The sink cannot deliver: `what` (reported upstream when it is a new problem).
    pub(crate) fn raise(&self, sink: &str, what: &str) {
        let Ok(mut p) = self.problem.lock() else { return };
        if *p == what {
            return;
        }
        what.clone_into(&mut p);
        self.report(Transition::Raised, format!("sink {sink} cannot deliver: {what}; the records wait in the outbox"));
    }

    /// The sink delivers again.
    pub(crate) fn clear(&self, sink: &str) {
        let Ok(mut p) = self.problem.lock() else { return };
        if p.is_empty() {
            return;
        }
        p.clear();
        self.report(Transition::Cleared, format!("sink {sink} delivers again"));
    }

    fn report(&self, state: Transition, message: String) {
        if let Some(board) = &self.board {
            let severity = if state == Transition::Raised { Severity::Warning } else { Severity::Info };
            board.report(Problem { time: Timestamp::now(), kind: "sink_failing", severity, state, message });
        }
    }
}

/// Records read per delivery.
const BATCH_RECORDS: usize = 1000;

/// A sink's reconnect and retry backoff: 100 ms doubling to 30 s, with jitter (the model's one
/// backoff, as every driver uses), seeded from the sink's name and the clock.
pub(crate) fn sink_backoff(name: &str) -> Backoff {
    let seed =
        name.bytes().fold(airlock_model::Timestamp::now().as_nanos() as u64, |h, b| h.rotate_left(5) ^ u64::from(b));
    Backoff::new(Duration::from_millis(100), Duration::from_secs(30), seed)
}

/// The last id of each class among `ids`: what a cumulative acknowledgement per class names.
fn last_per_class(ids: impl IntoIterator<Item = RecordId>) -> Vec<RecordId> {
    let mut last: [Option<RecordId>; 4] = [None; 4];
    for id in ids {
        last[id.class as usize] = Some(id);
    }
    last.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_model::Timestamp;
    use airlock_store::{Class, Origin, RecordId};
    use airlock_upstream::{RecoveryRecord, Upstream};

    #[test]
    fn the_message_id_goes_first() {
        let record = Upstream::Recovered(RecoveryRecord { time: Timestamp(0), corrupt_records: 0, torn_bytes: 3 });
        let r = OutboxRecord {
            id: RecordId { class: Class::Event, seq: 42 },
            origin: Origin::Here,
            time: Timestamp(0),
            record,
        };
        let mut out = Vec::new();
        wire_json("plant7", &r, &mut out);
        assert!(String::from_utf8(out).unwrap().starts_with("{\"id\":\"plant7-e42\",\"corrupt_records\":0,"));
    }
}
