//! The historian: every tag's samples on local disk, compressed, for queries beside the machine.
//!
//! Layout under its folder:
//! - `tags.txt`: the tag dictionary, one `number<TAB>asset path` line per tag, appended and
//!   synced (once for all the tags new to one binding) when a tag is first seen. Numbers are stable across restarts and config changes.
//! - `wal/`: a [`Log`] of sample batches as they arrive (per sample: tag u32, time i64 ms,
//!   value f64, quality u16; little-endian), group-committed like the outbox. This is what makes
//!   an acknowledged sample survive a crash.
//! - `chunks/`: a [`Log`] of compressed chunks (one tag, a stretch of time; format in
//!   `chunk.rs`) and checkpoint records.
//!
//! Samples also go to an in-memory head per tag, compressed as they come (`head.rs`: a few bits
//! a sample for a steady tag, not 18 bytes). A checkpoint (when the WAL passes
//! `wal_bytes_max`, or the heads pass `head_samples_max`) writes every head as a chunk, then a
//! checkpoint record naming the last WAL record it covers and its first chunk, syncs the chunk
//! log, and deletes the WAL up to there. On open, the chunk log is scanned (record prefixes
//! only) to index the chunks of complete checkpoints, and WAL records after the last checkpoint
//! are replayed into the heads. Chunks of a checkpoint that did not finish are ignored: their
//! samples are still in the WAL.
//!
//! Times are kept to the millisecond. Values are numbers (`f64`; a bool is 0 or 1); text
//! values are not kept in the historian (they are counted). Retention: chunks older than
//! `age_max` or beyond `bytes_max` go, oldest first, a whole segment at a time.

pub mod chunk;
pub mod gorilla;
pub mod head;
pub mod query;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use airlock_model::{Quality, Reason, Sample, Timestamp, Value};

use crate::log::{Log, Recovery};
use crate::{FsyncPolicy, StoreError};
pub use chunk::Codec;
pub use query::{Bucket, Point};

/// Samples of one tag a chunk holds at most (a longer head is written as several chunks).
const CHUNK_SAMPLES_MAX: usize = 8192;

/// Bounds and policies of a historian.
#[derive(Debug, Clone)]
pub struct HistorianConfig {
    pub bytes_max: u64,
    pub age_max: Duration,
    pub fsync: FsyncPolicy,
    /// WAL bytes that trigger a checkpoint.
    pub wal_bytes_max: u64,
    /// Samples held in memory (heads) that trigger a checkpoint; the memory bound.
    pub head_samples_max: usize,
    pub codec: Codec,
    /// The file system's free-space reserve: past it the historian takes no more samples.
    pub space: Option<Arc<crate::space::FreeSpace>>,
}

impl Default for HistorianConfig {
    fn default() -> Self {
        Self {
            bytes_max: 10 << 30,
            age_max: Duration::from_secs(365 * 86_400),
            fsync: FsyncPolicy::Interval(Duration::from_millis(10)),
            wal_bytes_max: 16 << 20,
            head_samples_max: 1 << 20,
            codec: Codec::Pco,
            space: None,
        }
    }
}

/// Counters of a historian since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistorianStats {
    pub samples: u64,
    pub text_samples_skipped: u64,
    /// Samples lost because neither the WAL nor a checkpoint could be written (disk full).
    pub samples_lost: u64,
    pub chunks: u64,
    pub checkpoints: u64,
    pub bytes: u64,
    pub recovery: Recovery,
    /// Records (chunks, WAL records) found corrupt when read, skipped.
    pub corrupt_reads: u64,
}

/// The most intervals one aggregate query returns.
pub const BUCKETS_MAX: u64 = 1_000_000;
/// Aggregate queries read samples about this many milliseconds at a time.
const SLICE_MS: i64 = 600_000;

/// One stored sample as a query returns it: a value only if it is good.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoredSample {
    pub time: Timestamp,
    pub value: Option<f64>,
    pub quality: Quality,
}

impl StoredSample {
    fn from_row((t, v, q): (i64, f64, u16)) -> Self {
        let quality = quality_from_code(q);
        Self { time: Timestamp::from_millis(t), value: quality.is_good().then_some(v), quality }
    }
}

