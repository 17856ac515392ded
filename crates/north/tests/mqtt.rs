//! The MQTT sink against a real broker: mosquitto (the Debian package, started here on a free
//! loopback port) and mosquitto_sub as the IT-side subscriber. Every record arrives, with the
//! documented topics and payloads, in order per topic; a broker outage under steady load loses
//! nothing (duplicates only with the same message id); and the sink never subscribes.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use airlock_config::MqttSink;
use airlock_model::{Timestamp, Value as TagValue, ValueType};
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxReader, OutboxWriter};
use airlock_upstream::Upstream;
use serde_json::Value;
use support::{Broker, Received, mosquitto_sub, records, temp};

/// mosquitto_sub on every topic, QoS 1, persistent session: `(topic, payload)` as they come.
struct Subscriber {
    child: Child,
    received: Received,
}

impl Subscriber {
    fn start(broker: &Broker) -> Self {
        let port = broker.port.to_string();
        let args = ["-h", "127.0.0.1", "-p", &port, "-t", "#", "-q", "1", "-c", "-i", "it-side"];
        let (child, received) = mosquitto_sub(&args);
        broker.wait_subscribed("it-side");
        Self { child, received }
    }

    /// Waits until `n` distinct message ids have arrived (bounded), and returns everything.
    fn wait_for(&self, n: usize, within: Duration) -> Vec<(String, String)> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.received.lock().unwrap().clone();
            let ids: std::collections::HashSet<String> = got.iter().filter_map(|(_, p)| id_of(p)).collect();
            if ids.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn id_of(payload: &str) -> Option<String> {
    serde_json::from_str::<Value>(payload).ok()?.get("id")?.as_str().map(str::to_owned)
}

fn sink_config(port: u16) -> MqttSink {
    MqttSink {
        host: "127.0.0.1".into(),
        port,
        tls: false,
        ca_file: None,
        client_cert: None,
        topic_prefix: "uns/".into(),
        client_id: "airlock-under-test".into(),
        qos: 1,
        username: None,
        password: None,
        inflight_max: 50,
        rate_max_per_s: 100_000.0,
        keep_alive: Duration::from_secs(5),
        sparkplug: None,
        replay: airlock_config::Replay::InOrder,
    }
}

fn outbox(dir: &Path) -> (OutboxWriter, OutboxReader) {
    let config = OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(10)),
        sinks: vec!["uns".into()],
        ..OutboxConfig::default()
    };
    OutboxWriter::open(&dir.join("outbox"), config).unwrap()
}

/// Record `i`: every hundredth an event (its number in the body as `n`), the others samples
/// whose value is `i`.
fn record(i: u64) -> (Class, Upstream) {
    let time = Timestamp(i as i64);
    if i.is_multiple_of(100) {
        (Class::Event, records::event("test", &format!("event {i}"), i as f64, time))
    } else {
        let path = format!("acme/site/area/line3/cell1/press{}/speed", i % 4);
        (Class::Raw, records::sample(&path, ValueType::U64, TagValue::U64(i), time))
    }
}

/// The number of a record as it arrived.
fn number(v: &Value) -> u64 {
    v.get("n").unwrap_or(&v["value"]).as_f64().unwrap() as u64
}

/// Every message of a data topic, checked: the payload is the record's JSON with the id first,
/// and per topic the records come in order (a resent duplicate repeats an earlier one exactly).
fn check_messages(got: &[(String, String)], expected: u64) {
    let mut by_id: HashMap<String, String> = HashMap::new();
    let mut last_new_per_topic: BTreeMap<String, u64> = BTreeMap::new();
    for (topic, payload) in got.iter().filter(|(t, _)| !t.contains("/status")) {
        assert!(topic.starts_with("uns/"), "{topic}");
        assert!(payload.starts_with("{\"id\":\"plant7-"), "{payload}");
        let v: Value = serde_json::from_str(payload).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        let n = number(&v);
        let (class, body) = record(n);
        let expected_topic = format!("uns/{}", body.topic());
        assert_eq!(topic, &expected_topic);
        assert_eq!(id.chars().nth(7), Some(if class == Class::Event { 'e' } else { 'r' }), "{id}");
        match by_id.get(&id) {
            Some(first) => assert_eq!(first, payload, "a duplicate id carries the same record"),
            None => {
                let last = last_new_per_topic.entry(topic.clone()).or_insert(0);
                assert!(n > *last || *last == 0, "{topic}: record {n} after {last} (order)");
                *last = n;
                by_id.insert(id, payload.clone());
            }
        }
    }
    if by_id.len() as u64 != expected {
        let seen: std::collections::BTreeSet<u64> =
            by_id.values().map(|p| number(&serde_json::from_str::<Value>(p).unwrap())).collect();
        let missing: Vec<u64> = (1..=expected).filter(|n| !seen.contains(n)).collect();
        panic!("{} of {expected} records arrived; missing: {:?}...", by_id.len(), &missing[..missing.len().min(40)]);
    }
}

