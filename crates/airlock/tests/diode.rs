//! Diode mode across a real link: two network namespaces made here (an OT side and an IT side)
//! joined by a veth pair, IPv6 off, ARP off with static neighbour entries, a firewall in the OT
//! namespace that drops every packet arriving from the IT side, and 1 % random loss at the IT
//! side's input (iptables `statistic`; this kernel has no netem). `airlock run` with a diode
//! sink runs in the OT namespace on an outbox holding 50,000 records; `airlock receive`
//! runs in the IT namespace with a JSON Lines sink and an MQTT sink to a mosquitto there.
//!
//! Every record id arrives in both IT sinks; nothing sent from the IT side reaches the OT
//! half's socket (the firewall's counter grows, the socket's queue stays empty). Then the
//! receiver is killed -9 and started again while the sender goes on, and the sender is
//! restarted: duplicates are dropped, and any id that did not arrive is named in a `diode_gap`.
//!
//! Needs root (CI runs as root) and `ip`, `iptables`, `mosquitto` (installed by ./scripts/test).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_model::{Timestamp, Value, ValueType};
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter};
use airlock_upstream::Upstream;

use airlock_testkit::netns::{IT_ADDRESS, Killed, Link, OT_ADDRESS, interrupt, run};
const RECORDS: u64 = 50_000;

fn sample(i: u64) -> Upstream {
    let time = Timestamp(1_700_000_000_000_000_000 + i as i64 * 1_000_000);
    airlock_testkit::records::sample("acme/plant/press/line1/press1/speed", ValueType::F64, Value::F64(i as f64), time)
}

/// The OT side's outbox, holding records r1 to r`n` for the diode sink.
fn fill_ot_outbox(data: &Path, n: u64) {
    let config = OutboxConfig { fsync: FsyncPolicy::Never, sinks: vec!["diode".into()], ..OutboxConfig::default() };
    let (mut writer, _) = OutboxWriter::open(&data.join("outbox"), config).unwrap();
    for i in 1..=n {
        writer.append(Class::Raw, &sample(i)).unwrap();
    }
    writer.sync().unwrap();
}

fn airlock() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_airlock"))
}

/// `mosquitto_sub` in the IT namespace: the ids of the messages it got.
fn subscribe(link: &Link) -> (Child, Arc<Mutex<Vec<String>>>) {
    let sub = PathBuf::from("mosquitto_sub");
    let mut child = link
        .exec(&link.it, &sub, &["-h", "127.0.0.1", "-p", "1883", "-t", "it/#", "-q", "1", "-i", "check", "-c"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ids = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&ids);
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(id) = v["id"].as_str()
            {
                into.lock().unwrap().push(id.to_owned());
            }
        }
    });
    (child, ids)
}

/// The ids in a JSON Lines file, and its `diode_gap` events' raw ranges.
fn jsonl(path: &Path) -> (Vec<String>, Vec<(u64, u64)>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut ids = Vec::new();
    let mut gaps = Vec::new();
    // Read while the sink appends: only whole lines (a last one may be half written).
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        ids.push(v["id"].as_str().unwrap().to_owned());
        if v["kind"] == "diode_gap" && v["class"] == "raw" {
            let seq = |k: &str| v[k].as_str().unwrap()[1..].parse::<u64>().unwrap();
            gaps.push((seq("first_id"), seq("last_id")));
        }
    }
    (ids, gaps)
}

