//! The Kafka sink against a real Kafka-compatible broker (tansu, installed by the test setup)
//! and an independent consumer (kafka-python from PyPI): every record arrives once the sink has
//! acknowledged it, keyed by its asset path, in order per key, with its headers.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use airlock_config::{KafkaSink as KafkaConfig, Sasl, Secret};
use airlock_model::{Timestamp, Value as TagValue, ValueType};
use airlock_north::SinkHealth;
use airlock_north::kafka::KafkaSink;
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxReader, OutboxWriter};
use airlock_testkit::{free_port, records, temp};

/// tansu, as `scripts/test` installs it (`cargo install tansu@0.6.0 --locked --features dynostore`).
fn tansu() -> String {
    let installed = std::env::var("HOME").map(|h| format!("{h}/.cargo/bin/tansu")).unwrap_or_default();
    if std::path::Path::new(&installed).exists() { installed } else { "tansu".into() }
}

struct Broker {
    child: Child,
    address: String,
}

impl Broker {
    fn start(topics: &[(&str, u32)]) -> Self {
        Self::start_on(&format!("127.0.0.1:{}", free_port()), topics)
    }

    /// A broker on `address` (its memory storage starts empty), with `topics` created.
    fn start_on(address: &str, topics: &[(&str, u32)]) -> Self {
        let broker = Self::launch(address, address, "memory://tansu/", false, &std::env::temp_dir());
        broker.create_topics(topics);
        broker
    }

