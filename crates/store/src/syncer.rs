//! The stores' sync thread: the `fdatasync` of a store's logs, taken off the thread that
//! appends to them (and the removal of the historian's WAL segments a checkpoint covers).
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
#[cfg(any(test, feature = "test-hooks"))]
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use crate::StoreError;
use crate::log::SyncJob;

/// One job: a [`SyncJob`] per log that had something to sync, by the log's index.
pub(crate) type Jobs = Vec<(usize, SyncJob)>;

/// A job's results, per log.
pub(crate) type Finished = Vec<(usize, SyncJob, io::Result<()>)>;

/// The store whose logs a sync thread syncs.
pub(crate) trait SyncTarget: Send + 'static {
    /// The store's name in logs ("outbox", "historian").
    const NAME: &'static str;
    /// The error when its lock was poisoned.
    const POISONED: &'static str;
    /// Takes a job's results, under the store's lock; ends with [`Syncs::done`].
    fn finish_sync(&mut self, done: Finished);
    /// The store's sync state.
    fn sync_state(&mut self) -> &mut Syncs;
}

/// A store's sync state: its sync thread (if it has one), whether a job of it runs, and a
/// job's failure not yet returned.
#[derive(Debug, Default)]
pub(crate) struct Syncs {
    thread: Option<SyncThread>,
    running: bool,
    /// Notified when a job is done.
    done: Arc<Condvar>,
    failed: Option<StoreError>,
}

impl Syncs {
    /// Starts the sync thread of the store (a store without one syncs inline).
    pub(crate) fn spawn<T: SyncTarget>(store: &Arc<Mutex<T>>) -> Result<(), StoreError> {
        match SyncThread::spawn(&format!("{}-sync", T::NAME), Arc::downgrade(store)) {
            Ok(thread) => {
                store.lock().map_err(|_| StoreError::Invariant(T::POISONED))?.sync_state().thread = Some(thread)
            }
            Err(e) => {
                log::warn!("{}: no sync thread could be started ({e}); syncs are made on the collector's", T::NAME)
            }
        }
        Ok(())
    }

    /// Whether syncs are handed to a thread.
    pub(crate) fn threaded(&self) -> bool {
        self.thread.is_some()
    }

    /// Whether a job runs on the thread (the disk is slow to take writes too).
    pub(crate) fn running(&self) -> bool {
        self.running
    }

    /// A job's failure not yet returned, returned once.
    pub(crate) fn take_failure(&mut self) -> Result<(), StoreError> {
        self.failed.take().map_or(Ok(()), Err)
    }

    /// Keeps a job's failure for the next commit to return (the first, if several).
    pub(crate) fn failed(&mut self, e: StoreError) {
        self.failed.get_or_insert(e);
    }

    /// A job is done: whoever waits for it goes on.
    pub(crate) fn done(&mut self) {
        self.running = false;
        self.done.notify_all();
    }

