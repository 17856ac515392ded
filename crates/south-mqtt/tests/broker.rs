//! The OT-side subscriber against mosquitto (the Debian package) on loopback: JSON published by
//! mosquitto_pub and Sparkplug B encoded by pysparkplug (PyPI), both written by others, arrive
//! as the right samples; garbage payloads make the tags they would feed bad and are survived;
//! births, data by alias and deaths are followed; a broker restart marks tags bad and they come
//! back. Every wait is bounded.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

use airlock_config::{Config, Protocol, parse};
use airlock_model::{Quality, Reason, Sample, TagId, Timestamp, Value};
use airlock_south_mqtt::SubscriberTask;
use airlock_testkit::{Broker, peer_script, python, temp};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

fn config(port: u16, device: &str) -> Config {
    let text = format!(
        "[[device]]\nname = \"ot\"\nasset_path = \"acme/plant\"\nprotocol = \"mqtt\"\naddress = \"127.0.0.1:{port}\"\n\
         backoff_initial_ms = 100\nbackoff_max_ms = 400\n{device}"
    );
    parse(&text, Path::new("ot.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts the subscriber of device 0; samples arrive on the receiver.
fn start(config: &Config) -> (airlock_pipeline::BatchReceiver, watch::Sender<bool>) {
    let d = &config.devices[0];
    let Protocol::Mqtt(m) = &d.protocol else { panic!("not an MQTT device") };
    let (tx, rx) = airlock_pipeline::channel(1024);
    let (stop_tx, stop) = watch::channel(false);
    let handle = airlock_pipeline::DeviceHandle::new(0, d, TagId(0), tx);
    tokio::spawn(SubscriberTask::new(d, m, handle).run(stop));
    (rx, stop_tx)
}

/// Collects samples until `done` says so, for 10 s at most.
async fn until(rx: &mut airlock_pipeline::BatchReceiver, mut done: impl FnMut(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, rx.recv()).await {
            Ok(Some(b)) => seen.extend(b.samples),
            _ => panic!("timed out; samples so far: {seen:#?}"),
        }
    }
    seen
}

fn last_of(samples: &[Sample], tag: u32) -> Option<&Sample> {
    samples.iter().rev().find(|s| s.tag == TagId(tag))
}

fn publish(port: u16, topic: &str, payload: &str) {
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub (package mosquitto-clients) is not installed");
    assert!(ok.success());
}

/// Waits until the broker's log shows the subscriber's subscription.
async fn subscribed(broker: &Broker, client_id: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = broker.log();
        let n = log.lines().filter(|l| l.contains("Received SUBSCRIBE from") && l.contains(client_id)).count();
        if n >= count {
            return;
        }
        assert!(Instant::now() < deadline, "no SUBSCRIBE from {client_id} in the broker's log:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_values_and_times_arrive_garbage_is_survived_and_an_outage_marks_tags_bad() {
    let dir = temp("ot-json");
    let mut broker = Broker::start(&dir);
    let tags = "[[device.tag]]\nname = \"speed\"\ntopic = \"press1/status\"\nvalue_pointer = \"/speed\"\ntime_pointer = \"/ts\"\nunit = \"rpm\"\n\
                [[device.tag]]\nname = \"running\"\ntype = \"bool\"\ntopic = \"press1/status\"\nvalue_pointer = \"/state/running\"\n\
                [[device.tag]]\nname = \"parts\"\ntype = \"u32\"\ntopic = \"press1/parts\"\n";
    let config = config(broker.port, tags);
    let (mut rx, _stop) = start(&config);
    subscribed(&broker, "airlock-ot-ot", 1).await;

    publish(
        broker.port,
        "press1/status",
        r#"{"speed": 1480.5, "ts": "2026-11-28T12:00:00.250Z", "state": {"running": true}}"#,
    );
    publish(broker.port, "press1/parts", "1234");
    let s = until(&mut rx, |s| last_of(s, 0).is_some() && last_of(s, 2).is_some()).await;
    let speed = last_of(&s, 0).unwrap();
    assert_eq!((speed.value.clone(), speed.quality), (Some(Value::F64(1480.5)), Quality::Good));
    assert_eq!(speed.source_time, Timestamp::parse_rfc3339("2026-11-28T12:00:00.250Z"));
    assert_eq!(last_of(&s, 1).unwrap().value, Some(Value::Bool(true)));
    assert_eq!(last_of(&s, 2).unwrap().value, Some(Value::U64(1234)));

    // Garbage: not JSON, then JSON without the value; the tags of that topic go bad, others not.
    publish(broker.port, "press1/status", "\u{1}\u{2}garbage{{{");
    let s = until(&mut rx, |s| s.len() >= 2).await;
    assert!(s.iter().all(|s| s.quality == Quality::Bad(Reason::DecodeError) && s.tag != TagId(2)), "{s:#?}");
    publish(broker.port, "press1/status", r#"{"speed": "fast", "state": {}}"#);
    let s = until(&mut rx, |s| s.len() >= 2).await;
    assert!(s.iter().all(|s| s.quality == Quality::Bad(Reason::DecodeError)), "{s:#?}");
    // ... and the subscriber is still there to take the next good message.
    publish(broker.port, "press1/status", r#"{"speed": 1500, "ts": 1795867201000, "state": {"running": false}}"#);
    let s = until(&mut rx, |s| s.len() >= 2).await;
    assert_eq!(last_of(&s, 0).unwrap().value, Some(Value::F64(1500.0)));
    assert_eq!(last_of(&s, 0).unwrap().source_time, Some(Timestamp::from_millis(1_795_867_201_000)));

    // The broker goes away: every tag is bad (comms lost); it comes back: values flow again.
    broker.stop();
    let s = until(&mut rx, |s| s.len() >= 3).await;
    assert!(s.iter().all(|s| s.quality == Quality::Bad(Reason::CommsLost)), "{s:#?}");
    broker.restart();
    subscribed(&broker, "airlock-ot-ot", 2).await;
    publish(broker.port, "press1/parts", "1240");
    let s = until(&mut rx, |s| last_of(s, 2).is_some_and(|s| s.quality.is_good())).await;
    assert_eq!(last_of(&s, 2).unwrap().value, Some(Value::U64(1240)));
    // It never published anything: the broker saw no PUBLISH from it.
    assert!(!broker.log().lines().any(|l| l.contains("Received PUBLISH from airlock-ot-ot")), "{}", broker.log());
}

/// The pysparkplug edge node: commands in, one acknowledgement line out per command.
struct EdgeNode {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl EdgeNode {
    fn start(port: u16) -> Self {
        let mut child = Command::new(python())
            .arg(peer_script("sparkplug_publish.py"))
            .args([&port.to_string(), "plant", "edge1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdin, stdout }
    }

    fn send(&mut self, command: serde_json::Value) {
        writeln!(self.stdin, "{command}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\""), "the peer did not publish {command}: {line:?}");
    }
}

impl Drop for EdgeNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparkplug_births_data_by_alias_and_deaths_from_pysparkplug() {
    use serde_json::json;
    let dir = temp("ot-sparkplug");
    let broker = Broker::start(&dir);
    let device = "payload = \"sparkplug_b\"\ngroup_id = \"plant\"\nedge_node_id = \"edge1\"\n\
                  [[device.tag]]\nname = \"temp\"\nmetric = \"Temperature\"\n\
                  [[device.tag]]\nname = \"speed\"\ntype = \"i32\"\nmetric = \"Speed\"\nsparkplug_device = \"press1\"\n\
                  [[device.tag]]\nname = \"offset\"\ntype = \"i16\"\nmetric = \"Offset\"\nsparkplug_device = \"press1\"\n\
                  [[device.tag]]\nname = \"mode\"\ntype = \"string\"\nmetric = \"Mode\"\nsparkplug_device = \"press1\"\n";
    let config = config(broker.port, device);
    let (mut rx, _stop) = start(&config);
    subscribed(&broker, "airlock-ot-ot", 1).await;
    let mut node = EdgeNode::start(broker.port);

    node.send(json!({"type": "NBIRTH", "metrics": [
        {"name": "bdSeq", "datatype": "INT64", "value": 3},
        {"name": "Temperature", "alias": 1, "datatype": "FLOAT", "value": 21.5}]}));
    node.send(json!({"type": "DBIRTH", "device": "press1", "seq": 1, "metrics": [
        {"name": "Speed", "alias": 10, "datatype": "INT32", "value": -5},
        {"name": "Offset", "alias": 11, "datatype": "INT16", "value": -300},
        {"name": "Mode", "alias": 12, "datatype": "STRING", "value": "auto"}]}));
    let s = until(&mut rx, |s| (0..4).all(|t| last_of(s, t).is_some())).await;
    assert_eq!(last_of(&s, 0).unwrap().value, Some(Value::F64(21.5)));
    assert_eq!(last_of(&s, 1).unwrap().value, Some(Value::I64(-5)));
    assert_eq!(last_of(&s, 2).unwrap().value, Some(Value::I64(-300)));
    assert_eq!(last_of(&s, 3).unwrap().value, Some(Value::Text("auto".into())));
    assert_eq!(last_of(&s, 1).unwrap().source_time, Some(Timestamp::from_millis(1_795_867_200_000)));

    // Data by alias only, as edge nodes send it after their birth.
    node.send(json!({"type": "DDATA", "device": "press1", "seq": 2, "metrics": [
        {"alias": 10, "datatype": "INT32", "value": 1500}]}));
    node.send(json!({"type": "NDATA", "seq": 3, "metrics": [{"alias": 1, "datatype": "FLOAT", "value": 22.25}]}));
    let s = until(&mut rx, |s| last_of(s, 1).is_some() && last_of(s, 0).is_some()).await;
    assert_eq!(last_of(&s, 1).unwrap().value, Some(Value::I64(1500)));
    assert_eq!(last_of(&s, 0).unwrap().value, Some(Value::F64(22.25)));

    // Garbage on the device's topic: its tags go bad; the node's next data is still read.
    node.send(json!({"type": "RAW", "topic": "spBv1.0/plant/DDATA/edge1/press1", "hex": "ffffffff0102"}));
    let s = until(&mut rx, |s| s.len() >= 3).await;
    assert!(s.iter().all(|s| s.quality == Quality::Bad(Reason::DecodeError) && s.tag != TagId(0)), "{s:#?}");
    node.send(json!({"type": "DDATA", "device": "press1", "seq": 4, "metrics": [
        {"alias": 11, "datatype": "INT16", "value": 7}]}));
    let s = until(&mut rx, |s| last_of(s, 2).is_some()).await;
    assert_eq!(
        (last_of(&s, 2).unwrap().value.clone(), last_of(&s, 2).unwrap().quality),
        (Some(Value::I64(7)), Quality::Good)
    );

    // A device death marks its three tags bad; the node's death (same bdSeq) marks all four.
    node.send(json!({"type": "DDEATH", "device": "press1", "seq": 5}));
    let s = until(&mut rx, |s| s.len() >= 3).await;
    assert!(s.iter().all(|s| s.quality == Quality::Bad(Reason::SourceOffline) && s.tag != TagId(0)), "{s:#?}");
    node.send(json!({"type": "NDEATH", "bd_seq": 3}));
    let s = until(&mut rx, |s| s.len() >= 4).await;
    assert!(s.iter().all(|s| s.quality == Quality::Bad(Reason::SourceOffline)), "{s:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_broker_that_requires_a_client_certificate() {
    let dir = temp("ot-tls");
    airlock_testkit::make_certificates(&dir);
    let file = |f: &str| dir.join(f).display().to_string();
    let listener = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        file("ca.pem"),
        file("server.pem"),
        file("server.key")
    );
    let broker = Broker::start_with(&dir, &listener);
    let publish_tls = |payload: &str| {
        let ok = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-t", "press1/parts", "-m", payload])
            .args(["--cafile", &file("ca.pem"), "--cert", &file("client.pem"), "--key", &file("client.key")])
            .status()
            .unwrap();
        assert!(ok.success());
    };
    let tag = "[[device.tag]]\nname = \"parts\"\ntype = \"u32\"\ntopic = \"press1/parts\"\n";
    let tls = |extra: &str| {
        let text = format!(
            "[[device]]\nname = \"ot\"\nasset_path = \"acme/plant\"\nprotocol = \"mqtt\"\naddress = \"mqtts://127.0.0.1:{}\"\n\
             backoff_initial_ms = 100\nbackoff_max_ms = 400\nca_file = \"{}\"\n{extra}{tag}",
            broker.port,
            file("ca.pem")
        );
        parse(&text, Path::new("ot.toml")).unwrap_or_else(|e| panic!("{e}"))
    };

    // Without the client certificate the broker refuses the connection: the tag is bad.
    let (mut rx, stop) = start(&tls(""));
    let s = until(&mut rx, |s| !s.is_empty()).await;
    assert_eq!(s[0].quality, Quality::Bad(Reason::CommsLost));
    stop.send(true).unwrap();

    // With it, values arrive over TLS.
    let with_cert =
        format!("client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n", file("client.pem"), file("client.key"));
    let (mut rx, _stop) = start(&tls(&with_cert));
    subscribed(&broker, "airlock-ot-ot", 1).await;
    publish_tls("77");
    let s = until(&mut rx, |s| last_of(s, 0).is_some_and(|x| x.quality.is_good())).await;
    assert_eq!(last_of(&s, 0).unwrap().value, Some(Value::U64(77)));
}

/// A retained message over the 1 MiB bound on a subscribed topic is read past and counted; the
/// connection stays up (before, the client dropped it at every resend: a reconnect loop that
/// kept every tag of the broker bad), and the next good message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_over_the_bound_is_dropped_and_the_connection_stays() {
    let dir = temp("ot-oversized");
    let broker = Broker::start(&dir);
    // 2 MiB of JSON, retained, on the topic the tag reads.
    let big = dir.join("big.json");
    std::fs::write(&big, format!("{{\"pad\": \"{}\", \"speed\": 1}}", "x".repeat(2 << 20))).unwrap();
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-q", "1", "-r", "-t", "press1/status", "-f"])
        .arg(&big)
        .status()
        .unwrap();
    assert!(ok.success());

    let config = config(
        broker.port,
        "[[device.tag]]\nname = \"speed\"\ntopic = \"press1/status\"\nvalue_pointer = \"/speed\"\n",
    );
    let d = &config.devices[0];
    let Protocol::Mqtt(m) = &d.protocol else { panic!("not an MQTT device") };
    let (tx, mut rx) = airlock_pipeline::channel(1024);
    let (_stop, stop) = watch::channel(false);
    let task = SubscriberTask::new(d, m, airlock_pipeline::DeviceHandle::new(0, d, TagId(0), tx));
    let health = task.health();
    tokio::spawn(task.run(stop));
    subscribed(&broker, "airlock-ot-ot", 1).await;

    // The oversized message is counted and named, and the link stays up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while health.comm_errors.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the oversized message was not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(health.last_error().contains("over the 1048576-byte bound"), "{}", health.last_error());
    publish(broker.port, "press1/status", r#"{"speed": 1480}"#);
    let s = until(&mut rx, |s| last_of(s, 0).is_some()).await;
    assert!(s.iter().all(|s| s.quality.is_good()), "{s:#?}");
    assert_eq!(last_of(&s, 0).unwrap().value, Some(Value::F64(1480.0)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(health.comm_errors.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(health.state(), airlock_model::LinkState::Up);
    let connects =
        broker.log().lines().filter(|l| l.contains("New client connected") && l.contains("airlock-ot-ot")).count();
    assert_eq!(connects, 1, "{}", broker.log());
}
