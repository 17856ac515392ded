//! The shared runner with a sink that pipelines, as MQTT does: records go out in order within
//! the window, acknowledgements come back out of order, the outbox cursor never passes a record
//! still in flight, and after a failed session everything unacknowledged is sent again.
//! (The MQTT, Sparkplug, HTTP and JSON Lines sinks run on this runner against real peers in
//! their own tests; this one checks the runner's bookkeeping where it is hardest to see.)

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_model::Timestamp;
use airlock_north::{Limits, Sent, Sink, SinkError, SinkHealth};
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxReader, OutboxRecord, OutboxWriter, RecordId};
use airlock_testkit::{records, temp};

const WINDOW: usize = 8;
const RECORDS: u64 = 100;

#[derive(Default)]
struct Seen {
    opens: usize,
    sends: usize,
    /// Every record id handed over, resends included, in order.
    sent: Vec<u64>,
    pending: VecDeque<RecordId>,
    violations: Vec<String>,
}

struct Pipelined {
    reader: OutboxReader,
    seen: Arc<Mutex<Seen>>,
}

impl Sink for Pipelined {
    fn name(&self) -> &str {
        "pipe"
    }

    fn ledger(&mut self, _: Arc<airlock_north::Ledger>) {}

    fn limits(&self) -> Limits {
        Limits { batch_max: 3, window: WINDOW, ..Limits::default() }
    }

    async fn open(&mut self) -> Result<(), SinkError> {
        let mut seen = self.seen.lock().unwrap();
        seen.opens += 1;
        seen.pending.clear(); // a new session: what was in flight is lost with the old one
        Ok(())
    }

    async fn send(&mut self, records: &[OutboxRecord]) -> Result<Sent, SinkError> {
        let mut seen = self.seen.lock().unwrap();
        seen.sends += 1;
        if seen.sends == 7 {
            return Err(SinkError::Rejected { target: "pipe".into(), what: "the line dropped".into() });
        }
        if records.is_empty() || records.len() > 3 {
            seen.violations.push(format!("a send of {} records", records.len()));
        }
        for r in records {
            seen.sent.push(r.id.seq);
            seen.pending.push_back(r.id);
        }
        if seen.pending.len() > WINDOW {
            let n = seen.pending.len();
            seen.violations.push(format!("{n} records in flight, window {WINDOW}"));
        }
        Ok(Sent::InFlight)
    }

    /// Acknowledges everything in flight but the oldest, newest first; the oldest next time.
    async fn acknowledged(&mut self) -> Result<Vec<RecordId>, SinkError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut seen = self.seen.lock().unwrap();
        let acked = self.reader.position("pipe").unwrap().0[Class::Event as usize];
        if let Some(oldest) = seen.pending.front().copied()
            && acked >= oldest.seq
        {
            seen.violations.push(format!("the cursor at {acked} passed {oldest}, still in flight"));
        }
        let ids: Vec<RecordId> = if seen.pending.len() > 1 {
            let oldest = seen.pending.pop_front().unwrap();
            let mut rest: Vec<RecordId> = seen.pending.drain(..).rev().collect();
            seen.pending.push_back(oldest);
            rest.truncate(WINDOW);
            rest
        } else {
            seen.pending.drain(..).collect()
        };
        Ok(ids)
    }
}

/// An outbox read by the sink `pipe`, holding `n` synced events.
fn outbox_of_events(name: &str, n: u64) -> (std::path::PathBuf, OutboxWriter, OutboxReader) {
    let dir = temp(name);
    let config = OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["pipe".into()],
        ..OutboxConfig::default()
    };
    let (mut writer, reader) = OutboxWriter::open(&dir.join("outbox"), config).unwrap();
    for i in 0..n {
        writer.append(Class::Event, &records::event("parts", "a part", i as f64, event_time())).unwrap();
    }
    writer.sync().unwrap();
    (dir, writer, reader)
}

fn event_time() -> Timestamp {
    Timestamp::parse_rfc3339("2026-11-28T12:00:00Z").unwrap()
}

