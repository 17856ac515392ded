//! The free-space reserve: the file system holding the data folder keeps at least this much
//! free, whatever the configured budgets say (they bound airlock's own files; the disk is
//! shared with the rest of the machine). It is looked at (`statvfs`, a microsecond) at most
//! every 100 ms.
//! Past the reserve the outbox stops growing (it makes room by its drop policy, lowest class
//! first, with gap events), the historian stops taking samples (counted as lost, an error that
//! reads as a full disk), the JSON Lines sink stops writing (it retries with backoff, the
//! records wait in the outbox) and dead letters are not written (counted).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the free space is looked at, at most.
const LOOK_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub struct FreeSpace {
    dir: PathBuf,
    reserve: u64,
    /// When it was last looked at, and whether there was room then.
    seen: Mutex<Option<(Instant, bool)>>,
}

impl FreeSpace {
    /// The reserve of `reserve` bytes on the file system holding `dir` (0: none).
    pub fn new(dir: &Path, reserve: u64) -> Self {
        Self { dir: dir.to_owned(), reserve, seen: Mutex::new(None) }
    }

    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Whether more than the reserve is free. If the file system cannot be asked, it says yes
    /// (writes then fail on their own if the disk is full, and are handled as such).
    pub fn has_room(&self) -> bool {
        if self.reserve == 0 {
            return true;
        }
        let Ok(mut seen) = self.seen.lock() else { return true };
        match *seen {
            Some((at, room)) if at.elapsed() < LOOK_EVERY => room,
            _ => {
                let room = free_bytes(&self.dir).is_none_or(|free| free > self.reserve);
                *seen = Some((Instant::now(), room));
                room
            }
        }
    }
}

/// The bytes an unprivileged process may still write on the file system holding `dir` (or its
/// nearest existing parent).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}
