//! Both halves of a diode on loopback, with real UDP sockets: the sending half (a sink on the
//! one runner, reading a real outbox) and the receiving half (into its own mirror outbox). A
//! relay between them plays the link: it forwards datagrams one way and drops some (seeded
//! random loss, or a burst where everything is dropped), as a lossy fibre would.
//!
//! What must hold: with enough repair every record arrives, once, with its id and bytes; with
//! too little, the `diode_gap` events name exactly the ids that did not arrive (checked against
//! what the sender sent: nothing invented, nothing unnamed); a repeat covers a burst.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_config::DiodeSink;
use airlock_diode::receive::{ReceiveSettings, ReceiveStatus, Receiver};
use airlock_diode::send::{DiodeSender, OtState};
use airlock_model::{AssetPath, Quality, Timestamp, Value, ValueType};
use airlock_north::SinkHealth;
use airlock_store::{Class, FsyncPolicy, Origin, OutboxConfig, OutboxReader, OutboxWriter, Position};
use airlock_upstream::{GapCause, SampleRecord, Upstream};

fn temp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-diode-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn sample(i: u64) -> Upstream {
    Upstream::Sample(SampleRecord {
        path: AssetPath::parse("acme/plant/press/line1/press1/speed").unwrap(),
        value_type: ValueType::F64,
        value: Some(Value::F64(i as f64 * 0.5)),
        unit: Some("rpm".into()),
        quality: Quality::Good,
        source_time: None,
        gateway_time: Timestamp(1_700_000_000_000_000_000 + i as i64 * 1_000_000),
    })
}

/// The OT side's outbox with `n` raw records.
fn ot_outbox(dir: &Path, n: u64) -> OutboxReader {
    let config = OutboxConfig { fsync: FsyncPolicy::Never, sinks: vec!["diode".into()], ..OutboxConfig::default() };
    let (mut writer, reader) = OutboxWriter::open(dir, config).unwrap();
    for i in 1..=n {
        writer.append(Class::Raw, &sample(i)).unwrap();
        if i % 1000 == 0 {
            writer.commit().unwrap();
        }
    }
    writer.commit().unwrap();
    reader
}

/// The link: forwards from its own port to `to`, dropping datagrams as `drop` says.
struct Relay {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Relay {
    fn start(to: SocketAddr, mut drop: impl FnMut(u64) -> bool + Send + 'static) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let address = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let out = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buf = vec![0u8; 65_536];
            let (mut n, mut dropped) = (0u64, 0u64);
            while !flag.load(Relaxed) {
                let Ok((len, _)) = socket.recv_from(&mut buf) else { continue };
                n += 1;
                if drop(n) {
                    dropped += 1;
                    continue;
                }
                out.send_to(&buf[..len], to).unwrap();
            }
            dropped
        });
        Self { address, stop, thread: Some(thread) }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// xorshift64*, seeded: the loss pattern is the same on every run.
fn rng(seed: u64) -> impl FnMut() -> f64 {
    let mut x = seed;
    move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct It {
    reader: OutboxReader,
    status: Arc<ReceiveStatus>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    address: SocketAddr,
}

fn receiver(dir: &Path, reorder: Duration) -> It {
    receiver_with(dir, reorder, OutboxConfig::default().bytes_max)
}

fn receiver_with(dir: &Path, reorder: Duration, bytes_max: u64) -> It {
    receiver_keyed(dir, reorder, bytes_max, None)
}

fn receiver_keyed(dir: &Path, reorder: Duration, bytes_max: u64, key_file: Option<std::path::PathBuf>) -> It {
    let config = OutboxConfig {
        bytes_max,
        fsync: FsyncPolicy::Never,
        sinks: vec!["jsonl".into()],
        mirror: true,
        ..OutboxConfig::default()
    };
    let (writer, reader) = OutboxWriter::open(&dir.join("outbox"), config).unwrap();
    let settings = ReceiveSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        sender: "press-gw".into(),
        reorder,
        silent_after: Duration::from_secs(30),
        receive_buffer_bytes: 8 << 20,
        key_file,
    };
    let status = Arc::new(ReceiveStatus::default());
    let r = Receiver::new(settings, writer, &reader, dir, Arc::clone(&status)).unwrap();
    let address = r.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || r.run(&flag));
    It { reader, status, stop, thread: Some(thread), address }
}

