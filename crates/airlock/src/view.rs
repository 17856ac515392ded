//! The live terminal view: per device its link state, samples/s, requests/s, errors and latest
//! values, redrawn once a second. Without a terminal it prints one summary line per device every
//! ten seconds instead, so logs stay readable.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use airlock_model::{DeviceHealth, Quality};

use crate::gateway::Gateway;

/// Counter values at the last redraw, to turn totals into rates.
#[derive(Clone, Copy, Default)]
struct Totals {
    samples: u64,
    requests: u64,
}

pub struct View {
    terminal: bool,
    header: String,
    /// More lines under the store's (the IT half of `demo --diode`).
    extra: Option<Box<dyn Fn() -> String>>,
    last: Vec<Totals>,
    last_at: Instant,
    /// The newest event shown so far.
    last_event: Option<String>,
}

/// Events the live view shows at most.
const EVENTS_SHOWN: usize = 8;

impl View {
    pub fn new(gateway: &Gateway, header: String) -> Self {
        Self {
            terminal: std::io::stdout().is_terminal(),
            header,
            extra: None,
            last: vec![Totals::default(); gateway.health.len()],
            last_at: Instant::now(),
            last_event: None,
        }
    }

    /// Draws `extra()` under the store's line too.
    pub fn with_extra(mut self, extra: impl Fn() -> String + 'static) -> Self {
        self.extra = Some(Box::new(extra));
        self
    }

    /// How often `draw` should be called.
    pub fn period(&self) -> Duration {
        if self.terminal { Duration::from_secs(1) } else { Duration::from_secs(10) }
    }

    pub fn draw(&mut self, gateway: &Gateway) {
        // A reload may have changed the devices.
        self.last.resize(gateway.health.len(), Totals::default());
        let seconds = self.last_at.elapsed().as_secs_f64().max(1e-3);
        self.last_at = Instant::now();
        let mut out = String::new();
        if self.terminal {
            out.push_str("\x1b[H\x1b[2J");
            let _ = writeln!(out, "{}\n", self.header);
        } else {
            // In a log: say when and what, so each block of lines stands on its own.
            let _ = writeln!(out, "--- {} {}", gateway.clock.now(), self.header);
        }
        let _ = writeln!(
            out,
            "{:<10} {:<10} {:>9} {:>7} {:>7}  last error",
            "device", "state", "samples/s", "req/s", "errors"
        );
        for (i, h) in gateway.health.iter().enumerate() {
            let now = Totals { samples: DeviceHealth::get(&h.samples), requests: DeviceHealth::get(&h.requests) };
            let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / seconds;
            let errors = DeviceHealth::get(&h.comm_errors) + DeviceHealth::get(&h.exceptions);
            let name = &gateway.config.devices[i].name;
            let _ = writeln!(
                out,
                "{name:<10} {:<10} {:>9.1} {:>7.1} {errors:>7}  {}",
                h.state().word(),
                rate(now.samples, self.last[i].samples),
                rate(now.requests, self.last[i].requests),
                printable(&h.last_error(), 160)
            );
            let restarts = DeviceHealth::get(&h.restarts);
            if restarts > 0 {
                let _ = writeln!(out, "    task restarted {restarts} times (see the log)");
            }
            if self.terminal {
                let _ = writeln!(out, "    {}", latest_values(gateway, i));
            }
            self.last[i] = now;
        }
        let _ = writeln!(out, "{}", store_line(gateway));
        if let Some(extra) = &self.extra {
            let _ = writeln!(out, "{}", extra());
        }
        // The last events (terminal), or those since the last draw (a log).
        let events = gateway.collector_health.events.last(EVENTS_SHOWN);
        let new: Vec<_> = events.iter().take_while(|e| Some(&e.id) != self.last_event.as_ref()).collect();
        let shown = if self.terminal { events.iter().collect() } else { new };
        if !shown.is_empty() {
            let _ = writeln!(out, "last events:");
        }
        for e in shown.iter().rev() {
            let _ = writeln!(
                out,
                "  {} {:<7} {:<8} {}: {}",
                e.time,
                e.severity.word(),
                e.state.word(),
                printable(&e.asset, 80),
                printable(&e.message, 160)
            );
        }
        self.last_event = events.first().map(|e| e.id.clone());
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(out.as_bytes());
        let _ = stdout.flush();
    }
}

