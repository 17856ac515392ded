//! The outbox against a simple reference (a `VecDeque` per sink and class), under random
//! sequences of append, commit, read, ack, maintain, restart and crash; and its bounds: a full
//! outbox drops the lowest class first, reports every gap, and keeps within its byte budget.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing
#![allow(clippy::needless_range_loop, clippy::type_complexity)] // the model indexes sinks by number

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_model::{AssetPath, Quality, Severity, Timestamp, Transition, Value, ValueType};
use airlock_store::{
    Class, EncodedRecord, FsyncPolicy, OutboxConfig, OutboxReader, OutboxWriter, Position, StoreError,
};
use airlock_upstream::{EventRecord, GapCause, GapRecord, SampleRecord, Upstream};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-outbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// xorshift64*: the tests' only source of randomness, seeded so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const SINKS: [&str; 2] = ["mqtt", "erp"];

fn config() -> OutboxConfig {
    OutboxConfig {
        bytes_max: 1 << 30,
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: SINKS.iter().map(|s| s.to_string()).collect(),
        ..OutboxConfig::default()
    }
}

/// The reference: what each sink has yet to acknowledge, per class, in order.
#[derive(Default, Clone)]
struct Model {
    unacked: [[VecDeque<(u64, Vec<u8>)>; 4]; 2],
    /// Appended but not committed: lost on a crash.
    pending: Vec<(Class, u64, Vec<u8>)>,
    /// Per sink, the position last known to be in the cursor file (a crash may fall back to it).
    persisted: [Position; 2],
}

impl Model {
    fn expected(&self, sink: usize) -> Vec<(Class, u64, Vec<u8>)> {
        Class::ALL
            .iter()
            .flat_map(|c| self.unacked[sink][*c as usize].iter().map(move |(s, p)| (*c, *s, p.clone())))
            .collect()
    }
}

fn actual(reader: &OutboxReader, sink: &str) -> Vec<(Class, u64, Vec<u8>)> {
    let position = reader.position(sink).unwrap();
    reader.read_encoded(&position, usize::MAX).unwrap().into_iter().map(|r| (r.id.class, r.id.seq, r.bytes)).collect()
}