impl It {
    fn stop(mut self) -> OutboxReader {
        self.stop.store(true, Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.reader
    }
}

fn settings(to: SocketAddr, repair_percent: f64, repeat: Option<Duration>) -> DiodeSink {
    DiodeSink {
        address: to,
        bind: None,
        mtu_bytes: 1500,
        repair_percent,
        rate_max_bytes_per_s: 50_000_000,
        heartbeat: Duration::from_millis(200),
        repeat,
        block_bytes: 16_384,
        key_file: None,
    }
}

/// Runs the sending half until the OT outbox is sent, and `settle` more (heartbeats, repeats).
fn send_all(reader: &OutboxReader, settings: DiodeSink, settle: Duration) {
    let probe = Box::new(|| OtState { devices_up: 3, devices_down: 1, queued: 0, store_failing: false });
    let sink = DiodeSender::new("diode", "press-gw", settings, [0; 4], probe);
    let stop = Arc::new(AtomicBool::new(false));
    let health = Arc::new(SinkHealth::default());
    let thread = airlock_north::spawn(sink, reader.clone(), Arc::clone(&stop), health).unwrap();
    let end = reader.end().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reader.position("diode").unwrap() != end {
        assert!(Instant::now() < deadline, "the sending half did not send everything in 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(settle);
    stop.store(true, Relaxed);
    thread.join().unwrap();
}

/// What the receiving side holds: mirrored raw ids (in order), and the raw ids named missing.
fn received(reader: &OutboxReader) -> (Vec<u64>, BTreeSet<u64>, Vec<Upstream>) {
    let mut ids = Vec::new();
    let mut missing = BTreeSet::new();
    let mut records = Vec::new();
    let mut at = Position::default();
    loop {
        let batch = reader.read(&at, 10_000).unwrap();
        if batch.is_empty() {
            break;
        }
        for r in batch {
            at.advance(r.id);
            match (&r.origin, &r.record) {
                (Origin::Mirrored(id), _) => {
                    assert_eq!(id.class, Class::Raw);
                    ids.push(id.seq);
                    records.push(r.record.clone());
                }
                (Origin::Receiver, Upstream::Gap(g)) => {
                    assert_eq!(&*g.class, "raw");
                    assert!(matches!(g.cause, GapCause::DiodeLost | GapCause::DiodeDown), "{g:?}");
                    let first: u64 = g.first_id[1..].parse().unwrap();
                    let last: u64 = g.last_id[1..].parse().unwrap();
                    assert_eq!(g.records, last - first + 1);
                    for id in first..=last {
                        assert!(missing.insert(id), "r{id} named missing twice");
                    }
                }
                other => panic!("unexpected record on the receiving side: {other:?}"),
            }
        }
    }
    (ids, missing, records)
}

#[test]
fn every_record_arrives_once_with_its_id_through_light_loss() {
    let dir = temp("light");
    const N: u64 = 20_000;
    let ot = ot_outbox(&dir.join("ot"), N);
    let it = receiver(&dir.join("it"), Duration::from_millis(500));
    let mut random = rng(7);
    // The first datagram (the sender's first heartbeat) passes: a new receiver starts there.
    let relay = Relay::start(it.address, move |n| n > 1 && random() < 0.01);
    send_all(&ot, settings(relay.address, 20.0, None), Duration::from_millis(1500));
    let dropped = relay.stop();
    let status = Arc::clone(&it.status);
    let (ids, missing, records) = received(&it.stop());
    assert!(dropped > 10, "the link dropped only {dropped} datagrams");
    assert!(ids.iter().copied().eq(1..=N), "not every id once in order: {} ids, {} missing", ids.len(), missing.len());
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r, &sample(i as u64 + 1), "record r{} arrived changed", i + 1);
    }
    let stats = *status.stats.lock().unwrap();
    assert_eq!((stats.records, stats.blocks_lost, stats.malformed), (N, 0, 0), "{stats:?}");
    let beat = status.heartbeat.lock().unwrap().clone().unwrap().1;
    assert_eq!((beat.devices_up, beat.devices_down, beat.sent[3]), (3, 1, N), "{beat:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn heavy_loss_names_exactly_the_missing_ids() {
    let dir = temp("heavy");
    const N: u64 = 10_000;
    let ot = ot_outbox(&dir.join("ot"), N);
    let it = receiver(&dir.join("it"), Duration::from_millis(300));
    let mut random = rng(11);
    let relay = Relay::start(it.address, move |n| n > 1 && random() < 0.20);
    send_all(&ot, settings(relay.address, 2.0, None), Duration::from_millis(1500));
    relay.stop();
    let status = Arc::clone(&it.status);
    let named = status.stats.lock().unwrap().missing;
    // The operator on the OT side sends again from the first id named missing, over a link
    // that now loses nothing: what was named missing arrives late, nothing else twice.
    let first = {
        let (_, missing, _) = received(&it.reader);
        *missing.first().unwrap()
    };
    airlock_store::request_rewind(
        &dir.join("ot"),
        "diode",
        airlock_store::RewindFrom::Id(airlock_store::RecordId { class: Class::Raw, seq: first }),
    )
    .unwrap();
    let clean = Relay::start(it.address, |_| false);
    send_all(&ot, settings(clean.address, 2.0, None), Duration::from_millis(1000));
    clean.stop();
    let stats = *status.stats.lock().unwrap();
    assert_eq!(stats.recovered, named, "every id named missing came when sent again: {stats:?}");
    let (ids, missing, _) = received(&it.stop());
    let late: BTreeSet<u64> = ids.iter().copied().filter(|id| missing.contains(id)).collect();
    assert_eq!(late, missing, "the ids named missing arrived when sent again");
    let ids: Vec<u64> = ids.into_iter().filter(|id| !late.contains(id)).collect();
    assert!(!missing.is_empty(), "20 % loss with 2 % repair lost nothing");
    assert!(ids.len() > 100, "only {} arrived", ids.len());
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, no duplicates");
    // Nothing invented, nothing unnamed: what arrived and what is named missing are apart and
    // together exactly what was sent.
    let arrived: BTreeSet<u64> = ids.iter().copied().collect();
    assert!(arrived.is_disjoint(&missing), "an id both arrived (in time) and was named missing");
    let all: BTreeSet<u64> = arrived.union(&missing).copied().collect();
    let unaccounted: Vec<u64> = (1..=N).filter(|id| !all.contains(id)).take(10).collect();
    assert!(all.iter().copied().eq(1..=N), "arrived + named missing = sent; unaccounted: {unaccounted:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_repeat_covers_a_burst_and_without_it_the_burst_is_named() {
    for repeat in [Some(Duration::from_millis(700)), None] {
        let dir = temp(if repeat.is_some() { "burst-repeat" } else { "burst" });
        const N: u64 = 6_000;
        let ot = ot_outbox(&dir.join("ot"), N);
        let it = receiver(&dir.join("it"), Duration::from_millis(300));
        // Datagrams 100 to 249 are dropped: a burst far longer than any repair.
        let relay = Relay::start(it.address, |n| (100..250).contains(&n));
        let mut s = settings(relay.address, 5.0, repeat);
        s.rate_max_bytes_per_s = 2_000_000;
        send_all(&ot, s, Duration::from_millis(2500));
        assert_eq!(relay.stop(), 150);
        let (ids, missing, _) = received(&it.stop());
        let arrived: BTreeSet<u64> = ids.iter().copied().collect();
        let all: BTreeSet<u64> = arrived.union(&missing).copied().collect();
        assert!(all.iter().copied().eq(1..=N), "arrived + named missing = sent");
        match repeat {
            Some(_) => assert!(missing.is_empty(), "with a repeat, {} ids missing", missing.len()),
            None => assert!(!missing.is_empty(), "a 300-datagram burst lost nothing without a repeat"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn foreign_malformed_and_replayed_datagrams_are_counted_and_ignored() {
    let dir = temp("foreign");
    let it = receiver(&dir.join("it"), Duration::from_millis(300));
    let noise = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut random = rng(3);
    for i in 0..2000 {
        let len = (random() * 1500.0) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| (random() * 256.0) as u8).collect();
        if i % 2 == 0 && bytes.len() > 4 {
            bytes[..3].copy_from_slice(b"AD\x01"); // looks like ours, checksum wrong
        }
        noise.send_to(&bytes, it.address).unwrap();
    }
    // A well-formed heartbeat from another gateway.
    let mut beat = Vec::new();
    let other = airlock_diode::wire::Heartbeat { name: "other-gw".into(), ..Default::default() };
    let header = airlock_diode::wire::Header { sender: airlock_diode::wire::sender_hash("other-gw"), session: 1 };
    airlock_diode::wire::encode_heartbeat(&mut beat, header, &other);
    noise.send_to(&beat, it.address).unwrap();
    // The expected sender's heartbeat from session 5, then a replay of one from session 4.
    let ours = airlock_diode::wire::Heartbeat { name: "press-gw".into(), ..Default::default() };
    for session in [5, 4] {
        let header = airlock_diode::wire::Header { sender: airlock_diode::wire::sender_hash("press-gw"), session };
        airlock_diode::wire::encode_heartbeat(&mut beat, header, &ours);
        noise.send_to(&beat, it.address).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = *it.status.stats.lock().unwrap();
        if stats.datagrams == 2003 {
            assert_eq!((stats.malformed, stats.foreign, stats.stale, stats.records), (2000, 1, 1, 0), "{stats:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (ids, missing, _) = received(&it.stop());
    assert!(ids.is_empty() && missing.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a fixed local address (`bind`), a new session (after a resend asked by hand, or a
/// failure) binds it again: the old socket is reused, not bound twice.
#[test]
fn a_sender_with_a_fixed_local_address_survives_a_new_session() {
    let dir = temp("bind");
    const N: u64 = 2_000;
    let ot = ot_outbox(&dir.join("ot"), N);
    let it = receiver(&dir.join("it"), Duration::from_millis(300));
    let local = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut s = settings(it.address, 10.0, None);
    s.bind = Some(local);
    let probe = Box::new(OtState::default);
    let sink = DiodeSender::new("diode", "press-gw", s, [0; 4], probe);
    let stop = Arc::new(AtomicBool::new(false));
    let health = Arc::new(SinkHealth::default());
    let thread = airlock_north::spawn(sink, ot.clone(), Arc::clone(&stop), Arc::clone(&health)).unwrap();
    let delivered = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while health.delivered.load(Relaxed) < n {
            assert!(
                Instant::now() < deadline,
                "{} delivered, {} failures",
                health.delivered.load(Relaxed),
                health.failures.load(Relaxed)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    delivered(N);
    let first = airlock_store::RecordId { class: Class::Raw, seq: 1 };
    airlock_store::request_rewind(&dir.join("ot"), "diode", airlock_store::RewindFrom::Id(first)).unwrap();
    delivered(2 * N);
    assert_eq!(health.failures.load(Relaxed), 0);
    stop.store(true, Relaxed);
    thread.join().unwrap();
    let status = Arc::clone(&it.status);
    it.stop();
    let stats = *status.stats.lock().unwrap();
    assert_eq!((stats.records, stats.duplicates), (N, N), "{stats:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A receiver killed between writing records into its outbox and writing `diode.state` starts
/// again from what its outbox holds (the newest id per class it has), not from the older state
/// file: nothing it has is named missing. So does one whose state file is gone.
#[test]
fn a_receiver_starts_from_what_its_outbox_holds_when_its_state_file_lags() {
    let dir = temp("lag");
    const N: u64 = 3_000;
    let ot = ot_outbox(&dir.join("ot"), N);
    let it = receiver(&dir.join("it"), Duration::from_millis(300));
    send_all(&ot, settings(it.address, 10.0, None), Duration::from_millis(500));
    drop(it.stop());
    let state = airlock_diode::receive::state_path(&dir.join("it"));
    for lagging in [Some(N / 2), None] {
        match lagging {
            Some(seq) => {
                let old = airlock_diode::assemble::State { last: [0, 0, 0, seq], ..Default::default() };
                std::fs::write(&state, airlock_diode::receive::encode_state(&old)).unwrap();
            }
            None => std::fs::remove_file(&state).unwrap(),
        }
        let it = receiver(&dir.join("it"), Duration::from_millis(300));
        let beat = airlock_diode::wire::Heartbeat {
            next_block: 1_000,
            sent: [0, 0, 0, N],
            name: "press-gw".into(),
            ..Default::default()
        };
        let mut d = Vec::new();
        let header = airlock_diode::wire::Header { sender: airlock_diode::wire::sender_hash("press-gw"), session: 2 };
        airlock_diode::wire::encode_heartbeat(&mut d, header, &beat);
        UdpSocket::bind("127.0.0.1:0").unwrap().send_to(&d, it.address).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let status = Arc::clone(&it.status);
        let (ids, missing, _) = received(&it.stop());
        assert_eq!(status.stats.lock().unwrap().missing, 0, "{lagging:?}: ids it holds named missing");
        assert!(missing.is_empty() && ids.len() as u64 == N, "{lagging:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A record larger than the receiving side's outbox takes is named missing, not dropped in
/// silence; the records around it arrive.
#[test]
fn a_record_too_large_for_the_receiving_outbox_is_named() {
    let dir = temp("large");
    let config = OutboxConfig { fsync: FsyncPolicy::Never, sinks: vec!["diode".into()], ..OutboxConfig::default() };
    let (mut writer, ot) = OutboxWriter::open(&dir.join("ot"), config).unwrap();
    writer.append(Class::Event, &event(1)).unwrap();
    let big = airlock_upstream::EventRecord { message: "x".repeat(100_000).into(), ..event_record(2) };
    writer.append(Class::Event, &Upstream::Event(big)).unwrap();
    writer.append(Class::Event, &event(3)).unwrap();
    writer.sync().unwrap();
    // This side's outbox takes records of at most 1 MiB / 16 = 64 KiB.
    let it = receiver_with(&dir.join("it"), Duration::from_millis(300), 1 << 20);
    send_all(&ot, settings(it.address, 10.0, None), Duration::from_millis(500));
    let reader = it.stop();
    let held = reader.read(&Position::default(), 100).unwrap();
    let mirrored: Vec<u64> =
        held.iter().filter_map(|r| if let Origin::Mirrored(id) = r.origin { Some(id.seq) } else { None }).collect();
    assert_eq!(mirrored, vec![1, 3]);
    let gaps: Vec<&airlock_upstream::GapRecord> =
        held.iter().filter_map(|r| if let Upstream::Gap(g) = &r.record { Some(g) } else { None }).collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!((&*gaps[0].first_id, &*gaps[0].last_id, gaps[0].cause), ("e2", "e2", GapCause::DiodeLost));
    let _ = std::fs::remove_dir_all(&dir);
}

fn event_record(i: i64) -> airlock_upstream::EventRecord {
    airlock_upstream::EventRecord {
        time: Timestamp(1_700_000_000_000_000_000 + i),
        asset: AssetPath::parse("acme/plant/press/line1/press1").unwrap(),
        kind: "parts_produced".into(),
        severity: airlock_model::Severity::Info,
        state: airlock_model::Transition::Once,
        message: format!("event {i}").into(),
        body: Vec::new(),
    }
}

fn event(i: i64) -> Upstream {
    Upstream::Event(event_record(i))
}

/// With a key shared by the two halves (`key_file`), every datagram carries an HMAC-SHA256 tag:
/// the receiver holding the same key takes every record; one holding another key, or none,
/// takes nothing and counts every datagram as unauthenticated; a sender without the key is
/// refused by a receiver that has one. So a device on the IT side's segment cannot forge records.
#[test]
fn only_datagrams_sealed_with_the_shared_key_are_taken() {
    let dir = temp("keyed");
    const N: u64 = 2_000;
    let ot = ot_outbox(&dir.join("ot"), N);
    std::fs::create_dir_all(&dir).unwrap();
    let (key, other) = (dir.join("diode.key"), dir.join("other.key"));
    std::fs::write(&key, b"0123456789abcdef0123456789abcdef").unwrap();
    std::fs::write(&other, b"fedcba9876543210fedcba9876543210").unwrap();
    let keyed = |to: SocketAddr| DiodeSink { key_file: Some(key.clone()), ..settings(to, 10.0, None) };
    let bytes_max = OutboxConfig::default().bytes_max;

    // The same key on both halves: every record, in order, unchanged.
    let it = receiver_keyed(&dir.join("it-same"), Duration::from_millis(300), bytes_max, Some(key.clone()));
    send_all(&ot, keyed(it.address), Duration::from_millis(600));
    let status = Arc::clone(&it.status);
    let (ids, missing, _) = received(&it.stop());
    assert!(ids.iter().copied().eq(1..=N) && missing.is_empty(), "{} ids, {} missing", ids.len(), missing.len());
    assert_eq!(status.stats.lock().unwrap().unauthenticated, 0);

    // Another key at the receiver, no key at the receiver, no key at the sender: nothing taken.
    let cases: [(&str, Option<std::path::PathBuf>, bool); 3] =
        [("it-other", Some(other.clone()), true), ("it-none", None, true), ("it-keyed", Some(key.clone()), false)];
    for (name, receiver_key, sender_keyed) in cases {
        let fresh = ot_outbox(&dir.join(format!("ot-{name}")), N);
        let it = receiver_keyed(&dir.join(name), Duration::from_millis(300), bytes_max, receiver_key);
        let to = it.address;
        let sink = if sender_keyed { keyed(to) } else { settings(to, 10.0, None) };
        send_all(&fresh, sink, Duration::from_millis(600));
        let status = Arc::clone(&it.status);
        let (ids, missing, _) = received(&it.stop());
        let stats = *status.stats.lock().unwrap();
        assert!(ids.is_empty() && missing.is_empty(), "{name}: {} records taken", ids.len());
        assert!(stats.unauthenticated > 0 && stats.unauthenticated == stats.datagrams, "{name}: {stats:?}");
        assert_eq!(stats.malformed, 0, "{name}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
