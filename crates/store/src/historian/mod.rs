//! The historian: every tag's samples on local disk, compressed, for queries beside the machine.
//!
//! Layout under its folder:
//! - `tags.txt`: the tag dictionary, one `number<TAB>asset path` line per tag, appended and
//!   synced (once for all the tags new to one binding) when a tag is first seen. Numbers are stable across restarts and config changes.
//! - `wal/`: a [`Log`] of sample batches as they arrive (as runs of tags read together, a few
//!   bytes a sample: format in `wal.rs`), group-committed like the outbox. This is what makes
//!   an acknowledged sample survive a crash.
//! - `chunks/`: a [`Log`] of blocks (the compressed chunks of many tags, each chunk one tag
//!   over a stretch of time, with a directory; format in `chunk.rs`) and checkpoint records.
//!
//! Samples also go to an in-memory head per tag, compressed as they come (`head.rs`: a few bits
//! a sample for a steady tag, not 18 bytes). A checkpoint (when the WAL passes
//! `wal_bytes_max`, the heads pass `head_bytes_max` or `head_samples_max`, or one head
//! `HEAD_SAMPLES_ONE_MAX`) writes every head
//! as a chunk into blocks of about 256 KB, then a checkpoint record naming the last WAL record
//! it covers and its first block, syncs the chunk log, and deletes the WAL up to there. A
//! checkpoint a commit starts seals the heads; when the heads fill fast and a second core is
//! there ([`CheckpointThread`]) the checkpoint thread encodes their blocks (most of a
//! checkpoint's cost) while fresh heads take the samples, and a later commit writes them.
//! Queries read sealed heads until then, and the WAL keeps their records, so memory holds at
//! most twice the heads' bound (and the encoded blocks until a commit writes them). A start
//! replays the WAL after the last checkpoint into the heads, folding them into blocks each
//! time they reach their bound (a writer; a reader holds what it replays). Memory
//! holds one index entry per block (its tags and times), so it grows with the bytes kept, not
//! with tags times checkpoints; a query reads a block's directory entries and its tag's chunks
//! only. On open, the chunk log is scanned (record prefixes only) to index the blocks of
//! complete checkpoints, and WAL records after the last checkpoint are replayed into the heads.
//! Blocks of a checkpoint that did not finish are ignored: their samples are still in the WAL.
//! Chunk records of one tag each, as written before blocks, are still read (and indexed per
//! tag).
//!
//! Times are kept to the millisecond. Values are numbers (`f64`; a bool is 0 or 1); text
//! values are not kept in the historian (they are counted). Retention: chunks older than
//! `age_max` or beyond `bytes_max` go, oldest first, a whole segment at a time.

mod ans;
pub mod chunk;
pub mod gorilla;
pub mod head;
pub mod query;
pub mod wal;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use airlock_model::{Quality, Reason, Sample, Timestamp, Value};

use crate::log::{Log, RecordReader, Recovery, SyncJob};
use crate::syncer::{Finished, SyncTarget, Syncs};
use crate::{FsyncPolicy, StoreError};
pub use chunk::Codec;
// Samples of one tag a chunk holds at most (a longer head is written as several chunks).
use chunk::SECTION_SAMPLES_MAX;
pub use query::{Bucket, Point};

/// Bounds and policies of a historian.
#[derive(Debug, Clone)]
pub struct HistorianConfig {
    pub bytes_max: u64,
    pub age_max: Duration,
    pub fsync: FsyncPolicy,
    /// WAL bytes that trigger a checkpoint.
    pub wal_bytes_max: u64,
    /// Samples held in memory (heads) that trigger a checkpoint; a writer's start folds the
    /// heads the WAL's replay fills into blocks at this bound too.
    pub head_samples_max: usize,
    /// Bytes of the heads' compressed streams that trigger a checkpoint: the memory bound. A
    /// register that holds still takes two bits a sample, a noisy float some thirty, so this
    /// (not a count of samples) is what keeps the heads' memory flat whatever the data, and
    /// lets steady tags read fast make long chunks (a checkpoint costs some microseconds a
    /// chunk however short: at a 1 ms poll of 10,000 registers a million samples made chunks of
    /// 100).
    pub head_bytes_max: usize,
    pub codec: Codec,
    /// Where a checkpoint that a commit starts is encoded.
    pub checkpoint_thread: CheckpointThread,
    /// The file system's free-space reserve: past it the historian takes no more samples.
    pub space: Option<Arc<crate::space::FreeSpace>>,
    /// Sync the WAL on a thread of the historian's own ([`crate::syncer`]), not on the
    /// committing one (the gateway's choice: a disk slow to sync never holds the collector).
    /// Checkpoints still sync their blocks where they are written.
    pub sync_thread: bool,
}

impl Default for HistorianConfig {
    fn default() -> Self {
        Self {
            bytes_max: 10 << 30,
            age_max: Duration::from_secs(365 * 86_400),
            fsync: FsyncPolicy::Interval(Duration::from_millis(10)),
            wal_bytes_max: 16 << 20,
            head_samples_max: 1 << 23,
            head_bytes_max: 1 << 20,
            codec: Codec::Pco,
            checkpoint_thread: CheckpointThread::Auto,
            space: None,
            sync_thread: false,
        }
    }
}

/// Where the checkpoints that commits start are encoded (an explicit
/// [`HistorianWriter::checkpoint`] is encoded on the caller's thread, after any still being
/// encoded elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointThread {
    /// On the historian's checkpoint thread when the heads filled fast (within
    /// [`FILLED_FAST`] of the last checkpoint, or at [`FILL_RATE_FAST`]) and the process may
    /// run on more than one core;
    /// spread over the writer's commits when they filled fast on one core; else on the
    /// writer's thread at once. A second thread costs a malloc arena (some 2.5 MB of RSS
    /// measured on the whole path) and, on one core, a switch for every wake-up, for nothing:
    /// it pays only when checkpoints take a real share of the writer's time and a second core
    /// can take them.
    Auto,
    /// Always on the checkpoint thread.
    Always,
    /// Always on the writer's thread, all at once (the collector waits while a checkpoint is
    /// encoded).
    Never,
    /// On the writer's thread, spread over the commits after it starts: each encodes heads
    /// for [`SPREAD_STEP`] and appends their blocks. What `Auto` does with heads that filled
    /// fast on one core.
    Spread,
}

/// How long a commit spends on a checkpoint spread over commits. At a 1 ms poll of 10,000
/// registers on one core, a whole checkpoint held the collector up for 20 to 40 ms, and the
/// batches that waited meanwhile in the channel (some 80,000 samples) held 6 to 10 MB of RSS.
pub const SPREAD_STEP: Duration = Duration::from_millis(1);

/// Heads filled faster than this are a busy historian's (at 10,000 tags read once a second
/// they fill in a minute or more), and so are heads filled at [`FILL_RATE_FAST`] or more
/// however long they took (at a 1 ms poll of 10,000 registers, some 1.7 M samples a second,
/// heads whose tags follow their request's first take a bit a sample and about 10 s to fill;
/// encoded at once, they held the collector for hundreds of milliseconds).
pub const FILLED_FAST: Duration = Duration::from_secs(10);

/// Samples a second into the heads from which they filled fast, whatever the time (ten times
/// 10,000 tags read once a second).
pub const FILL_RATE_FAST: f64 = 100_000.0;

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
    /// Records (blocks, WAL records) found corrupt when read, skipped; a block once, however
    /// many queries run into it.
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
    fn from_row((t, v, q): Row) -> Self {
        let quality = quality_from_code(q);
        Self { time: Timestamp::from_millis(t), value: quality.is_good().then_some(v), quality }
    }
}

/// A block's target size (smaller when the chunk log's segments are small, so that retention
/// can still drop a segment at a time). Memory holds 40 bytes a block: 1.6 MB for the default
/// 10 GB budget when full. Measured at 10,000 tags (BENCHMARKS.md), 1 MB blocks raised the
/// gateway's RSS by 1.1 MB more at the first checkpoint than 256 KB blocks did.
const BLOCK_BYTES_MAX: u64 = 256 << 10;

/// The most samples one head holds before a checkpoint starts. A checkpoint decodes a head
/// whole (18 bytes a sample: time, value, quality), and one tag read fast and steady takes two
/// bits a sample in its head: the heads' megabyte would hold 4 M samples of it, 72 MB decoded
/// at once. Measured, one steady tag, 3.5 M samples in batches of 1,000: heads of 2.1 M
/// samples (the WAL's bytes started the checkpoints) raised the peak RSS by 38 MB; with this
/// bound by 5 MB. This many decode into 4.7 MB, and still make chunks of 32 sections. A
/// writer's start folds the heads the WAL's replay fills at this bound too.
const HEAD_SAMPLES_ONE_MAX: usize = 1 << 18;

/// The version of the historian's formats that this build writes (see `crate::check_format`):
/// 5 since a chunk's values as distances from a running mean, in bins (`chunk.rs`,
/// `VALUE_MEANS`), and its times as an ANS code of their steps or as offsets from a grid
/// (`TIME_STEPS_ANS`, `TIME_GRID_ANS`, `ans.rs`);
/// 4 since the chunks' time steps as prefix codes (`chunk.rs`); 3 since the chunks' time steps
/// and value runs; 2 since the WAL's runs (`wal.rs`) and the chunks' constant columns; 1
/// before.
const FORMAT: u32 = 5;

/// Where one block is, and what it holds.
#[derive(Debug, Clone, Copy)]
struct BlockRef {
    seq: u64,
    tag_min: u32,
    tag_max: u32,
    time_min: i64,
    time_max: i64,
    /// The newest time of this block and every block before it (at the time it was added):
    /// where a search for a tag's last sample may stop.
    newest_so_far: i64,
}

/// One stored sample as the historian reads it: time (ms), value, quality code.
type Row = (i64, f64, u16);

/// Where one chunk record of one tag is (written before blocks), and what it holds.
#[derive(Debug, Clone, Copy)]
struct ChunkRef {
    seq: u64,
    time_min: i64,
    time_max: i64,
    /// The chunk whose times this one shares, if it does.
    times_from: Option<u64>,
}

#[cfg(test)]
thread_local! {
    /// Set by a test to open historians (on its thread) whose checkpoints fail from the start,
    /// the folds of a replay included.
    static FAIL_CHECKPOINTS_FROM_THE_START: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
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
    /// Each tag's path, by number, and each path's number: one copy of each path, shared.
    paths: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u32>,
    /// The gateway's `TagId` to the historian's tag number, for this run.
    bound: Vec<u32>,
    /// Per tag number, the resolution its values are stored to (0: as read), for this run.
    resolutions: Arc<[f64]>,
    heads: Vec<head::Head>,
    /// Heads sealed for a checkpoint not written yet (queries read them too).
    sealed: Option<Sealed>,
    /// The thread that encodes checkpoints, once one has been started (the writer's only).
    checkpointer: Option<Checkpointer>,
    /// When the last checkpoint started (or the historian was opened): how fast the heads fill.
    checkpoint_started: Instant,
    /// Samples a start's replay put in the heads, before any checkpoint (not counted in how
    /// fast they fill).
    replayed_samples: usize,
    /// The cores this process may run on (its affinity mask), as the writer was opened.
    cores: usize,
    /// Held by a test to keep a checkpoint on the checkpoint thread unfinished.
    #[cfg(test)]
    checkpoint_gate: Option<Arc<Mutex<()>>>,
    /// Set by a test to make every checkpoint's record fail to be written (from a start on,
    /// the replay's folds too, with [`FAIL_CHECKPOINTS_FROM_THE_START`]).
    #[cfg(test)]
    fail_checkpoints: bool,
    /// Where the last checkpoint a commit started was to be encoded (for the tests).
    #[cfg(test)]
    last_place: Option<Place>,
    /// How long a commit spends on a checkpoint spread over commits ([`SPREAD_STEP`]; a test
    /// sets zero: one head a commit).
    spread_step: Duration,
    head_samples: usize,
    /// The most samples one head holds (since the heads were last emptied).
    longest_head: usize,
    /// The heads' bytes (`Head::bytes`: streams and quality runs), summed.
    head_bytes: usize,
    /// Reused for each WAL record, to spare an allocation per batch.
    wal_buffer: Vec<u8>,
    /// Per tag, its chunk records of the format before blocks (none are written now).
    index: Vec<Vec<ChunkRef>>,
    blocks: Vec<BlockRef>,
    block_bytes_max: usize,
    /// Blocks found damaged by a query, each counted and logged once (queries take `&self`
    /// under the historian's lock).
    damaged: RefCell<BTreeSet<u64>>,
    /// Blocks opened by queries (for the tests).
    #[cfg(test)]
    blocks_opened: std::sync::atomic::AtomicU64,
    synced_at: Instant,
    stats: HistorianStats,
    /// The thread that syncs the WAL (with `config.sync_thread`), its job, a job's failure.
    syncs: Syncs,
    /// A WAL sync failed and cut what it covered from the WAL: the heads, which still hold
    /// those samples, are folded into blocks at the next commit.
    fold_after_failed_sync: bool,
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

impl HistorianWriter {
    /// Opens (or creates) the historian in `dir`, recovering from a crash if there was one.
    pub fn open(dir: &Path, config: HistorianConfig) -> Result<(HistorianWriter, HistorianReader), StoreError> {
        let sync_thread = config.sync_thread;
        let inner = Arc::new(Mutex::new(Inner::open(dir, config, true)?));
        if sync_thread {
            Syncs::spawn(&inner)?;
        }
        Ok((HistorianWriter { inner: Arc::clone(&inner) }, HistorianReader { inner }))
    }

    /// Says which asset path each of the gateway's tag ids (their index here) stands for,
    /// adding new tags to the dictionary; every tag is stored as read (resolutions bound
    /// before are dropped).
    pub fn bind_tags(&mut self, paths: &[&str]) -> Result<(), StoreError> {
        self.bind_tags_with_resolutions(paths, &[])
    }

    /// [`bind_tags`](Self::bind_tags), with each tag's stated resolution (by index, as the
    /// paths; missing or `None`: stored as read): the historian stores such a tag's values
    /// rounded to the nearest multiple of it (`0.01` keeps a temperature to a hundredth of a
    /// degree). Live values, the edge and upstream are not touched.
    pub fn bind_tags_with_resolutions(
        &mut self,
        paths: &[&str],
        resolutions: &[Option<f64>],
    ) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner)?;
        let bound = inner.numbers_of(paths)?;
        let mut by_number = vec![0.0; inner.paths.len()];
        for (number, r) in bound.iter().zip(resolutions) {
            if let (Some(slot), Some(r)) =
                (by_number.get_mut(*number as usize), r.filter(|r| r.is_finite() && *r > 0.0))
            {
                *slot = r;
            }
        }
        inner.resolutions = if by_number.iter().any(|r| *r > 0.0) { by_number.into() } else { Arc::from([]) };
        inner.bound = bound;
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

    /// Its sync thread's test hooks, if it has a thread (the `test-hooks` feature).
    #[cfg(feature = "test-hooks")]
    pub fn sync_hooks(&self) -> Option<Arc<crate::SyncHooks>> {
        lock(&self.inner).ok()?.syncs.hooks()
    }

    /// Syncs everything appended, whatever the policy (at shutdown).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        // A sync job still running finishes first: then this one syncs the rest here.
        let mut inner = Syncs::wait_idle(lock(&self.inner)?)?;
        inner.commit(true)?;
        inner.syncs.take_failure()
    }

    /// How long until a commit will sync what is appended but not synced yet (zero: the next
    /// commit will); `None` when everything appended is synced, or never will be by policy.
    pub fn sync_due_in(&self) -> Result<Option<Duration>, StoreError> {
        Ok(lock(&self.inner)?.sync_due_in())
    }

    /// A watermark of what is appended: the WAL record the last append wrote. Every sample
    /// appended so far is durable once [`HistorianWriter::durable_through`] reaches it (with a
    /// sync thread, a commit that returns does not say so).
    pub fn appended_through(&self) -> Result<u64, StoreError> {
        Ok(lock(&self.inner)?.wal.next_seq() - 1)
    }

    /// The last WAL record synced: see [`HistorianWriter::appended_through`].
    pub fn durable_through(&self) -> Result<u64, StoreError> {
        Ok(lock(&self.inner)?.wal.durable_seq())
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
        Ok(lock(&self.inner)?.paths.iter().map(|p| p.to_string()).collect())
    }

    /// The stored samples of `path` with `from <= time < to`, in time order.
    pub fn raw(&self, path: &str, from: Timestamp, to: Timestamp) -> Result<Vec<StoredSample>, StoreError> {
        let inner = lock(&self.inner)?;
        let Some(&tag) = inner.numbers.get(path) else { return Ok(Vec::new()) };
        let columns = inner.columns(tag, from.as_millis(), to.as_millis())?;
        Ok(columns.into_iter().map(StoredSample::from_row).collect())
    }

    /// As [`raw`](Self::raw), reading no further than `max` samples: `Err` with the count read
    /// once more are found (at most `max` and one stored section more are ever held).
    pub fn raw_at_most(
        &self,
        path: &str,
        from: Timestamp,
        to: Timestamp,
        max: usize,
    ) -> Result<Result<Vec<StoredSample>, usize>, StoreError> {
        let inner = lock(&self.inner)?;
        let Some(&tag) = inner.numbers.get(path) else { return Ok(Ok(Vec::new())) };
        Ok(match inner.columns_at_most(tag, from.as_millis(), to.as_millis(), max)? {
            Ok(rows) => Ok(rows.into_iter().map(StoredSample::from_row).collect()),
            Err(read) => Err(read.len()),
        })
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
        let last = inner.last_of_every_tag()?;
        Ok(inner
            .paths
            .iter()
            .zip(last)
            .filter_map(|(path, row)| Some((path.to_string(), StoredSample::from_row(row?))))
            .collect())
    }

    /// The end (exclusive, ms) of the stored chunk of `path` that holds `at_ms`, if one does.
    fn chunk_end(&self, path: &str, at_ms: i64) -> Result<Option<i64>, StoreError> {
        let inner = lock(&self.inner)?;
        let Some(&tag) = inner.numbers.get(path) else { return Ok(None) };
        inner.chunk_end(tag, at_ms)
    }

    /// Points of `path` in `[from_ms, to_ms)`, plus (if `carry`) the last one before `from_ms`.
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

impl SyncTarget for Inner {
    const NAME: &'static str = "historian";
    const POISONED: &'static str = "the historian lock was poisoned by a panic";

    fn sync_state(&mut self) -> &mut Syncs {
        &mut self.syncs
    }

    /// What a WAL sync job covered is durable; if it failed, what it covered was cut from the
    /// WAL, and the heads, which still hold those samples, are folded at the next commit.
    fn finish_sync(&mut self, done: Finished) {
        for (log, job, result) in done {
            if log == CHUNK_LOG {
                match self.chunks.finish_sync(job, result) {
                    Ok(durable) => self.checkpoint_durable(durable),
                    Err(e) => {
                        // The blocks and the record it covered are cut: the sealed heads, which
                        // still hold their samples, are encoded again (the WAL still holds them).
                        log::error!("historian: {e}; the checkpoint it covered is encoded again");
                        if let Some(sealed) =
                            self.sealed.as_mut().filter(|s| matches!(s.encoding, Encoding::Written(_)))
                        {
                            sealed.encoding = Encoding::spread();
                        }
                        self.syncs.failed(e);
                    }
                }
                continue;
            }
            if let Err(e) = self.wal.finish_sync(job, result) {
                log::error!("historian: {e}; the samples it covered are folded into blocks from memory");
                self.fold_after_failed_sync = true;
                self.syncs.failed(e);
            }
        }
        self.syncs.done();
    }
}

