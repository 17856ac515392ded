//! End-to-end latency: from the moment airlock reads a changed value from a (simulated) device
//! to the moment the message arrives at an MQTT subscriber, through the whole airlock: poll,
//! collector, outbox (synced), MQTT sink, mosquitto, mosquitto_sub. The poll interval itself is
//! not counted (the clock starts at the sample's gateway time). `airlock run` is a child
//! process; the simulator runs here at 60x so values change on every poll.
//!
//! Run: `cargo bench -p airlock --bench latency` (needs mosquitto; `-- 5` for 5-second runs).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use airlock_model::Timestamp;
use airlock_testkit::Broker;

fn main() {
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10);
    let dir = std::env::temp_dir().join(format!("airlock-bench-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let broker = Broker::start_quiet(&dir);
    let port = broker.port;
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "lat/#", "-v", "-q", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let arrivals: Arc<Mutex<Vec<(SystemTime, String)>>> = Arc::default();
    let a = Arc::clone(&arrivals);
    let stdout = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            a.lock().unwrap().push((SystemTime::now(), line));
        }
    });

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let sim =
        runtime.block_on(airlock_sim::start(&airlock_sim::SimOptions { speed: 60.0, ..Default::default() })).unwrap();
    println!("latency benchmark: 4 devices polled every 100 ms, {seconds} s per run, gateway time to subscriber");
    for fsync_ms in [0, 10, 20, 100] {
        arrivals.lock().unwrap().clear();
        let data = dir.join(format!("data-{fsync_ms}"));
        let config = dir.join(format!("plant-{fsync_ms}.toml"));
        let text = sim.config_toml(100)
            + &format!(
                "\n[store]\ndata_dir = {:?}\nfsync_interval_ms = {fsync_ms}\n\n[[sink]]\nname = \"uns\"\ntype = \"mqtt\"\n\
                 url = \"mqtt://127.0.0.1:{port}\"\ntopic_prefix = \"lat/\"\n",
                data.display().to_string()
            );
        std::fs::write(&config, text).unwrap();
        let status = Command::new(env!("CARGO_BIN_EXE_airlock"))
            .arg("run")
            .arg(&config)
            .args(["--duration", &format!("{seconds}s")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        std::thread::sleep(Duration::from_millis(300));
        let mut latencies: Vec<f64> = arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| !l.contains("/status "))
            .filter_map(|(at, line)| {
                let payload: serde_json::Value = serde_json::from_str(line.split_once(' ')?.1).ok()?;
                let read = Timestamp::parse_rfc3339(payload["gateway_time"].as_str()?)?;
                Some((Timestamp::from(*at).0 - read.0) as f64 / 1e6)
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "  fsync_interval_ms = {fsync_ms:>3}: {} messages, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latencies.len(),
            pick(0.5),
            pick(0.99),
            latencies.last().copied().unwrap_or(0.0)
        );
    }
    sim.stop();
    let _ = sub.kill();
    let _ = sub.wait();
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
