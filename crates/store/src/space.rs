//! The free-space reserve: the file system holding the data folder keeps at least this much
//! free, whatever the configured budgets say (they bound airlock's own files; the disk is
//! shared with the rest of the machine). It is looked at (`statvfs`, a microsecond) at most
//! every 100 ms.
//! Past the reserve the outbox stops growing (it makes room by its drop policy, lowest class
//! first, with gap events), the historian stops taking samples (counted as lost, an error that
//! reads as a full disk), the JSON Lines sink stops writing (it retries with backoff, the
//! records wait in the outbox) and dead letters are not written (counted).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How often the free space is looked at, at most (milliseconds).
const LOOK_EVERY_MS: u64 = 100;

#[derive(Debug)]
pub struct FreeSpace {
    dir: PathBuf,
    reserve: u64,
    /// When it was last looked at and whether there was room then, in one word read without a
    /// lock (the historian asks at every append): the coarse monotonic clock's milliseconds
    /// plus one, shifted left, with the answer in the lowest bit; 0 before the first look.
    /// Two threads that find it stale at once both look: the later answer stays.
    seen: AtomicU64,
}

impl FreeSpace {
    /// The reserve of `reserve` bytes on the file system holding `dir` (0: none).
    pub fn new(dir: &Path, reserve: u64) -> Self {
        Self { dir: dir.to_owned(), reserve, seen: AtomicU64::new(0) }
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
        let now = coarse_millis();
        let seen = self.seen.load(Ordering::Relaxed);
        if seen != 0 && now.wrapping_sub((seen >> 1) - 1) < LOOK_EVERY_MS {
            return seen & 1 == 1;
        }
        let room = free_bytes(&self.dir).is_none_or(|free| free > self.reserve);
        self.seen.store(((now + 1) << 1) | u64::from(room), Ordering::Relaxed);
        room
    }
}

/// Milliseconds on the coarse monotonic clock: read from the vDSO without a syscall, at the
/// kernel's tick (a few milliseconds), a few nanoseconds a call (the precise clock cost the
/// historian's ingest some 2 %, issue 15).
fn coarse_millis() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    // The clock counts from boot: neither field is negative, nor does the sum come near 2^62.
    (t.tv_sec as u64).wrapping_mul(1000).wrapping_add(t.tv_nsec as u64 / 1_000_000) & (u64::MAX >> 2)
}

/// The bytes an unprivileged process may still write on the file system holding `dir` (or its
/// nearest existing parent).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_kept_and_looked_at_again_after_its_interval() {
        let dir = std::env::temp_dir();
        let full = FreeSpace::new(&dir, u64::MAX);
        let roomy = FreeSpace::new(&dir, 1);
        let none = FreeSpace::new(&dir, 0);
        for _ in 0..3 {
            // The first answer looks; the next come from what it saw.
            assert!(!full.has_room());
            assert!(roomy.has_room());
            assert!(none.has_room());
        }
        let seen = full.seen.load(Ordering::Relaxed);
        assert_eq!(seen & 1, 0, "no room seen");
        // The clock moves on, and the answer is looked at again after the interval.
        let before = coarse_millis();
        std::thread::sleep(std::time::Duration::from_millis(LOOK_EVERY_MS + 30));
        assert!(coarse_millis() >= before + LOOK_EVERY_MS, "the coarse clock moved on");
        assert!(!full.has_room());
        assert!(full.seen.load(Ordering::Relaxed) > seen, "looked at again");
    }
}