#[test]
fn every_record_arrives_and_the_sink_never_subscribes() {
    let dir = temp("all");
    let broker = Broker::start(&dir);
    let sub = Subscriber::start(&broker);
    let (mut writer, reader) = outbox(&dir);
    let n = 2000;
    for i in 1..=n {
        let (class, body) = record(i);
        writer.append(class, &body).unwrap();
    }
    writer.sync().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, health) =
        airlock_north::mqtt::spawn("uns", "plant7", &sink_config(broker.port), reader.clone(), Arc::clone(&stop))
            .unwrap();
    let got = sub.wait_for(n as usize, Duration::from_secs(30));
    stop.store(true, Relaxed);
    handle.join().unwrap();
    check_messages(&got, n);
    assert_eq!(health.delivered.load(Relaxed), n, "acknowledged once each, on PUBACK");
    let position = reader.position("uns").unwrap();
    assert_eq!(
        position.0[Class::Event as usize] + position.0[Class::Raw as usize],
        n,
        "the cursor passed every record"
    );
    // Events went first: every event arrived before the raw records read after it.
    let first_raw = got.iter().position(|(t, _)| t.contains("/press")).unwrap();
    let last_event = got.iter().rposition(|(t, _)| t.contains("_airlock/events")).unwrap();
    assert!(last_event < first_raw, "events are delivered before raw records");
    // The status topic: online while connected, offline at the clean stop, retained.
    // (The last may still be on its way to the subscriber: waited for, bounded.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let statuses = loop {
        let statuses: Vec<String> = sub
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == "uns/_airlock/plant7/status")
            .map(|(_, p)| p.clone())
            .collect();
        if statuses.last().is_some_and(|s| s == "offline") || Instant::now() > deadline {
            break statuses;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(statuses.first().map(String::as_str), Some("online"), "{statuses:?}");
    assert_eq!(statuses.last().map(String::as_str), Some("offline"), "{statuses:?}");
    // One way: the broker saw the IT-side subscriber subscribe, and never the sink.
    let log = broker.log();
    assert!(log.contains("Received SUBSCRIBE from it-side"), "the log records subscriptions");
    assert!(!log.contains("Received SUBSCRIBE from airlock-under-test"), "the sink subscribed");
    assert!(log.contains("Received PUBLISH from airlock-under-test"));
    drop(sub);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broker_outage_under_steady_load_loses_nothing() {
    let dir = temp("outage");
    let mut broker = Broker::start(&dir);
    let sub = Subscriber::start(&broker);
    let (writer, reader) = outbox(&dir);
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, health) =
        airlock_north::mqtt::spawn("uns", "plant7", &sink_config(broker.port), reader, Arc::clone(&stop)).unwrap();
    let n = 3000u64;
    let producer = std::thread::spawn(move || {
        let mut writer = writer;
        for i in 1..=n {
            let (class, body) = record(i);
            writer.append(class, &body).unwrap();
            writer.commit().unwrap();
            std::thread::sleep(Duration::from_micros(1500)); // ~650 records/s for ~4.5 s
        }
        writer.sync().unwrap();
        writer
    });
    std::thread::sleep(Duration::from_millis(1200));
    broker.stop();
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    let writer = producer.join().unwrap();
    let got = sub.wait_for(n as usize, Duration::from_secs(60));
    stop.store(true, Relaxed);
    handle.join().unwrap();
    check_messages(&got, n);
    assert!(health.failures.load(Relaxed) >= 1, "the sink saw the outage and reconnected");
    drop(writer);
    drop(sub);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn live_first_replay_sends_new_records_before_a_paced_backlog() {
    let dir = temp("live-first");
    let broker = Broker::start(&dir);
    let sub = Subscriber::start(&broker);
    let (mut writer, reader) = outbox(&dir);
    let backlog = 400u64;
    for i in 1..=backlog {
        writer
            .append(Class::Raw, &records::sample("acme/old", ValueType::U64, TagValue::U64(i), Timestamp(0)))
            .unwrap();
    }
    writer.sync().unwrap();
    let mut config = sink_config(broker.port);
    config.replay = airlock_config::Replay::LiveFirst { rate_max_per_s: 100.0 };
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, health) =
        airlock_north::mqtt::spawn("uns", "plant7", &config, reader.clone(), Arc::clone(&stop)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=20u64 {
        writer
            .append(Class::Raw, &records::sample("acme/live", ValueType::U64, TagValue::U64(i), Timestamp(0)))
            .unwrap();
    }
    writer.sync().unwrap();
    let got = sub.wait_for((backlog + 20) as usize, Duration::from_secs(30));
    stop.store(true, Relaxed);
    handle.join().unwrap();
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).filter(|t| !t.ends_with("/status")).collect();
    let last_live = topics.iter().rposition(|t| *t == "uns/acme/live").expect("live records arrived");
    let last_old = topics.iter().rposition(|t| *t == "uns/acme/old").expect("the backlog arrived");
    assert!(last_live < last_old, "the live records came before the backlog was through");
    let old_before_live = topics[..last_live].iter().filter(|t| **t == "uns/acme/old").count();
    assert!(old_before_live < 200, "the backlog was paced: {old_before_live} old records before the last live one");
    assert_eq!(health.delivered.load(Relaxed), backlog + 20);
    let position = reader.position("uns").unwrap();
    assert_eq!(position.0[Class::Raw as usize], backlog + 20, "the cursor is through everything once the backlog is");
    drop(sub);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_password_comes_from_a_file_and_a_wrong_one_is_refused() {
    let dir = temp("auth");
    let passwords = dir.join("passwords");
    let made = Command::new("mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(&passwords)
        .args(["airlock", "s3cret pass"])
        .status()
        .unwrap();
    assert!(made.success());
    let broker = Broker::start_with(&dir, &format!("allow_anonymous false\npassword_file {}\n", passwords.display()));
    let run = |secret: &str, name: &str, within: Duration| {
        let file = dir.join(format!("{name}.pass"));
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        let (mut writer, reader) = outbox(&dir.join(name));
        for i in 1..=50u64 {
            let (class, body) = record(i);
            writer.append(class, &body).unwrap();
        }
        writer.sync().unwrap();
        let mut config = sink_config(broker.port);
        config.username = Some("airlock".into());
        config.password = Some(airlock_config::Secret::File(file));
        let stop = Arc::new(AtomicBool::new(false));
        let (handle, health) = airlock_north::mqtt::spawn("uns", "plant7", &config, reader, Arc::clone(&stop)).unwrap();
        let deadline = Instant::now() + within;
        while health.delivered.load(Relaxed) < 50 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Relaxed);
        handle.join().unwrap();
        (health.delivered.load(Relaxed), health.failures.load(Relaxed))
    };
    assert_eq!(run("s3cret pass", "right", Duration::from_secs(10)).0, 50, "the right password from the file");
    let (delivered, failures) = run("guess", "wrong", Duration::from_millis(1500));
    assert_eq!(delivered, 0, "a wrong password delivers nothing");
    assert!(failures >= 1);
    assert!(!broker.log().contains("s3cret"), "the password is not in the broker's log");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_record_too_big_for_an_mqtt_packet_is_skipped_and_the_rest_goes_on() {
    // The outbox takes records up to a sixteenth of its budget (64 MiB by default); an MQTT
    // packet here is at most 1 MiB. Before, such a record failed every session for good.
    let dir = temp("too-big");
    let broker = Broker::start(&dir);
    let sub = Subscriber::start(&broker);
    let (mut writer, reader) = outbox(&dir);
    let time = Timestamp(1);
    let big = records::sample(
        "acme/site/area/line3/cell1/press1/log",
        ValueType::Text,
        TagValue::Text("x".repeat(2 << 20).into()),
        time,
    );
    writer
        .append(
            Class::Raw,
            &records::sample("acme/site/area/line3/cell1/press1/speed", ValueType::U64, TagValue::U64(1), time),
        )
        .unwrap();
    writer.append(Class::Raw, &big).unwrap();
    writer
        .append(
            Class::Raw,
            &records::sample("acme/site/area/line3/cell1/press1/speed", ValueType::U64, TagValue::U64(3), time),
        )
        .unwrap();
    writer.sync().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, health) =
        airlock_north::mqtt::spawn("uns", "plant7", &sink_config(broker.port), reader.clone(), Arc::clone(&stop))
            .unwrap();
    let got = sub.wait_for(2, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.position("uns").unwrap().0[Class::Raw as usize] < 3 {
        assert!(Instant::now() < deadline, "the cursor did not pass the big record");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Relaxed);
    handle.join().unwrap();
    let ids: Vec<String> = got.iter().filter_map(|(_, p)| id_of(p)).collect();
    assert!(ids.contains(&"plant7-r1".to_owned()) && ids.contains(&"plant7-r3".to_owned()), "{ids:?}");
    assert!(!ids.contains(&"plant7-r2".to_owned()));
    assert_eq!(health.dead_lettered.load(Relaxed), 1, "the skipped record is counted");
    drop(sub);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads one MQTT packet from a scripted broker's socket: its first byte and body.
fn read_packet(s: &mut std::net::TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    use std::io::Read;
    let mut first = [0u8; 1];
    s.read_exact(&mut first)?;
    let (mut length, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        length |= usize::from(b[0] & 0x7f) << shift;
        shift += 7;
        if b[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0; length];
    s.read_exact(&mut body)?;
    Ok((first[0], body))
}

/// A broker of our own script (mosquitto cannot be made hostile): its first session sends a
/// PUBLISH the sink never subscribed to, its second a PUBACK claiming 256 MB. Each ends only
/// that session, with the reason named and nothing counted delivered; the third session
/// acknowledges every publish (in reverse order within each read) and everything is delivered.
#[test]
fn a_hostile_broker_ends_only_its_session_and_nothing_unacknowledged_counts() {
    use std::io::Write;
    const N: u64 = 300;
    let dir = temp("hostile");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (go, next) = std::sync::mpsc::channel::<()>();
    let broker = std::thread::spawn(move || {
        let hostile: [&[u8]; 2] = [&[0x30, 5, 0, 1, b'a', b'x', b'y'], &[0x40, 0xff, 0xff, 0xff, 0x7f]];
        for bytes in hostile {
            let (mut s, _) = listener.accept().unwrap();
            let (first, _) = read_packet(&mut s).unwrap();
            assert_eq!(first, 0x10, "CONNECT first");
            s.write_all(&[0x20, 2, 0, 0]).unwrap();
            s.write_all(bytes).unwrap();
            next.recv().unwrap();
        }
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        assert_eq!(read_packet(&mut s).unwrap().0, 0x10);
        s.write_all(&[0x20, 2, 0, 0]).unwrap();
        let (mut data, mut pending) = (0u64, Vec::new());
        while data < N {
            let (first, body) = read_packet(&mut s).unwrap();
            if first >> 4 == 3 && first & 0x06 == 0x02 {
                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let topic = String::from_utf8_lossy(&body[2..2 + topic_len]).into_owned();
                pending.push([body[2 + topic_len], body[3 + topic_len]]);
                if !topic.ends_with("/status") {
                    data += 1;
                }
            }
            if pending.len() >= 7 || data == N {
                for id in pending.drain(..).rev() {
                    s.write_all(&[0x40, 2, id[0], id[1]]).unwrap();
                }
            }
        }
        // Hold the session until the sink has said goodbye.
        let _ = read_packet(&mut s);
    });

    let (mut writer, reader) = outbox(&dir);
    for i in 1..=N {
        let (class, body) = record(i);
        writer.append(class, &body).unwrap();
    }
    writer.sync().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, health) =
        airlock_north::mqtt::spawn("uns", "plant7", &sink_config(port), reader.clone(), Arc::clone(&stop)).unwrap();
    for reason in
        ["a PUBLISH, though this client subscribes to nothing", "of type 4 with flags 0x0 and 268435455 bytes"]
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !health.problem().contains(reason) {
            assert!(Instant::now() < deadline, "no failure naming {reason:?}; problem: {:?}", health.problem());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(health.delivered.load(Relaxed), 0);
        go.send(()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while health.delivered.load(Relaxed) < N {
        assert!(Instant::now() < deadline, "{} of {N} delivered", health.delivered.load(Relaxed));
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Relaxed);
    handle.join().unwrap();
    broker.join().unwrap();
    assert_eq!(health.delivered.load(Relaxed), N);
    assert!(health.failures.load(Relaxed) >= 2);
    let position = reader.position("uns").unwrap();
    assert_eq!(position.0[Class::Raw as usize] + position.0[Class::Event as usize], N, "{position:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A broker of our own on loopback for one session: it accepts the CONNECT, then `then` has the
/// connection. Returns its port, the listening socket (held open until the test is done, so
/// that the sink's reconnection waits for a CONNACK instead of being refused and replacing the
/// problem the test looks for, as it did on a loaded machine) and the broker's thread.
fn one_session_broker(
    then: impl FnOnce(std::net::TcpStream) + Send + 'static,
) -> (u16, std::net::TcpListener, std::thread::JoinHandle<()>) {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = listener.try_clone().unwrap();
    let broker = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        assert_eq!(read_packet(&mut s).unwrap().0, 0x10);
        s.write_all(&[0x20, 2, 0, 0]).unwrap();
        then(s);
    });
    (port, held, broker)
}

/// Waits (15 s at most) until the sink's problem says `what`, while `meanwhile` runs each turn.
fn until_problem(health: &airlock_north::SinkHealth, what: &str, mut meanwhile: impl FnMut()) {
    let started = Instant::now();
    while !health.problem().contains(what) {
        assert!(started.elapsed() < Duration::from_secs(15), "{what:?} not seen; problem: {:?}", health.problem());
        meanwhile();
    }
}

/// A broker that accepts the connection and then answers nothing, while new records keep
/// coming: the sink keeps sending, so no ping falls due, yet the silence is noticed within
/// the keep-alive (before, not until the window had filled) and nothing counts delivered.
#[test]
fn a_broker_gone_silent_is_noticed_while_records_keep_coming() {
    let dir = temp("silent");
    let (port, held, broker) = one_session_broker(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // Read (and drop) whatever comes until the sink hangs up.
        while read_packet(&mut s).is_ok() {}
    });
    let (mut writer, reader) = outbox(&dir);
    let mut config = sink_config(port);
    config.keep_alive = Duration::from_secs(2);
    config.inflight_max = 1000;
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, health) = airlock_north::mqtt::spawn("uns", "plant7", &config, reader, Arc::clone(&stop)).unwrap();
    let mut i = 0;
    until_problem(&health, "acknowledged nothing", || {
        i += 1;
        let (class, body) = record(i);
        writer.append(class, &body).unwrap();
        writer.sync().unwrap();
        std::thread::sleep(Duration::from_millis(200));
    });
    assert_eq!(health.delivered.load(Relaxed), 0);
    stop.store(true, Relaxed);
    drop(held);
    handle.join().unwrap();
    broker.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ten records for the sink (a window of 2, a keep-alive of 2 s) and a broker of `port` that
/// never acknowledges one: the sink says it "acknowledged nothing" within 15 s and counts
/// nothing delivered.
fn ten_records_are_held_back_and_that_is_noticed(
    dir: &std::path::Path,
    port: u16,
    held: std::net::TcpListener,
    broker: std::thread::JoinHandle<()>,
) {
    let (mut writer, reader) = outbox(dir);
    for i in 1..=10 {
        let (class, body) = record(i);
        writer.append(class, &body).unwrap();
    }
    writer.sync().unwrap();
    let mut config = sink_config(port);
    config.keep_alive = Duration::from_secs(2);
    config.inflight_max = 2;
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, health) = airlock_north::mqtt::spawn("uns", "plant7", &config, reader, Arc::clone(&stop)).unwrap();
    until_problem(&health, "acknowledged nothing", || std::thread::sleep(Duration::from_millis(100)));
    assert_eq!(health.delivered.load(Relaxed), 0);
    stop.store(true, Relaxed);
    drop(held);
    handle.join().unwrap();
    broker.join().unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

/// A broker that answers every ping and holds back every PUBACK: the sink's window fills, it
/// sends only pings, and each PINGRESP used to count as the broker being heard, so the stall
/// was never noticed. Now only a PUBACK is progress.
#[test]
fn a_broker_that_answers_pings_but_acknowledges_nothing_is_noticed() {
    use std::io::Write;
    let dir = temp("pings-only");
    let (port, held, broker) = one_session_broker(|mut s| {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        while let Ok((kind, _)) = read_packet(&mut s) {
            if kind == 0xC0 && s.write_all(&[0xD0, 0]).is_err() {
                break;
            }
        }
    });
    ten_records_are_held_back_and_that_is_noticed(&dir, port, held, broker);
}

/// A broker that answers every ping, holds back every PUBACK the sink awaits, and now and then
/// sends a burst of PUBACKs for a packet id the sink never used: each of them used to count as
/// progress (and a burst as large as the window turned the silence check off for the session),
/// so the stall was never noticed and the session never replaced. Now only a PUBACK for a
/// publish in flight is progress.
#[test]
fn a_broker_that_acknowledges_only_packets_never_sent_is_noticed() {
    use std::io::Write;
    let dir = temp("stray-pubacks");
    let (port, held, broker) = one_session_broker(|s| {
        let writer = Arc::new(std::sync::Mutex::new(s.try_clone().unwrap()));
        let strays = {
            let writer = Arc::clone(&writer);
            std::thread::spawn(move || {
                // PUBACKs for packet id 60,000, two at a time (the sink's window), every 20 ms
                // for 20 s at most.
                for _ in 0..1000 {
                    if writer.lock().unwrap().write_all(&[0x40, 2, 0xEA, 0x60, 0x40, 2, 0xEA, 0x60]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let mut s = s;
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        while let Ok((kind, _)) = read_packet(&mut s) {
            if kind == 0xC0 && writer.lock().unwrap().write_all(&[0xD0, 0]).is_err() {
                break;
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
        strays.join().unwrap();
    });
    ten_records_are_held_back_and_that_is_noticed(&dir, port, held, broker);
}

/// A broker that takes the CONNACK's session and then stops reading, while the sink has more
/// to write than the sockets hold (QoS 0, some 16 MB): the write used to wait forever, with no
/// problem said and the sink's stop hanging on it. Now a write that the broker takes no byte
/// of for the keep-alive ends the session, and the sink stops.
#[test]
fn a_broker_that_stops_reading_is_noticed_and_the_sink_still_stops() {
    let dir = temp("stops-reading");
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (port, held, broker) = one_session_broker(move |_s| {
        // Reads nothing more until the test is done, then hangs up.
        let _ = released.recv_timeout(Duration::from_secs(60));
    });
    let (mut writer, reader) = outbox(&dir);
    let text: String = "x".repeat(16 * 1024);
    for i in 0..1_000 {
        let path = format!("acme/site/area/line3/cell1/press1/note{}", i % 4);
        let body = records::sample(&path, ValueType::Text, TagValue::Text(text.clone().into()), Timestamp(i));
        writer.append(Class::Raw, &body).unwrap();
    }
    writer.sync().unwrap();
    let mut config = sink_config(port);
    config.qos = 0;
    config.keep_alive = Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, health) = airlock_north::mqtt::spawn("uns", "plant7", &config, reader, Arc::clone(&stop)).unwrap();
    until_problem(&health, "taken no bytes", || std::thread::sleep(Duration::from_millis(100)));
    stop.store(true, Relaxed);
    let stopping = Instant::now();
    handle.join().unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(10), "the sink took {:?} to stop", stopping.elapsed());
    drop((held, release));
    broker.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
