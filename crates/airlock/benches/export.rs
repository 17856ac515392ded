//! Exporting the historian: Parquet against CSV of the same range, in one run: rows per second
//! and bytes per row of each file. A historian written here (3 tags at 1 Hz, a million samples
//! each, with one bad sample in 997), checkpointed to chunks on disk; `airlock export` a child.
//!
//! Run: `cargo bench -p airlock --bench export`

#![allow(clippy::unwrap_used)] // a benchmark: a failure is the run failing

use std::process::Command;
use std::time::Instant;

use airlock_model::{Quality, Reason, Sample, TagId, Timestamp, Value};
use airlock_store::{HistorianConfig, HistorianWriter};

const PER_TAG: i64 = 1_000_000;
const TAGS: [&str; 3] =
    ["plant/line/cell/press1/speed", "plant/line/cell/press1/power", "plant/line/cell/press2/speed"];

fn main() {
    let dir = std::env::temp_dir().join(format!("airlock-bench-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut writer, _) = HistorianWriter::open(&dir.join("historian"), HistorianConfig::default()).unwrap();
    writer.bind_tags(&TAGS).unwrap();
    let start = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap().as_millis();
    for batch in 0..PER_TAG / 10_000 {
        let mut samples = Vec::new();
        for i in batch * 10_000..(batch + 1) * 10_000 {
            for (t, _) in TAGS.iter().enumerate() {
                let (value, quality) = if (i + t as i64) % 997 == 0 {
                    (None, Quality::Bad(Reason::Timeout))
                } else {
                    // A process value with the resolution of a 16-bit sensor, as a plant's are.
                    (Some(Value::F64(((i as f64 * 0.01).sin() * 500.0).round() / 10.0 + 1480.0)), Quality::Good)
                };
                let time = Timestamp::from_millis(start + i * 1000);
                samples.push(Sample { tag: TagId(t as u32), value, quality, source_time: None, gateway_time: time });
            }
        }
        writer.append(&samples).unwrap();
        writer.commit().unwrap();
    }
    writer.sync().unwrap();
    writer.checkpoint().unwrap();
    drop(writer);
    let rows = PER_TAG as f64 * TAGS.len() as f64;
    println!("export benchmark: {} rows (3 tags at 1 Hz), the same range to each format", rows);
    let mut figures = Vec::new();
    for (format, file) in [("csv", "out.csv"), ("parquet", "out.parquet")] {
        let out = dir.join(file);
        let t = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args(["export", "--data", dir.to_str().unwrap(), "--from", "2025-12-31", "--to", "2026-02-01"])
            .args(["--format", format, "--out", out.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        let seconds = t.elapsed().as_secs_f64();
        let bytes = std::fs::metadata(&out).unwrap().len() as f64;
        println!(
            "  {format:<8} {:>10.0} rows/s  {:>7.1} MB  {:>6.2} bytes/row",
            rows / seconds,
            bytes / 1e6,
            bytes / rows
        );
        figures.push((rows / seconds, bytes));
    }
    println!(
        "  parquet against csv: {:.2}x the rows/s, {:.3}x the size",
        figures[1].0 / figures[0].0,
        figures[1].1 / figures[0].1
    );
    let _ = std::fs::remove_dir_all(&dir);
}
