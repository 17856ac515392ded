//! The OPC UA driver against asyncua (PyPI; a server we did not write), started by each test on
//! a free loopback port: every scalar type and an array through a subscription with honest
//! timestamps and status codes; an unknown node id; the server stopped and restarted and the
//! subscription back; polling reads; Basic256Sha256 SignAndEncrypt with an explicit trust list
//! (and the thumbprint named when the certificate is not trusted); and the server's own log of
//! service requests proving that no Write or Call was ever sent. Every wait is bounded.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use airlock_config::{Config, Protocol, parse};
use airlock_model::{DeviceHealth, Quality, Reason, Sample, TagId, Timestamp, Value};
use airlock_south_opcua::OpcUaTask;
use airlock_testkit::{OpcUaPeer, free_port, temp};
use tokio::sync::watch;
use tokio::time::{Instant, timeout};

type Server = OpcUaPeer;

const SCALARS: [(&str, &str); 13] = [
    ("Boolean", "bool"),
    ("SByte", "i16"),
    ("Byte", "u16"),
    ("Int16", "i16"),
    ("UInt16", "u16"),
    ("Int32", "i32"),
    ("UInt32", "u32"),
    ("Int64", "i64"),
    ("UInt64", "u64"),
    ("Float", "f32"),
    ("Double", "f64"),
    ("String", "string"),
    ("DateTime", "i64"),
];

/// A device reading every variable of the test server, plus one node that does not exist.
fn config(port: u16, data: &Path, extra: &str) -> Config {
    let mut text = format!(
        "[store]\ndata_dir = \"{}\"\n[[device]]\nname = \"cell\"\nasset_path = \"acme/plant\"\nprotocol = \"opcua\"\n\
         address = \"opc.tcp://127.0.0.1:{port}/\"\npoll_interval_ms = 100\nbackoff_initial_ms = 200\nbackoff_max_ms = 1000\n{extra}\n",
        data.display()
    );
    for (name, ty) in SCALARS {
        text += &format!("[[device.tag]]\nname = \"{name}\"\ntype = \"{ty}\"\nnode_id = \"ns=2;s=Plant.{name}\"\n");
    }
    text += "[[device.tag]]\nname = \"Waveform\"\ntype = \"waveform\"\nwaveform_samples = 4096\nsample_rate_hz = 4096\nnode_id = \"ns=2;s=Plant.Waveform\"\n";
    text += "[[device.tag]]\nname = \"Counter\"\ntype = \"u32\"\nnode_id = \"ns=2;s=Plant.Counter\"\nsampling_interval_ms = 50\n";
    text += "[[device.tag]]\nname = \"Uncertain\"\nnode_id = \"ns=2;s=Plant.Uncertain\"\n";
    text += "[[device.tag]]\nname = \"Missing\"\nnode_id = \"ns=2;s=Plant.NoSuchThing\"\n";
    parse(&text, Path::new("cell.toml")).unwrap_or_else(|e| panic!("{e}"))
}

const WAVEFORM: u32 = 13;
const COUNTER: u32 = 14;
const UNCERTAIN: u32 = 15;
const MISSING: u32 = 16;

fn start(config: &Config) -> (airlock_pipeline::BatchReceiver, watch::Sender<bool>, Arc<DeviceHealth>) {
    let d = &config.devices[0];
    let Protocol::OpcUa(o) = &d.protocol else { panic!("not an OPC UA device") };
    let (tx, rx) = airlock_pipeline::channel(4096);
    let (stop_tx, stop) = watch::channel(false);
    let handle = airlock_pipeline::DeviceHandle::new(0, d, TagId(0), tx);
    let health = handle.health();
    tokio::spawn(OpcUaTask::new(d, o, handle, &config.store.data_dir).run(stop));
    (rx, stop_tx, health)
}

/// Collects samples until `done` says so, for `secs` at most.
async fn until(
    rx: &mut airlock_pipeline::BatchReceiver,
    secs: u64,
    mut done: impl FnMut(&[Sample]) -> bool,
) -> Vec<Sample> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, rx.recv()).await {
            Ok(Some(b)) => seen.extend(b.samples),
            _ => panic!("timed out; the last samples: {:#?}", &seen[seen.len().saturating_sub(20)..]),
        }
    }
    seen
}

fn last(samples: &[Sample], tag: u32) -> Option<&Sample> {
    samples.iter().rev().find(|s| s.tag == TagId(tag))
}

