//! The Sparkplug B sink, decoded by an independent implementation: pysparkplug (PyPI) listening
//! on mosquitto as a host application would. Metric names, aliases, datatypes, values, `seq`,
//! `bdSeq` and `is_historical` are checked, across a broker restart (a reconnect) and a clean stop.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_config::{MqttSink, Sparkplug};
use airlock_model::{Timestamp, Value as TagValue, ValueType};
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxReader, OutboxWriter};
use airlock_upstream::Upstream;
use serde_json::Value;
use support::{Broker, records, temp};

/// pysparkplug on spBv1.0/#, and every message it decoded.
struct Host {
    child: Child,
    decoded: Arc<Mutex<Vec<Value>>>,
}

impl Host {
    fn start(port: u16) -> Self {
        let python = std::env::var("AIRLOCK_PYTHON").map(std::path::PathBuf::from).unwrap_or_else(|_| {
            let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
            assert!(venv.exists(), "no Python with pysparkplug: run ./scripts/test, which installs it into .venv");
            venv
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peers/sparkplug_listen.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(ready["ready"], true);
        let decoded = Arc::new(Mutex::new(Vec::new()));
        let d = Arc::clone(&decoded);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                d.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        });
        Self { child, decoded }
    }

    fn wait_until(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.decoded.lock().unwrap().clone();
            if done(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "waited 30 s for {what}; got {got:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(port: u16) -> MqttSink {
    MqttSink {
        host: "127.0.0.1".into(),
        port,
        tls: false,
        ca_file: None,
        client_cert: None,
        topic_prefix: String::new(),
        client_id: "airlock-sparkplug".into(),
        qos: 1,
        username: None,
        password: None,
        inflight_max: 20,
        rate_max_per_s: 100_000.0,
        keep_alive: Duration::from_secs(5),
        sparkplug: Some(Sparkplug {
            group_id: "plant".into(),
            edge_node_id: Some("line3".into()),
            birth_interval: Duration::from_secs(3600),
        }),
        replay: airlock_config::Replay::InOrder,
    }
}

/// A sample of `tag` on `device`, of the tag's configured type; `None`: a bad sample.
fn record(device: &str, tag: &str, value_type: ValueType, value: Option<TagValue>, time: &str) -> Upstream {
    let path = format!("acme/dortmund/pressing/line3/cell1/{device}/{tag}");
    let time = Timestamp::parse_rfc3339(time).unwrap();
    match value {
        Some(v) => records::sample(&path, value_type, v, time),
        None => records::bad_sample(&path, value_type, time),
    }
}

/// An outbox in `dir` read by the sink `sp`, syncing at every commit.
fn outbox(dir: &Path) -> (OutboxWriter, OutboxReader) {
    let config = OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["sp".into()],
        ..OutboxConfig::default()
    };
    OutboxWriter::open(&dir.join("outbox"), config).unwrap()
}

fn of_type<'a>(got: &'a [Value], kind: &str) -> Vec<&'a Value> {
    got.iter().filter(|m| m["type"] == kind).collect()
}