#[test]
fn acknowledgements_out_of_order_never_move_the_cursor_past_a_record_in_flight() {
    let (dir, _writer, reader) = outbox_of_events("runner-pipelined", RECORDS);

    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = Pipelined { reader: reader.clone(), seen: Arc::clone(&seen) };
    let health = Arc::new(SinkHealth::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handle = airlock_north::spawn(sink, reader.clone(), Arc::clone(&stop), Arc::clone(&health)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while reader.position("pipe").unwrap().0[Class::Event as usize] < RECORDS {
        assert!(Instant::now() < deadline, "the cursor did not reach {RECORDS} in 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Relaxed);
    handle.join().unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.violations, Vec::<String>::new());
    assert_eq!(seen.opens, 2, "one failed session, then a new one");
    assert_eq!(health.failures.load(Relaxed), 1);
    let distinct: BTreeSet<u64> = seen.sent.iter().copied().collect();
    assert_eq!(distinct, (1..=RECORDS).collect::<BTreeSet<u64>>(), "every record was sent");
    // The failed session's unacknowledged records were sent again: some id appears twice, and
    // the second session started at or before the first one's oldest unacknowledged record.
    assert!(seen.sent.len() > RECORDS as usize, "nothing was sent again after the failure");
    // Within each session the records went out in order: ids only fall where a session began.
    let falls = seen.sent.windows(2).filter(|w| w[1] <= w[0]).count();
    assert_eq!(falls, 1, "records out of order: {:?}", seen.sent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Delivers synchronously, but panics on its first send (a bug meeting an answer nobody
/// foresaw).
struct PanicsOnce {
    sends: usize,
    delivered: Arc<Mutex<Vec<u64>>>,
}

impl Sink for PanicsOnce {
    fn name(&self) -> &str {
        "pipe"
    }

    fn ledger(&mut self, _: Arc<airlock_north::Ledger>) {}

    async fn send(&mut self, records: &[OutboxRecord]) -> Result<Sent, SinkError> {
        self.sends += 1;
        if self.sends == 1 {
            panic!("an answer nobody foresaw");
        }
        self.delivered.lock().unwrap().extend(records.iter().map(|r| r.id.seq));
        Ok(Sent::Delivered)
    }
}

#[test]
fn a_sink_that_panics_is_restarted_and_delivers_everything() {
    let (dir, _writer, reader) = outbox_of_events("runner-panic", RECORDS);
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let board = Arc::new(airlock_model::Problems::default());
    let health = Arc::new(SinkHealth::reporting_to(Arc::clone(&board)));
    let stop = Arc::new(AtomicBool::new(false));
    let sink = PanicsOnce { sends: 0, delivered: Arc::clone(&delivered) };
    let handle = airlock_north::spawn(sink, reader.clone(), Arc::clone(&stop), Arc::clone(&health)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while reader.position("pipe").unwrap().0[Class::Event as usize] < RECORDS {
        assert!(Instant::now() < deadline, "the sink did not deliver everything in 20 s after its panic");
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Relaxed);
    handle.join().expect("the sink's thread survives its panic");
    assert_eq!(*delivered.lock().unwrap(), (1..=RECORDS).collect::<Vec<u64>>());
    assert_eq!(health.restarts.load(Relaxed), 1);
    let problems = board.take();
    assert_eq!(problems.len(), 2, "raised, then cleared: {problems:#?}");
    assert!(problems[0].message.contains("panicked: an answer nobody foresaw"), "{}", problems[0].message);
    assert_eq!(problems[1].state, airlock_model::Transition::Cleared);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Acknowledges everything at once, in order, and counts it.
struct Prompt {
    delivered: Arc<Mutex<Vec<RecordId>>>,
    pending: Vec<RecordId>,
}

impl Sink for Prompt {
    fn name(&self) -> &str {
        "pipe"
    }

    fn ledger(&mut self, _: Arc<airlock_north::Ledger>) {}

    fn limits(&self) -> Limits {
        Limits {
            batch_max: 2,
            window: 4,
            replay: airlock_config::Replay::LiveFirst { rate_max_per_s: 50.0 },
            ..Limits::default()
        }
    }

    async fn send(&mut self, records: &[OutboxRecord]) -> Result<Sent, SinkError> {
        self.pending.extend(records.iter().map(|r| r.id));
        Ok(Sent::InFlight)
    }

    async fn acknowledged(&mut self) -> Result<Vec<RecordId>, SinkError> {
        if self.pending.is_empty() {
            return std::future::pending().await;
        }
        let ids = std::mem::take(&mut self.pending);
        self.delivered.lock().unwrap().extend(ids.iter().copied());
        Ok(ids)
    }
}

#[test]
fn live_records_beyond_the_window_during_a_replay_do_not_stall_it() {
    // Before, acknowledged live records stayed counted in the window until the backlog was
    // through: more live records than the window during a replay stopped everything for good.
    let (dir, mut writer, reader) = outbox_of_events("runner-live-first", 30);
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let sink = Prompt { delivered: Arc::clone(&delivered), pending: Vec::new() };
    let health = Arc::new(SinkHealth::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handle = airlock_north::spawn(sink, reader.clone(), Arc::clone(&stop), Arc::clone(&health)).unwrap();
    // Live records, more than the window of 4, while the backlog goes out at 50/s.
    for i in 0..20 {
        writer.append(Class::Event, &records::event("live", "new", f64::from(i), event_time())).unwrap();
        writer.sync().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while reader.position("pipe").unwrap().0[Class::Event as usize] < 50 {
        assert!(Instant::now() < deadline, "stalled: {} delivered", delivered.lock().unwrap().len());
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Relaxed);
    handle.join().unwrap();
    let got: BTreeSet<u64> = delivered.lock().unwrap().iter().map(|id| id.seq).collect();
    assert_eq!(got, (1..=50).collect::<BTreeSet<u64>>());
    let _ = std::fs::remove_dir_all(&dir);
}