/// Where one chunk is, and what it holds.
#[derive(Debug, Clone, Copy)]
struct ChunkRef {
    seq: u64,
    time_min: i64,
    time_max: i64,
    /// The chunk whose times this one shares, if it does.
    times_from: Option<u64>,
}

#[derive(Debug)]
struct Inner {
    /// The writer's lock on the folder; `None` when opened read-only.
    _lock: Option<fs::File>,
    dir: PathBuf,
    config: HistorianConfig,
    wal: Log,
    chunks: Log,
    /// Tag number to asset path, and back.
    paths: Vec<String>,
    numbers: HashMap<String, u32>,
    /// The gateway's `TagId` to the historian's tag number, for this run.
    bound: Vec<u32>,
    heads: Vec<head::Head>,
    head_samples: usize,
    /// Reused for each WAL record, to spare an allocation per batch.
    wal_buffer: Vec<u8>,
    index: Vec<Vec<ChunkRef>>,
    synced_at: Instant,
    stats: HistorianStats,
}

/// The OT side's handle: the only one that writes. Not `Clone`.
#[derive(Debug)]
pub struct HistorianWriter {
    inner: Arc<Mutex<Inner>>,
}

/// The IT side's handle: queries only.
#[derive(Debug, Clone)]
pub struct HistorianReader {
    inner: Arc<Mutex<Inner>>,
}

fn lock(inner: &Mutex<Inner>) -> Result<MutexGuard<'_, Inner>, StoreError> {
    inner.lock().map_err(|_| StoreError::Invariant("the historian lock was poisoned by a panic"))
}

const WAL_SAMPLE_BYTES: usize = 4 + 8 + 8 + 2;

impl HistorianWriter {
    /// Opens (or creates) the historian in `dir`, recovering from a crash if there was one.
    pub fn open(dir: &Path, config: HistorianConfig) -> Result<(HistorianWriter, HistorianReader), StoreError> {
        let inner = Arc::new(Mutex::new(Inner::open(dir, config, true)?));
        Ok((HistorianWriter { inner: Arc::clone(&inner) }, HistorianReader { inner }))
    }

    /// Says which asset path each of the gateway's tag ids (their index here) stands for,
    /// adding new tags to the dictionary.
    pub fn bind_tags(&mut self, paths: &[&str]) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner)?;
        inner.bound = inner.numbers_of(paths)?;
        Ok(())
    }

    /// Appends samples (to the WAL and the heads). They count as persisted once a
    /// [`commit`](Self::commit) has synced them.
    pub fn append(&mut self, samples: &[Sample]) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner)?;
        if let Some(space) = inner.config.space.clone()
            && !space.has_room()
        {
            inner.stats.samples_lost += samples.len() as u64;
            return Err(StoreError::ReserveReached { dir: inner.dir.clone(), reserve: space.reserve() });
        }
        inner.append(samples)
    }

    /// Writes the WAL, syncs it if the policy says so, checkpoints if it is time; returns
    /// whether everything appended so far is now synced.
    pub fn commit(&mut self) -> Result<bool, StoreError> {
        lock(&self.inner)?.commit(false)
    }

    /// Syncs everything appended, whatever the policy (at shutdown).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        lock(&self.inner)?.commit(true).map(|_| ())
    }

    /// Folds the heads into chunks now.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        lock(&self.inner)?.checkpoint()
    }

    /// Drops chunks older than `age_max` and beyond `bytes_max`.
    pub fn maintain(&mut self, now: Timestamp) -> Result<(), StoreError> {
        lock(&self.inner)?.retain(now)
    }

    pub fn stats(&self) -> HistorianStats {
        lock(&self.inner).map(|i| i.stats()).unwrap_or_default()
    }
}

