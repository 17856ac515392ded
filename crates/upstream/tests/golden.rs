//! Every record kind renders to the JSON documented in README.md. The files in `golden/` for
//! samples, aggregates, production, OEE and edge events were written by the version before the
//! typed records (which built this JSON in the collector): the rendering is unchanged, byte for
//! byte. The outbox's own events (gap, recovery, undecodable) now carry `state` and
//! `gateway_time` like every other event; their files were written by this version.

#![allow(clippy::unwrap_used)]

mod records;

use std::path::Path;

#[test]
fn every_record_renders_to_its_golden_json() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (name, id, record) in records::examples() {
        let file = dir.join(format!("{name}.json"));
        let golden = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let rendered = String::from_utf8(airlock_upstream::json::to_vec(id, &record)).unwrap();
        assert_eq!(rendered, golden.trim_end(), "{name}");
        // And the golden JSON is JSON, with the id first.
        let v: serde_json::Value = serde_json::from_str(&golden).unwrap();
        assert_eq!(v["id"], id, "{name}");
        assert!(golden.starts_with(&format!("{{\"id\":\"{id}\"")), "{name}");
        assert_eq!(v["topic"], record.topic(), "{name}: the topic field is the record's topic");
    }
}
