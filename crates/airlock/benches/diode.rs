//! Diode benchmark: the same backlog of records (an OT outbox holding N samples) drained by
//! `airlock run` through
//! - its MQTT sink into a local mosquitto (QoS 1, acknowledged on PUBACK): the baseline;
//! - its diode sink on loopback to `airlock receive` (whose JSON Lines sink writes them out);
//! - its diode sink across two network namespaces with 1 % loss into the IT side;
//!
//! then, across the namespaces at 1 % loss, the smallest `repair_percent` that lost nothing.
//! Each side is its own process: wall time until the last record is through (the IT side's
//! sink cursor, or for MQTT the OT side's), CPU seconds of each process, records/s and MB/s of
//! record bytes (the records' upstream encoding), CPU milliseconds per MB on each side.
//!
//! Run: `cargo bench -p airlock --bench diode` (as root, with mosquitto, ip and iptables;
//! `-- quick` for fewer records).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_store::outbox::decode_cursor;
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter};
use airlock_testkit::netns::{IT_ADDRESS, Killed, Link, interrupt};
use airlock_testkit::{Broker, cpu_seconds_of};

fn airlock() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_airlock"))
}

/// The OT side's outbox with `n` records for `sink`; returns the bytes of one record.
fn fill(data: &Path, sink: &str, n: u64) -> usize {
    let record = airlock_testkit::records::press_speed();
    let config = OutboxConfig { fsync: FsyncPolicy::Never, sinks: vec![sink.into()], ..OutboxConfig::default() };
    let (mut writer, _) = OutboxWriter::open(&data.join("outbox"), config).unwrap();
    for _ in 0..n {
        writer.append(Class::Raw, &record).unwrap();
    }
    writer.sync().unwrap();
    let mut bytes = Vec::new();
    airlock_upstream::encode(&record, &mut bytes);
    bytes.len()
}

/// Raw records acknowledged by `sink` as its cursor file says (written at most every 100 ms
/// while acknowledgements come, so it may lag the last ones until the sink stops).
fn acked_raw(data: &Path, sink: &str) -> u64 {
    let path = data.join("outbox/cursors").join(format!("{sink}.cursor"));
    std::fs::read(path).ok().and_then(|b| decode_cursor(&b)).map_or(0, |p| p.0[Class::Raw as usize])
}

/// Lines of a growing file, counted as it grows.
struct Lines {
    path: PathBuf,
    read: u64,
    lines: u64,
}

impl Lines {
    fn count(&mut self) -> u64 {
        use std::io::{Read, Seek, SeekFrom};
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            let _ = f.seek(SeekFrom::Start(self.read));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            self.read += buf.len() as u64;
            self.lines += buf.iter().filter(|b| **b == b'\n').count() as u64;
        }
        self.lines
    }
}

const DEVICE: &str = "[[device]]\nname = \"press1\"\nasset_path = \"acme/plant/press/line1\"\nprotocol = \"modbus_tcp\"\n\
address = \"127.0.0.1:1\"\n\n[[device.tag]]\nname = \"speed\"\nspace = \"holding_register\"\naddress = 0\ntype = \"u16\"\n";

struct Figures {
    seconds: f64,
    ot_cpu: f64,
    it_cpu: f64,
    arrived: u64,
    missing: u64,
}

/// Waits until `done` (at most `limit`), polling.
fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn spawn(ns: Option<&str>, args: &[&str], log: &Path) -> Killed {
    let mut c = match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(airlock());
            c
        }
        None => Command::new(airlock()),
    };
    let log = std::fs::File::create(log).unwrap();
    Killed(c.args(args).stdout(Stdio::null()).stderr(log).spawn().unwrap())
}

fn mqtt(dir: &Path, n: u64) -> Figures {
    let broker = Broker::start_quiet(dir);
    // It exits once it has all the records.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "acme/#", "-q", "1", "-C", &n.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let data = dir.join("ot-data");
    fill(&data, "uns", n);
    let config = dir.join("ot.toml");
    let text = format!(
        "[gateway]\nname = \"press-gw\"\n[store]\ndata_dir = \"ot-data\"\n{DEVICE}\n[[sink]]\nname = \"uns\"\ntype = \"mqtt\"\n\
         url = \"mqtt://127.0.0.1:{}\"\ninflight_max = 100\nrate_max_per_s = 100000\n",
        broker.port
    );
    std::fs::write(&config, text).unwrap();
    let started = Instant::now();
    let ot = spawn(None, &["run", config.to_str().unwrap()], &dir.join("run.log"));
    assert!(until(Duration::from_secs(600), || sub.try_wait().unwrap().is_some()), "MQTT drain did not finish");
    let seconds = started.elapsed().as_secs_f64();
    let ot_cpu = cpu_seconds_of(ot.0.id());
    interrupt(ot);
    let _ = sub.kill();
    let _ = sub.wait();
    Figures { seconds, ot_cpu, it_cpu: 0.0, arrived: n, missing: 0 }
}

