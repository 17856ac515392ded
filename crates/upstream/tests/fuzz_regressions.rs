//! Every input with which fuzzing once failed the upstream record target, kept in
//! `fuzz/regressions/upstream_record/`, through the target's check: what decodes encodes to
//! bytes that decode and encode to the same bytes. (The one found so far was the target's own
//! mistake: it compared records, and a record holding NaN is unequal to itself.)

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::Path;

use airlock_model::Timestamp;

#[test]
fn records_that_once_failed_the_fuzz_target_round_trip_as_bytes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/upstream_record");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        n += 1;
        if let Ok(record) = airlock_upstream::decode(&bytes, Timestamp(0)) {
            let mut again = Vec::new();
            airlock_upstream::encode(&record, &mut again);
            let back = airlock_upstream::decode(&again, Timestamp(0)).unwrap();
            let mut third = Vec::new();
            airlock_upstream::encode(&back, &mut third);
            assert_eq!(again, third);
        }
    }
    assert!(n > 0);
}
