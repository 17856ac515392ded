//! The outbox: what goes upstream, kept on disk until every sink has acknowledged it.
//!
//! Layout: one [`Log`](crate::log::Log) per priority class under `DIR/<class>/`, and one cursor
//! file per sink under `DIR/cursors/<sink>.cursor` (four little-endian u64, the last sequence
//! number acknowledged per class, then a CRC-32 of those 32 bytes; replaced atomically by
//! write, fsync, rename).
//!
//! - **Records.** Each record is an [`Upstream`] in its compact versioned encoding
//!   (`airlock_upstream::codec`); readers get it typed. Bytes this version cannot decode (from a
//!   newer version, or corrupt under a valid checksum) reach a sink as an `outbox_undecodable`
//!   event under the record's own id: counted, logged, and the sink goes on.
//! - **Ids.** A record's id is its class letter and its sequence number in that class
//!   (`e17`, `r1048576`). Sequence numbers only grow, across restarts too (a class's newest
//!   segment is never deleted), so an id never names two different records. Sinks put
//!   `<gateway>-<id>` on the wire; a consumer drops duplicates by it.
//! - **Durability.** Appends are group-committed: every [`OutboxWriter::commit`] writes what was
//!   appended, and `fdatasync`s it when the last sync is older than the policy's interval
//!   (default 10 ms; 0 means every commit); with [`OutboxConfig::sync_thread`] the commit
//!   writes and the `fdatasync` runs on the outbox's sync thread ([`crate::syncer`]). Records
//!   become visible to sinks, and count as persisted for the producer, once synced. A process crash (kill -9) loses nothing written; a
//!   power failure loses at most what was appended since the last sync, none of which was ever
//!   acknowledged to the producer or seen by a sink.
//! - **Delivery.** A sink reads from its own position, in class order (every pending event
//!   before any aggregate, and so on), and acknowledges cumulatively per class. Only records
//!   every sink has acknowledged are reclaimed, a whole segment at a time. Delivery is
//!   at-least-once: acknowledgements are written to the cursor file at most every 100 ms, so a
//!   crash may resend the last few.
//! - **Bounds.** Total bytes stay under `bytes_max` (default 1 GiB) and records older than
//!   `age_max` (default 7 days) are dropped. When full, the oldest segment of the lowest class
//!   that holds anything goes first (raw, then series, then aggregates, then events), never
//!   one of a class above the incoming record's: when only those are left, the incoming
//!   record is refused (`OutboxFull`, counted in `refused_full`); what a dropped segment
//!   held that some sink had not yet acknowledged is counted and reported by a *gap event*
//!   written to the events class, so loss is never silent. The budget is exceeded by at most the
//!   gap events themselves.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use airlock_model::Timestamp;
use airlock_upstream::{GapCause, GapRecord, RecoveryRecord, UndecodableRecord, Upstream};

use crate::StoreError;
use crate::log::{HEADER_BYTES, Log, Lost, SegmentInfo};
use crate::space::FreeSpace;
use crate::syncer::{Finished, SyncTarget, Syncs};

/// The version of the outbox's formats (its log records and cursors) that this build writes;
/// see [`crate::check_format`].
const FORMAT: u32 = 1;

/// Priority classes, most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    Event = 0,
    Aggregate = 1,
    Series = 2,
    Raw = 3,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Event, Class::Aggregate, Class::Series, Class::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Class::Event => "events",
            Class::Aggregate => "aggregates",
            Class::Series => "series",
            Class::Raw => "raw",
        }
    }

    pub fn letter(self) -> char {
        match self {
            Class::Event => 'e',
            Class::Aggregate => 'a',
            Class::Series => 's',
            Class::Raw => 'r',
        }
    }
}

/// A record's stable id: its class and its sequence number in that class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub class: Class,
    pub seq: u64,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.class.letter(), self.seq)
    }
}

/// Where a record was made, which decides the id it carries on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// By this gateway: on the wire under its own id.
    #[default]
    Here,
    /// By the gateway on the other side of a diode, received whole: on the wire under the id it
    /// had there (its class and sequence number), so the IT side says exactly what the OT
    /// side would have said.
    Mirrored(RecordId),
    /// By the receiving half of a diode itself (a `diode_gap` event, its own outbox's gap
    /// events): on the wire as `diode-<id>`, never to be taken for a mirrored one.
    Receiver,
}

/// One record as a sink reads it: typed. A record this version cannot decode comes as
/// [`Upstream::Undecodable`] under its own id, so the sink reports it and goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    /// Its id in this outbox: what a sink acknowledges.
    pub id: RecordId,
    pub origin: Origin,
    pub time: Timestamp,
    pub record: Upstream,
}

impl OutboxRecord {
    /// The id it carries on the wire (after `<gateway>-`): `e17`, or for a record made by a
    /// diode's receiver, `diode-e17`.
    pub fn wire_id(&self) -> WireId {
        WireId { id: self.id, origin: self.origin }
    }
}

/// A record's id as it goes on the wire (see [`OutboxRecord::wire_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireId {
    id: RecordId,
    origin: Origin,
}

impl fmt::Display for WireId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Origin::Here => self.id.fmt(f),
            Origin::Mirrored(id) => id.fmt(f),
            Origin::Receiver => write!(f, "diode-{}", self.id),
        }
    }
}

/// One record as stored: its bytes in the upstream encoding (`airlock_upstream::codec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRecord {
    pub id: RecordId,
    pub origin: Origin,
    pub time: Timestamp,
    pub bytes: Vec<u8>,
}

/// A mirrored record is stored as this byte, its origin's class (u8) and sequence number
/// (u64 LE), then its upstream bytes. The upstream encoding never starts with it (its first
/// byte is a format version, or `{`).
const MIRRORED: u8 = 0xD1;
const MIRRORED_HEADER: usize = 10;

fn split_origin(mut bytes: Vec<u8>, mirror: bool) -> (Origin, Vec<u8>) {
    let origin = match bytes.get(..MIRRORED_HEADER) {
        Some([MIRRORED, class, seq @ ..]) => {
            let class = Class::ALL.get(usize::from(*class)).copied();
            let seq = <[u8; 8]>::try_from(seq).map(u64::from_le_bytes).ok();
            class.zip(seq).map(|(class, seq)| Origin::Mirrored(RecordId { class, seq }))
        }
        _ => None,
    };
    match origin {
        Some(origin) => {
            bytes.drain(..MIRRORED_HEADER);
            (origin, bytes)
        }
        None if mirror => (Origin::Receiver, bytes),
        None => (Origin::Here, bytes),
    }
}

/// Where a sink stands: the last sequence number it has acknowledged (or read) per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position(pub [u64; 4]);

impl Position {
    /// Moves past `id` (never backwards).
    pub fn advance(&mut self, id: RecordId) {
        let slot = &mut self.0[id.class as usize];
        *slot = (*slot).max(id.seq);
    }
}

/// When appended records are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` at a commit when the last one is at least this old (0: at every commit).
    Interval(Duration),
    /// Never sync (tests and benchmarks only): a power failure may lose anything.
    Never,
}