fn metric<'a>(message: &'a Value, name: &str) -> &'a Value {
    message["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

#[test]
fn an_independent_decoder_reads_births_data_and_deaths_across_a_reconnect() {
    let dir = temp("sparkplug");
    let mut broker = Broker::start(&dir);
    let host = Host::start(broker.port);
    let (mut writer, reader) = outbox(&dir);
    // A backlog from before the connection (history), for two devices.
    let old = "2026-01-01T00:00:00.000Z";
    let backlog = [
        record("press1", "speed", ValueType::F64, Some(TagValue::F64(1480.5)), old),
        record("press1", "parts", ValueType::U64, Some(TagValue::U64(42)), old),
        record("press1", "running", ValueType::Bool, Some(TagValue::Bool(true)), old),
        record("press2", "model", ValueType::Text, Some(TagValue::Text("HP-400".into())), old),
        record("press1", "speed", ValueType::F64, Some(TagValue::F64(1479.25)), old),
        record("press1", "speed", ValueType::F64, None, old),
    ];
    for r in &backlog {
        writer.append(Class::Raw, r).unwrap();
    }
    let event = records::event("outbox_gap", "dropped 3 raw records", 3.0, Timestamp::parse_rfc3339(old).unwrap());
    writer.append(Class::Event, &event).unwrap();
    writer.sync().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (handle, health) =
        airlock_north::mqtt::spawn("sp", "line3", &config(broker.port), reader, Arc::clone(&stop)).unwrap();
    let got = host.wait_until("the backlog", |g| g.iter().filter(|m| m["type"] == "DDATA").count() >= 2);

    assert!(got.iter().all(|m| m.get("error").is_none()), "pysparkplug refused a message: {got:#?}");
    let nbirth = of_type(&got, "NBIRTH")[0];
    assert_eq!(nbirth["topic"], "spBv1.0/plant/NBIRTH/line3");
    assert_eq!(nbirth["seq"], 0);
    assert_eq!(metric(nbirth, "bdSeq")["value"], 0, "bdSeq starts at 0");
    assert_eq!(metric(nbirth, "bdSeq")["datatype"], 8, "UInt64");
    assert_eq!(metric(nbirth, "Node Control/Rebirth")["datatype"], 11, "Boolean");
    // The event went first (events before raw records), as NDATA of the node's event metric.
    let ndata = of_type(&got, "NDATA")[0];
    let event_metric = metric(ndata, "airlock/event");
    assert_eq!(event_metric["datatype"], 12);
    assert!(event_metric["value"].as_str().unwrap().contains("dropped 3 raw records"));
    // Each device was born with its metrics; later values came by alias, names resolved.
    let dbirths = of_type(&got, "DBIRTH");
    let press1_births: Vec<&&Value> =
        dbirths.iter().filter(|m| m["topic"] == "spBv1.0/plant/DBIRTH/line3/press1").collect();
    let last_press1 = press1_births.last().unwrap();
    assert_eq!(metric(last_press1, "speed")["datatype"], 10, "Double");
    assert_eq!(metric(last_press1, "parts")["datatype"], 8, "UInt64");
    assert_eq!(metric(last_press1, "parts")["value"], 42);
    assert_eq!(metric(last_press1, "running")["value"], true);
    let press2 = dbirths.iter().find(|m| m["topic"] == "spBv1.0/plant/DBIRTH/line3/press2").unwrap();
    assert_eq!(metric(press2, "model")["value"], "HP-400");
    assert_eq!(metric(press2, "model")["datatype"], 12);
    let ddata = of_type(&got, "DDATA");
    let speed_alias = metric(last_press1, "speed")["alias"].clone();
    assert_eq!(ddata[0]["metrics"][0]["name"], "speed", "the alias resolves to its birth name");
    assert_eq!(ddata[0]["metrics"][0]["alias"], speed_alias);
    assert_eq!(ddata[0]["metrics"][0]["value"], 1479.25);
    assert_eq!(ddata[0]["metrics"][0]["is_historical"], true, "a backlog from before the connection is history");
    assert_eq!(ddata[1]["metrics"][0]["is_null"], true, "a bad sample has no value");
    // seq counts 0, 1, 2, ... over every message after the NBIRTH.
    let seqs: Vec<u64> = got.iter().filter(|m| m["type"] != "NDEATH").map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());

    // The broker restarts: the node reconnects with the next bdSeq, births again from seq 0,
    // and live records are not history.
    broker.stop();
    std::thread::sleep(Duration::from_millis(300));
    broker.restart();
    host.wait_until("the rebirth", |g| g.iter().any(|m| m["type"] == "NBIRTH" && metric(m, "bdSeq")["value"] == 1));
    let now = Timestamp::now().to_string();
    writer.append(Class::Raw, &record("press1", "speed", ValueType::F64, Some(TagValue::F64(1400.0)), &now)).unwrap();
    writer.sync().unwrap();
    let got =
        host.wait_until("live data", |g| g.iter().any(|m| m["type"] == "DDATA" && m["metrics"][0]["value"] == 1400.0));
    let at = got.iter().position(|m| m["type"] == "NBIRTH" && metric(m, "bdSeq")["value"] == 1).expect("a rebirth");
    let rebirth = &got[at];
    assert_eq!(rebirth["seq"], 0, "the next connection, the next bdSeq, seq from 0");
    // (The host's persistent session may also redeliver older messages around the restart.)
    let mut reborn: Vec<(u64, String)> = got[at..]
        .iter()
        .filter(|m| m["type"] == "DBIRTH" && (m["seq"] == 1 || m["seq"] == 2))
        .map(|m| (m["seq"].as_u64().unwrap(), m["topic"].as_str().unwrap().to_owned()))
        .collect();
    reborn.sort();
    reborn.dedup();
    let topics: Vec<&str> = reborn.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        topics,
        ["spBv1.0/plant/DBIRTH/line3/press1", "spBv1.0/plant/DBIRTH/line3/press2"],
        "both devices born again"
    );
    let live = got.iter().rev().find(|m| m["type"] == "DDATA").unwrap();
    assert_eq!(live["metrics"][0]["is_historical"], false);
    assert_eq!(live["metrics"][0]["alias"], speed_alias, "aliases survive the reconnect");

    // A clean stop sends the NDEATH with this connection's bdSeq.
    stop.store(true, Relaxed);
    handle.join().unwrap();
    // (The broker may also publish the first connection's last will, bdSeq 0, around its restart.)
    let is_last_death = |m: &Value| m["type"] == "NDEATH" && m["metrics"][0]["value"] == 1;
    let got = host.wait_until("the death of the second connection", |g| g.iter().any(is_last_death));
    let death = got.iter().find(|m| is_last_death(m)).unwrap();
    assert_eq!(death["topic"], "spBv1.0/plant/NDEATH/line3", "the death matches the birth of its connection");
    assert_eq!(health.delivered.load(Relaxed), 8, "every record acknowledged on PUBACK");
    assert!(!broker.log().contains("Received SUBSCRIBE from airlock-sparkplug"), "the edge node never subscribes");
    drop(host);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The configured type of each tag is what every DBIRTH announces, and a value that changes
