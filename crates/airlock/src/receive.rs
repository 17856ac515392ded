//! `airlock receive FILE`: the IT half of a diode. It listens for the OT half's datagrams,
//! keeps what it receives in its own outbox, and runs its own sinks on it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use airlock_config::ReceiveConfig;
use airlock_diode::receive::{ReceiveSettings, ReceiveStatus, Receiver};
use airlock_model::Problems;
use airlock_store::space::FreeSpace;
use airlock_store::{FsyncPolicy, OutboxConfig, OutboxWriter};
use anyhow::Context as _;

/// A running receiving half.
pub struct Receiving {
    pub status: Arc<ReceiveStatus>,
    pub listening: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    receiver: Option<std::thread::JoinHandle<()>>,
    sinks: Vec<std::thread::JoinHandle<()>>,
    sinks_stop: Arc<AtomicBool>,
    pub sink_health: crate::gateway::SinkHealths,
}

impl Receiving {
    pub fn start(config: &ReceiveConfig) -> anyhow::Result<Self> {
        let store = &config.store;
        let space = Arc::new(FreeSpace::new(&store.data_dir, store.free_space_reserve));
        let outbox_config = OutboxConfig {
            bytes_max: store.outbox_bytes_max,
            age_max: store.outbox_age_max,
            fsync: FsyncPolicy::Interval(store.fsync_interval),
            sinks: config.sinks.iter().map(|s| s.name.clone()).collect(),
            space: Some(Arc::clone(&space)),
            mirror: true,
            retain: false,
            // The receiver's loop waits on the network, not on a drivers' channel.
            sync_thread: false,
        };
        let dir = store.data_dir.join("outbox");
        let (writer, reader) =
            OutboxWriter::open(&dir, outbox_config).with_context(|| format!("open the outbox in {}", dir.display()))?;
        let r = &config.receive;
        let settings = ReceiveSettings {
            listen: r.listen,
            sender: r.sender.clone(),
            reorder: r.reorder,
            silent_after: r.silent_after,
            receive_buffer_bytes: r.receive_buffer_bytes,
            key_file: r.key_file.clone(),
        };
        let status = Arc::new(ReceiveStatus::default());
        let problems = Arc::new(Problems::default());
        let receiver = Receiver::new(settings, writer, &reader, &store.data_dir, Arc::clone(&status))?
            .reporting(Arc::clone(&problems));
        let listening = receiver.local_addr().context("the receiving socket's address")?;
        let sinks_stop = Arc::new(AtomicBool::new(false));
        let (sinks, sink_health) = crate::gateway::start_sinks(
            &config.sinks,
            &r.sender,
            &reader,
            &store.data_dir,
            &space,
            &problems,
            &sinks_stop,
            None,
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let receiver_stop = Arc::clone(&stop);
        let receiver = std::thread::Builder::new()
            .name("diode-receive".into())
            .spawn(move || receiver.run(&receiver_stop))
            .context("start the receiving thread")?;
        Ok(Self { status, listening, stop, receiver: Some(receiver), sinks, sinks_stop, sink_health })
    }

    /// One line on what came through and how the other side is.
    pub fn summary(&self) -> String {
        let s = self.status.stats.lock().map(|s| *s).unwrap_or_default();
        let beat = self.status.heartbeat.lock().ok().and_then(|h| h.clone());
        let other = match beat {
            Some((at, b)) => format!(
                "sender {}: {} devices up, {} down, {} queued{}, heard {:.0} s ago",
                b.name,
                b.devices_up,
                b.devices_down,
                b.queued,
                if b.store_failing { ", its store failing" } else { "" },
                at.elapsed().as_secs_f64()
            ),
            None => "no heartbeat yet".into(),
        };
        format!(
            "diode: {} records, {} missing, {} duplicates dropped; blocks {} decoded, {} lost; {} datagrams ({} malformed, {} foreign, {} unauthenticated, {} stale, {} dropped by the kernel){}; {other}",
            s.records,
            s.missing,
            s.duplicates,
            s.blocks_decoded,
            s.blocks_lost,
            s.datagrams,
            s.malformed,
            s.foreign,
            s.unauthenticated,
            s.stale,
            self.status.kernel_drops.load(Relaxed),
            if self.status.silent.load(Relaxed) { "; SILENT" } else { "" },
        )
    }

    /// One line on this side's sinks: delivered, failures, the problem now.
    pub fn sinks_line(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let sinks: Vec<String> = self
            .sink_health
            .iter()
            .map(|(name, h)| {
                let problem = h.problem();
                let problem = if problem.is_empty() { String::new() } else { format!(" ({problem})") };
                format!(
                    "{name}: {} delivered, {} failures{problem}",
                    h.delivered.load(Relaxed),
                    h.failures.load(Relaxed)
                )
            })
            .collect();
        format!("sinks: {}", sinks.join("; "))
    }

    /// Stops receiving (syncing what came), then lets the sinks deliver what the outbox holds.
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(r) = self.receiver.take() {
            let _ = r.join();
        }
        self.sinks_stop.store(true, Relaxed);
        for s in self.sinks.drain(..) {
            let _ = s.join();
        }
    }
}

pub async fn run(file: &Path, duration: Option<Duration>) -> anyhow::Result<()> {
    crate::logger::init(None);
    let config = airlock_config::load_receive(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let receiving = Receiving::start(&config)?;
    log::info!(
        "receiving for {:?} on {}; data in {}",
        config.receive.sender,
        receiving.listening,
        config.store.data_dir.display()
    );
    let until = duration.map(|d| Instant::now() + d);
    // On a terminal, a view redrawn every second; else a line in the log every 5 s.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut every = tokio::time::interval(Duration::from_secs(if terminal { 1 } else { 5 }));
    let header = format!(
        "airlock receive {}  |  for {:?} on {}  |  Ctrl-C stops",
        file.display(),
        config.receive.sender,
        receiving.listening
    );
    // SIGTERM (systemd, docker stop) stops it as Ctrl-C does: its outbox synced, its sinks drained.
    let mut terminate = crate::view::signal(tokio::signal::unix::SignalKind::terminate());
    let deadline = async {
        match until {
            Some(until) => tokio::time::sleep_until(until.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = crate::view::received(&mut terminate) => break,
            () = &mut deadline => break,
            _ = every.tick() => {
                if terminal {
                    crate::print_live(&format!(
                        "\x1b[H\x1b[2J{header}\n\n{}\n{}\n",
                        receiving.summary(),
                        receiving.sinks_line()
                    ));
                } else {
                    log::info!("{}; {}", receiving.summary(), receiving.sinks_line());
                }
            }
        }
    }
    log::info!("{}", receiving.summary());
    tokio::task::spawn_blocking(move || receiving.stop()).await.context("stop")?;
    Ok(())
}