impl HistorianReader {
    /// Opens a historian to query it, even while a gateway writes to it: nothing on disk is
    /// changed. It sees what was written when it was opened.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        if !dir.join("tags.txt").exists() {
            return Err(StoreError::io("open the historian in", dir, std::io::ErrorKind::NotFound.into()));
        }
        let inner = Inner::open(dir, HistorianConfig::default(), false)?;
        Ok(Self { inner: Arc::new(Mutex::new(inner)) })
    }

    /// The historian's counters and size (as the writer's).
    pub fn stats(&self) -> HistorianStats {
        lock(&self.inner).map(|i| i.stats()).unwrap_or_default()
    }

    /// Every tag's asset path.
    pub fn tags(&self) -> Result<Vec<String>, StoreError> {
        Ok(lock(&self.inner)?.paths.clone())
    }

    /// The stored samples of `path` with `from <= time < to`, in time order.
    pub fn raw(&self, path: &str, from: Timestamp, to: Timestamp) -> Result<Vec<StoredSample>, StoreError> {
        let inner = lock(&self.inner)?;
        let Some(&tag) = inner.numbers.get(path) else { return Ok(Vec::new()) };
        let columns = inner.columns(tag, from.as_millis(), to.as_millis())?;
        Ok(columns.into_iter().map(StoredSample::from_row).collect())
    }

    /// Aggregates of `path` per `every`, over `[from, to)` (see [`query`] for definitions). At
    /// most [`BUCKETS_MAX`] intervals (`--every 1ms` over years is refused with a clear error,
    /// not a bucket per millisecond); the samples are read a slice of intervals at a time (about
    /// ten minutes' worth, or one interval when it is longer), so memory holds one slice.
    pub fn aggregate(
        &self,
        path: &str,
        from: Timestamp,
        to: Timestamp,
        every: Duration,
    ) -> Result<Vec<Bucket>, StoreError> {
        let every_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX).max(1);
        let (from_ms, to_ms) = (from.as_millis(), to.as_millis());
        let start = from_ms.div_euclid(every_ms) * every_ms;
        let buckets = u64::try_from(to_ms.saturating_sub(start)).unwrap_or(0).div_ceil(every_ms.unsigned_abs());
        if buckets > BUCKETS_MAX {
            return Err(StoreError::TooManyBuckets { buckets, max: BUCKETS_MAX });
        }
        let slice_ms = every_ms.saturating_mul((SLICE_MS / every_ms).max(1));
        let mut out = Vec::new();
        let mut at = start;
        // The last sample before the slice (for the time-weighted average): looked up in the
        // store for the first slice, carried from the slice before for the others.
        let mut carried: Option<Point> = None;
        while at < to_ms {
            // A slice reaches at least to the end of the chunk it starts in (whole intervals), so
            // that each chunk is decoded about once: memory holds one chunk's samples, or ten
            // minutes' worth, whichever is more.
            let chunk_end = self.chunk_end(path, at)?.unwrap_or(at);
            let whole = chunk_end.saturating_sub(at).saturating_add(every_ms - 1) / every_ms * every_ms;
            let end = at.saturating_add(slice_ms.max(whole)).min(to_ms);
            let points = if at == start {
                self.points(path, at, end, true)?
            } else {
                let mut points: Vec<Point> = carried.into_iter().collect();
                points.extend(self.points(path, at, end, false)?);
                points
            };
            out.extend(query::aggregate(&points, from_ms.max(at), end, every_ms));
            carried = points.last().copied();
            at = end;
        }
        Ok(out)
    }

    /// The value of `path` at each of `times`, interpolated linearly between good samples.
    pub fn interpolate(&self, path: &str, times: &[Timestamp]) -> Result<Vec<Option<f64>>, StoreError> {
        let (Some(lo), Some(hi)) = (times.iter().min(), times.iter().max()) else { return Ok(Vec::new()) };
        let points = self.points(path, lo.as_millis(), hi.as_millis() + 1, true)?;
        let after = self.points(path, hi.as_millis() + 1, i64::MAX, false)?;
        let points: Vec<Point> = points.into_iter().chain(after.into_iter().take(1)).collect();
        Ok(times.iter().map(|t| query::interpolate(&points, t.as_millis())).collect())
    }

    /// The newest sample of every tag that has one.
    pub fn last_values(&self) -> Result<Vec<(String, StoredSample)>, StoreError> {
        let inner = lock(&self.inner)?;
        let mut out = Vec::new();
        for (tag, path) in inner.paths.iter().enumerate() {
            if let Some(row) = inner.last_before(tag as u32, i64::MAX)? {
                out.push((path.clone(), StoredSample::from_row(row)));
            }
        }
        Ok(out)
    }

    /// Points of `path` in `[from_ms, to_ms)`, plus (if `carry`) the last one before `from_ms`.
    /// The end (exclusive, ms) of the stored chunk of `path` that holds `at_ms`, if one does.
    fn chunk_end(&self, path: &str, at_ms: i64) -> Result<Option<i64>, StoreError> {
        let inner = lock(&self.inner)?;
        let Some(&tag) = inner.numbers.get(path) else { return Ok(None) };
        let refs = inner.index.get(tag as usize).map(Vec::as_slice).unwrap_or(&[]);
        Ok(refs
            .iter()
            .filter(|c| c.time_min <= at_ms && c.time_max >= at_ms)
            .map(|c| c.time_max.saturating_add(1))
            .max())
    }

    fn points(&self, path: &str, from_ms: i64, to_ms: i64, carry: bool) -> Result<Vec<Point>, StoreError> {
        let inner = lock(&self.inner)?;
        let Some(&tag) = inner.numbers.get(path) else { return Ok(Vec::new()) };
        let mut points: Vec<Point> = Vec::new();
        if carry && let Some((t, v, q)) = inner.last_before(tag, from_ms)? {
            points.push(Point { time_ms: t, value: v, good: quality_from_code(q).is_good() });
        }
        let columns = inner.columns(tag, from_ms, to_ms)?;
        points.extend(columns.into_iter().map(|(t, v, q)| Point {
            time_ms: t,
            value: v,
            good: quality_from_code(q).is_good(),
        }));
        Ok(points)
    }
}