impl FsyncPolicy {
    /// What a commit does, the last sync having been at `synced_at`: `None`, nothing (under an
    /// interval not yet passed: nothing is promised, nor read by a sink, before a sync, so
    /// what is appended waits in the logs' buffers for it rather than costing a write per
    /// commit); `Some(sync)`, write what is appended, and sync it if `sync`. `force_sync`:
    /// sync whatever the policy (at shutdown).
    pub(crate) fn commit_now(self, synced_at: Instant, force_sync: bool) -> Option<bool> {
        match self {
            FsyncPolicy::Never => Some(force_sync),
            FsyncPolicy::Interval(every) if force_sync || synced_at.elapsed() >= every => Some(true),
            FsyncPolicy::Interval(_) => None,
        }
    }
}

/// Bounds and policies of an outbox.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub bytes_max: u64,
    pub age_max: Duration,
    pub fsync: FsyncPolicy,
    /// The sinks that read this outbox; records are reclaimed once all have acknowledged them.
    pub sinks: Vec<String>,
    /// The file system's free-space reserve: past it the outbox stops growing.
    pub space: Option<Arc<FreeSpace>>,
    /// The outbox of a diode's receiving half: it holds mirrored records
    /// ([`OutboxWriter::append_mirrored`]), and its own records are [`Origin::Receiver`].
    pub mirror: bool,
    /// Keep records every sink has acknowledged until `age_max` or the budget pushes them out,
    /// instead of reclaiming them at once: a diode's sending half, which cannot learn of loss,
    /// keeps them so that an operator can send a range again ([`request_rewind`]).
    pub retain: bool,
    /// Sync on a thread of the outbox's own ([`crate::syncer`]), not on the committing one:
    /// a commit writes what was appended and returns; the records become durable, and
    /// visible to sinks, when that thread's `fdatasync` returns. The gateway's choice, so
    /// that a disk slow to sync never holds the collector.
    pub sync_thread: bool,
}

/// Where an operator wants a sink to start again from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindFrom {
    /// This record and every later one of its class.
    Id(RecordId),
    /// Every record of every class written at or after this time.
    Time(Timestamp),
}

impl RewindFrom {
    /// `r1200`, `e7` or an RFC 3339 time.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let class = Class::ALL.into_iter().find(|c| text.starts_with(c.letter()));
        if let Some(class) = class
            && let Ok(seq) = text[1..].parse::<u64>()
            && seq > 0
        {
            return Some(RewindFrom::Id(RecordId { class, seq }));
        }
        Timestamp::parse_rfc3339(text).map(RewindFrom::Time)
    }
}

impl fmt::Display for RewindFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RewindFrom::Id(id) => id.fmt(f),
            RewindFrom::Time(t) => t.fmt(f),
        }
    }
}

fn rewind_path(dir: &Path, sink: &str) -> PathBuf {
    dir.join("cursors").join(format!("{sink}.rewind"))
}

/// Asks `sink` of the outbox in `dir` to send again from `from` (what the outbox still
/// holds). A request file beside the sink's cursor, taken by the running gateway within a
/// second ([`OutboxReader::take_rewind`]), or at its next start; works whether or not the
/// gateway runs, and changes nothing else.
pub fn request_rewind(dir: &Path, sink: &str, from: RewindFrom) -> Result<(), StoreError> {
    let path = rewind_path(dir, sink);
    if let Some(cursors) = path.parent() {
        fs::create_dir_all(cursors).map_err(|e| StoreError::io("create", cursors, e))?;
    }
    let tmp = path.with_extension("rewind.tmp");
    fs::write(&tmp, format!("{from}\n")).map_err(|e| StoreError::io("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| StoreError::io("rename", &path, e))
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            bytes_max: 1 << 30,
            age_max: Duration::from_secs(7 * 86_400),
            fsync: FsyncPolicy::Interval(Duration::from_millis(10)),
            sinks: Vec::new(),
            space: None,
            mirror: false,
            retain: false,
            sync_thread: false,
        }
    }
}

/// Counters of an outbox since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Records dropped unacknowledged because the outbox was full, per class.
    pub dropped_full: [u64; 4],
    /// Records dropped unacknowledged because they were older than `age_max`, per class.
    pub dropped_age: [u64; 4],
    pub gap_events: u64,
    /// Records found corrupt when the outbox was opened, and skipped.
    pub corrupt_records: u64,
    /// Reads of a record this version could not decode (each read counts; a sink gets an
    /// `outbox_undecodable` event in its place).
    pub undecodable_reads: u64,
    /// Bytes of torn writes cut off when the outbox was opened.
    pub torn_bytes: u64,
    /// Records accepted but lost because writing them failed (a full disk), per class.
    pub dropped_write: [u64; 4],
    /// Records found corrupt when read (gone bad on disk since written), skipped.
    pub corrupt_reads: u64,
    /// Sink cursor files found corrupt when the outbox was opened (those sinks resend).
    pub corrupt_cursors: u64,
    /// Records refused because one alone would take more than a sixteenth of the budget.
    pub refused_too_large: u64,
    /// Records refused, per class, because the outbox was full of records of higher classes
    /// only (none of them is dropped for a lower one).
    pub refused_full: [u64; 4],
    pub bytes: u64,
}

/// A sink's cursor: acknowledged position, and whether the file is behind it.
#[derive(Debug)]
struct Cursor {
    acked: Position,
    written: Position,
    written_at: Instant,
}

#[derive(Debug)]
struct Inner {
    /// Held for the writer's lifetime: no other process writes this outbox.
    _lock: fs::File,
    dir: PathBuf,
    config: OutboxConfig,
    logs: [Log; 4],
    /// Per class, the last record synced (and so visible to sinks).
    durable: [u64; 4],
    synced_at: Instant,
    cursors: BTreeMap<String, Cursor>,
    stats: OutboxStats,
    wakers: Wakers,
    /// Reused for encoding each appended record.
    scratch: Vec<u8>,
    /// Records whose write failed, by class, to report in gap events at the next commit.
    lost: Vec<(Class, Lost)>,
    /// The outbox's size when the file system's free-space reserve was reached, while it is
    /// (looked at in each commit).
    reserve_cap: Option<u64>,
    /// The sync thread (with `config.sync_thread`), its job, a job's failure.
    syncs: Syncs,
}

/// What the readers asked to be told when records become visible to sinks (called under the
/// outbox's lock, so each must only wake someone: set a flag, notify a condition).
#[derive(Default)]
struct Wakers(Vec<Box<dyn Fn() + Send + Sync>>);

impl std::fmt::Debug for Wakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} wakers", self.0.len())
    }
}

/// The OT side's handle: the only one that appends. Not `Clone`.
#[derive(Debug)]
pub struct OutboxWriter {
    inner: Arc<Mutex<Inner>>,
}

/// The IT side's handle: reads and acknowledges; cannot append or delete.
#[derive(Debug, Clone)]
pub struct OutboxReader {
    inner: Arc<Mutex<Inner>>,
}

