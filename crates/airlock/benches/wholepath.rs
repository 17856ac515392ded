//! The whole path against bare libmodbus: registers per CPU-second, every sample stored.
//!
//! A libmodbus TCP server of our own (`benches/c/modbus_server.c`: 10,000 holding registers,
//! one client at a time, every read moving the registers it read on by one) runs pinned to
//! core 1. The baseline is libmodbus's own client (`benches/c/modbus_client.c`), pinned to
//! core 0, reading all 10,000 registers again and again, 125 a request, one request in flight,
//! into a buffer. Then `airlock run`, pinned to core 0, reads the same server with 10,000 `u16`
//! tags at `poll_interval_ms = 1` (one request in flight, as always), every sample into the
//! historian, the default store settings. Both figures are registers read per CPU-second of the
//! reading process; the gateway's must count no dropped poll and every sample stored. Last, the
//! footprint: the same 10,000 tags read once a second for 150 s at least (past the historian's
//! first checkpoint), the gateway's RSS (now and peak, the config's parse included) and CPU.
//!
//! Then Node-RED 4.1.15 with node-red-contrib-modbus 5.23.3 (from npm, installed once per
//! machine into `~/.cache/airlock/node-red`), the tool many plants use, reads the same server
//! pinned to core 0: 30 Modbus-Read nodes of 125 holding registers each, every 1 ms, on one
//! connection, counted by a function node; its registers per CPU-second and RSS beside the
//! gateway's (issue 15's second goal: at least 2x the registers per CPU-second at at most a
//! fifth of the RSS). Skipped, saying so, where node and npm are not installed. Node-RED's flow
//! has up to 30 requests in flight on its connection; beside it the gateway is measured again
//! with `requests_in_flight_max = 4` (a device setting; 1 by default) and a 5 ms poll.
//!
//! Beside the baseline, the floor: `benches/c/socket_client.c` reads the same registers with
//! nothing but a blocking socket (one send, one blocking read an answer, no decoding): what any
//! reader with one request in flight costs at least on this machine's kernel.
//!
//! The C programs are built here with `cc` against libmodbus (`libmodbus-dev`, installed by
//! `./scripts/test`). Run: `cargo bench -p airlock --bench wholepath` (add `-- 20` for 20-second
//! runs).

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airlock_testkit::{cpu_seconds_of, free_port, http_get, peak_rss_mb_of, pinned, rss_mb_of, temp};

const REGISTERS: usize = 10_000;
/// Requests in flight for the run beside Node-RED (whose flow has up to 30), and its poll
/// interval: all 10,000 registers every 5 ms, some 2 M registers a second, about what Node-RED
/// reads when asked every 1 ms (a 1 ms poll reads over 5 M/s, and the gateway's RSS grows with
/// what it is handed a second).
const IN_FLIGHT: u8 = 4;
const IN_FLIGHT_POLL_MS: u64 = 5;

