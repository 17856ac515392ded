//! The MQTT sink over TLS (rustls) to mosquitto with a TLS listener that requires a client
//! certificate, all certificates made here with openssl: with the right CA and a client
//! certificate every record arrives; without the client certificate, or trusting another CA,
//! nothing is delivered and the records stay in the outbox. A clean stop over TLS says goodbye:
//! the broker discards the last will.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_config::MqttSink;
use airlock_model::{Timestamp, ValueType};
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter};
use support::{Broker, make_certificates, records, temp};

fn sink(port: u16, ca: &Path, client: Option<(PathBuf, PathBuf)>) -> MqttSink {
    MqttSink {
        host: "127.0.0.1".into(),
        port,
        tls: true,
        ca_file: Some(ca.to_owned()),
        client_cert: client,
        topic_prefix: "uns/".into(),
        client_id: "airlock-tls".into(),
        qos: 1,
        username: None,
        password: None,
        inflight_max: 20,
        rate_max_per_s: 100_000.0,
        keep_alive: Duration::from_secs(5),
        sparkplug: None,
        replay: airlock_config::Replay::InOrder,
    }
}

/// Runs the sink on a fresh outbox of `n` records for `within`; returns what it delivered.
fn deliver(dir: &Path, config: &MqttSink, n: u64, within: Duration, name: &str) -> (u64, u64) {
    let outbox = OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["uns".into()],
        ..OutboxConfig::default()
    };
    let (mut writer, reader) = OutboxWriter::open(&dir.join(name), outbox).unwrap();
    for i in 1..=n {
        let record =
            records::sample("acme/line/press1/count", ValueType::U64, airlock_model::Value::U64(i), Timestamp(0));
        writer.append(Class::Raw, &record).unwrap();
    }
    writer.sync().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (handle, health) = airlock_north::mqtt::spawn("uns", "plant7", config, reader, Arc::clone(&stop)).unwrap();
    let deadline = Instant::now() + within;
    while health.delivered.load(Relaxed) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Relaxed);
    handle.join().unwrap();
    (health.delivered.load(Relaxed), health.failures.load(Relaxed))
}

#[test]
fn mutual_tls_delivers_and_a_wrong_trust_or_a_missing_certificate_does_not() {
    let dir = temp("tls");
    make_certificates(&dir);
    let files = |f: &str| dir.join(f).display().to_string();
    let listener = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        files("ca.pem"),
        files("server.pem"),
        files("server.key")
    );
    let broker = Broker::start_with(&dir, &listener);
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "uns/#", "-v", "-q", "1", "-i", "it-side"])
        .args(["--cafile", &files("ca.pem"), "--cert", &files("client.pem"), "--key", &files("client.key")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&received);
    let stdout = sub.stdout.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).for_each(|l| r.lock().unwrap().push(l))
    });
    broker.wait_subscribed("it-side");

    let client = Some((dir.join("client.pem"), dir.join("client.key")));
    let (delivered, _) =
        deliver(&dir, &sink(broker.port, &dir.join("ca.pem"), client.clone()), 200, Duration::from_secs(20), "good");
    assert_eq!(delivered, 200, "over mutual TLS every record is acknowledged");
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.lock().unwrap().iter().filter(|l| l.starts_with("uns/acme/")).count() < 200 {
        assert!(Instant::now() < deadline, "the TLS subscriber did not get every record");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The goodbye over TLS: the sink's own `offline` comes, and the broker discards the last
    // will (a second `offline`), because the DISCONNECT went through the TLS stream before it
    // was shut. A connection that died without it would have the will published as well.
    let status = |payload: &str| {
        let line = format!("uns/_airlock/plant7/status {payload}");
        received.lock().unwrap().iter().filter(|l| **l == line).count()
    };
    // The first `offline` is awaited (bounded); a will would come at the same disconnect, so a
    // short settle after it lets a second one show (a loaded machine can only hide it, never
    // make one up).
    let deadline = Instant::now() + Duration::from_secs(10);
    while status("offline") == 0 {
        assert!(Instant::now() < deadline, "no offline status over TLS");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        (status("online"), status("offline")),
        (1, 1),
        "{:?}",
        received.lock().unwrap().iter().rev().take(5).collect::<Vec<_>>()
    );

    let (delivered, failures) =
        deliver(&dir, &sink(broker.port, &dir.join("ca.pem"), None), 10, Duration::from_secs(2), "no-client-cert");
    assert_eq!(delivered, 0, "the broker requires a client certificate");
    assert!(failures >= 1);
    let (delivered, failures) =
        deliver(&dir, &sink(broker.port, &dir.join("other-ca.pem"), client), 10, Duration::from_secs(2), "wrong-ca");
    assert_eq!(delivered, 0, "a broker whose certificate does not chain to the trusted CA is refused");
    assert!(failures >= 1);
    let _ = sub.kill();
    let _ = sub.wait();
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
