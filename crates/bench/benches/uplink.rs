//! Uplink benchmark: the MQTT sink draining an outbox backlog into a local mosquitto (QoS 1,
//! acknowledged on PUBACK), as after an outage. Baseline in the same run: mosquitto_pub sending
//! the same number of messages of the same size at QoS 1 from a file (`-l`), the broker's own
//! client. Each publisher drains three times, alternating, into a fresh broker each time; the
//! median of each is compared. No subscriber: on two cores a QoS 1 subscriber costs the broker
//! more than either publisher, and once it falls behind the broker drops what it queues for it.
//!
//! What counts is what the broker received (its own `$SYS` count), not what a publisher read:
//! mosquitto_pub 2.0.11 given 300,000 lines at once exits 0 after about 38,000 of them reached
//! the broker (it ends at the end of its input once the last message it sent is acknowledged,
//! with most lines never sent). Its rate is the messages the broker received per second of its
//! run, and the lines it read are reported beside it.
//!
//! Run: `cargo bench -p airlock-bench --bench uplink` (needs mosquitto; `-- quick` for 100k).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use airlock_config::MqttSink;
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter};
use airlock_testkit::{Broker, cpu_seconds_of, thread_cpu_seconds};

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let n: u64 = if quick { 100_000 } else { 1_000_000 };
    let dir = std::env::temp_dir().join(format!("airlock-bench-uplink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let record = airlock_testkit::records::press_speed();
    // The baseline publishes the same JSON the sink renders.
    let payload = airlock_upstream::json::to_vec("bench-r1", &record);
    let lines = dir.join("lines.txt");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&lines).unwrap());
    for _ in 0..n {
        f.write_all(&payload).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
    drop(f);

    let (mut ours, mut theirs, mut theirs_received) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_ours, mut cpu_theirs) = ([0.0f64; 2], [0.0f64; 2]);
    for round in 0..3 {
        let here = dir.join(format!("round{round}"));
        std::fs::create_dir_all(&here).unwrap();
        let (seconds, sink, broker) = drain(&here, &record, n);
        ours.push(seconds);
        cpu_ours = [cpu_ours[0] + sink, cpu_ours[1] + broker];
        let (seconds, publisher, broker, received) = mosquitto_pub(&here, &lines);
        // Seconds per message the broker received, scaled to n for the median below.
        theirs.push(seconds * n as f64 / received.max(1) as f64);
        theirs_received.push(received);
        cpu_theirs = [cpu_theirs[0] + publisher, cpu_theirs[1] + broker];
        let _ = std::fs::remove_dir_all(&here);
    }
    let per_message = |cpu: f64| cpu / (3 * n) as f64 * 1e6;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ours_s, theirs_s) = (median(&mut ours), median(&mut theirs));
    println!("uplink benchmark: {n} records of {} bytes, QoS 1, local mosquitto, three rounds", payload.len());
    println!(
        "  airlock MQTT sink, backlog drain (acknowledged on PUBACK): {:>9.0} messages/s (rounds: {})",
        n as f64 / ours_s,
        rates(n, &ours)
    );
    println!(
        "  mosquitto_pub -l -q 1 (baseline):                          {:>9.0} messages/s received by the broker \
         (rounds: {}; of {n} lines the broker received {:?})",
        n as f64 / theirs_s,
        rates(n, &theirs),
        theirs_received
    );
    println!("  ratio (medians): {:.2}x the broker's own client", theirs_s / ours_s);
    println!(
        "  CPU per message: airlock's sink thread {:.2} us (the broker meanwhile {:.2} us); \
         mosquitto_pub {:.2} us per message received (the broker meanwhile {:.2} us)",
        per_message(cpu_ours[0]),
        per_message(cpu_ours[1]),
        cpu_theirs[0] / theirs_received.iter().sum::<u64>().max(1) as f64 * 1e6,
        cpu_theirs[1] / theirs_received.iter().sum::<u64>().max(1) as f64 * 1e6
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn rates(n: u64, seconds: &[f64]) -> String {
    seconds.iter().map(|s| format!("{:.0}", n as f64 / s)).collect::<Vec<_>>().join(", ")
}

/// Seconds for the MQTT sink to drain a backlog of `n` copies of `record` into a fresh broker,
/// and the CPU seconds of the sink's thread and of the broker meanwhile.
fn drain(dir: &std::path::Path, record: &airlock_upstream::Upstream, n: u64) -> (f64, f64, f64) {
    let broker = Broker::start_quiet(dir);
    let broker_cpu = || broker.pid().map_or(0.0, cpu_seconds_of);
    let config = OutboxConfig { fsync: FsyncPolicy::Never, sinks: vec!["uns".into()], ..OutboxConfig::default() };
    let (mut writer, reader) = OutboxWriter::open(&dir.join("outbox"), config).unwrap();
    for _ in 0..n {
        writer.append(Class::Raw, record).unwrap();
    }
    writer.sync().unwrap();
    let sink = MqttSink {
        host: "127.0.0.1".into(),
        port: broker.port,
        tls: false,
        ca_file: None,
        client_cert: None,
        topic_prefix: "uns/".into(),
        client_id: "airlock-bench".into(),
        qos: 1,
        username: None,
        password: None,
        inflight_max: 100, // the default
        rate_max_per_s: 10_000_000.0,
        keep_alive: Duration::from_secs(30),
        sparkplug: None,
        replay: airlock_config::Replay::InOrder,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (started, broker0) = (Instant::now(), broker_cpu());
    let (handle, health) = airlock_north::mqtt::spawn("uns", "bench", &sink, reader, Arc::clone(&stop)).unwrap();
    while health.delivered.load(Relaxed) < n {
        assert!(started.elapsed() < Duration::from_secs(600), "the backlog did not drain");
        std::thread::sleep(Duration::from_millis(2));
    }
    let seconds = started.elapsed().as_secs_f64();
    let (sink_cpu, broker_cpu) = (thread_cpu_seconds("sink-uns"), broker_cpu() - broker0);
    stop.store(true, Relaxed);
    handle.join().unwrap();
    // Every record, and the online and offline status messages.
    let received = broker.publishes_received();
    assert!(received >= n, "the broker received {received} of {n} records");
    (seconds, sink_cpu, broker_cpu)
}

/// mosquitto_pub publishing the lines of `lines` at QoS 1 into a fresh broker: its seconds, the
/// CPU seconds of mosquitto_pub and of the broker meanwhile, and the messages the broker received.
fn mosquitto_pub(dir: &std::path::Path, lines: &std::path::Path) -> (f64, f64, f64, u64) {
    let broker = Broker::start_quiet(dir);
    let broker_cpu = || broker.pid().map_or(0.0, cpu_seconds_of);
    let (started, broker0) = (Instant::now(), broker_cpu());
    let mut child = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "uns/baseline", "-q", "1", "-l"])
        .stdin(std::fs::File::open(lines).unwrap())
        .spawn()
        .unwrap();
    // Its CPU is read just before it exits: once reaped, /proc no longer has it.
    let mut publisher_cpu = 0.0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        publisher_cpu = cpu_seconds_of(child.id());
        assert!(started.elapsed() < Duration::from_secs(600), "mosquitto_pub did not finish");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(status.success());
    let (seconds, broker_cpu) = (started.elapsed().as_secs_f64(), broker_cpu() - broker0);
    (seconds, publisher_cpu, broker_cpu, broker.publishes_received())
}