impl Inner {
    fn open(dir: &Path, config: HistorianConfig, write: bool) -> Result<Self, StoreError> {
        let lock = if write { Some(crate::lock_dir(dir)?) } else { None };
        crate::check_format(dir, "historian", FORMAT, write)?;
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
        let paths: Vec<Arc<str>> = paths.into_iter().map(Arc::from).collect();
        let numbers = paths.iter().enumerate().map(|(i, p)| (Arc::clone(p), i as u32)).collect();
        let mut stats = HistorianStats::default();
        stats.recovery.corrupt_records = chunks.recovery.corrupt_records + wal.recovery.corrupt_records;
        stats.recovery.torn_bytes = chunks.recovery.torn_bytes + wal.recovery.torn_bytes;
        let mut inner = Self {
            _lock: lock,
            dir: dir.to_owned(),
            heads: vec![head::Head::default(); paths.len()],
            sealed: None,
            checkpointer: None,
            checkpoint_started: Instant::now(),
            replayed_samples: 0,
            cores: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            #[cfg(test)]
            checkpoint_gate: None,
            #[cfg(test)]
            fail_checkpoints: FAIL_CHECKPOINTS_FROM_THE_START.get(),
            #[cfg(test)]
            last_place: None,
            spread_step: SPREAD_STEP,
            index: Vec::new(),
            blocks: Vec::new(),
            block_bytes_max: (segment_bytes / 4).min(BLOCK_BYTES_MAX) as usize,
            paths,
            numbers,
            bound: Vec::new(),
            resolutions: Arc::from([]),
            config,
            wal,
            chunks,
            head_samples: 0,
            longest_head: 0,
            head_bytes: 0,
            wal_buffer: Vec::new(),
            damaged: RefCell::default(),
            #[cfg(test)]
            blocks_opened: Default::default(),
            synced_at: Instant::now(),
            stats,
            syncs: Syncs::default(),
            fold_after_failed_sync: false,
        };
        let wal_seq = inner.index_chunks()?;
        inner.replay_wal(wal_seq)?;
        if inner.head_samples > 0 || inner.stats.checkpoints > 0 {
            // Heads a start's replay filled did not fill fast: the first checkpoint's place is
            // not judged by them (nor by a fold at the replay's last record).
            inner.checkpoint_started = Instant::now().checked_sub(FILLED_FAST).unwrap_or(inner.checkpoint_started);
            inner.replayed_samples = inner.head_samples;
        }
        Ok(inner)
    }

    /// Builds the chunk index from the chunk log; returns the WAL sequence number the last
    /// complete checkpoint covers.
    fn index_chunks(&mut self) -> Result<u64, StoreError> {
        let mut pending: Vec<(u32, ChunkRef)> = Vec::new();
        let mut pending_blocks: Vec<(BlockRef, u32)> = Vec::new();
        let mut covered = 0;
        let mut complete: Vec<(u32, ChunkRef)> = Vec::new();
        let mut blocks: Vec<(BlockRef, u32)> = Vec::new();
        let prefix_bytes = chunk::PREFIX_BYTES.max(chunk::BLOCK_PREFIX_BYTES);
        self.chunks.scan_prefixes(prefix_bytes, |seq, _, prefix| match chunk::entry(prefix) {
            Some(chunk::Entry::Chunk { tag, time_min, time_max, times_from, .. }) => {
                pending.push((tag, ChunkRef { seq, time_min, time_max, times_from }))
            }
            Some(chunk::Entry::Block(p)) => pending_blocks.push((block_ref(seq, &p), p.sections)),
            Some(chunk::Entry::Checkpoint { wal_seq, first_chunk_seq }) => {
                complete.extend(pending.drain(..).filter(|(_, c)| c.seq >= first_chunk_seq));
                blocks.extend(pending_blocks.drain(..).filter(|(b, _)| b.seq >= first_chunk_seq));
                covered = wal_seq;
            }
            None => {}
        })?;
        for (block, sections) in blocks {
            self.push_block(block);
            self.stats.chunks += u64::from(sections);
        }
        for (tag, c) in complete {
            // Only tags of the dictionary: a number from bad bytes must not size the tables.
            if tag as usize >= self.paths.len() {
                self.stats.recovery.corrupt_records += 1;
                continue;
            }
            self.ensure_tag(tag);
            if self.index.len() <= tag as usize {
                self.index.resize(self.paths.len(), Vec::new());
            }
            self.index[tag as usize].push(c);
            self.stats.chunks += 1;
        }
        Ok(covered)
    }

    fn replay_wal(&mut self, after: u64) -> Result<(), StoreError> {
        let mut from = after + 1;
        let mut fold = self._lock.is_some();
        loop {
            let records = self.wal.read(from, 1024, 16 << 20)?;
            let Some(last) = records.last().map(|r| r.seq) else { break };
            for r in records {
                let (mut outside, mut pushed) = (0u64, 0usize);
                let mut run = Run::default();
                let read = wal::read(&r.payload, |tag, time, value, quality| {
                    match self.push_to_head(tag, time, value, quality, &mut run) {
                        true => pushed += 1,
                        false => outside += 1,
                    }
                });
                self.head_samples += pushed;
                if outside > 0 || read.is_err() {
                    self.stats.recovery.corrupt_records += 1;
                }
                if let Err(what) = read {
                    log::warn!(
                        "historian: WAL record {} of {}: {what}; its samples after that are skipped",
                        r.seq,
                        self.dir.display()
                    );
                }
                // A WAL longer than the heads may hold (checkpoints failed while it grew, or
                // the bounds were lowered since) is folded into blocks as the heads fill,
                // through this record; the WAL stays until the next checkpoint drops it. A
                // reader writes nothing: it holds what it replays; so does a writer whose fold
                // failed. (The tags' resolutions are not bound yet: pco finds their multiples
                // itself, the same size measured, some microseconds more a chunk.)
                if fold
                    && self.heads_full()
                    && let Err(e) = self.fold_heads(r.seq)
                {
                    log::warn!(
                        "historian {}: heads replayed from the WAL could not be folded into blocks ({e}); the rest of the WAL is held in memory",
                        self.dir.display()
                    );
                    fold = false;
                }
            }
            from = last + 1;
        }
        Ok(())
    }

    /// One sample into its tag's head, its bytes counted against the heads' bounds (the caller
    /// counts the samples it took); `false` for a tag the dictionary does not know (a WAL
    /// record from outside it). `run.leader`: the tag whose head took the sample before this
    /// one in its batch, and its time. A sample with that very time is of the same request:
    /// its head follows that tag's (holds no times of its own) if it is empty and that head
    /// has just this one sample. A head goes on following its
    /// leader while the leader is one sample ahead at this time, whichever tag came before
    /// (two requests answered in the same millisecond); it moves to the batch's leader if that
    /// one followed its own leader until this very sample ([`Run::converted`]). A head that
    /// can no longer follow takes its own times ([`Self::stop_following`]) and leads.
    #[inline(always)]
    fn push_to_head(&mut self, tag: u32, time: i64, value: f64, quality: u16, run: &mut Run) -> bool {
        let t = tag as usize;
        if t >= self.heads.len() || t >= self.paths.len() {
            return false;
        }
        let leader = match run.leader {
            Some((leader, at)) if at == time && leader != tag && (leader as usize) < self.heads.len() => Some(leader),
            _ => None,
        };
        let ahead_at_this_time = |heads: &[head::Head], leader: u32, len: usize| {
            heads.get(leader as usize).is_some_and(|l| l.last_time() == Some(time) && l.len() == len + 1)
        };
        let head = &self.heads[t];
        let follow = match head.follows() {
            // Its own leader, one sample ahead at this time.
            Some(own) if ahead_at_this_time(&self.heads, own, head.len()) => Some(own),
            // The batch's leader, which followed the same leader for as many samples as this
            // one has, then took its own times (the same times) at this sample.
            Some(own) => leader.filter(|&l| {
                run.converted == Some((l, own, head.len())) && ahead_at_this_time(&self.heads, l, head.len())
            }),
            None => leader.filter(|&l| head.is_empty() && ahead_at_this_time(&self.heads, l, 0)),
        };
        // A follower is never longer than its leader: only a head with times of its own can
        // be the longest.
        if let Some(leader) = follow {
            let head = &mut self.heads[t];
            head.follow(leader);
            self.head_bytes += head.push_following(value, quality);
        } else {
            if let Some(own) = head.follows() {
                let len = head.len();
                self.stop_following(t);
                run.converted = Some((tag, own, len));
            }
            if leader.is_none() {
                run.leader = Some((tag, time));
            }
            let head = &mut self.heads[t];
            self.head_bytes += head.push(time, value, quality);
            self.longest_head = self.longest_head.max(head.len());
        }
        true
    }

    /// A head that follows a leader made into one with its own times (the leader's so far).
    /// Its followers' times are its own so far: they may follow it from here on
    /// ([`Run::converted`]).
    fn stop_following(&mut self, t: usize) {
        let Some(columns) = head_columns(&self.heads, t) else {
            // The leader's stream or this one's did not read back: a bug, since neither leaves
            // memory. Its samples are counted lost (the WAL holds them until the next
            // checkpoint, and a start before it replays them).
            log::error!(
                "historian {}: tag {t}'s head did not read back; its samples are counted lost",
                self.dir.display()
            );
            self.stats.samples_lost += self.heads[t].len() as u64;
            self.head_samples = self.head_samples.saturating_sub(self.heads[t].len());
            self.head_bytes -= self.heads[t].bytes();
            self.heads[t] = head::Head::default();
            return;
        };
        let mut own = head::Head::default();
        for i in 0..columns.len() {
            let _added = own.push(columns.times[i], columns.values[i], columns.quality[i]);
        }
        self.head_bytes = self.head_bytes - self.heads[t].bytes() + own.bytes();
        self.heads[t] = own;
    }

    fn ensure_tag(&mut self, tag: u32) {
        let n = tag as usize + 1;
        if self.heads.len() < n {
            self.heads.resize(n, head::Head::default());
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
        // Room for exactly the tags there are (one at a time, the tables would double).
        self.paths.reserve_exact(new.len());
        self.heads.reserve_exact((self.paths.len() + new.len()).saturating_sub(self.heads.len()));
        for path in new {
            let n = self.paths.len() as u32;
            let path: Arc<str> = Arc::from(path);
            self.paths.push(Arc::clone(&path));
            self.numbers.insert(path, n);
            self.ensure_tag(n);
        }
        Ok(numbers)
    }

    /// One WAL record per call, and each sample into its tag's head. A sample whose WAL
    /// record cannot be written stays in the head (it is not acknowledged; a later checkpoint
    /// may still keep it).
    fn append(&mut self, samples: &[Sample]) -> Result<(), StoreError> {
        let mut record = wal::RecordBuilder::new(std::mem::take(&mut self.wal_buffer));
        let (mut run, mut pushed) = (Run::default(), 0usize);
        let mut last_time = (Timestamp(0), 0);
        for s in samples {
            let Some(&tag) = self.bound.get(s.tag.0 as usize) else { continue };
            let resolution = self.resolutions.get(tag as usize).copied().filter(|&r| r > 0.0);
            // The value, and its form in the WAL: a whole number's from its range, without a
            // float conversion (a cost seen in the ingest's profile).
            let (value, stored) = match (&s.value, resolution) {
                (Some(Value::Text(_) | Value::Waveform(_)), _) => {
                    self.stats.text_samples_skipped += 1;
                    continue;
                }
                // A bool stays 0 or 1 whatever the tag's resolution (an OPC UA or Sparkplug
                // tag may carry one though its type is a number).
                (Some(Value::Bool(b)), _) => (f64::from(u8::from(*b)), wal::Stored { width: 2, word: u64::from(*b) }),
                (Some(Value::U64(v)), None) => (*v as f64, wal::Stored::of_u64(*v)),
                (Some(Value::I64(v)), None) => (*v as f64, wal::Stored::of_i64(*v)),
                (Some(Value::F64(v)), None) => (*v, wal::Stored::of(*v)),
                (Some(Value::U64(_) | Value::I64(_) | Value::F64(_)), Some(r)) => {
                    let value = chunk::to_resolution(s.value.as_ref().and_then(Value::as_f64).unwrap_or(0.0), r);
                    (value, wal::Stored::of(value))
                }
                (None, _) => (0.0, wal::Stored { width: 2, word: 0 }),
            };
            // Samples of one request have one time: it is converted to milliseconds once.
            if s.gateway_time != last_time.0 {
                last_time = (s.gateway_time, s.gateway_time.as_millis());
            }
            let (time, quality) = (last_time.1, quality_code(s.quality));
            record.push_stored(tag, time, value, stored, quality);
            pushed += usize::from(self.push_to_head(tag, time, value, quality, &mut run));
        }
        self.head_samples += pushed;
        let rows = record.samples();
        self.stats.samples += rows as u64;
        let payload = record.finish();
        let result = match samples.last() {
            Some(last) if rows > 0 => self.wal.append(last.gateway_time, &payload).map(|_| ()),
            _ => Ok(()),
        };
        self.wal_buffer = payload;
        if result.is_err() {
            self.bound_heads_after_failure();
        }
        result
    }

    fn commit(&mut self, force_sync: bool) -> Result<bool, StoreError> {
        let commit = self.config.fsync.commit_now(self.synced_at, force_sync);
        // With a sync thread, a commit that is due to sync writes, and hands the sync over.
        let handed_over = commit == Some(true) && !force_sync && self.syncs.threaded();
        // While a sync job runs, the disk is slow to take writes too: a commit writes nothing
        // (the WAL's buffer holds it, see `Log::append`), and a checkpoint waits.
        let disk_busy = self.syncs.running() && !force_sync;
        if let Some(sync) = commit.filter(|_| !disk_busy) {
            if let Err(e) = self.wal.commit(sync && !handed_over) {
                self.bound_heads_after_failure();
                return Err(e);
            }
            if sync && !handed_over {
                self.synced_at = Instant::now();
            }
            if handed_over {
                self.start_sync_job()?;
            }
        }
        // A checkpoint the checkpoint thread has encoded is written, or a step of one spread
        // over commits taken (all of it at the stop's sync); the next one starts when the WAL
        // since the last one, or the heads, are full.
        if !disk_busy && let Err(e) = self.finish_checkpoint(force_sync) {
            self.bound_heads_after_failure();
            return Err(e);
        }
        let wal_since = self.wal.bytes().saturating_sub(self.sealed.as_ref().map_or(0, |s| s.wal_bytes));
        let place = match self.config.checkpoint_thread {
            CheckpointThread::Always => Place::Thread,
            CheckpointThread::Never => Place::AtOnce,
            CheckpointThread::Spread => Place::Spread,
            CheckpointThread::Auto if !self.filled_fast() => Place::AtOnce,
            CheckpointThread::Auto if self.cores > 1 => Place::Thread,
            CheckpointThread::Auto => Place::Spread,
        };
        let due = wal_since >= self.config.wal_bytes_max || self.heads_full() || self.fold_after_failed_sync;
        if due
            && (!disk_busy || self.heads_twice_full())
            && let Err(e) = self.start_checkpoint(place)
        {
            self.bound_heads_after_failure();
            return Err(e);
        }
        self.syncs.take_failure()?;
        Ok(match self.syncs.threaded() {
            true => self.wal.durable_seq() + 1 == self.wal.next_seq(),
            false => commit == Some(true) || self.config.fsync == FsyncPolicy::Never,
        })
    }

    /// Hands the WAL's sync to the sync thread (or, if it is gone, syncs it here).
    fn start_sync_job(&mut self) -> Result<(), StoreError> {
        let mut jobs: Vec<(usize, SyncJob)> = self.wal.start_sync()?.map(|job| (WAL_LOG, job)).into_iter().collect();
        // The chunk log's, when a written checkpoint waits for it ([`Encoding::Written`]). If
        // it cannot start, the WAL's goes alone, and the next job tries again.
        let mut failed = None;
        if self.sealed.as_ref().is_some_and(|s| matches!(s.encoding, Encoding::Written(_))) {
            match self.syncs.injected_start_failure(CHUNK_LOG, &self.dir).and_then(|()| self.chunks.start_sync()) {
                Ok(job) => jobs.extend(job.map(|job| (CHUNK_LOG, job))),
                Err(e) => failed = Some(e),
            }
        }
        if !jobs.is_empty() {
            self.synced_at = Instant::now();
            Syncs::hand_over(self, jobs);
        }
        failed.map_or(Ok(()), Err)
    }

    /// How long until a commit will sync what is appended and not synced yet; `None` when
    /// nothing waits, or never will be synced by policy. (Under an interval every commit of
    /// the WAL syncs, so what is committed is synced.)
    fn sync_due_in(&self) -> Option<Duration> {
        match self.config.fsync {
            FsyncPolicy::Interval(every) if self.wal.next_seq() > self.wal.durable_seq() + 1 => {
                Some(every.saturating_sub(self.synced_at.elapsed()))
            }
            _ => None,
        }
    }

    /// Whether the policy syncs at all (else writes are left to the kernel).
    fn syncs(&self) -> bool {
        self.config.fsync != FsyncPolicy::Never
    }

    /// Drops the WAL's segments a durable checkpoint covers through `wal_seq`. With a sync
    /// thread, their files are removed by its next job, not on the writer's thread.
    fn drop_wal_through(&mut self, wal_seq: u64) -> Result<(), StoreError> {
        if self.syncs_on_thread() {
            self.wal.drop_through_later(wal_seq);
            return Ok(());
        }
        self.wal.drop_through(wal_seq, self.wal_syncs_here()).map(|_| ())
    }

    /// Whether syncs are made, on the sync thread.
    fn syncs_on_thread(&self) -> bool {
        self.syncs() && self.syncs.threaded()
    }

    /// Whether a checkpoint's seal of the WAL and its drop of the WAL it covers sync here;
    /// with a sync thread they go with its next job (the checkpoint's blocks are synced
    /// before its record: what the WAL held is on disk there).
    fn wal_syncs_here(&self) -> bool {
        self.syncs() && !self.syncs.threaded()
    }

    /// Whether the heads hold as much as memory (or a start's replay) may take.
    fn heads_full(&self) -> bool {
        self.head_samples >= self.config.head_samples_max
            || self.head_bytes >= self.config.head_bytes_max
            || self.longest_head >= HEAD_SAMPLES_ONE_MAX
    }

    /// Whether the heads filled fast since the last checkpoint started: within [`FILLED_FAST`],
    /// or at [`FILL_RATE_FAST`] (not counting what a start's replay put in them).
    fn filled_fast(&self) -> bool {
        let took = self.checkpoint_started.elapsed();
        let taken = self.head_samples.saturating_sub(self.replayed_samples) as f64;
        took < FILLED_FAST || taken >= FILL_RATE_FAST * took.as_secs_f64()
    }

    /// Whether the heads hold twice their bounds: a checkpoint waits for a busy disk up to here.
    fn heads_twice_full(&self) -> bool {
        self.head_samples >= 2 * self.config.head_samples_max
            || self.head_bytes >= 2 * self.config.head_bytes_max
            || self.longest_head >= 2 * HEAD_SAMPLES_ONE_MAX
    }

    /// When the disk refuses writes, the heads may not grow past their bound: try to fold them
    /// into chunks, and if that fails too, let them go, and the sealed ones with them (counted;
    /// memory holds at most the heads' bound twice: fresh heads and sealed ones).
    fn bound_heads_after_failure(&mut self) {
        // The memory bounds only: one long head is a reason to start a checkpoint, not to let
        // samples go.
        if self.head_samples < self.config.head_samples_max && self.head_bytes < self.config.head_bytes_max {
            return;
        }
        if self.checkpoint().is_err() {
            let sealed = self.sealed.take().map_or(0, |s| s.samples);
            self.stats.samples_lost += (self.head_samples + sealed) as u64;
            self.heads.iter_mut().for_each(|h| *h = head::Head::default());
            self.head_samples = 0;
            self.head_bytes = 0;
            self.longest_head = 0;
        }
    }

    /// Folds every head into blocks now, on this thread: a checkpoint still being encoded is
    /// finished first, so that when this returns every sample taken is in the chunk log.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.start_checkpoint(Place::AtOnce)?;
        // Asked for (a stop, a bench, a test): the WAL it covers is gone when it returns, not
        // at the sync thread's next job, which may never come.
        self.wal.remove_dropped(self.syncs())
    }