/// A look at the outbox for a dashboard: counters, positions and records, and nothing that
/// appends, acknowledges or moves a cursor.
#[derive(Debug, Clone)]
pub struct OutboxView {
    inner: Arc<Mutex<Inner>>,
}

impl OutboxView {
    pub fn stats(&self) -> OutboxStats {
        lock(&self.inner).map(|i| i.stats()).unwrap_or_default()
    }

    /// The last persisted record of each class.
    pub fn end(&self) -> Result<Position, StoreError> {
        Ok(Position(lock(&self.inner)?.durable))
    }

    /// Where `sink` stands: what it has acknowledged.
    pub fn position(&self, sink: &str) -> Result<Position, StoreError> {
        let inner = lock(&self.inner)?;
        inner.cursors.get(sink).map(|c| c.acked).ok_or_else(|| StoreError::UnknownSink(sink.to_owned()))
    }

    /// The time of the oldest record `sink` has not acknowledged (`None` when it has them all).
    /// A look only: nothing is counted or logged, even if a corrupt record is passed.
    pub fn oldest_waiting(&self, sink: &str) -> Result<Option<Timestamp>, StoreError> {
        let after = self.position(sink)?;
        let inner = lock(&self.inner)?;
        let mut oldest: Option<Timestamp> = None;
        for c in 0..4 {
            if after.0[c] >= inner.durable[c] {
                continue;
            }
            if let Some(t) = inner.logs[c].peek_time(after.0[c] + 1)? {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        Ok(oldest)
    }
}

const CURSOR_WRITE_INTERVAL: Duration = Duration::from_millis(100);

fn lock(inner: &Mutex<Inner>) -> Result<MutexGuard<'_, Inner>, StoreError> {
    inner.lock().map_err(|_| StoreError::Invariant("the outbox lock was poisoned by a panic"))
}

impl OutboxWriter {
    /// Opens (or creates) the outbox in `dir` and returns its writer and a reader.
    pub fn open(dir: &Path, config: OutboxConfig) -> Result<(OutboxWriter, OutboxReader), StoreError> {
        open(dir, config)
    }
}

fn open(dir: &Path, config: OutboxConfig) -> Result<(OutboxWriter, OutboxReader), StoreError> {
    let lock = crate::lock_dir(dir)?;
    crate::check_format(dir, "outbox", FORMAT, true)?;
    let segment_bytes = (config.bytes_max / 16).clamp(4 << 10, 8 << 20);
    let open_log = |c: Class| Log::open(&dir.join(c.name()), segment_bytes);
    let mut logs =
        [open_log(Class::Event)?, open_log(Class::Aggregate)?, open_log(Class::Series)?, open_log(Class::Raw)?];
    let mut stats = OutboxStats::default();
    for log in &logs {
        stats.corrupt_records += log.recovery.corrupt_records;
        stats.torn_bytes += log.recovery.torn_bytes;
    }
    let cursor_dir = dir.join("cursors");
    fs::create_dir_all(&cursor_dir).map_err(|e| StoreError::io("create", &cursor_dir, e))?;
    let mut cursors = BTreeMap::new();
    for sink in &config.sinks {
        let path = cursor_path(dir, sink);
        let acked = match read_cursor(&path) {
            Ok(acked) => acked,
            // A corrupt position falls back to the oldest safe one: everything still held is
            // sent again (duplicates, which ids let a consumer drop), nothing is skipped.
            Err(e @ StoreError::Corrupt { .. }) => {
                log::error!("outbox: {e}; sink {sink} starts again from the oldest record held");
                stats.corrupt_cursors += 1;
                Position::default()
            }
            Err(e) => return Err(e),
        };
        cursors.insert(sink.clone(), Cursor { acked, written: acked, written_at: Instant::now() });
    }
    // A sink that acknowledged records the disk has since lost (a damaged or torn tail cut
    // off at open) is past the log's end: numbers go on after the highest acknowledged, so
    // that no number names two records and no new record lies behind a sink's position.
    for class in Class::ALL {
        let acked = cursors.values().map(|c| c.acked.0[class as usize]).max().unwrap_or(0);
        logs[class as usize].skip_to(acked.saturating_add(1));
    }
    let durable = [0, 1, 2, 3].map(|c| logs[c].committed_seq());
    let inner = Inner {
        _lock: lock,
        dir: dir.to_owned(),
        config,
        logs,
        durable,
        synced_at: Instant::now(),
        cursors,
        stats,
        wakers: Wakers::default(),
        scratch: Vec::new(),
        lost: Vec::new(),
        reserve_cap: None,
        syncs: Syncs::default(),
    };
    let sync_thread = inner.config.sync_thread;
    let inner = Arc::new(Mutex::new(inner));
    if sync_thread {
        Syncs::spawn(&inner)?;
    }
    if stats.corrupt_records > 0 || stats.torn_bytes > 0 {
        let mut writer = OutboxWriter { inner: Arc::clone(&inner) };
        let recovered = RecoveryRecord {
            time: Timestamp::now(),
            corrupt_records: stats.corrupt_records,
            torn_bytes: stats.torn_bytes,
        };
        log::warn!("outbox: {}", recovered.message());
        // A full disk does not keep the outbox from opening: the recovery is said in the log,
        // and the gateway runs (its records wait for room, counted, as at any other time).
        let said = writer.append(Class::Event, &Upstream::Recovered(recovered)).and_then(|_| writer.commit());
        match said {
            Ok(_) => {}
            Err(e) if e.is_disk_full() => log::error!("outbox: the recovery event cannot be written: {e}"),
            Err(e) => return Err(e),
        }
    }
    Ok((OutboxWriter { inner: Arc::clone(&inner) }, OutboxReader { inner }))
}

impl OutboxWriter {
    /// Appends one record in `class`, first making room by the drop policy if the outbox is
    /// full. It counts as persisted once a [`commit`](Self::commit) has synced it.
    pub fn append(&mut self, class: Class, record: &Upstream) -> Result<RecordId, StoreError> {
        let mut inner = lock(&self.inner)?;
        let mut bytes = std::mem::take(&mut inner.scratch);
        bytes.clear();
        airlock_upstream::encode(record, &mut bytes);
        let appended = inner.append(class, record.time(), &bytes);
        inner.scratch = bytes;
        appended
    }

    /// Appends bytes already in the upstream encoding (a record received whole, or a test's
    /// deliberately foreign bytes). They are not checked here; a reader that cannot decode them
    /// reports them as undecodable.
    pub fn append_encoded(&mut self, class: Class, time: Timestamp, bytes: &[u8]) -> Result<RecordId, StoreError> {
        lock(&self.inner)?.append(class, time, bytes)
    }

