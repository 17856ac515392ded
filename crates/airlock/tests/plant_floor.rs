//! The whole gateway on the newer parts of the plant floor, as a user runs it: `airlock browse`
//! against asyncua (PyPI) lists the variables and its `--toml` passes `airlock check`; then
//! `airlock run` reads that server through a subscription and an OT-side MQTT broker
//! (mosquitto) carrying JSON, and writes what goes upstream to a JSON Lines file.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use airlock_testkit::{Broker, OpcUaPeer, free_port, temp};

fn airlock(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airlock")).args(args).output().unwrap()
}

fn asyncua(dir: &Path, port: u16) -> OpcUaPeer {
    OpcUaPeer::start(dir, port, &[])
}

#[test]
fn browse_lists_the_variables_and_its_toml_passes_check() {
    let dir = temp("browse");
    let port = free_port();
    let _server = asyncua(&dir.join("server"), port);
    let endpoint = format!("opc.tcp://127.0.0.1:{port}/");
    let data = dir.join("data");
    let out = airlock(&["browse", &endpoint, "--depth", "2", "--data-dir", data.to_str().unwrap()]);
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(tree.lines().any(|l| l.starts_with("Plant  ns=2;s=Plant  [Object]")), "{tree}");
    assert!(tree.contains("  Int32  ns=2;s=Plant.Int32  [Variable, Int32, readable]"), "{tree}");
    assert!(tree.contains("  Waveform  ns=2;s=Plant.Waveform  [Variable, Float[4096], readable]"), "{tree}");

    let out =
        airlock(&["browse", &endpoint, "--under", "ns=2;s=Plant", "--toml", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    for name in ["Boolean", "SByte", "UInt64", "Double", "String", "DateTime", "Counter"] {
        assert!(toml.contains(&format!("node_id = \"ns=2;s=Plant.{name}\"")), "{name} missing:\n{toml}");
    }
    assert!(toml.contains("type = \"waveform\"\nwaveform_samples = 4096\n"), "{toml}");
    let file = dir.join("browsed.toml");
    std::fs::write(&file, &toml).unwrap();
    let check = airlock(&["check", file.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{said}{}", String::from_utf8_lossy(&check.stderr));
    assert!(said.contains("opcua1       opcua"), "{said}");
}

#[test]
fn run_reads_opcua_and_an_ot_broker_and_sends_upstream() {
    let dir = temp("floor");
    let port = free_port();
    let _server = asyncua(&dir.join("server"), port);
    let broker = Broker::start(&dir);
    let out = dir.join("upstream.jsonl");
    let config = format!(
        "[store]\ndata_dir = \"{data}\"\n\
         [[device]]\nname = \"cell\"\nasset_path = \"acme/plant\"\nprotocol = \"opcua\"\naddress = \"opc.tcp://127.0.0.1:{port}/\"\n\
         publishing_interval_ms = 100\n\
         [[device.tag]]\nname = \"counter\"\ntype = \"u32\"\nnode_id = \"ns=2;s=Plant.Counter\"\nsampling_interval_ms = 50\n\
         [[device]]\nname = \"ot\"\nasset_path = \"acme/plant\"\nprotocol = \"mqtt\"\naddress = \"127.0.0.1:{mqtt}\"\n\
         [[device.tag]]\nname = \"speed\"\ntopic = \"press1/status\"\nvalue_pointer = \"/speed\"\n",
        data = dir.join("data").display(),
        mqtt = broker.port
    );
    let file = dir.join("floor.toml");
    std::fs::write(&file, config).unwrap();
    let mut run = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--duration", "6s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Publish on the OT broker until airlock has subscribed and the value shows upstream.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let _ = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &broker.port.to_string(),
                "-t",
                "press1/status",
                "-m",
                r#"{"speed": 1480.5}"#,
            ])
            .status();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(run.wait().unwrap().success());
    let text = std::fs::read_to_string(&out).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |path: &str| records.iter().filter(|r| r.to_string().contains(path)).count();
    assert!(of("acme/plant/cell/counter") >= 3, "too few counter records upstream:\n{text}");
    assert!(of("acme/plant/ot/speed") >= 1, "no speed record upstream:\n{text}");
    assert!(text.contains("1480.5"), "{text}");
}