    /// Starts a checkpoint of every head, after finishing one still being encoded (waiting for
    /// it). On the thread (if there is one to take them) or spread over commits, the heads are
    /// sealed, fresh heads take the samples from here on, and later commits write the blocks;
    /// at once, the heads are encoded where they lie and their blocks written one by one as
    /// they fill (memory holds one block, not the checkpoint's).
    fn start_checkpoint(&mut self, place: Place) -> Result<(), StoreError> {
        self.finish_checkpoint(true)?;
        let sync = self.wal_syncs_here();
        let wal_seq = self.wal.seal(sync)?;
        // The heads sealed below hold every sample the failed sync cut from the WAL.
        self.fold_after_failed_sync = false;
        self.checkpoint_started = Instant::now();
        self.replayed_samples = 0;
        #[cfg(test)]
        {
            self.last_place = Some(place);
        }
        let thread = place == Place::Thread && self.checkpoint_thread_ready();
        if thread || place == Place::Spread {
            let fresh = vec![head::Head::default(); self.heads.len()];
            let heads = Arc::new(std::mem::replace(&mut self.heads, fresh));
            let mut encoding = Encoding::spread();
            if thread {
                let job = Job {
                    heads: Arc::clone(&heads),
                    form: self.form(),
                    #[cfg(test)]
                    gate: self.checkpoint_gate.clone(),
                };
                let sent = self.checkpointer.as_ref().map(|c| c.jobs.send(job));
                // A thread that stopped between the look and the hand-over: encoded here now.
                if matches!(sent, Some(Ok(()))) {
                    encoding = Encoding::Thread;
                }
            }
            let now = thread && !matches!(encoding, Encoding::Thread);
            self.sealed = Some(Sealed {
                heads,
                wal_seq,
                wal_bytes: self.wal.bytes(),
                samples: std::mem::take(&mut self.head_samples),
                encoding,
            });
            self.head_bytes = 0;
            self.longest_head = 0;
            return if now { self.finish_checkpoint(true) } else { Ok(()) };
        }
        self.fold_heads(wal_seq)?;
        self.drop_wal_through(wal_seq)?;
        Ok(())
    }

    /// Encodes the heads where they lie, writes their blocks and a checkpoint record covering
    /// the WAL through `wal_seq`, and empties them. If that fails they still hold the samples.
    fn fold_heads(&mut self, wal_seq: u64) -> Result<(), StoreError> {
        let first_chunk_seq = self.chunks.next_seq();
        let heads = std::mem::take(&mut self.heads);
        let written = self.encode_into_chunk_log(&heads);
        self.heads = heads;
        let (added, sections) = written?;
        self.write_checkpoint_record(wal_seq, first_chunk_seq, added, sections)?;
        for h in &mut self.heads {
            *h = head::Head::default();
        }
        self.head_samples = 0;
        self.head_bytes = 0;
        self.longest_head = 0;
        Ok(())
    }

    /// Whether the checkpoint thread is there to take a checkpoint (started on first use).
    fn checkpoint_thread_ready(&mut self) -> bool {
        if self.checkpointer.as_ref().is_some_and(|c| !c.running()) {
            log::error!(
                "historian {}: the checkpoint thread stopped; a new one takes the next checkpoint",
                self.dir.display()
            );
            self.checkpointer = None;
        }
        if self.checkpointer.is_none() {
            match Checkpointer::start() {
                Ok(c) => self.checkpointer = Some(c),
                Err(e) => log::warn!(
                    "historian {}: no checkpoint thread ({e}); this checkpoint is encoded on the writer's thread",
                    self.dir.display()
                ),
            }
        }
        self.checkpointer.is_some()
    }

    /// How this historian's heads are encoded now.
    fn form(&self) -> Form {
        Form {
            codec: self.config.codec,
            block_bytes_max: self.block_bytes_max,
            resolutions: Arc::clone(&self.resolutions),
        }
    }

    /// Encodes `heads` and appends their blocks to the chunk log as each fills (not
    /// committed): the blocks, and how many chunks they hold.
    fn encode_into_chunk_log(&mut self, heads: &[head::Head]) -> Result<(Vec<BlockRef>, u64), StoreError> {
        let mut added = Vec::new();
        let form = self.form();
        let dir = &self.dir;
        let chunks = &mut self.chunks;
        let sections = encode_heads(
            heads,
            &form,
            |what| StoreError::Corrupt { path: dir.clone(), what },
            |bytes, prefix| {
                added.push(append_block(chunks, &bytes, &prefix)?);
                Ok(())
            },
        )?;
        Ok((added, sections))
    }

    /// Appends a checkpoint's record after its blocks, syncs the chunk log, and indexes the
    /// blocks.
    fn write_checkpoint_record(
        &mut self,
        wal_seq: u64,
        first_chunk_seq: u64,
        added: Vec<BlockRef>,
        sections: u64,
    ) -> Result<(), StoreError> {
        self.append_checkpoint_record(wal_seq, first_chunk_seq, &added)?;
        self.chunks.commit(self.syncs())?;
        self.index_checkpoint(added, sections);
        Ok(())
    }

    /// A checkpoint's record onto the chunk log (not committed); returns its sequence number.
    fn append_checkpoint_record(
        &mut self,
        wal_seq: u64,
        first_chunk_seq: u64,
        added: &[BlockRef],
    ) -> Result<u64, StoreError> {
        #[cfg(test)]
        if self.fail_checkpoints {
            return Err(StoreError::Invariant("a test fails every checkpoint"));
        }
        // Stamped with the newest data time, so that retention by age sees data time only.
        let newest = added.iter().map(|b| b.time_max).max().unwrap_or(0);
        self.chunks.append(Timestamp::from_millis(newest), &chunk::encode_checkpoint(wal_seq, first_chunk_seq))
    }

    /// A durable checkpoint's blocks into the index, counted.
    fn index_checkpoint(&mut self, added: Vec<BlockRef>, sections: u64) {
        self.stats.chunks += sections;
        self.stats.checkpoints += 1;
        for block in added {
            self.push_block(block);
        }
    }

    /// Writes the sealed heads' blocks, if there are sealed heads: those the checkpoint thread
    /// has encoded (waiting for them if `wait`, else only if done), or encoded here (spread
    /// over commits: a step of [`SPREAD_STEP`], or to the end if `wait`). A checkpoint that
    /// fails leaves them sealed (queries still read them) and is encoded again from its first
    /// head, spread over the commits that follow (its blocks appended so far are left without
    /// a record: a start ignores them).
    fn finish_checkpoint(&mut self, wait: bool) -> Result<(), StoreError> {
        let Some(sealed) = self.sealed.as_mut() else { return Ok(()) };
        if let Encoding::Written(written) = &sealed.encoding {
            // Waiting for the sync thread's job; one that must not wait syncs here (what a
            // running job holds too), which makes the record durable.
            if !wait {
                return Ok(());
            }
            let record_seq = written.record_seq;
            self.chunks.commit(true)?;
            self.checkpoint_durable(record_seq);
            return Ok(());
        }
        let (wal_seq, heads) = (sealed.wal_seq, Arc::clone(&sealed.heads));
        let (first_chunk_seq, added, sections) = match &mut sealed.encoding {
            Encoding::Thread => {
                let done = self.checkpointer.as_ref().map(|c| if wait { c.wait() } else { c.done.try_recv().ok() });
                let encoded = match done {
                    Some(Some(result)) => result,
                    Some(None) if !wait && self.checkpointer.as_ref().is_some_and(Checkpointer::running) => {
                        return Ok(());
                    }
                    _ => {
                        log::error!(
                            "historian {}: the checkpoint thread stopped; its checkpoint is encoded on the writer's thread, and a new thread takes the next",
                            self.dir.display()
                        );
                        self.checkpointer = None;
                        sealed.encoding = Encoding::spread();
                        return self.finish_checkpoint(wait);
                    }
                };
                // Blocks not written are encoded again next time (a checkpoint that failed).
                sealed.encoding = Encoding::spread();
                let encoded = encoded.map_err(|what| StoreError::Corrupt { path: self.dir.clone(), what })?;
                let first_chunk_seq = self.chunks.next_seq();
                let added: Result<Vec<BlockRef>, StoreError> = encoded
                    .blocks
                    .iter()
                    .map(|(bytes, prefix)| append_block(&mut self.chunks, bytes, prefix))
                    .collect();
                (first_chunk_seq, added?, encoded.sections)
            }
            Encoding::Spread(spread) => {
                let until = Instant::now() + self.spread_step;
                // Taken at the first block this encoding appends, not before: the blocks of an
                // attempt that failed lie before it, and a start ignores them.
                let first_chunk_seq = *spread.first_chunk_seq.get_or_insert(self.chunks.next_seq());
                let form = Form {
                    codec: self.config.codec,
                    block_bytes_max: self.block_bytes_max,
                    resolutions: Arc::clone(&self.resolutions),
                };
                let (chunks, dir) = (&mut self.chunks, &self.dir);
                let encoded = spread.encoder.encode(
                    &heads,
                    &form,
                    |what| StoreError::Corrupt { path: dir.clone(), what },
                    |bytes, prefix| {
                        spread.added.push(append_block(chunks, &bytes, &prefix)?);
                        Ok(())
                    },
                    || wait || Instant::now() < until,
                );
                match encoded {
                    Ok(false) => return Ok(()),
                    Ok(true) => {
                        let done = (first_chunk_seq, std::mem::take(&mut spread.added), spread.encoder.sections);
                        // If the record fails, its heads are encoded again from the first.
                        sealed.encoding = Encoding::spread();
                        done
                    }
                    Err(e) => {
                        sealed.encoding = Encoding::spread();
                        return Err(e);
                    }
                }
            }
            Encoding::Written(_) => return Ok(()),
        };
        drop(heads);
        if !wait && self.syncs_on_thread() {
            // The record's sync goes with the sync thread's next job ([`Encoding::Written`]).
            let record_seq = self.append_checkpoint_record(wal_seq, first_chunk_seq, &added)?;
            self.chunks.commit(false)?;
            if let Some(sealed) = self.sealed.as_mut() {
                sealed.encoding = Encoding::Written(Box::new(Written { first_chunk_seq, added, sections, record_seq }));
            }
            return Ok(());
        }
        self.write_checkpoint_record(wal_seq, first_chunk_seq, added, sections)?;
        self.sealed = None;
        self.drop_wal_through(wal_seq)?;
        Ok(())
    }

    /// The chunk log is durable through `durable`: a written checkpoint whose record it holds
    /// is done ([`Encoding::Written`]): its blocks are indexed, its sealed heads let go, and
    /// the WAL it covers dropped (its files removed by the sync thread's next job).
    fn checkpoint_durable(&mut self, durable: u64) {
        let durable_now = |s: &mut Sealed| matches!(&s.encoding, Encoding::Written(w) if w.record_seq <= durable);
        let Some(Sealed { encoding: Encoding::Written(written), wal_seq, .. }) = self.sealed.take_if(durable_now)
        else {
            return;
        };
        self.index_checkpoint(written.added, written.sections);
        if let Err(e) = self.drop_wal_through(wal_seq) {
            // Only a drop made here fails (no sync thread); the next checkpoint drops it.
            log::warn!("historian {}: the WAL a checkpoint covers was not dropped ({e})", self.dir.display());
        }
    }

    fn push_block(&mut self, mut block: BlockRef) {
        block.newest_so_far = self.blocks.last().map_or(block.time_max, |b| b.newest_so_far.max(block.time_max));
        self.blocks.push(block);
    }

    /// A block that cannot be read as one (corrupt bytes since it was checked at open): counted
    /// and logged the first time a query finds it, and every query goes on without it.
    fn skip_corrupt(&self, seq: u64, what: &str) {
        if self.damaged.borrow_mut().insert(seq) {
            self.chunks.corrupt_reads.fetch_add(1, Relaxed);
            log::error!("{}: block {seq} is damaged ({what}); queries skip it", self.dir.join("chunks").display());
        }
    }

