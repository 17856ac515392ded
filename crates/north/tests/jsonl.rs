//! The JSON Lines sink on the shared runner: every record rendered from its type, the message id
//! first; a record this version cannot decode arrives as an `outbox_undecodable` event naming
//! its id, and the records after it still go out.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use airlock_model::{Timestamp, Value as TagValue, ValueType};
use airlock_north::{JsonlSink, SinkHealth};
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter};
use airlock_testkit::{records, temp};
use serde_json::Value;

#[test]
fn an_undecodable_record_is_reported_by_id_and_the_sink_goes_on() {
    let dir = temp("jsonl-undecodable");
    let config = OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["file".into()],
        ..OutboxConfig::default()
    };
    let (mut writer, reader) = OutboxWriter::open(&dir.join("outbox"), config).unwrap();
    let time = Timestamp::parse_rfc3339("2026-11-28T12:00:00Z").unwrap();
    let path = "acme/dortmund/pressing/line3/cell1/press1/speed";
    writer.append(Class::Raw, &records::sample(path, ValueType::F64, TagValue::F64(1.5), time)).unwrap();
    // Bytes of a later format version (9), as an upgrade rolled back would leave them.
    writer.append_encoded(Class::Raw, time, &[9, 1, 2, 3]).unwrap();
    writer.append(Class::Raw, &records::sample(path, ValueType::F64, TagValue::F64(2.5), time)).unwrap();
    writer.sync().unwrap();

    let out = dir.join("upstream.jsonl");
    let health = Arc::new(SinkHealth::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sink = JsonlSink::new("file", "plant7", &out);
    let handle = airlock_north::spawn(sink, reader.clone(), Arc::clone(&stop), Arc::clone(&health)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while health.delivered.load(Relaxed) < 3 {
        assert!(Instant::now() < deadline, "the sink did not deliver 3 records in 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Relaxed);
    handle.join().unwrap();

    let lines: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!((&lines[0]["id"], &lines[0]["value"]), (&Value::from("plant7-r1"), &Value::from(1.5)));
    assert_eq!(lines[1]["id"], "plant7-r2", "the report stands under the unreadable record's own id");
    assert_eq!(lines[1]["topic"], "_airlock/events/outbox_undecodable");
    assert_eq!(lines[1]["record_id"], "r2");
    assert!(lines[1]["message"].as_str().unwrap().contains("format version 9"), "{}", lines[1]);
    assert_eq!((&lines[2]["id"], &lines[2]["value"]), (&Value::from("plant7-r3"), &Value::from(2.5)));
    assert_eq!(reader.stats().undecodable_reads, 1);
    let _ = std::fs::remove_dir_all(&dir);
}
