//! The Kafka sink against a real Kafka-compatible broker (tansu, installed by the test setup)
//! and an independent consumer (kafka-python from PyPI): every record arrives once the sink has
//! acknowledged it, keyed by its asset path, in order per key, with its headers.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use airlock_config::KafkaSink as KafkaConfig;
use airlock_model::{Timestamp, Value as TagValue, ValueType};
use airlock_north::SinkHealth;
use airlock_north::kafka::KafkaSink;
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter};
use airlock_testkit::{free_port, records, temp};

/// tansu, as `scripts/test` installs it (`cargo install tansu@0.6.0 --locked --features dynostore`).
fn tansu() -> String {
    let installed = std::env::var("HOME").map(|h| format!("{h}/.cargo/bin/tansu")).unwrap_or_default();
    if std::path::Path::new(&installed).exists() { installed } else { "tansu".into() }
}

struct Broker {
    child: Child,
    address: String,
}

impl Broker {
    fn start(topics: &[(&str, u32)]) -> Self {
        let address = format!("127.0.0.1:{}", free_port());
        let url = format!("tcp://{address}");
        let child = Command::new(tansu())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is not installed: run ./scripts/test, which installs it");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {address}");
            std::thread::sleep(Duration::from_millis(100));
        }
        for (topic, partitions) in topics {
            let out = Command::new(tansu())
                .args(["topic", "create", topic, "--partitions", &partitions.to_string(), "--broker", &url])
                .output()
                .unwrap();
            assert!(out.status.success(), "create {topic}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Self { child, address }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_record_arrives_keyed_in_order_per_key_with_its_headers() {
    let broker = Broker::start(&[("plant.series", 3), ("plant.events", 1)]);
    let dir = temp("kafka-every");
    let config = OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["k".into()],
        ..OutboxConfig::default()
    };
    let (mut writer, reader) = OutboxWriter::open(&dir.join("outbox"), config).unwrap();
    let time = Timestamp::parse_rfc3339("2026-11-29T12:00:00Z").unwrap();
    let machines = ["press1", "press2", "press3", "press4", "wrapper"];
    const N: usize = 2000;
    for i in 0..N {
        let path = format!("acme/dortmund/pressing/line3/cell1/{}/speed", machines[i % machines.len()]);
        let record = records::sample(&path, ValueType::F64, TagValue::F64(i as f64), time);
        writer.append(Class::Series, &record).unwrap();
    }
    writer.sync().unwrap();
    let kafka = KafkaConfig {
        brokers: vec![broker.address.clone()],
        topic: "plant.{class}".into(),
        lz4: true,
        tls: false,
        ca_file: None,
        client_cert: None,
        sasl: None,
        rate_max_per_s: 100_000.0,
    };
    let health = Arc::new(SinkHealth::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sink = KafkaSink::new("k", "plant7", &kafka);
    let handle = airlock_north::spawn(sink, reader.clone(), Arc::clone(&stop), Arc::clone(&health)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while health.delivered.load(Relaxed) < N as u64 {
        assert!(
            Instant::now() < deadline,
            "{} of {N} delivered in 60 s: {}",
            health.delivered.load(Relaxed),
            health.problem()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Relaxed);
    handle.join().unwrap();

    let out = Command::new(airlock_testkit::python())
        .arg(airlock_testkit::peer_script("kafka_consume.py"))
        .args([&broker.address, "plant.series", &N.to_string(), "60"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let messages: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(messages.len(), N, "every record arrives");
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, u64> = BTreeMap::new();
    for m in &messages {
        let key = m["key"].as_str().unwrap().to_owned();
        let id = m["id"].as_str().unwrap();
        assert_eq!(m["headers"]["id"], id, "{m}");
        assert_eq!(m["headers"]["class"], "series");
        assert_eq!(m["headers"]["gateway"], "plant7");
        let partition = m["partition"].as_u64().unwrap();
        assert_eq!(*partition_of_key.entry(key.clone()).or_insert(partition), partition, "one key, one partition");
        per_key.entry(key).or_default().push(id.strip_prefix("plant7-s").unwrap().parse().unwrap());
    }
    assert_eq!(per_key.len(), machines.len());
    let mut all: Vec<u64> = Vec::new();
    for (key, ids) in &per_key {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{key}: in order");
        all.extend(ids);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=N as u64).collect::<Vec<_>>(), "every id once");
    let partitions: std::collections::BTreeSet<u64> = partition_of_key.values().copied().collect();
    assert!(partitions.len() > 1, "the keys spread over the partitions: {partitions:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
