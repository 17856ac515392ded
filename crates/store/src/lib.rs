//! airlock's local disk, between the OT chamber and the IT chamber.
//!
//! - The **outbox** ([`outbox`]) is what goes upstream: an append-only, crash-safe log in four
//!   priority classes (events, aggregates, series, raw), bounded by bytes and age, with a cursor
//!   per sink. The OT side holds the only [`OutboxWriter`]; sinks get an [`OutboxReader`], which
//!   can read and acknowledge but not append or delete.
//! - The **historian** ([`historian`]) keeps per-tag series, compressed in chunks, for queries.
//!
//! Both are built on one small storage engine of our own, the segmented record log ([`log`]):
//! length- and checksum-framed records in append-only segment files, group-committed with
//! `fdatasync`, torn tails cut at open, whole segments deleted for retention. The byte layout is
//! drawn at the top of `log.rs`.
//!
//! Why our own and not redb, SQLite or fjall: both users of the disk here are append-only
//! streams that are read in order and deleted from the front, whole segments at a time. A log
//! does exactly that with one `write` and one `fdatasync` per group commit and no write
//! amplification (no B-tree pages, no compaction), and its recovery is a linear checksum scan
//! that the kill -9 tests exercise. `BENCHMARKS.md` measures it against SQLite in the same run.

pub mod historian;
pub mod log;
pub mod outbox;
pub mod space;
mod syncer;

/// A store's sync thread's test hooks (the `test-hooks` feature: for other crates' tests).
#[cfg(feature = "test-hooks")]
pub use syncer::Hooks as SyncHooks;

use std::path::{Path, PathBuf};

pub use historian::{
    Bucket, CheckpointThread, Codec, HistorianConfig, HistorianReader, HistorianStats, HistorianWriter, StoredSample,
};
pub use outbox::{
    Class, EncodedRecord, FsyncPolicy, Origin, OutboxConfig, OutboxReader, OutboxRecord, OutboxStats, OutboxView,
    OutboxWriter, Position, RecordId, RewindFrom, WireId, request_rewind,
};

/// A storage failure, with what was being done and to which file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: corrupt: {what}", path.display())]
    Corrupt { path: PathBuf, what: String },
    #[error("a record of {bytes} bytes is larger than the {max} allowed")]
    TooLarge { bytes: usize, max: usize },
    #[error("the outbox is full of records of higher classes: a {class} record is not kept")]
    OutboxFull { class: &'static str },
    #[error("the free-space reserve ({reserve} bytes) of the disk holding {} is reached", dir.display())]
    ReserveReached { dir: PathBuf, reserve: u64 },
    #[error("{buckets} intervals asked for; at most {max} in one query: choose a longer interval or a shorter range")]
    TooManyBuckets { buckets: u64, max: u64 },
    #[error("unknown sink {0:?}: sinks are named when the outbox is opened")]
    UnknownSink(String),
    #[error("{} is in use by another airlock process (its LOCK file is held)", .0.display())]
    Locked(PathBuf),
    #[error("internal invariant broken: {0}")]
    Invariant(&'static str),
    #[error(
        "{} says this store was written by a newer airlock (format {found}); this one reads formats up to {known}: \
         run that newer version, or move the folder aside",
        path.display()
    )]
    NewerFormat { path: PathBuf, found: u32, known: u32 },
}

/// Whether a running airlock holds the store in `dir` (its `LOCK` file is locked), without
/// taking or changing anything.
pub fn is_in_use(dir: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dir.join("LOCK")) else { return false };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// Takes the writer's lock on `dir` (the file `LOCK`), so that two processes never write the
/// same store. The lock lasts as long as the returned file is open.
pub(crate) fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::io("create", dir, e))?;
    let path = dir.join("LOCK");
    let file = std::fs::File::create(&path).map_err(|e| StoreError::io("create", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_owned())),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::io("lock", &path, e)),
    }
}

/// Checks the version of the on-disk formats that `dir` holds against `known`, the newest this
/// build reads and writes, from the file `FORMAT` (`airlock-historian 5`: the store's name and
/// the version; words after those two are left for later versions). A folder written by a
/// newer build is refused, with the file named: an older build would misread the newer
/// records (taking them for damaged ones, or worse, for other samples). A writer (`write`)
/// records its own version when the folder has none (a new one, or one written before the
/// file existed) or an older one, before it writes anything; if that write fails (a full
/// disk) it says so in the log and goes on, since the folder is not newer than this build.
pub(crate) fn check_format(dir: &Path, store: &str, known: u32, write: bool) -> Result<(), StoreError> {
    let path = dir.join("FORMAT");
    let name = format!("airlock-{store}");
    let found = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut words = text.split_whitespace();
            let (first, version) = (words.next(), words.next().map(str::parse::<u32>));
            match (first, version) {
                (Some(first), Some(Ok(version))) if first == name => Some(version),
                (Some(other), Some(Ok(_))) if other.starts_with("airlock-") => {
                    return Err(StoreError::Corrupt {
                        path,
                        what: format!("this folder holds an {other}, not an {name}: is the data folder mixed up?"),
                    });
                }
                _ => {
                    return Err(StoreError::Corrupt {
                        path,
                        what: format!(
                            "{text:?} is not `{name} VERSION`; if this folder was written by this version of airlock, \
                             write `{name} {known}` into it"
                        ),
                    });
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::io("read", &path, e)),
    };
    match found {
        Some(found) if found > known => Err(StoreError::NewerFormat { path, found, known }),
        Some(found) if found == known => Ok(()),
        _ if !write => Ok(()),
        _ => {
            let written = replace_file(&path, format!("{name} {known}\n").as_bytes());
            if let Err(e) = written {
                ::log::warn!(
                    "write {}: {e}: this folder's format version is not recorded yet (tried again at the next start)",
                    path.display()
                );
            }
            Ok(())
        }
    }
}

/// Replaces the file at `path` with `bytes` so that a crash leaves the old file or the new one,
/// never a part of either: written beside it (`NAME.tmp`), synced, renamed over it, and the
/// folder synced (the rename is durable only then). A failed write removes what it began.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_data()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    path.parent().map_or(Ok(()), |d| std::fs::File::open(d).and_then(|d| d.sync_all()))
}

impl StoreError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self::Io { action, path: path.to_owned(), source }
    }

    /// Whether the disk (or a file-size limit) is full: the store goes on once space frees.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => {
                matches!(source.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::FileTooLarge)
            }
            StoreError::ReserveReached { .. } => true,
            _ => false,
        }
    }
}
