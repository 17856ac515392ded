//! Uplink benchmark: the MQTT sink draining an outbox backlog into a local mosquitto (QoS 1,
//! acknowledged on PUBACK), with mosquitto_sub consuming every message, as after an outage.
//! Baseline in the same run: mosquitto_pub sending the same number of messages of the same size
//! at QoS 1 from a file (`-l`), the broker's own client.
//!
//! Run: `cargo bench -p airlock-bench --bench uplink` (needs mosquitto; `-- quick` for 100k).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use airlock_config::MqttSink;
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter};
use airlock_testkit::Broker;

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let n: u64 = if quick { 100_000 } else { 1_000_000 };
    let dir = std::env::temp_dir().join(format!("airlock-bench-uplink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let broker = Broker::start_quiet(&dir);
    let port = broker.port;
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "#", "-q", "1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let record = airlock_testkit::records::press_speed();
    // The baseline publishes the same JSON the sink renders.
    let payload = &airlock_upstream::json::to_vec("bench-r1", &record)[..];
    let config = OutboxConfig { fsync: FsyncPolicy::Never, sinks: vec!["uns".into()], ..OutboxConfig::default() };
    let (mut writer, reader) = OutboxWriter::open(&dir.join("outbox"), config).unwrap();
    for _ in 0..n {
        writer.append(Class::Raw, &record).unwrap();
    }
    writer.sync().unwrap();

    let sink = MqttSink {
        host: "127.0.0.1".into(),
        port,
        tls: false,
        ca_file: None,
        client_cert: None,
        topic_prefix: "uns/".into(),
        client_id: "airlock-bench".into(),
        qos: 1,
        username: None,
        password: None,
        inflight_max: 100,
        rate_max_per_s: 10_000_000.0,
        keep_alive: Duration::from_secs(30),
        sparkplug: None,
        replay: airlock_config::Replay::InOrder,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (handle, health) = airlock_north::mqtt::spawn("uns", "bench", &sink, reader, Arc::clone(&stop)).unwrap();
    while health.delivered.load(Relaxed) < n {
        assert!(started.elapsed() < Duration::from_secs(600), "the backlog did not drain");
        std::thread::sleep(Duration::from_millis(5));
    }
    let ours = started.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    handle.join().unwrap();

    // Baseline: the broker's own client publishing the same messages at QoS 1.
    let lines = dir.join("lines.txt");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&lines).unwrap());
    for _ in 0..n {
        f.write_all(payload).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
    drop(f);
    let started = Instant::now();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "uns/baseline", "-q", "1", "-l"])
        .stdin(std::fs::File::open(&lines).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let theirs = started.elapsed().as_secs_f64();

    println!("uplink benchmark: {n} records of {} bytes, QoS 1, local mosquitto, one subscriber", payload.len());
    println!("  airlock MQTT sink, backlog drain (acknowledged on PUBACK): {:>9.0} messages/s", n as f64 / ours);
    println!("  mosquitto_pub -l (baseline):                                {:>9.0} messages/s", n as f64 / theirs);
    println!("  ratio: {:.2}x the broker's own client", theirs / ours);
    let _ = sub.kill();
    let _ = sub.wait();
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