fn run_sequence(seed: u64, dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    let mut rng = Rng(seed | 1);
    let (mut writer, mut reader) = OutboxWriter::open(dir, config()).unwrap();
    let mut model = Model::default();
    let mut counter = 0u64;
    for step in 0..150 {
        let op = rng.below(100);
        let context = format!("seed {seed} step {step} op {op}");
        match op {
            0..=44 => {
                let class = Class::ALL[rng.below(4) as usize];
                counter += 1;
                let payload = format!("{seed}-{counter}").into_bytes();
                let id = writer.append_encoded(class, Timestamp(counter as i64), &payload).unwrap();
                model.pending.push((class, id.seq, payload));
            }
            45..=59 => {
                writer.commit().unwrap();
                for (class, seq, payload) in model.pending.drain(..) {
                    for sink in 0..2 {
                        model.unacked[sink][class as usize].push_back((seq, payload.clone()));
                    }
                }
            }
            60..=79 => {
                let sink = rng.below(2) as usize;
                let n = rng.below(6) as usize;
                let position = reader.position(SINKS[sink]).unwrap();
                let batch: Vec<EncodedRecord> = reader.read_encoded(&position, n).unwrap();
                for r in &batch {
                    reader.ack(SINKS[sink], r.id).unwrap();
                    let front = model.unacked[sink][r.id.class as usize].pop_front().unwrap();
                    assert_eq!((front.0, &front.1), (r.id.seq, &r.bytes), "{context}");
                }
            }
            80..=87 => writer.maintain(Timestamp(counter as i64)).unwrap(),
            88..=93 => {
                // A clean restart: sync, persist cursors, reopen.
                writer.sync().unwrap();
                reader.persist_cursors().unwrap();
                drop((writer, reader));
                (writer, reader) = OutboxWriter::open(dir, config()).unwrap();
                for (class, seq, payload) in model.pending.drain(..) {
                    for sink in 0..2 {
                        model.unacked[sink][class as usize].push_back((seq, payload.clone()));
                    }
                }
                for sink in 0..2 {
                    model.persisted[sink] = reader.position(SINKS[sink]).unwrap();
                }
            }
            _ => {
                // A crash: nothing synced or persisted first. Uncommitted appends are lost; acks
                // may fall back to what the cursor file last held, and come again.
                drop((writer, reader));
                (writer, reader) = OutboxWriter::open(dir, config()).unwrap();
                model.pending.clear();
                for sink in 0..2 {
                    let position = reader.position(SINKS[sink]).unwrap();
                    for class in Class::ALL {
                        let c = class as usize;
                        assert!(position.0[c] >= model.persisted[sink].0[c], "{context}: a persisted ack went back");
                    }
                    model.persisted[sink] = position;
                    // Records acked but not persisted come back: rebuild from the outbox itself,
                    // checking that what we had not acked is exactly its tail.
                    let again = actual(&reader, SINKS[sink]);
                    let expected = model.expected(sink);
                    assert!(again.len() >= expected.len(), "{context}: unacked records lost in a crash");
                    for class in Class::ALL {
                        let c = class as usize;
                        let of_class: VecDeque<(u64, Vec<u8>)> =
                            again.iter().filter(|r| r.0 == class).map(|r| (r.1, r.2.clone())).collect();
                        let tail = &model.unacked[sink][c];
                        assert!(of_class.iter().rev().zip(tail.iter().rev()).all(|(a, b)| a == b), "{context}");
                        model.unacked[sink][c] = of_class;
                    }
                }
            }
        }
        for sink in 0..2 {
            assert_eq!(actual(&reader, SINKS[sink]), model.expected(sink), "{context}: sink {}", SINKS[sink]);
        }
    }
    drop((writer, reader));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn random_operations_match_the_reference() {
    let dir = temp("model");
    for seed in 1..=60 {
        run_sequence(seed * 0x9e37_79b9, &dir);
    }
}

#[test]
fn ids_keep_growing_across_restarts_and_reclaim() {
    let dir = temp("ids");
    let mut seen = Vec::new();
    for round in 0..5 {
        let (mut writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
        for i in 0..50 {
            seen.push(writer.append_encoded(Class::Raw, Timestamp(i), format!("{round}-{i}").as_bytes()).unwrap().seq);
        }
        writer.commit().unwrap();
        for sink in SINKS {
            let records = reader.read(&reader.position(sink).unwrap(), usize::MAX).unwrap();
            reader.ack(sink, records.last().unwrap().id).unwrap();
        }
        reader.persist_cursors().unwrap();
        writer.maintain(Timestamp(0)).unwrap();
    }
    assert!(seen.windows(2).all(|w| w[1] == w[0] + 1), "sequence numbers continue across restarts");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_full_outbox_drops_raw_first_and_reports_every_gap() {
    let dir = temp("full");
    let bytes_max = 64 << 10;
    let config = OutboxConfig { bytes_max, sinks: vec!["slow".into()], ..config() };
    let (mut writer, reader) = OutboxWriter::open(&dir, config).unwrap();
    let mut events = Vec::new();
    let mut last_raw = 0;
    for i in 0..5000i64 {
        last_raw = writer.append(Class::Raw, &sample(i)).unwrap().seq;
        if i % 100 == 0 {
            events.push(writer.append(Class::Event, &event(i)).unwrap().seq);
        }
        if i % 50 == 0 {
            writer.commit().unwrap();
            let stats = writer.stats();
            let gap_slack = 1024 * stats.gap_events.min(1);
            assert!(stats.bytes <= bytes_max + gap_slack, "{} bytes held over a budget of {bytes_max}", stats.bytes);
        }
    }
    writer.commit().unwrap();
    let stats = writer.stats();
    assert!(stats.dropped_full[Class::Raw as usize] > 3000, "{stats:?}");
    assert_eq!(stats.dropped_full[Class::Event as usize], 0, "no event dropped while raw records remained");
    let all = reader.read(&Position::default(), usize::MAX).unwrap();
    let held_events: Vec<u64> = all.iter().filter(|r| r.id.class == Class::Event).map(|r| r.id.seq).collect();
    for e in &events {
        assert!(held_events.contains(e), "event {e} was dropped");
    }
    // The raw records kept are the newest, without holes.
    let raw: Vec<u64> = all.iter().filter(|r| r.id.class == Class::Raw).map(|r| r.id.seq).collect();
    assert_eq!(raw.last(), Some(&last_raw));
    assert!(raw.windows(2).all(|w| w[1] == w[0] + 1));
    // Gap events account for every dropped record.
    let gaps: Vec<&GapRecord> = all
        .iter()
        .filter_map(|r| match &r.record {
            Upstream::Gap(g) => Some(g),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len() as u64, stats.gap_events);
    assert_eq!(gaps.iter().map(|g| g.records).sum::<u64>(), stats.dropped_full[Class::Raw as usize]);
    assert_eq!(raw.first().map(|f| f - 1), Some(stats.dropped_full[Class::Raw as usize]));
    assert_eq!((&*gaps[0].class, &*gaps[0].first_id, gaps[0].cause), ("raw", "r1", GapCause::Full));
    assert!(gaps[0].message().starts_with("dropped "), "{}", gaps[0].message());
    assert_eq!(stats.undecodable_reads, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An outbox full of events only (a sink offline through an alarm storm): a raw record that
/// comes then is refused and counted, and no event is dropped for it. It used to push out the
/// oldest events, against the policy (events are kept before raw telemetry).
#[test]
fn an_outbox_full_of_events_refuses_raw_records_rather_than_drop_events() {
    let dir = temp("full-of-events");
    let bytes_max = 64 << 10;
    let config = OutboxConfig { bytes_max, sinks: vec!["slow".into()], ..config() };
    let (mut writer, reader) = OutboxWriter::open(&dir, config).unwrap();
    // Events up to a few hundred bytes short of the budget.
    let mut i = 0;
    while writer.stats().bytes + 600 < bytes_max {
        writer.append(Class::Event, &event(i)).unwrap();
        i += 1;
    }
    writer.commit().unwrap();
    let events_before = reader.read(&Position::default(), usize::MAX).unwrap().len();
    let dropped_before = writer.stats().dropped_full;
    for k in 0..100 {
        match writer.append_encoded(Class::Raw, Timestamp(k), &[7; 2000]) {
            Err(StoreError::OutboxFull { class }) => assert_eq!(class, "raw"),
            other => panic!("a raw record into an outbox full of events: {other:?}"),
        }
    }
    writer.commit().unwrap();
    let stats = writer.stats();
    assert_eq!(stats.dropped_full, dropped_before, "nothing dropped for the raw records");
    assert_eq!(stats.refused_full[Class::Raw as usize], 100);
    let held = reader.read(&Position::default(), usize::MAX).unwrap();
    assert_eq!(held.len(), events_before);
    assert!(held.iter().all(|r| r.id.class == Class::Event));
    // An event still comes in, pushing out the oldest events as before.
    writer.append(Class::Event, &event(i)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn records_past_their_age_are_dropped_with_a_gap_event() {
    let dir = temp("age");
    let config = OutboxConfig { age_max: Duration::from_secs(60), bytes_max: 256 << 10, ..config() };
    let (mut writer, reader) = OutboxWriter::open(&dir, config).unwrap();
    let second = 1_000_000_000i64;
    for i in 0..2000i64 {
        let time = Timestamp(i * second / 10);
        writer.append_encoded(Class::Series, time, b"0123456789012345678901234567890123456789").unwrap();
        writer.commit().unwrap();
    }
    writer.maintain(Timestamp(200 * second)).unwrap();
    writer.commit().unwrap();
    let all = reader.read_encoded(&Position::default(), usize::MAX).unwrap();
    let oldest_series = all.iter().filter(|r| r.id.class == Class::Series).map(|r| r.time).min().unwrap();
    assert!(oldest_series.0 >= 80 * second, "records older than 60 s remain: {oldest_series:?}");
    let stats = writer.stats();
    assert!(stats.dropped_age[Class::Series as usize] > 1000);
    let events = reader.read_through(&Position::default(), &Position([u64::MAX, 0, 0, 0]), usize::MAX).unwrap();
    assert!(events.iter().any(|r| matches!(&r.record, Upstream::Gap(g) if g.cause == GapCause::Age)));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn sample(i: i64) -> Upstream {
    Upstream::Sample(SampleRecord {
        path: AssetPath::parse("acme/dortmund/pressing/line3/cell1/press1/speed").unwrap(),
        value_type: ValueType::F64,
        unit: Some("rpm".into()),
        value: Some(Value::F64(i as f64)),
        quality: Quality::Good,
        source_time: None,
        gateway_time: Timestamp(i),
    })
}

fn event(i: i64) -> Upstream {
    Upstream::Event(EventRecord {
        time: Timestamp(i),
        asset: AssetPath::parse("acme/dortmund/pressing/line3/cell1/press1").unwrap(),
        kind: "parts_produced".into(),
        severity: Severity::Info,
        state: Transition::Once,
        message: format!("event {i}").into(),
        body: vec![("parts".into(), i as f64)],
    })
}

#[test]
fn records_are_read_back_typed_and_foreign_bytes_come_as_an_undecodable_event() {
    let dir = temp("typed");
    let (mut writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
    writer.append(Class::Raw, &sample(1)).unwrap();
    // A record from a future version (format 9), and one from before the typed records (JSON).
    let future = writer.append_encoded(Class::Raw, Timestamp(2), &[9, 1, 2, 3]).unwrap();
    let legacy = br#"{"gateway_time":"2026-11-28T12:00:00.000Z","quality":"good","topic":"acme/a/b","value":2}"#;
    writer.append_encoded(Class::Raw, Timestamp(3), legacy).unwrap();
    writer.append(Class::Raw, &sample(4)).unwrap();
    writer.sync().unwrap();
    let read = reader.read(&Position::default(), 10).unwrap();
    assert_eq!(read.len(), 4, "the sink goes on past the bad record");
    assert_eq!(read[0].record, sample(1));
    match &read[1].record {
        Upstream::Undecodable(u) => {
            assert_eq!((read[1].id, &*u.record_id), (future, "r2"), "it stands under its own id and names it");
            assert!(u.why.contains("format version 9"), "{}", u.why);
            assert!(u.message().contains("r2"), "{}", u.message());
        }
        other => panic!("expected an undecodable record, got {other:?}"),
    }
    assert_eq!(read[2].record.topic(), "acme/a/b", "a legacy JSON record is read after an upgrade");
    assert_eq!(read[3].record, sample(4));
    assert_eq!(reader.stats().undecodable_reads, 1, "counted");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn readers_are_woken_when_records_become_visible_and_only_then() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let dir = temp("wake");
    let delayed = OutboxConfig { fsync: FsyncPolicy::Interval(Duration::from_millis(200)), ..config() };
    let (mut writer, reader) = OutboxWriter::open(&dir, delayed).unwrap();
    let woken = Arc::new(AtomicUsize::new(0));
    let w = Arc::clone(&woken);
    reader
        .on_new_records(move || {
            w.fetch_add(1, SeqCst);
        })
        .unwrap();
    writer.commit().unwrap();
    assert_eq!(woken.load(SeqCst), 0, "nothing new: no wake");
    writer.append(Class::Event, &event(1)).unwrap();
    writer.commit().unwrap();
    assert_eq!(woken.load(SeqCst), 0, "written but not yet synced (interval not due): not visible, no wake");
    std::thread::sleep(Duration::from_millis(250));
    writer.commit().unwrap();
    assert_eq!(woken.load(SeqCst), 1, "synced: visible, one wake");
    assert_eq!(reader.read(&reader.position("mqtt").unwrap(), 10).unwrap().len(), 1);
    writer.sync().unwrap();
    assert_eq!(woken.load(SeqCst), 1, "a sync with nothing new wakes no one");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_record_too_large_for_the_budget_is_refused_up_front_and_nothing_is_dropped() {
    let dir = temp("oversized");
    let bytes_max = 64 << 10;
    let config = OutboxConfig { bytes_max, sinks: vec!["slow".into()], ..config() };
    let (mut writer, reader) = OutboxWriter::open(&dir, config).unwrap();
    for i in 0..10 {
        writer.append(Class::Event, &event(i)).unwrap();
    }
    writer.commit().unwrap();
    // Before, a record larger than the budget made the outbox drop everything and then loop
    // for ever (each drop writing a gap event to drop), holding its lock. Run it on a thread
    // so that a regression fails the test instead of hanging it.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let huge = Upstream::Sample(SampleRecord {
            path: AssetPath::parse("acme/line3/press1/log").unwrap(),
            value_type: ValueType::Text,
            unit: None,
            value: Some(Value::Text("x".repeat(100 << 10).into())),
            quality: Quality::Good,
            source_time: None,
            gateway_time: Timestamp(0),
        });
        let refused = writer.append(Class::Raw, &huge);
        let small = writer.append(Class::Raw, &sample(1)).map(|_| ());
        let committed = writer.commit().map(|_| ());
        done_tx.send(()).unwrap();
        (refused, small, committed, writer.stats())
    });
    assert!(done_rx.recv_timeout(Duration::from_secs(10)).is_ok(), "the append did not return in 10 s");
    let (refused, small, committed, stats) = worker.join().unwrap();
    let e = refused.unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    assert!((small.is_ok(), committed.is_ok()) == (true, true), "the outbox goes on after refusing");
    assert_eq!(stats.dropped_full, [0; 4], "nothing was dropped to make room for it");
    assert_eq!(stats.refused_too_large, 1);
    let all = reader.read(&Position::default(), usize::MAX).unwrap();
    assert_eq!(all.len(), 11, "the ten events and the small record");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A diode receiver's outbox: records received whole keep the id they had on the sending side
/// (on the wire and across a reopen), its own records are told apart as `diode-<id>`, and
/// the sinks acknowledge by the local id as for any record.
#[test]
fn a_mirror_outbox_keeps_the_senders_ids() {
    use airlock_store::{Origin, RecordId};
    let dir = temp("mirror");
    let mirror = || OutboxConfig { mirror: true, ..config() };
    let (mut writer, reader) = OutboxWriter::open(&dir, mirror()).unwrap();
    let mut bytes = Vec::new();
    airlock_upstream::encode(&sample(7), &mut bytes);
    let far = RecordId { class: Class::Raw, seq: 1_000_007 };
    let local = writer.append_mirrored(far, Timestamp(7), &bytes).unwrap();
    let own = writer.append(Class::Event, &event(8)).unwrap();
    writer.commit().unwrap();
    drop((writer, reader));
    let (_writer, reader) = OutboxWriter::open(&dir, mirror()).unwrap();
    let held = reader.read(&Position::default(), 10).unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!((held[0].id, held[0].origin, held[0].wire_id().to_string()), (own, Origin::Receiver, "diode-e1".into()));
    assert_eq!(held[0].record, event(8));
    assert_eq!((held[1].id, held[1].origin), (local, Origin::Mirrored(far)));
    assert_eq!(held[1].wire_id().to_string(), "r1000007");
    assert_eq!(held[1].record, sample(7));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A diode receiver's outbox that fills up names what it dropped by the ids the records had on
/// the sending side (what its sinks carry and a consumer knows), not by its own local numbers.
#[test]
fn a_full_mirror_outbox_names_the_senders_ids_in_its_gap_events() {
    use airlock_store::RecordId;
    let dir = temp("mirror-full");
    let config = OutboxConfig { bytes_max: 64 << 10, sinks: vec!["slow".into()], mirror: true, ..config() };
    let (mut writer, reader) = OutboxWriter::open(&dir, config).unwrap();
    // The sender's ids start at r500001; the receiver's own numbering at r1.
    for i in 0..5000i64 {
        let mut bytes = Vec::new();
        airlock_upstream::encode(&sample(i), &mut bytes);
        let origin = RecordId { class: Class::Raw, seq: 500_001 + i as u64 };
        writer.append_mirrored(origin, Timestamp(i), &bytes).unwrap();
        if i % 50 == 0 {
            writer.commit().unwrap();
        }
    }
    writer.commit().unwrap();
    let all = reader.read(&Position::default(), usize::MAX).unwrap();
    let gaps: Vec<&GapRecord> = all
        .iter()
        .filter_map(|r| match &r.record {
            Upstream::Gap(g) => Some(g),
            _ => None,
        })
        .collect();
    assert!(!gaps.is_empty());
    assert_eq!(&*gaps[0].first_id, "r500001", "{:?}", gaps[0]);
    // Each gap's ids follow the last one's, in the sender's numbering.
    let seq = |id: &str| id[1..].parse::<u64>().unwrap();
    for g in &gaps {
        assert!(seq(&g.first_id) > 500_000 && seq(&g.last_id) >= seq(&g.first_id), "{g:?}");
        assert_eq!(seq(&g.last_id) - seq(&g.first_id) + 1, g.records, "{g:?}");
    }
    for w in gaps.windows(2) {
        assert_eq!(seq(&w[1].first_id), seq(&w[0].last_id) + 1);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An outbox folder written by a newer build is refused (its records could be misread and sent
/// upstream as something else); an older build's folder is opened and marked.
#[test]
fn an_outbox_written_by_a_newer_version_is_refused() {
    let dir = temp("format");
    drop(OutboxWriter::open(&dir, OutboxConfig::default()).unwrap());
    let format = dir.join("FORMAT");
    assert_eq!(std::fs::read_to_string(&format).unwrap(), "airlock-outbox 1\n");
    std::fs::write(&format, "airlock-outbox 2\n").unwrap();
    let e = OutboxWriter::open(&dir, OutboxConfig::default()).map(|_| ()).unwrap_err();
    assert!(matches!(e, airlock_store::StoreError::NewerFormat { found: 2, known: 1, .. }), "{e}");
    assert!(e.to_string().contains("written by a newer airlock (format 2)"), "{e}");
    std::fs::remove_file(&format).unwrap();
    drop(OutboxWriter::open(&dir, OutboxConfig::default()).unwrap());
    assert_eq!(std::fs::read_to_string(&format).unwrap(), "airlock-outbox 1\n");
    let _ = std::fs::remove_dir_all(&dir);
}
