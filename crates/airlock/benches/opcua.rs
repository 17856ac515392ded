//! OPC UA benchmark: monitored items delivered per second by the OPC UA driver from the
//! simulator's OPC UA load server on loopback, with CPU use and peak RSS.
//!
//! The server (`airlock sim --opcua-load N`: N Double nodes, each changing every 100 ms, so
//! N × 10 values offered per second) runs as a child process, pinned to core 1 when `taskset`
//! is there; the driver runs here on a current-thread tokio runtime (one core at most), one
//! subscription with a monitored item per node (publishing every 100 ms). Baselines measured
//! in the same run: the values the server offers, and asyncua's Python client (PyPI)
//! subscribing to the same nodes. The external figure to compare with (not measured here):
//! benthos-umh, about 38,800 values/s at ~1.6 cores from 50k nodes.
//!
//! Run: `cargo bench -p airlock --bench opcua` (`-- 10 20000` for 10-second runs and 20,000 nodes;
//! the asyncua baseline needs `.venv`, made by `./scripts/test`).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use airlock_testkit::{cpu_seconds, peak_rss_mb, rss_mb};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_config::{Protocol, parse};
use airlock_model::{DeviceHealth, TagId};
use airlock_south_opcua::OpcUaTask;
use tokio::sync::watch;

fn start_server(nodes: usize) -> (Child, String) {
    let mut child = airlock_testkit::pinned(1, env!("CARGO_BIN_EXE_airlock"))
        .args(["sim", "--base-port", "0", "--opcua-load", &nodes.to_string()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut endpoint = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.split("OPC UA load on ").nth(1) {
            endpoint = rest.split_whitespace().next().unwrap().to_owned();
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    (child, endpoint)
}

struct Figures {
    values_per_s: f64,
    cpu_cores: f64,
    setup_s: f64,
    /// Resident memory while values flow, MB.
    rss_mb: f64,
}

async fn run(endpoint: &str, nodes: usize, seconds: u64, data: &Path) -> Figures {
    let mut text = format!(
        "[[device]]\nname = \"load\"\nasset_path = \"bench/line\"\nprotocol = \"opcua\"\naddress = \"{endpoint}\"\n\
         publishing_interval_ms = 100\ntimeout_ms = 30000\n"
    );
    for i in 0..nodes {
        text +=
            &format!("[[device.tag]]\nname = \"v{i}\"\nnode_id = \"ns=2;s=Load.{i}\"\nsampling_interval_ms = 100\n");
    }
    let config = parse(&text, Path::new("bench.toml")).unwrap();
    let d = &config.devices[0];
    let Protocol::OpcUa(o) = &d.protocol else { unreachable!() };
    let (tx, mut rx) = airlock_pipeline::channel(4096);
    let (stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    let handle = airlock_pipeline::DeviceHandle::new(0, d, TagId(0), tx);
    let health = handle.health();
    let driver = tokio::spawn(OpcUaTask::new(d, o, handle, data).run(stop));
    let consumer = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(b) = rx.recv().await {
            n += b.samples.len() as u64;
        }
        n
    });
    // Set-up: until every node has delivered once (bounded: 60 s).
    while DeviceHealth::get(&health.samples) < nodes as u64 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (s0, c0, t0) = (DeviceHealth::get(&health.samples), cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (s1, c1, elapsed) = (DeviceHealth::get(&health.samples), cpu_seconds(), t0.elapsed().as_secs_f64());
    let rss_mb = rss_mb();
    stop_tx.send(true).unwrap();
    driver.await.unwrap();
    let delivered = consumer.await.unwrap();
    assert!(delivered >= s1 - s0, "the consumer lost samples");
    assert_eq!(DeviceHealth::get(&health.batches_dropped), 0, "batches were dropped");
    Figures { values_per_s: (s1 - s0) as f64 / elapsed, cpu_cores: (c1 - c0) / elapsed, setup_s, rss_mb }
}

/// asyncua's client on the same server: (values/s, CPU cores), or why it could not run.
fn asyncua_baseline(endpoint: &str, nodes: usize, seconds: u64) -> Result<(f64, f64), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = std::env::var("AIRLOCK_PYTHON").map(Into::into).unwrap_or_else(|_| root.join(".venv/bin/python"));
    let out = Command::new(python)
        .arg(root.join("scripts/peers/opcua_count.py"))
        .args([endpoint, &nodes.to_string(), &seconds.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
    let s = v["seconds"].as_f64().unwrap_or(1.0);
    Ok((v["values"].as_f64().unwrap_or(0.0) / s, v["cpu_seconds"].as_f64().unwrap_or(0.0) / s))
}

fn main() {
    let numbers: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let seconds = numbers.first().copied().unwrap_or(5);
    let nodes = numbers.get(1).copied().unwrap_or(10_000) as usize;
    let (mut server, endpoint) = start_server(nodes);
    assert!(endpoint.starts_with("opc.tcp://"), "the load server did not start");
    let data = std::env::temp_dir().join(format!("airlock-bench-opcua-{}", std::process::id()));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ours = runtime.block_on(run(&endpoint, nodes, seconds, &data));
    let peak = peak_rss_mb();
    let baseline = asyncua_baseline(&endpoint, nodes, seconds);
    let _ = server.kill();
    let _ = server.wait();
    let offered = nodes as f64 * 10.0;
    println!(
        "OPC UA benchmark: {nodes} monitored items, each changing every 100 ms ({offered:.0} values/s offered), {seconds} s"
    );
    println!("driver on one thread (current-thread runtime); server (async-opcua) in a child process");
    println!(
        "  airlock     {:>9.0} values/s  {:.2} cores  {:>9.0} values/s per core  ({:.0} % of offered; set-up {:.1} s)",
        ours.values_per_s,
        ours.cpu_cores,
        ours.values_per_s / ours.cpu_cores.max(0.01),
        100.0 * ours.values_per_s / offered,
        ours.setup_s
    );
    match baseline {
        Ok((values, cores)) => {
            println!(
                "  asyncua     {values:>9.0} values/s  {cores:.2} cores  {:>9.0} values/s per core",
                values / cores.max(0.01)
            );
            println!(
                "  ratio: airlock delivers {:.1}x the values/s of asyncua's client",
                ours.values_per_s / values.max(1.0)
            );
        }
        Err(e) => println!("  asyncua baseline not run: {e}"),
    }
    println!(
        "  RSS of the driver process while values flow: {:.1} MB (peak {peak:.1} MB, reached while parsing the {nodes}-tag config)",
        ours.rss_mb
    );
    println!("  reference (not measured here): benthos-umh about 38,800 values/s at ~1.6 cores from 50k nodes");
}
