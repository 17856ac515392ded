//! The HTTP sink against a web hook we did not write (Python's standard-library HTTP server, in
//! `scripts/peers/http_receiver.py`): a receiver that fails the first requests with 500 gets
//! everything once it answers 200, nothing lost; a receiver that answers 400 gets each batch
//! once, and the batches are parked as dead letters rather than retried forever, within their
//! budget; a receiver that redirects is never followed, its batch is sent again, and the
//! problem is reported upstream.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_config::HttpSink as HttpConfig;
use airlock_model::{Problems, Timestamp, Transition, Value as TagValue, ValueType};
use airlock_north::SinkHealth;
use airlock_north::http::HttpSink;
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter};
use airlock_testkit::records;
use serde_json::Value;

/// The receiver, and every request it got: `{"status", "headers", "body"}`.
struct Receiver {
    child: Child,
    port: u16,
    requests: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start(args: &[&str]) -> Self {
        let python = std::env::var("AIRLOCK_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/peers/http_receiver.py");
        let mut child =
            Command::new(python).arg(script).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let port = first["port"].as_u64().unwrap() as u16;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let r = Arc::clone(&requests);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                r.lock().unwrap().push(serde_json::from_str(&line).unwrap());
            }
        });
        Self { child, port, requests }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// An outbox of 250 events and 250 raw records, and the HTTP sink running on it.
fn run_sink(
    dir: &Path,
    port: u16,
    until: impl Fn(&SinkHealth, &[Value]) -> bool,
    requests: &Mutex<Vec<Value>>,
) -> Arc<SinkHealth> {
    run_sink_with(dir, port, 64 << 20, Arc::new(SinkHealth::default()), until, requests, &|_| {})
}