/// Text that came from the network, fit for a terminal: control characters (an escape sequence
/// could rewrite the screen) shown as `?`, at most `max` characters.
fn printable(text: &str, max: usize) -> String {
    text.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// `name=value unit` for each tag of device `device`, bad ones marked, cut to 160 characters.
fn latest_values(gateway: &Gateway, device: usize) -> String {
    let Ok(latest) = gateway.latest.lock() else { return String::new() };
    let mut line = String::new();
    for (tag, sample) in gateway.tags.iter().zip(latest.iter()).filter(|(t, _)| t.device == device) {
        let value = match sample {
            None => "-".to_owned(),
            Some(s) => match (&s.value, s.quality) {
                (Some(v), Quality::Good) => v.to_string(),
                (_, q) => format!("<{q}>"),
            },
        };
        let _ =
            write!(line, "{}={value}{} ", tag.name, tag.unit.as_deref().map(|u| format!(" {u}")).unwrap_or_default());
    }
    if line.chars().count() > 160 {
        line = line.chars().take(157).collect::<String>() + "...";
    }
    line
}

/// `historian: N samples | outbox: N records, N kB | sink NAME: N delivered`.
fn store_line(gateway: &Gateway) -> String {
    let c = &gateway.collector_health;
    let outbox = gateway.outbox.stats();
    let mut line = format!(
        "historian: {} samples stored | outbox: {} records queued, {} kB held",
        c.samples_stored.load(Relaxed),
        c.records_queued.load(Relaxed),
        outbox.bytes / 1024
    );
    for (name, h) in &gateway.sink_health {
        let _ = write!(line, " | sink {name}: {} delivered", h.delivered.load(Relaxed));
        let restarts = h.restarts.load(Relaxed);
        if restarts > 0 {
            let _ = write!(line, ", restarted {restarts} times");
        }
        let dead = h.dead_lettered.load(Relaxed);
        if dead > 0 {
            let _ = write!(line, ", {dead} dead letters");
        }
        let problem = h.problem();
        if !problem.is_empty() {
            // The problem's text came from IT (an answer, a Location): no control characters.
            let _ = write!(line, ", FAILING: {}", printable(&problem, 120));
        }
    }
    let errors = c.store_errors.load(Relaxed);
    if errors > 0 {
        let _ = write!(line, " | store errors: {errors}");
    }
    let restarts = c.restarts.load(Relaxed);
    if restarts > 0 {
        let _ = write!(line, " | collector restarted {restarts} times");
    }
    line
}

/// Redraws the live view until `duration` has passed or Ctrl-C (or SIGTERM) comes.
pub async fn show_until(gateway: &mut Gateway, header: String, duration: Option<Duration>) {
    show_view_until(View::new(gateway, header), gateway, duration, None).await;
}

/// As [`show_until`], with a view of the caller's; with `reload`, a SIGHUP reloads the gateway's
/// config from that file (see [`Gateway::reload_from`]).
pub async fn show_view_until(
    mut view: View,
    gateway: &mut Gateway,
    duration: Option<Duration>,
    reload: Option<&std::path::Path>,
) {
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(view.period());
    ticker.tick().await;
    let mut watchdog = crate::service::Watchdog::from_env();
    let mut pings = tokio::time::interval(watchdog.period().unwrap_or(Duration::from_secs(3600)));
    pings.tick().await;
    let mut hangup = signal(tokio::signal::unix::SignalKind::hangup());
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate());
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ticker.tick() => view.draw(gateway),
            _ = pings.tick() => {
                watchdog.ping(&gateway.collector_health);
            }
            () = until_deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = received(&mut terminate) => break,
            _ = received(&mut hangup) => match reload {
                Some(file) => {
                    log::info!("SIGHUP: reloading {}", file.display());
                    crate::service::reloading();
                    gateway.reload_from(file).await;
                    crate::service::ready("running (reloaded)");
                }
                None => log::warn!("SIGHUP: nothing to reload here"),
            },
        }
    }
    view.draw(gateway);
}

pub(crate) fn signal(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).map_err(|e| log::warn!("cannot listen for a signal: {e}")).ok()
}

/// The next delivery of `signal`; never, without one.
pub(crate) async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_network_cannot_drive_the_terminal() {
        assert_eq!(printable("refused\x1b[2J\x1b[Hgot you\r\n", 100), "refused?[2J?[Hgot you??");
        assert_eq!(printable("abcdef", 3), "abc");
    }
}
