//! systemd's service protocol (`Type=notify`, `packaging/airlock.service`): `READY=1` once the
//! gateway runs, `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` when it stops, and
//! `WATCHDOG=1` at half the unit's `WatchdogSec`, sent only while the collector is alive (its
//! edge ticks advance), so that a hung pipeline is restarted by systemd rather than left
//! running blind. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use airlock_model::CollectorHealth;
use sd_notify::NotifyState;

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("tell systemd {states:?}: {e}");
    }
}

/// The gateway runs: `status` is what `systemctl status` shows.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (answered by [`ready`] when it is done).
pub fn reloading() {
    let now = monotonic_usec();
    notify(&[NotifyState::Reloading, NotifyState::MonotonicUsec(now)]);
}

pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// The time since boot in microseconds, sent with `RELOADING=1` (systemd's `notify-reload`
/// wants CLOCK_MONOTONIC; reading it takes a system call this crate makes no unsafe code for,
/// so `/proc/uptime`, the same clock on a machine that does not suspend); 0 when unknown.
fn monotonic_usec() -> i128 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next().and_then(|s| s.parse::<f64>().ok()))
        .map_or(0, |s| (s * 1e6) as i128)
}

/// Pings systemd's watchdog while the collector is alive.
pub struct Watchdog {
    every: Option<Duration>,
    ticks: u64,
}

impl Watchdog {
    /// The unit's watchdog, if it has one (`WATCHDOG_USEC`): pinged at half its period.
    pub fn from_env() -> Self {
        let mut usec = 0;
        let every = sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
        Self { every, ticks: 0 }
    }

    /// How often [`Watchdog::ping`] should be called; `None` without a watchdog.
    pub fn period(&self) -> Option<Duration> {
        self.every
    }

    /// Pings if the collector ticked since the last call, and says whether it did; otherwise
    /// logs why not (systemd then restarts the gateway when the period runs out).
    pub fn ping(&mut self, collector: &CollectorHealth) -> bool {
        if self.every.is_none() {
            return false;
        }
        let ticks = collector.ticks.load(Relaxed);
        if ticks == self.ticks {
            log::error!("the collector has not ticked since the last watchdog ping; not pinging systemd");
            return false;
        }
        self.ticks = ticks;
        notify(&[NotifyState::Watchdog]);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_pinged_only_while_the_collector_ticks() {
        let collector = CollectorHealth::default();
        let mut watchdog = Watchdog { every: Some(Duration::from_secs(15)), ticks: 0 };
        assert!(!watchdog.ping(&collector), "the collector never ticked");
        collector.ticks.store(10, Relaxed);
        assert!(watchdog.ping(&collector));
        assert!(!watchdog.ping(&collector), "a collector that stopped ticking is not vouched for");
        collector.ticks.store(11, Relaxed);
        assert!(watchdog.ping(&collector));
        let mut none = Watchdog { every: None, ticks: 0 };
        assert!(!none.ping(&collector), "no watchdog configured");
    }
}