    /// `f(block, section)` for every section of `tag` in `blocks`, in the order given. A block
    /// found damaged is skipped (counted and logged); a file that cannot be read is an error.
    fn for_each_section(
        &self,
        tag: u32,
        blocks: impl Iterator<Item = BlockRef>,
        mut f: impl FnMut(&chunk::Block<'_, RecordReader>, u32) -> Result<(), chunk::BlockError>,
    ) -> Result<(), StoreError> {
        for b in blocks {
            if tag < b.tag_min || tag > b.tag_max {
                continue;
            }
            // `None`: retention removed it.
            let Some(reader) = self.chunks.open_record(b.seq)? else { continue };
            #[cfg(test)]
            self.blocks_opened.fetch_add(1, Relaxed);
            let mut walk = || -> Result<(), chunk::BlockError> {
                let block = chunk::Block::open(&reader)?;
                block.sections_of(tag).try_for_each(|i| f(&block, i))
            };
            match walk() {
                Ok(()) => {}
                Err(chunk::BlockError::Damaged(what)) => self.skip_corrupt(b.seq, &what),
                Err(chunk::BlockError::Io(e)) => {
                    return Err(StoreError::io("read a block of", &self.dir.join("chunks"), e));
                }
            }
        }
        Ok(())
    }

    fn retain(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let age_ms = i64::try_from(self.config.age_max.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now.as_millis().saturating_sub(age_ms);
        let sync = self.syncs();
        loop {
            let sealed = self.chunks.segments().count() > 1;
            let oldest = self.chunks.segments().next().map(|s| (s.last_time.as_millis(), s.records()));
            let too_old = oldest.is_some_and(|(t, n)| n > 0 && t < cutoff);
            let too_big = self.chunks.bytes() + self.wal.bytes() > self.config.bytes_max;
            if !sealed || !(too_old || too_big) {
                return Ok(());
            }
            // The blocks a checkpoint spread over commits has appended, not yet recorded, stay:
            // retention stops short of them until the checkpoint is written.
            let spread_from = match self.sealed.as_ref().map(|s| &s.encoding) {
                Some(Encoding::Spread(spread)) => spread.first_chunk_seq,
                Some(Encoding::Written(written)) => Some(written.first_chunk_seq),
                _ => None,
            };
            let oldest_last = self.chunks.segments().find(|s| s.records() > 0).map(|s| s.last_seq);
            if spread_from.zip(oldest_last).is_some_and(|(from, last)| last >= from) {
                return Ok(());
            }
            let Some(dropped) = self.chunks.drop_oldest(sync)? else { return Ok(()) };
            for refs in &mut self.index {
                // A chunk whose shared times went with the dropped segment goes too.
                refs.retain(|c| c.seq > dropped.last_seq && c.times_from.is_none_or(|t| t > dropped.last_seq));
            }
            self.blocks.retain(|b| b.seq > dropped.last_seq);
            let mut newest = i64::MIN;
            for b in &mut self.blocks {
                newest = newest.max(b.time_max);
                b.newest_so_far = newest;
            }
        }
    }

    /// The end (exclusive, ms) of the stored chunk of `tag` that holds `at_ms`, if one does.
    fn chunk_end(&self, tag: u32, at_ms: i64) -> Result<Option<i64>, StoreError> {
        let refs = self.index.get(tag as usize).map(Vec::as_slice).unwrap_or(&[]);
        let mut end = refs
            .iter()
            .filter(|c| c.time_min <= at_ms && c.time_max >= at_ms)
            .map(|c| c.time_max.saturating_add(1))
            .max();
        let holding = self.blocks.iter().filter(|b| b.time_min <= at_ms && b.time_max >= at_ms).copied();
        self.for_each_section(tag, holding, |block, i| {
            let s = block.section(i)?;
            if s.time_min <= at_ms && s.time_max >= at_ms {
                end = end.max(Some(s.time_max.saturating_add(1)));
            }
            Ok(())
        })?;
        Ok(end)
    }

    /// `(time, value, quality)` of `tag` in `[from_ms, to_ms)`, sorted by time.
    fn columns(&self, tag: u32, from_ms: i64, to_ms: i64) -> Result<Vec<Row>, StoreError> {
        match self.columns_at_most(tag, from_ms, to_ms, usize::MAX)? {
            Ok(rows) | Err(rows) => Ok(rows),
        }
    }

    /// `tag`'s samples in `[from_ms, to_ms)`, in time order; `Err` with what was read once more
    /// than `max` are found (decoding stops there: memory holds `max` and one section more).
    fn columns_at_most(
        &self,
        tag: u32,
        from_ms: i64,
        to_ms: i64,
        max: usize,
    ) -> Result<Result<Vec<Row>, Vec<Row>>, StoreError> {
        let mut out = Vec::new();
        let refs = self.index.get(tag as usize).map(Vec::as_slice).unwrap_or(&[]);
        for c in refs.iter().filter(|c| c.time_max >= from_ms && c.time_min < to_ms) {
            let Some(columns) = self.decode_chunk(c.seq)? else { continue };
            push_range(&columns, from_ms, to_ms, &mut out);
            if out.len() > max {
                return Ok(Err(out));
            }
        }
        let read = std::cell::Cell::new(out.len());
        let overlapping = self
            .blocks
            .iter()
            .filter(|b| b.time_max >= from_ms && b.time_min < to_ms)
            .take_while(|_| read.get() <= max)
            .copied();
        self.for_each_section(tag, overlapping, |block, i| {
            let s = block.section(i)?;
            if read.get() <= max && s.time_max >= from_ms && s.time_min < to_ms {
                push_range(&block.decode(&s)?, from_ms, to_ms, &mut out);
                read.set(out.len());
            }
            Ok(())
        })?;
        if out.len() > max {
            return Ok(Err(out));
        }
        for heads in self.head_sets() {
            if let Some(head) = head_columns(heads, tag as usize) {
                push_range(&head, from_ms, to_ms, &mut out);
            }
        }
        if out.len() > max {
            return Ok(Err(out));
        }
        out.sort_by_key(|r| r.0);
        Ok(Ok(out))
    }

    /// The heads queries read: those sealed for a checkpoint not written yet, then the
    /// current ones.
    fn head_sets(&self) -> impl Iterator<Item = &[head::Head]> {
        self.sealed.as_ref().map(|s| s.heads.as_slice()).into_iter().chain(std::iter::once(self.heads.as_slice()))
    }

    /// The newest `(time, value, quality)` of `tag` before `before_ms`.
    fn last_before(&self, tag: u32, before_ms: i64) -> Result<Option<Row>, StoreError> {
        let mut best: Option<Row> = None;
        for heads in self.head_sets() {
            if let Some(head) = head_columns(heads, tag as usize) {
                consider_into(&mut best, &head, before_ms);
            }
        }
        let refs = self.index.get(tag as usize).map(Vec::as_slice).unwrap_or(&[]);
        let candidate = refs.iter().filter(|c| c.time_min < before_ms).max_by_key(|c| c.time_max.min(before_ms));
        if let Some(c) = candidate
            && let Some(columns) = self.decode_chunk(c.seq)?
        {
            consider_into(&mut best, &columns, before_ms);
        }
        // Blocks newest first. A block or section whose newest time before `before_ms` is no
        // later than the best sample found cannot hold a later one; once every block from here
        // back is so (`newest_so_far`), the search stops.
        let beaten =
            |newest: i64, best: &Option<Row>| best.is_some_and(|b| newest.min(before_ms.saturating_sub(1)) <= b.0);
        for b in self.blocks.iter().rev() {
            if beaten(b.newest_so_far, &best) {
                break;
            }
            if b.time_min >= before_ms || beaten(b.time_max, &best) {
                continue;
            }
            self.for_each_section(tag, std::iter::once(*b), |block, i| {
                let s = block.section(i)?;
                if s.time_min < before_ms && !beaten(s.time_max, &best) {
                    consider_into(&mut best, &block.decode(&s)?, before_ms);
                }
                Ok(())
            })?;
        }
        Ok(best)
    }

    /// The newest sample of every tag (by tag number), in one walk over the blocks, newest
    /// first, that stops once no older block can hold a newer sample of any tag. A tag gone
    /// quiet long ago, or never stored, makes that walk go back to the oldest block, but only
    /// once for all such tags: a walk per tag read every block's directory once per quiet tag.
    fn last_of_every_tag(&self) -> Result<Vec<Option<Row>>, StoreError> {
        let mut best: Vec<Option<Row>> = vec![None; self.paths.len()];
        for heads in self.head_sets() {
            // A request's followers come one after another: their leader's times decoded once.
            let mut leader_times = None;
            for (tag, slot) in best.iter_mut().enumerate() {
                if let Some(head) = head_columns_cached(heads, tag, &mut leader_times) {
                    consider_into(slot, &head, i64::MAX);
                }
            }
        }
        for (tag, slot) in best.iter_mut().enumerate() {
            let newest_chunk = self.index.get(tag).and_then(|refs| refs.iter().max_by_key(|c| c.time_max));
            if let Some(c) = newest_chunk
                && let Some(columns) = self.decode_chunk(c.seq)?
            {
                consider_into(slot, &columns, i64::MAX);
            }
        }
        // No block at or before this time can better any tag's sample (`i64::MIN` while a tag
        // has none yet).
        let floor_of = |best: &[Option<Row>]| best.iter().map(|b| b.map_or(i64::MIN, |b| b.0)).min();
        let Some(mut floor) = floor_of(&best) else { return Ok(best) };
        for b in self.blocks.iter().rev() {
            if b.newest_so_far <= floor {
                break;
            }
            if b.time_max <= floor {
                continue;
            }
            // `None`: retention removed it.
            let Some(reader) = self.chunks.open_record(b.seq)? else { continue };
            #[cfg(test)]
            self.blocks_opened.fetch_add(1, Relaxed);
            let mut found = false;
            let io = |e| StoreError::io("read a block of", &self.dir.join("chunks"), e);
            let block = match chunk::Block::open(&reader) {
                Ok(block) => block,
                Err(chunk::BlockError::Damaged(what)) => {
                    self.skip_corrupt(b.seq, &what);
                    continue;
                }
                Err(chunk::BlockError::Io(e)) => return Err(io(e)),
            };
            for (i, tag) in block.sections() {
                let Some(slot) = best.get_mut(tag as usize) else { continue };
                if slot.is_some_and(|s| b.time_max <= s.0) {
                    continue;
                }
                // A damaged section costs its own tag (and those sharing its times) only.
                let read = block.section(i).and_then(|section| {
                    if slot.is_none_or(|s| section.time_max > s.0) {
                        consider_into(slot, &block.decode(&section)?, i64::MAX);
                        found = true;
                    }
                    Ok(())
                });
                match read {
                    Ok(()) => {}
                    Err(chunk::BlockError::Damaged(what)) => self.skip_corrupt(b.seq, &what),
                    Err(chunk::BlockError::Io(e)) => return Err(io(e)),
                }
            }
            if found {
                floor = floor_of(&best).unwrap_or(i64::MIN);
            }
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

/// Takes the newest sample of `c` before `before_ms` as `best` if it is no older.
fn consider_into(best: &mut Option<Row>, c: &chunk::Columns, before_ms: i64) {
    if let Some(i) = c.last_before(before_ms)
        && best.is_none_or(|b| c.times[i] >= b.0)
    {
        *best = Some((c.times[i], c.values[i], c.quality[i]));
    }
}

/// Appends one encoded block to the chunk log (not committed): where it is and what it holds.
fn append_block(chunks: &mut Log, bytes: &[u8], prefix: &chunk::BlockPrefix) -> Result<BlockRef, StoreError> {
    let seq = chunks.append(Timestamp::from_millis(prefix.time_max), bytes)?;
    Ok(block_ref(seq, prefix))
}

fn block_ref(seq: u64, p: &chunk::BlockPrefix) -> BlockRef {
    BlockRef {
        seq,
        tag_min: p.tag_min,
        tag_max: p.tag_max,
        time_min: p.time_min,
        time_max: p.time_max,
        newest_so_far: p.time_max,
    }
}

impl chunk::Payload for RecordReader {
    fn size(&self) -> u64 {
        self.len()
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Option<Vec<u8>>> {
        RecordReader::read(self, offset, len)
    }
}

fn push_range(c: &chunk::Columns, from_ms: i64, to_ms: i64, out: &mut Vec<Row>) {
    out.extend(c.range(from_ms, to_ms).map(|i| (c.times[i], c.values[i], c.quality[i])));
}

/// The samples of the head of `tag` as columns (with its leader's times, if it follows one).
fn head_columns(heads: &[head::Head], tag: usize) -> Option<chunk::Columns> {
    head_columns_cached(heads, tag, &mut None)
}

/// As [`head_columns`], keeping the last leader's times decoded in `cache` for the next
/// follower of the same leader.
fn head_columns_cached(
    heads: &[head::Head],
    tag: usize,
    cache: &mut Option<(usize, Vec<i64>)>,
) -> Option<chunk::Columns> {
    let head = heads.get(tag)?;
    let Some(leader) = head.follows().map(|l| l as usize) else { return head.columns(None) };
    if cache.as_ref().is_none_or(|(cached, _)| *cached != leader) {
        *cache = Some((leader, heads.get(leader)?.columns(None)?.times));
    }
    head.columns(cache.as_ref().map(|(_, times)| times.as_slice()))
}

/// Blocks encoded from sealed heads, not yet in the chunk log: each block's bytes and prefix,
/// and how many chunks they hold.
#[derive(Debug, Default)]
struct Encoded {
    blocks: Vec<(Vec<u8>, chunk::BlockPrefix)>,
    sections: u64,
}

/// What [`Inner::push_to_head`] carries from one sample of a batch to the next.
#[derive(Debug, Default)]
struct Run {
    /// The tag whose head took a sample with its own time last, and that time.
    leader: Option<(u32, i64)>,
    /// The tag whose head last stopped following, the leader it followed, and how many
    /// samples it had then: a head following the same leader with as many samples has its
    /// times, and may follow it instead.
    converted: Option<(u32, u32, usize)>,
}

/// Heads sealed for a checkpoint whose blocks are not written yet: queries still read them,
/// and the WAL keeps their records until the blocks are written.
#[derive(Debug)]
struct Sealed {
    heads: Arc<Vec<head::Head>>,
    /// The last WAL record their samples came in.
    wal_seq: u64,
    /// The WAL's bytes when they were sealed (the next checkpoint's WAL bound counts past it).
    wal_bytes: u64,
    samples: usize,
    encoding: Encoding,
}

/// The historian's logs in a sync job.
const WAL_LOG: usize = 0;
const CHUNK_LOG: usize = 1;

/// Who encodes sealed heads.
#[derive(Debug)]
enum Encoding {
    /// The checkpoint thread.
    Thread,
    /// The writer's thread, a slice at each commit (also a checkpoint the thread could not
    /// take, or one that failed): blocks appended so far (not indexed until the checkpoint's
    /// record is written; a start after a stop ignores them, as it does the blocks of any
    /// checkpoint without a record, and replays the WAL).
    Spread(Box<Spread>),
    /// Encoded, its blocks and its record written, not yet synced: the sync thread's next job
    /// syncs the chunk log (off the writer's thread: that `fdatasync` was most of the time the
    /// writer waited, issue 15). Until it returns, the blocks are not indexed and queries read
    /// the sealed heads; a sync that fails cuts them, and the heads are encoded again.
    Written(Box<Written>),
}

/// A checkpoint written and waiting for the chunk log's sync.
#[derive(Debug)]
struct Written {
    first_chunk_seq: u64,
    added: Vec<BlockRef>,
    sections: u64,
    /// The checkpoint record's sequence number in the chunk log.
    record_seq: u64,
}

impl Encoding {
    /// An encoding on the writer's thread, from the first head.
    fn spread() -> Self {
        Self::Spread(Box::new(Spread { encoder: HeadEncoder::default(), first_chunk_seq: None, added: Vec::new() }))
    }
}

/// A checkpoint spread over commits, as far as it has come. A step encodes whole heads, at
/// least one: a head of one tag read fast (up to `head_bytes_max` of it) is one step.
#[derive(Debug)]
struct Spread {
    encoder: HeadEncoder,
    /// The chunk log's sequence number at its first block (`None`: none appended yet).
    first_chunk_seq: Option<u64>,
    added: Vec<BlockRef>,
}

/// Where a checkpoint a commit starts is encoded (from [`CheckpointThread`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Thread,
    Spread,
    AtOnce,
}

/// What the checkpoint thread is given: heads to encode as blocks.
struct Job {
    heads: Arc<Vec<head::Head>>,
    form: Form,
    /// Held by a test to keep a checkpoint unfinished.
    #[cfg(test)]
    gate: Option<Arc<Mutex<()>>>,
}

/// The thread that encodes sealed heads as blocks (pco's compression and the heads' decoding
/// are most of a checkpoint's cost) while the writer goes on taking samples into fresh heads:
/// on a two-core industrial PC the collector is then not held up for a checkpoint. It does no
/// I/O: the writer appends the blocks it hands back. It stops when the historian is dropped.
#[derive(Debug)]
struct Checkpointer {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Result<Encoded, String>>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    fn start() -> std::io::Result<Self> {
        let (jobs, todo) = mpsc::channel::<Job>();
        let (finished, done) = mpsc::channel();
        let thread = std::thread::Builder::new().name("historian-checkpoint".into()).spawn(move || {
            for job in todo {
                // A test poisons the gate to make this thread stop as a panic would.
                #[cfg(test)]
                let _held = job.gate.as_ref().map(|g| g.lock().expect("a test stops the checkpoint thread"));
                let mut blocks = Vec::new();
                let encoded = encode_heads(
                    &job.heads,
                    &job.form,
                    |what| what,
                    |bytes, prefix| {
                        blocks.push((bytes, prefix));
                        Ok(())
                    },
                );
                if finished.send(encoded.map(|sections| Encoded { blocks, sections })).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { jobs, done, thread })
    }

    /// The next checkpoint it has encoded, waiting for it; `None` if the thread has stopped
    /// (or, in a test, after a minute: a test that holds its gate too long fails, not hangs).
    fn wait(&self) -> Option<Result<Encoded, String>> {
        #[cfg(test)]
        return self.done.recv_timeout(Duration::from_secs(60)).ok();
        #[cfg(not(test))]
        self.done.recv().ok()
    }

    /// Whether its thread is still there (a panic ends it).
    fn running(&self) -> bool {
        !self.thread.is_finished()
    }
}

/// How heads are encoded as blocks: the codec, about how large a block is, and the tags'
/// stated resolutions (by tag number; 0 or missing: none), a hint to the codec.
#[derive(Debug, Clone)]
struct Form {
    codec: chunk::Codec,
    block_bytes_max: usize,
    resolutions: Arc<[f64]>,
}

impl Form {
    fn resolution(&self, tag: usize) -> Option<f64> {
        self.resolutions.get(tag).copied().filter(|r| *r > 0.0)
    }
}

/// Every head's samples as chunks, in blocks of about `form.block_bytes_max`, each handed to
/// `emit` as it is finished (its bytes and prefix); how many chunks they hold. `corrupt` makes
/// the error of a head that does not read back, or a block that cannot be built.
fn encode_heads<E>(
    heads: &[head::Head],
    form: &Form,
    corrupt: impl Fn(String) -> E,
    emit: impl FnMut(Vec<u8>, chunk::BlockPrefix) -> Result<(), E>,
) -> Result<u64, E> {
    let mut encoder = HeadEncoder::default();
    encoder.encode(heads, form, corrupt, emit, || true)?;
    Ok(encoder.sections)
}

/// A checkpoint's heads being encoded as blocks: the next head to encode, the block being
/// filled and what its sections share. Driven to the end at once ([`encode_heads`]), or a
/// slice of heads at each commit ([`Encoding::Spread`]).
#[derive(Debug, Default)]
struct HeadEncoder {
    next: usize,
    /// Chunks (sections) encoded so far.
    sections: u64,
    block: chunk::BlockWriter,
    /// Tags read by one request have the very same times: stored once per block. The last
    /// head whose times were new is kept decoded, with its sections in this block: the tags
    /// after it in its request are matched against it directly. Others by the hash of their
    /// times: the sections that hold them (index, and where in which head), a match confirmed
    /// against that head's times, decoded again.
    time_columns: HashMap<u64, Vec<(u32, usize, std::ops::Range<usize>)>>,
    leader: Option<Leader>,
}

impl HeadEncoder {
    /// Encodes heads from where it stopped, asking `more` after each whether to go on, until
    /// every head is encoded: then the last block is emitted too, and it returns true.
    fn encode<E>(
        &mut self,
        heads: &[head::Head],
        form: &Form,
        corrupt: impl Fn(String) -> E,
        mut emit: impl FnMut(Vec<u8>, chunk::BlockPrefix) -> Result<(), E>,
        mut more: impl FnMut() -> bool,
    ) -> Result<bool, E> {
        while let Some(head) = heads.get(self.next) {
            let tag = self.next;
            self.next += 1;
            if head.is_empty() {
                continue;
            }
            self.encode_head(heads, tag, form, &corrupt, &mut emit)?;
            if self.next < heads.len() && !more() {
                return Ok(false);
            }
        }
        // Every head is encoded: the last block goes too.
        if self.block.sections() > 0 {
            let (bytes, prefix) = std::mem::take(&mut self.block).finish().map_err(&corrupt)?;
            emit(bytes, prefix)?;
        }
        Ok(true)
    }

    fn encode_head<E>(
        &mut self,
        heads: &[head::Head],
        tag: usize,
        form: &Form,
        corrupt: &impl Fn(String) -> E,
        emit: &mut impl FnMut(Vec<u8>, chunk::BlockPrefix) -> Result<(), E>,
    ) -> Result<(), E> {
        let Self { sections, block, time_columns, leader, .. } = self;
        let (codec, block_bytes_max, resolution) = (form.codec, form.block_bytes_max, form.resolution(tag));
        let Some(head) = heads.get(tag) else { return Ok(()) };
        // Decoded one tag at a time: only one head is ever held as columns. A head that
        // follows the leader kept decoded takes its times from there.
        let columns = match (head.follows(), &*leader) {
            (Some(f), Some(l)) if f as usize == l.tag => head.columns(Some(&l.times)),
            _ => head_columns(heads, tag),
        };
        let columns = columns.ok_or_else(|| corrupt(format!("tag {tag}'s head did not read back")))?;
        let mut leads = Vec::new();
        for range in
            (0..columns.len()).step_by(SECTION_SAMPLES_MAX).map(|s| s..(s + SECTION_SAMPLES_MAX).min(columns.len()))
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
            let mut same = leader.as_ref().and_then(|l| l.section_with(&range, times));
            let mut key = None;
            if same.is_none() {
                let hash = hash_times(times);
                key = Some(hash);
                for (index, t, r) in time_columns.get(&hash).map(Vec::as_slice).unwrap_or_default() {
                    if leader.as_ref().is_none_or(|l| l.tag != *t) {
                        *leader =
                            head_columns(heads, *t).map(|c| Leader { tag: *t, times: c.times, sections: Vec::new() });
                    }
                    if leader.as_ref().is_some_and(|l| l.times.get(r.clone()) == Some(times)) {
                        same = Some(*index);
                        break;
                    }
                }
            }
            let mut same = same.filter(|_| codec == chunk::Codec::Pco);
            // A full block is written before a section that shares no times in it, so that
            // the tags of one request stay in one block (a section refers to times in its
            // own block only); at twice the size, whatever comes.
            if block.sections() > 0
                && block.bytes() >= block_bytes_max
                && (same.is_none() || block.bytes() >= 2 * block_bytes_max)
            {
                let (bytes, prefix) = std::mem::take(block).finish().map_err(corrupt)?;
                emit(bytes, prefix)?;
                time_columns.clear();
                leads.clear();
                if let Some(l) = leader.as_mut() {
                    l.sections.clear();
                }
                same = None;
            }
            // A panic in pco (a bug, on data nobody foresaw) costs neither the checkpoint nor
            // the writer: that chunk is stored with our own Gorilla codec instead, times and all.
            let pushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                block.push(codec, tag as u32, part, same, resolution).map_err(corrupt)
            }));
            let (index, shares) = match pushed {
                Ok(index) => (index?, same.is_none()),
                Err(_) => {
                    log::error!(
                        "historian: the {codec:?} codec panicked on tag {tag}'s chunk of {} samples; it is stored with the \
                         Gorilla codec",
                        part.len()
                    );
                    (block.push(chunk::Codec::Gorilla, tag as u32, part, None, None).map_err(corrupt)?, false)
                }
            };
            *sections += 1;
            if shares {
                let key = key.unwrap_or_else(|| hash_times(times));
                time_columns.entry(key).or_default().push((index, tag, range.clone()));
                leads.push((range, index));
            }
        }
        if !leads.is_empty() {
            *leader = Some(Leader { tag, times: columns.times, sections: leads });
        }
        Ok(())
    }
}

/// A head whose times were new in a checkpoint, decoded, and the sections of the block being
/// written that hold them (its range of samples, and the section's index).
#[derive(Debug)]
struct Leader {
    tag: usize,
    times: Vec<i64>,
    sections: Vec<(std::ops::Range<usize>, u32)>,
}

impl Leader {
    /// The section holding these very times for this range of samples, if there is one.
    fn section_with(&self, range: &std::ops::Range<usize>, times: &[i64]) -> Option<u32> {
        let (_, index) = self.sections.iter().find(|(r, _)| r == range)?;
        (self.times.get(range.clone()) == Some(times)).then_some(*index)
    }
}

/// A hash of a time column, to find another column with the same times.
fn hash_times(times: &[i64]) -> u64 {
    times.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, t| (h ^ *t as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The dictionary's tags, and the length of its whole lines: a torn last line (a crash while
/// adding tags) is not a tag; the writer cuts it off when it opens ([`cut_torn_line`]), and its
/// tag is added again.
fn read_dictionary(path: &Path) -> Result<(Vec<String>, u64), StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(StoreError::io("read", path, e)),
    };
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let mut paths: Vec<String> = Vec::new();
    let mut damaged = 0usize;
    // A line gone bad (its number, a byte that is not UTF-8, two lines run together) keeps its
    // number with a name no tag has, so that every other tag keeps its own: renumbered, a
    // tag would read another's history.
    let damaged_entry = |n: usize| format!("(damaged entry {n} of tags.txt)");
    let lines = bytes[..whole].strip_suffix(b"\n").map(|b| b.split(|c| *c == b'\n'));
    for line in lines.into_iter().flatten() {
        let line = std::str::from_utf8(line).ok().and_then(|l| l.split_once('\t'));
        let line = line.and_then(|(n, p)| Some((n.parse::<usize>().ok()?, p)));
        // A line written twice (a failed write cut back and written again): read once.
        if line.is_some_and(|(n, p)| paths.get(n).is_some_and(|known| known == p)) {
            continue;
        }
        let parsed =
            line.filter(|(n, p)| !p.is_empty() && !p.contains('\t') && (paths.len()..paths.len() + 16).contains(n));
        match parsed {
            Some((n, p)) => {
                while paths.len() < n {
                    paths.push(damaged_entry(paths.len()));
                    damaged += 1;
                }
                paths.push(p.to_owned());
            }
            None => {
                paths.push(damaged_entry(paths.len()));
                damaged += 1;
            }
        }
    }
    if damaged > 0 {
        log::error!(
            "{}: {damaged} lines are damaged; their tags' history keeps its numbers but not its names",
            path.display()
        );
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing
    use super::*;
    use airlock_model::TagId;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("airlock-historian-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn value(tag: u32, i: i64) -> f64 {
        (i % 13) as f64 * 0.5 + f64::from(tag)
    }

    /// `tags` tags polled once a second for `seconds`, a checkpoint every `every` seconds.
    fn fill(w: &mut HistorianWriter, tags: u32, seconds: std::ops::Range<i64>, every: i64) {
        for i in seconds {
            let t = Timestamp::from_millis(i * 1000);
            let poll: Vec<Sample> = (0..tags).map(|k| Sample::good(TagId(k), Value::F64(value(k, i)), t)).collect();
            w.append(&poll).unwrap();
            w.commit().unwrap();
            if i % every == every - 1 {
                w.checkpoint().unwrap();
            }
        }
    }

    fn paths(n: u32) -> Vec<String> {
        (0..n).map(|k| format!("plant/line/cell/tag{k}")).collect()
    }

    /// Polls of `tags` tags at 1 Hz, seconds `seconds`, committed one by one (no explicit
    /// checkpoint: the heads' bound starts them).
    fn poll_and_commit(w: &mut HistorianWriter, tags: u32, seconds: std::ops::Range<i64>) {
        for i in seconds {
            let t = Timestamp::from_millis(i * 1000);
            let poll: Vec<Sample> = (0..tags).map(|k| Sample::good(TagId(k), Value::F64(value(k, i)), t)).collect();
            w.append(&poll).unwrap();
            w.commit().unwrap();
        }
    }

    /// Every sample of `tags` tags over `seconds`, as every query reads them.
    fn assert_all_read(r: &HistorianReader, tags: u32, seconds: std::ops::Range<i64>) {
        for k in 0..tags {
            let path = format!("plant/line/cell/tag{k}");
            let got = r.raw(&path, Timestamp(0), Timestamp::from_millis(seconds.end * 1000)).unwrap();
            let want: Vec<(i64, f64)> = seconds.clone().map(|i| (i * 1000, value(k, i))).collect();
            let got: Vec<(i64, f64)> = got.iter().map(|s| (s.time.as_millis(), s.value.unwrap())).collect();
            assert_eq!(got, want, "tag {k}");
            let to = Timestamp::from_millis(seconds.end * 1000);
            let buckets = r.aggregate(&path, Timestamp(0), to, Duration::from_secs(60)).unwrap();
            assert_eq!(buckets.iter().map(|b| b.count).sum::<u64>(), want.len() as u64, "tag {k}'s aggregates");
            let at: Vec<Timestamp> =
                [0, seconds.end / 2, seconds.end - 1].map(|i| Timestamp::from_millis(i * 1000)).into();
            let between = r.interpolate(&path, &at).unwrap();
            let expected: Vec<Option<f64>> = [0, seconds.end / 2, seconds.end - 1].map(|i| Some(value(k, i))).into();
            assert_eq!(between, expected, "tag {k} interpolated");
        }
        let last = r.last_values().unwrap();
        assert_eq!(last.len(), tags as usize);
        for (path, sample) in last {
            let k: u32 = path.trim_start_matches("plant/line/cell/tag").parse().unwrap();
            assert_eq!(sample.time.as_millis(), (seconds.end - 1) * 1000, "{path}");
            assert_eq!(sample.value, Some(value(k, seconds.end - 1)), "{path}");
        }
    }

    /// A fresh historian of four tags whose heads hold 1,000 samples (full at 250 polls).
    fn four_tags(name: &str, config: HistorianConfig) -> (PathBuf, HistorianWriter, HistorianReader) {
        let dir = temp(name);
        let config = HistorianConfig { fsync: FsyncPolicy::Never, head_samples_max: 1_000, ..config };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        w.bind_tags(&paths(4).iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        (dir, w, r)
    }

    /// Four tags' 5,010 polls in `dir`'s WAL, no checkpoint written; the roomy config that let
    /// it grow so.
    fn long_wal(dir: &Path) -> HistorianConfig {
        let roomy = HistorianConfig { fsync: FsyncPolicy::Never, wal_bytes_max: 1 << 30, ..HistorianConfig::default() };
        let (mut w, _) = HistorianWriter::open(dir, roomy.clone()).unwrap();
        w.bind_tags(&paths(4).iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        poll_and_commit(&mut w, 4, 0..5_010);
        w.sync().unwrap();
        assert_eq!(w.stats().checkpoints, 0);
        roomy
    }

    /// A WAL that grew long while no checkpoint was written (a full disk, or bounds lowered
    /// since) is replayed at a start within the heads' bounds: the heads are folded into blocks
    /// as they fill, through the WAL record they came from. Every sample is read once, after
    /// that start and the next, which replays only what no fold covered; a reader's start
    /// writes nothing and holds them all in memory.
    #[test]
    fn a_long_wal_is_replayed_within_the_heads_bounds() {
        let dir = temp("long-wal");
        let roomy = long_wal(&dir);
        let bounded = HistorianConfig { head_samples_max: 1_000, ..roomy };
        let reader = Inner::open(&dir, bounded.clone(), false).unwrap();
        assert_eq!((reader.head_samples, reader.stats.checkpoints), (20_040, 0), "a reader writes no blocks");
        drop(reader);
        // 20 folds of 250 polls, then 10 polls held; the next start folds nothing and holds them.
        for (start, folds) in [(0, 20), (1, 0)] {
            let (w, r) = HistorianWriter::open(&dir, bounded.clone()).unwrap();
            let inner = lock(&w.inner).unwrap();
            assert_eq!((inner.head_samples, inner.stats.checkpoints), (40, folds), "start {start}");
            assert_eq!(inner.stats.samples_lost, 0);
            drop(inner);
            assert_all_read(&r, 4, 0..5_010);
        }
        let _ = fs::remove_dir_all(&dir);
    }

    fn threaded(name: &str) -> (PathBuf, HistorianWriter, HistorianReader, Arc<crate::syncer::Hooks>) {
        threaded_with(name, HistorianConfig::default())
    }

    fn threaded_with(
        name: &str,
        config: HistorianConfig,
    ) -> (PathBuf, HistorianWriter, HistorianReader, Arc<crate::syncer::Hooks>) {
        let dir = temp(name);
        let config = HistorianConfig { fsync: FsyncPolicy::Interval(Duration::ZERO), sync_thread: true, ..config };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        let names = paths(4);
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let hooks = lock(&w.inner).unwrap().syncs.hooks().expect("a sync thread");
        (dir, w, r, hooks)
    }

    /// Waits (bounded) until no sync job runs.
    fn settle(w: &HistorianWriter) {
        for _ in 0..2000 {
            if !lock(&w.inner).unwrap().syncs.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the sync job did not finish in 10 s");
    }

    /// Every sample of `path` the reader holds, as (time in ms, value).
    fn every_sample_of(r: &HistorianReader, path: &str) -> Vec<(i64, f64)> {
        let samples = r.raw(path, Timestamp::from_millis(0), Timestamp::from_millis(i64::MAX)).unwrap();
        samples.iter().map(|s| (s.time.as_millis(), s.value.unwrap())).collect()
    }

    /// The stop's sync, then every sample of 4 tags over `seconds` read before and after a
    /// start; the folder removed.
    fn sync_and_read_after_a_start(
        dir: &Path,
        mut w: HistorianWriter,
        r: HistorianReader,
        seconds: std::ops::Range<i64>,
    ) {
        w.sync().unwrap();
        assert_all_read(&r, 4, seconds.clone());
        drop((w, r));
        let (_w, r) = HistorianWriter::open(dir, HistorianConfig::default()).unwrap();
        assert_all_read(&r, 4, seconds);
        let _ = fs::remove_dir_all(dir);
    }

    /// While the WAL's sync is held on the sync thread (a disk slow to sync), appends and
    /// commits go on and every sample is read; commits say nothing is durable yet; once the
    /// job is done the next ones sync the rest, and a start reads every sample.
    #[test]
    fn commits_go_on_while_the_wals_sync_is_held() {
        let (dir, mut w, r, hooks) = threaded("sync-held");
        let gate = hooks.gate.lock().unwrap();
        let (done, finished) = mpsc::channel();
        let committer = std::thread::spawn(move || {
            poll_and_commit(&mut w, 4, 0..500);
            let durable = w.commit().unwrap();
            done.send(()).unwrap();
            (w, durable)
        });
        finished.recv_timeout(Duration::from_secs(60)).expect("500 commits return while the sync is held");
        let (mut w, durable) = committer.join().unwrap();
        assert!(!durable, "nothing past the first commit is durable while the job is held");
        assert_all_read(&r, 4, 0..500);
        drop(gate);
        settle(&w);
        w.commit().unwrap();
        settle(&w);
        assert!(w.commit().unwrap(), "durable once the next job is done");
        sync_and_read_after_a_start(&dir, w, r, 0..500);
    }

    /// With a sync thread, the WAL's segments a checkpoint a commit started covers are removed
    /// by the thread's next job, not on the writer's thread: when the checkpoint is written
    /// their files are still there (the log no longer holds them), after the next job they
    /// are gone. A checkpoint asked for removes them before it returns. A start reads every
    /// sample once.
    #[test]
    fn the_wal_a_checkpoint_covers_is_removed_by_the_sync_thread() {
        // WAL segments of 256 KB; the heads full at 40,000 samples (10,000 polls of 4).
        let config = HistorianConfig { wal_bytes_max: 1 << 20, head_samples_max: 40_000, ..HistorianConfig::default() };
        let (dir, mut w, r, hooks) = threaded_with("wal-drop-later", config);
        let files = || fs::read_dir(dir.join("wal")).unwrap().count();
        // The WAL's files the log no longer holds (dropped, not yet removed).
        let dropped = |w: &HistorianWriter| -> Vec<PathBuf> {
            let held: Vec<PathBuf> = lock(&w.inner)
                .unwrap()
                .wal
                .segments()
                .map(|s| dir.join("wal").join(format!("{:020}.seg", s.first_seq)))
                .collect();
            let mut on_disk: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| !held.contains(p))
                .collect();
            on_disk.sort();
            on_disk
        };
        // The heads fill at poll 10,000; a checkpoint waits while a sync job runs (here one
        // goes at every commit), at most until they are twice full. Bounded in polls and time.
        let (mut polls, deadline) = (0, Instant::now() + Duration::from_secs(60));
        while w.stats().checkpoints == 0 && polls < 60_000 && Instant::now() < deadline {
            poll_and_commit(&mut w, 4, polls..polls + 1);
            polls += 1;
        }
        assert_eq!(w.stats().checkpoints, 1);
        // The job that made it durable dropped the WAL it covers; a later job removes the
        // files (the log's own test shows that no sooner). Held, they stay.
        let gate = hooks.gate.lock().unwrap();
        let covered = dropped(&w);
        poll_and_commit(&mut w, 4, polls..polls + 1);
        polls += 1;
        assert!(covered.iter().all(|p| p.exists()), "no job runs while the gate is held");
        drop(gate);
        settle(&w);
        poll_and_commit(&mut w, 4, polls..polls + 1);
        polls += 1;
        settle(&w);
        assert!(dropped(&w).is_empty(), "removed by a job: {:?}", dropped(&w));
        // A checkpoint asked for removes what it covers before it returns.
        poll_and_commit(&mut w, 4, polls..polls + 12_000);
        polls += 12_000;
        settle(&w);
        w.checkpoint().unwrap();
        assert_eq!((files(), dropped(&w).len()), (1, 0), "the active segment alone");
        sync_and_read_after_a_start(&dir, w, r, 0..polls);
    }

    /// Whether a checkpoint waits written for its sync ([`Encoding::Written`]).
    fn written(w: &HistorianWriter) -> bool {
        lock(&w.inner).unwrap().sealed.as_ref().is_some_and(|s| matches!(s.encoding, Encoding::Written(_)))
    }

    /// Polls of 4 tags and commits from `polls` on until `done` (bounded in polls and time);
    /// returns the polls made so far.
    fn poll_until(w: &mut HistorianWriter, mut polls: i64, done: impl Fn(&HistorianWriter) -> bool) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        let last = polls + 60_000;
        while !done(w) && polls < last && Instant::now() < deadline {
            poll_and_commit(w, 4, polls..polls + 1);
            polls += 1;
        }
        polls
    }

    /// One poll of 4 tags appended, not committed.
    fn append_one_poll(w: &mut HistorianWriter, i: i64) {
        let poll: Vec<Sample> =
            (0..4).map(|k| Sample::good(TagId(k), Value::F64(value(k, i)), Timestamp::from_millis(i * 1000))).collect();
        w.append(&poll).unwrap();
    }

    /// With a sync thread, a checkpoint's record is synced by the thread's next job, not on
    /// the writer's: until then it waits written (its blocks not indexed, its sealed heads
    /// read). If that job fails, its blocks are cut and the sealed heads encoded again, the
    /// failure is reported once, and nothing is lost or read twice, before a start or after.
    #[test]
    fn a_checkpoint_whose_record_fails_to_sync_is_encoded_again() {
        let config = HistorianConfig { head_samples_max: 4_000, ..HistorianConfig::default() };
        let (dir, mut w, r, hooks) = threaded_with("record-sync-fails", config);
        // Written, and no job running: the record's sync is the next commit's job, the one made
        // to fail (a job already under way when the checkpoint was seen written could sync it
        // first: CI once counted two checkpoints below).
        let mut polls = poll_until(&mut w, 0, |w| {
            settle(w);
            written(w)
        });
        assert!(written(&w), "a checkpoint waits written for its sync");
        // Those before it are durable; it is not counted before its record is.
        let before = w.stats().checkpoints;
        assert_all_read(&r, 4, 0..polls);
        settle(&w);
        hooks.fail_next.store(1, std::sync::atomic::Ordering::SeqCst);
        // The next commit's job holds the chunk log's sync, and fails.
        append_one_poll(&mut w, polls);
        polls += 1;
        w.commit().unwrap();
        settle(&w);
        assert!(!written(&w), "encoded again");
        let failed = w.commit();
        assert!(matches!(failed, Err(StoreError::Io { .. })), "{failed:?}");
        assert_all_read(&r, 4, 0..polls);
        // Later commits encode and write it again, and a job makes it durable.
        let polls = poll_until(&mut w, polls, |w| w.stats().checkpoints > before);
        assert_eq!(w.stats().checkpoints, before + 1);
        assert_eq!(w.stats().samples_lost, 0);
        assert_all_read(&r, 4, 0..polls);
        sync_and_read_after_a_start(&dir, w, r, 0..polls);
    }

    /// A written checkpoint whose chunk log's job cannot start (its file handle not
    /// duplicated): the commit says so, the WAL's job goes alone, and the next job syncs the
    /// record. Nothing is lost.
    #[test]
    fn a_written_checkpoint_whose_sync_cannot_start_is_synced_by_the_next_job() {
        let config = HistorianConfig { head_samples_max: 4_000, ..HistorianConfig::default() };
        let (dir, mut w, r, hooks) = threaded_with("record-sync-start", config);
        let mut polls = poll_until(&mut w, 0, written);
        assert!(written(&w));
        let before = w.stats().checkpoints;
        settle(&w);
        hooks.fail_start.store(CHUNK_LOG as u32 + 1, std::sync::atomic::Ordering::SeqCst);
        append_one_poll(&mut w, polls);
        polls += 1;
        let failed = w.commit();
        assert!(
            matches!(&failed, Err(StoreError::Io { source, .. }) if source.raw_os_error() == Some(24)),
            "{failed:?}"
        );
        settle(&w);
        assert!(written(&w), "still waiting for its sync");
        assert_eq!(w.durable_through().unwrap(), w.appended_through().unwrap(), "the WAL's job went alone");
        let polls = poll_until(&mut w, polls, |w| w.stats().checkpoints > before);
        assert_eq!(w.stats().checkpoints, before + 1);
        assert_eq!(w.stats().samples_lost, 0);
        sync_and_read_after_a_start(&dir, w, r, 0..polls);
    }

    fn wal_bytes_on_disk(dir: &Path) -> u64 {
        fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
    }

    /// While the WAL's sync is held (a disk slow to sync is slow to take writes too), commits
    /// write nothing and a checkpoint that is due waits, up to twice the heads' bounds; then
    /// it is started whatever the disk does. Once the job is done, everything is written and
    /// read back after a start.
    #[test]
    fn while_the_wals_sync_is_held_commits_write_nothing_and_checkpoints_wait() {
        let config = HistorianConfig { head_samples_max: 1_000, ..HistorianConfig::default() };
        let (dir, mut w, r, hooks) = threaded_with("sync-held-writes", config);
        poll_and_commit(&mut w, 4, 0..1);
        settle(&w);
        let gate = hooks.gate.lock().unwrap();
        // Written, and its sync handed to the thread, which the gate holds.
        poll_and_commit(&mut w, 4, 1..2);
        let written = wal_bytes_on_disk(&dir);
        poll_and_commit(&mut w, 4, 2..400);
        assert_eq!(wal_bytes_on_disk(&dir), written, "nothing written while the sync is held");
        {
            let inner = lock(&w.inner).unwrap();
            assert!(inner.sealed.is_none() && inner.stats.checkpoints == 0, "the due checkpoint waits");
            assert_eq!(inner.head_samples, 1_600);
        }
        poll_and_commit(&mut w, 4, 400..520);
        assert!(lock(&w.inner).unwrap().head_samples < 2_000, "past twice the bound a checkpoint starts");
        assert_all_read(&r, 4, 0..520);
        drop(gate);
        settle(&w);
        sync_and_read_after_a_start(&dir, w, r, 0..520);
    }

    /// A WAL sync that fails on the sync thread (EIO) cuts what it covered from the WAL; the
    /// next commit folds the heads (which still hold those samples) into blocks and says so
    /// once, and a start reads every sample exactly once.
    #[test]
    fn a_failed_background_sync_of_the_wal_folds_the_heads_and_loses_nothing() {
        let (dir, mut w, r, hooks) = threaded("sync-fails");
        poll_and_commit(&mut w, 4, 0..10);
        w.sync().unwrap();
        hooks.fail_next.store(1, std::sync::atomic::Ordering::SeqCst);
        {
            let _gate = hooks.gate.lock().unwrap();
            poll_and_commit(&mut w, 4, 10..300);
        }
        settle(&w);
        assert!(matches!(w.commit(), Err(StoreError::Io { .. })), "the failure is said once");
        assert!(!lock(&w.inner).unwrap().fold_after_failed_sync, "that commit started a checkpoint of the heads");
        w.commit().unwrap();
        poll_and_commit(&mut w, 4, 300..320);
        sync_and_read_after_a_start(&dir, w, r, 0..320);
    }

    /// A start whose fold of the replayed heads fails (a disk that refuses writes) neither
    /// fails nor drops anything: it stops folding (one attempt, not one a WAL record) and holds
    /// the rest of the WAL in its heads, past their bound, every sample read; the first
    /// checkpoint that can be written writes them all, and a start after it reads each once
    /// (the failed fold's blocks, on disk without a record, are not read).
    #[test]
    fn a_start_whose_fold_fails_holds_the_rest_of_the_wal_in_memory() {
        let dir = temp("long-wal-fold-fails");
        let roomy = long_wal(&dir);
        let chunks_before = Inner::open(&dir, roomy.clone(), false).unwrap().chunks.next_seq();
        let bounded = HistorianConfig { head_samples_max: 1_000, checkpoint_thread: CheckpointThread::Never, ..roomy };
        FAIL_CHECKPOINTS_FROM_THE_START.set(true);
        let opened = HistorianWriter::open(&dir, bounded);
        FAIL_CHECKPOINTS_FROM_THE_START.set(false);
        let (mut w, r) = opened.expect("a failed fold does not fail the start");
        let mut inner = lock(&w.inner).unwrap();
        assert_eq!((inner.head_samples, inner.stats.checkpoints, inner.stats.samples_lost), (20_040, 0, 0));
        // One fold tried: the blocks of four heads of 250 samples, not thousands of attempts'.
        let attempted = inner.chunks.next_seq() - chunks_before;
        assert!((1..=8).contains(&attempted), "{attempted} chunks appended by the failed fold");
        inner.fail_checkpoints = false;
        drop(inner);
        assert_all_read(&r, 4, 0..5_010);
        w.checkpoint().unwrap();
        assert_eq!((w.stats().checkpoints, lock(&w.inner).unwrap().head_samples), (1, 0));
        assert_all_read(&r, 4, 0..5_010);
        drop((w, r));
        let (w, r) = HistorianWriter::open(&dir, HistorianConfig { fsync: FsyncPolicy::Never, ..spread() }).unwrap();
        assert_eq!(lock(&w.inner).unwrap().head_samples, 0, "the checkpoint covered the whole WAL");
        assert_all_read(&r, 4, 0..5_010);
        drop((w, r));
        let _ = fs::remove_dir_all(&dir);
    }

    fn on_its_thread() -> HistorianConfig {
        HistorianConfig { checkpoint_thread: CheckpointThread::Always, ..HistorianConfig::default() }
    }

    /// By default a checkpoint goes to its thread only when the heads filled fast and a
    /// second core can take it: heads filled over more than [`FILLED_FAST`] are encoded on
    /// the writer's thread at once, and heads that filled fast in a process allowed one core
    /// (`taskset`) are spread over its commits; no thread is started for either.
    #[test]
    fn checkpoints_go_to_their_thread_only_when_heads_fill_fast_and_a_second_core_is_there() {
        for (cores, slow, place) in [(2, false, Place::Thread), (2, true, Place::AtOnce), (1, false, Place::Spread)] {
            assert_eq!(HistorianConfig::default().checkpoint_thread, CheckpointThread::Auto);
            let (dir, mut w, r) = four_tags(&format!("auto-{cores}-{slow}"), HistorianConfig::default());
            {
                let mut inner = lock(&w.inner).unwrap();
                inner.cores = cores;
                if slow {
                    inner.checkpoint_started = Instant::now().checked_sub(FILLED_FAST * 2).unwrap();
                }
            }
            // Full at 250 s: one checkpoint.
            poll_and_commit(&mut w, 4, 0..300);
            let inner = lock(&w.inner).unwrap();
            let started = (inner.last_place, inner.checkpointer.is_some());
            assert_eq!(started, (Some(place), place == Place::Thread), "{cores} cores, filled slowly: {slow}");
            drop(inner);
            w.checkpoint().unwrap();
            assert_eq!(w.stats().checkpoints, 2);
            assert_all_read(&r, 4, 0..300);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// Heads that took longer than [`FILLED_FAST`] to fill but at a busy historian's rate
    /// (followers hold a bit a sample: at a 1 ms poll of 10,000 registers they now take some
    /// 10 s to fill) go to the checkpoint thread: encoded at once, they held the collector for
    /// hundreds of milliseconds, and a fast device's batches found no room in its channel.
    #[test]
    fn heads_filled_slowly_by_the_clock_but_at_a_busy_rate_go_to_the_thread() {
        let dir = temp("auto-rate");
        let config = HistorianConfig {
            fsync: FsyncPolicy::Never,
            head_samples_max: 1_200_000,
            head_bytes_max: 1 << 30,
            ..HistorianConfig::default()
        };
        let (mut w, _r) = HistorianWriter::open(&dir, config).unwrap();
        let names = paths(1_000);
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        {
            let mut inner = lock(&w.inner).unwrap();
            inner.cores = 2;
            inner.checkpoint_started = Instant::now().checked_sub(FILLED_FAST + Duration::from_secs(1)).unwrap();
        }
        // 1,200 polls of 1,000 tags within some 11 s: over 100,000 samples a second.
        poll_and_commit(&mut w, 1_000, 0..1_200);
        assert_eq!(lock(&w.inner).unwrap().last_place, Some(Place::Thread));
        drop(w);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Issue 15: a checkpoint started by a commit is encoded on the checkpoint thread while
    /// the writer goes on taking samples into fresh heads. Until its blocks are written, its
    /// sealed heads are read by every query; then they go, and nothing is read twice.
    #[test]
    fn heads_sealed_for_a_checkpoint_on_its_thread_are_read_until_it_is_written() {
        let (dir, mut w, r) = four_tags("sealed", on_its_thread());
        let gate = Arc::new(Mutex::new(()));
        lock(&w.inner).unwrap().checkpoint_gate = Some(Arc::clone(&gate));
        let held = gate.lock().unwrap();
        // 250 polls of 4 fill the heads: the checkpoint starts, and cannot finish.
        poll_and_commit(&mut w, 4, 0..400);
        {
            let inner = lock(&w.inner).unwrap();
            assert!(
                inner.sealed.as_ref().is_some_and(|s| matches!(s.encoding, Encoding::Thread) && s.samples == 1_000)
            );
            assert_eq!((inner.stats.checkpoints, inner.head_samples), (0, 600), "samples went on into fresh heads");
        }
        assert_all_read(&r, 4, 0..400);
        drop(held);
        // The next commit that finds it encoded writes it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.stats().checkpoints == 0 && Instant::now() < deadline {
            w.commit().unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(w.stats().checkpoints, 1);
        assert!(lock(&w.inner).unwrap().sealed.is_none());
        assert_all_read(&r, 4, 0..400);
        w.checkpoint().unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    fn spread() -> HistorianConfig {
        HistorianConfig { checkpoint_thread: CheckpointThread::Spread, ..HistorianConfig::default() }
    }

    /// A tag's stated resolution reaches the codec wherever a checkpoint a commit starts is
    /// encoded: on the checkpoint thread, spread over commits, at once (each place with a
    /// resolution of its own, which its tag's values are all multiples of).
    #[test]
    fn a_stated_resolution_reaches_the_codec_wherever_a_checkpoint_is_encoded() {
        for (config, place, resolution) in [
            (on_its_thread(), Place::Thread, 0.125),
            (spread(), Place::Spread, 0.0625),
            (HistorianConfig { checkpoint_thread: CheckpointThread::Never, ..Default::default() }, Place::AtOnce, 0.25),
        ] {
            let (dir, mut w, r) = four_tags(&format!("hint-{resolution}"), config);
            let paths = paths(4);
            w.bind_tags_with_resolutions(&paths.iter().map(String::as_str).collect::<Vec<_>>(), &[Some(resolution)])
                .unwrap();
            let hinted = || chunk::HINTED.lock().unwrap().iter().filter(|r| **r == resolution.to_bits()).count();
            assert_eq!(hinted(), 0);
            // Full at 250 s: one checkpoint, written by a later commit on the thread and spread.
            poll_and_commit(&mut w, 4, 0..250);
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut i = 250;
            while w.stats().checkpoints == 0 && Instant::now() < deadline {
                poll_and_commit(&mut w, 4, i..i + 1);
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(lock(&w.inner).unwrap().last_place, Some(place));
            assert_eq!((w.stats().checkpoints, hinted()), (1, 1), "{place:?}");
            assert_all_read(&r, 4, 0..i);
            drop((w, r));
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// The four tags' samples over `seconds`, each read once, in `chunks` chunks, after a start
    /// (blocks without a checkpoint's record after them are not read); the folder removed.
    fn assert_read_after_a_start(dir: &Path, chunks: u64, seconds: std::ops::Range<i64>) {
        let (w, r) = HistorianWriter::open(dir, HistorianConfig { fsync: FsyncPolicy::Never, ..spread() }).unwrap();
        assert_eq!(r.stats().chunks, chunks);
        assert_all_read(&r, 4, seconds);
        drop((w, r));
        let _ = fs::remove_dir_all(dir);
    }

    /// A historian whose spread checkpoints take one head a commit, each in a block of its own.
    fn one_head_a_commit(w: &HistorianWriter) {
        let mut inner = lock(&w.inner).unwrap();
        inner.spread_step = Duration::ZERO;
        inner.block_bytes_max = 1;
    }

    /// Issue 15: on one core, a checkpoint of heads that filled fast is spread over the
    /// commits after it, a slice of heads at each, so that the collector is never held up
    /// for a whole checkpoint. Its sealed heads are read until its record is written, and
    /// then nothing is read twice; a stop in the middle loses nothing, and the blocks it had
    /// appended are not read twice after the next start.
    #[test]
    fn a_checkpoint_spread_over_commits_is_read_throughout_and_survives_a_stop() {
        let dir = temp("spread");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, head_samples_max: 1_000, ..spread() };
        {
            let (mut w, r) = HistorianWriter::open(&dir, config.clone()).unwrap();
            w.bind_tags(&paths(4).iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            one_head_a_commit(&w);
            // Full at 250 polls: sealed at that commit, then one head encoded at each commit.
            poll_and_commit(&mut w, 4, 0..250);
            for i in 250..253 {
                poll_and_commit(&mut w, 4, i..i + 1);
                let inner = lock(&w.inner).unwrap();
                assert!(inner.sealed.as_ref().is_some_and(|s| matches!(s.encoding, Encoding::Spread(_))), "{i}");
                assert_eq!(inner.stats.checkpoints, 0, "{i}");
                drop(inner);
                assert_all_read(&r, 4, 0..i + 1);
            }
            poll_and_commit(&mut w, 4, 253..254);
            assert_eq!(w.stats().checkpoints, 1, "written at the commit that encoded the fourth head");
            assert!(lock(&w.inner).unwrap().sealed.is_none());
            assert_all_read(&r, 4, 0..254);
            // Full again at 500: two heads encoded and one block appended, then the writer stops.
            poll_and_commit(&mut w, 4, 254..502);
            let inner = lock(&w.inner).unwrap();
            let Some(Encoding::Spread(spread)) = inner.sealed.as_ref().map(|s| &s.encoding) else {
                panic!("not spread: {:?}", inner.sealed)
            };
            assert_eq!((spread.encoder.next, spread.added.len()), (2, 1));
            drop(inner);
            // On disk, as a kill -9 after the block had been written would leave it.
            lock(&w.inner).unwrap().chunks.commit(false).unwrap();
        }
        // A bound just above what the start replays, so that the start folds nothing.
        let config = HistorianConfig { head_samples_max: 1_009, ..config };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        assert_eq!(w.stats().chunks, 4, "the first checkpoint's chunks only");
        assert_eq!(lock(&w.inner).unwrap().head_samples, 1_000 + 8, "sealed and fresh heads replayed from the WAL");
        assert_all_read(&r, 4, 0..502);
        w.bind_tags(&paths(4).iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        one_head_a_commit(&w);
        // The replayed heads are full: sealed at the first commit and spread; an explicit
        // checkpoint in the middle finishes it, then folds the fresh heads.
        poll_and_commit(&mut w, 4, 502..504);
        assert!(lock(&w.inner).unwrap().sealed.is_some());
        w.checkpoint().unwrap();
        assert_eq!(w.stats().checkpoints, 2);
        assert!(lock(&w.inner).unwrap().sealed.is_none());
        assert_all_read(&r, 4, 0..504);
        // The block appended before the stop lies before a checkpoint's record now: still not
        // read at a start.
        drop((w, r));
        assert_read_after_a_start(&dir, 12, 0..504);
    }

    /// A spread checkpoint whose record cannot be written (here every checkpoint fails) keeps
    /// its heads sealed and is encoded again from its first head, spread over the commits
    /// after: its samples are never dropped from the WAL without their blocks.
    #[test]
    fn a_spread_checkpoint_whose_record_fails_is_encoded_again() {
        let (dir, mut w, r) = four_tags("spread-fails", spread());
        one_head_a_commit(&w);
        poll_and_commit(&mut w, 4, 0..250);
        lock(&w.inner).unwrap().fail_checkpoints = true;
        // Four heads encoded, one a commit; the record fails at the fourth.
        let failed: Vec<bool> = (250..254)
            .map(|i| {
                let t = Timestamp::from_millis(i * 1000);
                let poll: Vec<Sample> = (0..4).map(|k| Sample::good(TagId(k), Value::F64(value(k, i)), t)).collect();
                w.append(&poll).unwrap();
                w.commit().is_err()
            })
            .collect();
        assert_eq!(failed, [false, false, false, true]);
        lock(&w.inner).unwrap().fail_checkpoints = false;
        // Encoded again from the first head, one a commit.
        poll_and_commit(&mut w, 4, 254..257);
        assert_eq!(w.stats().checkpoints, 0);
        poll_and_commit(&mut w, 4, 257..258);
        assert_eq!(w.stats().checkpoints, 1);
        assert_all_read(&r, 4, 0..258);
        w.checkpoint().unwrap();
        assert_all_read(&r, 4, 0..258);
        // The failed attempt's blocks, on disk without a record, are not read at a start.
        drop((w, r));
        assert_read_after_a_start(&dir, 8, 0..258);
    }

    /// Retention stops short of the blocks a checkpoint spread over commits has appended and
    /// not yet recorded (it would drop the segment that holds them, and the checkpoint's record
    /// would then point at blocks that are gone, its samples dropped from the WAL).
    #[test]
    fn retention_keeps_the_blocks_of_a_checkpoint_spread_over_commits() {
        let (dir, mut w, r) = four_tags("spread-retention", HistorianConfig { bytes_max: 1, ..spread() });
        one_head_a_commit(&w);
        poll_and_commit(&mut w, 4, 0..252);
        {
            let mut inner = lock(&w.inner).unwrap();
            let Some(Encoding::Spread(spread)) = inner.sealed.as_ref().map(|s| &s.encoding) else {
                panic!("not spread: {:?}", inner.sealed)
            };
            assert_eq!(spread.added.len(), 1);
            // Its block in a segment of its own, sealed: the oldest, and over the budget.
            inner.chunks.commit(false).unwrap();
            inner.chunks.roll(false).unwrap();
        }
        w.maintain(Timestamp::from_millis(300_000)).unwrap();
        poll_and_commit(&mut w, 4, 252..254);
        assert_eq!(w.stats().checkpoints, 1);
        assert_all_read(&r, 4, 0..254);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Every task is supervised: a checkpoint thread that stops (here by a panic) is noticed,
    /// logged, its checkpoint encoded on the writer's thread, and the next one given to a new
    /// thread. Nothing is lost or read twice.
    #[test]
    fn a_checkpoint_thread_that_stops_is_noticed_and_its_work_done_by_the_writer() {
        let (dir, mut w, r) = four_tags("stopped", on_its_thread());
        let gate = Arc::new(Mutex::new(()));
        let poison = Arc::clone(&gate);
        let _ = std::thread::spawn(move || {
            let _held = poison.lock();
            panic!("poisons the gate: every checkpoint thread stops at its first job");
        })
        .join();
        lock(&w.inner).unwrap().checkpoint_gate = Some(gate);
        // Heads full at 250 s, 500 s, 750 s and 1,000 s: four checkpoints on stopped threads.
        poll_and_commit(&mut w, 4, 0..1_100);
        w.checkpoint().unwrap();
        let stats = w.stats();
        assert_eq!((stats.checkpoints, stats.samples_lost), (5, 0), "{stats:?}");
        assert_all_read(&r, 4, 0..1_100);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A sealed checkpoint that cannot be written (here every checkpoint fails) does not let
    /// the heads grow past their bound: once they are full again, both they and the sealed
    /// ones are let go (counted lost), as when the WAL cannot be written.
    #[test]
    fn a_sealed_checkpoint_that_keeps_failing_does_not_unbound_the_heads() {
        let (dir, mut w, _r) = four_tags("failing", on_its_thread());
        // Full at 250 s: sealed, handed to the thread.
        poll_and_commit(&mut w, 4, 0..250);
        assert!(lock(&w.inner).unwrap().sealed.is_some());
        lock(&w.inner).unwrap().fail_checkpoints = true;
        // Its blocks come back from the thread and cannot be written; from here every commit
        // tries again, on the writer's thread, and fails.
        assert!(lock(&w.inner).unwrap().finish_checkpoint(true).is_err());
        let mut failed = 0;
        for i in 250..1_000 {
            let t = Timestamp::from_millis(i * 1000);
            let poll: Vec<Sample> = (0..4).map(|k| Sample::good(TagId(k), Value::F64(value(k, i)), t)).collect();
            w.append(&poll).unwrap();
            failed += usize::from(w.commit().is_err());
            let inner = lock(&w.inner).unwrap();
            assert!(inner.head_samples <= 1_000, "{} samples in the heads at {i} s", inner.head_samples);
        }
        let stats = w.stats();
        assert!(failed > 0 && stats.samples_lost >= 2_000, "{failed} commits failed: {stats:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    /// A panic in pco (here made by a test) costs neither the checkpoint, nor the writer's
    /// thread, nor the checkpoint thread: the chunk it panicked on is stored with the Gorilla
    /// codec, and every sample reads back, on either thread.
    #[test]
    fn a_chunk_that_makes_pco_panic_is_stored_with_gorilla() {
        for thread in [CheckpointThread::Never, CheckpointThread::Always] {
            let config = HistorianConfig { checkpoint_thread: thread, ..HistorianConfig::default() };
            let (dir, mut w, r) = four_tags(&format!("panics-{thread:?}"), config);
            let value_of = |k: u32, i: i64| if k == 1 && i == 0 { chunk::PCO_PANICS_ON } else { value(k, i) };
            for i in 0..600 {
                let t = Timestamp::from_millis(i * 1000);
                let poll: Vec<Sample> = (0..4).map(|k| Sample::good(TagId(k), Value::F64(value_of(k, i)), t)).collect();
                w.append(&poll).unwrap();
                w.commit().unwrap();
            }
            w.checkpoint().unwrap();
            let stats = w.stats();
            assert_eq!((stats.checkpoints, stats.samples_lost), (3, 0), "{thread:?}: {stats:?}");
            for k in 0..4 {
                let got =
                    r.raw(&format!("plant/line/cell/tag{k}"), Timestamp(0), Timestamp::from_millis(600_000)).unwrap();
                let got: Vec<f64> = got.iter().map(|s| s.value.unwrap()).collect();
                let want: Vec<f64> = (0..600).map(|i| value_of(k, i)).collect();
                assert_eq!(got, want, "{thread:?}: tag {k}");
            }
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// A writer that stops while a checkpoint is being encoded loses nothing: the WAL keeps
    /// the sealed heads' records until their blocks are written, and the next start replays
    /// them.
    #[test]
    fn a_checkpoint_unfinished_when_the_writer_stops_is_replayed_at_the_next_start() {
        let dir = temp("unfinished");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, head_samples_max: 1_000, ..on_its_thread() };
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        {
            let (mut w, _) = HistorianWriter::open(&dir, config.clone()).unwrap();
            w.bind_tags(&paths(4).iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            lock(&w.inner).unwrap().checkpoint_gate = Some(Arc::clone(&gate));
            poll_and_commit(&mut w, 4, 0..400);
            assert!(lock(&w.inner).unwrap().sealed.as_ref().is_some_and(|s| matches!(s.encoding, Encoding::Thread)));
        }
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        // The sealed and fresh heads are replayed from the WAL: the first 1,000 samples folded
        // into blocks at the heads' bound, the rest held.
        assert_eq!(lock(&w.inner).unwrap().head_samples, 600);
        // Heads filled by a replay do not count as filled fast.
        assert!(lock(&w.inner).unwrap().checkpoint_started.elapsed() >= FILLED_FAST);
        assert_eq!(w.stats().chunks, 4);
        assert_all_read(&r, 4, 0..400);
        w.bind_tags(&paths(4).iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        poll_and_commit(&mut w, 4, 400..500);
        w.checkpoint().unwrap();
        assert_all_read(&r, 4, 0..500);
        drop(held);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A folder written by a newer build is refused by writer and reader alike, naming the
    /// file; one written before `FORMAT` existed is read and gets the file; garbage in the file
    /// is an error that says what to write there.
    #[test]
    fn a_historian_written_by_a_newer_version_is_refused_not_misread() {
        let dir = temp("format");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        {
            let (mut w, _) = HistorianWriter::open(&dir, config.clone()).unwrap();
            w.bind_tags(&["plant/a"]).unwrap();
            fill(&mut w, 1, 0..5, 100);
            w.sync().unwrap();
        }
        let format = dir.join("FORMAT");
        assert_eq!(std::fs::read_to_string(&format).unwrap(), "airlock-historian 5\n");

        std::fs::write(&format, "airlock-historian 6\n").unwrap();
        for refused in
            [HistorianWriter::open(&dir, config.clone()).map(|_| ()), HistorianReader::open(&dir).map(|_| ())]
        {
            let e = refused.unwrap_err();
            assert!(matches!(e, StoreError::NewerFormat { found: 6, known: 5, .. }), "{e}");
            assert!(e.to_string().contains(&format.display().to_string()), "{e}");
        }
        // Not touched by the refusal.
        assert_eq!(std::fs::read_to_string(&format).unwrap(), "airlock-historian 6\n");

        // A later version may add words after the two.
        std::fs::write(&format, "airlock-historian 7 wide-times\n").unwrap();
        let e = HistorianWriter::open(&dir, config.clone()).unwrap_err();
        assert!(matches!(e, StoreError::NewerFormat { found: 7, known: 5, .. }), "{e}");
        // Another store's folder: said so, with no advice to overwrite the file.
        std::fs::write(&format, "airlock-outbox 1\n").unwrap();
        let e = HistorianWriter::open(&dir, config.clone()).unwrap_err();
        assert!(e.to_string().contains("holds an airlock-outbox, not an airlock-historian"), "{e}");
        assert!(!e.to_string().contains("write `"), "{e}");
        std::fs::write(&format, "\u{0}\u{7}garbage").unwrap();
        let e = HistorianWriter::open(&dir, config.clone()).unwrap_err();
        assert!(e.to_string().contains("write `airlock-historian 5` into it"), "{e}");
        // An older version's mark is read, and a writer moves it on.
        std::fs::write(&format, "airlock-historian 1\n").unwrap();
        drop(HistorianReader::open(&dir).unwrap());
        assert_eq!(std::fs::read_to_string(&format).unwrap(), "airlock-historian 1\n", "a reader writes nothing");
        drop(HistorianWriter::open(&dir, config.clone()).unwrap());
        assert_eq!(std::fs::read_to_string(&format).unwrap(), "airlock-historian 5\n");

        // An older build's folder (no file): read as it is, marked by the writer.
        std::fs::remove_file(&format).unwrap();
        let r = HistorianReader::open(&dir).unwrap();
        assert!(!format.exists(), "a reader writes nothing");
        assert_eq!(r.raw("plant/a", Timestamp::from_millis(0), Timestamp::from_millis(10_000)).unwrap().len(), 5);
        drop(r);
        let (_w, r) = HistorianWriter::open(&dir, config).unwrap();
        assert_eq!(std::fs::read_to_string(&format).unwrap(), "airlock-historian 5\n");
        assert_eq!(r.raw("plant/a", Timestamp::from_millis(0), Timestamp::from_millis(10_000)).unwrap().len(), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Issue 15: 10,000 tags held a 40-byte index entry per tag and checkpoint in memory,
    /// without bound (about 470 MB a day at 1 Hz). Now an entry per block.
    #[test]
    fn memory_holds_an_index_entry_per_block_not_per_tag_and_checkpoint() {
        let dir = temp("index");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let (mut w, r) = HistorianWriter::open(&dir, config.clone()).unwrap();
        let names = paths(2000);
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        fill(&mut w, 2000, 0..200, 10);
        let stats = w.stats();
        assert_eq!((stats.checkpoints, stats.chunks), (20, 40_000));
        {
            let inner = lock(&w.inner).unwrap();
            assert_eq!(inner.blocks.len(), 20, "one block per checkpoint of this size");
            assert!(inner.index.iter().all(Vec::is_empty), "no chunk indexed per tag");
        }
        let check = |r: &HistorianReader| {
            for k in [0u32, 1, 999, 1999] {
                let rows = r.raw(&names[k as usize], Timestamp(0), Timestamp::from_millis(200_000)).unwrap();
                assert_eq!(rows.len(), 200, "tag {k}");
                assert!(rows.iter().enumerate().all(|(i, s)| s.value == Some(value(k, i as i64))), "tag {k}");
                let b = r
                    .aggregate(
                        &names[k as usize],
                        Timestamp(0),
                        Timestamp::from_millis(200_000),
                        Duration::from_secs(60),
                    )
                    .unwrap();
                assert_eq!(b.iter().map(|b| b.count).sum::<u64>(), 200);
            }
            let last = r.last_values().unwrap();
            assert_eq!(last.len(), 2000);
            assert!(last.iter().all(|(_, s)| s.time.as_millis() == 199_000));
        };
        check(&r);
        drop((w, r));
        // Reopened: the same blocks, found again by their prefixes.
        let (w, r) = HistorianWriter::open(&dir, config).unwrap();
        assert_eq!(lock(&w.inner).unwrap().blocks.len(), 20);
        check(&r);
        drop((w, r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Tags read in one request share one time column in a block; a block is not cut between
    /// them (a cut there stored the times again: 0.878 → 0.897 bytes a sample on the store
    /// bench's press line).
    #[test]
    fn a_block_is_not_cut_between_tags_that_share_their_times() {
        let dir = temp("groups");
        // Small segments, so blocks of 16 KB: a checkpoint spans several.
        let config = HistorianConfig { fsync: FsyncPolicy::Never, bytes_max: 1 << 20, ..HistorianConfig::default() };
        let (mut w, _r) = HistorianWriter::open(&dir, config).unwrap();
        let (groups, per_group) = (40u32, 5u32);
        let names = paths(groups * per_group);
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        for i in 0..600i64 {
            // Each group is one request: its own time, jittered, and noisy values.
            let poll: Vec<Sample> = (0..groups * per_group)
                .map(|k| {
                    let g = i64::from(k / per_group);
                    let t = Timestamp::from_millis(i * 1000 + g * 7 + (i * 7919 + g * 31) % 5);
                    Sample::good(TagId(k), Value::F64(((i * 31 + i64::from(k) * 17) % 101) as f64 * 0.37), t)
                })
                .collect();
            w.append(&poll).unwrap();
        }
        w.checkpoint().unwrap();
        let inner = lock(&w.inner).unwrap();
        assert!(inner.blocks.len() > 2, "{} blocks", inner.blocks.len());
        assert_eq!(own_time_columns(&inner), groups, "one time column a group");
        drop(inner);
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// How many sections of the blocks hold their own times (the rest share another's).
    fn own_time_columns(inner: &Inner) -> u32 {
        let mut own = 0;
        for b in &inner.blocks {
            let reader = inner.chunks.open_record(b.seq).unwrap().unwrap();
            let block = chunk::Block::open(&reader).unwrap();
            for i in 0..block.prefix.sections {
                own += u32::from(!block.section(i).unwrap().shares_times);
            }
        }
        own
    }

    /// Tags that share their times need not come one after another: two requests whose tags
    /// interleave, each head longer than a section, still store one time column per request
    /// and section, and every sample reads back.
    #[test]
    fn tags_that_share_their_times_apart_still_share_them() {
        let dir = temp("interleaved");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        let names = paths(6);
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let n = SECTION_SAMPLES_MAX as i64 + 100;
        let time = |i: i64, k: u32| i * 1000 + i64::from(k % 2) * 3 + (i * 7919 + i64::from(k % 2)) % 5;
        let value = |i: i64, k: u32| ((i * 31 + i64::from(k) * 17) % 101) as f64;
        for i in 0..n {
            let poll: Vec<Sample> = (0..6u32)
                .map(|k| Sample::good(TagId(k), Value::F64(value(i, k)), Timestamp::from_millis(time(i, k))))
                .collect();
            w.append(&poll).unwrap();
        }
        w.checkpoint().unwrap();
        assert_eq!(own_time_columns(&lock(&w.inner).unwrap()), 2 * 2, "one time column a request and section");
        for k in 0..6u32 {
            let got = r.raw(&names[k as usize], Timestamp::from_millis(0), Timestamp::from_millis(i64::MAX)).unwrap();
            assert_eq!(got.len(), n as usize, "tag {k}");
            for (i, s) in got.iter().enumerate() {
                let i = i as i64;
                assert_eq!((s.time.as_millis(), s.value), (time(i, k), Some(value(i, k))), "tag {k}, sample {i}");
            }
        }
        drop(w);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The heads of a request's tags after its first hold no times (they follow the first's),
    /// and every sample reads back exactly whatever the batches do: a tag that leaves its
    /// request or comes first in it, a request read twice at one time, one read alone, a
    /// checkpoint, a restart that replays the WAL.
    #[test]
    fn heads_that_follow_their_requests_first_tag_read_back_whatever_the_batches_do() {
        let dir = temp("follow");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let names = paths(6);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        // Two requests: tags 0 to 2 at one time, 3 to 5 at another; the batches vary.
        let batch = |i: i64| -> Vec<(u32, i64)> {
            let (a, b) = (i * 1000 + i % 3, i * 1000 + 400 + i % 5);
            let mut batch: Vec<(u32, i64)> = (0..3).map(|k| (k, a)).chain((3..6).map(|k| (k, b))).collect();
            match i % 50 {
                10 => batch.retain(|(k, _)| *k != 1),       // tag 1 not answered
                20 => batch.swap(0, 2),                     // the request's tags in another order
                30 => batch.extend((0..3).map(|k| (k, a))), // the request read twice at one time
                40 => batch.retain(|(k, _)| *k == 4),       // one tag alone
                45 => batch.iter_mut().for_each(|(k, t)| {
                    if *k == 5 {
                        *t += 1
                    }
                }), // its own time
                _ => {}
            }
            batch
        };
        let value = |i: i64, k: u32| {
            if k.is_multiple_of(3) { (i / 40) as f64 } else { ((i * 31 + i64::from(k) * 17) % 101) as f64 }
        };
        let mut want: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 6];
        let check = |r: &HistorianReader, want: &[Vec<(i64, f64)>], when: &str| {
            for (k, want) in want.iter().enumerate() {
                let got = every_sample_of(r, &names[k]);
                let mut want = want.clone();
                want.sort_by_key(|(t, _)| *t);
                assert_eq!(got, want, "tag {k} {when}");
            }
        };
        {
            let (mut w, r) = HistorianWriter::open(&dir, config.clone()).unwrap();
            w.bind_tags(&refs).unwrap();
            for i in 0..500i64 {
                let poll: Vec<Sample> = batch(i)
                    .into_iter()
                    .map(|(k, t)| {
                        want[k as usize].push((t, value(i, k)));
                        Sample::good(TagId(k), Value::F64(value(i, k)), Timestamp::from_millis(t))
                    })
                    .collect();
                w.append(&poll).unwrap();
                if i == 260 {
                    check(&r, &want, "in the heads");
                    w.checkpoint().unwrap();
                }
                if i == 268 || i == 499 {
                    // After the checkpoint, all follow; by the end, each has once been unable to.
                    let inner = lock(&w.inner).unwrap();
                    let follows: Vec<Option<u32>> = inner.heads.iter().map(head::Head::follows).collect();
                    let all = [None, Some(0), Some(0), None, Some(3), Some(3)];
                    assert_eq!(follows, if i == 268 { all } else { [None; 6] }, "at {i}");
                    drop(inner);
                    // The newest sample of each, followers' times taken from their leaders.
                    let last: Vec<(i64, f64)> =
                        r.last_values().unwrap().iter().map(|(_, s)| (s.time.as_millis(), s.value.unwrap())).collect();
                    let newest: Vec<(i64, f64)> =
                        want.iter().map(|w| *w.iter().max_by_key(|(t, _)| *t).unwrap()).collect();
                    assert_eq!(last, newest, "at {i}");
                }
            }
            check(&r, &want, "before the restart");
            w.sync().unwrap();
        }
        let (_w, r) = HistorianWriter::open(&dir, config).unwrap();
        check(&r, &want, "after the WAL's replay");
        drop(r);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Two requests of one poll answered in the same millisecond now and then (several in
    /// flight, or one fast answer after another): each request's tags keep following their
    /// own first tag, from the first poll after a checkpoint on, and every sample reads back.
    /// Followers that met another request's tag at their time used to lose their leader, each
    /// decoding its head, then push their own times until the next checkpoint: a tenth of the
    /// gateway's CPU at four requests in flight.
    #[test]
    fn requests_answered_in_the_same_millisecond_keep_their_followers() {
        let dir = temp("same-ms");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let names = paths(6);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (mut w, r) = HistorianWriter::open(&dir, config.clone()).unwrap();
        w.bind_tags(&refs).unwrap();
        let mut want: Vec<Vec<(i64, f64)>> = vec![Vec::new(); 6];
        for i in 0..200i64 {
            // Tags 0 to 2 one request, 3 to 5 the next: at the same millisecond on even polls.
            let a = i * 1000;
            let b = if i % 2 == 0 { a } else { a + 400 };
            let poll: Vec<Sample> = (0..6u32)
                .map(|k| {
                    let (t, v) = (if k < 3 { a } else { b }, f64::from(k) + (i % 7) as f64);
                    want[k as usize].push((t, v));
                    Sample::good(TagId(k), Value::F64(v), Timestamp::from_millis(t))
                })
                .collect();
            w.append(&poll).unwrap();
            if i == 99 {
                w.checkpoint().unwrap();
            }
        }
        let follows: Vec<Option<u32>> = lock(&w.inner).unwrap().heads.iter().map(head::Head::follows).collect();
        assert_eq!(follows, [None, Some(0), Some(0), None, Some(3), Some(3)]);
        let check = |r: &HistorianReader, when: &str| {
            for (k, want) in want.iter().enumerate() {
                let got = every_sample_of(r, &names[k]);
                assert_eq!(&got, want, "tag {k} {when}");
            }
        };
        check(&r, "in the heads");
        w.sync().unwrap();
        drop((w, r));
        let (_w, r) = HistorianWriter::open(&dir, config).unwrap();
        check(&r, "after the WAL's replay");
        drop(r);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A tag no longer polled: its last value is found in an old block, past newer ones.
    #[test]
    fn the_last_value_of_a_tag_gone_quiet_is_found_in_an_old_block() {
        let dir = temp("quiet");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        let names = paths(3);
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        fill(&mut w, 3, 0..50, 10);
        // Now only tag 0 is polled, and a clock set back writes a block of older times last.
        fill(&mut w, 1, 50..100, 10);
        fill(&mut w, 1, 20..30, 10);
        let last = r.last_values().unwrap();
        let at = |k: usize| last.iter().find(|(p, _)| *p == names[k]).unwrap().1;
        assert_eq!((at(0).time.as_millis(), at(0).value), (99_000, Some(value(0, 99))));
        assert_eq!((at(2).time.as_millis(), at(2).value), (49_000, Some(value(2, 49))));
        let before = r.interpolate(&names[2], &[Timestamp::from_millis(45_000)]).unwrap();
        assert_eq!(before, vec![Some(value(2, 45))]);
        drop((w, r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// One damaged section hides only its own tag (and tags sharing its times) from the last
    /// values, not every tag after it in the block.
    #[test]
    fn a_damaged_section_hides_only_its_own_tag_from_the_last_values() {
        let dir = temp("last-damaged");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        let names = paths(2);
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        // Two requests a second, a millisecond apart: each tag its own times.
        for i in 0..10 {
            for k in 0..2u32 {
                let t = Timestamp::from_millis(i * 1000 + i64::from(k));
                w.append(&[Sample::good(TagId(k), Value::F64(value(k, i)), t)]).unwrap();
            }
            w.commit().unwrap();
        }
        w.checkpoint().unwrap();
        let segment = fs::read_dir(dir.join("chunks")).unwrap().map(|e| e.unwrap().path()).min().unwrap();
        let mut bytes = fs::read(&segment).unwrap();
        let at = crate::log::MAGIC.len() + crate::log::HEADER_BYTES + chunk::BLOCK_PREFIX_BYTES + 30;
        bytes[at] ^= 0xff;
        fs::write(&segment, &bytes).unwrap();
        let last = r.last_values().unwrap();
        assert_eq!(last.len(), 1, "{last:?}");
        assert_eq!(last[0].0, names[1]);
        assert_eq!((last[0].1.time.as_millis(), last[0].1.value), (9_001, Some(value(1, 9))));
        assert_eq!(r.stats().corrupt_reads, 1);
        drop((w, r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A line of the tag dictionary gone bad (its number, or a byte that is not UTF-8): every
    /// other tag keeps its number, so no tag's history is read as another's. Before, the
    /// lines after it were dropped and their tags numbered anew in the config's order.
    #[test]
    fn a_damaged_dictionary_line_renumbers_no_tag() {
        let dir = temp("dictionary");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let names = paths(5);
        {
            let (mut w, _r) = HistorianWriter::open(&dir, config.clone()).unwrap();
            w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            fill(&mut w, 5, 0..10, 10);
        }
        let file = dir.join("tags.txt");
        // A line written twice first (a failed write cut back and written again): read once.
        let text = fs::read_to_string(&file).unwrap();
        let third = text.lines().nth(2).unwrap().to_owned();
        fs::write(&file, text.replacen(&format!("{third}\n"), &format!("{third}\n{third}\n"), 1)).unwrap();
        for damage in [&b"x"[..], &[0xff][..]] {
            let mut text = fs::read(&file).unwrap();
            let second = text.iter().position(|b| *b == b'\n').unwrap() + 1;
            text[second] = damage[0]; // line 2's number
            fs::write(&file, &text).unwrap();
            let (mut w, r) = HistorianWriter::open(&dir, config.clone()).unwrap();
            // The config, in another order, binds its tags again.
            let mut again: Vec<&str> = names.iter().map(String::as_str).rev().collect();
            again.rotate_left(2);
            w.bind_tags(&again).unwrap();
            for (k, name) in names.iter().enumerate().filter(|(k, _)| *k != 1) {
                let rows = r.raw(name, Timestamp(0), Timestamp::from_millis(10_000)).unwrap();
                assert_eq!(rows.len(), 10, "{name}");
                assert_eq!(rows[3].value, Some(value(k as u32, 3)), "{name} reads another tag's history");
            }
            drop((w, r));
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A raw query with a bound stops decoding once past it: a day of a 1 kHz tag is 86
    /// million samples, which the web API decoded whole before it looked at the count.
    #[test]
    fn a_bounded_raw_query_stops_once_past_its_bound() {
        let dir = temp("raw-bound");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        let names = paths(1);
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        fill(&mut w, 1, 0..10_000, 1000);
        let (from, to) = (Timestamp(0), Timestamp::from_millis(20_000_000));
        let all = r.raw_at_most(&names[0], from, to, 10_000).unwrap().unwrap();
        assert_eq!(all.len(), 10_000);
        assert_eq!(all, r.raw(&names[0], from, to).unwrap());
        match r.raw_at_most(&names[0], from, to, 100).unwrap() {
            Ok(s) => panic!("{} samples under a bound of 100", s.len()),
            Err(read) => {
                assert!((101..=1_100).contains(&read), "read {read} samples: one block past the bound at most")
            }
        }
        drop((w, r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Tags gone quiet between two that are still polled (so inside every new block's range of
    /// tags), and one never stored: the last values cost one walk over the blocks, not one
    /// walk per quiet tag.
    #[test]
    fn the_last_values_of_many_quiet_tags_take_one_walk_over_the_blocks() {
        let dir = temp("quiet-many");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        let names = paths(21);
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        fill(&mut w, 20, 0..10, 10);
        for i in 10..210 {
            let t = Timestamp::from_millis(i * 1000);
            let poll: Vec<Sample> =
                [0, 19].into_iter().map(|k| Sample::good(TagId(k), Value::F64(value(k, i)), t)).collect();
            w.append(&poll).unwrap();
            w.checkpoint().unwrap();
        }
        let blocks = lock(&w.inner).unwrap().blocks.len() as u64;
        assert_eq!(blocks, 201);
        let last = r.last_values().unwrap();
        assert_eq!(last.len(), 20, "the tag never stored has no last value");
        for (k, (path, sample)) in last.iter().enumerate() {
            let at = if k == 0 || k == 19 { 209 } else { 9 };
            assert_eq!(path, &names[k]);
            assert_eq!((sample.time.as_millis(), sample.value), (at * 1000, Some(value(k as u32, at))), "{path}");
        }
        let opened = lock(&r.inner).unwrap().blocks_opened.load(Relaxed);
        assert!(opened <= blocks, "{opened} blocks opened for {blocks} blocks");
        drop((w, r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Bytes gone bad in a block after the historian opened (it checks every record then):
    /// a query skips that block, counts it, and returns the rest.
    #[test]
    fn a_block_damaged_after_open_is_skipped_and_counted_once() {
        let dir = temp("damaged");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        let names = paths(2);
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        fill(&mut w, 2, 0..30, 10);
        let segment = fs::read_dir(dir.join("chunks")).unwrap().map(|e| e.unwrap().path()).min().unwrap();
        let mut bytes = fs::read(&segment).unwrap();
        // The first block's first section (tag 0), some bytes into its body.
        let at = crate::log::MAGIC.len() + crate::log::HEADER_BYTES + chunk::BLOCK_PREFIX_BYTES + 30;
        bytes[at] ^= 0xff;
        fs::write(&segment, &bytes).unwrap();
        let rows = r.raw(&names[0], Timestamp(0), Timestamp::from_millis(60_000)).unwrap();
        assert_eq!(rows.len(), 20, "the two undamaged blocks");
        assert_eq!(r.stats().corrupt_reads, 1);
        // Tag 1 was read in the same request: its section in that block holds no times of its
        // own, it shares the damaged section's.
        assert_eq!(r.raw(&names[1], Timestamp(0), Timestamp::from_millis(60_000)).unwrap().len(), 20);
        // A block is counted (and said upstream) once, however often queries run into it: a
        // trend on the dashboard would otherwise report fresh damage every few seconds.
        assert_eq!(r.raw(&names[0], Timestamp(0), Timestamp::from_millis(60_000)).unwrap().len(), 20);
        assert_eq!(r.stats().corrupt_reads, 1);
        drop((w, r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Chunk records of one tag each, as checkpoints wrote them before blocks, are still read,
    /// beside blocks written after them.
    #[test]
    fn chunks_written_before_blocks_are_still_read() {
        let dir = temp("legacy");
        let names = paths(2);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("tags.txt"), format!("0\t{}\n1\t{}\n", names[0], names[1])).unwrap();
        {
            let mut log = Log::open(&dir.join("chunks"), 1 << 20).unwrap();
            let times: Vec<i64> = (0..20).map(|i| i * 1000).collect();
            let first = log.next_seq();
            for tag in 0..2u32 {
                let values = (0..20).map(|i| value(tag, i)).collect();
                let c = chunk::Columns::from_parts(times.clone(), values, vec![0; 20]);
                let shared = (tag == 1).then_some(first);
                log.append(Timestamp::from_millis(19_000), &chunk::encode(Codec::Pco, tag, &c, shared).unwrap())
                    .unwrap();
            }
            log.append(Timestamp::from_millis(19_000), &chunk::encode_checkpoint(0, first)).unwrap();
            log.commit(true).unwrap();
        }
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        fill(&mut w, 2, 20..40, 10);
        for k in 0..2u32 {
            let rows = r.raw(&names[k as usize], Timestamp(0), Timestamp::from_millis(60_000)).unwrap();
            assert_eq!(rows.len(), 40, "tag {k}");
            assert!(rows.iter().enumerate().all(|(i, s)| s.value == Some(value(k, i as i64))), "tag {k}");
        }
        let inner = lock(&w.inner).unwrap();
        assert_eq!((inner.index[0].len(), inner.index[1].len(), inner.blocks.len()), (1, 1, 2));
        drop(inner);
        drop((w, r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A WAL left by a version that wrote 22-byte rows (an upgrade after a crash) is replayed,
    /// and what comes after it is written in runs and replayed alike.
    #[test]
    fn a_wal_of_rows_left_by_an_older_version_is_replayed() {
        let dir = temp("legacy-wal");
        let names = paths(3);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("tags.txt"), (0..3).map(|k| format!("{k}\t{}\n", names[k])).collect::<String>()).unwrap();
        {
            let mut log = Log::open(&dir.join("wal"), 1 << 20).unwrap();
            for i in 0..20i64 {
                let mut rows = Vec::new();
                for tag in 0..3u32 {
                    rows.extend_from_slice(&tag.to_le_bytes());
                    rows.extend_from_slice(&(i * 1000).to_le_bytes());
                    rows.extend_from_slice(&value(tag, i).to_le_bytes());
                    rows.extend_from_slice(&0u16.to_le_bytes());
                }
                assert_eq!(rows.len() % wal::ROW_BYTES, 0);
                log.append(Timestamp::from_millis(i * 1000), &rows).unwrap();
            }
            log.commit(true).unwrap();
        }
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let check = |r: &HistorianReader, n: usize| {
            for k in 0..3u32 {
                let rows = r.raw(&names[k as usize], Timestamp(0), Timestamp::from_millis(60_000)).unwrap();
                assert_eq!(rows.len(), n, "tag {k}");
                assert!(rows.iter().enumerate().all(|(i, s)| s.value == Some(value(k, i as i64))), "tag {k}");
            }
        };
        {
            let (mut w, r) = HistorianWriter::open(&dir, config.clone()).unwrap();
            assert_eq!(w.stats().recovery.corrupt_records, 0);
            check(&r, 20);
            w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
            // No checkpoint: both formats are in the WAL at the next open.
            fill(&mut w, 3, 20..40, 1000);
            w.sync().unwrap();
        }
        let (w, r) = HistorianWriter::open(&dir, config).unwrap();
        check(&r, 40);
        assert_eq!(w.stats().recovery.corrupt_records, 0);
        drop((w, r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Under an interval policy a commit before the interval has passed writes nothing (what
    /// is appended waits in the WAL's buffer for the sync), and the historian says when that
    /// sync is due, so that an idle collector wakes for it.
    #[test]
    fn appended_samples_wait_for_the_sync_and_say_when_it_is_due() {
        let dir = temp("sync-due");
        let names = paths(2);
        let config =
            HistorianConfig { fsync: FsyncPolicy::Interval(Duration::from_secs(3600)), ..HistorianConfig::default() };
        let (mut w, _r) = HistorianWriter::open(&dir, config).unwrap();
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(w.sync_due_in().unwrap(), None, "nothing appended");
        let written = |w: &HistorianWriter| lock(&w.inner).unwrap().wal.committed_seq();
        let before = written(&w);
        let t = Timestamp::from_millis(1_000);
        w.append(&[Sample::good(TagId(0), Value::F64(1.0), t), Sample::good(TagId(1), Value::F64(2.0), t)]).unwrap();
        assert!(!w.commit().unwrap(), "not synced");
        assert_eq!(written(&w), before, "nothing written before the sync");
        let due = w.sync_due_in().unwrap().expect("a sync is due some time");
        assert!(due > Duration::from_secs(3000), "{due:?}");
        w.sync().unwrap();
        assert_eq!(written(&w), before + 1, "the batch's record");
        assert_eq!(w.sync_due_in().unwrap(), None, "everything synced");
        drop((w, _r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The heads are bounded by the bytes their streams hold, not by a count of samples: a
    /// register that holds still (two bits a sample) waits for many more samples before a
    /// checkpoint than a noisy one, so its chunks are long; neither passes the bound by more
    /// than a sample's worth.
    #[test]
    fn heads_are_bounded_by_their_bytes_so_steady_tags_make_long_chunks() {
        let names = paths(10);
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut samples_per_checkpoint = Vec::new();
        for noisy in [false, true] {
            let dir = temp(if noisy { "bytes-noisy" } else { "bytes-steady" });
            let config =
                HistorianConfig { fsync: FsyncPolicy::Never, head_bytes_max: 8 << 10, ..HistorianConfig::default() };
            let (mut w, _r) = HistorianWriter::open(&dir, config).unwrap();
            w.bind_tags(&refs).unwrap();
            let mut noise = 0x2545_f491_4f6c_dd1du64;
            for i in 0..20_000i64 {
                let t = Timestamp::from_millis(1_700_000_000_000 + i);
                let poll: Vec<Sample> = (0..10u32)
                    .map(|k| {
                        noise ^= noise << 13;
                        noise ^= noise >> 7;
                        noise ^= noise << 17;
                        let v = if noisy { (noise >> 11) as f64 / (1u64 << 53) as f64 } else { f64::from(k) };
                        Sample::good(TagId(k), Value::F64(v), t)
                    })
                    .collect();
                w.append(&poll).unwrap();
                w.commit().unwrap();
                let inner = lock(&w.inner).unwrap();
                assert!(inner.head_bytes < (8 << 10) + 10 * 16, "{} bytes in the heads", inner.head_bytes);
            }
            samples_per_checkpoint.push(200_000 / w.stats().checkpoints.max(1));
            drop((w, _r));
            fs::remove_dir_all(&dir).unwrap();
        }
        let (steady, noisy) = (samples_per_checkpoint[0], samples_per_checkpoint[1]);
        assert!(steady >= 20 * noisy, "samples a checkpoint: steady {steady}, noisy {noisy}");
        assert!(noisy <= 2_000, "noisy {noisy}");
    }

    /// One tag read fast and steady (two bits a sample in its head) no longer fills a head of
    /// millions of samples before the heads' bytes start a checkpoint: a checkpoint decodes a
    /// head whole, and 4 M samples of one tag took 72 MB at once. A head holds at most
    /// [`HEAD_SAMPLES_ONE_MAX`] samples.
    #[test]
    fn one_tag_read_fast_fills_no_head_past_its_bound() {
        let dir = temp("one-fast-tag");
        let config = HistorianConfig { fsync: FsyncPolicy::Never, ..HistorianConfig::default() };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        w.bind_tags(&["plant/line/cell/spindle"]).unwrap();
        let samples = 3 * HEAD_SAMPLES_ONE_MAX / 2;
        for batch in 0..samples / 1_000 {
            let poll: Vec<Sample> = (0..1_000)
                .map(|i| Sample::good(TagId(0), Value::F64(7.0), Timestamp::from_millis((batch * 1_000 + i) as i64)))
                .collect();
            w.append(&poll).unwrap();
            w.commit().unwrap();
            let inner = lock(&w.inner).unwrap();
            let sealed = inner.sealed.iter().flat_map(|s| s.heads.iter());
            let longest = inner.heads.iter().chain(sealed).map(head::Head::len).max().unwrap_or(0);
            // Past the bound by at most the batch that reached it.
            assert!(longest < HEAD_SAMPLES_ONE_MAX + 1_000, "{longest} samples in one head at batch {batch}");
        }
        w.checkpoint().unwrap();
        assert_eq!(w.stats().checkpoints, 2, "one at the bound, one at the end");
        let got = r.raw("plant/line/cell/spindle", Timestamp(0), Timestamp::from_millis(samples as i64)).unwrap();
        assert_eq!(got.len(), samples / 1_000 * 1_000);
        assert!(got.iter().enumerate().all(|(i, s)| s.time.as_millis() == i as i64 && s.value == Some(7.0)));
        drop((w, r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A head past [`HEAD_SAMPLES_ONE_MAX`] starts a checkpoint, but when checkpoints fail (a
    /// disk that refuses writes) its samples are kept up to the heads' memory bounds, as any
    /// others: only those bounds let samples go.
    #[test]
    fn a_long_head_whose_checkpoints_fail_keeps_its_samples_within_the_memory_bounds() {
        let dir = temp("long-head-failing");
        let config = HistorianConfig {
            fsync: FsyncPolicy::Never,
            checkpoint_thread: CheckpointThread::Never,
            ..HistorianConfig::default()
        };
        let (mut w, r) = HistorianWriter::open(&dir, config).unwrap();
        w.bind_tags(&["plant/line/cell/spindle"]).unwrap();
        lock(&w.inner).unwrap().fail_checkpoints = true;
        let samples = HEAD_SAMPLES_ONE_MAX + 3_000;
        let mut failed = 0;
        for batch in 0..samples / 1_000 {
            let poll: Vec<Sample> = (0..1_000)
                .map(|i| Sample::good(TagId(0), Value::F64(7.0), Timestamp::from_millis((batch * 1_000 + i) as i64)))
                .collect();
            w.append(&poll).unwrap();
            failed += usize::from(w.commit().is_err());
        }
        assert!(failed > 0);
        assert_eq!(w.stats().samples_lost, 0);
        lock(&w.inner).unwrap().fail_checkpoints = false;
        w.checkpoint().unwrap();
        let got = r.raw("plant/line/cell/spindle", Timestamp(0), Timestamp::from_millis(samples as i64)).unwrap();
        assert_eq!(got.len(), samples / 1_000 * 1_000);
        drop((w, r));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The heads' bound counts their quality runs too: a device that answers every other poll
    /// with an exception flips its tags' quality at every sample (two stream bits a sample, but
    /// a run of 8 bytes), and the heads' memory still stays within the bound (twice it, with
    /// the vectors' spare room). Found by review: the quality runs were not counted.
    #[test]
    fn flipping_quality_is_bounded_like_any_other_head() {
        let dir = temp("quality-flips");
        let names = paths(125);
        let config =
            HistorianConfig { fsync: FsyncPolicy::Never, head_bytes_max: 64 << 10, ..HistorianConfig::default() };
        let (mut w, _r) = HistorianWriter::open(&dir, config).unwrap();
        w.bind_tags(&names.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        let mut peak = 0;
        for i in 0..4_000i64 {
            let t = Timestamp::from_millis(1_700_000_000_000 + i * 10);
            let poll: Vec<Sample> = (0..125u32)
                .map(|k| {
                    if i % 2 == 0 {
                        Sample::good(TagId(k), Value::U64(0), t)
                    } else {
                        Sample::bad(TagId(k), Reason::Exception(6), t)
                    }
                })
                .collect();
            w.append(&poll).unwrap();
            w.commit().unwrap();
            let inner = lock(&w.inner).unwrap();
            peak = peak.max(inner.heads.iter().map(head::Head::heap_bytes).sum::<usize>());
        }
        assert!(peak <= 2 * (64 << 10) + 125 * 64, "{peak} bytes of heads for a bound of 64 KiB");
        drop((w, _r));
        fs::remove_dir_all(&dir).unwrap();
    }
}