    /// Waits, under the store's lock, until no job runs.
    pub(crate) fn wait_idle<T: SyncTarget>(mut store: MutexGuard<'_, T>) -> Result<MutexGuard<'_, T>, StoreError> {
        while store.sync_state().running {
            let done = Arc::clone(&store.sync_state().done);
            store = done.wait(store).map_err(|_| StoreError::Invariant(T::POISONED))?;
        }
        Ok(store)
    }

    /// Hands a job to the store's thread; if it has none (or it is gone), runs it here.
    pub(crate) fn hand_over<T: SyncTarget>(store: &mut T, jobs: Jobs) {
        let syncs = store.sync_state();
        let jobs = match &syncs.thread {
            None => jobs,
            Some(thread) => match thread.send(jobs) {
                Ok(()) => {
                    syncs.running = true;
                    return;
                }
                Err(jobs) => {
                    log::error!("{}: the sync thread is gone; syncs are made on the collector's", T::NAME);
                    syncs.thread = None;
                    jobs
                }
            },
        };
        store.finish_sync(run_here(jobs));
    }

    /// A test's injected failure to start a job at the store's log `log` ([`Hooks::fail_start`],
    /// EMFILE: a file handle not duplicated), taken once; outside tests, none.
    pub(crate) fn injected_start_failure(&self, log: usize, dir: &std::path::Path) -> Result<(), StoreError> {
        #[cfg(any(test, feature = "test-hooks"))]
        if self.thread.as_ref().is_some_and(|t| t.hooks.take_fail_start(log)) {
            return Err(StoreError::io("duplicate a file handle in", dir, io::Error::from_raw_os_error(24)));
        }
        #[cfg(not(any(test, feature = "test-hooks")))]
        let _ = (log, dir);
        Ok(())
    }

    /// The sync thread's test hooks (`None` without a thread).
    #[cfg(any(test, feature = "test-hooks"))]
    pub(crate) fn hooks(&self) -> Option<Arc<Hooks>> {
        self.thread.as_ref().map(|thread| Arc::clone(&thread.hooks))
    }
}

/// Test hooks (this crate's tests, and others' with the `test-hooks` feature): a gate the
/// thread holds before it syncs (a disk slow to sync, for as long as a test holds it), and
/// failures to inject.
#[cfg(any(test, feature = "test-hooks"))]
#[derive(Debug, Default)]
pub struct Hooks {
    pub gate: Mutex<()>,
    /// The next this many jobs fail (EIO) instead of syncing.
    pub fail_next: AtomicU32,
    /// The next job's start fails (EMFILE: its file handles could not be duplicated) at the
    /// store's log of this index plus one (0: none); the logs before it have started theirs.
    /// (The outbox's logs, and the historian's chunk log.)
    pub fail_start: AtomicU32,
}

#[cfg(any(test, feature = "test-hooks"))]
impl Hooks {
    /// Whether the start of a job at log `log` is to fail ([`Hooks::fail_start`]); taken once.
    pub(crate) fn take_fail_start(&self, log: usize) -> bool {
        let at = u32::try_from(log + 1).unwrap_or(u32::MAX);
        self.fail_start.compare_exchange(at, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }
}

/// A store's sync thread; it ends when this is dropped (or the store is gone).
#[derive(Debug)]
pub(crate) struct SyncThread {
    jobs: Sender<Jobs>,
    #[cfg(any(test, feature = "test-hooks"))]
    pub hooks: Arc<Hooks>,
}

impl SyncThread {
    fn spawn<T: SyncTarget>(name: &str, store: Weak<Mutex<T>>) -> io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Jobs>();
        #[cfg(any(test, feature = "test-hooks"))]
        let hooks = Arc::new(Hooks::default());
        #[cfg(any(test, feature = "test-hooks"))]
        let thread_hooks = Arc::clone(&hooks);
        std::thread::Builder::new().name(name.to_owned()).spawn(move || {
            while let Ok(jobs) = rx.recv() {
                #[cfg(any(test, feature = "test-hooks"))]
                let _held = thread_hooks.gate.lock();
                #[cfg(any(test, feature = "test-hooks"))]
                let fail = thread_hooks
                    .fail_next
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                #[cfg(not(any(test, feature = "test-hooks")))]
                let fail = false;
                let done: Finished = jobs
                    .into_iter()
                    .map(|(log, mut job)| {
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
            #[cfg(any(test, feature = "test-hooks"))]
            hooks,
        })
    }

    /// Hands a job to the thread; gives it back if the thread is gone.
    fn send(&self, jobs: Jobs) -> Result<(), Jobs> {
        self.jobs.send(jobs).map_err(|e| e.0)
    }
}

/// Runs a job on this thread (no sync thread to take it).
fn run_here(jobs: Jobs) -> Finished {
    jobs.into_iter()
        .map(|(log, mut job)| {
            let result = job.run();
            (log, job, result)
        })
        .collect()
}