impl Inner {
    fn open(dir: &Path, config: HistorianConfig, write: bool) -> Result<Self, StoreError> {
        let lock = if write { Some(crate::lock_dir(dir)?) } else { None };
        let segment_bytes = (config.bytes_max / 64).clamp(64 << 10, 16 << 20);
        let wal_segment_bytes = (config.wal_bytes_max / 4).clamp(64 << 10, 16 << 20);
        let (chunks, wal) = if write {
            (Log::open(&dir.join("chunks"), segment_bytes)?, Log::open(&dir.join("wal"), wal_segment_bytes)?)
        } else {
            (Log::open_read_only(&dir.join("chunks"))?, Log::open_read_only(&dir.join("wal"))?)
        };
        let (paths, whole) = read_dictionary(&dir.join("tags.txt"))?;
        if write {
            cut_torn_line(&dir.join("tags.txt"), whole)?;
        }
        let numbers = paths.iter().enumerate().map(|(i, p)| (p.clone(), i as u32)).collect();
        let mut stats = HistorianStats::default();
        stats.recovery.corrupt_records = chunks.recovery.corrupt_records + wal.recovery.corrupt_records;
        stats.recovery.torn_bytes = chunks.recovery.torn_bytes + wal.recovery.torn_bytes;
        let mut inner = Self {
            _lock: lock,
            dir: dir.to_owned(),
            heads: vec![head::Head::default(); paths.len()],
            index: vec![Vec::new(); paths.len()],
            paths,
            numbers,
            bound: Vec::new(),
            config,
            wal,
            chunks,
            head_samples: 0,
            wal_buffer: Vec::new(),
            synced_at: Instant::now(),
            stats,
        };
        let wal_seq = inner.index_chunks()?;
        inner.replay_wal(wal_seq)?;
        Ok(inner)
    }

    /// Builds the chunk index from the chunk log; returns the WAL sequence number the last
    /// complete checkpoint covers.
    fn index_chunks(&mut self) -> Result<u64, StoreError> {
        let mut pending: Vec<(u32, ChunkRef)> = Vec::new();
        let mut covered = 0;
        let mut complete: Vec<(u32, ChunkRef)> = Vec::new();
        self.chunks.scan_prefixes(chunk::PREFIX_BYTES, |seq, _, prefix| match chunk::entry(prefix) {
            Some(chunk::Entry::Chunk { tag, time_min, time_max, times_from, .. }) => {
                pending.push((tag, ChunkRef { seq, time_min, time_max, times_from }))
            }
            Some(chunk::Entry::Checkpoint { wal_seq, first_chunk_seq }) => {
                complete.extend(pending.drain(..).filter(|(_, c)| c.seq >= first_chunk_seq));
                covered = wal_seq;
            }
            None => {}
        })?;
        for (tag, c) in complete {
            // Only tags of the dictionary: a number from bad bytes must not size the tables.
            if tag as usize >= self.paths.len() {
                self.stats.recovery.corrupt_records += 1;
                continue;
            }
            self.ensure_tag(tag);
            self.index[tag as usize].push(c);
            self.stats.chunks += 1;
        }
        Ok(covered)
    }