fn good_counter_after(samples: &[Sample], index: usize) -> bool {
    samples[index..].iter().any(|s| s.tag == TagId(COUNTER) && s.quality.is_good())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_through_a_subscription_and_back_after_a_server_restart() {
    let dir = temp("opcua-subscribe");
    let port = free_port();
    let mut server = Server::start(&dir.join("server"), port, &["--security", "none"]);
    let config = config(port, &dir.join("data"), "");
    let (mut rx, _stop, health) = start(&config);

    let all = |s: &[Sample]| (0..=MISSING).all(|t| last(s, t).is_some());
    let s = until(&mut rx, 30, all).await;
    let value = |t: u32| last(&s, t).unwrap().value.clone();
    assert_eq!(value(0), Some(Value::Bool(true)));
    assert_eq!(value(1), Some(Value::I64(-8)));
    assert_eq!(value(2), Some(Value::U64(200)));
    assert_eq!(value(3), Some(Value::I64(-300)));
    assert_eq!(value(4), Some(Value::U64(60_000)));
    assert_eq!(value(5), Some(Value::I64(-70_000)));
    assert_eq!(value(6), Some(Value::U64(4_000_000_000)));
    assert_eq!(value(7), Some(Value::I64(-5_000_000_000)));
    assert_eq!(value(8), Some(Value::U64(10_000_000_000)));
    assert_eq!(value(9), Some(Value::F64(1.5)));
    assert_eq!(value(10), Some(Value::F64(-2.25)));
    assert_eq!(value(11), Some(Value::Text("auto".into())));
    let noon = Timestamp::parse_rfc3339("2026-11-28T12:00:00Z").unwrap();
    assert_eq!(value(12), Some(Value::I64(noon.as_millis())));
    let Some(Value::Waveform(w)) = value(WAVEFORM) else { panic!("no waveform: {:?}", value(WAVEFORM)) };
    assert_eq!(w.len(), 4096, "the longest waveform a tag may have");
    assert_eq!((w[0], w[7], w[8]), (-3.5, 3.5, -3.5));
    for t in 0..=COUNTER {
        assert_eq!(last(&s, t).unwrap().quality, Quality::Good, "tag {t}");
    }
    // Status codes and source timestamps come through as the server set them.
    let u = last(&s, UNCERTAIN).unwrap();
    assert_eq!(
        (u.value.clone(), u.quality, u.source_time),
        (Some(Value::F64(7.5)), Quality::Uncertain(Reason::SourceStatus(0x4090)), Some(noon))
    );
    assert_eq!(last(&s, MISSING).unwrap().quality, Quality::Bad(Reason::SourceStatus(0x8034)));
    let c = last(&s, COUNTER).unwrap();
    let lag = c.gateway_time.as_millis() - c.source_time.unwrap().as_millis();
    assert!((0..2000).contains(&lag), "counter source time {lag} ms before arrival");
    // The counter keeps coming (the subscription publishes changes).
    let from = s.len();
    let s = until(&mut rx, 10, |s| s.iter().filter(|x| x.tag == TagId(COUNTER)).count() >= 5).await;
    assert!(from > 0 && s.iter().all(|x| x.tag == TagId(COUNTER) || x.tag == TagId(MISSING)));

    // The server stops: every tag goes bad (comms lost). It comes back: the subscription is
    // re-created and values flow again.
    server.stop();
    let s = until(&mut rx, 30, |s| s.iter().any(|x| x.quality == Quality::Bad(Reason::CommsLost))).await;
    let lost = s.iter().filter(|x| x.quality == Quality::Bad(Reason::CommsLost)).count();
    assert_eq!(lost, MISSING as usize + 1, "every tag bad once");
    let mut server = Server::start(&dir.join("server"), port, &["--security", "none"]);
    let s = until(&mut rx, 60, |s| good_counter_after(s, 0)).await;
    assert!(s.iter().any(|x| x.tag == TagId(COUNTER) && x.quality.is_good()));
    assert!(DeviceHealth::get(&health.comm_errors) >= 1);

    // The server's own log: subscriptions and monitored items created (again after the
    // restart), and never a Write or a Call.
    let requests = server.requests();
    let count = |name: &str| requests.iter().filter(|r| *r == name).count();
    assert!(count("CreateSubscriptionRequest") >= 2, "{requests:?}");
    assert!(count("CreateMonitoredItemsRequest") >= 2, "{requests:?}");
    for forbidden in ["WriteRequest", "CallRequest", "AddNodesRequest", "DeleteNodesRequest", "HistoryUpdateRequest"] {
        assert_eq!(count(forbidden), 0, "{forbidden} sent: {requests:?}");
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_reads_for_servers_that_need_them() {
    let dir = temp("opcua-poll");
    let port = free_port();
    let server = Server::start(&dir.join("server"), port, &["--security", "none"]);
    let config = config(port, &dir.join("data"), "read_mode = \"poll\"");
    let (mut rx, _stop, _) = start(&config);
    let s =
        until(&mut rx, 30, |s| s.iter().filter(|x| x.tag == TagId(COUNTER) && x.quality.is_good()).count() >= 3).await;
    assert_eq!(last(&s, 5).unwrap().value, Some(Value::I64(-70_000)));
    assert_eq!(last(&s, MISSING).unwrap().quality, Quality::Bad(Reason::SourceStatus(0x8034)));
    let requests = server.requests();
    assert!(requests.iter().any(|r| r == "ReadRequest"), "{requests:?}");
    assert!(!requests.iter().any(|r| r == "CreateSubscriptionRequest" || r == "WriteRequest" || r == "CallRequest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_and_encrypt_with_an_explicit_trust_list() {
    let dir = temp("opcua-secure");
    let port = free_port();
    let server = Server::start(&dir.join("server"), port, &["--security", "sign_and_encrypt"]);

    // Not trusted: no values, and the error names the server's thumbprint.
    let config_untrusted = config(port, &dir.join("data"), "security = \"sign_and_encrypt\"");
    let (mut rx, stop, health) = start(&config_untrusted);
    let s = until(&mut rx, 30, |s| !s.is_empty()).await;
    assert!(s.iter().all(|x| x.quality == Quality::Bad(Reason::CommsLost)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !health.last_error().to_lowercase().contains(&server.thumbprint) {
        assert!(Instant::now() < deadline, "the error does not name {}: {:?}", server.thumbprint, health.last_error());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();

    // Trusted: values arrive over the encrypted channel.
    let cert = dir.join("server").join("server_cert.der");
    let extra = format!("security = \"sign_and_encrypt\"\ntrusted_server_certs = [\"{}\"]", cert.display());
    let config = config(port, &dir.join("data"), &extra);
    let (mut rx, _stop, _) = start(&config);
    let s = until(&mut rx, 30, |s| last(s, COUNTER).is_some_and(|c| c.quality.is_good())).await;
    assert_eq!(last(&s, 11).unwrap().value, Some(Value::Text("auto".into())));
    // airlock's application certificate was made on first start and kept in the data folder.
    assert!(dir.join("data/opcua/own/cert.der").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_name_identity_opens_the_session_and_a_wrong_password_does_not() {
    let dir = temp("opcua-user");
    let port = free_port();
    let _server = Server::start(&dir.join("server"), port, &["--user", "reader:s3cret"]);
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("good"), "s3cret\n").unwrap();
    std::fs::write(secrets.join("bad"), "guess\n").unwrap();

    let wrong = format!("username = \"reader\"\npassword_file = \"{}\"", secrets.join("bad").display());
    let (mut rx, stop, health) = start(&config(port, &dir.join("data"), &wrong));
    let s = until(&mut rx, 30, |s| !s.is_empty()).await;
    assert!(s.iter().all(|x| x.quality == Quality::Bad(Reason::CommsLost)), "{s:#?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while health.last_error().is_empty() {
        assert!(Instant::now() < deadline, "no error reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let error = health.last_error();
    assert!(error.contains("BadUserAccessDenied") || error.contains("BadIdentityTokenRejected"), "{error}");
    stop.send(true).unwrap();

    let right = format!("username = \"reader\"\npassword_file = \"{}\"", secrets.join("good").display());
    let (mut rx, _stop, _) = start(&config(port, &dir.join("data"), &right));
    let s = until(&mut rx, 30, |s| last(s, COUNTER).is_some_and(|c| c.quality.is_good())).await;
    assert_eq!(last(&s, 5).unwrap().value, Some(Value::I64(-70_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_deadband_thins_what_the_server_sends() {
    let dir = temp("opcua-deadband");
    let port = free_port();
    let _server = Server::start(&dir.join("server"), port, &["--security", "none"]);
    // The Steps node (+1 nine times, then +101, every 50 ms) twice: once plain, once through a
    // monitored item with an absolute deadband of 10, so only the jumps come.
    let text = format!(
        "[store]\ndata_dir = \"{}\"\n[[device]]\nname = \"cell\"\nasset_path = \"acme/plant\"\nprotocol = \"opcua\"\n\
         address = \"opc.tcp://127.0.0.1:{port}/\"\npublishing_interval_ms = 50\n\
         [[device.tag]]\nname = \"every\"\nnode_id = \"ns=2;s=Plant.Steps\"\nsampling_interval_ms = 50\n\
         [[device.tag]]\nname = \"thinned\"\nnode_id = \"ns=2;s=Plant.Steps\"\nsampling_interval_ms = 50\nserver_deadband = 10\n",
        dir.join("data").display()
    );
    let config = parse(&text, Path::new("cell.toml")).unwrap_or_else(|e| panic!("{e}"));
    let (mut rx, _stop, _) = start(&config);
    let s = until(&mut rx, 30, |s| s.iter().filter(|x| x.tag == TagId(1)).count() >= 4).await;
    let values = |tag: u32| -> Vec<f64> {
        s.iter()
            .filter(|x| x.tag == TagId(tag))
            .filter_map(|x| match x.value {
                Some(Value::F64(v)) => Some(v),
                _ => None,
            })
            .collect()
    };
    let (every, thinned) = (values(0), values(1));
    assert!(thinned.windows(2).all(|w| w[1] - w[0] > 10.0), "deadband 10 not applied: {thinned:?}");
    assert!(every.len() > 2 * thinned.len(), "the item without deadband sees every change: {every:?} vs {thinned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_only_with_an_x509_user_identity() {
    let dir = temp("opcua-x509");
    let port = free_port();
    // A user certificate and key made by openssl (installed by ./scripts/test).
    let (key, pem, der) = (dir.join("user.key"), dir.join("user.pem"), dir.join("user.der"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=airlock reader"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&pem)
        .output()
        .expect("openssl is not installed: run ./scripts/test, which installs it");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let converted = std::process::Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(&der)
        .status()
        .unwrap();
    assert!(converted.success());
    let server =
        Server::start(&dir.join("server"), port, &["--security", "sign", "--user-cert", der.to_str().unwrap()]);
    let cert = dir.join("server").join("server_cert.der");
    let extra = format!(
        "security = \"sign\"\ntrusted_server_certs = [\"{}\"]\nuser_cert_file = \"{}\"\nuser_key_file = \"{}\"",
        cert.display(),
        pem.display(),
        key.display()
    );
    let (mut rx, _stop, _) = start(&config(port, &dir.join("data"), &extra));
    let s = until(&mut rx, 30, |s| last(s, COUNTER).is_some_and(|c| c.quality.is_good())).await;
    assert_eq!(last(&s, 0).unwrap().value, Some(Value::Bool(true)));
    assert!(server.requests().iter().any(|r| r == "ActivateSessionRequest"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_absent_at_start_makes_the_tags_bad_until_it_comes() {
    let dir = temp("opcua-absent");
    let port = free_port();
    let (mut rx, _stop, health) = start(&config(port, &dir.join("data"), "timeout_ms = 200"));
    let s = until(&mut rx, 20, |s| !s.is_empty()).await;
    assert_eq!(s.len(), MISSING as usize + 1);
    assert!(s.iter().all(|x| x.quality == Quality::Bad(Reason::CommsLost)), "{s:#?}");
    let error = health.last_error();
    assert!(error.contains(&format!("opc.tcp://127.0.0.1:{port}/")), "{error}");
    let _server = Server::start(&dir.join("server"), port, &["--security", "none"]);
    let s = until(&mut rx, 30, |s| last(s, COUNTER).is_some_and(|c| c.quality.is_good())).await;
    assert_eq!(last(&s, 11).unwrap().value, Some(Value::Text("auto".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_reads_keep_to_the_rate_cap() {
    let dir = temp("opcua-pace");
    let port = free_port();
    let _server = Server::start(&dir.join("server"), port, &["--security", "none"]);
    // 1200 tags (the counter, again and again): three Read requests per poll, polled every
    // 100 ms, but at most 4 requests a second.
    let mut text = format!(
        "[store]\ndata_dir = \"{}\"\n[[device]]\nname = \"cell\"\nasset_path = \"acme/plant\"\nprotocol = \"opcua\"\n\
         address = \"opc.tcp://127.0.0.1:{port}/\"\nread_mode = \"poll\"\npoll_interval_ms = 100\nrate_max_per_s = 4\n",
        dir.join("data").display()
    );
    for i in 0..1200 {
        text += &format!("[[device.tag]]\nname = \"c{i}\"\ntype = \"u32\"\nnode_id = \"ns=2;s=Plant.Counter\"\n");
    }
    let config = parse(&text, Path::new("cell.toml")).unwrap_or_else(|e| panic!("{e}"));
    let (mut rx, _stop, health) = start(&config);
    until(&mut rx, 30, |s| s.iter().any(|x| x.quality.is_good())).await;
    let (r0, t0) = (DeviceHealth::get(&health.requests), Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (r1, elapsed) = (DeviceHealth::get(&health.requests), t0.elapsed().as_secs_f64());
    let rate = (r1 - r0) as f64 / elapsed;
    assert!(rate <= 4.0 * 1.1 + 1.0 / elapsed, "{rate:.1} requests/s over a cap of 4");
    assert!(rate >= 2.0, "{rate:.1} requests/s: polling stalled");
}
