//! kill -9: a child process writes to an outbox and a historian at full speed and prints every
//! record and sample once a commit has acknowledged it as persisted. The parent kills it with
//! SIGKILL at random moments, 24 times (240 with `AIRLOCK_SLOW_TESTS=1`), restarting it each
//! time on the same folder. At the end, every acknowledged record is there with its payload, in
//! order, ids never name two different records, and every acknowledged sample is in the
//! historian.
//!
//! The child is this same test binary, run as the `crash_child` test with
//! `AIRLOCK_CRASH_CHILD` set to the folder.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use airlock_model::{Sample, TagId, Timestamp, Value};
use airlock_store::{Class, FsyncPolicy, HistorianConfig, HistorianWriter, OutboxConfig, OutboxWriter, Position};

const TAG: &str = "acme/lab/crash/counter";

fn outbox_config(sync_thread: bool) -> OutboxConfig {
    OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(2)),
        sinks: vec!["sink".into()],
        sync_thread,
        ..OutboxConfig::default()
    }
}

fn historian_config(sync_thread: bool) -> HistorianConfig {
    HistorianConfig {
        fsync: FsyncPolicy::Interval(Duration::from_millis(2)),
        wal_bytes_max: 256 << 10,
        sync_thread,
        ..HistorianConfig::default()
    }
}

/// The child: writes until killed. Lines: `o <class> <seq> <payload>` and `h <time_ms> <value>`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("AIRLOCK_CRASH_CHILD") else { return };
    let run: u64 = std::env::var("AIRLOCK_CRASH_RUN").unwrap().parse().unwrap();
    let dir = PathBuf::from(dir);
    let threaded = std::env::var("AIRLOCK_CRASH_SYNC_THREAD").is_ok();
    let (mut outbox, _reader) = OutboxWriter::open(&dir.join("outbox"), outbox_config(threaded)).unwrap();
    let (mut historian, _hr) = HistorianWriter::open(&dir.join("historian"), historian_config(threaded)).unwrap();
    historian.bind_tags(&[TAG]).unwrap();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut unacked_records: Vec<(Class, u64, String)> = Vec::new();
    // Each batch's samples with the WAL record that holds them: acknowledged by watermark.
    let mut unacked_samples: Vec<(u64, i64, u64)> = Vec::new();
    // Each run writes in its own stretch of time, so samples never collide across runs.
    let mut time_ms = 1_000_000_000 * (run as i64 + 1);
    for i in 0u64.. {
        for k in 0..20 {
            let class = Class::ALL[((i + k) % 4) as usize];
            let payload = format!("run{run}-rec{i}-{k}");
            let id = outbox.append_encoded(class, Timestamp(i as i64), payload.as_bytes()).unwrap();
            unacked_records.push((class, id.seq, payload));
        }
        let first_ms = time_ms + 1;
        let samples: Vec<Sample> = (0..20)
            .map(|k| {
                time_ms += 1;
                Sample::good(TagId(0), Value::U64(i * 100 + k), Timestamp::from_millis(time_ms))
            })
            .collect();
        historian.append(&samples).unwrap();
        let wal_record = historian.appended_through().unwrap();
        unacked_samples.extend((0..20).map(|k| (wal_record, first_ms + k as i64, i * 100 + k)));
        let durable = outbox.commit().unwrap();
        historian.commit().unwrap();
        let wal_durable = historian.durable_through().unwrap();
        let (now_durable, later): (Vec<_>, Vec<_>) =
            unacked_records.drain(..).partition(|(c, s, _)| *s <= durable.0[*c as usize]);
        unacked_records = later;
        for (c, s, p) in now_durable {
            writeln!(out, "o {} {s} {p}", c as usize).unwrap();
        }
        let synced = unacked_samples.iter().take_while(|(record, _, _)| *record <= wal_durable).count();
        for (_, t, v) in unacked_samples.drain(..synced) {
            writeln!(out, "h {t} {v}").unwrap();
        }
        out.flush().unwrap();
    }
}

struct Acked {
    records: Vec<(usize, u64, String)>,
    samples: Vec<(i64, u64)>,
}