    fn replay_wal(&mut self, after: u64) -> Result<(), StoreError> {
        let mut from = after + 1;
        loop {
            let records = self.wal.read(from, 1024, 16 << 20)?;
            let Some(last) = records.last().map(|r| r.seq) else { break };
            for r in records {
                for s in r.payload.chunks_exact(WAL_SAMPLE_BYTES) {
                    let tag = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                    let time = i64::from_le_bytes(s[4..12].try_into().map_err(|_| StoreError::Invariant("wal"))?);
                    let value = f64::from_le_bytes(s[12..20].try_into().map_err(|_| StoreError::Invariant("wal"))?);
                    let quality = u16::from_le_bytes([s[20], s[21]]);
                    if tag as usize >= self.paths.len() {
                        self.stats.recovery.corrupt_records += 1;
                        continue;
                    }
                    self.ensure_tag(tag);
                    self.heads[tag as usize].push(time, value, quality);
                    self.head_samples += 1;
                }
            }
            from = last + 1;
        }
        Ok(())
    }

    fn ensure_tag(&mut self, tag: u32) {
        let n = tag as usize + 1;
        if self.heads.len() < n {
            self.heads.resize(n, head::Head::default());
            self.index.resize(n, Vec::new());
        }
    }

    /// The numbers of `paths`; new ones are given the next numbers and written to the
    /// dictionary together, with one sync (a first start with 10,000 tags syncs once, not
    /// 10,000 times).
    fn numbers_of(&mut self, paths: &[&str]) -> Result<Vec<u32>, StoreError> {
        let mut numbers = Vec::with_capacity(paths.len());
        let mut added = String::new();
        let mut new: Vec<&str> = Vec::new();
        let mut new_numbers: HashMap<&str, u32> = HashMap::new();
        for path in paths {
            let known = self.numbers.get(*path).or_else(|| new_numbers.get(path)).copied();
            let n = match known {
                Some(n) => n,
                None => {
                    let n = (self.paths.len() + new.len()) as u32;
                    added += &format!("{n}\t{path}\n");
                    new.push(path);
                    new_numbers.insert(path, n);
                    n
                }
            };
            numbers.push(n);
        }
        if new.is_empty() {
            return Ok(numbers);
        }
        let file = self.dir.join("tags.txt");
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().create(true).append(true).open(&file)?;
            let length = f.metadata()?.len();
            let written = f.write_all(added.as_bytes()).and_then(|()| f.sync_data());
            if written.is_err() {
                // Half the lines written: cut them off again, so that no later start reads them.
                let _ = f.set_len(length);
            }
            written
        };
        write().map_err(|e| StoreError::io("add tags to", &file, e))?;
        for path in new {
            let n = self.paths.len() as u32;
            self.paths.push(path.to_owned());
            self.numbers.insert(path.to_owned(), n);
            self.ensure_tag(n);
        }
        Ok(numbers)
    }

    /// One WAL record per call, and each sample into its tag's head. A sample whose WAL
    /// record cannot be written stays in the head (it is not acknowledged; a later checkpoint
    /// may still keep it).
    fn append(&mut self, samples: &[Sample]) -> Result<(), StoreError> {
        let mut payload = std::mem::take(&mut self.wal_buffer);
        payload.clear();
        for s in samples {
            let Some(&tag) = self.bound.get(s.tag.0 as usize) else { continue };
            let value = match &s.value {
                Some(Value::Text(_) | Value::Waveform(_)) => {
                    self.stats.text_samples_skipped += 1;
                    continue;
                }
                Some(v) => v.as_f64().unwrap_or(0.0),
                None => 0.0,
            };
            let (time, quality) = (s.gateway_time.as_millis(), quality_code(s.quality));
            let mut row = [0u8; WAL_SAMPLE_BYTES];
            row[0..4].copy_from_slice(&tag.to_le_bytes());
            row[4..12].copy_from_slice(&time.to_le_bytes());
            row[12..20].copy_from_slice(&value.to_le_bytes());
            row[20..22].copy_from_slice(&quality.to_le_bytes());
            payload.extend_from_slice(&row);
            self.heads[tag as usize].push(time, value, quality);
        }
        let rows = payload.len() / WAL_SAMPLE_BYTES;
        self.head_samples += rows;
        self.stats.samples += rows as u64;
        let result = match samples.last() {
            Some(last) if rows > 0 => self.wal.append(last.gateway_time, &payload).map(|_| ()),
            _ => Ok(()),
        };
        self.wal_buffer = payload;
        result
    }

    fn commit(&mut self, force_sync: bool) -> Result<bool, StoreError> {
        let sync = match self.config.fsync {
            FsyncPolicy::Never => false,
            FsyncPolicy::Interval(every) => force_sync || self.synced_at.elapsed() >= every,
        };
        if let Err(e) = self.wal.commit(sync) {
            self.bound_heads_after_failure();
            return Err(e);
        }
        if sync {
            self.synced_at = Instant::now();
        }
        if self.wal.bytes() >= self.config.wal_bytes_max || self.head_samples >= self.config.head_samples_max {
            self.checkpoint()?;
        }
        Ok(sync || self.config.fsync == FsyncPolicy::Never)
    }

    /// When the disk refuses writes, the heads may not grow past their bound: try to fold them
    /// into chunks, and if that fails too, let them go (counted).
    fn bound_heads_after_failure(&mut self) {
        if self.head_samples < self.config.head_samples_max {
            return;
        }
        if self.checkpoint().is_err() {
            self.stats.samples_lost += self.head_samples as u64;
            self.heads.iter_mut().for_each(|h| *h = head::Head::default());
            self.head_samples = 0;
        }
    }

    fn checkpoint(&mut self) -> Result<(), StoreError> {
        let sync = self.config.fsync != FsyncPolicy::Never;
        let wal_seq = self.wal.seal(sync)?;
        let first_chunk_seq = self.chunks.next_seq();
        // The heads are encoded where they lie (a head longer than a chunk is encoded in parts),
        // and put back whatever happens: if the checkpoint fails they still hold the samples.
        let heads = std::mem::take(&mut self.heads);
        let encoded = self.encode_heads(&heads);
        self.heads = heads;
        let added = encoded?;
        // Stamped with the newest data time, so that retention by age sees data time only.
        let newest = added.iter().map(|(_, c)| c.time_max).max().unwrap_or(0);
        self.chunks.append(Timestamp::from_millis(newest), &chunk::encode_checkpoint(wal_seq, first_chunk_seq))?;
        self.chunks.commit(sync)?;
        self.stats.chunks += added.len() as u64;
        self.stats.checkpoints += 1;
        for (tag, c) in added {
            self.index[tag].push(c);
        }
        for h in &mut self.heads {
            *h = head::Head::default();
        }
        self.head_samples = 0;
        self.wal.drop_through(wal_seq, sync)?;
        Ok(())
    }

    /// Every head's samples as chunks appended to the chunk log (not committed): per chunk, its
    /// tag and reference.
    fn encode_heads(&mut self, heads: &[head::Head]) -> Result<Vec<(usize, ChunkRef)>, StoreError> {
        let mut added = Vec::new();
        // Tags read by one request have the very same times: store them once per checkpoint.
        // By the hash of the times: the chunks that hold them (sequence, and where in which
        // head). A match is confirmed against that head's times, decoded again (the last one
        // decoded is kept: the tags of one request come one after another).
        let mut time_columns: HashMap<u64, Vec<(u64, usize, std::ops::Range<usize>)>> = HashMap::new();
        let mut decoded: Option<(usize, Vec<i64>)> = None;
        for (tag, head) in heads.iter().enumerate() {
            if head.is_empty() {
                continue;
            }
            // Decoded one tag at a time: only one head is ever held as columns.
            let columns = head
                .columns()
                .ok_or_else(|| StoreError::Corrupt { path: self.dir.clone(), what: format!("tag {tag}'s head") })?;
            for range in
                (0..columns.len()).step_by(CHUNK_SAMPLES_MAX).map(|s| s..(s + CHUNK_SAMPLES_MAX).min(columns.len()))
            {
                let times = &columns.times[range.clone()];
                let whole = range.len() == columns.len();
                let copied;
                let part = if whole {
                    &columns
                } else {
                    copied = chunk::Columns::from_parts(
                        times.to_vec(),
                        columns.values[range.clone()].to_vec(),
                        columns.quality[range.clone()].to_vec(),
                    );
                    &copied
                };
                let key = hash_times(times);
                let mut same = None;
                for (seq, t, r) in time_columns.get(&key).map(Vec::as_slice).unwrap_or_default() {
                    if decoded.as_ref().is_none_or(|(d, _)| d != t) {
                        decoded = heads[*t].columns().map(|c| (*t, c.times));
                    }
                    if decoded.as_ref().is_some_and(|(_, d)| d.get(r.clone()) == Some(times)) {
                        same = Some(*seq);
                        break;
                    }
                }
                let bytes = chunk::encode(self.config.codec, tag as u32, part, same)
                    .map_err(|what| StoreError::Corrupt { path: self.dir.clone(), what })?;
                let (time_min, time_max) = minmax(times);
                let seq = self.chunks.append(Timestamp::from_millis(time_max), &bytes)?;
                let times_from = same.filter(|_| self.config.codec == chunk::Codec::Pco);
                if times_from.is_none() {
                    time_columns.entry(key).or_default().push((seq, tag, range));
                }
                added.push((tag, ChunkRef { seq, time_min, time_max, times_from }));
            }
        }
        Ok(added)
    }

    fn retain(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let age_ms = i64::try_from(self.config.age_max.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.as_millis().saturating_sub(age_ms);
        let sync = self.config.fsync != FsyncPolicy::Never;
        loop {
            let sealed = self.chunks.segments().count() > 1;
            let oldest = self.chunks.segments().next().map(|s| (s.last_time.as_millis(), s.records()));
            let too_old = oldest.is_some_and(|(t, n)| n > 0 && t < cutoff);
            let too_big = self.chunks.bytes() + self.wal.bytes() > self.config.bytes_max;
            if !sealed || !(too_old || too_big) {
                return Ok(());
            }
            let Some(dropped) = self.chunks.drop_oldest(sync)? else { return Ok(()) };
            for refs in &mut self.index {
                // A chunk whose shared times went with the dropped segment goes too.
                refs.retain(|c| c.seq > dropped.last_seq && c.times_from.is_none_or(|t| t > dropped.last_seq));
            }
        }
    }

    /// `(time, value, quality)` of `tag` in `[from_ms, to_ms)`, sorted by time.
    fn columns(&self, tag: u32, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, f64, u16)>, StoreError> {
        let mut out = Vec::new();
        let Some(refs) = self.index.get(tag as usize) else { return Ok(out) };
        for c in refs.iter().filter(|c| c.time_max >= from_ms && c.time_min < to_ms) {
            let Some(columns) = self.decode_chunk(c.seq)? else { continue };
            push_range(&columns, from_ms, to_ms, &mut out);
        }
        if let Some(head) = self.heads.get(tag as usize).and_then(head::Head::columns) {
            push_range(&head, from_ms, to_ms, &mut out);
        }
        out.sort_by_key(|r| r.0);
        Ok(out)
    }

    /// The newest `(time, value, quality)` of `tag` before `before_ms`.
    fn last_before(&self, tag: u32, before_ms: i64) -> Result<Option<(i64, f64, u16)>, StoreError> {
        let mut best: Option<(i64, f64, u16)> = None;
        let mut consider = |c: &chunk::Columns| {
            if let Some(i) = c.last_before(before_ms)
                && best.is_none_or(|b| c.times[i] >= b.0)
            {
                best = Some((c.times[i], c.values[i], c.quality[i]));
            }
        };
        if let Some(head) = self.heads.get(tag as usize).and_then(head::Head::columns) {
            consider(&head);
        }
        let refs = self.index.get(tag as usize).map(Vec::as_slice).unwrap_or(&[]);
        let candidate = refs.iter().filter(|c| c.time_min < before_ms).max_by_key(|c| c.time_max.min(before_ms));
        if let Some(c) = candidate
            && let Some(columns) = self.decode_chunk(c.seq)?
        {
            consider(&columns);
        }
        Ok(best)
    }

    /// The chunk at `seq`, decoded (with the times it shares from another chunk, if it does);
    /// `None` if retention has removed it.
    fn decode_chunk(&self, seq: u64) -> Result<Option<chunk::Columns>, StoreError> {
        let Some(record) = self.chunks.get(seq)? else { return Ok(None) };
        let shared_times = |from: u64| -> Result<Vec<i64>, String> {
            let other =
                self.chunks.get(from).map_err(|e| e.to_string())?.ok_or("the chunk with the shared times is gone")?;
            chunk::decode(&other.payload, |_| Err("shared times refer to shared times".into())).map(|c| c.times)
        };
        let corrupt = |what| StoreError::Corrupt { path: self.dir.join("chunks"), what };
        chunk::decode(&record.payload, shared_times).map(Some).map_err(corrupt)
    }

    fn stats(&self) -> HistorianStats {
        let corrupt_reads = [&self.chunks, &self.wal].map(|l| l.corrupt_reads.load(Relaxed)).iter().sum();
        HistorianStats { bytes: self.chunks.bytes() + self.wal.bytes(), corrupt_reads, ..self.stats }
    }
}