/// Builds `benches/c/NAME.c` against libmodbus into `dir`; returns the program's path.
fn build_c(name: &str, dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/c").join(format!("{name}.c"));
    let out = dir.join(name);
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libmodbus"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .unwrap_or_else(|| vec!["-I/usr/include/modbus".into(), "-lmodbus".into()]);
    let made = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .args(&flags)
        .output()
        .expect("cc is not installed");
    assert!(
        made.status.success(),
        "build {name}.c (libmodbus-dev is needed: ./scripts/test installs it): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    out
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(program: &Path, port: u16) -> Server {
    let mut child =
        pinned(1, program).args([port.to_string(), REGISTERS.to_string()]).stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    Server(child)
}

/// (registers per second, CPU cores used) of libmodbus's client.
fn baseline(program: &Path, port: u16, seconds: u64) -> (f64, f64) {
    let out = pinned(0, program).args([port.to_string(), REGISTERS.to_string(), seconds.to_string()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let (registers, elapsed, cpu): (f64, f64, f64) =
        (words[1].parse().unwrap(), words[3].parse().unwrap(), words[5].parse().unwrap());
    (registers / elapsed, cpu / elapsed)
}

fn config(port: u16, web: u16, data: &Path, poll_interval_ms: u64, in_flight: u8) -> String {
    let mut text = format!(
        "[gateway]\nname = \"bench\"\n\n[store]\ndata_dir = \"{}\"\n\n[web]\nlisten = \"127.0.0.1:{web}\"\n\n\
         [[device]]\nname = \"plc\"\nasset_path = \"bench/line\"\nprotocol = \"modbus_tcp\"\n\
         address = \"127.0.0.1:{port}\"\npoll_interval_ms = {poll_interval_ms}\ntimeout_ms = 2000\nrate_max_per_s = 100000\n\
         requests_in_flight_max = {in_flight}\n",
        data.display()
    );
    for i in 0..REGISTERS {
        text +=
            &format!("[[device.tag]]\nname = \"r{i}\"\nspace = \"holding_register\"\naddress = {i}\ntype = \"u16\"\n");
    }
    text
}

/// The gateway's overview, from its JSON API.
fn overview(web: u16) -> serde_json::Value {
    let (status, body) = http_get(&format!("127.0.0.1:{web}"), "/api/v1/overview");
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

struct Gateway {
    registers_per_s: f64,
    cores: f64,
    dropped: u64,
    read: u64,
    stored: u64,
    rss_mb: f64,
    peak_rss_mb: f64,
}

fn gateway(port: u16, seconds: u64, poll_interval_ms: u64, in_flight: u8) -> Gateway {
    let dir = temp("wholepath");
    let web = free_port();
    let path = dir.join("wholepath.toml");
    std::fs::write(&path, config(port, web, &dir.join("data"), poll_interval_ms, in_flight)).unwrap();
    let mut child = pinned(0, Path::new(env!("CARGO_BIN_EXE_airlock")))
        .arg("run")
        .arg(&path)
        .args(["--duration", &format!("{}s", seconds + 30)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !airlock_testkit::listening(("127.0.0.1", web)) {
        assert!(Instant::now() < deadline, "the gateway did not serve its API");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2)); // connected and polling
    let samples = |o: &serde_json::Value| o["devices"][0]["samples"].as_u64().unwrap();
    let (first, cpu0, t0) = (overview(web), cpu_seconds_of(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(seconds));
    let (last, cpu1, elapsed) = (overview(web), cpu_seconds_of(pid), t0.elapsed().as_secs_f64());
    let rss_mb = rss_mb_of(pid);
    let peak_rss_mb = peak_rss_mb_of(pid);
    let _ = Command::new("kill").args(["-INT", &pid.to_string()]).status();
    let stopped = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < stopped {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Gateway {
        registers_per_s: (samples(&last) - samples(&first)) as f64 / elapsed,
        cores: (cpu1 - cpu0) / elapsed,
        dropped: last["devices"][0]["batches_dropped"].as_u64().unwrap(),
        read: samples(&last),
        stored: last["store"]["samples_stored"].as_u64().unwrap(),
        rss_mb,
        peak_rss_mb,
    }
}

/// Node-RED's figures: registers per second, CPU cores, RSS (MB).
struct NodeRed {
    registers_per_s: f64,
    cores: f64,
    rss_mb: f64,
}

const NODE_RED: &str = "node-red@4.1.15";
const NODE_RED_MODBUS: &str = "node-red-contrib-modbus@5.23.3";
/// Read nodes, registers each: what a Node-RED flow reading a PLC looks like.
const NODE_RED_READERS: usize = 30;

/// Node-RED and the Modbus nodes, installed once per machine; `None` without node and npm.
fn node_red_home() -> Option<PathBuf> {
    let home = PathBuf::from(std::env::var("HOME").ok()?).join(".cache/airlock/node-red");
    let red = home.join("node_modules/node-red/red.js");
    let modbus = home.join("node_modules/node-red-contrib-modbus/package.json");
    if red.exists() && modbus.exists() {
        return Some(home);
    }
    std::fs::create_dir_all(&home).ok()?;
    let installed = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error", NODE_RED, NODE_RED_MODBUS])
        .current_dir(&home)
        .status()
        .ok()?;
    (installed.success() && red.exists()).then_some(home)
}

/// The flow: a Modbus client on the server without its command queue (`bufferCommands` off:
/// with the queue it made some 300 requests a second here; without, each read node's request
/// goes at once, several in flight on the connection, which is how the issue measured 12,000
/// requests a second), NODE_RED_READERS read nodes every 1 ms, a function
/// node counting the registers they bring, and GET /count answering that count. (Node ids differ
/// from every name: Node-RED takes a property equal to a node's id for a reference to it.)
fn node_red_flow(port: u16) -> serde_json::Value {
    let mut nodes = vec![
        serde_json::json!({"id": "id-tab", "type": "tab", "label": "bench"}),
        serde_json::json!({
            "id": "id-plc", "type": "modbus-client", "name": "plc", "clienttype": "tcp", "bufferCommands": false,
            "stateLogEnabled": false, "queueLogEnabled": false, "failureLogEnabled": false, "tcpHost": "127.0.0.1",
            "tcpPort": port.to_string(), "tcpType": "DEFAULT", "serialPort": "/dev/null", "serialType": "RTU-BUFFERD",
            "serialBaudrate": "9600", "serialDatabits": "8", "serialStopbits": "1", "serialParity": "none",
            "serialConnectionDelay": "100", "serialAsciiResponseStartDelimiter": "0x3A", "unit_id": 1,
            "commandDelay": 1, "clientTimeout": 1000, "reconnectOnTimeout": true, "reconnectTimeout": 2000,
            "parallelUnitIdsAllowed": true
        }),
        serde_json::json!({
            "id": "id-count", "type": "function", "z": "id-tab", "name": "count",
            "func": "global.set('registers', (global.get('registers') || 0) + msg.payload.length); return null;",
            "outputs": 0, "wires": []
        }),
        serde_json::json!({"id": "id-get", "type": "http in", "z": "id-tab", "url": "/count", "method": "get", "wires": [["id-answer"]]}),
        serde_json::json!({
            "id": "id-answer", "type": "function", "z": "id-tab", "name": "answer",
            "func": "msg.payload = { registers: global.get('registers') || 0 }; return msg;", "outputs": 1,
            "wires": [["id-reply"]]
        }),
        serde_json::json!({"id": "id-reply", "type": "http response", "z": "id-tab", "wires": []}),
    ];
    for i in 0..NODE_RED_READERS {
        nodes.push(serde_json::json!({
            "id": format!("id-read{i}"), "type": "modbus-read", "z": "id-tab", "name": format!("read{i}"), "topic": "",
            "showStatusActivities": false, "logIOActivities": false, "showErrors": false, "unitid": "1",
            "dataType": "HoldingRegister", "adr": (i * 125).to_string(), "quantity": "125", "rate": "1",
            "rateUnit": "ms", "delayOnStart": false, "startDelayTime": "", "server": "id-plc", "useIOFile": false,
            "ioFile": "", "useIOForPayload": false, "emptyMsgOnFail": false, "wires": [["id-count"], []]
        }));
    }
    serde_json::Value::Array(nodes)
}

/// Node-RED reading the server for `seconds`, pinned to core 0; `None` if it cannot be run here.
fn node_red(port: u16, seconds: u64) -> Option<NodeRed> {
    let Some(home) = node_red_home() else {
        println!("Node-RED: not measured (node and npm are needed to install {NODE_RED} and {NODE_RED_MODBUS})");
        return None;
    };
    let dir = temp("wholepath-node-red");
    let http = free_port();
    std::fs::write(dir.join("flows.json"), node_red_flow(port).to_string()).unwrap();
    std::fs::write(
        dir.join("settings.js"),
        format!(
            "module.exports = {{ uiPort: {http}, uiHost: '127.0.0.1', httpNodeRoot: '/', flowFile: 'flows.json', \
             logging: {{ console: {{ level: 'warn' }} }}, editorTheme: {{ projects: {{ enabled: false }} }} }};\n"
        ),
    )
    .unwrap();
    let mut child = pinned(0, "node")
        .arg(home.join("node_modules/node-red/red.js"))
        .arg("--userDir")
        .arg(&dir)
        .arg("--settings")
        .arg(dir.join("settings.js"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id();
    let count = || -> Option<u64> {
        let (status, body) = http_get(&format!("127.0.0.1:{http}"), "/count");
        (status == 200).then(|| serde_json::from_slice::<serde_json::Value>(&body).ok()?["registers"].as_u64())?
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = loop {
        if airlock_testkit::listening(("127.0.0.1", http)) && count().is_some_and(|n| n > 0) {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let result = started.then(|| {
        std::thread::sleep(Duration::from_secs(3)); // connected, timers running
        let (n0, cpu0, t0) = (count().unwrap_or(0), cpu_seconds_of(pid), Instant::now());
        std::thread::sleep(Duration::from_secs(seconds));
        let (n1, cpu1, elapsed) = (count().unwrap_or(0), cpu_seconds_of(pid), t0.elapsed().as_secs_f64());
        NodeRed { registers_per_s: (n1 - n0) as f64 / elapsed, cores: (cpu1 - cpu0) / elapsed, rss_mb: rss_mb_of(pid) }
    });
    if result.is_none() {
        println!("Node-RED: did not read the server within 60 s; not measured");
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs one of the C readers, prints its figures under `label`; its registers per CPU-second.
fn c_reader(label: &str, program: &Path, port: u16, seconds: u64) -> f64 {
    let (rate, cores) = baseline(program, port, seconds);
    println!(
        "{label}: {rate:>10.0} registers/s at {cores:.2} cores = {:.2} M registers per CPU-second",
        rate / cores / 1e6
    );
    rate / cores
}

fn main() {
    let seconds: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10);
    let dir = temp("wholepath-c");
    let (server, client, socket) =
        (build_c("modbus_server", &dir), build_c("modbus_client", &dir), build_c("socket_client", &dir));
    let port = free_port();
    let _server = start_server(&server, port);
    println!("whole path: {REGISTERS} holding registers, libmodbus server pinned to core 1, readers pinned to core 0");
    let c_per_cpu = c_reader("libmodbus client (baseline)", &client, port, seconds);
    let s_per_cpu = c_reader("bare blocking socket (the floor of one request in flight)", &socket, port, seconds);
    let g = gateway(port, seconds, 1, 1);
    let g_per_cpu = g.registers_per_s / g.cores;
    println!(
        "airlock run (every sample stored): {:>10.0} registers/s at {:.2} cores = {:.2} M registers per CPU-second",
        g.registers_per_s,
        g.cores,
        g_per_cpu / 1e6
    );
    println!(
        "  polls dropped: {}; samples read {} / stored {} (stored lags by at most one commit); RSS {:.1} MB, peak {:.1} MB",
        g.dropped, g.read, g.stored, g.rss_mb, g.peak_rss_mb
    );
    println!("ratio (registers per CPU-second, airlock / libmodbus): {:.2}x", g_per_cpu / c_per_cpu);
    if let Some(n) = node_red(port, seconds) {
        let n_per_cpu = n.registers_per_s / n.cores;
        println!(
            "Node-RED + node-red-contrib-modbus ({NODE_RED_READERS} reads of 125 every 1 ms): {:>10.0} registers/s at {:.2} cores = {:.2} M registers per CPU-second, RSS {:.1} MB",
            n.registers_per_s,
            n.cores,
            n_per_cpu / 1e6,
            n.rss_mb
        );
        println!(
            "ratio (airlock / Node-RED): {:.2}x the registers per CPU-second, {:.2} of its RSS",
            g_per_cpu / n_per_cpu,
            g.rss_mb / n.rss_mb
        );
        println!(
            "  the floor / Node-RED: {:.2}x (no reader with one request in flight can do better here)",
            s_per_cpu / n_per_cpu
        );
        // Node-RED's flow has up to NODE_RED_READERS requests in flight; the gateway, given a
        // few (`requests_in_flight_max`), is measured the same way.
        let p = gateway(port, seconds, IN_FLIGHT_POLL_MS, IN_FLIGHT);
        let p_per_cpu = p.registers_per_s / p.cores;
        println!(
            "airlock run, requests_in_flight_max = {IN_FLIGHT}, a {IN_FLIGHT_POLL_MS} ms poll (every sample stored): {:>10.0} registers/s at {:.2} cores = {:.2} M registers per CPU-second",
            p.registers_per_s,
            p.cores,
            p_per_cpu / 1e6
        );
        println!(
            "  polls dropped: {}; samples read {} / stored {}; RSS {:.1} MB, peak {:.1} MB",
            p.dropped, p.read, p.stored, p.rss_mb, p.peak_rss_mb
        );
        println!(
            "ratio (airlock with {IN_FLIGHT} in flight / Node-RED with up to {NODE_RED_READERS}): {:.2}x the registers per CPU-second, {:.2} of its RSS",
            p_per_cpu / n_per_cpu,
            p.rss_mb / n.rss_mb
        );
    }
    // The footprint: the same 10,000 tags read once a second, as a plant would (issue 15's
    // memory goal), for 150 s at least: the historian's first checkpoint comes after some 75 s
    // (16 MB of WAL at 10,000 samples/s), and its heads are largest just before it (a 30 s run
    // showed 35.7 MB where the peak is 56 MB).
    let f = gateway(port, (3 * seconds).max(150), 1000, 1);
    println!(
        "footprint, {REGISTERS} tags at 1 Hz: {:.0} samples/s, RSS {:.1} MB, peak {:.1} MB, {:.2} % of a core",
        f.registers_per_s,
        f.rss_mb,
        f.peak_rss_mb,
        100.0 * f.cores
    );
    let _ = std::fs::remove_dir_all(&dir);
}
