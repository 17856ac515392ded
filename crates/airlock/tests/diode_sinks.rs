//! Behind the receiving half of a diode, the Sparkplug B and HTTP sinks carry what came over the
//! one-way link as they do on a single box: `airlock run` with a diode sink on loopback sends
//! an outbox of 500 records (r1 to r500, values 1 to 500), `airlock receive` takes them into its
//! own outbox, and its sinks deliver every one: a Sparkplug B edge node on mosquitto, decoded by
//! pysparkplug (a decoder we did not write), and an ERP web hook (`http_receiver.py`) that gets
//! every record id.
//!
//! Needs mosquitto and the `.venv` Python peers (`./scripts/test` installs them).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_model::{Timestamp, Value, ValueType};
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter};
use airlock_testkit::{Broker, peer_script, python};
use serde_json::Value as Json;

const RECORDS: u64 = 500;

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a peer script and collects its JSON lines (the first one returned apart).
fn peer(args: &[&str]) -> (Killed, Json, Arc<Mutex<Vec<Json>>>) {
    let mut child = Command::new(python())
        .arg(peer_script(args[0]))
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Json = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&seen);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                into.lock().unwrap().push(v);
            }
        }
    });
    (Killed(child), first, seen)
}

/// Every string `id` of the sender's raw records anywhere in `v`.
fn raw_ids(v: &Json, out: &mut BTreeSet<u64>) {
    match v {
        Json::Object(o) => {
            if let Some(n) = o.get("id").and_then(Json::as_str).and_then(|id| id.strip_prefix("press-gw-r")) {
                out.extend(n.parse::<u64>().ok());
            }
            o.values().for_each(|x| raw_ids(x, out));
        }
        Json::Array(a) => a.iter().for_each(|x| raw_ids(x, out)),
        _ => {}
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool, said: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s; {}", said());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sparkplug_and_http_sinks_behind_the_receiver_carry_every_record() {
    let dir = std::env::temp_dir().join(format!("airlock-diode-sinks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let broker = Broker::start(&dir);
    let (_host, ready, decoded) = peer(&["sparkplug_listen.py", &broker.port.to_string()]);
    assert_eq!(ready["ready"], true);
    let (_erp, listening, posts) = peer(&["http_receiver.py", "ok"]);
    let erp_port = listening["port"].as_u64().unwrap();

    // The OT side's outbox: r1 to r500, a speed of 1 to 500.
    let config = OutboxConfig { fsync: FsyncPolicy::Never, sinks: vec!["diode".into()], ..OutboxConfig::default() };
    let (mut writer, _) = OutboxWriter::open(&dir.join("ot-data/outbox"), config).unwrap();
    for i in 1..=RECORDS {
        let time = Timestamp(1_800_000_000_000_000_000 + i as i64 * 1_000_000);
        let record =
            airlock_testkit::records::sample("acme/plant/press1/speed", ValueType::F64, Value::F64(i as f64), time);
        writer.append(Class::Raw, &record).unwrap();
    }
    writer.sync().unwrap();
    drop(writer);

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let it = dir.join("it.toml");
    std::fs::write(
        &it,
        format!(
            "[receive]\nlisten = \"127.0.0.1:{udp}\"\nsender = \"press-gw\"\n\n[store]\ndata_dir = \"it-data\"\n\n\
             [[sink]]\nname = \"scada\"\ntype = \"sparkplug\"\nurl = \"mqtt://127.0.0.1:{}\"\ngroup_id = \"dortmund\"\n\n\
             [[sink]]\nname = \"erp\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{erp_port}/hook\"\n\
             classes = [\"events\", \"aggregates\", \"series\", \"raw\"]\n",
            broker.port
        ),
    )
    .unwrap();
    let ot = dir.join("ot.toml");
    std::fs::write(
        &ot,
        format!(
            "[gateway]\nname = \"press-gw\"\n\n[store]\ndata_dir = \"ot-data\"\n\n\
             [[sink]]\nname = \"diode\"\ntype = \"diode\"\naddress = \"127.0.0.1:{udp}\"\nrepair_percent = 10\nheartbeat_s = 1\n\n\
             [[device]]\nname = \"press1\"\nasset_path = \"acme/plant\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:1\"\n\n\
             [[device.tag]]\nname = \"speed\"\nspace = \"input_register\"\naddress = 0\ntype = \"u16\"\n"
        ),
    )
    .unwrap();
    let airlock = env!("CARGO_BIN_EXE_airlock");
    let quiet = |args: &[&str], log: &str| {
        let log = std::fs::File::create(dir.join(log)).unwrap();
        Killed(Command::new(airlock).args(args).stdout(Stdio::null()).stderr(log).spawn().unwrap())
    };
    let _receiver = quiet(&["receive", it.to_str().unwrap()], "receive.log");
    std::thread::sleep(Duration::from_millis(300));
    let _sender = quiet(&["run", ot.to_str().unwrap()], "run.log");

    // pysparkplug decodes every value of speed, by the name its birth gave.
    let logs = || {
        let log = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let sparkplug: Vec<Json> = decoded.lock().unwrap().iter().take(3).cloned().collect();
        let post: Vec<Json> = posts.lock().unwrap().iter().take(1).cloned().collect();
        format!(
            "receive.log:\n{}\nrun.log:\n{}\nfirst decoded: {sparkplug:#?}\nfirst post: {post:#?}",
            log("receive.log"),
            log("run.log")
        )
    };
    wait_for(
        "every value through Sparkplug B",
        || {
            let values: BTreeSet<u64> = decoded
                .lock()
                .unwrap()
                .iter()
                // A birth carries the metric's value of the moment: the first one.
                .filter(|m| ["DBIRTH", "DDATA"].contains(&m["type"].as_str().unwrap_or("")))
                .flat_map(|m| m["metrics"].as_array().cloned().unwrap_or_default())
                .filter(|metric| metric["name"].as_str().is_some_and(|n| n.ends_with("speed")))
                .filter_map(|metric| metric["value"].as_f64())
                .map(|v| v as u64)
                .collect();
            (1..=RECORDS).all(|i| values.contains(&i))
        },
        logs,
    );
    // The web hook gets every record id, as the sender numbered it.
    wait_for(
        "every record id through the web hook",
        || {
            let mut ids = BTreeSet::new();
            for post in posts.lock().unwrap().iter() {
                assert_eq!(post["status"], 200);
                raw_ids(&post["body"], &mut ids);
            }
            (1..=RECORDS).all(|i| ids.contains(&i))
        },
        logs,
    );
    let births = decoded.lock().unwrap().iter().filter(|m| m["type"] == "DBIRTH" || m["type"] == "NBIRTH").count();
    assert!(births >= 1, "no birth before the data");
    drop(broker);
    if std::env::var_os("AIRLOCK_TEST_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