    /// tansu listening on `address`, telling clients it is at `advertised`, keeping its data in
    /// `storage` (a `sqlite://` file is found from `dir`), asking every client to authenticate
    /// (SCRAM) if `authentication`.
    fn launch(address: &str, advertised: &str, storage: &str, authentication: bool, dir: &std::path::Path) -> Self {
        let address = address.to_owned();
        let url = format!("tcp://{address}");
        let mut command = Command::new(tansu());
        command
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &format!("tcp://{advertised}")])
            .args(["--storage-engine", storage])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if authentication {
            command.arg("--authentication");
        }
        let child = command.spawn().expect("tansu is not installed: run ./scripts/test, which installs it");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !airlock_testkit::listening(&address) {
            assert!(Instant::now() < deadline, "tansu did not listen on {address}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, address }
    }

    fn create_topics(&self, topics: &[(&str, u32)]) {
        let url = format!("tcp://{}", self.address);
        for (topic, partitions) in topics {
            let out = Command::new(tansu())
                .args(["topic", "create", topic, "--partitions", &partitions.to_string(), "--broker", &url])
                .output()
                .unwrap();
            assert!(out.status.success(), "create {topic}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An outbox in `dir` with the one sink `k`, synced at every commit.
fn outbox(dir: &std::path::Path) -> (OutboxWriter, OutboxReader) {
    let config = OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["k".into()],
        ..OutboxConfig::default()
    };
    OutboxWriter::open(&dir.join("outbox"), config).unwrap()
}

fn config(address: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: vec![address.to_owned()],
        topic: "plant.{class}".into(),
        lz4: true,
        tls: false,
        ca_file: None,
        client_cert: None,
        sasl: None,
        rate_max_per_s: 100_000.0,
        replay: airlock_config::Replay::InOrder,
    }
}

/// Every message of `topic`, read by kafka-python: (partition, key, gateway header, id).
fn consume(address: &str, topic: &str, expected: usize) -> Vec<(u64, String, String, String)> {
    consume_with(address, topic, expected, &[])
}

/// As `consume`, with `security` in kafka_consume.py's environment (TLS and SASL settings).
fn consume_with(
    address: &str,
    topic: &str,
    expected: usize,
    security: &[(&str, String)],
) -> Vec<(u64, String, String, String)> {
    let out = Command::new(airlock_testkit::python())
        .arg(airlock_testkit::peer_script("kafka_consume.py"))
        .args([address, topic, &expected.to_string(), "60"])
        .envs(security.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let m: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(m["headers"]["id"], m["id"], "{m}");
            let s = |v: &serde_json::Value| v.as_str().unwrap().to_owned();
            (m["partition"].as_u64().unwrap(), s(&m["key"]), s(&m["headers"]["gateway"]), s(&m["id"]))
        })
        .collect()
}

#[test]
fn the_broker_killed_and_restarted_under_load_loses_nothing() {
    // The broker keeps its log in a SQLite file, so what it acknowledged before it was killed
    // is still there when it comes back: every record arrives, whether the first broker or the
    // second took it.
    let dir = temp("kafka-restart");
    let address = format!("127.0.0.1:{}", free_port());
    let broker = Broker::launch(&address, &address, "sqlite://tansu.db", false, &dir);
    broker.create_topics(&[("plant.series", 2)]);
    let (mut writer, reader) = outbox(&dir);
    let time = Timestamp::parse_rfc3339("2026-11-29T12:00:00Z").unwrap();
    let mut kafka = config(&address);
    kafka.rate_max_per_s = 1000.0;
    let health = Arc::new(SinkHealth::default());
    let stop = Arc::new(AtomicBool::new(false));
    let handle = airlock_north::spawn(
        KafkaSink::new("k", "plant7", &kafka),
        reader.clone(),
        Arc::clone(&stop),
        Arc::clone(&health),
    )
    .unwrap();
    const N: u64 = 3000;
    let path = |i: u64| format!("acme/dortmund/pressing/line3/cell1/press{}/speed", i % 4);
    // Records keep coming while the broker dies and comes back.
    let mut broker = Some(broker);
    let mut acked_at_death = None;
    let mut restarted = None;
    for i in 1..=N {
        writer
            .append(Class::Series, &records::sample(&path(i), ValueType::F64, TagValue::F64(i as f64), time))
            .unwrap();
        if i % 50 == 0 {
            writer.sync().unwrap();
            std::thread::sleep(Duration::from_millis(40));
        }
        if i == 1000 {
            drop(broker.take()); // killed
            acked_at_death = Some(health.delivered.load(Relaxed));
        }
        if i == 1500 {
            // Down longer than the sink waits for an answer (PRODUCE_TIMEOUT, 30 s; a shorter
            // outage is carried over by rskafka's own retries): the session fails, and the
            // runner connects again after a backoff.
            std::thread::sleep(airlock_north::kafka::PRODUCE_TIMEOUT + Duration::from_secs(5));
            restarted = Some(Broker::launch(&address, &address, "sqlite://tansu.db", false, &dir));
        }
    }
    writer.sync().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while health.delivered.load(Relaxed) < N {
        assert!(Instant::now() < deadline, "{} of {N} delivered: {}", health.delivered.load(Relaxed), health.problem());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(health.failures.load(Relaxed) > 0, "the outage outlasted the sink's deadline and failed its session");
    assert!(health.problem().is_empty(), "the sink delivers again: {}", health.problem());
    stop.store(true, Relaxed);
    handle.join().unwrap();
    let acked_at_death = acked_at_death.unwrap();
    assert!((1..N).contains(&acked_at_death), "the broker died under load ({acked_at_death} acknowledged)");
    // Read until every id is in (a record the first broker stored but had not acknowledged when
    // it was killed is sent again: a duplicate, which at-least-once allows).
    let arrived = consume_with(&address, "plant.series", N as usize, &[("KAFKA_DISTINCT", "1".into())]);
    let ids: std::collections::BTreeSet<u64> =
        arrived.iter().map(|(_, _, _, id)| id.strip_prefix("plant7-s").unwrap().parse().unwrap()).collect();
    let missing: Vec<u64> = (1..=N).filter(|i| !ids.contains(i)).collect();
    assert!(missing.is_empty(), "{} records never arrived: {:?}", missing.len(), &missing[..missing.len().min(10)]);
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn three_gateways_into_one_topic_keep_their_records_apart_by_key() {
    let broker = Broker::start(&[("plant.series", 3)]);
    let time = Timestamp::parse_rfc3339("2026-11-29T12:00:00Z").unwrap();
    const N: u64 = 300;
    let mut runs = Vec::new();
    for line in 1..=3 {
        let dir = temp(&format!("kafka-gw{line}"));
        let (mut writer, reader) = outbox(&dir);
        for i in 0..N {
            let path = format!("acme/dortmund/pressing/line{line}/cell1/press{}/speed", i % 2);
            writer
                .append(Class::Series, &records::sample(&path, ValueType::F64, TagValue::F64(i as f64), time))
                .unwrap();
        }
        writer.sync().unwrap();
        let health = Arc::new(SinkHealth::default());
        let stop = Arc::new(AtomicBool::new(false));
        let sink = KafkaSink::new("k", &format!("line{line}-gw"), &config(&broker.address));
        let handle = airlock_north::spawn(sink, reader, Arc::clone(&stop), Arc::clone(&health)).unwrap();
        runs.push((dir, writer, health, stop, handle));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while runs.iter().any(|r| r.2.delivered.load(Relaxed) < N) {
        assert!(
            Instant::now() < deadline,
            "the three gateways did not deliver in 60 s: {:?}",
            runs.iter().map(|r| (r.2.delivered.load(Relaxed), r.2.problem())).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let arrived = consume(&broker.address, "plant.series", 3 * N as usize);
    assert_eq!(arrived.len(), 3 * N as usize);
    let mut per_key: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for (_, key, gateway, id) in &arrived {
        let seq: u64 = id.rsplit_once("-s").unwrap().1.parse().unwrap();
        assert!(id.starts_with(&format!("{gateway}-")), "{id} under the gateway {gateway}");
        per_key.entry(key.clone()).or_default().push((gateway.clone(), seq));
    }
    assert_eq!(per_key.len(), 6, "two machines on each of three lines");
    for (key, records) in &per_key {
        let line = &key["acme/dortmund/pressing/".len().."acme/dortmund/pressing/".len() + 5];
        assert!(records.iter().all(|(g, _)| g == &format!("{line}-gw")), "{key}: one gateway's records only");
        assert!(records.windows(2).all(|w| w[0].1 < w[1].1), "{key}: in order");
        assert_eq!(records.len() as u64, N / 2);
    }
    for (dir, _writer, _health, stop, handle) in runs {
        stop.store(true, Relaxed);
        handle.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn every_record_arrives_keyed_in_order_per_key_with_its_headers() {
    let broker = Broker::start(&[("plant.series", 3), ("plant.events", 1)]);
    let dir = temp("kafka-every");
    let (mut writer, reader) = outbox(&dir);
    let time = Timestamp::parse_rfc3339("2026-11-29T12:00:00Z").unwrap();
    let machines = ["press1", "press2", "press3", "press4", "wrapper"];
    const N: usize = 2000;
    for i in 0..N {
        let path = format!("acme/dortmund/pressing/line3/cell1/{}/speed", machines[i % machines.len()]);
        let record = records::sample(&path, ValueType::F64, TagValue::F64(i as f64), time);
        writer.append(Class::Series, &record).unwrap();
    }
    writer.sync().unwrap();
    let kafka = config(&broker.address);
    let health = Arc::new(SinkHealth::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sink = KafkaSink::new("k", "plant7", &kafka);
    let handle = airlock_north::spawn(sink, reader.clone(), Arc::clone(&stop), Arc::clone(&health)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while health.delivered.load(Relaxed) < N as u64 {
        assert!(
            Instant::now() < deadline,
            "{} of {N} delivered in 60 s: {}",
            health.delivered.load(Relaxed),
            health.problem()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Relaxed);
    handle.join().unwrap();

    let out = Command::new(airlock_testkit::python())
        .arg(airlock_testkit::peer_script("kafka_consume.py"))
        .args([&broker.address, "plant.series", &N.to_string(), "60"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let messages: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(messages.len(), N, "every record arrives");
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, u64> = BTreeMap::new();
    for m in &messages {
        let key = m["key"].as_str().unwrap().to_owned();
        let id = m["id"].as_str().unwrap();
        assert_eq!(m["headers"]["id"], id, "{m}");
        assert_eq!(m["headers"]["class"], "series");
        assert_eq!(m["headers"]["gateway"], "plant7");
        let partition = m["partition"].as_u64().unwrap();
        assert_eq!(*partition_of_key.entry(key.clone()).or_insert(partition), partition, "one key, one partition");
        per_key.entry(key).or_default().push(id.strip_prefix("plant7-s").unwrap().parse().unwrap());
    }
    assert_eq!(per_key.len(), machines.len());
    let mut all: Vec<u64> = Vec::new();
    for (key, ids) in &per_key {
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{key}: in order");
        all.extend(ids);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=N as u64).collect::<Vec<_>>(), "every id once");
    let partitions: std::collections::BTreeSet<u64> = partition_of_key.values().copied().collect();
    assert!(partitions.len() > 1, "the keys spread over the partitions: {partitions:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// socat's OpenSSL listener on `address` in front of the broker at `broker`: it presents the
/// server certificate made for 127.0.0.1 and asks every client for a certificate signed by the
/// test CA (tansu 0.6 takes `--cert` but serves plain TCP only).
struct TlsFront(Child);

impl TlsFront {
    fn start(address: &str, broker: &str, dir: &std::path::Path) -> Self {
        let file = |f: &str| dir.join(f).display().to_string();
        let (host, port) = address.rsplit_once(':').unwrap();
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind={host},reuseaddr,fork,cert={},key={},cafile={},verify=1",
            file("server.pem"),
            file("server.key"),
            file("ca.pem")
        );
        let child = Command::new("socat")
            .args([listen, format!("TCP:{broker}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is not installed: run ./scripts/test, which installs it");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !airlock_testkit::listening(address) {
            assert!(Instant::now() < deadline, "socat did not listen on {address}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(child)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a sink with `kafka` on a fresh outbox (`name` in `dir`) of `n` records until they are
/// delivered or `within` has passed; returns how many were delivered and the sink's problem.
fn deliver(dir: &std::path::Path, name: &str, kafka: &KafkaConfig, n: u64, within: Duration) -> (u64, String) {
    let (mut writer, reader) = outbox(&dir.join(name));
    let time = Timestamp::parse_rfc3339("2026-11-29T12:00:00Z").unwrap();
    for i in 1..=n {
        let path = format!("acme/dortmund/pressing/line3/cell1/press{}/speed", i % 2);
        writer.append(Class::Series, &records::sample(&path, ValueType::F64, TagValue::F64(i as f64), time)).unwrap();
    }
    writer.sync().unwrap();
    let health = Arc::new(SinkHealth::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sink = KafkaSink::new("k", name, kafka);
    let handle = airlock_north::spawn(sink, reader, Arc::clone(&stop), Arc::clone(&health)).unwrap();
    let deadline = Instant::now() + within;
    while health.delivered.load(Relaxed) < n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let problem = health.problem();
    stop.store(true, Relaxed);
    handle.join().unwrap();
    (health.delivered.load(Relaxed), problem)
}

#[test]
fn mutual_tls_and_scram_deliver_and_a_wrong_password_trust_or_missing_certificate_do_not() {
    let dir = temp("kafka-secured");
    airlock_testkit::make_certificates(&dir);
    let file = |f: &str| dir.join(f);
    let plain = format!("127.0.0.1:{}", free_port());
    let secured = format!("127.0.0.1:{}", free_port());
    // tansu's own `user create` cannot authenticate, so the users and the topic are made first
    // on a broker that asks for nothing; the broker then starts again on the same SQLite file
    // asking every client to authenticate, and clients are told to come through TLS.
    let storage = "sqlite://tansu.db";
    {
        let setup = Broker::launch(&plain, &secured, storage, false, &dir);
        setup.create_topics(&[("plant.series", 2)]);
        for mechanism in ["scram256", "scram512"] {
            let out = Command::new(tansu())
                .args(["user", "create", "alice", "s3cret", "--mechanism", mechanism])
                .args(["--broker", &format!("tcp://{plain}")])
                .output()
                .unwrap();
            assert!(out.status.success(), "user create: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let _broker = Broker::launch(&plain, &secured, storage, true, &dir);
    let _front = TlsFront::start(&secured, &plain, &dir);
    std::fs::write(file("password"), "s3cret\n").unwrap();
    std::fs::write(file("wrong"), "secret\n").unwrap();
    let good = KafkaConfig {
        tls: true,
        ca_file: Some(file("ca.pem")),
        client_cert: Some((file("client.pem"), file("client.key"))),
        sasl: Some((Sasl::ScramSha512, "alice".into(), Secret::File(file("password")))),
        ..config(&secured)
    };
    const N: u64 = 200;
    let (delivered, problem) = deliver(&dir, "scram512", &good, N, Duration::from_secs(60));
    assert_eq!(delivered, N, "mutual TLS and SCRAM-SHA-512 deliver: {problem}");
    let sha256 =
        KafkaConfig { sasl: Some((Sasl::ScramSha256, "alice".into(), Secret::File(file("password")))), ..good.clone() };
    let (delivered, problem) = deliver(&dir, "scram256", &sha256, N, Duration::from_secs(60));
    assert_eq!(delivered, N, "mutual TLS and SCRAM-SHA-256 deliver: {problem}");

    // An independent client, through the same TLS front and SCRAM, reads both gateways' records.
    let security = [
        ("KAFKA_CAFILE", file("ca.pem").display().to_string()),
        ("KAFKA_CERTFILE", file("client.pem").display().to_string()),
        ("KAFKA_KEYFILE", file("client.key").display().to_string()),
        ("KAFKA_SASL", "SCRAM-SHA-512".to_owned()),
        ("KAFKA_USER", "alice".to_owned()),
        ("KAFKA_PASSWORD", "s3cret".to_owned()),
    ];
    let arrived = consume_with(&secured, "plant.series", 2 * N as usize, &security);
    for gateway in ["scram512", "scram256"] {
        let mut ids: Vec<u64> = arrived
            .iter()
            .filter(|(_, _, g, _)| g == gateway)
            .map(|(_, _, _, id)| id.rsplit_once("-s").unwrap().1.parse().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (1..=N).collect::<Vec<_>>(), "{gateway}: every record arrives");
    }

    // A wrong password (straight to the broker, and through TLS), a CA that did not sign the
    // broker's certificate, and no client certificate: nothing is delivered, the records stay,
    // and the sink says why (the sink gives up a connection after its 10 s deadline, so the
    // four run at once).
    let wrong_password =
        KafkaConfig { sasl: Some((Sasl::ScramSha512, "alice".into(), Secret::File(file("wrong")))), ..good.clone() };
    let cases = [
        (
            "password, without TLS",
            KafkaConfig {
                tls: false,
                ca_file: None,
                client_cert: None,
                brokers: vec![plain.clone()],
                ..wrong_password.clone()
            },
            "invalid proof",
        ),
        // Through the OpenSSL front the broker's refusal reaches the sink as the front closing
        // the TLS session (its alert), not as SCRAM's "invalid proof"; what matters is that
        // nothing is delivered and a problem is raised.
        ("password", wrong_password, ""),
        ("trust", KafkaConfig { ca_file: Some(file("other-ca.pem")), ..good.clone() }, "UnknownIssuer"),
        ("certificate", KafkaConfig { client_cert: None, ..good.clone() }, "CertificateRequired"),
    ];
    std::thread::scope(|scope| {
        for (i, (name, kafka, says)) in cases.iter().enumerate() {
            let dir = &dir;
            scope.spawn(move || {
                let (delivered, problem) = deliver(dir, &format!("wrong{i}"), kafka, 10, Duration::from_secs(20));
                assert_eq!(delivered, 0, "with a wrong {name} nothing is delivered");
                assert!(
                    !problem.is_empty() && problem.contains(says),
                    "with a wrong {name} the sink says why: {problem}"
                );
            });
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Connections from this process to `port` (ESTABLISHED, IPv4 loopback), from /proc/net/tcp.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let remote_port = fields[2].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && fields[3] == "01"
        })
        .count()
}

/// A topic of 40 partitions: the sink writes to the first 16 only, over at most one
/// connection each (and the bootstrap's), so that the broker's metadata does not decide how
/// many connections the gateway opens (one per partition it claims, before).
#[test]
fn a_topic_of_many_partitions_is_written_to_the_first_sixteen_over_bounded_connections() {
    let broker = Broker::start(&[("plant.series", 40)]);
    let port: u16 = broker.address.rsplit(':').next().unwrap().parse().unwrap();
    let dir = temp("kafka-many-partitions");
    let (mut writer, reader) = outbox(&dir);
    let time = Timestamp::parse_rfc3339("2026-11-29T12:00:00Z").unwrap();
    const N: usize = 1000;
    for i in 0..N {
        let path = format!("acme/dortmund/pressing/line3/cell1/press{}/speed", i % 200);
        writer.append(Class::Series, &records::sample(&path, ValueType::F64, TagValue::F64(i as f64), time)).unwrap();
    }
    writer.sync().unwrap();
    let health = Arc::new(SinkHealth::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sink = KafkaSink::new("k", "plant7", &config(&broker.address));
    let handle = airlock_north::spawn(sink, reader, Arc::clone(&stop), Arc::clone(&health)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while health.delivered.load(Relaxed) < N as u64 {
        assert!(Instant::now() < deadline, "{} of {N} delivered: {}", health.delivered.load(Relaxed), health.problem());
        std::thread::sleep(Duration::from_millis(50));
    }
    let connections = connections_to(port);
    stop.store(true, Relaxed);
    handle.join().unwrap();
    assert!(
        connections <= airlock_north::kafka::PARTITIONS_MAX + 2,
        "{connections} connections to the broker for a topic of 40 partitions"
    );
    let messages = consume(&broker.address, "plant.series", N);
    assert_eq!(messages.len(), N);
    let used: std::collections::BTreeSet<u64> = messages.iter().map(|m| m.0).collect();
    assert!(used.iter().all(|p| *p < airlock_north::kafka::PARTITIONS_MAX as u64), "{used:?}");
    assert!(used.len() > 8, "the keys spread over the partitions written to: {used:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A cluster whose metadata names a broker the config does not list (here it says it is at
/// 127.0.0.3, where the test listens to see whether anything comes; on a dual-homed gateway it
/// could name an OT address): the gateway opens no connection there, delivers nothing, and its
/// problem names the address refused. (The HTTP sink follows no redirect for the same reason:
/// an IT-side peer does not choose where the gateway connects.)
#[test]
fn a_broker_the_config_does_not_list_is_never_connected_to() {
    let dir = temp("kafka-elsewhere");
    let address = format!("127.0.0.1:{}", free_port());
    let elsewhere = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let advertised = elsewhere.local_addr().unwrap().to_string();
    let broker = Broker::launch(&address, &advertised, "memory://tansu/", false, &dir);
    broker.create_topics(&[("plant.series", 1)]);
    let (delivered, problem) = deliver(&dir, "elsewhere", &config(&address), 20, Duration::from_secs(25));
    assert_eq!(delivered, 0, "{problem}");
    assert!(problem.contains(&advertised) && problem.contains("not in its `brokers`"), "{problem}");
    match elsewhere.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the gateway connected to {advertised}: {other:?}"),
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