fn run_sink_with(
    dir: &Path,
    port: u16,
    dead_letters_max_bytes: u64,
    health: Arc<SinkHealth>,
    until: impl Fn(&SinkHealth, &[Value]) -> bool,
    requests: &Mutex<Vec<Value>>,
    tweak: &dyn Fn(&mut HttpConfig),
) -> Arc<SinkHealth> {
    let config = OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["erp".into()],
        ..OutboxConfig::default()
    };
    let (mut writer, reader) = OutboxWriter::open(&dir.join("outbox"), config).unwrap();
    for i in 1..=250u64 {
        let time = Timestamp(i as i64);
        let event = records::event("parts_produced", &format!("press1 produced {i} parts"), i as f64, time);
        writer.append(Class::Event, &event).unwrap();
        writer.append(Class::Raw, &records::sample("a/b", ValueType::U64, TagValue::U64(i), time)).unwrap();
    }
    writer.sync().unwrap();
    let mut http = HttpConfig {
        url: format!("http://127.0.0.1:{port}/hook"),
        classes: vec!["events".into()],
        batch_records_max: 100,
        timeout: Duration::from_secs(5),
        bearer_token_env: None,
        dead_letters_max_bytes,
        proxy: None,
    };
    tweak(&mut http);
    let sink = HttpSink::new("erp", "plant7", &http, dir, Arc::clone(&health)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = airlock_north::spawn(sink, reader, Arc::clone(&stop), Arc::clone(&health)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !until(&health, &requests.lock().unwrap()) {
        assert!(Instant::now() < deadline, "the sink did not get there in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // time for any request that should not come
    stop.store(true, Relaxed);
    handle.join().unwrap();
    health
}

/// A request header, whatever the case of its name on the wire.
fn header(request: &Value, name: &str) -> String {
    let headers = request["headers"].as_object().unwrap();
    let value = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str().unwrap().to_owned());
    value.unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

fn ids(request: &Value) -> Vec<String> {
    request["body"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_receiver_that_fails_first_gets_everything_afterwards() {
    let dir = temp("retry");
    let receiver = Receiver::start(&["fail-first", "3"]);
    let all_delivered = |_: &SinkHealth, reqs: &[Value]| {
        let got: BTreeSet<String> = reqs.iter().filter(|r| r["status"] == 200).flat_map(ids).collect();
        got.len() == 250
    };
    let health = run_sink(&dir, receiver.port, all_delivered, &receiver.requests);
    let requests = receiver.requests.lock().unwrap().clone();
    let statuses: Vec<u64> = requests.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(&statuses[..3], &[500, 500, 500]);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 3, "250 events in batches of 100: {statuses:?}");
    // The failed batch came again, the same, under the same idempotency key.
    let key = |r: &Value| header(r, "Idempotency-Key");
    assert_eq!(key(&requests[0]), "plant7-e1..e100");
    assert_eq!(key(&requests[3]), "plant7-e1..e100");
    assert_eq!(ids(&requests[0]), ids(&requests[3]));
    let delivered: Vec<String> = requests.iter().filter(|r| r["status"] == 200).flat_map(ids).collect();
    let expected: Vec<String> = (1..=250).map(|i| format!("plant7-e{i}")).collect();
    assert_eq!(delivered, expected, "every event once, in order; no raw record (not a class this sink takes)");
    let first = &requests[3]["body"][0];
    assert_eq!(first["message"], "press1 produced 1 parts");
    assert_eq!(header(&requests[3], "Content-Type"), "application/json");
    assert_eq!(health.dead_lettered.load(Relaxed), 0);
    assert!(health.failures.load(Relaxed) >= 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_receiver_that_refuses_gets_each_batch_once_and_they_are_parked() {
    let dir = temp("reject");
    let receiver = Receiver::start(&["reject"]);
    let parked = |h: &SinkHealth, _: &[Value]| h.dead_lettered.load(Relaxed) == 250;
    let health = run_sink(&dir, receiver.port, parked, &receiver.requests);
    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "each batch sent once, not retried");
    assert_eq!(health.dead_lettered.load(Relaxed), 250);
    let letters = std::fs::read_to_string(dir.join("deadletter/erp.jsonl")).unwrap();
    let letters: Vec<Value> = letters.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 3);
    assert_eq!(letters[0]["status"], 400);
    assert_eq!(letters[0]["answer"], "{\"error\":\"unknown plant\"}");
    assert_eq!(letters[0]["first_id"], "plant7-e1");
    let kept: usize = letters.iter().map(|l| l["records"].as_array().unwrap().len()).sum();
    assert_eq!(kept, 250, "every refused record is kept");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_redirect_is_never_followed_nor_counted_as_delivered_and_is_reported() {
    let dir = temp("redirect");
    // Where the redirect points: it must never be connected to.
    let elsewhere = Receiver::start(&["ok"]);
    let target = format!("http://127.0.0.1:{}/x", elsewhere.port);
    let receiver = Receiver::start(&["redirect-first", "3", &target]);
    let board = Arc::new(Problems::default());
    let health = Arc::new(SinkHealth::reporting_to(Arc::clone(&board)));
    let all_delivered = |_: &SinkHealth, reqs: &[Value]| {
        reqs.iter().filter(|r| r["status"] == 200).flat_map(ids).collect::<BTreeSet<String>>().len() == 250
    };
    let health = run_sink_with(&dir, receiver.port, 64 << 20, health, all_delivered, &receiver.requests, &|_| {});
    assert!(elsewhere.requests.lock().unwrap().is_empty(), "the gateway followed the redirect");
    let requests = receiver.requests.lock().unwrap().clone();
    let statuses: Vec<u64> = requests.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [302, 302, 302, 200, 200, 200], "the redirected batch was sent again, not skipped");
    assert_eq!(ids(&requests[0]), ids(&requests[3]));
    let delivered: Vec<String> = requests.iter().filter(|r| r["status"] == 200).flat_map(ids).collect();
    assert_eq!(delivered, (1..=250).map(|i| format!("plant7-e{i}")).collect::<Vec<_>>());
    // Reported upstream: raised naming the status and the Location, then cleared.
    let problems = board.take();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_eq!((problems[0].kind, problems[0].state), ("sink_failing", Transition::Raised));
    assert!(problems[0].message.contains("302") && problems[0].message.contains(&target), "{}", problems[0].message);
    assert_eq!(problems[1].state, Transition::Cleared);
    assert_eq!(health.problem(), "", "delivering again");
    assert_eq!(health.failures.load(Relaxed), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn dead_letters_keep_to_their_budget_dropping_the_oldest_counted() {
    let dir = temp("budget");
    let receiver = Receiver::start(&["reject"]);
    let parked = |h: &SinkHealth, _: &[Value]| h.dead_lettered.load(Relaxed) == 250;
    // Each refused batch of 100 events is about 25 kB: a 30 kB budget holds two files of one.
    let health = Arc::new(SinkHealth::default());
    let health = run_sink_with(&dir, receiver.port, 30_000, health, parked, &receiver.requests, &|_| {});
    let letters = |name: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(dir.join("deadletter").join(name)).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (newest, older) = (letters("erp.jsonl"), letters("erp.jsonl.1"));
    assert_eq!((newest.len(), older.len()), (1, 1));
    assert_eq!(newest[0]["first_id"], "plant7-e201");
    assert_eq!(older[0]["first_id"], "plant7-e101");
    assert_eq!(health.dead_letters_dropped.load(Relaxed), 100, "the first batch was removed, and counted");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_configured_proxy_carries_the_batches() {
    let dir = temp("proxy");
    // The receiver stands in for the proxy: a proxied request names the whole URL.
    let proxy = Receiver::start(&["ok"]);
    let port = proxy.port;
    let all_delivered = |_: &SinkHealth, reqs: &[Value]| {
        let posts = reqs.iter().filter(|r| r["method"] == "POST" && r["status"] == 200);
        posts.flat_map(ids).collect::<BTreeSet<String>>().len() == 250
    };
    let health = Arc::new(SinkHealth::default());
    let via_proxy = move |h: &mut HttpConfig| {
        h.url = "http://erp.invalid:8080/hook".into();
        h.proxy = Some(format!("http://127.0.0.1:{port}"));
    };
    run_sink_with(&dir, 1, 64 << 20, health, all_delivered, &proxy.requests, &via_proxy);
    let requests = proxy.requests.lock().unwrap().clone();
    // Through the proxy: a CONNECT to the web hook's host (which does not even resolve here),
    // then the three batches through the tunnel.
    let connects: Vec<&Value> = requests.iter().filter(|r| r["method"] == "CONNECT").collect();
    assert!(!connects.is_empty(), "{requests:#?}");
    assert!(connects.iter().all(|r| r["path"] == "erp.invalid:8080"), "{connects:#?}");
    assert_eq!(requests.iter().filter(|r| r["method"] == "POST").count(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Answers that are neither success, redirect nor a 4xx (a 6xx from a broken middlebox): not a
/// refusal of the batch, so it is retried, never parked as dead letters (the catch-all parked
/// it and took it out of the outbox).
#[test]
fn an_answer_outside_http_s_classes_is_retried_not_parked() {
    let dir = temp("odd-status");
    let receiver = Receiver::start(&["status-first", "2", "600"]);
    let all_delivered = |_: &SinkHealth, reqs: &[Value]| {
        reqs.iter().filter(|r| r["status"] == 200).flat_map(ids).collect::<BTreeSet<String>>().len() == 250
    };
    let health = run_sink(&dir, receiver.port, all_delivered, &receiver.requests);
    let requests = receiver.requests.lock().unwrap().clone();
    let statuses: Vec<u64> = requests.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(statuses, [600, 600, 200, 200, 200], "the batch answered 600 was sent again");
    assert_eq!(health.dead_lettered.load(Relaxed), 0);
    assert_eq!(health.failures.load(Relaxed), 2);
    assert!(!dir.join("deadletter").join("erp.jsonl").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// An answer that refuses the sink's settings, not its records (401 or 403: credentials out of
/// date; 404 or 410: the url; 405, 407, 421, 426): the batch waits and is sent again once the
/// receiver takes it, as a 5xx is, and no record becomes a dead letter. Before, every 4xx but
/// 408 and 429 parked the batch: an expired token drained the whole backlog into dead letters.
#[test]
fn a_refusal_of_the_sink_s_settings_is_retried_not_parked() {
    for status in ["401", "403", "404", "405", "407", "410", "421", "426"] {
        let dir = temp(&format!("settings-{status}"));
        let receiver = Receiver::start(&["status-first", "2", status]);
        let all_delivered = |_: &SinkHealth, reqs: &[Value]| {
            reqs.iter().filter(|r| r["status"] == 200).flat_map(ids).collect::<BTreeSet<String>>().len() == 250
        };
        let health = run_sink(&dir, receiver.port, all_delivered, &receiver.requests);
        let requests = receiver.requests.lock().unwrap().clone();
        let statuses: Vec<u64> = requests.iter().map(|r| r["status"].as_u64().unwrap()).collect();
        let code: u64 = status.parse().unwrap();
        assert_eq!(statuses, [code, code, 200, 200, 200], "{status}: the batch refused was sent again");
        assert_eq!(health.dead_lettered.load(Relaxed), 0, "{status}");
        assert!(!dir.join("deadletter").join("erp.jsonl").exists(), "{status}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
