//! A historian WAL record of any bytes: its samples or an error, never a panic; and any samples
//! written as a record read back bit for bit (the input taken as 22-byte rows: tag, time,
//! value, quality).
#![no_main]

use airlock_store::historian::wal::{ROW_BYTES, RecordBuilder, read};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let mut n = 0usize;
    let _ = read(bytes, |_, _, _, _| n += 1);
    assert!(n <= bytes.len(), "{n} samples from {} bytes", bytes.len());

    let word = |row: &[u8], i: usize, n: usize| row[i..i + n].iter().rev().fold(0u64, |v, b| (v << 8) | u64::from(*b));
    let rows: Vec<(u32, i64, u64, u16)> = bytes
        .chunks_exact(ROW_BYTES)
        .map(|r| (word(r, 0, 4) as u32, word(r, 4, 8) as i64, word(r, 12, 8), word(r, 20, 2) as u16))
        .collect();
    let mut record = RecordBuilder::new(Vec::new());
    for (tag, time, bits, quality) in &rows {
        record.push(*tag, *time, f64::from_bits(*bits), *quality);
    }
    let payload = record.finish();
    let mut back = Vec::new();
    read(&payload, |tag, time, value, quality| back.push((tag, time, value.to_bits(), quality)))
        .expect("a record just written reads");
    assert_eq!(back, rows);
});