/// sign (an i16 offset swinging around zero) never causes a birth: a device is born again only
/// when a metric is new to it (its first value), at connect, and every `birth_interval`.
#[test]
fn births_announce_the_configured_datatypes_and_a_sign_change_causes_none() {
    let dir = temp("sparkplug-types");
    let broker = Broker::start(&dir);
    let host = Host::start(broker.port);
    let (mut writer, reader) = outbox(&dir);
    let now = Timestamp::now().to_string();
    let tags = [
        ("count", ValueType::U16, TagValue::U64(65_535)),
        ("temperature", ValueType::F32, TagValue::F64(21.5)),
        ("running", ValueType::Bool, TagValue::Bool(true)),
    ];
    for (tag, ty, value) in &tags {
        writer.append(Class::Raw, &record("press1", tag, *ty, Some(value.clone()), &now)).unwrap();
    }
    let offsets: Vec<i64> = (0..200).map(|i| if i % 2 == 0 { -(i % 7) - 1 } else { i % 5 + 1 }).collect();
    for v in &offsets {
        writer.append(Class::Raw, &record("press1", "offset", ValueType::I16, Some(TagValue::I64(*v)), &now)).unwrap();
    }
    writer.sync().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, _health) =
        airlock_north::mqtt::spawn("sp", "line3", &config(broker.port), reader, Arc::clone(&stop)).unwrap();
    let done = |g: &[Value]| g.iter().filter(|m| m["type"] == "DDATA").count() >= offsets.len() - 1;
    let got = host.wait_until("every offset", done);
    stop.store(true, Relaxed);
    handle.join().unwrap();

    assert!(got.iter().all(|m| m.get("error").is_none()), "pysparkplug refused a message: {got:#?}");
    let expected = [("count", 6), ("temperature", 9), ("running", 11), ("offset", 2)];
    let dbirths = of_type(&got, "DBIRTH");
    assert_eq!(dbirths.len(), 4, "one birth per new metric, none for a sign change: {dbirths:#?}");
    for birth in &dbirths {
        for m in birth["metrics"].as_array().unwrap() {
            let name = m["name"].as_str().unwrap();
            let (_, datatype) = expected.iter().find(|(n, _)| *n == name).unwrap();
            assert_eq!(m["datatype"], *datatype, "{name} in {birth}");
        }
    }
    let last = dbirths.last().unwrap();
    assert_eq!(metric(last, "count")["value"], 65_535, "UInt16 to its top");
    assert_eq!(metric(last, "temperature")["value"], 21.5);
    // pysparkplug decodes each Int16 as the independent decoder it is: the values, signs and all.
    let ddata: Vec<i64> = of_type(&got, "DDATA")
        .iter()
        .flat_map(|m| m["metrics"].as_array().unwrap().iter().map(|x| x["value"].as_i64().unwrap()))
        .collect();
    assert_eq!(metric(last, "offset")["value"], offsets[0]);
    assert_eq!(ddata, offsets[1..], "every offset arrives with its sign");
    drop(host);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
