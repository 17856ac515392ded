//! A segment file of the outbox or the historian, with any bytes in it (flipped, cut, foreign):
//! every record checked, the corrupt ones skipped, never a panic. Starts with the magic half
//! of the time, so the record checks are reached.
#![no_main]

use airlock_store::log::{MAGIC, check_segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Some((first, rest)) = bytes.split_first() else { return };
    let mut file = Vec::with_capacity(bytes.len() + 8);
    if first & 1 == 0 {
        file.extend_from_slice(MAGIC);
    }
    file.extend_from_slice(rest);
    let first_seq = u64::from(*first >> 1);
    let checked = check_segment(&file, first_seq);
    assert!(checked.valid_end <= file.len());
    assert!(checked.info.last_seq < airlock_store::log::SEQ_MAX);
    let _ = checked.info.records();
});
