//! Polling benchmark: the gateway's Modbus driver reading the simulated press line on loopback.
//!
//! The simulator runs as a child process (`airlock sim`, pinned to core 1 when `taskset` is
//! there); the gateway side runs here on a current-thread tokio runtime, so it uses one core at
//! most. Eight devices (two connections to each of the four machines) read 418 tags each
//! (u16, u32, f32 and coils) as fast as they can. The run is repeated with coalescing off (one
//! request per tag) as the baseline. It prints samples/s, requests/s, CPU use and peak RSS.
//!
//! Run: `cargo bench -p airlock --bench poll` (add `-- 10` for 10-second runs).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use airlock_testkit::{cpu_seconds, peak_rss_mb};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use airlock_config::parse;
use airlock_model::{DeviceHealth, TagId};
use airlock_south_modbus::DeviceTask;
use tokio::sync::watch;

const CONNECTIONS_PER_MACHINE: usize = 2;

fn start_sim() -> (Child, Vec<String>) {
    let mut child = airlock_testkit::pinned(1, env!("CARGO_BIN_EXE_airlock"))
        .args(["sim", "--base-port", "0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut addrs = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(addr) = line.split(" Modbus TCP on ").nth(1) {
            addrs.push(addr.trim().to_owned());
        }
        if line.contains("running at") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    (child, addrs)
}

fn tags() -> String {
    let mut t = String::new();
    let mut tag = |name: String, space: &str, address: u32, ty: &str, order: &str| {
        t += &format!(
            "[[device.tag]]\nname = \"{name}\"\nspace = \"{space}\"\naddress = {address}\ntype = \"{ty}\"\norder = \"{order}\"\n"
        );
    };
    (0..125).for_each(|i| tag(format!("u{i}"), "holding_register", 1000 + i, "u16", "abcd"));
    (0..62).for_each(|i| tag(format!("f{i}"), "input_register", 1000 + 2 * i, "f32", "abcd"));
    (0..31).for_each(|i| tag(format!("d{i}"), "holding_register", 2000 + 2 * i, "u32", "cdab"));
    (0..200).for_each(|i| tag(format!("c{i}"), "coil", 1000 + i, "bool", "abcd"));
    t
}

fn config_text(addrs: &[String]) -> String {
    let tags = tags();
    let mut text = String::new();
    for (i, addr) in addrs.iter().cycle().take(addrs.len() * CONNECTIONS_PER_MACHINE).enumerate() {
        text += &format!(
            "[[device]]\nname = \"d{i}\"\nasset_path = \"bench/line\"\nprotocol = \"modbus_tcp\"\naddress = \"{addr}\"\n\
             poll_interval_ms = 1\ntimeout_ms = 2000\nrate_max_per_s = 100000\n{tags}"
        );
    }
    text
}

struct Figures {
    samples_per_s: f64,
    requests_per_s: f64,
    cpu_cores: f64,
}

async fn run(config_text: &str, coalesce: bool, seconds: u64) -> Figures {
    let config = parse(config_text, Path::new("bench.toml")).unwrap();
    let (tx, mut rx) = airlock_pipeline::channel(4096);
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let mut health = Vec::new();
    let mut first = 0;
    for (i, d) in config.devices.iter().enumerate() {
        let task = modbus_task(i, d, TagId(first), coalesce, &tx);
        first += d.tag_count() as u32;
        health.push(task.health());
        tasks.spawn(task.run(stop.clone()));
    }
    drop(tx);
    let consumer = tokio::spawn(async move {
        let mut n = 0u64;
        while let Some(b) = rx.recv().await {
            n += b.samples.len() as u64;
        }
        n
    });
    tokio::time::sleep(Duration::from_millis(500)).await; // connect and warm up
    let count = |h: &[std::sync::Arc<DeviceHealth>]| {
        h.iter()
            .map(|h| (DeviceHealth::get(&h.samples), DeviceHealth::get(&h.requests)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let (s0, r0, c0, t0) = (count(&health).0, count(&health).1, cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let ((s1, r1), c1, elapsed) = (count(&health), cpu_seconds(), t0.elapsed().as_secs_f64());
    stop_tx.send(true).unwrap();
    while tasks.join_next().await.is_some() {}
    let delivered = consumer.await.unwrap();
    assert!(delivered >= s1 - s0, "the consumer lost samples");
    let dropped: u64 = health.iter().map(|h| DeviceHealth::get(&h.batches_dropped)).sum();
    assert_eq!(dropped, 0, "batches were dropped");
    Figures {
        samples_per_s: (s1 - s0) as f64 / elapsed,
        requests_per_s: (r1 - r0) as f64 / elapsed,
        cpu_cores: (c1 - c0) / elapsed,
    }
}

fn main() {
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(5);
    let (mut sim, addrs) = start_sim();
    assert_eq!(addrs.len(), 4, "the simulator did not report its four machines");
    let text = config_text(&addrs);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let coalesced = runtime.block_on(run(&text, true, seconds));
    let single = runtime.block_on(run(&text, false, seconds));
    let _ = sim.kill();
    let _ = sim.wait();
    let devices = addrs.len() * CONNECTIONS_PER_MACHINE;
    println!("poll benchmark: {devices} devices x 418 tags, simulated press line on loopback, {seconds} s per run");
    println!("gateway on one thread (current-thread runtime); simulator in a child process");
    for (name, f) in [("coalesced", &coalesced), ("one request per tag", &single)] {
        println!(
            "  {name:<20} {:>12.0} samples/s {:>9.0} requests/s  {:.2} cores  {:>9.0} samples/s per core",
            f.samples_per_s,
            f.requests_per_s,
            f.cpu_cores,
            f.samples_per_s / f.cpu_cores.max(0.01)
        );
    }
    println!(
        "  coalescing ratio: {:.1}x the samples/s of one request per tag",
        coalesced.samples_per_s / single.samples_per_s
    );
    println!("  peak RSS of the gateway process: {:.1} MB", peak_rss_mb());
}

/// The device task of a Modbus device of the config, sending into `tx`.
fn modbus_task(
    index: usize,
    device: &std::sync::Arc<airlock_config::Device>,
    first_tag: TagId,
    coalesce: bool,
    tx: &airlock_pipeline::BatchSender,
) -> DeviceTask {
    let airlock_config::Protocol::ModbusTcp(modbus) = &device.protocol else {
        panic!("{} is not a Modbus device", device.name)
    };
    let handle = airlock_pipeline::DeviceHandle::new(index, device, first_tag, tx.clone());
    DeviceTask::new(device, modbus, handle, coalesce)
}
