//! Corrupt bytes in real store files, flipped by the test while the store runs or before it
//! opens: a record whose length, checksum or sequence number went bad is skipped and counted,
//! the reader re-synchronises on the next valid record (before, a bad length hid every record
//! after it, or stopped the reader with an error for good); a corrupt cursor file no longer
//! stops the outbox from opening: that sink starts again from the oldest record held.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_model::Timestamp;
use airlock_store::{Class, FsyncPolicy, OutboxConfig, OutboxWriter, Position};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-corrupt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config() -> OutboxConfig {
    OutboxConfig { fsync: FsyncPolicy::Interval(Duration::ZERO), sinks: vec!["s".into()], ..OutboxConfig::default() }
}

const PAYLOAD: usize = 40;
const FRAME: usize = 24 + PAYLOAD;
const MAGIC: usize = 8;

/// The raw class's only segment file.
fn segment(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(dir.join("raw")).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "seg"));
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

/// Overwrites bytes `at..` of `file` with `bytes`.
fn poke(file: &Path, at: usize, bytes: &[u8]) {
    let mut content = std::fs::read(file).unwrap();
    content[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(file, content).unwrap();
}

/// 100 raw records of 40 bytes, committed; the seq numbers of what a fresh reader reads.
fn seqs_read(reader: &airlock_store::OutboxReader) -> Vec<u64> {
    reader.read_encoded(&Position::default(), usize::MAX).unwrap().iter().map(|r| r.id.seq).collect()
}

#[test]
fn a_record_gone_bad_on_disk_is_skipped_and_reading_goes_on_past_it() {
    // (field, offset in the frame, bytes): a length within bounds but wrong, a length past any
    // bound, a flipped checksum, a sequence number from far ahead.
    let cases: [(&str, usize, &[u8]); 5] = [
        ("length", 0, &(PAYLOAD as u32 + 7).to_le_bytes()),
        // Within the allowed length but past the end of the file: the read meets the end.
        ("length past the end", 0, &(1u32 << 20).to_le_bytes()),
        ("huge length", 0, &u32::MAX.to_le_bytes()),
        ("checksum", 4, &[0xde, 0xad, 0xbe, 0xef]),
        ("sequence", 8, &(1u64 << 60).to_le_bytes()),
    ];
    for (what, field, bytes) in cases {
        let dir = temp(&format!("read-{}", what.replace(' ', "-")));
        let (mut writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
        for i in 0..100 {
            writer.append_encoded(Class::Raw, Timestamp(i), &[i as u8; PAYLOAD]).unwrap();
        }
        writer.commit().unwrap();
        assert_eq!(seqs_read(&reader).len(), 100);
        // Record 31 (the 31st, seq 31) goes bad under the running outbox.
        poke(&segment(&dir), MAGIC + 30 * FRAME + field, bytes);
        let read = seqs_read(&reader);
        let expected: Vec<u64> = (1..=100).filter(|s| *s != 31).collect();
        assert_eq!(read, expected, "{what}: every record but the bad one is read");
        assert_eq!(reader.stats().corrupt_reads, 1, "{what}");
        // A reader starting past it, and one starting just at it, read on too.
        let from_40: Vec<u64> =
            reader.read_encoded(&Position([0, 0, 0, 39]), 10).unwrap().iter().map(|r| r.id.seq).collect();
        assert_eq!(from_40, (40..50).collect::<Vec<u64>>(), "{what}");
        let from_31: Vec<u64> =
            reader.read_encoded(&Position([0, 0, 0, 30]), 3).unwrap().iter().map(|r| r.id.seq).collect();
        assert_eq!(from_31, [32, 33, 34], "{what}");
        drop((writer, reader));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_corrupt_cursor_file_falls_back_to_the_oldest_record_held() {
    let dir = temp("cursor");
    {
        let (mut writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
        for i in 0..20 {
            writer.append_encoded(Class::Raw, Timestamp(i), &[1; PAYLOAD]).unwrap();
        }
        writer.commit().unwrap();
        reader.ack("s", airlock_store::RecordId { class: Class::Raw, seq: 15 }).unwrap();
        reader.persist_cursors().unwrap();
    }
    let cursor = dir.join("cursors/s.cursor");
    for (at, bytes) in [(0usize, &[0xffu8; 3][..]), (33, &[0x00][..])] {
        poke(&cursor, at, bytes);
        let (_writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
        assert_eq!(reader.stats().corrupt_cursors, 1);
        assert_eq!(reader.position("s").unwrap(), Position::default(), "duplicates, never loss");
        assert_eq!(reader.read_encoded(&reader.position("s").unwrap(), usize::MAX).unwrap().len(), 20);
    }
    // A cursor file cut short (a torn write) too.
    std::fs::write(&cursor, [1, 2, 3]).unwrap();
    let (_writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
    assert_eq!(reader.stats().corrupt_cursors, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The segment files of `log` (`chunks` or `wal`) of a historian, oldest first.
fn segments_of(dir: &Path, log: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(log))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

#[test]
fn a_historian_with_a_corrupt_chunk_and_wal_record_opens_and_keeps_the_rest() {
    use airlock_model::{Sample, TagId, Value};
    use airlock_store::{HistorianConfig, HistorianWriter};
    let dir = temp("historian");
    let config = || HistorianConfig { fsync: FsyncPolicy::Interval(Duration::ZERO), ..HistorianConfig::default() };
    {
        let (mut writer, _reader) = HistorianWriter::open(&dir, config()).unwrap();
        writer.bind_tags(&["acme/line3/press1/speed"]).unwrap();
        for part in 0..3i64 {
            let samples: Vec<Sample> = (0..100)
                .map(|i| Sample::good(TagId(0), Value::F64(i as f64), Timestamp::from_millis(part * 1000 + i)))
                .collect();
            writer.append(&samples).unwrap();
            writer.commit().unwrap();
            if part < 2 {
                writer.checkpoint().unwrap();
            }
        }
    }
    // The first chunk's tag number becomes 0xfffffff0. Before, opening trusted it (no checksum
    // was checked on that path) and sized the tag tables to four billion entries.
    let chunks = segments_of(&dir, "chunks");
    poke(&chunks[0], MAGIC + 24 + 1, &0xffff_fff0u32.to_le_bytes());
    let (_writer, reader) = HistorianWriter::open(&dir, config()).unwrap();
    let kept = reader.raw("acme/line3/press1/speed", Timestamp(0), Timestamp::from_millis(10_000)).unwrap();
    let times: Vec<i64> = kept.iter().map(|s| s.time.as_millis()).collect();
    assert_eq!(times, (1000..1100).chain(2000..2100).collect::<Vec<i64>>(), "all but the corrupt chunk");
    drop((_writer, reader));

    // A WAL record whose length went bad: the historian still opens.
    let wal = segments_of(&dir, "wal");
    let last = wal.last().unwrap();
    poke(last, MAGIC, &u32::MAX.to_le_bytes());
    let (writer, _reader) = HistorianWriter::open(&dir, config()).unwrap();
    assert!(writer.stats().recovery.corrupt_records + writer.stats().corrupt_reads >= 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_empty_segment_between_two_others_is_read_past() {
    // A write that failed right after a roll leaves an empty segment behind a later one (the
    // next append starts a new segment past the lost numbers). Before, a read that started in
    // the empty one never moved on, holding the outbox's lock for ever.
    use airlock_store::log::Log;
    let source = temp("segments-source");
    let dir = temp("segments-gap");
    {
        let mut log = Log::open(&source, 1).unwrap(); // every commit rolls: a segment per record
        for i in 0..12 {
            log.append(Timestamp(i), &[i as u8; 8]).unwrap();
            log.commit(false).unwrap();
        }
    }
    std::fs::create_dir_all(&dir).unwrap();
    for seq in [1, 2, 3, 10, 11, 12] {
        let name = format!("{seq:020}.seg");
        std::fs::copy(source.join(&name), dir.join(&name)).unwrap();
    }
    std::fs::write(dir.join(format!("{:020}.seg", 4)), airlock_store::log::MAGIC).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let log = Log::open_read_only(&dir).unwrap();
        let seqs: Vec<u64> = log.read(4, 100, 1 << 20).unwrap().iter().map(|r| r.seq).collect();
        done_tx.send(()).unwrap();
        seqs
    });
    assert!(done_rx.recv_timeout(Duration::from_secs(10)).is_ok(), "the read did not return in 10 s");
    assert_eq!(reader.join().unwrap(), [10, 11, 12]);
    let _ = std::fs::remove_dir_all(&source);
}

#[test]
fn a_dashboards_look_at_the_lag_counts_and_changes_nothing() {
    // Found by review: the dashboard's lag read (every 2 s) re-counted a corrupt record next
    // to a stalled sink as a new corrupt read each time, and so sent store_corrupt events.
    let dir = temp("view");
    let (mut writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
    for i in 0..100 {
        writer.append_encoded(Class::Raw, Timestamp(1000 + i), &[i as u8; PAYLOAD]).unwrap();
    }
    writer.commit().unwrap();
    let view = reader.view();
    assert_eq!(view.oldest_waiting("s").unwrap(), Some(Timestamp(1000)));
    reader.ack("s", airlock_store::RecordId { class: Class::Raw, seq: 30 }).unwrap();
    assert_eq!(view.oldest_waiting("s").unwrap(), Some(Timestamp(1030)));
    // Record 31, the next the sink waits for, goes bad: the look passes it quietly.
    poke(&segment(&dir), MAGIC + 30 * FRAME + 4, &[0xde, 0xad, 0xbe, 0xef]);
    for _ in 0..5 {
        assert_eq!(view.oldest_waiting("s").unwrap(), Some(Timestamp(1031)));
    }
    assert_eq!(reader.stats().corrupt_reads, 0, "a look counts nothing");
    reader.ack("s", airlock_store::RecordId { class: Class::Raw, seq: 100 }).unwrap();
    assert_eq!(view.oldest_waiting("s").unwrap(), None);
    drop((writer, reader));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The last record goes bad after its sink acknowledged it: the outbox opens with its log cut
/// back before it. The next record used to get the same number again: the sink, past that
/// number already, never read it (a synced record lost), and one id named two records. The
/// log now goes on after the highest number a sink has acknowledged, also after a start that
/// appended nothing.
#[test]
fn a_damaged_last_record_does_not_give_its_number_again() {
    let dir = temp("tail-id");
    {
        let (mut writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
        for i in 0..10 {
            writer.append_encoded(Class::Raw, Timestamp(i), &[i as u8; PAYLOAD]).unwrap();
        }
        writer.commit().unwrap();
        reader.ack("s", airlock_store::RecordId { class: Class::Raw, seq: 10 }).unwrap();
        reader.persist_cursors().unwrap();
    }
    poke(&segment(&dir), MAGIC + 9 * FRAME + 4, &[0xde, 0xad, 0xbe, 0xef]);
    // A start that appends no raw record makes no segment for the skipped numbers (the skip is
    // taken at the next record): the start after it skips again, from the sink's position.
    drop(OutboxWriter::open(&dir, config()).unwrap());
    let (mut writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
    let id = writer.append_encoded(Class::Raw, Timestamp(10), &[0xaa; PAYLOAD]).unwrap();
    writer.commit().unwrap();
    assert!(id.seq > 10, "r{} given again", id.seq);
    let waiting = reader.read_encoded(&reader.position("s").unwrap(), usize::MAX).unwrap();
    let ids: Vec<u64> = waiting.iter().filter(|r| r.id.class == Class::Raw).map(|r| r.id.seq).collect();
    assert_eq!(ids, [id.seq], "the new record is waiting for the sink");
    drop((writer, reader));
    // And after another start, the numbers go on from there.
    let (mut writer, _reader) = OutboxWriter::open(&dir, config()).unwrap();
    assert!(writer.append_encoded(Class::Raw, Timestamp(11), &[0xbb; PAYLOAD]).unwrap().seq > id.seq);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A segment whose first eight bytes (its magic) went bad, records intact behind them: the
/// records are kept, and the magic written again. Taken for a segment torn before its magic,
/// the file was rewritten empty (the last segment) or deleted (any other): up to 8 MiB of
/// synced records gone for eight bad bytes.
#[test]
fn a_damaged_magic_loses_no_record_behind_it() {
    let dir = temp("magic");
    {
        let (mut writer, _reader) = OutboxWriter::open(&dir, config()).unwrap();
        for i in 0..20 {
            writer.append_encoded(Class::Raw, Timestamp(i), &[i as u8; PAYLOAD]).unwrap();
        }
        writer.commit().unwrap();
    }
    poke(&segment(&dir), 0, b"XXXXXXXX");
    let (_writer, reader) = OutboxWriter::open(&dir, config()).unwrap();
    let all = reader.read_encoded(&Position::default(), usize::MAX).unwrap();
    let raw: Vec<u64> = all.iter().filter(|r| r.id.class == Class::Raw).map(|r| r.id.seq).collect();
    assert_eq!(raw, (1..=20).collect::<Vec<u64>>());
    assert_eq!(reader.stats().corrupt_records, 1, "the magic, counted (and said by a recovery event)");
    assert_eq!(&std::fs::read(segment(&dir)).unwrap()[..MAGIC], airlock_store::log::MAGIC, "written again");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same in a segment that is neither the first nor the last (segments of 4 KiB: 64 KiB of
/// budget), and in the first and the last at once: every record is read, in order.
#[test]
fn a_damaged_magic_in_any_segment_loses_no_record() {
    let dir = temp("magic-any");
    let config = OutboxConfig { bytes_max: 64 << 10, ..config() };
    {
        let (mut writer, _reader) = OutboxWriter::open(&dir, config.clone()).unwrap();
        for i in 0..300 {
            writer.append_encoded(Class::Raw, Timestamp(i), &[i as u8; PAYLOAD]).unwrap();
            writer.commit().unwrap();
        }
    }
    let files = segments_of(&dir, "raw");
    assert!(files.len() >= 4, "{} segments", files.len());
    let damaged = [files[1].clone(), files[0].clone(), files[files.len() - 1].clone()];
    for (round, file) in damaged.iter().enumerate() {
        poke(file, 0, b"XXXXXXXX");
        if round == 1 {
            continue; // the first and the last together, in the next round
        }
        let (_writer, reader) = OutboxWriter::open(&dir, config.clone()).unwrap();
        let all = reader.read_encoded(&Position::default(), usize::MAX).unwrap();
        let raw: Vec<u64> = all.iter().filter(|r| r.id.class == Class::Raw).map(|r| r.id.seq).collect();
        assert_eq!(raw, (1..=300).collect::<Vec<u64>>(), "round {round}");
        assert_eq!(reader.stats().corrupt_records, if round == 0 { 1 } else { 2 }, "round {round}");
        for f in &damaged[..=round] {
            assert_eq!(&std::fs::read(f).unwrap()[..MAGIC], airlock_store::log::MAGIC, "{} written again", f.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