    /// Appends a record received whole from the gateway on the other side of a diode, under
    /// its id there: sinks put that id on the wire ([`Origin::Mirrored`]). Its bytes are in
    /// the upstream encoding, not checked here (as [`OutboxWriter::append_encoded`]).
    pub fn append_mirrored(&mut self, origin: RecordId, time: Timestamp, bytes: &[u8]) -> Result<RecordId, StoreError> {
        let mut inner = lock(&self.inner)?;
        let mut framed = std::mem::take(&mut inner.scratch);
        framed.clear();
        framed.push(MIRRORED);
        framed.push(origin.class as u8);
        framed.extend_from_slice(&origin.seq.to_le_bytes());
        framed.extend_from_slice(bytes);
        let appended = inner.append(origin.class, time, &framed);
        inner.scratch = framed;
        appended
    }

    /// Writes what was appended and syncs it if the policy says so. Returns, per class, the last
    /// record now persisted. On error, records appended since the last commit are lost (and the
    /// error says why); the outbox stays usable.
    pub fn commit(&mut self) -> Result<Position, StoreError> {
        let mut inner = lock(&self.inner)?;
        inner.commit(false)
    }

    /// How long until a commit will sync what is appended but not synced yet (zero: the next
    /// commit will); `None` when everything appended is synced, or never will be by policy.
    pub fn sync_due_in(&self) -> Result<Option<Duration>, StoreError> {
        let inner = lock(&self.inner)?;
        let appended = [0, 1, 2, 3].map(|c| inner.logs[c].next_seq() - 1);
        Ok(match inner.config.fsync {
            _ if appended == inner.durable => None,
            FsyncPolicy::Never => None,
            FsyncPolicy::Interval(every) => Some(every.saturating_sub(inner.synced_at.elapsed())),
        })
    }

    /// Its sync thread's test hooks, if it has a thread (the `test-hooks` feature).
    #[cfg(feature = "test-hooks")]
    pub fn sync_hooks(&self) -> Option<Arc<crate::SyncHooks>> {
        lock(&self.inner).ok()?.syncs.hooks()
    }

    /// Syncs everything appended, whatever the policy (at shutdown).
    pub fn sync(&mut self) -> Result<Position, StoreError> {
        // A sync job still running finishes first: then this one syncs the rest here.
        let mut inner = Syncs::wait_idle(lock(&self.inner)?)?;
        let position = inner.commit(true)?;
        inner.syncs.take_failure().map(|()| position)
    }

    /// Reclaims what every sink has acknowledged and drops what is older than `age_max`.
    pub fn maintain(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner)?;
        inner.reclaim()?;
        inner.expire(now)
    }

    pub fn stats(&self) -> OutboxStats {
        lock(&self.inner).map(|i| i.stats()).unwrap_or_default()
    }
}

impl OutboxReader {
    /// A view that can only look ([`OutboxView`]), for a dashboard.
    pub fn view(&self) -> OutboxView {
        OutboxView { inner: Arc::clone(&self.inner) }
    }

    /// Where `sink` stands: what it has acknowledged.
    pub fn position(&self, sink: &str) -> Result<Position, StoreError> {
        let inner = lock(&self.inner)?;
        inner.cursors.get(sink).map(|c| c.acked).ok_or_else(|| StoreError::UnknownSink(sink.to_owned()))
    }

    /// Up to `max_records` persisted records after `after`, events first, then aggregates,
    /// series and raw; each class in order.
    pub fn read(&self, after: &Position, max_records: usize) -> Result<Vec<OutboxRecord>, StoreError> {
        self.read_through(after, &Position([u64::MAX; 4]), max_records)
    }

    /// As [`OutboxReader::read`], but no record past `through` (per class).
    pub fn read_through(
        &self,
        after: &Position,
        through: &Position,
        max_records: usize,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let encoded = self.read_encoded_through(after, through, max_records)?;
        let mut undecodable = 0;
        let records = encoded
            .into_iter()
            .map(|r| {
                let record = airlock_upstream::decode(&r.bytes, r.time).unwrap_or_else(|e| {
                    undecodable += 1;
                    log::warn!("outbox: record {} cannot be read by this version ({e}); skipped", r.id);
                    Upstream::Undecodable(UndecodableRecord {
                        time: r.time,
                        record_id: r.id.to_string().into(),
                        why: e.to_string().into(),
                    })
                });
                OutboxRecord { id: r.id, origin: r.origin, time: r.time, record }
            })
            .collect();
        if undecodable > 0 {
            lock(&self.inner)?.stats.undecodable_reads += undecodable;
        }
        Ok(records)
    }

    /// As [`OutboxReader::read`], the records' bytes as stored.
    pub fn read_encoded(&self, after: &Position, max_records: usize) -> Result<Vec<EncodedRecord>, StoreError> {
        self.read_encoded_through(after, &Position([u64::MAX; 4]), max_records)
    }

    fn read_encoded_through(
        &self,
        after: &Position,
        through: &Position,
        max_records: usize,
    ) -> Result<Vec<EncodedRecord>, StoreError> {
        let inner = lock(&self.inner)?;
        let mut out = Vec::new();
        for class in Class::ALL {
            let left = max_records - out.len();
            if left == 0 {
                break;
            }
            let c = class as usize;
            let last = inner.durable[c].min(through.0[c]);
            if after.0[c] >= last {
                continue;
            }
            let records = inner.logs[c].read_through(after.0[c] + 1, last, left, 4 << 20)?;
            let mirror = inner.config.mirror;
            out.extend(records.into_iter().map(|r| {
                let (origin, bytes) = split_origin(r.payload, mirror);
                EncodedRecord { id: RecordId { class, seq: r.seq }, origin, time: r.time, bytes }
            }));
        }
        Ok(out)
    }

    /// Calls `wake` whenever records become visible to sinks (after a commit that synced new
    /// ones), so a sink can sleep instead of polling. `wake` runs under the outbox's lock: it
    /// must only wake someone (set a flag, notify a condition), never read the outbox.
    pub fn on_new_records(&self, wake: impl Fn() + Send + Sync + 'static) -> Result<(), StoreError> {
        lock(&self.inner)?.wakers.0.push(Box::new(wake));
        Ok(())
    }

    /// The last persisted record of each class: where live data begins.
    pub fn end(&self) -> Result<Position, StoreError> {
        Ok(Position(lock(&self.inner)?.durable))
    }