fn push_range(c: &chunk::Columns, from_ms: i64, to_ms: i64, out: &mut Vec<(i64, f64, u16)>) {
    out.extend(c.range(from_ms, to_ms).map(|i| (c.times[i], c.values[i], c.quality[i])));
}

fn minmax(times: &[i64]) -> (i64, i64) {
    (times.iter().copied().min().unwrap_or(0), times.iter().copied().max().unwrap_or(0))
}

/// A hash of a time column, to find another column with the same times.
fn hash_times(times: &[i64]) -> u64 {
    times.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, t| (h ^ *t as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The dictionary's tags, and the length of its whole lines: a torn last line (a crash while
/// adding tags) is not a tag; the writer cuts it off when it opens ([`cut_torn_line`]), and its
/// tag is added again.
fn read_dictionary(path: &Path) -> Result<(Vec<String>, u64), StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(StoreError::io("read", path, e)),
    };
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    let mut paths = Vec::new();
    for line in text[..whole].lines() {
        let Some((n, p)) = line.split_once('\t') else { continue };
        if n.parse::<usize>().ok() != Some(paths.len()) {
            continue;
        }
        paths.push(p.to_owned());
    }
    Ok((paths, whole as u64))
}

/// Cuts the dictionary at `whole` bytes if a torn line follows, so that new lines do not join it.
fn cut_torn_line(path: &Path, whole: u64) -> Result<(), StoreError> {
    let cut = || -> std::io::Result<()> {
        let f = OpenOptions::new().write(true).open(path)?;
        if f.metadata()?.len() > whole {
            f.set_len(whole)?;
            f.sync_data()?;
        }
        Ok(())
    };
    match cut() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| StoreError::io("repair", path, e)),
    }
}

