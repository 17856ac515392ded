//! Every input with which fuzzing (`fuzz/`, `scripts/fuzz`) once crashed a store decoder, kept
//! in `fuzz/regressions/<target>/` and run here through the same checks as the fuzz target, so
//! a fixed crash stays fixed in `cargo test` (without the nightly toolchain).
//! - `historian_chunk`: a chunk header asking for four billion samples, and a quality run
//!   length that overflowed the sum (fixed in `chunk::decode_runs`); a 100-byte pco column that
//!   claimed so many numbers that decoding it took 1.7 GB in the fuzz build (`oom-*`; fixed in
//!   `chunk::decompress`: the output is sized by the chunk's own count, at most 4 M); an ANS
//!   code table whose frequency varint overflowed the sum (`crash-ans-table-sum-overflow`, found
//!   by a review's mutation run; fixed in `ans::Table::read`). This
//!   binary's peak memory must stay under 256 MB (the test builds did not reach the 1.7 GB
//!   before the fix either: this input is kept as a replay, not as a reproduction);
//! - `store_segment`: a record whose sequence number was u64::MAX with a matching checksum,
//!   which overflowed the segment's record count (fixed: `SEQ_MAX`, `SegmentInfo::records`).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::{Path, PathBuf};

use airlock_store::historian::chunk;
use airlock_store::historian::gorilla::{BitReader, decode_times, decode_values};
use airlock_store::log::{MAGIC, SEQ_MAX, check_segment};

/// The process's peak resident memory in MB (`VmHWM`).
fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/regressions").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no regression inputs in {}", dir.display());
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn historian_chunks_that_once_crashed_decode_to_an_error() {
    for (path, bytes) in inputs("historian_chunk") {
        let _ = chunk::entry(&bytes);
        let _ = chunk::decode(&bytes, |_| Ok((0..64).collect()));
        if let Ok(block) = chunk::Block::open(bytes.as_slice()) {
            for i in block.sections_of(block.prefix.tag_min).take(4) {
                if let Ok(section) = block.section(i) {
                    let _ = block.decode(&section);
                }
            }
        }
        let count = usize::from(bytes.first().copied().unwrap_or(0)) * 8;
        let rest = bytes.get(1..).unwrap_or_default();
        let _ = decode_times(&mut BitReader::new(rest), count);
        let _ = decode_values(&mut BitReader::new(rest), count);
        let peak = peak_rss_mb();
        assert!(peak < 256, "{}: the test's peak memory reached {peak} MB", path.display());
        eprintln!("{} passes (peak {peak} MB)", path.display());
    }
}

#[test]
fn segments_that_once_crashed_are_checked_without_a_panic() {
    for (path, bytes) in inputs("store_segment") {
        let Some((first, rest)) = bytes.split_first() else { continue };
        let mut file = Vec::new();
        if first & 1 == 0 {
            file.extend_from_slice(MAGIC);
        }
        file.extend_from_slice(rest);
        let checked = check_segment(&file, u64::from(*first >> 1));
        assert!(checked.info.last_seq < SEQ_MAX, "{}", path.display());
        let _ = checked.info.records();
    }
}