    /// Acknowledges `id` and every record of its class before it, for `sink`.
    pub fn ack(&self, sink: &str, id: RecordId) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner)?;
        let dir = inner.dir.clone();
        let cursor = inner.cursors.get_mut(sink).ok_or_else(|| StoreError::UnknownSink(sink.to_owned()))?;
        cursor.acked.advance(id);
        if cursor.written_at.elapsed() >= CURSOR_WRITE_INTERVAL {
            write_cursor(&dir, sink, cursor)?;
        }
        Ok(())
    }

    /// Takes an operator's request that `sink` send again from some record or time
    /// ([`request_rewind`]): moves its cursor back to just before it (never forward; only
    /// over what the outbox still holds), writes the cursor, and returns where it now stands.
    /// `None` when there is no request. A request that cannot be read is removed and logged.
    pub fn take_rewind(&self, sink: &str) -> Result<Option<Position>, StoreError> {
        let mut inner = lock(&self.inner)?;
        let dir = inner.dir.clone();
        let path = rewind_path(&dir, sink);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
        let Some(from) = RewindFrom::parse(&text) else {
            log::error!("outbox: {}: {:?} is neither a record id nor a time; ignored", path.display(), text.trim());
            return Ok(None);
        };
        let mut to = inner.cursors.get(sink).ok_or_else(|| StoreError::UnknownSink(sink.to_owned()))?.acked;
        match from {
            RewindFrom::Id(id) => {
                let c = id.class as usize;
                to.0[c] = to.0[c].min(id.seq - 1);
            }
            RewindFrom::Time(t) => {
                for c in 0..4 {
                    let first = inner.logs[c].first_seq_from(t)?;
                    to.0[c] = to.0[c].min(first.saturating_sub(1));
                }
            }
        }
        let cursor = inner.cursors.get_mut(sink).ok_or_else(|| StoreError::UnknownSink(sink.to_owned()))?;
        cursor.acked = to;
        write_cursor(&dir, sink, cursor)?;
        log::info!("outbox: sink {sink} sends again from {from} (what the outbox still holds)");
        Ok(Some(to))
    }

    /// Writes every sink's cursor file that is behind (at shutdown).
    pub fn persist_cursors(&self) -> Result<(), StoreError> {
        let mut inner = lock(&self.inner)?;
        let dir = inner.dir.clone();
        for (sink, cursor) in inner.cursors.iter_mut().filter(|(_, c)| c.acked != c.written) {
            write_cursor(&dir, sink, cursor)?;
        }
        Ok(())
    }

    pub fn stats(&self) -> OutboxStats {
        lock(&self.inner).map(|i| i.stats()).unwrap_or_default()
    }
}

impl Inner {
    /// Takes every log's lost records into `lost`, counted as dropped.
    fn collect_lost(&mut self) {
        for class in Class::ALL {
            let lost = self.logs[class as usize].take_lost().unwrap_or_else(|e| {
                log::debug!("records lost to a failed write are reported once the disk takes a new segment: {e}");
                Vec::new()
            });
            for lost in lost {
                self.stats.dropped_write[class as usize] += lost.records;
                self.lost.push((class, lost));
            }
        }
    }

    /// A gap event for records lost to a failed write.
    fn append_lost_gap(&mut self, class: Class, lost: Lost) -> Result<(), StoreError> {
        let gap = GapRecord {
            time: Timestamp::now(),
            class: class.name().into(),
            records: lost.records,
            first_id: RecordId { class, seq: lost.first_seq }.to_string().into(),
            last_id: RecordId { class, seq: lost.last_seq }.to_string().into(),
            from: lost.from,
            to: lost.to,
            cause: GapCause::WriteFailed,
        };
        log::warn!("outbox: {}", gap.message());
        let mut bytes = Vec::new();
        airlock_upstream::encode(&Upstream::Gap(gap), &mut bytes);
        self.logs[Class::Event as usize].append(Timestamp::now(), &bytes)?;
        self.stats.gap_events += 1;
        Ok(())
    }

    fn append(&mut self, class: Class, time: Timestamp, bytes: &[u8]) -> Result<RecordId, StoreError> {
        // One record may take at most a sixteenth of the budget: a larger one would push out
        // everything else (and, before this check, loop for ever dropping its own gap events).
        let max = usize::try_from(self.config.bytes_max / 16).unwrap_or(usize::MAX).min(crate::log::PAYLOAD_BYTES_MAX);
        if HEADER_BYTES + bytes.len() > max {
            self.stats.refused_too_large += 1;
            return Err(StoreError::TooLarge { bytes: HEADER_BYTES + bytes.len(), max });
        }
        // Past the file system's reserve (looked at once per commit, not per record) the outbox
        // keeps the size it had when the reserve was reached, and grows no more: new records
        // push out the oldest of the lowest class.
        let budget = self.reserve_cap.map_or(self.config.bytes_max, |c| c.min(self.config.bytes_max));
        if !self.make_room(class, (HEADER_BYTES + bytes.len()) as u64, budget)? {
            self.stats.refused_full[class as usize] += 1;
            return Err(StoreError::OutboxFull { class: class.name() });
        }
        let seq = self.logs[class as usize].append(time, bytes)?;
        Ok(RecordId { class, seq })
    }

    fn stats(&self) -> OutboxStats {
        let corrupt_reads = self.logs.iter().map(|l| l.corrupt_reads.load(std::sync::atomic::Ordering::Relaxed)).sum();
        OutboxStats { bytes: self.bytes(), corrupt_reads, ..self.stats }
    }

    fn bytes(&self) -> u64 {
        self.logs.iter().map(Log::bytes).sum()
    }

    /// Whether drops and rolls sync the folder at once (not with the sync thread's next job).
    fn sync_on_disk(&self) -> bool {
        self.config.fsync != FsyncPolicy::Never && !self.syncs.threaded()
    }

