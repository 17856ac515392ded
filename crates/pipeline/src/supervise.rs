//! Supervision of the device tasks: each runs as a tokio task of its own, so a panic in one
//! device's driver (a bug meeting a frame nobody foresaw) ends only that task; the supervisor
//! sees it end, marks the device's tags bad, counts a restart in the device's health (shown in
//! the live view), reports a `task_restarted` event upstream, and starts a new task after the
//! model's backoff (1 s doubling to 60 s, with jitter; reset after an hour without trouble).
//! A task that ends without being told to stop is restarted the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_model::pace::Backoff;
use airlock_model::{DeviceHealth, LinkState, Problem, Problems, Reason, Severity, Timestamp, Transition, panic_text};
use tokio::sync::watch;

use crate::{DeviceHandle, Source};

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the source `make` builds until `stop` turns true, building and starting it again
/// after every panic or unexpected end.
pub async fn supervise(
    handle: DeviceHandle,
    mut make: impl FnMut(DeviceHandle) -> Box<dyn Source> + Send,
    mut stop: watch::Receiver<bool>,
    problems: Arc<Problems>,
) {
    let name = handle.name().to_owned();
    let health = handle.health();
    let seed = name.bytes().fold(Timestamp::now().as_nanos() as u64, |h, b| h.rotate_left(7) ^ u64::from(b));
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), seed);
    loop {
        let started = Instant::now();
        // Aborted with the supervisor: a driver that ignores its stop is not left running.
        let mut task = AbortOnDrop(tokio::spawn(make(handle.clone()).run(stop.clone())));
        let ended = (&mut task.0).await;
        drop(task);
        if *stop.borrow() {
            return;
        }
        let why = match ended {
            Ok(()) => "its task ended by itself".to_owned(),
            Err(e) if e.is_panic() => format!("its task panicked: {}", panic_text(e.into_panic())),
            Err(e) => format!("its task was cancelled: {e}"),
        };
        if started.elapsed() > Duration::from_secs(3600) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        DeviceHealth::count(&health.restarts, 1);
        health.set_state(LinkState::Backoff);
        health.set_last_error(format!("{why}; restarting"));
        handle.emit(0, handle.all_bad(Reason::CommsLost));
        let message = format!("device {name}: {why}; restarted in {:.1} s", delay.as_secs_f64());
        log::error!("{message}");
        problems.report(Problem {
            time: Timestamp::now(),
            kind: "task_restarted",
            severity: Severity::Alarm,
            state: Transition::Once,
            message,
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

    use airlock_model::{Quality, Value};

    use super::*;
    use crate::{Running, channel};

    /// A source whose first run panics; later runs emit a sample every 10 ms.
    struct Flaky {
        handle: DeviceHandle,
        runs: Arc<AtomicU32>,
    }

    impl Source for Flaky {
        fn run(self: Box<Self>, mut stop: watch::Receiver<bool>) -> Running {
            Box::pin(async move {
                if self.runs.fetch_add(1, Relaxed) == 0 {
                    panic!("a frame nobody foresaw");
                }
                let mut poll = 0;
                while !*stop.borrow() {
                    poll += 1;
                    let s = self.handle.sample(0, Some(Value::F64(1.0)), Quality::Good, None, Timestamp::now());
                    self.handle.emit(poll, vec![s]);
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(10)) => {}
                        _ = stop.changed() => {}
                    }
                }
            })
        }
    }

    fn device(name: &str) -> airlock_config::Device {
        let toml = format!(
            "[[device]]\nname = \"{name}\"\nasset_path = \"acme/plant\"\nprotocol = \"mqtt\"\n\
             address = \"127.0.0.1:1883\"\n[[device.tag]]\nname = \"speed\"\ntopic = \"{name}/speed\"\n"
        );
        let config = airlock_config::parse(&toml, std::path::Path::new("test.toml")).expect("a valid config");
        (*config.devices[0]).clone()
    }

    #[tokio::test]
    async fn a_panicking_device_task_is_restarted_and_the_others_go_on() {
        let (tx, mut rx) = channel(1024);
        let (stop_tx, stop) = watch::channel(false);
        let problems = Arc::new(Problems::default());
        let mut tasks = Vec::new();
        let mut runs = Vec::new();
        for (i, name) in ["press1", "press2"].into_iter().enumerate() {
            let handle = DeviceHandle::new(i, &device(name), airlock_model::TagId(i as u32), tx.clone());
            let count = Arc::new(AtomicU32::new(u32::from(i == 1))); // press2 never panics
            runs.push(Arc::clone(&count));
            let make =
                move |handle: DeviceHandle| -> Box<dyn Source> { Box::new(Flaky { handle, runs: Arc::clone(&count) }) };
            tasks.push(tokio::spawn(supervise(handle, make, stop.clone(), Arc::clone(&problems))));
        }
        drop(tx);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = stop_tx.send(true);
        for t in tasks {
            t.await.expect("the supervisor itself never panics");
        }
        let mut per_device = [0u32; 2];
        let mut bad = 0;
        while let Ok(batch) = rx.try_recv() {
            for s in &batch.samples {
                if s.quality.is_good() {
                    per_device[batch.device] += 1;
                } else {
                    bad += 1;
                }
            }
        }
        assert_eq!(runs[0].load(Relaxed), 2, "press1 panicked once and was started again");
        assert!(per_device[0] > 50, "press1 reads again after its restart: {per_device:?}");
        assert!(per_device[1] > 150, "press2 went on throughout: {per_device:?}");
        assert_eq!(bad, 1, "press1's tag was marked bad when its task died");
        let reported = problems.take();
        assert_eq!(reported.len(), 1);
        assert_eq!(reported[0].kind, "task_restarted");
        assert!(reported[0].message.contains("press1") && reported[0].message.contains("a frame nobody foresaw"));
    }
}
