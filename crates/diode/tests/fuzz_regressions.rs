//! Every input with which fuzzing (`fuzz/`, `scripts/fuzz`) once crashed or hung the diode's
//! receiving half, kept in `fuzz/regressions/diode_datagram/` and run here through the fuzz
//! target's own code, so that a fixed one stays fixed in `cargo test`:
//! - `hang-small-block`: a corrupted symbol (its checksum made right again) naming a block
//!   number far ahead; the receiver then gave up the blocks in between one number at a time,
//!   billions of turns (fixed: it jumps to the next block it holds).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn datagrams_that_once_failed_are_taken_or_refused_in_time() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions/diode_datagram");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty());
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let started = Instant::now();
        airlock_diode::fuzzing::run(&bytes);
        // Generous for a debug build on a busy machine; the hang it guards against never ended.
        assert!(started.elapsed() < Duration::from_secs(10), "{} took {:?}", path.display(), started.elapsed());
    }
}
