//! The stores' sync thread: the `fdatasync` of a store's logs, taken off the thread that
//! appends to them.
//!
//! A store that has one ([`OutboxConfig::sync_thread`](crate::OutboxConfig),
//! [`HistorianConfig::sync_thread`](crate::HistorianConfig)) writes its records at each commit
//! and hands the sync of what it wrote to this thread: one job at a time, a [`SyncJob`] per
//! log, run on duplicated file handles without the store's lock. When the job is done, the
//! thread takes the lock and hands the results back ([`SyncTarget::finish_sync`]): only then
//! are the records durable, and visible to the outbox's sinks. So the collector goes on
//! draining the drivers' channel while the disk is slow to sync (ext4 writing back other
//! files can hold an `fdatasync` for hundreds of milliseconds).

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{self, Sender};
#[cfg(test)]
use std::sync::{Arc, atomic::AtomicU32, atomic::Ordering};
use std::sync::{Mutex, Weak};

use crate::log::SyncJob;

/// One job: a [`SyncJob`] per log that had something to sync, by the log's index.
pub(crate) type Jobs = Vec<(usize, SyncJob)>;

/// A job's results, per log.
pub(crate) type Finished = Vec<(usize, SyncJob, io::Result<()>)>;

/// The store whose logs a sync thread syncs.
pub(crate) trait SyncTarget: Send + 'static {
    /// Takes a job's results, under the store's lock.
    fn finish_sync(&mut self, done: Finished);
}

/// Test hooks: a gate the thread holds before it syncs, and failures to inject.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Hooks {
    pub gate: Mutex<()>,
    /// The next this many jobs fail (EIO) instead of syncing.
    pub fail_next: AtomicU32,
}

/// A store's sync thread; it ends when this is dropped (or the store is gone).
#[derive(Debug)]
pub(crate) struct SyncThread {
    jobs: Sender<Jobs>,
    #[cfg(test)]
    pub hooks: Arc<Hooks>,
}

impl SyncThread {
    pub(crate) fn spawn<T: SyncTarget>(name: &str, store: Weak<Mutex<T>>) -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Jobs>();
        #[cfg(test)]
        let hooks = Arc::new(Hooks::default());
        #[cfg(test)]
        let thread_hooks = Arc::clone(&hooks);
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            while let Ok(jobs) = rx.recv() {
                #[cfg(test)]
                let _held = thread_hooks.gate.lock();
                #[cfg(test)]
                let fail = thread_hooks
                    .fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                #[cfg(not(test))]
                let fail = false;
                let done: Finished = jobs
                    .into_iter()
                    .map(|(log, job)| {
                        let result = match fail {
                            true => Err(io::Error::from_raw_os_error(5)),
                            // A panic counts as a failed sync: what the job covered is cut and
                            // reported, and the thread goes on.
                            false => std::panic::catch_unwind(AssertUnwindSafe(|| job.run()))
                                .unwrap_or_else(|_| Err(io::Error::other("the sync thread panicked"))),
                        };
                        (log, job, result)
                    })
                    .collect();
                let Some(store) = store.upgrade() else { return };
                let Ok(mut store) = store.lock() else { return };
                store.finish_sync(done);
            }
        })?;
        Ok(Self {
            jobs,
            #[cfg(test)]
            hooks,
        })
    }

    /// Hands a job to the thread; gives it back if the thread is gone.
    pub(crate) fn send(&self, jobs: Jobs) -> Result<(), Jobs> {
        self.jobs.send(jobs).map_err(|e| e.0)
    }
}

/// Runs a job on this thread (no sync thread to take it).
pub(crate) fn run_here(jobs: Jobs) -> Finished {
    jobs.into_iter()
        .map(|(log, job)| {
            let result = job.run();
            (log, job, result)
        })
        .collect()
}
