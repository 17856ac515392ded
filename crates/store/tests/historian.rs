//! The historian against a simple reference (a `BTreeMap` of samples per tag) under random
//! sequences of append, commit, checkpoint, restart and crash; its aggregates and interpolation
//! against values computed here independently (millisecond by millisecond); and retention.

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_model::{Quality, Reason, Sample, TagId, Timestamp, Value};
use airlock_store::historian::Codec;
use airlock_store::{FsyncPolicy, HistorianConfig, HistorianReader, HistorianWriter};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("airlock-historian-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PATHS: [&str; 3] = ["acme/a/press1/speed", "acme/a/press1/temperature", "acme/a/press2/parts"];

fn config(codec: Codec) -> HistorianConfig {
    HistorianConfig {
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        wal_bytes_max: 4 << 10,
        codec,
        ..HistorianConfig::default()
    }
}

fn open(dir: &Path, codec: Codec) -> (HistorianWriter, HistorianReader) {
    let (mut w, r) = HistorianWriter::open(dir, config(codec)).unwrap();
    w.bind_tags(&PATHS).unwrap();
    (w, r)
}

type Reference = BTreeMap<usize, Vec<(i64, Option<f64>, Quality)>>;

fn all(reader: &HistorianReader, tag: usize) -> Vec<(i64, Option<f64>, Quality)> {
    let raw = reader.raw(PATHS[tag], Timestamp(i64::MIN / 2), Timestamp(i64::MAX / 2)).unwrap();
    raw.into_iter().map(|s| (s.time.as_millis(), s.value, s.quality)).collect()
}

fn run_sequence(seed: u64, dir: &Path, codec: Codec) {
    let _ = std::fs::remove_dir_all(dir);
    let mut rng = Rng(seed | 1);
    let (mut writer, mut reader) = open(dir, codec);
    let mut committed: Reference = BTreeMap::new();
    let mut pending: Reference = BTreeMap::new();
    let mut clock = [1_700_000_000_000i64; 3];
    for step in 0..120 {
        let op = rng.below(100);
        let context = format!("{codec:?} seed {seed} step {step} op {op}");
        match op {
            0..=54 => {
                let mut batch = Vec::new();
                for _ in 0..rng.below(20) {
                    let tag = rng.below(3) as usize;
                    clock[tag] += 1 + rng.below(1000) as i64;
                    let (value, quality) = match rng.below(10) {
                        0 => (None, Quality::Bad(Reason::Timeout)),
                        1 => (Some(Value::I64(7)), Quality::Uncertain(Reason::Stale)),
                        _ => (Some(Value::F64((rng.below(100_000) as f64) / 7.0)), Quality::Good),
                    };
                    let expected = quality.is_good().then(|| value.as_ref().and_then(Value::as_f64)).flatten();
                    pending.entry(tag).or_default().push((clock[tag], expected, quality));
                    batch.push(Sample {
                        tag: TagId(tag as u32),
                        value,
                        quality,
                        source_time: None,
                        gateway_time: Timestamp::from_millis(clock[tag]),
                    });
                }
                writer.append(&batch).unwrap();
            }
            55..=74 => {
                writer.commit().unwrap();
                for (tag, mut rows) in std::mem::take(&mut pending) {
                    committed.entry(tag).or_default().append(&mut rows);
                }
            }
            75..=84 => {
                writer.checkpoint().unwrap();
                for (tag, mut rows) in std::mem::take(&mut pending) {
                    committed.entry(tag).or_default().append(&mut rows);
                }
            }
            85..=92 => {
                writer.sync().unwrap();
                drop((writer, reader));
                (writer, reader) = open(dir, codec);
                for (tag, mut rows) in std::mem::take(&mut pending) {
                    committed.entry(tag).or_default().append(&mut rows);
                }
            }
            _ => {
                // A crash: what was appended but never committed is gone, nothing else.
                drop((writer, reader));
                (writer, reader) = open(dir, codec);
                pending.clear();
                for (tag, rows) in committed.iter() {
                    clock[*tag] = clock[*tag].max(rows.last().map_or(0, |r| r.0));
                }
            }
        }
        for tag in 0..3 {
            let mut expected = committed.get(&tag).cloned().unwrap_or_default();
            expected.extend(pending.get(&tag).cloned().unwrap_or_default());
            assert_eq!(all(&reader, tag), expected, "{context}: tag {tag}");
        }
    }
    drop((writer, reader));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn random_operations_match_the_reference() {
    let dir = temp("model");
    for seed in 1..=25 {
        run_sequence(seed * 0x2545_f491, &dir, Codec::Pco);
        run_sequence(seed * 0x9e37_79b9, &dir, Codec::Gorilla);
    }
}

/// A series with gaps, bad stretches and irregular spacing, committed and checkpointed.
fn series(dir: &Path) -> (HistorianReader, Vec<(i64, f64, bool)>) {
    let (mut writer, reader) = open(dir, Codec::Pco);
    let mut rng = Rng(99);
    let mut t = 1_000_000i64;
    let mut truth = Vec::new();
    let mut batch = Vec::new();
    for i in 0..3000 {
        t += 50 + rng.below(300) as i64;
        let good = !(1000..1040).contains(&i) && rng.below(50) != 0;
        let v = (i as f64 * 0.01).sin() * 10.0 + rng.below(100) as f64 / 100.0;
        truth.push((t, v, good));
        let (value, quality) =
            if good { (Some(Value::F64(v)), Quality::Good) } else { (None, Quality::Bad(Reason::CommsLost)) };
        batch.push(Sample {
            tag: TagId(0),
            value,
            quality,
            source_time: None,
            gateway_time: Timestamp::from_millis(t),
        });
        if i % 700 == 0 {
            writer.append(&batch).unwrap();
            batch.clear();
            writer.checkpoint().unwrap();
        }
    }
    writer.append(&batch).unwrap();
    writer.commit().unwrap();
    (reader, truth)
}

#[test]
fn aggregates_match_an_independent_computation() {
    let dir = temp("aggregates");
    let (reader, truth) = series(&dir);
    check_aggregates(&reader, &truth, 1_100_000, 1_400_000, 7_000);
    // Over more than one read slice (about ten minutes of intervals are read at a time).
    check_aggregates(&reader, &truth, 1_000_000, 1_650_000, 7_000);
    check_aggregates(&reader, &truth, 1_003_000, 1_650_000, 1_000);
    // --every 1ms over three years: refused with a clear error, not a bucket per millisecond.
    let years = reader.aggregate(
        PATHS[0],
        Timestamp::from_millis(0),
        Timestamp::from_millis(3 * 365 * 86_400_000),
        Duration::from_millis(1),
    );
    let e = years.unwrap_err().to_string();
    assert!(e.contains("94608000000 intervals") && e.contains("at most 1000000"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn check_aggregates(reader: &HistorianReader, truth: &[(i64, f64, bool)], from: i64, to: i64, every: i64) {
    let buckets = reader
        .aggregate(
            PATHS[0],
            Timestamp::from_millis(from),
            Timestamp::from_millis(to),
            Duration::from_millis(every as u64),
        )
        .unwrap();
    assert_eq!(buckets.len() as i64, (to - (from / every) * every + every - 1) / every);
    for b in &buckets {
        let (start, end) = (b.start_ms.max(from), (b.start_ms + every).min(to));
        let inside: Vec<f64> = truth
            .iter()
            .filter(|(t, _, g)| *g && (b.start_ms..b.start_ms + every).contains(t) && *t < to)
            .map(|(_, v, _)| *v)
            .collect();
        assert_eq!(b.count, inside.len() as u64, "bucket {}", b.start_ms);
        let close = |a: Option<f64>, e: Option<f64>| match (a, e) {
            (Some(a), Some(e)) => (a - e).abs() < 1e-9 * e.abs().max(1.0),
            (a, e) => a == e,
        };
        assert!(close(b.min, inside.iter().copied().reduce(f64::min)));
        assert!(close(b.max, inside.iter().copied().reduce(f64::max)));
        assert!(close(b.first, inside.first().copied()));
        assert!(close(b.last, inside.last().copied()));
        let mean = (!inside.is_empty()).then(|| inside.iter().sum::<f64>() / inside.len() as f64);
        assert!(close(b.avg, mean), "avg {:?} vs {mean:?}", b.avg);
        // Time-weighted average, millisecond by millisecond: the value held at each ms is the
        // last sample at or before it, if that sample is good.
        let (mut sum, mut n) = (0.0, 0u64);
        for ms in b.start_ms..b.start_ms + every {
            if ms >= to {
                break;
            }
            let held = truth.partition_point(|(t, _, _)| *t <= ms).checked_sub(1).map(|i| truth[i]);
            if let Some((_, v, true)) = held {
                sum += v;
                n += 1;
            }
        }
        let twa = (n > 0).then(|| sum / n as f64);
        assert!(close(b.twa, twa), "bucket {} twa {:?} vs {twa:?} ({start}..{end})", b.start_ms, b.twa);
    }
}

#[test]
fn interpolation_matches_an_independent_computation() {
    let dir = temp("interpolate");
    let (reader, truth) = series(&dir);
    let times: Vec<Timestamp> = (0..400).map(|i| Timestamp::from_millis(1_000_000 + i * 1_777)).collect();
    let got = reader.interpolate(PATHS[0], &times).unwrap();
    for (t, g) in times.iter().zip(&got) {
        let t = t.as_millis();
        let expected = match truth.iter().position(|(ts, _, _)| *ts >= t) {
            Some(i) if truth[i].0 == t => truth[i].2.then_some(truth[i].1),
            Some(0) | None => None,
            Some(i) => {
                let ((t0, v0, g0), (t1, v1, g1)) = (truth[i - 1], truth[i]);
                (g0 && g1).then(|| v0 + (v1 - v0) * (t - t0) as f64 / (t1 - t0) as f64)
            }
        };
        match (g, expected) {
            (Some(a), Some(e)) => assert!((a - e).abs() < 1e-9, "at {t}: {a} vs {e}"),
            (a, e) => assert_eq!(*a, e, "at {t}"),
        }
    }
    assert!(got.iter().filter(|g| g.is_some()).count() > 300);
    let last = reader.last_values().unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].1.time.as_millis(), truth.last().unwrap().0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn retention_drops_old_chunks_by_age_and_size() {
    let dir = temp("retention");
    let config = HistorianConfig {
        bytes_max: 1 << 20,
        age_max: Duration::from_secs(3600),
        wal_bytes_max: 64 << 10,
        ..config(Codec::Gorilla)
    };
    let (mut writer, reader) = HistorianWriter::open(&dir, config).unwrap();
    writer.bind_tags(&PATHS[..1]).unwrap();
    let mut rng = Rng(5);
    let hour = 3_600_000i64;
    for i in 0..200_000i64 {
        let s = Sample::good(TagId(0), Value::F64(rng.next() as f64), Timestamp::from_millis(i * 100));
        writer.append(&[s]).unwrap();
        if i % 1000 == 0 {
            writer.commit().unwrap();
        }
    }
    writer.checkpoint().unwrap();
    let now = Timestamp::from_millis(200_000 * 100);
    writer.maintain(now).unwrap();
    let stats = writer.stats();
    assert!(stats.bytes <= 1 << 20, "{} bytes over a budget of 1 MiB", stats.bytes);
    let kept = reader.raw(PATHS[0], Timestamp(0), now).unwrap();
    let oldest = kept.first().unwrap().time.as_millis();
    assert!(oldest >= now.as_millis() - 2 * hour, "samples from {oldest} kept, more than the age allows");
    assert_eq!(kept.last().unwrap().time.as_millis(), 199_999 * 100, "the newest samples stay");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_writer_is_refused_and_a_read_only_reader_sees_the_data() {
    let dir = temp("lock");
    let (mut writer, _reader) = open(&dir, Codec::Pco);
    let second = HistorianWriter::open(&dir, config(Codec::Pco));
    assert!(matches!(second, Err(airlock_store::StoreError::Locked(_))), "{second:?}");
    let samples: Vec<Sample> =
        (0..100).map(|i| Sample::good(TagId(1), Value::F64(i as f64), Timestamp::from_millis(i))).collect();
    writer.append(&samples).unwrap();
    writer.commit().unwrap();
    let listing = std::fs::read_dir(dir.join("wal")).unwrap().count();
    let reader = HistorianReader::open(&dir).unwrap();
    assert_eq!(reader.raw(PATHS[1], Timestamp(0), Timestamp::from_millis(1000)).unwrap().len(), 100);
    assert_eq!(std::fs::read_dir(dir.join("wal")).unwrap().count(), listing, "the reader changed nothing");
    let outbox = dir.join("outbox");
    let (_w, _r) = airlock_store::OutboxWriter::open(&outbox, airlock_store::OutboxConfig::default()).unwrap();
    assert!(matches!(
        airlock_store::OutboxWriter::open(&outbox, airlock_store::OutboxConfig::default()),
        Err(airlock_store::StoreError::Locked(_))
    ));
    drop(writer);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tags_read_together_share_their_times_through_restarts_and_retention() {
    let dir = temp("shared");
    let config = HistorianConfig { bytes_max: 256 << 10, wal_bytes_max: 64 << 10, ..config(Codec::Pco) };
    let (mut writer, _) = HistorianWriter::open(&dir, config.clone()).unwrap();
    writer.bind_tags(&PATHS).unwrap();
    let mut rng = Rng(17);
    let value = |k: usize, i: i64| (i as f64) * (k as f64 + 1.0) + (i % 7) as f64 * 0.25;
    for i in 0..300_000i64 {
        let t = Timestamp::from_millis(i * 1000 + (rng.below(5) as i64));
        let poll: Vec<Sample> = (0..3).map(|k| Sample::good(TagId(k as u32), Value::F64(value(k, i)), t)).collect();
        writer.append(&poll).unwrap();
        if i % 500 == 0 {
            writer.commit().unwrap();
            writer.maintain(Timestamp::from_millis(i * 1000)).unwrap();
        }
    }
    writer.checkpoint().unwrap();
    writer.maintain(Timestamp::from_millis(300_000 * 1000)).unwrap();
    let stats = writer.stats();
    assert!(stats.bytes <= 256 << 10, "{stats:?}");
    drop(writer);
    let reader = HistorianReader::open(&dir).unwrap();
    let mut firsts = Vec::new();
    for (k, path) in PATHS.iter().enumerate() {
        let rows = reader.raw(path, Timestamp(0), Timestamp::from_millis(i64::MAX / 2_000_000)).unwrap();
        assert!(rows.len() > 1_000, "{path}: {} rows kept", rows.len());
        for r in &rows {
            let i = r.time.as_millis() / 1000;
            assert_eq!(r.value, Some(value(k, i)), "{path} at {i}");
        }
        assert_eq!(rows.last().unwrap().time.as_millis() / 1000, 299_999);
        firsts.push(rows[0].time);
    }
    // Retention dropped old data, a segment at a time; every tag kept from about the same time.
    assert!(firsts.iter().all(|t| t.as_millis() > 10_000_000), "{firsts:?}");
    let spread = firsts.iter().max().unwrap().as_millis() - firsts.iter().min().unwrap().as_millis();
    assert!(spread <= 20_000_000, "{firsts:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tags_keep_their_numbers_when_tags_are_added_repeated_and_reordered_across_restarts() {
    let dir = temp("dictionary");
    let at = |i: i64| Timestamp::from_millis(1_000 * i);
    {
        let (mut w, _r) = HistorianWriter::open(&dir, config(Codec::Pco)).unwrap();
        // One path twice in one binding: one number, one dictionary line.
        w.bind_tags(&[PATHS[0], PATHS[1], PATHS[0]]).unwrap();
        w.append(&[Sample::good(TagId(0), Value::F64(1.0), at(1)), Sample::good(TagId(1), Value::F64(2.0), at(1))])
            .unwrap();
        w.sync().unwrap();
    }
    let (mut w, r) = HistorianWriter::open(&dir, config(Codec::Pco)).unwrap();
    // A new tag first, the known ones after it, in another order.
    w.bind_tags(&[PATHS[2], PATHS[1], PATHS[0]]).unwrap();
    w.append(&[
        Sample::good(TagId(0), Value::F64(30.0), at(2)),
        Sample::good(TagId(1), Value::F64(20.0), at(2)),
        Sample::good(TagId(2), Value::F64(10.0), at(2)),
    ])
    .unwrap();
    w.sync().unwrap();
    let values =
        |path: &str| -> Vec<Option<f64>> { r.raw(path, at(0), at(3)).unwrap().into_iter().map(|s| s.value).collect() };
    assert_eq!(values(PATHS[0]), [Some(1.0), Some(10.0)]);
    assert_eq!(values(PATHS[1]), [Some(2.0), Some(20.0)]);
    assert_eq!(values(PATHS[2]), [Some(30.0)]);
    let dictionary = std::fs::read_to_string(dir.join("tags.txt")).unwrap();
    assert_eq!(dictionary, format!("0\t{}\n1\t{}\n2\t{}\n", PATHS[0], PATHS[1], PATHS[2]));
    drop((w, r));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_last_dictionary_line_is_not_a_tag_and_the_next_tags_are_added_after_it() {
    // A crash (or a full disk) while tags were being added left half a line at the end of the
    // dictionary: "1<TAB>acme/a/pre" with no line break.
    let dir = temp("torn-dictionary");
    {
        let (mut w, _r) = HistorianWriter::open(&dir, config(Codec::Pco)).unwrap();
        w.bind_tags(&PATHS[..1]).unwrap();
        w.sync().unwrap();
    }
    let file = dir.join("tags.txt");
    let mut text = std::fs::read_to_string(&file).unwrap();
    text += "1\tacme/a/pre";
    std::fs::write(&file, &text).unwrap();
    for round in 0..2 {
        let (mut w, r) = HistorianWriter::open(&dir, config(Codec::Pco)).unwrap();
        w.bind_tags(&PATHS).unwrap();
        w.append(&[
            Sample::good(TagId(0), Value::F64(1.0), Timestamp::from_millis(1000 + round)),
            Sample::good(TagId(2), Value::F64(3.0), Timestamp::from_millis(1000 + round)),
        ])
        .unwrap();
        w.sync().unwrap();
        assert_eq!(
            r.raw(PATHS[0], Timestamp(0), Timestamp::from_millis(10_000)).unwrap().len() as i64,
            round + 1,
            "round {round}"
        );
        assert_eq!(
            r.raw(PATHS[2], Timestamp(0), Timestamp::from_millis(10_000)).unwrap().len() as i64,
            round + 1,
            "round {round}"
        );
        assert!(r.raw("acme/a/pre", Timestamp(0), Timestamp::from_millis(10_000)).unwrap().is_empty());
    }
    let dictionary = std::fs::read_to_string(&file).unwrap();
    let tags: Vec<&str> = dictionary.lines().filter_map(|l| l.split_once('\t').map(|(_, p)| p)).collect();
    assert!(tags.ends_with(&PATHS), "the tags follow the torn line on a line of their own: {dictionary:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A tag with a stated resolution is stored rounded to it: every value on its grid and within
/// half a step of what was read, bit for bit the same from the WAL after a restart as from the
/// chunks after a checkpoint. A tag without one keeps its values bit for bit. Rounding one of
/// the two noisy floats to a hundredth cuts the historian's bytes by over a quarter. A bool stays 0 or 1 whatever the
/// resolution (an OPC UA tag may carry bools though its type is a number).
#[test]
fn a_tag_with_a_stated_resolution_is_stored_rounded_to_it_in_fewer_bytes() {
    const N: i64 = 20_000;
    // Every sample in the WAL until the one checkpoint.
    let one_checkpoint = || HistorianConfig { wal_bytes_max: 64 << 20, ..config(Codec::Pco) };
    let mut rng = Rng(11);
    // Two noisy float registers (a temperature, noise of 0.08 degrees, read as f32), 1 Hz.
    let mut noise = || (rng.below(1_000_001) as f64 / 1_000_000.0 - 0.5) * 0.28;
    let read: Vec<[f64; 2]> = (0..N)
        .map(|i| {
            let slow = 40.0 + 5.0 * (i as f64 / 3000.0).sin();
            [f64::from((slow + noise()) as f32), f64::from((slow + noise()) as f32)]
        })
        .collect();
    let store = |dir: &Path, resolutions: &[Option<f64>]| {
        let (mut writer, _) = HistorianWriter::open(dir, one_checkpoint()).unwrap();
        writer.bind_tags_with_resolutions(&PATHS[..2], resolutions).unwrap();
        for (i, values) in read.iter().enumerate() {
            let at = Timestamp::from_millis(1_800_000_000_000 + i as i64 * 1000);
            let samples = [0, 1].map(|t| Sample::good(TagId(t), Value::F64(values[t as usize]), at));
            writer.append(&samples).unwrap();
            if i % 100 == 99 {
                writer.commit().unwrap();
            }
        }
        writer.sync().unwrap();
    };
    let bits = |v: &[(i64, Option<f64>, Quality)]| v.iter().map(|s| s.1.map(f64::to_bits)).collect::<Vec<_>>();
    let check = |reader: &HistorianReader, when: &str| {
        let (exact, rounded) = (all(reader, 0), all(reader, 1));

        assert_eq!(rounded.len(), N as usize, "{when}");
        for (i, (values, (e, r))) in read.iter().zip(exact.iter().zip(&rounded)).enumerate() {
            assert_eq!(e.1.map(f64::to_bits), Some(values[0].to_bits()), "{when}: sample {i} of the tag without one");
            let r = r.1.unwrap();
            assert!((r - values[1]).abs() <= 0.005 + 1e-9, "{when}: sample {i}: {r} stored for {}", values[1]);
            let steps = r / 0.01;
            assert!((steps - steps.round()).abs() < 1e-6, "{when}: sample {i}: {r} is off the grid of 0.01");
        }
    };
    let (dir, plain) = (temp("resolution"), temp("resolution-none"));
    let resolutions = [None, Some(0.01), Some(2.0)];
    store(&dir, &resolutions);
    // Read from the WAL (replayed at the start), then from the chunks, written with the tags
    // bound again as a gateway binds them at every start.
    let (mut writer, reader) = HistorianWriter::open(&dir, one_checkpoint()).unwrap();
    check(&reader, "from the WAL");
    let from_wal = bits(&all(&reader, 1));
    writer.bind_tags_with_resolutions(&PATHS, &resolutions).unwrap();
    let other = [Value::Bool(true), Value::Bool(false), Value::U64(7), Value::I64(-7), Value::F64(-0.4)];
    for (i, v) in other.into_iter().enumerate() {
        let at = Timestamp::from_millis(1_800_000_000_000 + i as i64 * 1000);
        writer.append(&[Sample::good(TagId(2), v, at)]).unwrap();
    }
    writer.checkpoint().unwrap();
    check(&reader, "from the chunks");
    assert_eq!(bits(&all(&reader, 1)), from_wal, "the WAL and the chunks differ");
    let values: Vec<Option<f64>> = all(&reader, 2).iter().map(|s| s.1).collect();
    assert_eq!(values, [Some(1.0), Some(0.0), Some(8.0), Some(-8.0), Some(0.0)]);
    assert!(values[4].is_some_and(f64::is_sign_positive), "-0 would print as -0");
    let with = writer.stats().bytes;
    drop((writer, reader));
    check(&HistorianReader::open(&dir).unwrap(), "after a restart");
    store(&plain, &[]);
    let (mut writer, _) = HistorianWriter::open(&plain, one_checkpoint()).unwrap();
    writer.checkpoint().unwrap();
    let without = writer.stats().bytes;
    // The exact tag takes the same bytes in both: the rounded one must save over a quarter.
    assert!(with * 4 < without * 3, "{with} bytes with a resolution, {without} without");
    drop(writer);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&plain).unwrap();
}