/// Quality as a 16-bit code: kind in the high byte (0 good, 1 uncertain, 2 bad), reason in the
/// low byte (0 none, 1 timeout, 2 decode error, 3 not finite, 4 comms lost, 5 stale,
/// 6 source status, 7 source offline, 8 out of range, 0x80 | code for a protocol exception). A source status
/// keeps only that it was one: its 16-bit code does not fit (the upstream record has it whole).
pub fn quality_code(q: Quality) -> u16 {
    let reason = |r: Reason| -> u16 {
        match r {
            Reason::Timeout => 1,
            Reason::DecodeError => 2,
            Reason::NotFinite => 3,
            Reason::CommsLost => 4,
            Reason::Stale => 5,
            Reason::SourceStatus(_) => 6,
            Reason::SourceOffline => 7,
            Reason::OutOfRange => 8,
            Reason::Exception(code) => 0x80 | u16::from(code & 0x7f),
        }
    };
    match q {
        Quality::Good => 0,
        Quality::Uncertain(r) => 0x100 | reason(r),
        Quality::Bad(r) => 0x200 | reason(r),
    }
}

pub fn quality_from_code(code: u16) -> Quality {
    let reason = match code & 0xff {
        1 => Reason::Timeout,
        2 => Reason::DecodeError,
        3 => Reason::NotFinite,
        5 => Reason::Stale,
        6 => Reason::SourceStatus(0),
        7 => Reason::SourceOffline,
        8 => Reason::OutOfRange,
        c if c & 0x80 != 0 => Reason::Exception((c & 0x7f) as u8),
        _ => Reason::CommsLost,
    };
    match code >> 8 {
        0 => Quality::Good,
        1 => Quality::Uncertain(reason),
        _ => Quality::Bad(reason),
    }
}
