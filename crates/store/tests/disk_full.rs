//! A full disk: the outbox and the historian run on a 4 MiB tmpfs the test mounts, until writes
//! fail. The error is clear (names the file, says the disk is full), nothing panics, memory
//! stays bounded (what could not be written is discarded and counted), what was committed
//! before stays readable, and writing resumes once space frees. The outbox never gives an id
//! twice, and reports every record lost to the full disk in a gap event once space is back.
//!
//! Mounting needs root (or CAP_SYS_ADMIN), which the CI machine and the test command have.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use airlock_model::{Sample, TagId, Timestamp, Value};
use airlock_store::{
    Class, FsyncPolicy, HistorianConfig, HistorianWriter, OutboxConfig, OutboxWriter, Position, StoreError,
};
use airlock_upstream::{GapCause, GapRecord, Upstream};

/// A tmpfs mounted for one test, unmounted when dropped. One at a time: a test that starts
/// `mount` or `umount` while another has a file open lends that file to the child until it
/// execs, and the other test, having closed and deleted its ballast or closed its historian,
/// then found the disk still full, or the folder still locked (seen once in about ten runs).
struct SmallDisk(PathBuf, #[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl SmallDisk {
    fn mount(name: &str, size: &str) -> Self {
        // A test that failed holding it poisoned it; the next may still run.
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dir = std::env::temp_dir().join(format!("airlock-full-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting a tmpfs for the disk-full test needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir, turn)
    }

    /// Fills the disk to the last byte with a file (of 8 MiB at most), to be deleted later to
    /// free space.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.0.join("ballast");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0xaa; 64 << 10];
        for _ in 0..128 {
            if f.write_all(&block).is_err() {
                break;
            }
        }
        path
    }

    /// Fills the disk with a file of `bytes`, to be deleted later to free space.
    fn ballast(&self, bytes: usize) -> PathBuf {
        let path = self.0.join("ballast");
        std::fs::write(&path, vec![0xaa; bytes]).unwrap();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_clear(e: &StoreError, dir: &Path) {
    assert!(e.is_disk_full(), "{e}");
    let text = e.to_string();
    assert!(text.contains(dir.to_str().unwrap()), "the error names the file: {text}");
    assert!(text.contains("No space left on device"), "{text}");
}

#[test]
fn the_outbox_survives_a_full_disk_and_resumes() {
    let disk = SmallDisk::mount("outbox", "4m");
    let ballast = disk.ballast(2 << 20);
    let dir = disk.0.join("outbox");
    let config = OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["s".into()],
        ..OutboxConfig::default()
    };
    let (mut writer, reader) = OutboxWriter::open(&dir, config).unwrap();
    let payload = vec![b'x'; 1000];
    let mut committed = 0u64;
    let mut failure = None;
    for i in 0..10_000 {
        writer.append_encoded(Class::Raw, Timestamp(i), &payload).unwrap();
        match writer.commit() {
            Ok(p) => committed = p.0[Class::Raw as usize],
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a 4 MiB disk with 2 MiB of ballast never filled");
    assert_clear(&failure, &dir);
    // It keeps failing cleanly while full, three records a commit; nothing piles up in memory.
    // Every record that got an id counts: none of them may vanish unreported.
    // (An append refused outright gives no id; a commit may still succeed now and then: the
    // small gap event fits where a record of a kilobyte does not.)
    let mut given = Vec::new();
    let mut refused = 0;
    for i in 0..200 {
        for _ in 0..3 {
            match writer.append_encoded(Class::Raw, Timestamp(i), &payload) {
                Ok(id) => given.push(id.seq),
                Err(e) => {
                    assert_clear(&e, &dir);
                    refused += 1;
                }
            }
        }
        refused += usize::from(writer.commit().is_err());
    }
    assert!(refused > 300, "only {refused} appends and commits of 800 failed on a full disk");
    let held = reader.read(&Position::default(), usize::MAX).unwrap();
    let raw_held = held.iter().filter(|r| r.id.class == Class::Raw).count() as u64;
    assert_eq!(raw_held, committed, "what was committed before the disk filled is all there");
    std::fs::remove_file(ballast).unwrap();
    for i in 0..100 {
        writer.append_encoded(Class::Raw, Timestamp(i), &payload).unwrap();
        writer.commit().unwrap();
    }
    let held = reader.read(&Position::default(), usize::MAX).unwrap();
    let raw: Vec<u64> = held.iter().filter(|r| r.id.class == Class::Raw).map(|r| r.id.seq).collect();
    assert_eq!(raw.len() as u64, committed + 100);
    assert!(raw.windows(2).all(|w| w[1] > w[0]), "ids only grow");
    // Before, an id given to a record lost with its commit was given again to the next record.
    for seq in &given {
        assert!(!raw.contains(seq), "id r{seq} was given to a lost record and again to a stored one");
    }
    // Every lost record is accounted for by gap events, once space is back.
    let gaps: Vec<&GapRecord> = held
        .iter()
        .filter_map(|r| match &r.record {
            Upstream::Gap(g) if g.cause == GapCause::WriteFailed => Some(g),
            _ => None,
        })
        .collect();
    let stats = writer.stats();
    let lost_raw: u64 = gaps.iter().filter(|g| &*g.class == "raw").map(|g| g.records).sum();
    assert_eq!(lost_raw, stats.dropped_write[Class::Raw as usize]);
    assert!(lost_raw >= given.len() as u64, "{lost_raw} lost reported, {} ids given while full", given.len());
    let missing = raw.last().unwrap() - committed - 100;
    assert_eq!(lost_raw, missing, "the holes in the ids are exactly the records reported lost");
}

/// Incompressible values, so that the disk fills.
fn noise(t: i64) -> f64 {
    // splitmix64's finalizer: neighbouring inputs give unrelated outputs.
    let mut x = (t as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    f64::from_bits((x >> 12) | 0x3ff0_0000_0000_0000)
}

#[test]
fn the_historian_survives_a_full_disk_within_its_memory_bound() {
    let disk = SmallDisk::mount("historian", "4m");
    let ballast = disk.ballast(2 << 20);
    let dir = disk.0.join("historian");
    let config = HistorianConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        head_samples_max: 10_000,
        wal_bytes_max: 256 << 10,
        ..HistorianConfig::default()
    };
    let (mut writer, reader) = HistorianWriter::open(&dir, config).unwrap();
    writer.bind_tags(&["acme/t"]).unwrap();
    let mut t = 0i64;
    let batch = |t: &mut i64| -> Vec<Sample> {
        (0..100)
            .map(|_| {
                *t += 1;
                Sample::good(TagId(0), Value::F64(noise(*t)), Timestamp::from_millis(*t))
            })
            .collect()
    };
    let mut failures = 0;
    let mut first = None;
    for _ in 0..5_000 {
        let samples = batch(&mut t);
        let result = writer.append(&samples).and_then(|()| writer.commit().map(|_| ()));
        if let Err(e) = result {
            failures += 1;
            first.get_or_insert(e);
        }
        if failures > 300 {
            break;
        }
    }
    let stats = writer.stats();
    assert_clear(first.as_ref().unwrap_or_else(|| panic!("the disk never filled: {stats:?}")), &dir);
    let stats = writer.stats();
    assert!(stats.samples_lost > 0, "heads were let go at their bound: {stats:?}");
    std::fs::remove_file(ballast).unwrap();
    let resumed_from = t;
    for _ in 0..50 {
        let samples = batch(&mut t);
        writer.append(&samples).unwrap();
        writer.commit().unwrap();
    }
    writer.checkpoint().unwrap();
    let after = reader.raw("acme/t", Timestamp::from_millis(resumed_from + 1), Timestamp::from_millis(t + 1)).unwrap();
    assert_eq!(after.len(), 5000, "every sample after space freed is stored");
    assert!(
        !reader.raw("acme/t", Timestamp(0), Timestamp::from_millis(1000)).unwrap().is_empty(),
        "samples from before the failure stay"
    );
}

#[test]
fn the_outbox_keeps_the_file_systems_free_space_reserve() {
    use airlock_store::space::{FreeSpace, free_bytes};
    use std::sync::Arc;
    let disk = SmallDisk::mount("reserve", "4m");
    let _ballast = disk.ballast(2 << 20);
    let dir = disk.0.join("outbox");
    let reserve = 1 << 20;
    let config = OutboxConfig {
        bytes_max: 2 << 20,
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["s".into()],
        space: Some(Arc::new(FreeSpace::new(&dir, reserve))),
        ..OutboxConfig::default()
    };
    let (mut writer, reader) = OutboxWriter::open(&dir, config).unwrap();
    let payload = vec![b'x'; 1000];
    let mut lowest_free = u64::MAX;
    // 2.4 MB in bursts: the disk has 2 MB free, of which 1 MB is the reserve.
    for burst in 0..40 {
        for i in 0..60 {
            writer.append_encoded(Class::Raw, Timestamp(burst * 60 + i), &payload).unwrap();
        }
        writer.commit().expect("no write fails: the reserve is kept before the disk fills");
        lowest_free = lowest_free.min(free_bytes(&disk.0).unwrap());
        std::thread::sleep(Duration::from_millis(110));
    }
    let stats = writer.stats();
    assert!(stats.dropped_full[Class::Raw as usize] > 0, "the oldest raw records made room: {stats:?}");
    assert!(lowest_free > reserve / 2, "only {lowest_free} bytes were left free");
    let held = reader.read(&Position::default(), usize::MAX).unwrap();
    assert!(held.iter().any(|r| matches!(&r.record, Upstream::Gap(_))), "the drops are reported");
    let newest = held.iter().filter(|r| r.id.class == Class::Raw).map(|r| r.id.seq).max();
    assert_eq!(newest, Some(2400), "the newest records are kept");
}

/// Ids lost to a full disk, reported in a gap event, are never given again, not even after a
/// restart that comes before the next record (the log starts its next segment past them).
#[test]
fn ids_lost_to_a_full_disk_stay_used_across_a_restart() {
    let disk = SmallDisk::mount("restart", "4m");
    let ballast = disk.ballast(2 << 20);
    let dir = disk.0.join("outbox");
    let config = || OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["s".into()],
        ..OutboxConfig::default()
    };
    let (mut writer, _reader) = OutboxWriter::open(&dir, config()).unwrap();
    let payload = vec![b'x'; 1000];
    let mut lost = Vec::new();
    for i in 0..10_000 {
        let id = writer.append_encoded(Class::Raw, Timestamp(i), &payload).unwrap();
        if writer.commit().is_err() {
            lost.push(id.seq);
            break;
        }
    }
    assert_eq!(lost.len(), 1, "a 4 MiB disk with 2 MiB of ballast never filled");
    std::fs::remove_file(ballast).unwrap();
    // Space is back: this commit writes the gap event naming the lost id. Then a restart.
    writer.commit().unwrap();
    drop(writer);
    drop(_reader);
    let (mut writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
    let next = writer.append_encoded(Class::Raw, Timestamp(20_000), &payload).unwrap();
    writer.commit().unwrap();
    assert!(next.seq > lost[0], "id r{} was reported lost and given again after a restart", next.seq);
    let held = reader.read(&Position::default(), usize::MAX).unwrap();
    let gap = held.iter().find_map(|r| match &r.record {
        Upstream::Gap(g) if g.cause == GapCause::WriteFailed => Some(g.clone()),
        _ => None,
    });
    let gap = gap.expect("the gap event was committed");
    assert_eq!(&*gap.first_id, format!("r{}", lost[0]), "{gap:?}");
}

/// A sink that acknowledged records the disk then lost (the last record went bad and is cut at
/// open) is past the log's end: numbers go on after its position, which takes a new segment.
/// On a full disk that segment cannot be made: it is made before the next record, not at open,
/// so the outbox still opens and what it holds is read; no number at or below the sink's is
/// given, and once there is room the next record is numbered past it.
#[test]
fn a_sink_past_the_logs_end_does_not_keep_an_outbox_on_a_full_disk_from_opening() {
    let disk = SmallDisk::mount("skip", "4m");
    let dir = disk.0.join("outbox");
    let config = || OutboxConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        sinks: vec!["s".into()],
        ..OutboxConfig::default()
    };
    const PAYLOAD: usize = 40;
    {
        let (mut writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
        for i in 0..10 {
            writer.append_encoded(Class::Raw, Timestamp(i), &[i as u8; PAYLOAD]).unwrap();
        }
        writer.commit().unwrap();
        reader.ack("s", airlock_store::RecordId { class: Class::Raw, seq: 10 }).unwrap();
        reader.persist_cursors().unwrap();
    }
    // Record 10's checksum goes bad (8 bytes of magic, then 24 of header and 40 a record).
    let segment = std::fs::read_dir(dir.join("raw"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[8 + 9 * (24 + PAYLOAD) + 4] ^= 0xff;
    std::fs::write(&segment, bytes).unwrap();
    let ballast = disk.fill();
    let (mut writer, reader) = OutboxWriter::open(&dir, config()).expect("the outbox opens on a full disk");
    let held = reader.read_encoded(&Position::default(), usize::MAX).unwrap();
    let raw: Vec<u64> = held.iter().filter(|r| r.id.class == Class::Raw).map(|r| r.id.seq).collect();
    assert_eq!(raw, (1..=9).collect::<Vec<u64>>());
    let first = writer.append_encoded(Class::Raw, Timestamp(10), &[0xbb; PAYLOAD]).and_then(|id| {
        writer.commit()?;
        Ok(id)
    });
    if let Ok(id) = &first {
        assert!(id.seq > 10, "r{} given on a full disk", id.seq);
    }
    std::fs::remove_file(&ballast).unwrap();
    let id = writer.append_encoded(Class::Raw, Timestamp(11), &[0xcc; PAYLOAD]).unwrap();
    writer.commit().unwrap();
    assert!(id.seq > 10, "r{} given again: the sink is past it", id.seq);
    let waiting = reader.read_encoded(&reader.position("s").unwrap(), usize::MAX).unwrap();
    assert!(waiting.iter().any(|r| r.id == id), "the new record waits for the sink");
}

/// A historian folder from before the `FORMAT` file, opened on a full disk: the gateway starts
/// (the folder cannot be newer than this build, so only the mark waits), and the mark is
/// written at the first start with room.
#[test]
fn a_full_disk_does_not_keep_an_old_folder_from_opening() {
    let disk = SmallDisk::mount("format", "4m");
    let dir = disk.0.join("historian");
    let config = HistorianConfig { fsync: FsyncPolicy::Interval(Duration::ZERO), ..HistorianConfig::default() };
    {
        let (mut w, _) = HistorianWriter::open(&dir, config.clone()).unwrap();
        w.bind_tags(&["plant/a"]).unwrap();
        w.append(&[Sample::good(TagId(0), Value::F64(1.5), Timestamp::from_millis(1_000))]).unwrap();
        w.sync().unwrap();
    }
    std::fs::remove_file(dir.join("FORMAT")).unwrap();
    let ballast = disk.fill();
    {
        let (_w, r) = HistorianWriter::open(&dir, config.clone()).unwrap();
        assert!(!dir.join("FORMAT").exists() && !dir.join("FORMAT.tmp").exists());
        assert_eq!(r.raw("plant/a", Timestamp::from_millis(0), Timestamp::from_millis(2_000)).unwrap().len(), 1);
    }
    std::fs::remove_file(&ballast).unwrap();
    drop(HistorianWriter::open(&dir, config).unwrap());
    assert_eq!(std::fs::read_to_string(dir.join("FORMAT")).unwrap(), "airlock-historian 5\n");
}
