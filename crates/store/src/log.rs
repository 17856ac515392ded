//! The segmented record log under both the outbox and the historian.
//!
//! A log is a folder of segment files named by the sequence number of their first record
//! (`00000000000000000001.seg`). Each segment starts with the 8-byte magic `ALOGv1\0\0`, then
//! records back to back:
//!
//! ```text
//!  0        4        8                16               24
//!  +--------+--------+----------------+----------------+---------------------+
//!  | len    | crc    | seq            | time           | payload (len bytes) |
//!  | u32 LE | u32 LE | u64 LE         | i64 LE (ns)    |                     |
//!  +--------+--------+----------------+----------------+---------------------+
//!  crc = CRC-32 (IEEE) of bytes 8 .. 24 + len
//! ```
//!
//! Appends are buffered and reach the file at [`Log::commit`] (or when the buffer passes 1 MiB;
//! a payload of 64 KiB or more is written at once, not copied into the buffer); `commit(true)`
//! also calls `fdatasync`. Only committed records are visible to this log's readers; a log
//! opened read-only by another process sees what has reached the file, and may count a record
//! being written as it opens as a torn one. If a
//! write fails (a full disk), the active segment is cut back to the last commit and everything
//! appended since is discarded and reported, so a failed write never leaves a torn record behind.
//! Segments roll at commit time once they pass `segment_bytes_max`.
//!
//! On open, every segment is scanned and every record's length and checksum checked. A torn
//! tail of the last segment (a crash mid-write) is cut off; a corrupt record inside is skipped
//! and counted, the scan finding the next valid record by its header and checksum.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use airlock_model::Timestamp;

use crate::StoreError;

pub const MAGIC: &[u8; 8] = b"ALOGv1\0\0";
pub const HEADER_BYTES: usize = 24;
/// The largest payload a record may carry.
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;
/// Sequence numbers stay below this; a record claiming more is corrupt.
pub const SEQ_MAX: u64 = 1 << 62;
/// Buffered bytes that trigger a write before the commit.
const PENDING_BYTES_MAX: usize = 1 << 20;
/// The same while a sync job runs: a disk slow to sync is slow to take writes too (ext4 holds
/// a write that needs the journal while it commits), so appends wait in memory meanwhile, up
/// to this, rather than hold the thread that appends.
const PENDING_BYTES_MAX_SYNCING: usize = 16 << 20;
/// A payload this large is written at once, not copied into the buffer (a historian block:
/// the buffer would grow to hold it and keep that memory).
const DIRECT_BYTES_MIN: usize = 64 << 10;
/// Every this many records, a segment remembers the offset of one, to find a record fast.
const INDEX_EVERY: u64 = 64;

/// Numbers a segment may skip between two valid records beyond those of the records lost
/// between them. None by design (the numbers of a failed write make the next record start a
/// new segment); the margin lets re-synchronising refuse an offset whose number is further
/// ahead before its checksum, without ever passing over a valid record. An offset whose
/// number is within it is checked in time independent of its length ([`RangeCrc`]).
const RESYNC_GAP_MAX: u64 = 1 << 20;

/// One record read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub time: Timestamp,
    pub payload: Vec<u8>,
}

/// What a log holds in one segment file.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    pub first_seq: u64,
    /// The last record's sequence number; `first_seq - 1` when empty.
    pub last_seq: u64,
    pub first_time: Timestamp,
    pub last_time: Timestamp,
    pub bytes: u64,
}

impl SegmentInfo {
    pub fn records(&self) -> u64 {
        if self.last_seq < self.first_seq { 0 } else { self.last_seq - self.first_seq + 1 }
    }
}

#[derive(Debug, Clone)]
struct Segment {
    info: SegmentInfo,
    path: PathBuf,
    /// `(seq, offset)` of every `INDEX_EVERY`-th record.
    index: Vec<(u64, u64)>,
}

/// The active segment as it was at the last commit, to roll back to after a failed write.
#[derive(Debug, Clone)]
struct Committed {
    segment: Segment,
    next_seq: u64,
}

/// Recovery findings of [`Log::open`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records whose checksum or length was wrong, skipped.
    pub corrupt_records: u64,
    /// Bytes cut off the end of the last segment (a torn write).
    pub torn_bytes: u64,
}

/// An append-only log of records in segment files.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    /// Every segment by first sequence number; the last one is the active one.
    segments: BTreeMap<u64, Segment>,
    /// The active segment, open for appending; `None` when opened read-only.
    active: Option<File>,
    /// Encoded records not yet written to `active`.
    pending: Vec<u8>,
    /// Bytes of the active segment on disk (complete records only).
    written_bytes: u64,
    next_seq: u64,
    committed: Committed,
    /// The last point known to be on disk (synced): what a failed sync rolls back to. Equal
    /// to `committed` after every commit that syncs; behind it while a [`SyncJob`] runs.
    durable: Committed,
    segment_bytes_max: u64,
    pub recovery: Recovery,
    /// The times of the records appended since the last commit (first, last).
    uncommitted_times: Option<(Timestamp, Timestamp)>,
    /// Records given a sequence number whose write failed, not yet taken by [`Log::take_lost`].
    lost: Vec<Lost>,
    /// A write failed: the next append starts a new segment at `next_seq`, so that sequence
    /// numbers are never given twice and a segment never has a hole.
    roll_needed: bool,
    /// Segments sealed by a commit that did not sync: their tails are synced, and the folder
    /// with their successors' names, at the next commit that syncs.
    sealed_unsynced: Vec<File>,
    dir_unsynced: bool,
    /// The files a running [`SyncJob`] holds (shared with it), and whether it holds the
    /// folder: a commit that syncs here meanwhile syncs them too before it calls anything
    /// durable.
    in_job: Vec<Arc<File>>,
    dir_in_job: bool,
    /// A sync job was started and not yet finished.
    job_running: bool,
    /// Segments dropped ([`Log::drop_through_later`]) whose files the next sync job removes
    /// (or the next sync made here), off the thread that appends: an unlink that frees a
    /// segment's cached pages held the historian's writer for milliseconds (issue 15).
    doomed: Vec<PathBuf>,
    /// Sealed segments synced on this thread (for the tests).
    #[cfg(test)]
    sealed_syncs: u64,
    /// Whether the active segment was written (or cut back) since it was last synced: a
    /// commit that syncs and finds it clean costs no `fdatasync` (each one also flushes the
    /// disk's cache; the outbox's four logs and the WAL synced every 10 ms whether or not a
    /// record had come, 400 a second at a 1 ms poll).
    active_unsynced: bool,
    /// `fdatasync` calls made on the active segment.
    #[cfg(test)]
    syncs: u64,
    /// Records found corrupt on read (since opening), skipped.
    pub corrupt_reads: AtomicU64,
}

/// A sync of a log's files taken off its thread: see [`Log::start_sync`].
#[derive(Debug)]
pub struct SyncJob {
    /// The segments written since the last sync: the active one's handle duplicated, the
    /// sealed ones' handed over (each shared with the log's `in_job`).
    files: Vec<Arc<File>>,
    /// The folder, if segments were made or deleted since it was last synced.
    dir: Option<PathBuf>,
    /// The log's commit point when the job was made: durable once the job is done.
    mark: Committed,
    /// Files of dropped segments to remove first; those that could not be are left here, and
    /// handed back to the log.
    remove: Vec<PathBuf>,
}

impl SyncJob {
    /// Removes the dropped segments' files, then `fdatasync`s every file, then the folder; the
    /// first failure to sync ends it (a file that cannot be removed is no failure of the
    /// sync: it is kept for the next job). Takes no lock.
    pub fn run(&mut self) -> io::Result<()> {
        remove_files(&mut self.remove);
        for file in &self.files {
            file.sync_data()?;
        }
        if let Some(dir) = &self.dir {
            File::open(dir).and_then(|d| d.sync_all())?;
        }
        Ok(())
    }

    /// The last sequence number the job makes durable.
    pub fn through(&self) -> u64 {
        self.mark.next_seq - 1
    }
}

/// One record's payload, to read in parts (see [`Log::open_record`]).
#[derive(Debug)]
pub enum RecordReader {
    File {
        file: File,
        payload_at: u64,
        len: u64,
    },
    /// Read whole, when the way to it had to be found the checked way.
    Memory(Vec<u8>),
}