/// One diode run: the OT side in `link`'s OT namespace (or on loopback), the IT side in its IT
/// namespace; `keys` go into the diode sink.
fn diode(dir: &Path, link: Option<&Link>, n: u64, keys: &str) -> Figures {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let address = match link {
        Some(_) => format!("{IT_ADDRESS}:7000"),
        None => {
            let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            format!("127.0.0.1:{port}")
        }
    };
    let it_config = dir.join("it.toml");
    std::fs::write(
        &it_config,
        format!(
            "[receive]\nlisten = \"{address}\"\nsender = \"press-gw\"\nreorder_ms = 300\n[store]\ndata_dir = \"it-data\"\n\
             [[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = \"it.jsonl\"\n"
        ),
    )
    .unwrap();
    let data = dir.join("ot-data");
    fill(&data, "diode", n);
    let ot_config = dir.join("ot.toml");
    let text = format!(
        "[gateway]\nname = \"press-gw\"\n[store]\ndata_dir = \"ot-data\"\n{DEVICE}\n[[sink]]\nname = \"diode\"\ntype = \"diode\"\n\
         address = \"{address}\"\nheartbeat_s = 1\n{keys}"
    );
    std::fs::write(&ot_config, text).unwrap();
    let (ot_ns, it_ns) = (link.map(|l| l.ot.as_str()), link.map(|l| l.it.as_str()));
    let it = spawn(it_ns, &["receive", it_config.to_str().unwrap()], &dir.join("receive.log"));
    std::thread::sleep(Duration::from_millis(500));
    let it_cpu_before = cpu_seconds_of(it.0.id());
    let started = Instant::now();
    let ot = spawn(ot_ns, &["run", ot_config.to_str().unwrap()], &dir.join("run.log"));
    // Through when the IT side's sink has written them all out, or the OT side has sent them
    // all and a few heartbeats later nothing more comes (records lost at too little repair).
    let mut file = Lines { path: dir.join("it.jsonl"), read: 0, lines: 0 };
    let mut seconds = 0.0;
    let mut last = (0, Instant::now());
    until(Duration::from_secs(600), || {
        let through = file.count();
        if through != last.0 {
            last = (through, Instant::now());
            seconds = started.elapsed().as_secs_f64();
        }
        // (The OT cursor file may lag its last acknowledgements until the sink stops: it
        // only says the sending began.)
        through >= n || (acked_raw(&data, "diode") > 0 && last.1.elapsed() > Duration::from_secs(4))
    });
    let ot_cpu = cpu_seconds_of(ot.0.id());
    let it_cpu = cpu_seconds_of(it.0.id()) - it_cpu_before;
    interrupt(ot);
    std::thread::sleep(Duration::from_secs(2));
    interrupt(it);
    let text = std::fs::read_to_string(dir.join("it.jsonl")).unwrap_or_default();
    let (mut arrived, mut missing) = (0, 0);
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["kind"] == "diode_gap" && v["class"] == "raw" {
            missing += v["records"].as_u64().unwrap();
        } else if v["id"].as_str().unwrap().starts_with("press-gw-r") {
            arrived += 1;
        }
    }
    Figures { seconds, ot_cpu, it_cpu, arrived, missing }
}

fn row(name: &str, f: &Figures, n: u64, record_bytes: usize) {
    let mb = (n as f64 * record_bytes as f64) / 1e6;
    let per_mb = |cpu: f64| if cpu > 0.0 { format!("{:.1}", 1000.0 * cpu / mb) } else { "-".into() };
    println!(
        "| {name} | {:.0} | {:.2} | {} ({:.2} s) | {} ({:.2} s) | {}/{} |",
        n as f64 / f.seconds,
        mb / f.seconds,
        per_mb(f.ot_cpu),
        f.ot_cpu,
        per_mb(f.it_cpu),
        f.it_cpu,
        f.arrived,
        f.missing
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let n: u64 = if quick { 50_000 } else { 200_000 };
    let root = std::env::temp_dir().join(format!("airlock-bench-diode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("mqtt")).unwrap();
    let record_bytes = {
        let mut b = Vec::new();
        airlock_upstream::encode(&airlock_testkit::records::press_speed(), &mut b);
        b.len()
    };
    println!("{n} records of {record_bytes} bytes (their upstream encoding)\n");
    println!("| path | records/s | MB/s | OT CPU ms/MB (s) | IT CPU ms/MB (s) | arrived/missing |");
    println!("|---|---:|---:|---:|---:|---:|");
    let m = mqtt(&root.join("mqtt"), n);
    row("MQTT sink → mosquitto, QoS 1 (baseline)", &m, n, record_bytes);
    let keys = "repair_percent = 5\nrate_max_bytes_per_s = 100000000\n";
    let d = diode(&root.join("loopback"), None, n, keys);
    row("diode, loopback, 5 % repair, cap 100 MB/s", &d, n, record_bytes);
    println!("\nratio diode loopback / MQTT records/s: {:.2}×", m.seconds / d.seconds);
    let link = Link::make('x', 0.01);
    let keys = "repair_percent = 10\nrate_max_bytes_per_s = 100000000\n";
    let d = diode(&root.join("netns"), Some(&link), n, keys);
    println!();
    row("diode, two namespaces, 1 % loss, 10 % repair, cap 100 MB/s", &d, n, record_bytes);
    println!("\nsmallest repair that lost nothing at 1 % loss (across the namespaces, {} records):", n / 4);
    println!("| repair_percent | arrived | missing |");
    println!("|---:|---:|---:|");
    let mut smallest = None;
    for repair in [0, 1, 2, 3, 5, 8, 10, 15] {
        let keys = format!("repair_percent = {repair}\nrate_max_bytes_per_s = 100000000\n");
        let f = diode(&root.join(format!("repair-{repair}")), Some(&link), n / 4, &keys);
        println!("| {repair} | {} | {} |", f.arrived, f.missing);
        if f.missing == 0 && f.arrived >= n / 4 && smallest.is_none() {
            smallest = Some(repair);
        }
    }
    match smallest {
        Some(r) => println!("\nsmallest repair with nothing lost: {r} %"),
        None => println!("\nno repair tried lost nothing"),
    }
    let _ = std::fs::remove_dir_all(&root);
}