    /// Hands what is committed to the sync thread (or, if it is gone, syncs it here).
    fn start_sync_job(&mut self) -> Result<(), StoreError> {
        let mut jobs = Vec::new();
        let mut failed = None;
        for (c, log) in self.logs.iter_mut().enumerate() {
            match self.syncs.injected_start_failure(c, &self.dir).and_then(|()| log.start_sync()) {
                Ok(Some(job)) => jobs.push((c, job)),
                Ok(None) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if jobs.is_empty() {
            return failed.map_or(Ok(()), Err);
        }
        self.synced_at = Instant::now();
        Syncs::hand_over(self, jobs);
        failed.map_or(Ok(()), Err)
    }

    fn commit(&mut self, force_sync: bool) -> Result<Position, StoreError> {
        let Some(sync) = self.config.fsync.commit_now(self.synced_at, force_sync) else {
            return Ok(Position(self.durable));
        };
        // With a sync thread, a commit that is due to sync writes, and hands the sync over;
        // while a job runs, it writes nothing (a disk slow to sync is slow to take writes too:
        // what is appended waits in the logs' buffers, see `Log::append`).
        let handed_over = sync && !force_sync && self.syncs.threaded();
        if handed_over && self.syncs.running() {
            return self.syncs.take_failure().map(|()| Position(self.durable));
        }
        let sync = sync && !handed_over;
        let room = self.config.space.as_ref().is_none_or(|space| space.has_room());
        self.reserve_cap = if room { None } else { Some(self.reserve_cap.unwrap_or_else(|| self.bytes())) };
        // Records lost to a failed write are reported in this commit: the gap events go in
        // with it, and are forgotten only once it succeeds.
        self.collect_lost();
        let reported = self.lost.len();
        let mut result = Ok(());
        for i in 0..reported {
            let (class, lost) = self.lost[i];
            result = self.append_lost_gap(class, lost);
            if result.is_err() {
                break;
            }
        }
        let mut committed = [0; 4];
        let mut gaps_committed = false;
        for (c, log) in self.logs.iter_mut().enumerate() {
            if result.is_ok() {
                match log.commit(sync) {
                    Ok(n) => {
                        committed[c] = n;
                        // The events log holds the gap events: once it is committed they are
                        // written, whatever happens to the other classes' commits (else the
                        // same loss would be reported twice).
                        gaps_committed |= c == Class::Event as usize;
                    }
                    Err(e) => result = Err(e),
                }
            }
        }
        if gaps_committed {
            self.lost.drain(..reported);
        }
        if let Err(e) = result {
            self.collect_lost();
            return Err(e);
        }
        if handed_over {
            self.start_sync_job()?;
            return self.syncs.take_failure().map(|()| Position(self.durable));
        }
        if sync || self.config.fsync == FsyncPolicy::Never {
            let grew = committed != self.durable;
            self.durable = committed;
            self.synced_at = Instant::now();
            if grew {
                self.wakers.0.iter().for_each(|wake| wake());
            }
        }
        Ok(Position(self.durable))
    }

    /// The last sequence number of `class` that every sink has acknowledged.
    fn acked_by_all(&self, class: Class) -> u64 {
        self.cursors.values().map(|c| c.acked.0[class as usize]).min().unwrap_or(0)
    }

    /// Drops the oldest segments of the lowest classes, never one above `incoming`'s, until
    /// `need` more bytes fit; `false` when only higher classes are left to drop (the incoming
    /// record is then refused: events are kept before raw telemetry). Bounded: it stops when
    /// a drop frees nothing (the gap event it wrote took what it freed).
    fn make_room(&mut self, incoming: Class, need: u64, budget: u64) -> Result<bool, StoreError> {
        let above: Vec<Class> = Class::ALL.into_iter().filter(|c| *c < incoming).collect();
        let held_above = |logs: &[Log; 4]| above.iter().any(|c| !logs[*c as usize].is_empty());
        // If dropping every record it may drop would not make room, nothing is dropped for it.
        let above_bytes: u64 = above.iter().map(|c| self.logs[*c as usize].bytes()).sum();
        if held_above(&self.logs) && above_bytes + need > budget {
            return Ok(false);
        }
        while self.bytes() + need > budget {
            let before = self.bytes();
            let Some(class) =
                Class::ALL.into_iter().rev().filter(|c| *c >= incoming).find(|c| !self.logs[*c as usize].is_empty())
            else {
                // Only empty segments remain, or only higher classes hold anything.
                return Ok(!held_above(&self.logs));
            };
            let sync = self.sync_on_disk();
            let origins = self.oldest_origins(class);
            let Some(dropped) = self.logs[class as usize].drop_oldest(sync)? else { return Ok(true) };
            self.report_gap(class, &dropped, GapCause::Full, origins)?;
            if self.bytes() >= before {
                return Ok(true);
            }
        }
        Ok(true)
    }

    fn reclaim(&mut self) -> Result<(), StoreError> {
        if self.cursors.is_empty() || self.config.retain {
            return Ok(());
        }
        // With a sync thread, the files go with its next job (as the historian's WAL): an
        // unlink that frees a segment's cached pages would hold the collector here.
        let later = self.config.fsync != FsyncPolicy::Never && self.syncs.threaded();
        let sync = self.sync_on_disk();
        for class in Class::ALL {
            let acked = self.acked_by_all(class);
            let log = &mut self.logs[class as usize];
            if later {
                log.drop_through_later(acked);
            } else {
                log.drop_through(acked, sync)?;
            }
        }
        Ok(())
    }

    fn expire(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let cutoff = Timestamp(now.0.saturating_sub(i64::try_from(self.config.age_max.as_nanos()).unwrap_or(i64::MAX)));
        let sync = self.sync_on_disk();
        for class in Class::ALL {
            let c = class as usize;
            loop {
                let oldest_last_time = self.logs[c].segments().find(|s| s.records() > 0).map(|s| s.last_time);
                if oldest_last_time.is_none_or(|t| t >= cutoff) {
                    break;
                }
                let origins = self.oldest_origins(class);
                let Some(dropped) = self.logs[c].drop_oldest(sync)? else { break };
                self.report_gap(class, &dropped, GapCause::Age, origins)?;
            }
        }
        Ok(())
    }

    /// In a diode receiver's outbox, the lowest and highest ids on the sending side of the
    /// unacknowledged committed records of `class`'s oldest segment (about to be dropped), and
    /// the last one's local number, so that its gap event names what a consumer knows; `None`
    /// elsewhere, or when they cannot be read (then the local ids are named).
    fn oldest_origins(&self, class: Class) -> Option<(RecordId, RecordId, u64)> {
        if !self.config.mirror {
            return None;
        }
        let log = &self.logs[class as usize];
        let info = log.segments().find(|s| s.records() > 0)?;
        let first = info.first_seq.max(self.acked_by_all(class).saturating_add(1));
        let last = info.last_seq.min(log.committed_seq());
        if first > last {
            return None;
        }
        // Their ids there are not in order, nor without holes (records recovered late come
        // after newer ones; lost blocks leave holes): the lowest and the highest of them.
        let records = log.read_through(first, last, usize::MAX, usize::MAX).ok()?;
        let origins = records.into_iter().filter_map(|r| match split_origin(r.payload, true).0 {
            Origin::Mirrored(id) => Some(id),
            _ => None,
        });
        let (lowest, highest) = origins.fold(None, |range: Option<(RecordId, RecordId)>, id| match range {
            None => Some((id, id)),
            Some((lo, hi)) => Some((if id.seq < lo.seq { id } else { lo }, if id.seq > hi.seq { id } else { hi })),
        })?;
        Some((lowest, highest, last))
    }

    /// Counts what a dropped segment held that some sink had not acknowledged, and says so in a
    /// gap event (written to the events class without making room: it is small). `origins`: in
    /// a diode receiver's outbox, the sender's ids of the first unacknowledged and last records.
    fn report_gap(
        &mut self,
        class: Class,
        dropped: &SegmentInfo,
        cause: GapCause,
        origins: Option<(RecordId, RecordId, u64)>,
    ) -> Result<(), StoreError> {
        let acked = self.acked_by_all(class);
        let first_unacked = dropped.first_seq.max(acked.saturating_add(1));
        if first_unacked > dropped.last_seq {
            return Ok(());
        }
        let count = dropped.last_seq - first_unacked + 1;
        // The sender's ids where they are known. Records committed by the drop itself (the
        // oldest segment was the one being written) are taken to follow the highest one read.
        let (first_id, last_id) = match origins {
            Some((first, last, local_last)) => {
                let more = dropped.last_seq.saturating_sub(local_last);
                (first, RecordId { class: last.class, seq: last.seq.saturating_add(more) })
            }
            None => (RecordId { class, seq: first_unacked }, RecordId { class, seq: dropped.last_seq }),
        };
        let counter = match cause {
            GapCause::Full => &mut self.stats.dropped_full,
            GapCause::Age => &mut self.stats.dropped_age,
            // (The diode causes are the receiver's, never the outbox's own.)
            GapCause::WriteFailed | GapCause::DiodeLost | GapCause::DiodeDown => &mut self.stats.dropped_write,
        };
        counter[class as usize] += count;
        self.stats.gap_events += 1;
        let gap = GapRecord {
            time: Timestamp::now(),
            class: class.name().into(),
            records: count,
            first_id: first_id.to_string().into(),
            last_id: last_id.to_string().into(),
            from: dropped.first_time,
            to: dropped.last_time,
            cause,
        };
        log::warn!("outbox: {}", gap.message());
        let mut bytes = Vec::new();
        airlock_upstream::encode(&Upstream::Gap(gap), &mut bytes);
        self.logs[Class::Event as usize].append(Timestamp::now(), &bytes)?;
        Ok(())
    }
}

impl SyncTarget for Inner {
    const NAME: &'static str = "outbox";
    const POISONED: &'static str = "the outbox lock was poisoned by a panic";

    fn sync_state(&mut self) -> &mut Syncs {
        &mut self.syncs
    }

    /// What a sync job made durable becomes visible to sinks; what a failed one covered is
    /// cut and reported (gap events, at the next commit), and the failure returned by it.
    fn finish_sync(&mut self, done: Finished) {
        for (c, job, result) in done {
            if let Err(e) = self.logs[c].finish_sync(job, result) {
                log::error!("outbox: {e}; what was not synced is cut and reported");
                self.syncs.failed(e);
            }
        }
        let durable = [0, 1, 2, 3].map(|c| self.logs[c].durable_seq().max(self.durable[c]));
        let grew = durable != self.durable;
        self.durable = durable;
        self.syncs.done();
        if grew {
            self.wakers.0.iter().for_each(|wake| wake());
        }
    }
}

fn cursor_path(dir: &Path, sink: &str) -> PathBuf {
    dir.join("cursors").join(format!("{sink}.cursor"))
}

fn read_cursor(path: &Path) -> Result<Position, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Position::default()),
        Err(e) => return Err(StoreError::io("read", path, e)),
    };
    decode_cursor(&bytes)
        .ok_or_else(|| StoreError::Corrupt { path: path.to_owned(), what: "cursor length or checksum".into() })
}