impl RecordReader {
    /// The payload's length.
    pub fn len(&self) -> u64 {
        match self {
            Self::File { len, .. } => *len,
            Self::Memory(bytes) => bytes.len() as u64,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` bytes of the payload from `offset`; `None` if they are not all inside it.
    pub fn read(&self, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        if offset.checked_add(len as u64).is_none_or(|end| end > self.len()) {
            return Ok(None);
        }
        match self {
            Self::File { file, payload_at, .. } => {
                let mut out = vec![0u8; len];
                read_exact_at(file, &mut out, payload_at + offset)?;
                Ok(Some(out))
            }
            Self::Memory(bytes) => Ok(bytes.get(offset as usize..offset as usize + len).map(<[u8]>::to_vec)),
        }
    }
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Records that were given sequence numbers but never reached the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    pub first_seq: u64,
    pub last_seq: u64,
    /// How many (fewer than the range when two ranges were merged).
    pub records: u64,
    pub from: Timestamp,
    pub to: Timestamp,
}

/// Sealed segments waiting for the next syncing commit, at most (beyond, the oldest is synced).
const SEALED_UNSYNCED_MAX: usize = 16;

/// Lost ranges kept at most; beyond, the oldest two are merged (the count stays exact).
const LOST_RANGES_MAX: usize = 64;

impl Log {
    /// Opens (or creates) the log in `dir`, checking every record.
    pub fn open(dir: &Path, segment_bytes_max: u64) -> Result<Self, StoreError> {
        Self::open_as(dir, segment_bytes_max, true)
    }

    /// Opens the log to read only, while a writer may be using it: nothing on disk is changed
    /// (a torn tail is only skipped), and appends fail.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        Self::open_as(dir, u64::MAX, false)
    }

    fn open_as(dir: &Path, segment_bytes_max: u64, write: bool) -> Result<Self, StoreError> {
        if write {
            fs::create_dir_all(dir).map_err(|e| StoreError::io("create", dir, e))?;
        }
        let mut recovery = Recovery::default();
        let mut segments = BTreeMap::new();
        let names = segment_files(dir)?;
        let count = names.len();
        for (i, (first_seq, path)) in names.into_iter().enumerate() {
            let is_last = i + 1 == count;
            let segment = scan(&path, first_seq, is_last && write, write, &mut recovery)?;
            if segment.info.records() == 0 && !is_last {
                if write {
                    fs::remove_file(&path).map_err(|e| StoreError::io("remove empty segment", &path, e))?;
                }
                continue;
            }
            segments.insert(first_seq, segment);
        }
        if segments.is_empty() {
            let segment = if write {
                create_segment(dir, 1, Timestamp(0))?
            } else {
                let info = SegmentInfo {
                    first_seq: 1,
                    last_seq: 0,
                    first_time: Timestamp(0),
                    last_time: Timestamp(0),
                    bytes: 0,
                };
                Segment { info, path: dir.join("none"), index: Vec::new() }
            };
            segments.insert(segment.info.first_seq, segment);
        }
        let last = segments.values().next_back().cloned().ok_or(StoreError::Invariant("no segment"))?;
        let active = match write {
            true => Some(
                OpenOptions::new().append(true).open(&last.path).map_err(|e| StoreError::io("open", &last.path, e))?,
            ),
            false => None,
        };
        if let Some(file) = &active {
            // What an earlier run wrote and did not sync (it was killed: a write past the
            // buffer's size, a segment sealed without a sync) is read back above as committed,
            // and may be sent upstream as durable: on disk first, whatever the segment.
            rustix::fs::syncfs(file).map_err(|e| StoreError::io("sync the file system of", dir, e.into()))?;
        }
        let next_seq = last.info.last_seq + 1;
        Ok(Self {
            dir: dir.to_owned(),
            written_bytes: last.info.bytes,
            durable: Committed { segment: last.clone(), next_seq },
            committed: Committed { segment: last, next_seq },
            segments,
            active,
            pending: Vec::new(),
            next_seq,
            segment_bytes_max,
            recovery,
            uncommitted_times: None,
            lost: Vec::new(),
            roll_needed: false,
            sealed_unsynced: Vec::new(),
            dir_unsynced: false,
            in_job: Vec::new(),
            dir_in_job: false,
            job_running: false,
            doomed: Vec::new(),
            #[cfg(test)]
            sealed_syncs: 0,
            // Synced once more at the first commit that syncs (cheap; `syncfs` above did it).
            active_unsynced: true,
            #[cfg(test)]
            syncs: 0,
            corrupt_reads: AtomicU64::new(0),
        })
    }

    /// Buffers one record and returns its sequence number. Visible after the next commit.
    /// A number is never given twice: if the write of a record fails, its number stays used
    /// (and is reported by [`Log::take_lost`]).
    pub fn append(&mut self, time: Timestamp, payload: &[u8]) -> Result<u64, StoreError> {
        if payload.len() > PAYLOAD_BYTES_MAX {
            return Err(StoreError::TooLarge { bytes: payload.len(), max: PAYLOAD_BYTES_MAX });
        }
        if self.roll_needed {
            self.roll(false)?;
            self.roll_needed = false;
        }
        let direct = payload.len() >= DIRECT_BYTES_MIN;
        if direct {
            self.write_pending()?;
            // Nothing is changed unless the record can be written (a read-only log refuses).
            self.active_file()?;
        }
        let seq = self.next_seq;
        let (from, _) = self.uncommitted_times.unwrap_or((time, time));
        self.uncommitted_times = Some((from, time));
        let offset = self.written_bytes + self.pending.len() as u64;
        if !direct {
            encode(&mut self.pending, seq, time, payload);
        }
        self.next_seq += 1;
        let segment = self.active_segment_mut()?;
        let info = &mut segment.info;
        if info.records() == 0 {
            info.first_time = time;
        }
        info.last_seq = seq;
        info.last_time = time;
        info.bytes += (HEADER_BYTES + payload.len()) as u64;
        if (seq - info.first_seq).is_multiple_of(INDEX_EVERY) {
            segment.index.push((seq, offset));
        }
        if direct {
            self.write_direct(seq, time, payload)?;
        } else if self.pending.len() >= if self.job_running { PENDING_BYTES_MAX_SYNCING } else { PENDING_BYTES_MAX } {
            self.write_pending()?;
        }
        Ok(seq)
    }

    /// Writes one record straight to the active segment (the buffer is empty): its header, then
    /// its payload. On failure, as [`Log::write_pending`].
    fn write_direct(&mut self, seq: u64, time: Timestamp, payload: &[u8]) -> Result<(), StoreError> {
        let header = header(seq, time, payload);
        self.active_unsynced = true;
        let file = self.active_file()?;
        // Header and payload in one call (and its continuations, if the kernel takes part).
        let mut parts = [std::io::IoSlice::new(&header), std::io::IoSlice::new(payload)];
        let mut rest = &mut parts[..];
        let mut written = Ok(());
        while !rest.is_empty() {
            match file.write_vectored(rest) {
                Ok(0) => {
                    written = Err(io::Error::from(io::ErrorKind::WriteZero));
                    break;
                }
                Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    written = Err(e);
                    break;
                }
            }
        }
        match written {
            Ok(()) => {
                self.written_bytes += (HEADER_BYTES + payload.len()) as u64;
                Ok(())
            }
            Err(e) => {
                let path = self.active_segment()?.path.clone();
                self.roll_back();
                Err(StoreError::io("write", &path, e))
            }
        }
    }

    /// Writes what is buffered, syncs it to disk if `sync`, rolls to a new segment if the
    /// active one is full, and returns the last committed sequence number. On failure every
    /// record appended since the last commit is discarded.
    pub fn commit(&mut self, sync: bool) -> Result<u64, StoreError> {
        self.write_pending()?;
        if sync {
            if self.active_unsynced {
                #[cfg(test)]
                {
                    self.syncs += 1;
                }
                let path = self.active_segment()?.path.clone();
                if let Err(e) = self.active_file()?.sync_data() {
                    self.roll_back_to_durable();
                    return Err(StoreError::io("sync", &path, e));
                }
                self.active_unsynced = false;
            }
            self.sync_sealed()?;
        }
        self.committed = Committed { segment: self.active_segment()?.clone(), next_seq: self.next_seq };
        if sync {
            self.durable = self.committed.clone();
        }
        self.uncommitted_times = None;
        // The records are committed whatever the roll does: a roll that fails (a full disk)
        // is tried again before the next append, which fails in its place if it fails again.
        if self.written_bytes >= self.segment_bytes_max {
            match self.roll(sync) {
                // Synced with the folder: the new, empty segment is the durable point.
                Ok(()) if sync => self.durable = self.committed.clone(),
                Ok(()) => {}
                Err(e) => {
                    log::warn!(
                        "{}: the next segment could not be made ({e}); tried again at the next record",
                        self.dir.display()
                    );
                    self.roll_needed = true;
                }
            }
        }
        Ok(self.next_seq - 1)
    }

    /// A sync of everything committed so far, to run off this log's thread ([`SyncJob::run`],
    /// with duplicated file handles: the log goes on taking appends and commits meanwhile),
    /// then handed back to [`Log::finish_sync`]. Call after [`Log::commit`]`(false)`; one job
    /// at a time. `None` when everything committed is durable already.
    pub fn start_sync(&mut self) -> Result<Option<SyncJob>, StoreError> {
        let dup =
            |file: &File| file.try_clone().map_err(|e| StoreError::io("duplicate a file handle in", &self.dir, e));
        let mut files = Vec::new();
        if self.active_unsynced
            && let Some(active) = &self.active
        {
            files.push(Arc::new(dup(active)?));
        }
        // The sealed segments and the folder go with this job: if it fails, what they hold
        // past the durable point is cut, not synced again (see `finish_sync`).
        files.extend(self.sealed_unsynced.drain(..).map(Arc::new));
        let dir = self.dir_unsynced.then(|| self.dir.clone());
        if files.is_empty()
            && dir.is_none()
            && self.committed.next_seq == self.durable.next_seq
            && self.doomed.is_empty()
        {
            return Ok(None);
        }
        let in_job = files.iter().map(Arc::clone).collect();
        self.active_unsynced = false;
        self.dir_unsynced = false;
        self.in_job = in_job;
        self.dir_in_job = dir.is_some();
        self.job_running = true;
        let remove = std::mem::take(&mut self.doomed);
        Ok(Some(SyncJob { files, dir, mark: self.committed.clone(), remove }))
    }

    /// Takes a [`SyncJob`]'s result. Done: what it covered is durable. Failed: never tried
    /// again (Linux reports a failed write-back once, and marks the pages clean, so a later
    /// sync that succeeds proves nothing): every record past the durable point is cut off the
    /// files and reported lost ([`Log::take_lost`]), and the numbers stay used. Returns the
    /// durable sequence number, or the failure.
    pub fn finish_sync(&mut self, mut job: SyncJob, result: io::Result<()>) -> Result<u64, StoreError> {
        self.in_job.clear();
        self.dir_in_job = false;
        self.job_running = false;
        if !job.remove.is_empty() {
            self.doomed.append(&mut job.remove);
            self.dir_unsynced = true;
        }
        match result {
            Ok(()) => {
                if job.mark.next_seq > self.durable.next_seq {
                    self.durable = job.mark;
                }
                Ok(self.durable_seq())
            }
            Err(e) => {
                if job.dir.is_some() {
                    self.dir_unsynced = true;
                }
                self.roll_back_to_durable();
                Err(StoreError::io("sync a segment in", &self.dir, e))
            }
        }
    }

    /// The last sequence number known to be on disk.
    pub fn durable_seq(&self) -> u64 {
        self.durable.next_seq - 1
    }

    /// After a failed sync: cuts back to the last commit (as a failed write does), then every
    /// segment back to the durable point: the one holding it to its length then, later ones
    /// to their magic (their names keep reserving their numbers). What is cut is counted from
    /// the segments, which hold no record a failed write took and none a drop removed, so
    /// every record lost is counted once.
    fn roll_back_to_durable(&mut self) {
        // What was never written comes after what is cut: noted last, in order, so the ranges
        // join.
        let uncommitted = self.roll_back_uncommitted();
        let durable = self.durable.clone();
        let last = self.segments.keys().next_back().copied();
        let firsts: Vec<u64> = self.segments.range(durable.segment.info.first_seq..).map(|(first, _)| *first).collect();
        for first in firsts {
            let Some(segment) = self.segments.get(&first).cloned() else { continue };
            let (kept, lost_from, from_time) = if first == durable.segment.info.first_seq {
                (durable.segment.clone(), durable.next_seq, durable.segment.info.last_time)
            } else {
                let info = SegmentInfo {
                    first_seq: first,
                    last_seq: first - 1,
                    first_time: segment.info.first_time,
                    last_time: segment.info.first_time,
                    bytes: MAGIC.len() as u64,
                };
                (Segment { info, path: segment.path.clone(), index: Vec::new() }, first, segment.info.first_time)
            };
            if segment.info.last_seq >= lost_from {
                let last_seq = segment.info.last_seq;
                let records = last_seq - lost_from + 1;
                self.note_lost(Lost {
                    first_seq: lost_from,
                    last_seq,
                    records,
                    from: from_time,
                    to: segment.info.last_time,
                });
                self.roll_needed = true;
            }
            let cut = match (Some(first) == last, &self.active) {
                (true, Some(active)) => active.set_len(kept.info.bytes),
                _ => OpenOptions::new().write(true).open(&segment.path).and_then(|f| f.set_len(kept.info.bytes)),
            };
            if let Err(e) = cut {
                log::error!("cut {} back to what was synced: {e}", segment.path.display());
            }
            self.segments.insert(first, kept);
        }
        if let Some(lost) = uncommitted {
            self.note_lost(lost);
        }
        if let Ok(active) = self.active_segment().cloned() {
            self.written_bytes = active.info.bytes;
            self.committed = Committed { segment: active, next_seq: self.next_seq };
        }
        self.active_unsynced = true;
    }

    fn write_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let written = self.active_file()?.write_all(&pending);
        self.pending = pending;
        // Written in part, or cut back below: unsynced either way.
        self.active_unsynced = true;
        match written {
            Ok(()) => {
                self.written_bytes += self.pending.len() as u64;
                self.pending.clear();
                // What a slow sync made the buffer hold is given back once written.
                if self.pending.capacity() > 2 * PENDING_BYTES_MAX {
                    self.pending.shrink_to(PENDING_BYTES_MAX);
                }
                Ok(())
            }
            Err(e) => {
                let path = self.active_segment()?.path.clone();
                self.roll_back();
                Err(StoreError::io("write", &path, e))
            }
        }
    }

    /// Cuts the active segment back to the last commit and forgets what came after it; their
    /// sequence numbers stay used, noted as lost.
    fn roll_back(&mut self) {
        if let Some(lost) = self.roll_back_uncommitted() {
            self.note_lost(lost);
        }
    }

    /// As [`Log::roll_back`], but returns what it lost instead of noting it.
    fn roll_back_uncommitted(&mut self) -> Option<Lost> {
        self.pending.clear();
        let committed = self.committed.clone();
        self.written_bytes = committed.segment.info.bytes;
        let mut lost = None;
        if self.next_seq > committed.next_seq {
            let (from, to) = self.uncommitted_times.take().unwrap_or_default();
            let (first_seq, last_seq) = (committed.next_seq, self.next_seq - 1);
            lost = Some(Lost { first_seq, last_seq, records: last_seq - first_seq + 1, from, to });
            self.roll_needed = true;
        }
        self.active_unsynced = true;
        let cut = self.active.as_ref().map(|f| f.set_len(committed.segment.info.bytes));
        if let Some(Err(e)) = cut {
            log::error!("cut {} back to its last commit: {e}", committed.segment.path.display());
        }
        self.segments.insert(committed.segment.info.first_seq, committed.segment);
        lost
    }

    fn note_lost(&mut self, lost: Lost) {
        match self.lost.last_mut() {
            Some(last) if last.last_seq + 1 == lost.first_seq => {
                last.last_seq = lost.last_seq;
                last.records += lost.records;
                last.to = lost.to;
            }
            _ => self.lost.push(lost),
        }
        if self.lost.len() > LOST_RANGES_MAX {
            let second = self.lost.remove(1);
            self.lost[0].last_seq = second.last_seq;
            self.lost[0].records += second.records;
            self.lost[0].to = second.to;
        }
    }

    /// Gives no number below `seq` from now on (numbers a reader has seen already, whose
    /// records the disk lost): the next record starts a segment named `seq`, which a restart
    /// reads as where the numbers go on. Nothing to do if the log is at or past it (or `seq` is
    /// past any number, which only a damaged cursor could ask).
    pub fn skip_to(&mut self, seq: u64) {
        if seq <= self.next_seq || seq >= SEQ_MAX {
            return;
        }
        // The segment is made before the next record, which fails if it cannot be (a full
        // disk): no number below `seq` is ever given.
        self.next_seq = seq;
        self.roll_needed = true;
    }

    /// Records whose write failed since the last call: numbers given, never on disk. Before
    /// they are handed out (to be reported), the next segment is made, named past them, and
    /// the folder synced: a restart then never gives their numbers again. If that fails (the
    /// disk is still full), they stay here, to be taken later.
    pub fn take_lost(&mut self) -> Result<Vec<Lost>, StoreError> {
        if self.lost.is_empty() {
            return Ok(Vec::new());
        }
        if self.roll_needed {
            self.roll(false)?;
            self.roll_needed = false;
        }
        if self.dir_unsynced {
            sync_dir(&self.dir)?;
            self.dir_unsynced = false;
        }
        Ok(std::mem::take(&mut self.lost))
    }

    /// What earlier commits that did not sync left: sealed segments' tails, and the folder
    /// (new segments' names). A sync is only a promise if these are on disk too.
    /// A running sync job's files count among them: this commit may not call anything
    /// durable that the job has not synced yet.
    fn sync_sealed(&mut self) -> Result<(), StoreError> {
        remove_files(&mut self.doomed);
        while let Some(f) = self.sealed_unsynced.last().or(self.in_job.last().map(|f| &**f)) {
            f.sync_data().map_err(|e| StoreError::io("sync a sealed segment in", &self.dir, e))?;
            #[cfg(test)]
            {
                self.sealed_syncs += 1;
            }
            if self.sealed_unsynced.pop().is_none() {
                self.in_job.pop();
            }
        }
        if (self.dir_unsynced || self.dir_in_job)
            && let Err(e) = sync_dir(&self.dir)
        {
            self.dir_unsynced = true;
            return Err(e);
        }
        self.dir_unsynced = false;
        self.dir_in_job = false;
        Ok(())
    }

    /// Seals the active segment and starts a new one. Without `sync`, the sealed segment and
    /// the folder are synced at the next commit that syncs.
    /// Every step that can fail comes before the log's state changes: a failed roll leaves
    /// the log as it was (at most an empty segment file, made again by the next roll).
    pub(crate) fn roll(&mut self, sync: bool) -> Result<(), StoreError> {
        // Bounded: a log that is never synced (policy `never`) holds no file open for ever.
        if !sync && self.sealed_unsynced.len() >= SEALED_UNSYNCED_MAX {
            let oldest = &self.sealed_unsynced[0];
            oldest.sync_data().map_err(|e| StoreError::io("sync a sealed segment in", &self.dir, e))?;
            self.sealed_unsynced.remove(0);
        }
        let time = self.active_segment()?.info.last_time;
        let segment = create_segment(&self.dir, self.next_seq, time)?;
        if sync {
            sync_dir(&self.dir)?;
        }
        let file = OpenOptions::new().append(true).open(&segment.path);
        let file = file.map_err(|e| StoreError::io("open", &segment.path, e))?;
        self.dir_unsynced |= !sync;
        // The new segment's magic.
        self.active_unsynced = true;
        if let Some(sealed) = self.active.replace(file)
            && !sync
        {
            self.sealed_unsynced.push(sealed);
        }
        self.written_bytes = segment.info.bytes;
        self.committed = Committed { segment: segment.clone(), next_seq: self.next_seq };
        self.segments.insert(self.next_seq, segment);
        Ok(())
    }

    fn active_file(&mut self) -> Result<&mut File, StoreError> {
        self.active.as_mut().ok_or(StoreError::Invariant("the log was opened read-only"))
    }

    fn active_segment(&self) -> Result<&Segment, StoreError> {
        self.segments.values().next_back().ok_or(StoreError::Invariant("no active segment"))
    }

    fn active_segment_mut(&mut self) -> Result<&mut Segment, StoreError> {
        self.segments.values_mut().next_back().ok_or(StoreError::Invariant("no active segment"))
    }

    /// The last committed sequence number (0 before the first record).
    pub fn committed_seq(&self) -> u64 {
        self.committed.next_seq - 1
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The first sequence number still held (may be past `committed_seq` when empty).
    pub fn first_seq(&self) -> u64 {
        self.segments.values().find(|s| s.info.records() > 0).map_or(self.next_seq, |s| s.info.first_seq)
    }

    /// Whether the log holds no record (committed or not).
    pub fn is_empty(&self) -> bool {
        self.first_seq() >= self.next_seq
    }

    /// Bytes of all segments on disk, buffered records included.
    pub fn bytes(&self) -> u64 {
        self.segments.values().map(|s| s.info.bytes).sum()
    }

    /// The segments, oldest first (the last is the active one).
    pub fn segments(&self) -> impl Iterator<Item = &SegmentInfo> {
        self.segments.values().map(|s| &s.info)
    }

    /// Reads committed records from `from_seq` on (or from the oldest held, if that is gone),
    /// at most `max_records` of them or about `max_bytes` of payload.
    pub fn read(&self, from_seq: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>, StoreError> {
        self.read_through(from_seq, u64::MAX, max_records, max_bytes)
    }

    /// As [`Log::read`], but no record past `through`.
    pub fn read_through(
        &self,
        from_seq: u64,
        through: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let last = self.committed_seq().min(through);
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut seq = from_seq.max(self.first_seq());
        while seq <= last && out.len() < max_records && bytes < max_bytes {
            let Some(segment) = self.segment_holding(seq) else { break };
            let before = out.len();
            let (records, room) = (max_records - out.len(), max_bytes - bytes);
            read_segment(segment, seq, last, records, room, &mut out, Some(&self.corrupt_reads))?;
            bytes += out[before..].iter().map(|r| r.payload.len()).sum::<usize>();
            match out.last() {
                Some(r) if out.len() > before => seq = r.seq + 1,
                // Nothing read there (an empty segment, left by a write that failed after a
                // roll, or only corrupt records): on past it. `seq` always grows, so this ends.
                _ => seq = segment.info.last_seq.saturating_add(1).max(seq.saturating_add(1)),
            }
        }
        Ok(out)
    }

    fn segment_holding(&self, seq: u64) -> Option<&Segment> {
        let (_, s) = self.segments.range(..=seq).next_back()?;
        if s.info.last_seq >= seq { Some(s) } else { self.segments.range(seq..).next().map(|(_, s)| s) }
    }

    /// Commits, then starts a new segment if the active one holds any record, so that every
    /// record so far can be deleted with [`Log::drop_through`].
    pub fn seal(&mut self, sync: bool) -> Result<u64, StoreError> {
        let committed = self.commit(sync)?;
        if self.active_segment()?.info.records() > 0 {
            self.roll(sync)?;
        }
        Ok(committed)
    }

    /// Calls `f(seq, time, prefix)` for every committed record, in order, with at most
    /// `prefix_bytes` of its payload, to rebuild an index. Every record is checked (length,
    /// checksum, order) as [`Log::read`] does: a corrupt one is skipped and counted, never
    /// handed on as garbage.
    pub fn scan_prefixes(
        &self,
        prefix_bytes: usize,
        mut f: impl FnMut(u64, Timestamp, &[u8]),
    ) -> Result<(), StoreError> {
        let mut from = 0;
        loop {
            let records = self.read(from, 1024, 16 << 20)?;
            let Some(last) = records.last().map(|r| r.seq) else { return Ok(()) };
            for r in &records {
                f(r.seq, r.time, &r.payload[..r.payload.len().min(prefix_bytes)]);
            }
            from = last + 1;
        }
    }

    /// The sequence number of the first committed record written at or after `time`; past the
    /// last one if none is. It takes records to be in time order within a log, as they mostly
    /// are (appended as they come); a record whose time went backwards (a clock step) can be
    /// passed over, so a rewind by time is approximate where a rewind by id is exact.
    pub fn first_seq_from(&self, time: Timestamp) -> Result<u64, StoreError> {
        let Some(segment) = self.segments.values().find(|s| s.info.records() > 0 && s.info.last_time >= time) else {
            return Ok(self.committed_seq() + 1);
        };
        if segment.info.first_time >= time {
            return Ok(segment.info.first_seq);
        }
        let mut from = segment.info.first_seq;
        loop {
            let records = self.read_through(from, segment.info.last_seq, 1024, 16 << 20)?;
            let Some(last) = records.last().map(|r| r.seq) else { return Ok(segment.info.last_seq + 1) };
            if let Some(r) = records.iter().find(|r| r.time >= time) {
                return Ok(r.seq);
            }
            from = last + 1;
        }
    }

    /// The time of the first committed record from `seq` on, read without counting or logging
    /// a corrupt record it passes (for a look that must change nothing: a dashboard's).
    pub fn peek_time(&self, seq: u64) -> Result<Option<Timestamp>, StoreError> {
        let last = self.committed_seq();
        let seq = seq.max(self.first_seq());
        if seq > last {
            return Ok(None);
        }
        let Some(segment) = self.segment_holding(seq) else { return Ok(None) };
        let mut out = Vec::new();
        read_segment(segment, seq, last, 1, usize::MAX, &mut out, None)?;
        Ok(out.first().map(|r| r.time))
    }

    /// Reads the one committed record `seq`, if it is still held.
    pub fn get(&self, seq: u64) -> Result<Option<Record>, StoreError> {
        Ok(self.read_through(seq, seq, 1, usize::MAX)?.into_iter().find(|r| r.seq == seq))
    }

    /// Finds the one committed record `seq` to read parts of its payload (a historian block's
    /// directory and one tag's section) without reading all of it. Record headers are walked
    /// from the nearest indexed record; the payload's checksum is not checked here (it covers
    /// the whole payload), so the caller checks its part. If the walk meets a header that does
    /// not fit (corrupt bytes), the record is read whole the checked way instead.
    pub fn open_record(&self, seq: u64) -> Result<Option<RecordReader>, StoreError> {
        if seq > self.committed_seq() || seq < self.first_seq() {
            return Ok(None);
        }
        let Some(segment) = self.segment_holding(seq).filter(|s| s.info.first_seq <= seq) else { return Ok(None) };
        let (mut expected, mut at) = segment
            .index
            .iter()
            .rev()
            .find(|(s, _)| *s <= seq)
            .copied()
            .unwrap_or((segment.info.first_seq, MAGIC.len() as u64));
        let file = match File::open(&segment.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("open", &segment.path, e)),
        };
        let mut header = [0u8; HEADER_BYTES];
        // Bounded by the records between two indexed ones.
        for _ in 0..=INDEX_EVERY {
            if read_exact_at(&file, &mut header, at).is_err() {
                break;
            }
            let len = u64::from(u32::from_le_bytes([header[0], header[1], header[2], header[3]]));
            let found = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
            if found != expected || len > PAYLOAD_BYTES_MAX as u64 {
                break;
            }
            if found == seq {
                return Ok(Some(RecordReader::File { file, payload_at: at + HEADER_BYTES as u64, len }));
            }
            at += HEADER_BYTES as u64 + len;
            expected += 1;
        }
        Ok(self.get(seq)?.map(|r| RecordReader::Memory(r.payload)))
    }

    /// Deletes the oldest sealed segment (sealing the active one first if it is the only one
    /// with records) and says what it held. `None` if the log holds no record.
    pub fn drop_oldest(&mut self, sync: bool) -> Result<Option<SegmentInfo>, StoreError> {
        let Some(oldest) = self.segments.values().find(|s| s.info.records() > 0).map(|s| s.info.first_seq) else {
            return Ok(None);
        };
        if Some(oldest) == self.segments.keys().next_back().copied() {
            self.commit(sync)?;
            if self.active_segment()?.info.records() > 0 {
                self.roll(sync)?;
            }
        }
        self.remove_segment(oldest, sync)
    }

    /// Deletes every sealed segment whose records all have `seq <= through`; returns what they held.
    pub fn drop_through(&mut self, through: u64, sync: bool) -> Result<Vec<SegmentInfo>, StoreError> {
        let mut out = Vec::new();
        for first in self.sealed_through(through) {
            out.extend(self.remove_segment(first, sync)?);
        }
        Ok(out)
    }

    /// [`Log::drop_through`] whose files the next sync job removes (or the next sync made
    /// here): the log forgets the segments now (their bytes are no longer counted), the files
    /// stay until then. For a log whose syncs go to a sync thread. Files left by a stop before
    /// that are segments all of whose records are covered: a start reads past them, and the
    /// next drop removes them.
    pub fn drop_through_later(&mut self, through: u64) -> Vec<SegmentInfo> {
        let mut out = Vec::new();
        for first in self.sealed_through(through) {
            if let Some(segment) = self.segments.remove(&first) {
                self.doomed.push(segment.path);
                self.dir_unsynced = true;
                out.push(segment.info);
            }
        }
        out
    }

    /// The first sequence numbers of the sealed segments whose records all have
    /// `seq <= through`.
    fn sealed_through(&self, through: u64) -> Vec<u64> {
        let active = self.segments.keys().next_back().copied();
        self.segments
            .values()
            .filter(|s| s.info.last_seq <= through && Some(s.info.first_seq) != active)
            .map(|s| s.info.first_seq)
            .collect()
    }

    /// Removes here the files [`Log::drop_through_later`] left for the next sync job (not
    /// those a running job holds: it removes them), the folder synced if `sync`.
    pub fn remove_dropped(&mut self, sync: bool) -> Result<(), StoreError> {
        if self.doomed.is_empty() {
            return Ok(());
        }
        remove_files(&mut self.doomed);
        if sync {
            sync_dir(&self.dir)?;
        } else {
            self.dir_unsynced = true;
        }
        Ok(())
    }

    fn remove_segment(&mut self, first_seq: u64, sync: bool) -> Result<Option<SegmentInfo>, StoreError> {
        let Some(segment) = self.segments.remove(&first_seq) else { return Ok(None) };
        fs::remove_file(&segment.path).map_err(|e| StoreError::io("remove", &segment.path, e))?;
        if sync {
            sync_dir(&self.dir)?;
        } else {
            self.dir_unsynced = true;
        }
        Ok(Some(segment.info))
    }
}

/// Removes dropped segments' files, oldest first; those that cannot be removed (other than
/// already gone) are logged and kept in `paths`, in order, for the next try.
fn remove_files(paths: &mut Vec<PathBuf>) {
    paths.retain(|path| match fs::remove_file(path) {
        Ok(()) => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => {
            log::warn!(
                "{}: a dropped segment could not be removed ({e}); tried again at the next sync",
                path.display()
            );
            true
        }
    });
}

/// A record, header and payload, onto `out`; its checksum taken over the two in one pass (a
/// cost per record the historian's ingest profile showed, issue 15).
fn encode(out: &mut Vec<u8>, seq: u64, time: Timestamp, payload: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&header_without_crc(seq, time, payload));
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// A record's header (its checksum covers the header's last 16 bytes and the payload).
fn header(seq: u64, time: Timestamp, payload: &[u8]) -> [u8; HEADER_BYTES] {
    let mut header = header_without_crc(seq, time, payload);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[8..]);
    crc.update(payload);
    header[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    header
}

/// A record's header with its checksum's place zero.
fn header_without_crc(seq: u64, time: Timestamp, payload: &[u8]) -> [u8; HEADER_BYTES] {
    let mut header = [0u8; HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[8..16].copy_from_slice(&seq.to_le_bytes());
    header[16..24].copy_from_slice(&time.0.to_le_bytes());
    header
}

/// A record's header at `at` in `bytes` before its checksum is checked: its length in bounds,
/// its body within `bytes`, its number below [`SEQ_MAX`].
struct Header {
    crc: u32,
    seq: u64,
    time: i64,
    /// Where the record ends in `bytes`.
    end: usize,
}

impl Header {
    fn at(bytes: &[u8], at: usize) -> Option<Self> {
        let header = bytes.get(at..at + HEADER_BYTES)?;
        let word = |i: usize| header.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
        let long = |i: usize| header.get(i..i + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
        let len = word(0)? as usize;
        let end = at + HEADER_BYTES + len;
        if len > PAYLOAD_BYTES_MAX || end > bytes.len() {
            return None;
        }
        // No log gives out 2^62 sequence numbers: one that big came from bad bytes (with a
        // checksum that happens to match), and would overflow the next number.
        let seq = long(8).filter(|s| *s < SEQ_MAX)?;
        Some(Self { crc: word(4)?, seq, time: long(16)? as i64, end })
    }

    /// The record, if `crc` (the checksum of its bytes `at + 8..end`) is its own.
    fn record(&self, bytes: &[u8], at: usize, crc: u32) -> Option<Record> {
        let payload = bytes.get(at + HEADER_BYTES..self.end).filter(|_| crc == self.crc)?.to_vec();
        Some(Record { seq: self.seq, time: Timestamp(self.time), payload })
    }
}

/// The record starting at `at` in `bytes`, if its header and checksum are right.
fn decode(bytes: &[u8], at: usize) -> Option<Record> {
    let header = Header::at(bytes, at)?;
    header.record(bytes, at, crc32fast::hash(bytes.get(at + 8..header.end)?))
}

/// Segment files in `dir`, by first sequence number.
fn segment_files(dir: &Path) -> Result<BTreeMap<u64, PathBuf>, StoreError> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))? {
        let path = entry.map_err(|e| StoreError::io("list", dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Sequence numbers start at 1: a `0.seg` is not one of ours.
        if let Some(first) =
            name.strip_suffix(".seg").and_then(|n| n.parse::<u64>().ok()).filter(|f| *f > 0 && *f < SEQ_MAX)
        {
            out.insert(first, path);
        }
    }
    Ok(out)
}

fn create_segment(dir: &Path, first_seq: u64, time: Timestamp) -> Result<Segment, StoreError> {
    let path = dir.join(format!("{first_seq:020}.seg"));
    let mut f = File::create(&path).map_err(|e| StoreError::io("create", &path, e))?;
    f.write_all(MAGIC).map_err(|e| StoreError::io("write", &path, e))?;
    let info = SegmentInfo {
        first_seq,
        last_seq: first_seq - 1,
        first_time: time,
        last_time: time,
        bytes: MAGIC.len() as u64,
    };
    Ok(Segment { info, path, index: Vec::new() })
}

/// Reads a whole segment, checking every record; cuts a torn tail off the last segment.
/// `repair`: cut a torn tail off (the writer's last segment); otherwise only skip it.
/// `mend`: write a damaged magic again (any segment of a writer's log).
fn scan(path: &Path, first_seq: u64, repair: bool, mend: bool, recovery: &mut Recovery) -> Result<Segment, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::io("read", path, e))?;
    let checked = check_segment(&bytes, first_seq);
    let Checked { info, index, magic, magic_damaged, valid_end, corrupt_records } = checked;
    if magic_damaged && mend {
        use std::os::unix::fs::FileExt;
        let f = OpenOptions::new().write(true).open(path).map_err(|e| StoreError::io("open", path, e))?;
        f.write_all_at(MAGIC, 0).map_err(|e| StoreError::io("write the magic of", path, e))?;
        f.sync_all().map_err(|e| StoreError::io("sync", path, e))?;
    }
    if !magic {
        // A segment cut before its magic was written: start it afresh.
        recovery.torn_bytes += bytes.len() as u64;
        if repair {
            fs::write(path, MAGIC).map_err(|e| StoreError::io("rewrite", path, e))?;
        }
        return Ok(Segment { info, path: path.to_owned(), index });
    }
    recovery.corrupt_records += corrupt_records;
    if valid_end < bytes.len() {
        if repair {
            recovery.torn_bytes += (bytes.len() - valid_end) as u64;
            let f = OpenOptions::new().write(true).open(path).map_err(|e| StoreError::io("open", path, e))?;
            f.set_len(valid_end as u64).map_err(|e| StoreError::io("truncate", path, e))?;
            f.sync_all().map_err(|e| StoreError::io("sync", path, e))?;
        } else {
            recovery.corrupt_records += 1;
        }
    }
    Ok(Segment { info, path: path.to_owned(), index })
}

/// What checking a segment file's bytes found.
#[derive(Debug)]
pub struct Checked {
    pub info: SegmentInfo,
    /// Every `INDEX_EVERY`th record's sequence number and offset.
    pub index: Vec<(u64, u64)>,
    /// Whether the file holds a segment: it starts with the magic, or is longer than one (a
    /// damaged magic). If not, it was cut before its magic was written and holds nothing.
    pub magic: bool,
    /// Whether the magic went bad (counted among `corrupt_records`; the records behind it are
    /// checked and kept).
    pub magic_damaged: bool,
    /// Where the last valid record ends: what follows is a torn or corrupt tail.
    pub valid_end: usize,
    /// Records skipped as corrupt between valid ones.
    pub corrupt_records: u64,
}

/// Checks every record of a segment file's `bytes` (length, checksum, order), skipping and
/// counting corrupt ones by re-synchronising on the next valid record. Pure, and never panics
/// whatever the bytes (`fuzz/` runs it on arbitrary input).
pub fn check_segment(bytes: &[u8], first_seq: u64) -> Checked {
    let first_seq = first_seq.clamp(1, SEQ_MAX);
    let mut info = SegmentInfo {
        first_seq,
        last_seq: first_seq - 1,
        first_time: Timestamp(0),
        last_time: Timestamp(0),
        bytes: MAGIC.len() as u64,
    };
    let mut index = Vec::new();
    let magic = bytes.get(..MAGIC.len()) == Some(MAGIC.as_slice());
    if !magic && bytes.len() <= MAGIC.len() {
        return Checked { info, index, magic: false, magic_damaged: false, valid_end: 0, corrupt_records: 0 };
    }
    // Longer than a magic and not starting with one: the magic went bad (a segment is made
    // with its magic in one write), and the records behind it are checked as any others.
    let magic_damaged = !magic;
    let mut corrupt_records = u64::from(magic_damaged);
    let mut at = MAGIC.len();
    let mut valid_end = at;
    let mut range_crc = None;
    while at < bytes.len() {
        let found = decode(bytes, at).filter(|r| r.seq > info.last_seq).map(|r| (at, r));
        let (start, record) = match found {
            Some(f) => f,
            None => match resync(bytes, at + 1, info.last_seq, &mut range_crc) {
                Some(f) => {
                    corrupt_records += 1;
                    f
                }
                None => break,
            },
        };
        if info.records() == 0 {
            info.first_time = record.time;
        }
        if (record.seq - first_seq).is_multiple_of(INDEX_EVERY) {
            index.push((record.seq, start as u64));
        }
        info.last_seq = record.seq;
        info.last_time = record.time;
        at = start + HEADER_BYTES + record.payload.len();
        valid_end = at;
    }
    info.bytes = valid_end as u64;
    Checked { info, index, magic: true, magic_damaged, valid_end, corrupt_records }
}

#[cfg(test)]
thread_local! {
    /// Bytes hashed by [`resync`] on this thread (a test bounds it).
    static RESYNC_HASHED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Checksums of any range of a file's bytes in time independent of the range's length: the
/// checksum of every prefix that ends on a multiple of [`Self::STEP`] bytes (a sixteenth of the
/// file's size in memory), from which a range's is combined (CRC-32 is linear: the checksum
/// of `A ++ B` is that of `A` shifted past `B`'s length, xor that of `B`).
struct RangeCrc<'a> {
    bytes: &'a [u8],
    prefixes: Vec<u32>,
}

impl<'a> RangeCrc<'a> {
    const STEP: usize = 64;

    fn new(bytes: &'a [u8]) -> Self {
        let mut prefixes = Vec::with_capacity(bytes.len() / Self::STEP + 1);
        let mut hasher = crc32fast::Hasher::new();
        prefixes.push(0);
        for step in bytes.chunks_exact(Self::STEP) {
            hasher.update(step);
            prefixes.push(hasher.clone().finalize());
        }
        Self { bytes, prefixes }
    }

    /// The checksum of the file's first `end` bytes.
    fn prefix(&self, end: usize) -> u32 {
        let i = end / Self::STEP;
        let mut hasher = crc32fast::Hasher::new_with_initial(self.prefixes[i]);
        hasher.update(&self.bytes[i * Self::STEP..end]);
        #[cfg(test)]
        RESYNC_HASHED.set(RESYNC_HASHED.get() + (end - i * Self::STEP) as u64);
        hasher.finalize()
    }

    /// The checksum of the file's bytes `start..end`.
    fn range(&self, start: usize, end: usize) -> u32 {
        let mut shifted = crc32fast::Hasher::new_with_initial(self.prefix(start));
        shifted.combine(&crc32fast::Hasher::new_with_initial_len(0, (end - start) as u64));
        self.prefix(end) ^ shifted.finalize()
    }
}

/// Checksums over at least this many bytes are taken through a [`RangeCrc`] while
/// re-synchronising.
const RANGE_CRC_MIN: usize = 256;

/// The next valid record at or after `from` whose sequence number is above `last_seq`.
/// `range_crc`: the file's prefix checksums, made at the first long body this meets and kept
/// for the next call on the same bytes, so that each offset costs the same whatever length its
/// bytes claim (hashing every candidate's whole body was quadratic in a run of garbage).
fn resync<'a>(
    bytes: &'a [u8],
    from: usize,
    last_seq: u64,
    range_crc: &mut Option<RangeCrc<'a>>,
) -> Option<(usize, Record)> {
    (from..bytes.len().saturating_sub(HEADER_BYTES - 1)).find_map(|at| {
        let header = Header::at(bytes, at)?;
        // A valid record's number is above the last valid one's by at most one for each
        // record that can have been lost between them (each took a header's bytes at least),
        // and RESYNC_GAP_MAX: only such an offset is worth its checksum.
        let lost_max = ((at - from) / HEADER_BYTES) as u64 + 1;
        if header.seq <= last_seq || header.seq - last_seq > lost_max + RESYNC_GAP_MAX {
            return None;
        }
        let body = at + 8..header.end;
        let crc = if body.len() >= RANGE_CRC_MIN {
            range_crc.get_or_insert_with(|| RangeCrc::new(bytes)).range(body.start, body.end)
        } else {
            #[cfg(test)]
            RESYNC_HASHED.set(RESYNC_HASHED.get() + body.len() as u64);
            crc32fast::hash(bytes.get(body)?)
        };
        header.record(bytes, at, crc).map(|r| (at, r))
    })
}

/// Reads the records of `segment` from `from_seq` through `last_seq`. Every record is checked
/// again (length, checksum, order): one that went bad on disk since it was written is skipped,
/// counted in `corrupt`, and reading re-synchronises on the next valid record, as opening does,
/// so one bad record never hides the records after it nor stops a reader.
fn read_segment(
    segment: &Segment,
    from_seq: u64,
    last_seq: u64,
    max_records: usize,
    max_bytes: usize,
    out: &mut Vec<Record>,
    corrupt: Option<&AtomicU64>,
) -> Result<(), StoreError> {
    let indexed = segment.index.iter().rev().find(|(s, _)| *s <= from_seq).copied();
    let (start, mut floor) = indexed
        .map_or((MAGIC.len() as u64, segment.info.first_seq.saturating_sub(1)), |(s, o)| (o, s.saturating_sub(1)));
    let path = &segment.path;
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io("open", path, e)),
    };
    let mut reader = io::BufReader::with_capacity(64 << 10, file);
    let mut at = start;
    reader.seek(SeekFrom::Start(at)).map_err(|e| StoreError::io("seek", path, e))?;
    let mut bytes = 0;
    let mut frame = Vec::new();
    // The whole file, read at the first corrupt record (once, however many follow).
    let whole = std::cell::OnceCell::new();
    let mut range_crc = None;
    while out.len() < max_records && bytes < max_bytes {
        frame.resize(HEADER_BYTES, 0);
        match reader.read_exact(&mut frame) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(StoreError::io("read", path, e)),
        }
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        let mut record = None;
        if len <= PAYLOAD_BYTES_MAX {
            frame.resize(HEADER_BYTES + len, 0);
            match reader.read_exact(&mut frame[HEADER_BYTES..]) {
                Ok(()) => record = decode(&frame, 0).filter(|r| r.seq > floor),
                // The end of the file. If every committed record of the segment has been read,
                // this is just where writing stands; if not, a length went bad (it points past
                // the end) and the records after it are found by re-synchronising below.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    if floor >= last_seq.min(segment.info.last_seq) {
                        return Ok(());
                    }
                }
                Err(e) => return Err(StoreError::io("read", path, e)),
            }
        }
        let Some(record) = record else {
            // A bad length, checksum or order: skip to the next valid record after this one.
            if let Some(corrupt) = corrupt {
                corrupt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log::error!("{}: a corrupt record at byte {at} on read; skipped", path.display());
            }
            if whole.get().is_none() {
                let mut all = Vec::new();
                reader.seek(SeekFrom::Start(0)).map_err(|e| StoreError::io("seek", path, e))?;
                reader.read_to_end(&mut all).map_err(|e| StoreError::io("read", path, e))?;
                let _ = whole.set(all);
            }
            let Some(all) = whole.get() else { return Ok(()) };
            let Some((offset, _)) = resync(all, at as usize + 1, floor, &mut range_crc) else { return Ok(()) };
            at = offset as u64;
            reader.seek(SeekFrom::Start(at)).map_err(|e| StoreError::io("seek", path, e))?;
            continue;
        };
        at += frame.len() as u64;
        if record.seq > last_seq {
            return Ok(());
        }
        floor = record.seq;
        if record.seq >= from_seq {
            bytes += record.payload.len();
            out.push(record);
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("airlock-log-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    /// A buffered record (checksum in one pass) and a direct one (header apart from its
    /// payload) are the same bytes.
    #[test]
    fn a_buffered_record_and_a_direct_one_are_the_same_bytes() {
        for len in [0usize, 1, 15, 16, 63, 64, 65, 1000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let mut buffered = vec![9, 9, 9];
            encode(&mut buffered, 42 + len as u64, Timestamp(1_700_000_000_000), &payload);
            let mut direct = vec![9, 9, 9];
            direct.extend_from_slice(&header(42 + len as u64, Timestamp(1_700_000_000_000), &payload));
            direct.extend_from_slice(&payload);
            assert_eq!(buffered, direct, "{len} bytes");
        }
    }

    fn payloads(log: &Log, from: u64) -> Vec<(u64, String)> {
        let records = log.read(from, usize::MAX, usize::MAX).unwrap();
        records.into_iter().map(|r| (r.seq, String::from_utf8(r.payload).unwrap())).collect()
    }

    /// A commit whose records are written and synced, and whose roll to the next segment then
    /// fails (the folder gone here; a full disk in a plant), succeeds: the records are
    /// committed, and the roll is tried again at the next append. Reported as a failure, the
    /// historian kept heads it had already checkpointed, and wrote them twice.
    #[test]
    fn a_roll_that_fails_after_a_commit_does_not_fail_the_commit() {
        let dir = temp("roll-fails");
        let mut log = Log::open(&dir, 4 << 10).unwrap();
        log.append(Timestamp(1), &[1u8; 5000]).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(log.commit(true).unwrap(), 1, "the record is committed");
        assert_eq!(log.committed_seq(), 1);
        // The next append tries the roll again, and fails while the folder is gone.
        assert!(log.append(Timestamp(2), b"two").is_err());
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(log.append(Timestamp(3), b"three").unwrap(), 2);
        log.commit(true).unwrap();
        let _ = fs::remove_dir_all(&dir);
    }

    fn eio() -> io::Result<()> {
        Err(io::Error::from_raw_os_error(5))
    }

    /// A sync taken off the log's thread: while it runs, appends, commits and rolls go on;
    /// when it is done, what it covered is durable, and no more.
    #[test]
    fn a_sync_job_makes_durable_what_was_committed_when_it_started() {
        let dir = temp("job");
        let mut log = Log::open(&dir, 4 << 10).unwrap();
        for i in 0..10u8 {
            log.append(Timestamp(i64::from(i)), &[i; 100]).unwrap();
        }
        log.commit(false).unwrap();
        let mut job = log.start_sync().unwrap().expect("something to sync");
        assert_eq!(job.through(), 10);
        // Meanwhile: more records, past a roll (segments of 4 KiB).
        for i in 10..100u8 {
            log.append(Timestamp(i64::from(i)), &[i; 100]).unwrap();
            log.commit(false).unwrap();
        }
        assert!(log.segments().count() > 1, "the log rolled while the job ran");
        assert_eq!(log.durable_seq(), 0);
        job.run().unwrap();
        assert_eq!(log.finish_sync(job, Ok(())).unwrap(), 10);
        assert_eq!(log.durable_seq(), 10);
        // The next job covers the rest, sealed segments and the folder with it.
        let mut job = log.start_sync().unwrap().expect("the rest");
        assert!(job.files.len() > 1, "the sealed segments go with the job");
        assert!(job.dir.is_some(), "the new segments' names go with the job");
        job.run().unwrap();
        assert_eq!(log.finish_sync(job, Ok(())).unwrap(), 100);
        assert!(log.start_sync().unwrap().is_none(), "nothing left to sync");
        assert!(log.take_lost().unwrap().is_empty());
        drop(log);
        let log = Log::open(&dir, 4 << 10).unwrap();
        assert_eq!(log.committed_seq(), 100);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A failed sync job (EIO) is not tried again: everything past the durable point is cut
    /// from the files (later segments to their magic) and reported lost exactly once, a failed
    /// write's records among them counted once; no number is given twice, and a reopen
    /// finds exactly the durable records and gives on from past every number used.
    #[test]
    fn a_failed_sync_job_cuts_back_to_the_durable_point_and_counts_each_record_once() {
        let dir = temp("job-fails");
        let mut log = Log::open(&dir, 4 << 10).unwrap();
        for i in 0..5u8 {
            log.append(Timestamp(i64::from(i)), &[i; 100]).unwrap();
        }
        log.commit(true).unwrap();
        assert_eq!(log.durable_seq(), 5);
        for i in 5..20u8 {
            log.append(Timestamp(i64::from(i)), &[i; 100]).unwrap();
        }
        log.commit(false).unwrap();
        let job = log.start_sync().unwrap().unwrap();
        // While it runs: records past a roll (4 KiB segments: records 5..=40 or so fill the
        // first), then a write that fails (its records noted lost by the write's roll-back).
        for i in 20..80u8 {
            log.append(Timestamp(i64::from(i)), &[i; 100]).unwrap();
            log.commit(false).unwrap();
        }
        let segments_before = log.segments().count();
        assert!(segments_before >= 2);
        log.append(Timestamp(80), &[80; 100]).unwrap();
        log.roll_back(); // as a failed write does
        let failed_write = log.take_lost().unwrap();
        assert_eq!(failed_write.iter().map(|l| l.records).sum::<u64>(), 1);
        for i in 81..90u8 {
            log.append(Timestamp(i64::from(i)), &[i; 100]).unwrap();
        }
        // Uncommitted records (appended, not committed) when the job's failure comes.
        let next = log.next_seq();
        assert!(log.finish_sync(job, eio()).is_err());
        let lost = log.take_lost().unwrap();
        let counted: u64 = lost.iter().map(|l| l.records).sum();
        // 6..=89 given, 81 lost to the write already: 90 - 5 - 1 - 1 = 83 records.
        assert_eq!(counted, next - 1 - 5 - 1, "{lost:?}");
        assert_eq!(log.committed_seq(), next - 1, "numbers stay used");
        assert_eq!(payloads(&log, 0).len(), 5, "only the durable records are read");
        for l in &lost {
            assert!(l.first_seq > 5 && l.last_seq < next, "{l:?}");
            assert!(!(l.first_seq..=l.last_seq).contains(&81), "the failed write is not counted twice: {l:?}");
        }
        // A later job syncs what comes next; it is not the failed one again.
        let seq = log.append(Timestamp(100), b"after").unwrap();
        assert_eq!(seq, next, "no number is given twice");
        log.commit(false).unwrap();
        let mut job = log.start_sync().unwrap().unwrap();
        job.run().unwrap();
        assert_eq!(log.finish_sync(job, Ok(())).unwrap(), seq);
        drop(log);
        let mut log = Log::open(&dir, 4 << 10).unwrap();
        let read: Vec<u64> = payloads(&log, 0).into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(read, vec![1, 2, 3, 4, 5, seq]);
        assert_eq!(log.append(Timestamp(101), b"next").unwrap(), seq + 1);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A commit that syncs on this thread while a sync job runs (the stop's, a checkpoint's)
    /// syncs what the job holds too before it calls it durable: the sealed segments and the
    /// folder handed to the job are not on disk until one of the two has synced them.
    #[test]
    fn a_sync_here_while_a_job_runs_syncs_what_the_job_holds() {
        let dir = temp("job-and-inline");
        let mut log = Log::open(&dir, 4 << 10).unwrap();
        for i in 0..60u8 {
            log.append(Timestamp(i64::from(i)), &[i; 100]).unwrap();
            log.commit(false).unwrap();
        }
        let mut job = log.start_sync().unwrap().unwrap();
        // The segment active when the job started, and the sealed ones before it.
        let held = job.files.len();
        assert!(held > 1, "the job holds sealed segments");
        assert!(log.dir_in_job, "the folder was handed to the job");
        let before = log.sealed_syncs;
        log.commit(true).unwrap();
        assert_eq!(log.sealed_syncs - before, held as u64, "the job's segments are synced here too");
        assert!(!log.dir_in_job && log.in_job.is_empty(), "and the folder");
        assert_eq!(log.durable_seq(), 60);
        job.run().unwrap();
        assert_eq!(log.finish_sync(job, Ok(())).unwrap(), 60);
        let _ = fs::remove_dir_all(&dir);
    }

    /// While a sync job runs (and a slow disk holds it, a write would wait on the disk too),
    /// appends wait in memory up to a larger bound, then are written as before.
    #[test]
    fn while_a_sync_job_runs_appends_wait_in_memory_up_to_a_larger_bound() {
        let dir = temp("job-pending");
        let mut log = Log::open(&dir, 1 << 30).unwrap();
        log.append(Timestamp(0), b"first").unwrap();
        log.commit(false).unwrap();
        let path = log.active_segment().unwrap().path.clone();
        let on_disk = || fs::metadata(&path).unwrap().len();
        let written = on_disk();
        let mut job = log.start_sync().unwrap().unwrap();
        for i in 0..3_000 {
            log.append(Timestamp(i), &[7u8; 1000]).unwrap();
        }
        assert_eq!(on_disk(), written, "3 MB wait in memory while the job runs");
        for i in 0..(PENDING_BYTES_MAX_SYNCING / 1000) as i64 {
            log.append(Timestamp(i), &[7u8; 1000]).unwrap();
        }
        assert!(on_disk() > written, "past the larger bound they are written");
        job.run().unwrap();
        log.finish_sync(job, Ok(())).unwrap();
        let written = on_disk();
        for i in 0..1_100 {
            log.append(Timestamp(i), &[7u8; 1000]).unwrap();
        }
        assert!(on_disk() > written, "no job: written past 1 MiB as before");
        assert!(
            log.pending.capacity() <= 2 * PENDING_BYTES_MAX,
            "the buffer gives back what a slow sync made it hold: {} bytes",
            log.pending.capacity()
        );
        let _ = fs::remove_dir_all(&dir);
    }

    /// A segment dropped while its sync job runs: a job that succeeds moves the durable point
    /// past it; one that fails cuts only what is still held, and counts only that.
    #[test]
    fn a_segment_dropped_while_its_sync_job_runs() {
        for fails in [false, true] {
            let dir = temp(&format!("job-drop-{fails}"));
            let mut log = Log::open(&dir, 4 << 10).unwrap();
            for i in 0..60u8 {
                log.append(Timestamp(i64::from(i)), &[i; 100]).unwrap();
                log.commit(false).unwrap();
            }
            let mut job = log.start_sync().unwrap().unwrap();
            let dropped = log.drop_oldest(false).unwrap().expect("a segment to drop");
            assert_eq!(dropped.first_seq, 1);
            let held = log.segments().map(SegmentInfo::records).sum::<u64>();
            let result = if fails { eio() } else { job.run() };
            let finished = log.finish_sync(job, result);
            let lost: u64 = log.take_lost().unwrap().iter().map(|l| l.records).sum();
            if fails {
                assert!(finished.is_err());
                assert_eq!(lost, held, "what is still held is lost, the dropped segment not counted");
                assert!(payloads(&log, 0).is_empty());
            } else {
                assert_eq!(finished.unwrap(), 60);
                assert_eq!(lost, 0);
                assert_eq!(payloads(&log, 0).len() as u64, held);
            }
            drop(log);
            let mut log = Log::open(&dir, 4 << 10).unwrap();
            assert_eq!(log.append(Timestamp(99), b"next").unwrap(), 61);
            let _ = fs::remove_dir_all(&dir);
        }
    }

    /// Segments dropped for the sync thread to remove: the log forgets them at once, their
    /// files go with the next sync job (a file that cannot be removed is kept for the job
    /// after, and fails no sync), or with the next sync made here; a reopen before that
    /// reads the rest as it was.
    #[test]
    fn segments_dropped_later_are_removed_by_the_next_sync_job_or_sync_here() {
        let dir = temp("drop-later");
        let mut log = Log::open(&dir, 4 << 10).unwrap();
        for i in 0..150u8 {
            log.append(Timestamp(i64::from(i)), &[b'a' + i % 26; 100]).unwrap();
            log.commit(false).unwrap();
        }
        let files = |dir: &Path| fs::read_dir(dir).unwrap().count();
        let (before, bytes) = (files(&dir), log.bytes());
        let dropped = log.drop_through_later(100);
        assert!(dropped.len() >= 2 && dropped.iter().all(|s| s.last_seq <= 100), "{dropped:?}");
        assert_eq!(files(&dir), before, "the files stay until a sync");
        assert_eq!(log.bytes(), bytes - dropped.iter().map(|s| s.bytes).sum::<u64>(), "no longer counted");
        let first_kept = dropped.last().unwrap().last_seq + 1;
        assert_eq!(payloads(&log, 0).first().unwrap().0, first_kept);
        // A reopen before the job (a stop): it reads on from the kept segments' files too,
        // and what was dropped is read again (covered by the caller's checkpoint).
        drop(log);
        let mut log = Log::open(&dir, 4 << 10).unwrap();
        assert_eq!(payloads(&log, 0).len(), 150);
        let dropped = log.drop_through_later(100);
        // One file cannot be removed (a folder in its place): kept, the sync not failed.
        let stuck = dir.join(format!("{:020}.seg", dropped[0].first_seq));
        fs::remove_file(&stuck).unwrap();
        fs::create_dir_all(stuck.join("held")).unwrap();
        let mut job = log.start_sync().unwrap().expect("the removals and the folder");
        assert_eq!(job.remove.len(), dropped.len());
        job.run().unwrap();
        assert_eq!(job.remove, vec![stuck.clone()], "kept for the next job");
        log.finish_sync(job, Ok(())).unwrap();
        assert_eq!(files(&dir), before - dropped.len() + 1);
        fs::remove_dir_all(&stuck).unwrap();
        fs::write(&stuck, b"").unwrap();
        // A sync made here removes what waits.
        log.commit(true).unwrap();
        assert!(!stuck.exists());
        assert_eq!(files(&dir), before - dropped.len());
        assert_eq!(payloads(&log, 0).first().unwrap().0, first_kept);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A commit that syncs calls `fdatasync` only when something was written since the last
    /// one: a log with no new records costs no sync (a disk-cache flush each). What was
    /// written is still synced, whether buffered, written at once, or in a new segment.
    #[test]
    fn a_commit_syncs_only_what_was_written_since_the_last_sync() {
        let dir = temp("syncs");
        let mut log = Log::open(&dir, 4 << 10).unwrap();
        log.commit(true).unwrap();
        assert_eq!(log.syncs, 1, "a run before may have left writes unsynced");
        log.commit(true).unwrap();
        log.commit(true).unwrap();
        assert_eq!(log.syncs, 1, "nothing new, nothing to sync");
        log.append(Timestamp(1), b"one").unwrap();
        log.commit(false).unwrap();
        log.commit(true).unwrap();
        assert_eq!(log.syncs, 2, "written by a commit that did not sync: synced by the next that does");
        // A record written at once, past the segment's size: the commit syncs it and rolls to a
        // new segment, whose first bytes the next commit that syncs syncs.
        log.append(Timestamp(2), &vec![7u8; DIRECT_BYTES_MIN]).unwrap();
        log.commit(true).unwrap();
        assert_eq!(log.syncs, 3, "a record written at once");
        log.commit(true).unwrap();
        assert_eq!(log.syncs, 4, "the new segment's magic");
        log.commit(true).unwrap();
        assert_eq!(log.syncs, 4);
        log.append(Timestamp(3), &[1u8; 5000]).unwrap();
        log.commit(true).unwrap();
        log.commit(true).unwrap();
        log.commit(true).unwrap();
        assert_eq!(log.syncs, 6, "the record, then the next segment's magic");
        drop(log);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_record_is_read_in_parts_past_indexed_ones_and_the_checked_way_when_a_header_is_bad() {
        let dir = temp("parts");
        let mut log = Log::open(&dir, 64 << 10).unwrap();
        let payload = |seq: u64| (0..(seq * 37 % 500 + 1)).map(|i| (i * seq) as u8).collect::<Vec<u8>>();
        for seq in 1..=300u64 {
            assert_eq!(log.append(Timestamp(seq as i64), &payload(seq)).unwrap(), seq);
            if seq % 50 == 0 && seq < 300 {
                log.commit(false).unwrap();
            }
        }
        assert!(log.open_record(300).unwrap().is_none(), "not committed yet");
        log.commit(false).unwrap();
        assert!(log.segments().count() > 1);
        for seq in [1, 2, 63, 64, 65, 66, 129, 200, 299, 300] {
            let r = log.open_record(seq).unwrap().unwrap();
            assert!(matches!(r, RecordReader::File { .. }), "{seq} found by its header");
            let whole = payload(seq);
            assert_eq!(r.len(), whole.len() as u64);
            assert_eq!(r.read(0, whole.len()).unwrap().unwrap(), whole);
            assert_eq!(r.read(1, 0).unwrap().unwrap(), Vec::<u8>::new());
            assert!(r.read(whole.len() as u64, 1).unwrap().is_none(), "past the end");
            assert!(r.read(u64::MAX, 2).unwrap().is_none());
        }
        assert!(log.open_record(0).unwrap().is_none());
        assert!(log.open_record(301).unwrap().is_none());
        // A length gone bad in record 3's header: record 4 is still found, read whole.
        let segment = log.segments.values().next().unwrap().path.clone();
        let mut bytes = fs::read(&segment).unwrap();
        let third = MAGIC.len() + 2 * HEADER_BYTES + payload(1).len() + payload(2).len();
        bytes[third..third + 4].copy_from_slice(&7u32.to_le_bytes());
        fs::write(&segment, &bytes).unwrap();
        let r = log.open_record(4).unwrap().unwrap();
        assert!(matches!(r, RecordReader::Memory(_)));
        assert_eq!(r.read(0, payload(4).len()).unwrap().unwrap(), payload(4));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Large records are written straight to the file, small ones through the buffer: both
    /// read back alike, in order, before and after a reopen; a large write the disk refuses is
    /// reported lost as a buffered one is.
    #[test]
    fn large_records_written_at_once_read_back_with_the_buffered_ones() {
        let dir = temp("direct");
        let payload = |i: usize| vec![i as u8; if i.is_multiple_of(3) { DIRECT_BYTES_MIN + i } else { 10 + i }];
        {
            let mut log = Log::open(&dir, 1 << 20).unwrap();
            for i in 1..=12 {
                assert_eq!(log.append(Timestamp(i as i64), &payload(i)).unwrap(), i as u64);
                if i % 5 == 0 {
                    log.commit(false).unwrap();
                }
            }
            log.commit(true).unwrap();
            assert!(log.pending.capacity() < DIRECT_BYTES_MIN, "the buffer never held a large record");
            let read = log.read(1, usize::MAX, usize::MAX).unwrap();
            assert_eq!(
                read.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(),
                (1..=12).map(payload).collect::<Vec<_>>()
            );
            let path = log.active_segment().unwrap().path.clone();
            log.active = Some(File::open(path).unwrap());
            assert!(log.append(Timestamp(15), &payload(15)).is_err(), "the disk refused the large write");
            let lost = log.take_lost().unwrap();
            assert_eq!((lost.len(), lost[0].first_seq, lost[0].records), (1, 13, 1));
            // The next record goes to a new segment, past the lost number.
            assert_eq!(log.append(Timestamp(16), &payload(16)).unwrap(), 14);
            log.commit(true).unwrap();
        }
        let log = Log::open(&dir, 1 << 20).unwrap();
        assert_eq!(log.recovery, Recovery::default());
        let read = log.read(1, usize::MAX, usize::MAX).unwrap();
        let mut want: Vec<Vec<u8>> = (1..=12).map(payload).collect();
        want.push(payload(16));
        assert_eq!(read.iter().map(|r| r.payload.clone()).collect::<Vec<_>>(), want);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// An empty segment between two others (made when the records after a failed write were
    /// reported lost, then left empty because the disk refused its writes too) is read past: a
    /// read that started at its first number once spun there for ever.
    #[test]
    fn a_read_moves_past_an_empty_segment_between_two_others() {
        let dir = temp("empty-middle");
        let mut log = Log::open(&dir, 1 << 20).unwrap();
        // The disk refuses the active segment's writes: its handle is made read-only.
        let refuse = |log: &mut Log| {
            let path = log.active_segment().unwrap().path.clone();
            log.active = Some(File::open(path).unwrap());
        };
        for i in 0..3 {
            log.append(Timestamp(i), b"before").unwrap();
        }
        log.commit(true).unwrap();
        refuse(&mut log);
        for i in 3..9 {
            log.append(Timestamp(i), b"lost").unwrap();
        }
        assert!(log.commit(true).is_err());
        assert_eq!(log.take_lost().unwrap().len(), 1, "4 to 9 lost; segment 10 made past them");
        refuse(&mut log);
        for i in 9..14 {
            log.append(Timestamp(i), b"lost").unwrap();
        }
        assert!(log.commit(true).is_err());
        assert_eq!(log.take_lost().unwrap().len(), 1, "10 to 14 lost; segment 15 made past them");
        for i in 14..16 {
            log.append(Timestamp(i), b"after").unwrap();
        }
        log.commit(true).unwrap();
        let firsts: Vec<(u64, u64)> = log.segments().map(|s| (s.first_seq, s.records())).collect();
        assert_eq!(firsts, vec![(1, 3), (10, 0), (15, 2)]);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let read = |from| log.read(from, usize::MAX, usize::MAX).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>();
            let _ = tx.send((read(1), read(4), read(10), read(12)));
        });
        let (all, lost, empty, past) = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("a read never ended");
        assert_eq!(all, vec![1, 2, 3, 15, 16]);
        assert_eq!(lost, vec![15, 16]);
        assert_eq!(empty, vec![15, 16]);
        assert_eq!(past, vec![15, 16]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_survive_reopen_and_roll_into_segments() {
        let dir = temp("reopen");
        let mut log = Log::open(&dir, 200).unwrap();
        for i in 0..20 {
            log.append(Timestamp(i), format!("record {i}").as_bytes()).unwrap();
        }
        assert_eq!(log.read(1, 10, usize::MAX).unwrap().len(), 0, "nothing visible before commit");
        assert_eq!(log.commit(true).unwrap(), 20);
        for i in 20..30 {
            log.append(Timestamp(i), format!("record {i}").as_bytes()).unwrap();
            log.commit(false).unwrap();
        }
        drop(log);
        let log = Log::open(&dir, 200).unwrap();
        assert!(log.segments().count() > 2);
        let all = payloads(&log, 0);
        assert_eq!(all.len(), 30);
        assert_eq!(all[29], (30, "record 29".to_owned()));
        assert_eq!(payloads(&log, 25)[0], (25, "record 24".to_owned()));
        assert_eq!(log.next_seq(), 31);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_a_corrupt_record_skipped() {
        let dir = temp("torn");
        let mut log = Log::open(&dir, 1 << 20).unwrap();
        for i in 0..5 {
            log.append(Timestamp(i), b"0123456789").unwrap();
        }
        log.commit(true).unwrap();
        drop(log);
        let path = dir.join(format!("{:020}.seg", 1));
        let mut bytes = fs::read(&path).unwrap();
        let record = HEADER_BYTES + 10;
        bytes[MAGIC.len() + record + HEADER_BYTES + 3] ^= 0xff; // corrupt record 2's payload
        let torn = bytes[MAGIC.len()..MAGIC.len() + 13].to_vec();
        bytes.extend_from_slice(&torn); // a torn sixth record
        fs::write(&path, &bytes).unwrap();
        let log = Log::open(&dir, 1 << 20).unwrap();
        assert_eq!(log.recovery, Recovery { corrupt_records: 1, torn_bytes: 13 });
        let seqs: Vec<u64> = payloads(&log, 0).iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 3, 4, 5]);
        assert_eq!(log.next_seq(), 6);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Garbage whose offsets read as records of 32 KiB (a length in bounds, a body that fits):
    /// re-synchronising past it hashed each such offset's 32 KiB, quadratic in the garbage (a
    /// 16 MiB segment of it: hours, at a start). Two kinds: number fields far ahead of the last
    /// valid record's (refused before any checksum), and number fields just past it, as a run
    /// of little-endian counters reads (each offset's checksum is combined from checksums of
    /// the segment's prefixes, in time independent of its length). At opening and on reading
    /// alike, and the records after the garbage are still found.
    #[test]
    fn resynchronising_past_garbage_hashes_bytes_in_proportion_to_it() {
        let far_ahead = [0x00u8, 0x80, 0x00, 0x00];
        let just_past = [0x00u8, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
        for (name, pattern) in [("far", &far_ahead[..]), ("near", &just_past[..])] {
            let dir = temp(&format!("garbage-{name}"));
            let mut log = Log::open(&dir, 1 << 30).unwrap();
            for i in 0..3 {
                log.append(Timestamp(i), b"before").unwrap();
            }
            log.commit(true).unwrap();
            drop(log);
            let path = dir.join(format!("{:020}.seg", 1));
            let mut bytes = fs::read(&path).unwrap();
            // Records 4 to 9 went to garbage; 10 to 12 follow it.
            bytes.extend(pattern.iter().cycle().take(64 << 10));
            for seq in 10..13 {
                encode(&mut bytes, seq, Timestamp(seq as i64), b"after");
            }
            // A constant per offset (two prefixes' last bytes, a combination): linear. Hashing
            // every candidate's body, the near pattern hashed 2,000 times the file's size.
            let bound = 32 * bytes.len() as u64;
            RESYNC_HASHED.set(0);
            let checked = check_segment(&bytes, 1);
            assert_eq!((checked.info.last_seq, checked.corrupt_records), (12, 1), "{name}");
            let hashed = RESYNC_HASHED.get();
            assert!(hashed <= bound, "{name}: {hashed} bytes hashed to open {} bytes", bytes.len());
            fs::write(&path, &bytes).unwrap();
            let log = Log::open(&dir, 1 << 30).unwrap();
            RESYNC_HASHED.set(0);
            let seqs: Vec<u64> = payloads(&log, 0).iter().map(|(s, _)| *s).collect();
            assert_eq!(seqs, vec![1, 2, 3, 10, 11, 12], "{name}");
            let hashed = RESYNC_HASHED.get();
            assert!(hashed <= bound, "{name}: {hashed} bytes hashed to read {} bytes", bytes.len());
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// A range's checksum combined from prefix checksums is its checksum, for every range of
    /// a file of pseudo-random bytes (a wrong one would pass a valid record over).
    #[test]
    fn a_ranges_checksum_from_prefixes_is_its_checksum() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let bytes: Vec<u8> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let crc = RangeCrc::new(&bytes);
        for start in (0..=bytes.len()).step_by(7).chain([63, 64, 65, 999, 1000]) {
            for end in (start..=bytes.len()).step_by(13).chain([start, 128, 1000].into_iter().filter(|e| *e >= start)) {
                assert_eq!(crc.range(start, end), crc32fast::hash(&bytes[start..end]), "{start}..{end}");
            }
        }
    }

    #[test]
    fn dropping_segments_keeps_sequence_numbers() {
        let dir = temp("drop");
        let mut log = Log::open(&dir, 100).unwrap();
        for i in 0..12 {
            log.append(Timestamp(i), b"abcdefghijklmnopqrstuvwxyz").unwrap();
            log.commit(false).unwrap();
        }
        let first = log.drop_oldest(false).unwrap().unwrap();
        assert_eq!(first.first_seq, 1);
        assert_eq!(log.first_seq(), first.last_seq + 1);
        let dropped = log.drop_through(8, false).unwrap();
        assert!(dropped.iter().all(|s| s.last_seq <= 8));
        while log.drop_oldest(false).unwrap().is_some() {}
        assert_eq!(log.read(0, 100, usize::MAX).unwrap(), vec![]);
        drop(log);
        let mut log = Log::open(&dir, 100).unwrap();
        assert_eq!(log.append(Timestamp(99), b"next").unwrap(), 13, "ids never repeat after everything is dropped");
        fs::remove_dir_all(&dir).unwrap();
    }
}
