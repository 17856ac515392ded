//! The driver against a Modbus device we did not write: pymodbus, serving a register map that
//! holds every type in every byte/word order, encoded by pymodbus's own converter. The values
//! read must equal the values served, and only read function codes may reach the device.
//!
//! Needs Python with pymodbus: `./scripts/test` makes `.venv` and sets `AIRLOCK_PYTHON`.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use airlock_config::parse;
use airlock_model::{Sample, TagId, Value};
use airlock_south_modbus::DeviceTask;
use serde_json::{Value as Json, json};
use tokio::sync::watch;

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("AIRLOCK_PYTHON") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(venv.exists(), "no Python with pymodbus: run ./scripts/test, which installs it into .venv");
    venv
}

/// One tag: its config keys, the value pymodbus serves, and the value airlock must read.
struct Spec {
    name: String,
    toml: String,
    served: Json,
    expected: Value,
}

fn spec(name: &str, space: &str, address: u16, ty: &str, order: &str, served: Json, expected: Value) -> Spec {
    let toml = format!(
        "[[device.tag]]\nname = \"{name}\"\nspace = \"{space}\"\naddress = {address}\ntype = \"{ty}\"\norder = \"{order}\"\n"
    );
    let served = json!({"space": space, "address": address, "type": ty, "order": order, "value": served});
    Spec { name: name.into(), toml, served, expected }
}

fn every_type_in_every_order() -> Vec<Spec> {
    let mut specs = Vec::new();
    let mut address = 0u16;
    let numbers: [(&str, Json, Value, u16); 8] = [
        ("u16", json!(65000), Value::U64(65000), 1),
        ("i16", json!(-1234), Value::I64(-1234), 1),
        ("u32", json!(4_000_000_000u32), Value::U64(4_000_000_000), 2),
        ("i32", json!(-2_000_000_000), Value::I64(-2_000_000_000), 2),
        ("u64", json!(18_000_000_000_000_000_000u64), Value::U64(18_000_000_000_000_000_000), 4),
        ("i64", json!(-9_000_000_000_000_000_000i64), Value::I64(-9_000_000_000_000_000_000), 4),
        ("f32", json!(-123.25), Value::F64(-123.25), 2),
        ("f64", json!(6.02214076e23), Value::F64(6.02214076e23), 4),
    ];
    for order in ["abcd", "badc", "cdab", "dcba"] {
        for (ty, served, expected, width) in &numbers {
            let name = format!("{ty}_{order}");
            specs.push(spec(&name, "holding_register", address, ty, order, served.clone(), expected.clone()));
            address += width;
        }
    }
    let text = |t: &str| Value::Text(t.into());
    let mut s = spec("name_abcd", "input_register", 0, "string", "abcd", json!("AIRLOCK-7"), text("AIRLOCK-7"));
    s.toml += "length_chars = 10\n";
    specs.push(s);
    let mut s = spec("name_badc", "input_register", 5, "string", "badc", json!("PRESS 12"), text("PRESS 12"));
    s.toml += "length_chars = 8\n";
    specs.push(s);
    // Scaled: tenths of a degree with an offset, as many temperature transmitters send them.
    let mut s = spec("temperature", "input_register", 20, "i16", "abcd", json!(655), Value::F64(655.0 * 0.1 - 40.0));
    s.toml += "scale = 0.1\noffset = -40.0\n";
    specs.push(s);
    specs.push(spec("running", "coil", 5, "bool", "abcd", json!(true), Value::Bool(true)));
    specs.push(spec("jammed", "coil", 6, "bool", "abcd", json!(false), Value::Bool(false)));
    specs.push(spec("door_open", "discrete_input", 7, "bool", "abcd", json!(true), Value::Bool(true)));
    let mut s = spec("alarm_bit3", "holding_register", 200, "bool", "abcd", json!(true), Value::Bool(true));
    s.toml += "bit = 3\n";
    s.served["bit"] = json!(3);
    specs.push(s);
    specs
}

struct Peer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

fn start_peer(specs: &[Spec]) -> Peer {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peers/modbus_device.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let tags: Vec<&Json> = specs.iter().map(|s| &s.served).collect();
    writeln!(stdin, "{}", serde_json::to_string(&tags).unwrap()).unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let port = serde_json::from_str::<Json>(&line).unwrap()["port"].as_u64().unwrap() as u16;
    Peer { child, stdin, stdout, port }
}

impl Peer {
    fn functions(&mut self) -> Vec<u8> {
        writeln!(self.stdin, "report").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let report: Json = serde_json::from_str(&line).unwrap();
        report["functions"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_read_from_pymodbus_equal_values_served() {
    read_every_type("rate_max_per_s = 200\n").await;
}

/// The same with up to four requests in flight, sent as fast as they go. pymodbus (3.16)
/// answers them out of order and drops some that come while it answers another: each answer
/// goes to its own request's tags, a dropped one ends in the timeout, and the driver then reads
/// one request at a time. The values read must still equal the values served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_read_from_pymodbus_with_requests_in_flight_equal_values_served() {
    read_every_type("rate_max_per_s = 100000\nrequests_in_flight_max = 4\n").await;
}

/// Reads every type in every order from pymodbus, the device's `settings` added to its section.
async fn read_every_type(settings: &str) {
    let specs = every_type_in_every_order();
    let mut peer = start_peer(&specs);
    let tags: String = specs.iter().map(|s| s.toml.as_str()).collect();
    let text = format!(
        "[[device]]\nname = \"pymodbus\"\nasset_path = \"acme/lab\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:{}\"\n\
         poll_interval_ms = 100\n{settings}{tags}",
        peer.port
    );
    let config = parse(&text, Path::new("pymodbus.toml")).unwrap();
    let (tx, mut rx) = airlock_pipeline::channel(64);
    let task = modbus_task(0, &config.devices[0], TagId(0), true, &tx);
    drop(tx);
    assert!(task.requests().len() < specs.len() / 4, "{} requests for {} tags", task.requests().len(), specs.len());
    let (stop_tx, stop) = watch::channel(false);
    let running = tokio::spawn(task.run(stop));
    // Gather batches until every tag has a good sample (or the last bad one, after 10 s).
    let mut first: Vec<Option<Sample>> = vec![None; specs.len()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while first.iter().any(|s| !s.as_ref().is_some_and(|s| s.quality.is_good())) {
        let Ok(batch) = tokio::time::timeout_at(deadline, rx.recv()).await else { break };
        for s in batch.unwrap().samples {
            let slot = &mut first[s.tag.0 as usize];
            if !slot.as_ref().is_some_and(|s| s.quality.is_good()) {
                *slot = Some(s);
            }
        }
    }
    stop_tx.send(true).unwrap();
    running.await.unwrap();

    let by_tag: Vec<&Sample> = first.iter().map(|s| s.as_ref().unwrap()).collect();
    for (spec, sample) in specs.iter().zip(by_tag) {
        assert!(sample.quality.is_good(), "{}: {}", spec.name, sample.quality);
        match (&sample.value, &spec.expected) {
            (Some(Value::F64(got)), Value::F64(want)) => {
                assert!((got - want).abs() <= want.abs() * 1e-12, "{}: read {got}, served {want}", spec.name)
            }
            (got, want) => assert_eq!(got.as_ref(), Some(want), "{}", spec.name),
        }
    }
    let functions = peer.functions();
    assert!(!functions.is_empty());
    assert!(functions.iter().all(|f| (1..=4).contains(f)), "function codes received: {functions:?}");
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