fn raw_ids(ids: &[String]) -> BTreeSet<u64> {
    ids.iter().filter_map(|id| id.strip_prefix("press-gw-r")).filter_map(|s| s.parse().ok()).collect()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn records_cross_a_one_way_link_with_loss_and_nothing_comes_back() {
    let dir = std::env::temp_dir().join(format!("airlock-diode-netns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let link = Link::make('a', 0.01);

    let broker_conf = dir.join("mosquitto.conf");
    let broker_log = dir.join("mosquitto.log");
    std::fs::write(
        &broker_conf,
        format!(
            "user root\nlistener 1883 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n\
             log_dest file {}\nlog_type all\n",
            broker_log.display()
        ),
    )
    .unwrap();
    let _broker = Killed(
        link.exec(&link.it, &airlock_testkit::mosquitto(), &["-c", broker_conf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Once the broker listens, and until it has taken the subscription: not a fixed time.
    airlock_testkit::wait_in_broker_log(&broker_log, " running"); // "mosquitto version V running"
    let (sub, from_broker) = subscribe(&link);
    let _sub = Killed(sub);
    airlock_testkit::wait_in_broker_log(&broker_log, "Sending SUBACK to check");

    let it_config = dir.join("it.toml");
    std::fs::write(
        &it_config,
        format!(
            "[receive]\nlisten = \"{IT_ADDRESS}:7000\"\nsender = \"press-gw\"\nreorder_ms = 500\nsilent_after_s = 3\n\n\
             [store]\ndata_dir = \"it-data\"\n\n\
             [[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = \"it.jsonl\"\n\n\
             [[sink]]\nname = \"uns\"\ntype = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\ntopic_prefix = \"it/\"\ninflight_max = 200\n"
        ),
    )
    .unwrap();
    // The OT side reads airlock's simulated press line, served in the OT namespace.
    let (sim, plant) = simulate(&link, &dir);
    let _sim = Killed(sim);
    let ot_config = dir.join("ot.toml");
    let mut text = plant.replace("[gateway]\nname = \"demo\"", "[gateway]\nname = \"press-gw\"");
    text += &format!(
        "\n[store]\ndata_dir = \"ot-data\"\n\n\
         [[sink]]\nname = \"diode\"\ntype = \"diode\"\naddress = \"{IT_ADDRESS}:7000\"\nrepair_percent = 10\nheartbeat_s = 1\n"
    );
    std::fs::write(&ot_config, text).unwrap();
    for config in [&it_config, &ot_config] {
        let out = Command::new(airlock()).arg("check").arg(config).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    fill_ot_outbox(&dir.join("ot-data"), RECORDS);

    from_the_first_id(&dir.join("it-data"));
    let receive = |log: &str| {
        let log = std::fs::File::create(dir.join(log)).unwrap();
        Killed(link.exec(&link.it, &airlock(), &["receive", it_config.to_str().unwrap()]).stderr(log).spawn().unwrap())
    };
    let send = |log: &str| {
        let log = std::fs::File::create(dir.join(log)).unwrap();
        Killed(
            link.exec(&link.ot, &airlock(), &["run", ot_config.to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let mut receiver = receive("receive-1.log");
    std::thread::sleep(Duration::from_millis(500));
    let mut sender = send("run-1.log");

    // 1 % loss, 10 % repair: every one of the 50,000 records arrives in both sinks.
    let file = dir.join("it.jsonl");
    wait_for("every record in the JSON Lines file", Duration::from_secs(120), || {
        raw_ids(&jsonl(&file).0).range(1..=RECORDS).count() as u64 == RECORDS
    });
    wait_for("every record through mosquitto", Duration::from_secs(120), || {
        raw_ids(&from_broker.lock().unwrap()).range(1..=RECORDS).count() as u64 == RECORDS
    });
    let (ids, gaps) = jsonl(&file);
    assert!(gaps.is_empty(), "records named missing at 1 % loss with 10 % repair: {gaps:?}");
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "a record was written twice by the receiving side");

    // Nothing from the IT side reaches the OT half: send it datagrams, they are dropped at
    // the OT side's input, and the OT half's socket holds none.
    let sockets = link.ot_udp_sockets();
    assert_eq!(sockets.len(), 1, "the OT half has one UDP socket (for sending): {sockets:?}");
    let port = sockets[0].0;
    let before = link.ot_dropped();
    let flood = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         [s.sendto(b'from IT', ('{OT_ADDRESS}', {port})) for _ in range(200)]"
    );
    run(&["ip", "netns", "exec", &link.it, "python3", "-c", &flood]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(link.ot_dropped() >= before + 200, "the OT side's firewall did not see the datagrams from IT");
    let sockets = link.ot_udp_sockets();
    assert_eq!((sockets[0].1, sockets[0].2), (0, 0), "a datagram from IT reached the OT half's socket: {sockets:?}");

    let log = std::fs::read_to_string(dir.join("receive-1.log")).unwrap();
    assert!(log.contains("sender press-gw: 5 devices up"), "the OT side's health in the receiver's log:\n{log}");

    // The receiver killed -9 while records flow, and started again; then the sender killed -9
    // and started again; then both stopped cleanly (the sender first).
    let flowing = raw_ids(&jsonl(&file).0).len();
    drop(receiver);
    std::thread::sleep(Duration::from_secs(2));
    receiver = receive("receive-2.log");
    std::thread::sleep(Duration::from_secs(3));
    drop(sender);
    sender = send("run-2.log");
    std::thread::sleep(Duration::from_secs(4));
    interrupt(sender);
    std::thread::sleep(Duration::from_secs(2));
    interrupt(receiver);
    let (ids, gaps) = jsonl(&file);
    assert!(
        raw_ids(&ids).len() > flowing + 10,
        "records kept flowing: {flowing} before, {} after",
        raw_ids(&ids).len()
    );
    let arrived = raw_ids(&ids);
    let mut missing = BTreeSet::new();
    for (first, last) in &gaps {
        for id in *first..=*last {
            assert!(missing.insert(id), "r{id} named missing twice");
        }
    }
    assert!(arrived.is_disjoint(&missing), "an id arrived and was named missing");
    let newest = *arrived.iter().chain(missing.iter()).max().unwrap();
    let unaccounted: Vec<u64> =
        (1..=newest).filter(|i| !arrived.contains(i) && !missing.contains(i)).take(10).collect();
    assert!(unaccounted.is_empty(), "ids neither arrived nor named missing: {unaccounted:?}");
    if std::env::var_os("AIRLOCK_TEST_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `airlock sim` in the OT namespace (4 Modbus presses from port 5020, and the line's OPC UA
/// server), and the config it prints for reading it.
fn simulate(link: &Link, dir: &Path) -> (Child, String) {
    let printed = dir.join("sim.toml");
    let mut child = link
        .exec(&link.ot, &airlock(), &["sim", "--base-port", "5020", "--speed", "60", "--print-config"])
        .stdout(std::fs::File::create(&printed).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    // The config is printed first; then a line on stderr says the plant is served.
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("running") {
        line.clear();
    }
    std::thread::spawn(move || while err.read_line(&mut String::new()).is_ok_and(|n| n > 0) {});
    (child, std::fs::read_to_string(&printed).unwrap())
}

/// The OT outbox's raw ids (what the sender had to send), read once the gateway has stopped.
fn sent_raw_ids(data: &Path) -> BTreeSet<u64> {
    let config = OutboxConfig { sinks: vec!["diode".into()], retain: true, ..OutboxConfig::default() };
    let (_writer, reader) = OutboxWriter::open(&data.join("outbox"), config).unwrap();
    let mut at = airlock_store::Position::default();
    let mut ids = BTreeSet::new();
    loop {
        let batch = reader.read(&at, 10_000).unwrap();
        if batch.is_empty() {
            return ids;
        }
        for r in batch {
            at.advance(r.id);
            if r.id.class == Class::Raw {
                ids.insert(r.id.seq);
            }
        }
    }
}

/// What one run gave: the raw ids sent, those that arrived, those named missing, and the
/// receiver's JSON Lines records.
struct RunResult {
    sent: BTreeSet<u64>,
    arrived: BTreeSet<u64>,
    missing: BTreeSet<u64>,
    records: Vec<serde_json::Value>,
}

/// One run of a gateway with a diode sink (`diode_keys` added to it) on 20,000 records to a
/// receiver, in `dir`; `during` runs while it sends.
fn one_run(link: &Link, dir: &Path, diode_keys: &str, during: impl FnOnce()) -> RunResult {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let it_config = dir.join("it.toml");
    std::fs::write(
        &it_config,
        format!(
            "[receive]\nlisten = \"{IT_ADDRESS}:7000\"\nsender = \"press-gw\"\nreorder_ms = 300\nsilent_after_s = 1\n\n\
             [store]\ndata_dir = \"it-data\"\n\n[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = \"it.jsonl\"\n"
        ),
    )
    .unwrap();
    let ot_config = dir.join("ot.toml");
    std::fs::write(
        &ot_config,
        format!(
            "[gateway]\nname = \"press-gw\"\n\n[store]\ndata_dir = \"ot-data\"\n\n\
             [[device]]\nname = \"press1\"\nasset_path = \"acme/plant/press/line1\"\nprotocol = \"modbus_tcp\"\n\
             address = \"127.0.0.1:1\"\n\n[[device.tag]]\nname = \"speed\"\nspace = \"holding_register\"\naddress = 0\ntype = \"u16\"\n\n\
             [[sink]]\nname = \"diode\"\ntype = \"diode\"\naddress = \"{IT_ADDRESS}:7000\"\nheartbeat_s = 1\n{diode_keys}"
        ),
    )
    .unwrap();
    fill_ot_outbox(&dir.join("ot-data"), 20_000);
    from_the_first_id(&dir.join("it-data"));
    let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
    let receiver = Killed(
        link.exec(&link.it, &airlock(), &["receive", it_config.to_str().unwrap()])
            .stderr(log("receive.log"))
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let sender = Killed(
        link.exec(&link.ot, &airlock(), &["run", ot_config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log("run.log"))
            .spawn()
            .unwrap(),
    );
    during();
    // Long enough for everything to be sent and the heartbeats that name a lost tail; then
    // both stopped cleanly, the sender first.
    std::thread::sleep(Duration::from_secs(3));
    interrupt(sender);
    std::thread::sleep(Duration::from_secs(2));
    interrupt(receiver);
    let sent = sent_raw_ids(&dir.join("ot-data"));
    let (ids, gaps) = jsonl(&dir.join("it.jsonl"));
    let mut missing = BTreeSet::new();
    for (first, last) in &gaps {
        for id in *first..=*last {
            assert!(missing.insert(id), "r{id} named missing twice");
        }
    }
    let text = std::fs::read_to_string(dir.join("it.jsonl")).unwrap_or_default();
    let records = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    RunResult { sent, arrived: raw_ids(&ids), missing, records }
}

/// What arrived and what was named missing are apart, and together exactly what was sent.
fn assert_accounted(r: &RunResult) {
    assert!(r.sent.len() >= 20_000, "the OT outbox held {} raw records", r.sent.len());
    let both: Vec<&u64> = r.arrived.intersection(&r.missing).take(5).collect();
    assert!(both.is_empty(), "ids that arrived and were named missing: {both:?}");
    let invented: Vec<&u64> = r.missing.difference(&r.sent).take(5).collect();
    assert!(invented.is_empty(), "ids named missing that were never sent: {invented:?}");
    let unnamed: Vec<&u64> =
        r.sent.iter().filter(|id| !r.arrived.contains(id) && !r.missing.contains(id)).take(5).collect();
    assert!(unnamed.is_empty(), "ids sent that neither arrived nor were named missing: {unnamed:?}");
}

#[test]
fn heavy_loss_and_bursts_are_named_exactly_or_covered_by_a_repeat() {
    let root = std::env::temp_dir().join(format!("airlock-diode-faults-{}", std::process::id()));
    // 20 % loss with 2 % repair: much is lost, and exactly that is named.
    let heavy = Link::make('b', 0.20);
    // Small blocks (two symbols and one repair symbol each): some decode, some do not.
    let r = one_run(&heavy, &root.join("heavy"), "repair_percent = 2\nblock_bytes = 2048\n", || {});
    assert!(!r.missing.is_empty() && !r.arrived.is_empty(), "{} arrived, {} missing", r.arrived.len(), r.missing.len());
    assert_accounted(&r);
    drop(heavy);

    // Every packet into the IT side dropped for 2 s while the sender sends (paced to take ~4 s).
    let burst = Link::make('c', 0.0);
    let keys = "rate_max_bytes_per_s = 600000\nrepair_percent = 5\n";
    let cut = || {
        std::thread::sleep(Duration::from_millis(1200));
        burst.cut(true);
        std::thread::sleep(Duration::from_secs(2));
        burst.cut(false);
    };
    let r = one_run(&burst, &root.join("burst"), keys, cut);
    assert!(!r.missing.is_empty(), "a 2-second cut lost nothing without a repeat");
    assert_accounted(&r);
    let silent: Vec<&serde_json::Value> = r.records.iter().filter(|r| r["kind"] == "diode_silent").collect();
    assert!(
        silent.iter().any(|r| r["state"] == "raised") && silent.iter().any(|r| r["state"] == "cleared"),
        "the cut is reported silent, then cleared: {silent:?}"
    );
    // The same with each block sent again 3 s later: nothing lost.
    let keys = format!("{keys}repeat_after_ms = 3000\n");
    let r = one_run(&burst, &root.join("repeat"), &keys, cut);
    assert!(r.missing.is_empty(), "{} ids named missing despite the repeat", r.missing.len());
    assert_accounted(&r);
    if std::env::var_os("AIRLOCK_TEST_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// Sets up a receiving half to take everything from the sender's first id on. A receiver with
/// no state starts at the first heartbeat it hears, and with random loss the sender's first
/// heartbeat can be lost: then what was sent before the next is neither received nor named.
fn from_the_first_id(data: &Path) {
    std::fs::create_dir_all(data).unwrap();
    let state = airlock_diode::assemble::State::default();
    std::fs::write(airlock_diode::receive::state_path(data), airlock_diode::receive::encode_state(&state)).unwrap();
}
