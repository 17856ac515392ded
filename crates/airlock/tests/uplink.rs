//! The whole airlock, end to end, against real peers: the simulated press line (served here) is
//! read by `airlock run` (a child process) whose MQTT sink publishes to mosquitto, watched by
//! mosquitto_sub. The child is killed with SIGKILL mid-flight three times and restarted on the
//! same data folder; at the end every record id the outbox ever gave out has arrived, none
//! twice with different content, in order per topic.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use airlock_testkit::{Broker, Received, mosquitto_sub};

/// mosquitto_sub on `plant/#`, once the broker has taken its subscription.
fn subscribe(broker: &Broker) -> (Child, Received) {
    let port = broker.port.to_string();
    let subscriber = mosquitto_sub(&["-h", "127.0.0.1", "-p", &port, "-t", "plant/#", "-q", "1", "-i", "it-side"]);
    broker.wait_subscribed("it-side");
    subscriber
}

fn run_airlock(config: &Path, duration: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_airlock"));
    cmd.arg("run").arg(config);
    if let Some(d) = duration {
        cmd.args(["--duration", d]);
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

#[test]
fn nothing_is_lost_when_airlock_is_killed_mid_flight() {
    let dir = std::env::temp_dir().join(format!("airlock-uplink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let broker = Broker::start(&dir);
    let port = broker.port;
    let (mut sub, received) = subscribe(&broker);

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let opts = airlock_sim::SimOptions { speed: 600.0, ..Default::default() };
    let sim = runtime.block_on(airlock_sim::start(&opts)).unwrap();
    let config = dir.join("plant.toml");
    let mut text = sim.config_toml(50).replace("[gateway]\nname = \"demo\"", "[gateway]\nname = \"line3\"");
    text += &format!(
        "\n[store]\ndata_dir = \"data\"\nfsync_interval_ms = 20\n\n[[sink]]\nname = \"uns\"\ntype = \"mqtt\"\n\
         url = \"mqtt://127.0.0.1:{port}\"\ntopic_prefix = \"plant/\"\ninflight_max = 20\n"
    );
    std::fs::write(&config, text).unwrap();

    for alive_ms in [1500, 900, 1200] {
        let mut child = run_airlock(&config, None);
        std::thread::sleep(Duration::from_millis(alive_ms));
        assert!(child.try_wait().unwrap().is_none(), "airlock stopped by itself");
        child.kill().unwrap(); // SIGKILL, mid-flight
        child.wait().unwrap();
    }
    let mut last = run_airlock(&config, Some("3s"));
    assert!(last.wait().unwrap().success(), "the last run ends cleanly by itself");
    sim.stop();

    // The outbox's end, per class, tells how many records it ever gave out. The last run
    // stopped cleanly: its outbox opens with nothing to recover (a recovery would also add an
    // event of the open's own, which no sink saw).
    let outbox_dir = dir.join("data/outbox");
    let (writer, reader) = airlock_store::OutboxWriter::open(
        &outbox_dir,
        airlock_store::OutboxConfig { sinks: vec!["uns".into()], ..Default::default() },
    )
    .unwrap();
    let recovered = writer.stats();
    assert_eq!(
        (recovered.torn_bytes, recovered.corrupt_records),
        (0, 0),
        "the outbox a clean stop left had a torn tail or corrupt records"
    );
    let end = reader.end().unwrap();
    // A clean stop lets the sink deliver what the outbox holds (within its grace) and saves its
    // position: nothing is left waiting.
    let delivered = reader.position("uns").unwrap();
    let given_out: Vec<(char, u64)> =
        airlock_store::Class::ALL.into_iter().map(|class| (class.letter(), end.0[class as usize])).collect();
    let total: u64 = given_out.iter().map(|(_, n)| n).sum();
    assert!(total > 100, "only {total} records in four runs");

    // What the broker took may still be on its way to the subscriber: wait for it (bounded).
    let ids_of = |got: &[(String, String)]| -> BTreeSet<String> {
        got.iter()
            .filter_map(|(_, p)| serde_json::from_str::<serde_json::Value>(p).ok()?["id"].as_str().map(str::to_owned))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        let got = received.lock().unwrap().clone();
        if ids_of(&got).len() as u64 >= total || std::time::Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut by_id: HashMap<String, String> = HashMap::new();
    let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (topic, payload) in got.iter().filter(|(t, _)| !t.ends_with("/status")) {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(topic, &format!("plant/{}", v["topic"].as_str().unwrap()));
        match by_id.get(&id) {
            Some(first) => assert_eq!(first, payload, "{id} arrived twice with different content"),
            None => {
                order.entry(topic.clone()).or_default().push(v["gateway_time"].as_str().unwrap().to_owned());
                by_id.insert(id, payload.clone());
            }
        }
    }
    // Every class is checked before failing, and the report says what a missing record was
    // and what the broker's log saw, so that a failure in CI tells where a record was lost.
    let mut report = String::new();
    for (class, (letter, count)) in airlock_store::Class::ALL.into_iter().zip(given_out) {
        let prefix = format!("line3-{letter}");
        let seen: BTreeSet<u64> =
            by_id.keys().filter_map(|id| id.strip_prefix(&prefix)).map(|s| s.parse().unwrap()).collect();
        let missing: Vec<u64> = (1..=count).filter(|s| !seen.contains(s)).collect();
        if missing.is_empty() {
            continue;
        }
        report += &format!(
            "class {letter}: {} of {count} records never arrived: {:?}\n",
            missing.len(),
            &missing[..missing.len().min(20)]
        );
        for &seq in missing.iter().take(3) {
            let (mut after, mut through) = ([0; 4], [0; 4]);
            (after[class as usize], through[class as usize]) = (seq - 1, seq);
            let held = reader.read_through(&airlock_store::Position(after), &airlock_store::Position(through), 1);
            report += &format!("  {letter}{seq} in the outbox: {held:?}\n");
        }
    }
    if delivered != end {
        report += &format!("the sink stood at {delivered:?} after the clean stop, the outbox's end at {end:?}\n");
    }
    if !report.is_empty() {
        let log = broker.log();
        let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
        let suback = log.lines().position(|l| l.ends_with("Sending SUBACK to it-side"));
        let first_publish = log.lines().position(|l| l.contains("Received PUBLISH"));
        panic!(
            "{report}the broker received {} PUBLISH and sent {} to the subscriber; its SUBACK is line {suback:?}, \
             the first PUBLISH received line {first_publish:?}",
            count("Received PUBLISH"),
            count("Sending PUBLISH to it-side")
        );
    }
    // Per device topic, in the order read (an event topic gathers several machines' events).
    for (topic, times) in order.iter().filter(|(t, _)| !t.contains("_airlock/")) {
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{topic}: out of order");
    }
    let _ = sub.kill();
    let _ = sub.wait();
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An ERP web hook that answers every POST with a redirect (Python's standard library, in
/// `scripts/peers/http_receiver.py`): the gateway never follows it, and says so upstream.
#[test]
fn a_sink_that_cannot_deliver_is_reported_upstream_as_an_event() {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("airlock-uplink-problem-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let python = std::env::var("AIRLOCK_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peers/http_receiver.py");
    let mut receiver = Command::new(python)
        .arg(script)
        .args(["redirect-first", "1000000", "http://127.0.0.1:9/elsewhere"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(receiver.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
    let port = serde_json::from_str::<serde_json::Value>(&first).unwrap()["port"].as_u64().unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let opts = airlock_sim::SimOptions { speed: 600.0, ..Default::default() };
    let sim = runtime.block_on(airlock_sim::start(&opts)).unwrap();
    let config = dir.join("plant.toml");
    let mut text = sim.config_toml(100).replace("[gateway]\nname = \"demo\"", "[gateway]\nname = \"line3\"");
    text += &format!(
        "\n[store]\ndata_dir = \"data\"\n\n[[sink]]\nname = \"file\"\ntype = \"jsonl\"\npath = \"up.jsonl\"\n\n\
         [[sink]]\nname = \"erp\"\ntype = \"http\"\nurl = \"http://127.0.0.1:{port}/hook\"\nclasses = [\"raw\", \"series\"]\n"
    );
    std::fs::write(&config, text).unwrap();
    let status = run_airlock(&config, Some("3s")).wait().unwrap();
    sim.stop();
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert!(status.success());

    let lines = std::fs::read_to_string(dir.join("up.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["topic"] == "_airlock/events/sink_failing")
        .collect();
    assert_eq!(events.len(), 1, "one problem, raised once: {events:#?}");
    let e = &events[0];
    assert_eq!((&e["asset"], &e["state"], &e["severity"]), (&"line3".into(), &"raised".into(), &"warning".into()));
    let message = e["message"].as_str().unwrap();
    assert!(message.starts_with("sink erp cannot deliver"), "{message}");
    assert!(message.contains("302") && message.contains("http://127.0.0.1:9/elsewhere"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}
