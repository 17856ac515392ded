//! The Kafka sink's backlog drain: records per second from the outbox into a Kafka-compatible
//! broker (tansu, memory storage, on loopback), acknowledged by it, against kafka-python's
//! producer sending as many records of the same shape in the same run (acks from all in-sync
//! replicas, LZ4, batched).
//!
//! Run: `cargo bench -p airlock-north --bench kafka` (needs tansu and the `.venv` of `./scripts/test`).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use airlock_model::{Timestamp, Value, ValueType};
use airlock_north::SinkHealth;
use airlock_north::kafka::KafkaSink;
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter};
use airlock_testkit::{free_port, records, temp};

const N: u64 = 100_000;

fn main() {
    let address = format!("127.0.0.1:{}", free_port());
    let url = format!("tcp://{address}");
    let tansu = std::env::var("HOME").map(|h| format!("{h}/.cargo/bin/tansu")).unwrap();
    let mut broker = Command::new(&tansu)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !airlock_testkit::listening(&address) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for topic in ["bench.series", "python"] {
        let status =
            Command::new(&tansu).args(["topic", "create", topic, "--partitions", "4", "--broker", &url]).status();
        assert!(status.unwrap().success());
    }
    let dir = temp("bench-kafka");
    let outbox = OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["k".into()],
        ..OutboxConfig::default()
    };
    let (mut writer, reader) = OutboxWriter::open(&dir.join("outbox"), outbox).unwrap();
    let time = Timestamp::parse_rfc3339("2026-11-29T12:00:00Z").unwrap();
    for i in 0..N {
        let path = format!("acme/dortmund/pressing/line3/cell1/press{}/speed", i % 4);
        writer.append(Class::Series, &records::sample(&path, ValueType::F64, Value::F64(i as f64), time)).unwrap();
    }
    writer.sync().unwrap();
    let config = airlock_config::KafkaSink {
        brokers: vec![address.clone()],
        topic: "bench.{class}".into(),
        lz4: true,
        tls: false,
        ca_file: None,
        client_cert: None,
        sasl: None,
        rate_max_per_s: 1e9,
        replay: airlock_config::Replay::InOrder,
    };
    let health = Arc::new(SinkHealth::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handle =
        airlock_north::spawn(KafkaSink::new("k", "bench", &config), reader, Arc::clone(&stop), Arc::clone(&health))
            .unwrap();
    while health.delivered.load(Relaxed) < N {
        assert!(started.elapsed() < Duration::from_secs(300), "the drain took too long");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ours = N as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    handle.join().unwrap();
    let out = Command::new(airlock_testkit::python())
        .arg(airlock_testkit::peer_script("kafka_produce.py"))
        .args([&address, "python", &N.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let python: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    println!(
        "Kafka backlog drain into tansu (memory storage, 4 partitions, LZ4, acks from all replicas), {N} records:"
    );
    println!("  airlock's Kafka sink: {ours:.0} records/s (acknowledged in the outbox)");
    println!("  kafka-python producer, same records' shape: {python:.0} records/s");
    println!("  airlock against kafka-python: {:.2}x", ours / python);
    let _ = broker.kill();
    let _ = broker.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