fn run_and_kill(exe: &Path, dir: &Path, run: u64, alive: Duration, threaded: bool) -> Acked {
    let mut child = Command::new(exe);
    child
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("AIRLOCK_CRASH_CHILD", dir)
        .env("AIRLOCK_CRASH_RUN", run.to_string());
    if threaded {
        child.env("AIRLOCK_CRASH_SYNC_THREAD", "1");
    }
    let mut child = child.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || read_acked(BufReader::new(stdout)));
    let started = Instant::now();
    while started.elapsed() < alive {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("run {run}: the child stopped by itself ({status}):\n{err}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

/// The child's acknowledgements. Only whole lines count: the kill can cut the child's last
/// write to the pipe anywhere (a write of more than 4 KiB to a full pipe is not atomic), and
/// `h 2000012345 1234` cut to `h 2000012345 12` would claim a value never acknowledged.
fn read_acked(mut from: impl BufRead) -> Acked {
    let mut acked = Acked { records: Vec::new(), samples: Vec::new() };
    let mut line = Vec::new();
    loop {
        line.clear();
        match from.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.last() != Some(&b'\n') => break,
            Ok(_) => {}
        }
        let Ok(text) = std::str::from_utf8(&line[..line.len() - 1]) else { continue };
        let parts: Vec<&str> = text.split(' ').collect();
        match parts.as_slice() {
            ["o", c, s, p] if p.starts_with("run") && p.matches('-').count() == 2 => {
                if let (Ok(c), Ok(s)) = (c.parse(), s.parse()) {
                    acked.records.push((c, s, (*p).to_owned()));
                }
            }
            ["h", t, v] => {
                if let (Ok(t), Ok(v)) = (t.parse(), v.parse()) {
                    acked.samples.push((t, v));
                }
            }
            _ => {}
        }
    }
    acked
}

#[test]
fn a_line_cut_by_the_kill_is_not_taken_as_an_acknowledgement() {
    let cut = read_acked(&b"h 1000000005 1234\no 3 7 run0-rec1-2\nh 1000000006 12"[..]);
    assert_eq!(cut.samples, vec![(1_000_000_005, 1234)]);
    assert_eq!(cut.records, vec![(3, 7, "run0-rec1-2".to_owned())]);
    let cut = read_acked(&b"o 3 7 run0-rec1-2\no 3 8 run0-rec1-1"[..]);
    assert_eq!(cut.records.len(), 1, "a payload cut to another payload's shape is not taken");
}

#[test]
fn kill_nine_loses_nothing_acknowledged() {
    kill_nine(false);
}

/// The same with the stores' sync threads (as the gateway runs them): a record or sample is
/// acknowledged once the sync thread has synced it (by watermark), not when a commit returns.
#[test]
fn kill_nine_loses_nothing_acknowledged_with_sync_threads() {
    kill_nine(true);
}

fn kill_nine(threaded: bool) {
    if std::env::var("AIRLOCK_CRASH_CHILD").is_ok() {
        return;
    }
    let kills = if std::env::var("AIRLOCK_SLOW_TESTS").is_ok() { 240 } else { 24 };
    let dir = std::env::temp_dir().join(format!("airlock-crash-{threaded}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let exe = std::env::current_exe().unwrap();
    let mut records = Vec::new();
    let mut samples = Vec::new();
    let mut seed = 0x5eed_u64;
    for run in 0..kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let alive = Duration::from_millis(100 + seed % 400);
        let acked = run_and_kill(&exe, &dir, run, alive, threaded);
        records.extend(acked.records);
        samples.extend(acked.samples);
    }

    let (_writer, reader) = OutboxWriter::open(&dir.join("outbox"), outbox_config(threaded)).unwrap();
    let held = reader.read_encoded(&Position::default(), usize::MAX).unwrap();
    let mut by_id: BTreeMap<(usize, u64), String> = BTreeMap::new();
    let mut by_payload: HashMap<String, (usize, u64)> = HashMap::new();
    let mut last_seq = [0u64; 4];
    for r in &held {
        let (c, s) = (r.id.class as usize, r.id.seq);
        assert!(s > last_seq[c], "class {c}: seq {s} after {} (order)", last_seq[c]);
        last_seq[c] = s;
        if r.bytes.first() == Some(&airlock_upstream::FORMAT_VERSION) {
            continue; // the outbox's own recovery events, typed records
        }
        let payload = String::from_utf8(r.bytes.clone()).unwrap();
        assert!(by_payload.insert(payload.clone(), (c, s)).is_none(), "{payload} stored twice");
        by_id.insert((c, s), payload);
    }
    for (c, s, p) in &records {
        assert_eq!(by_id.get(&(*c, *s)), Some(p), "acknowledged record {c}:{s} ({p}) lost or changed");
    }

    let (_hw, hr) = HistorianWriter::open(&dir.join("historian"), historian_config(threaded)).unwrap();
    let stored = hr.raw(TAG, Timestamp(0), Timestamp(i64::MAX / 2)).unwrap();
    let stored: HashMap<i64, f64> = stored.into_iter().map(|s| (s.time.as_millis(), s.value.unwrap())).collect();
    for (t, v) in &samples {
        assert_eq!(stored.get(t), Some(&(*v as f64)), "acknowledged sample at {t} lost");
    }
    assert!(
        records.len() > 1000 && samples.len() > 1000,
        "{} records, {} samples acknowledged",
        records.len(),
        samples.len()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