/// A cursor file's bytes (four little-endian u64 and their CRC-32) as a position; `None` if
/// they are not one. Pure, never panics (`fuzz/` runs it on arbitrary input).
pub fn decode_cursor(bytes: &[u8]) -> Option<Position> {
    if bytes.len() != 36 || crc32fast::hash(&bytes[..32]).to_le_bytes() != bytes[32..36] {
        return None;
    }
    let mut p = Position::default();
    for (c, chunk) in bytes[..32].chunks_exact(8).enumerate() {
        p.0[c] = u64::from_le_bytes(chunk.try_into().ok()?);
    }
    Some(p)
}

fn write_cursor(dir: &Path, sink: &str, cursor: &mut Cursor) -> Result<(), StoreError> {
    let mut bytes = Vec::with_capacity(36);
    for v in cursor.acked.0 {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    let path = cursor_path(dir, sink);
    crate::replace_file(&path, &bytes).map_err(|e| StoreError::io("write cursor", &path, e))?;
    cursor.written = cursor.acked;
    cursor.written_at = Instant::now();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::mpsc;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("airlock-outbox-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn threaded() -> OutboxConfig {
        OutboxConfig {
            fsync: FsyncPolicy::Interval(Duration::ZERO),
            sinks: vec!["mqtt".into()],
            sync_thread: true,
            ..OutboxConfig::default()
        }
    }

    fn hooks(writer: &OutboxWriter) -> Arc<crate::syncer::Hooks> {
        let inner = lock(&writer.inner).unwrap();
        inner.syncs.hooks().expect("a sync thread")
    }

    /// Waits (bounded) until no sync job runs.
    fn settle(writer: &OutboxWriter) {
        for _ in 0..2000 {
            if !lock(&writer.inner).unwrap().syncs.running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("the sync job did not finish in 10 s");
    }

    /// With a sync thread, the segments every sink has acknowledged are removed by the thread's
    /// next job, not on the thread that reclaims them (the collector's, where an unlink that
    /// frees a segment's cached pages holds the samples' way into the stores); the outbox stops
    /// counting them at once. A sync made here (a stop) removes them before it returns.
    #[test]
    fn acknowledged_segments_are_removed_by_the_sync_thread() {
        let dir = temp("reclaim-later");
        // Segments of 4 KB.
        let (mut writer, reader) =
            OutboxWriter::open(&dir, OutboxConfig { bytes_max: 64 << 10, ..threaded() }).unwrap();
        let files = || fs::read_dir(dir.join("raw")).unwrap().count();
        let ack_all = |writer: &mut OutboxWriter, from: u32| {
            // A commit while a job runs writes nothing, and segments roll at commits: one each
            // 40 records of 124 bytes.
            for i in from..from + 400 {
                writer.append_encoded(Class::Raw, Timestamp(i64::from(i)), &[7; 100]).unwrap();
                if i % 40 == 39 {
                    settle(writer);
                    writer.commit().unwrap();
                }
            }
            writer.sync().unwrap();
            let records = reader.read(&reader.position("mqtt").unwrap(), usize::MAX).unwrap();
            reader.ack("mqtt", records.last().unwrap().id).unwrap();
        };
        ack_all(&mut writer, 0);
        let (held, bytes) = (files(), writer.stats().bytes);
        assert!(held >= 3, "{held} segments");
        writer.maintain(Timestamp(0)).unwrap();
        assert_eq!(files(), held, "a segment's file was removed on the thread that reclaims");
        assert!(writer.stats().bytes < bytes / 2, "the dropped segments are still counted");
        writer.commit().unwrap();
        settle(&writer);
        assert_eq!(files(), 1, "the sync job removes them: the active segment is left");
        // A stop's sync removes them itself.
        ack_all(&mut writer, 400);
        let held = files();
        writer.maintain(Timestamp(0)).unwrap();
        assert_eq!(files(), held);
        writer.sync().unwrap();
        assert_eq!(files(), 1);
        drop((writer, reader));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// While the sync thread's job is held (a disk slow to sync), appends and commits each
    /// return at once, sinks see nothing unsynced and no waker fires; once it is done, sinks
    /// see exactly what that job covered, and the next job the rest.
    #[test]
    fn commits_go_on_while_a_sync_is_held_and_sinks_see_only_what_was_synced() {
        let dir = temp("held");
        let (mut writer, reader) = OutboxWriter::open(&dir, threaded()).unwrap();
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        reader
            .on_new_records(move || {
                w.fetch_add(1, SeqCst);
            })
            .unwrap();
        let hooks = hooks(&writer);
        let gate = hooks.gate.lock().unwrap();
        let (done, finished) = mpsc::channel();
        let committer = std::thread::spawn(move || {
            for i in 0..2000u32 {
                writer.append_encoded(Class::Raw, Timestamp(i64::from(i)), &i.to_le_bytes()).unwrap();
                writer.commit().unwrap();
            }
            done.send(()).unwrap();
            writer
        });
        finished.recv_timeout(Duration::from_secs(60)).expect("2000 commits return while the sync is held");
        let mut writer = committer.join().unwrap();
        let raw = dir.join("raw").join(format!("{:020}.seg", 1));
        assert_eq!(
            fs::metadata(&raw).unwrap().len(),
            (crate::log::MAGIC.len() + HEADER_BYTES + 4) as u64,
            "while the job runs, commits write nothing after the first record (a disk slow to sync is slow to write)"
        );
        assert_eq!(reader.end().unwrap(), Position([0; 4]), "nothing is visible before it is synced");
        assert!(reader.read_encoded(&Position::default(), 10).unwrap().is_empty());
        assert_eq!(woken.load(SeqCst), 0, "no waker fires for what is not synced");
        drop(gate);
        settle(&writer);
        // The first commit's job covered its one record.
        assert_eq!(reader.end().unwrap(), Position([0, 0, 0, 1]));
        assert_eq!(woken.load(SeqCst), 1);
        writer.commit().unwrap();
        settle(&writer);
        assert_eq!(reader.end().unwrap(), Position([0, 0, 0, 2000]));
        assert_eq!(reader.read_encoded(&Position::default(), 5000).unwrap().len(), 2000);
        drop((writer, reader));
        let _ = fs::remove_dir_all(&dir);
    }

    /// A sync that fails in the background (EIO): the next commit returns the failure once, a
    /// gap event covers exactly the records that were not synced, sinks never see them, and
    /// records after them get new numbers and arrive.
    #[test]
    fn a_failed_background_sync_is_reported_once_with_a_gap_event_for_exactly_what_it_lost() {
        let dir = temp("eio");
        let (mut writer, reader) = OutboxWriter::open(&dir, threaded()).unwrap();
        writer.append_encoded(Class::Raw, Timestamp(1), b"synced").unwrap();
        writer.sync().unwrap();
        let hooks = hooks(&writer);
        hooks.fail_next.store(1, SeqCst);
        {
            let _gate = hooks.gate.lock().unwrap();
            for i in 2..=10 {
                writer.append_encoded(Class::Raw, Timestamp(i), b"lost").unwrap();
                writer.commit().unwrap();
            }
        }
        settle(&writer);
        assert_eq!(reader.end().unwrap(), Position([0, 0, 0, 1]), "the failed records never become visible");
        let failed = writer.commit();
        assert!(matches!(failed, Err(StoreError::Io { .. })), "{failed:?}");
        writer.commit().unwrap();
        let next = writer.append_encoded(Class::Raw, Timestamp(11), b"after").unwrap();
        assert_eq!(next.seq, 11, "no number is given twice");
        writer.sync().unwrap();
        let records = reader.read(&Position::default(), 100).unwrap();
        let gaps: Vec<&GapRecord> = records
            .iter()
            .filter_map(|r| match &r.record {
                Upstream::Gap(gap) => Some(gap),
                _ => None,
            })
            .collect();
        assert_eq!(gaps.len(), 1, "{records:?}");
        assert_eq!((gaps[0].first_id.as_ref(), gaps[0].last_id.as_ref(), gaps[0].records), ("r2", "r10", 9));
        assert_eq!(gaps[0].cause, GapCause::WriteFailed);
        let raw: Vec<u64> = records.iter().filter(|r| r.id.class == Class::Raw).map(|r| r.id.seq).collect();
        assert_eq!(raw, vec![1, 11]);
        assert_eq!(writer.stats().dropped_write[Class::Raw as usize], 9);
        drop((writer, reader));
        let _ = fs::remove_dir_all(&dir);
    }

    /// A sync job that cannot start at one log (its file handle not duplicated: EMFILE) after
    /// the logs before it have started theirs: the commit says so, those logs' records are
    /// synced and visible, this log's stay unsynced and unseen, and the next job syncs them.
    /// Nothing is lost, numbered twice or reported as a gap.
    #[test]
    fn a_sync_that_cannot_start_at_one_log_is_reported_and_the_next_job_covers_it() {
        let dir = temp("start");
        let (mut writer, reader) = OutboxWriter::open(&dir, threaded()).unwrap();
        writer.append_encoded(Class::Event, Timestamp(1), b"e").unwrap();
        writer.append_encoded(Class::Raw, Timestamp(1), b"r").unwrap();
        writer.sync().unwrap();
        assert_eq!(reader.end().unwrap(), Position([1, 0, 0, 1]));
        let hooks = hooks(&writer);
        hooks.fail_start.store(Class::Raw as u32 + 1, SeqCst);
        for i in 2..=5 {
            writer.append_encoded(Class::Event, Timestamp(i), b"e").unwrap();
            writer.append_encoded(Class::Raw, Timestamp(i), b"r").unwrap();
        }
        let failed = writer.commit();
        assert!(
            matches!(&failed, Err(StoreError::Io { source, .. }) if source.raw_os_error() == Some(24)),
            "{failed:?}"
        );
        assert_eq!(hooks.fail_start.load(SeqCst), 0, "the failure was taken");
        settle(&writer);
        assert_eq!(
            reader.end().unwrap(),
            Position([5, 0, 0, 1]),
            "the events' job ran; the raw records, whose job did not start, are not visible"
        );
        writer.commit().unwrap();
        settle(&writer);
        assert_eq!(reader.end().unwrap(), Position([5, 0, 0, 5]), "the next job covered them");
        let records = reader.read_encoded(&Position::default(), 100).unwrap();
        assert_eq!(records.len(), 10, "{records:?}");
        assert!(writer.stats().dropped_write.iter().all(|n| *n == 0), "nothing counted lost");
        let next = writer.append_encoded(Class::Raw, Timestamp(6), b"r").unwrap();
        assert_eq!(next.seq, 6, "no number is given twice");
        drop((writer, reader));
        let _ = fs::remove_dir_all(&dir);
    }

    /// The stop's sync waits for a sync job still running, then syncs everything appended.
    #[test]
    fn the_stops_sync_waits_for_the_running_job_then_covers_everything() {
        let dir = temp("stop");
        let (mut writer, reader) = OutboxWriter::open(&dir, threaded()).unwrap();
        let hooks = hooks(&writer);
        let gate = hooks.gate.lock().unwrap();
        for i in 1..=50 {
            writer.append_encoded(Class::Event, Timestamp(i), b"e").unwrap();
            writer.commit().unwrap();
        }
        let (done, synced) = mpsc::channel();
        let stopper = std::thread::spawn(move || {
            let position = writer.sync();
            done.send(()).unwrap();
            position
        });
        assert!(synced.recv_timeout(Duration::from_millis(300)).is_err(), "the sync waits for the held job");
        drop(gate);
        synced.recv_timeout(Duration::from_secs(30)).expect("the sync returns once the job is done");
        assert_eq!(stopper.join().unwrap().unwrap(), Position([50, 0, 0, 0]));
        assert_eq!(reader.end().unwrap(), Position([50, 0, 0, 0]));
        drop(reader);
        let _ = fs::remove_dir_all(&dir);
    }
}
