//! `airlock export --format parquet` against independent readers: pyarrow and DuckDB (PyPI, in
//! the test setup's `.venv`) read the file and find the same rows, values and qualities as the
//! CSV export of the same range, for a range larger than the export may hold in memory.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::process::Command;
use std::time::{Duration, Instant};

use airlock_model::{Quality, Reason, Sample, TagId, Timestamp, Value};
use airlock_store::{HistorianConfig, HistorianWriter};

/// Samples per tag, and tags: 1.5 million rows, about 120 MB as rows in memory.
const PER_TAG: i64 = 500_000;
const TAGS: [&str; 3] = [
    "acme/site/area/line/cell/press1/speed",
    "acme/site/area/line/cell/press1/power",
    "acme/site/area/line/cell/press2/speed",
];

#[test]
fn a_parquet_export_reads_back_in_pyarrow_and_duckdb_as_the_historian_has_it() {
    let dir = std::env::temp_dir().join(format!("airlock-export-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut writer, _) = HistorianWriter::open(&dir.join("historian"), HistorianConfig::default()).unwrap();
    writer.bind_tags(&TAGS).unwrap();
    let start = 1_795_867_200_000i64; // 2026-11-28T12:00:00Z
    for batch in 0..PER_TAG / 10_000 {
        let mut samples = Vec::new();
        for i in batch * 10_000..(batch + 1) * 10_000 {
            let time = Timestamp::from_millis(start + i * 1000);
            for (t, _) in TAGS.iter().enumerate() {
                // Every 997th sample of a tag is bad (the device timed out), with its reason.
                let (value, quality) = if (i + t as i64) % 997 == 0 {
                    (None, Quality::Bad(Reason::Timeout))
                } else {
                    (Some(Value::F64((i as f64 * 0.37 + t as f64 * 100.0).sin() * 50.0 + 1480.0)), Quality::Good)
                };
                samples.push(Sample { tag: TagId(t as u32), value, quality, source_time: None, gateway_time: time });
            }
        }
        writer.append(&samples).unwrap();
        writer.commit().unwrap();
    }
    writer.sync().unwrap();
    writer.checkpoint().unwrap();
    drop(writer);

    let (from, to) = ("2026-11-28T00:00:00Z", "2026-12-30T00:00:00Z");
    let data = dir.to_str().unwrap();
    let parquet = dir.join("week.parquet");
    let csv = dir.join("week.csv");
    // The Parquet export, its memory watched: it must hold one row group and one read window,
    // not the range.
    let mut export = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["export", "--data", data, "--from", from, "--to", to, "--out", parquet.to_str().unwrap()])
        .spawn()
        .unwrap();
    let (pid, started) = (export.id(), Instant::now());
    let mut peak_mb = 0f64;
    let status = loop {
        peak_mb = peak_mb.max(airlock_testkit::peak_rss_mb_of(pid));
        if let Some(status) = export.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "the export took too long");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let rows = TAGS.len() as u64 * PER_TAG as u64;
    // About 80 bytes a row in memory (a time, a value, a shared tag, a quality): the range
    // would take 120 MB; the export holds far less.
    assert!(peak_mb < 80.0, "the export's peak memory was {peak_mb:.1} MB for {rows} rows");
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["export", "--data", data, "--from", from, "--to", to, "--out", csv.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(&format!("exported {rows} rows of 3 tags")), "{said}");

    let out = Command::new(airlock_testkit::python())
        .arg(airlock_testkit::peer_script("parquet_check.py"))
        .arg(&parquet)
        .arg(&csv)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("pyarrow: {rows} rows in 6 row groups")), "{stdout}");
    assert!(stdout.contains("equal to the CSV's, row for row"), "{stdout}");
    eprintln!("{stdout}peak memory of the Parquet export: {peak_mb:.0} MB");
    std::fs::remove_dir_all(&dir).unwrap();
}
