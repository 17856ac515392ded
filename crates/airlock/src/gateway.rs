//! The running gateway, assembled: one task per device (OT side), the pipeline's collector
//! thread that writes what they read to local disk, and one thread per sink (IT side) that
//! carries the outbox upstream.
//!
//! ```text
//!  device tasks ──bounded channel──► collector ──► historian (every sample)
//!  (tokio)          (try_send: drop     (thread)  └► outbox (changed values) ──► sinks (threads)
//!                    and count when full)                      OutboxReader only
//! ```
//!
//! Between the device tasks and the collector sits the pipeline's bounded channel of
//! `CHANNEL_BATCHES` batches and about `CHANNEL_SAMPLES` samples, which a device task never
//! waits on (`airlock_pipeline`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use airlock_config::{Config, Device, Protocol, SinkKind};
use airlock_model::{AssetPath, Clock, DeviceHealth, Problem, Problems, Severity, TagId, Timestamp, Transition};
use airlock_north::http::HttpSink;
use airlock_north::mqtt::MqttPublisher;
use airlock_north::{JsonlSink, SinkHealth};
use airlock_pipeline::{
    BatchSender, CHANNEL_BATCHES, CHANNEL_SAMPLES, Collector, CollectorHealth, Condenser, DeviceHandle, Latest, Reload,
    Source, TagTable, bounded_channel, historian_resolutions, supervise,
};
use airlock_south_modbus::DeviceTask;
use airlock_south_mqtt::SubscriberTask;
use airlock_south_opcua::OpcUaTask;
use airlock_store::space::FreeSpace;
use airlock_store::{
    FsyncPolicy, HistorianConfig, HistorianReader, HistorianWriter, OutboxConfig, OutboxReader, OutboxWriter,
};
use anyhow::Context as _;
use tokio::sync::watch;

/// The driver of device `d`: one line per protocol.
fn source(d: &Arc<Device>, handle: DeviceHandle, data_dir: &Path) -> Box<dyn Source> {
    match &d.protocol {
        Protocol::ModbusTcp(m) => Box::new(DeviceTask::new(d, m, handle, true)),
        Protocol::Mqtt(m) => Box::new(SubscriberTask::new(d, m, handle)),
        Protocol::OpcUa(o) => Box::new(OpcUaTask::new(d, o, handle, data_dir)),
    }
}

fn tag_views(tags: &TagTable) -> Arc<[airlock_web::TagView]> {
    tags.iter()
        .map(|t| airlock_web::TagView {
            path: t.path.to_string(),
            name: t.name.clone(),
            unit: t.unit.as_deref().map(str::to_owned),
            device: t.device,
            value_type: t.value_type,
        })
        .collect()
}

/// A started gateway. Stop it with [`Gateway::stop`].
pub struct Gateway {
    pub config: Config,
    pub tags: Arc<TagTable>,
    /// The tags as the dashboard and the status file show them: built once per config and
    /// shared by both (each held its own copy: 1.4 MB at 10,000 tags).
    tag_views: Arc<[airlock_web::TagView]>,
    pub health: Vec<Arc<DeviceHealth>>,
    pub latest: Latest,
    pub collector_health: Arc<CollectorHealth>,
    pub sink_health: Vec<(String, Arc<SinkHealth>)>,
    pub outbox: OutboxReader,
    /// The gateway's clock (the wall clock, unless a simulated plant's runs faster).
    pub clock: Clock,
    pub historian: HistorianReader,
    /// The read-only web dashboard, when `[web]` is configured.
    pub web: Option<airlock_web::RunningWeb>,
    /// The device tasks, in config order.
    devices: Vec<RunningDevice>,
    /// The batch channel's next slot (a device task's `DeviceHandle` index; never reused).
    next_slot: usize,
    /// The batch channel, for tasks a reload starts (dropped at stop, so the collector ends).
    tx: Option<BatchSender>,
    reloads: std::sync::mpsc::Sender<Reload>,
    problems: Arc<Problems>,
    space: Arc<FreeSpace>,
    collector: Option<JoinHandle<()>>,
    sinks: Vec<RunningSink>,
    /// The thread writing `<data_dir>/status.json` every second, and its stop flag.
    status: Option<(JoinHandle<()>, Arc<std::sync::atomic::AtomicU8>)>,
    started: std::time::Instant,
}

/// A device task: its config (to tell what a reload changes), its slot, its stop switch.
struct RunningDevice {
    config: Arc<Device>,
    slot: usize,
    /// The tag id its task's handle gives its first tag (fixed for the task's life).
    emits_from: TagId,
    /// Where its tags are in the current table (moves when a reload moves them).
    first: TagId,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// A sink's thread and its own stop flag (a reload stops one sink and not the others).
struct RunningSink {
    config: airlock_config::Sink,
    /// `None` once joined.
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// Starts device `d`'s supervised task on `slot`, its tags from `first` on.
fn start_device(
    d: &Arc<Device>,
    slot: usize,
    first: TagId,
    tx: &BatchSender,
    data_dir: &Path,
    problems: &Arc<Problems>,
) -> (RunningDevice, Arc<DeviceHealth>) {
    let handle = DeviceHandle::new(slot, d, first, tx.clone());
    let health = handle.health();
    let (stop_tx, stop) = watch::channel(false);
    let (device, data_dir) = (Arc::clone(d), data_dir.to_owned());
    let make = move |handle| source(&device, handle, &data_dir);
    let task = tokio::spawn(supervise(handle, make, stop, Arc::clone(problems)));
    (RunningDevice { config: Arc::clone(d), slot, emits_from: first, first, stop: stop_tx, task }, health)
}

/// Stops device tasks and waits for them (10 s each at most, then they are aborted).
async fn stop_devices(devices: Vec<RunningDevice>) {
    for d in &devices {
        let _ = d.stop.send(true);
    }
    for d in devices {
        let abort = d.task.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(10), d.task).await.is_err() {
            log::warn!("device {}: its task did not stop within 10 s; aborted", d.config.name);
            abort.abort();
        }
    }
}

/// The status file's name in the data folder (`airlock status --data DIR` reads it).
pub const STATUS_FILE: &str = "status.json";
/// How often the status file is written.
pub const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes `snapshot` to `path` whole or not at all: a temporary file renamed over it.
fn write_status(path: &Path, snapshot: &serde_json::Value) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, format!("{snapshot:#}\n"))?;
    std::fs::rename(&tmp, path)
}

/// What the status thread is told: go on, stop saying the gateway stopped, stop quietly (a
/// reload starts another).
const STATUS_RUN: u8 = 0;
const STATUS_FINAL: u8 = 1;
const STATUS_QUIET: u8 = 2;

/// Starts the thread that writes the status file every [`STATUS_EVERY`] until told to stop
/// (then, unless quietly, once more with `running: false`).
fn spawn_status(
    dashboard: airlock_web::Dashboard,
    path: std::path::PathBuf,
) -> std::io::Result<(JoinHandle<()>, Arc<std::sync::atomic::AtomicU8>)> {
    let stop = Arc::new(std::sync::atomic::AtomicU8::new(STATUS_RUN));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new().name("status".into()).spawn(move || {
        let status = airlock_web::Status::default();
        let mut failing = false;
        loop {
            let told = flag.load(Relaxed);
            if told == STATUS_QUIET {
                return;
            }
            let running = told == STATUS_RUN;
            match write_status(&path, &status.snapshot(&dashboard, running)) {
                Ok(()) => failing = false,
                Err(e) if !std::mem::replace(&mut failing, true) => {
                    log::warn!("write the status file {}: {e}", path.display());
                }
                Err(_) => {}
            }
            if !running {
                return;
            }
            let next = std::time::Instant::now() + STATUS_EVERY;
            while std::time::Instant::now() < next && flag.load(Relaxed) == STATUS_RUN {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    })?;
    Ok((thread, stop))
}

impl Gateway {
    /// Opens the store, starts one task per device on the current tokio runtime, the collector
    /// thread and one thread per configured sink (and the web dashboard, if configured).
    pub fn start(config: Config) -> anyhow::Result<Self> {
        Self::start_with(config, None)
    }

    /// As [`Gateway::start`], with the dashboard on `web_listener`, bound already, instead of
    /// binding `[web] listen`.
    pub fn start_with(config: Config, web_listener: Option<std::net::TcpListener>) -> anyhow::Result<Self> {
        let tags = Arc::new(TagTable::new(&config));
        let clock = match (config.gateway.clock_speed, config.gateway.clock_start) {
            (1.0, None) => Clock::wall(),
            (speed, start) => Clock::simulated(start.unwrap_or_else(Timestamp::now), speed),
        };
        let store = &config.store;
        let fsync = FsyncPolicy::Interval(store.fsync_interval);
        let sink_names = config.sinks.iter().map(|s| s.name.clone()).collect();
        // One free-space reserve on the data folder's file system, kept by everything that writes.
        let space = Arc::new(FreeSpace::new(&store.data_dir, store.free_space_reserve));
        let outbox_config = OutboxConfig {
            bytes_max: store.outbox_bytes_max,
            age_max: store.outbox_age_max,
            fsync,
            sinks: sink_names,
            space: Some(Arc::clone(&space)),
            mirror: false,
            // A diode's sending half cannot learn of loss: what it sent stays for its retention,
            // so that an operator can send a range again (`airlock diode resend`).
            retain: config.sinks.iter().any(|s| matches!(s.kind, SinkKind::Diode(_))),
            // The syncs on a thread of their own: a disk slow to sync (writing back other
            // files) never holds the collector, which goes on draining the drivers' channel.
            sync_thread: true,
        };
        let outbox_dir = store.data_dir.join("outbox");
        let (outbox_writer, outbox) = OutboxWriter::open(&outbox_dir, outbox_config)
            .with_context(|| format!("open the outbox in {}", outbox_dir.display()))?;
        let historian_config = HistorianConfig {
            bytes_max: store.historian_bytes_max,
            age_max: store.historian_age_max,
            fsync,
            space: Some(Arc::clone(&space)),
            sync_thread: true,
            ..HistorianConfig::default()
        };
        let historian_dir = store.data_dir.join("historian");
        let (mut historian_writer, historian) = HistorianWriter::open(&historian_dir, historian_config)
            .with_context(|| format!("open the historian in {}", historian_dir.display()))?;
        let paths: Vec<&str> = tags.iter().map(|t| t.path.as_str()).collect();
        historian_writer
            .bind_tags_with_resolutions(&paths, &historian_resolutions(&config))
            .context("add the tags to the historian")?;

        // The gateway's own problems (a sink that cannot deliver, a task restarted), sent
        // upstream as events.
        let problems = Arc::new(Problems::default());
        let latest: Latest = Arc::new(Mutex::new(vec![None; tags.len()]));
        let (tx, rx) = bounded_channel(CHANNEL_BATCHES, CHANNEL_SAMPLES);
        let mut devices = Vec::new();
        let mut health = Vec::new();
        for (i, d) in config.devices.iter().enumerate() {
            let (running, h) = start_device(d, i, tags.first_tag(i), &tx, &config.store.data_dir, &problems);
            devices.push(running);
            health.push(h);
        }
        let (reloads, reloads_rx) = std::sync::mpsc::channel();

        let collector_health = Arc::new(CollectorHealth::default());
        let gateway_asset = AssetPath::parse(&config.gateway.name)
            .map_err(|e| anyhow::anyhow!("the gateway name {:?}: {e}", config.gateway.name))?;
        let condenser = Condenser::new(&config, Arc::clone(&tags));
        let collector = Collector::new(
            outbox_writer,
            historian_writer,
            condenser,
            Arc::clone(&latest),
            Arc::clone(&collector_health),
        )
        .reporting(Arc::clone(&problems), gateway_asset)
        .on_clock(clock)
        .reloading(reloads_rx, config.devices.len())
        .spawn(rx)?;

        let plant = PlantState { devices: health.clone(), collector: Arc::clone(&collector_health) };
        let mut sinks = Vec::new();
        let mut sink_health = Vec::new();
        for sink in &config.sinks {
            let (running, h) = start_sink(sink, &config, &outbox, &space, &problems, &plant)?;
            sinks.push(running);
            sink_health.push(h);
        }
        let started = std::time::Instant::now();
        let mut gateway = Self {
            config,
            tag_views: tag_views(&tags),
            tags,
            health,
            latest,
            collector_health,
            sink_health,
            outbox,
            clock,
            historian,
            web: None,
            next_slot: devices.len(),
            devices,
            tx: Some(tx),
            reloads,
            problems,
            space,
            collector: Some(collector),
            sinks,
            status: None,
            started,
        };
        let status_path = gateway.config.store.data_dir.join(STATUS_FILE);
        gateway.status = Some(spawn_status(gateway.dashboard(started), status_path)?);
        if let Some(web) = gateway.config.web.clone() {
            let dashboard = gateway.dashboard(started);
            let running = match web_listener {
                Some(listener) => airlock_web::start_on(listener, &web, dashboard),
                None => airlock_web::start(&web, dashboard),
            };
            gateway.web = Some(running.context("start the web dashboard")?);
        }
        Ok(gateway)
    }

    /// Read-only handles of this gateway, for the web dashboard.
    pub fn dashboard(&self, started: std::time::Instant) -> airlock_web::Dashboard {
        let devices = self
            .config
            .devices
            .iter()
            .zip(&self.health)
            .map(|(d, h)| {
                let (protocol, address) = match &d.protocol {
                    Protocol::ModbusTcp(m) => ("modbus_tcp", m.address.clone()),
                    Protocol::OpcUa(o) => ("opcua", o.endpoint.clone()),
                    Protocol::Mqtt(m) => ("mqtt", m.address.clone()),
                };
                airlock_web::DeviceView { name: d.name.clone(), protocol, address, health: Arc::clone(h) }
            })
            .collect();
        let sinks = self
            .config
            .sinks
            .iter()
            .filter_map(|s| Some((s, &self.sink_health.iter().find(|(name, _)| *name == s.name)?.1)))
            .map(|(s, h)| airlock_web::SinkView { name: s.name.clone(), kind: s.kind.name(), health: Arc::clone(h) })
            .collect();
        airlock_web::Dashboard {
            gateway: self.config.gateway.name.clone(),
            clock: self.clock,
            devices,
            tags: Arc::clone(&self.tag_views),
            latest: Arc::clone(&self.latest),
            collector: Arc::clone(&self.collector_health),
            sinks,
            outbox: self.outbox.view(),
            historian: self.historian.clone(),
            budgets: airlock_web::Budgets {
                outbox_bytes_max: self.config.store.outbox_bytes_max,
                historian_bytes_max: self.config.store.historian_bytes_max,
            },
            started,
        }
    }

    /// Stops the device tasks, lets the collector write what they read and sync it, then lets
    /// the sinks deliver what the outbox holds, and returns when all are done.
    pub async fn stop(mut self) {
        if let Some(web) = self.web.take() {
            web.stop().await;
        }
        stop_devices(std::mem::take(&mut self.devices)).await;
        drop(self.tx.take());
        let collector = self.collector.take();
        let sinks = std::mem::take(&mut self.sinks);
        let status = self.status.take();
        let joined = tokio::task::spawn_blocking(move || {
            if let Some(c) = collector {
                let _ = c.join();
            }
            for s in &sinks {
                s.stop.store(true, Relaxed);
            }
            for s in sinks {
                if let Some(thread) = s.thread {
                    let _ = thread.join();
                }
            }
            if let Some((thread, stop)) = status {
                stop.store(STATUS_FINAL, Relaxed);
                let _ = thread.join();
            }
        });
        let _ = joined.await;
    }

    /// Reads `file` again and applies it (`airlock run` on SIGHUP). A config with problems, or
    /// one that changes what needs a restart, changes nothing: each problem is logged (file,
    /// line and key) and sent upstream as a `config_reload_refused` event. Otherwise devices
    /// added, removed or changed are started, stopped or restarted, unchanged devices keep
    /// polling without a gap, changed sinks restart from their cursor, and a `config_reloaded`
    /// event says what changed.
    pub async fn reload_from(&mut self, file: &Path) -> bool {
        match airlock_config::load(file) {
            Ok(config) => self.reload(config).await.is_ok(),
            Err(e) => {
                self.say_reload(&Err(e.to_string()));
                false
            }
        }
    }

    /// Applies `new` (see [`Gateway::reload_from`]) and says so in the log and upstream; the
    /// summary of what changed, or why nothing did.
    pub async fn reload(&mut self, new: Config) -> Result<String, String> {
        let result = self.apply(new).await;
        self.say_reload(&result);
        result
    }

    fn say_reload(&self, result: &Result<String, String>) {
        let (kind, severity, message) = match result {
            Ok(summary) => {
                log::info!("config reloaded: {summary}");
                ("config_reloaded", Severity::Info, format!("config reloaded: {summary}"))
            }
            Err(why) => {
                for line in why.lines() {
                    log::error!("config reload refused: {}", line.trim());
                }
                (
                    "config_reload_refused",
                    Severity::Warning,
                    format!("config reload refused; the running config stays: {why}"),
                )
            }
        };
        self.problems.report(Problem { time: Timestamp::now(), kind, severity, state: Transition::Once, message });
    }

    async fn apply(&mut self, mut new: Config) -> Result<String, String> {
        let old = &self.config;
        let mut refused = Vec::new();
        if format!("{:?}", old.gateway) != format!("{:?}", new.gateway) {
            refused.push("[gateway] changed (name, clock): that needs a restart");
        }
        if format!("{:?}", old.store) != format!("{:?}", new.store) {
            refused.push("[store] changed (data folder, budgets, fsync): that needs a restart");
        }
        if old.edge != new.edge {
            refused.push("[edge] changed (shifts, production interval): that needs a restart");
        }
        let names = |c: &Config| c.sinks.iter().map(|s| s.name.clone()).collect::<std::collections::BTreeSet<_>>();
        // `run --out` adds a sink of its own; it stays.
        if let Some(out) = old.sinks.iter().find(|s| s.name == "cli-out")
            && !new.sinks.iter().any(|s| s.name == "cli-out")
        {
            new.sinks.push(out.clone());
        }
        if names(old) != names(&new) {
            refused.push("a sink was added or removed (its place in the outbox): that needs a restart");
        }
        if !refused.is_empty() {
            return Err(refused.join("; "));
        }

        // What became of each device, by name.
        let tags = Arc::new(TagTable::new(&new));
        let running: Vec<RunningDevice> = std::mem::take(&mut self.devices);
        let mut keep: Vec<Option<RunningDevice>> = Vec::new();
        let mut stopping = Vec::new();
        let mut unchanged = Vec::new();
        let (mut added, mut restarted, mut removed) = (Vec::new(), Vec::new(), Vec::new());
        let mut old_health: std::collections::HashMap<String, Arc<DeviceHealth>> =
            old.devices.iter().map(|d| d.name.clone()).zip(self.health.iter().cloned()).collect();
        let mut by_name: std::collections::HashMap<String, (usize, RunningDevice)> =
            running.into_iter().enumerate().map(|(i, r)| (r.config.name.clone(), (i, r))).collect();
        for (i, d) in new.devices.iter().enumerate() {
            match by_name.remove(&d.name) {
                Some((old_index, r)) if format!("{:?}", r.config) == format!("{d:?}") => {
                    unchanged.push((i, old_index, r));
                }
                Some((_, r)) => {
                    restarted.push(d.name.clone());
                    stopping.push(r);
                    keep.push(None);
                    continue;
                }
                None => added.push(d.name.clone()),
            }
            keep.push(None);
        }
        for (_, (_, r)) in by_name {
            removed.push(r.config.name.clone());
            stopping.push(r);
        }
        // A changed device is stopped before its new task starts: never two tasks on one device.
        stop_devices(stopping).await;

        let mut routes = vec![None; self.next_slot];
        let mut moved = Vec::new();
        let mut health: Vec<Option<Arc<DeviceHealth>>> = vec![None; new.devices.len()];
        for (i, old_index, r) in unchanged {
            let first = tags.first_tag(i);
            // The task still emits the ids it started with: the route is from those.
            routes[r.slot] = Some(i64::from(first.0) - i64::from(r.emits_from.0));
            moved.push(airlock_pipeline::Moved {
                old_first: r.first,
                first,
                count: r.config.tag_count(),
                old_device: old_index,
                device: i,
            });
            health[i] = old_health.remove(&r.config.name);
            keep[i] = Some(RunningDevice { first, ..r });
        }
        let kept = moved.len();
        let slots: Vec<usize> = (0..new.devices.len()).filter(|i| keep[*i].is_none()).collect();
        for _ in &slots {
            routes.push(Some(0));
        }
        let (done, answer) = std::sync::mpsc::channel();
        let reload = Reload {
            condenser: Condenser::new(&new, Arc::clone(&tags)),
            paths: tags.iter().map(|t| t.path.to_string()).collect(),
            resolutions: historian_resolutions(&new),
            unchanged: moved,
            routes,
            done,
        };
        let sent = self.reloads.send(reload).is_ok();
        let answer = tokio::task::spawn_blocking(move || answer.recv_timeout(std::time::Duration::from_secs(10)));
        let applied = match (sent, answer.await) {
            (true, Ok(Ok(Ok(())))) => Ok(()),
            (true, Ok(Ok(Err(e)))) => Err(e),
            _ => Err("the collector did not take the new config within 10 s: it will when it runs again; the new devices' samples wait for it (dropped until then)".to_owned()),
        };
        let Some(tx) = self.tx.clone() else { return Err("the gateway is stopping".to_owned()) };
        // New and changed devices start on slots of their own, with the new table's ids.
        for i in slots {
            let d = &new.devices[i];
            let slot = self.next_slot;
            self.next_slot += 1;
            let (r, h) = start_device(d, slot, tags.first_tag(i), &tx, &new.store.data_dir, &self.problems);
            keep[i] = Some(r);
            health[i] = Some(h);
        }
        self.devices = keep.into_iter().flatten().collect();
        self.health = health.into_iter().map(|h| h.unwrap_or_default()).collect();
        self.tag_views = tag_views(&tags);
        self.tags = tags;
        if let Err(e) = applied {
            // The devices run on the new config; the edge and historian did not switch.
            log::error!("reload: {e}");
        }

        // Sinks whose settings changed restart from their cursor; so do diode sinks when the
        // devices changed (their heartbeat counts the devices).
        let devices_changed = !(added.is_empty() && removed.is_empty() && restarted.is_empty());
        let mut sinks_restarted = Vec::new();
        for i in 0..self.sinks.len() {
            let name = self.sinks[i].config.name.clone();
            let Some(sink) = new.sinks.iter().find(|s| s.name == name) else { continue };
            let diode = matches!(sink.kind, SinkKind::Diode(_));
            if self.sinks[i].config == *sink && !(diode && devices_changed) {
                continue;
            }
            // The old one stops first: two threads on one cursor would each acknowledge what
            // the other sent (and two MQTT sessions with one client id push each other out).
            self.sinks[i].stop.store(true, Relaxed);
            if let Some(thread) = self.sinks[i].thread.take() {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            let old_config = self.sinks[i].config.clone();
            let plant = PlantState { devices: self.health.clone(), collector: Arc::clone(&self.collector_health) };
            let (running, h) = match start_sink(sink, &new, &self.outbox, &self.space, &self.problems, &plant) {
                Ok(started) => started,
                Err(e) => {
                    log::error!("reload: sink {name}: {e:#}; it goes on with its old settings");
                    match start_sink(&old_config, &self.config, &self.outbox, &self.space, &self.problems, &plant) {
                        Ok((running, h)) => {
                            self.sinks[i] = running;
                            if let Some(slot) = self.sink_health.iter_mut().find(|(n, _)| *n == name) {
                                slot.1 = h.1;
                            }
                        }
                        Err(e) => log::error!("reload: sink {name} did not start again: {e:#}"),
                    }
                    continue;
                }
            };
            self.sinks[i] = running;
            if let Some(slot) = self.sink_health.iter_mut().find(|(n, _)| *n == name) {
                slot.1 = h.1;
            }
            sinks_restarted.push(name);
        }
        let web_changed = self.config.web != new.web;
        self.config = new;
        self.refresh_views(web_changed).await;

        let list = |what: &str, names: &[String]| {
            if names.is_empty() { String::new() } else { format!("{what} {}; ", names.join(", ")) }
        };
        Ok(format!(
            "{}{}{}{}{kept} devices unchanged",
            list("devices added:", &added),
            list("devices restarted:", &restarted),
            list("devices removed:", &removed),
            list("sinks restarted:", &sinks_restarted),
        ))
    }

    /// The status file and the dashboard show the devices and tags they started with: after a
    /// reload both start again on the new ones (the dashboard on the address it had, unless
    /// `[web]` changed).
    async fn refresh_views(&mut self, web_changed: bool) {
        if let Some((thread, stop)) = self.status.take() {
            stop.store(STATUS_QUIET, Relaxed);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let path = self.config.store.data_dir.join(STATUS_FILE);
        match spawn_status(self.dashboard(self.started), path) {
            Ok(status) => self.status = Some(status),
            Err(e) => log::error!("reload: start the status file's writer: {e}"),
        }
        let address = match self.web.take() {
            Some(web) => {
                let address = web.address;
                web.stop().await;
                Some(address)
            }
            None => None,
        };
        let Some(web) = self.config.web.clone() else { return };
        let dashboard = self.dashboard(self.started);
        let running = match address.filter(|_| !web_changed).map(std::net::TcpListener::bind) {
            Some(Ok(listener)) => airlock_web::start_on(listener, &web, dashboard),
            _ => airlock_web::start(&web, dashboard),
        };
        match running {
            Ok(w) => self.web = Some(w),
            Err(e) => log::error!("reload: the web dashboard did not start again: {e}"),
        }
    }
}

/// Starts sink `s` of `config` on a thread of its own, with its own stop flag.
fn start_sink(
    s: &airlock_config::Sink,
    config: &Config,
    outbox: &OutboxReader,
    space: &Arc<FreeSpace>,
    problems: &Arc<Problems>,
    plant: &PlantState,
) -> anyhow::Result<(RunningSink, (String, Arc<SinkHealth>))> {
    let stop = Arc::new(AtomicBool::new(false));
    let (mut threads, mut healths) = start_sinks(
        std::slice::from_ref(s),
        &config.gateway.name,
        outbox,
        &config.store.data_dir,
        space,
        problems,
        &stop,
        Some(plant),
    )?;
    match (threads.pop(), healths.pop()) {
        (Some(thread), Some(health)) => Ok((RunningSink { config: s.clone(), thread: Some(thread), stop }, health)),
        _ => anyhow::bail!("sink {}: not started", s.name),
    }
}

/// What the plant side of a diode says about itself in each heartbeat, read from the devices'
/// and the collector's health.
pub struct PlantState {
    pub devices: Vec<Arc<DeviceHealth>>,
    pub collector: Arc<CollectorHealth>,
}

impl PlantState {
    fn probe(&self, outbox: OutboxReader, sink: String) -> airlock_diode::send::StateProbe {
        let devices = self.devices.clone();
        let collector = Arc::clone(&self.collector);
        let seen_errors = Mutex::new(collector.store_errors.load(Relaxed));
        Box::new(move || {
            let up = devices.iter().filter(|d| d.state() == airlock_model::LinkState::Up).count();
            let errors = collector.store_errors.load(Relaxed);
            let store_failing = seen_errors.lock().map(|mut seen| errors > std::mem::replace(&mut *seen, errors));
            let queued = match (outbox.end(), outbox.position(&sink)) {
                (Ok(end), Ok(at)) => end.0.iter().zip(at.0).map(|(e, a)| e.saturating_sub(a)).sum(),
                _ => 0,
            };
            airlock_diode::send::OtState {
                devices_up: u16::try_from(up).unwrap_or(u16::MAX),
                devices_down: u16::try_from(devices.len() - up).unwrap_or(u16::MAX),
                queued,
                store_failing: store_failing.unwrap_or(false),
            }
        })
    }
}

/// Each sink's name and health.
pub type SinkHealths = Vec<(String, Arc<SinkHealth>)>;

/// Starts one thread per sink, each reading `outbox`. `plant`: what a diode sink's heartbeat
/// reports (none on the receiving half, which has no diode sink).
#[allow(clippy::too_many_arguments)]
pub fn start_sinks(
    sinks: &[airlock_config::Sink],
    gateway: &str,
    outbox: &OutboxReader,
    data_dir: &Path,
    space: &Arc<FreeSpace>,
    problems: &Arc<Problems>,
    stop: &Arc<AtomicBool>,
    plant: Option<&PlantState>,
) -> anyhow::Result<(Vec<JoinHandle<()>>, SinkHealths)> {
    let mut handles = Vec::new();
    let mut healths = Vec::new();
    for s in sinks {
        let stop = Arc::clone(stop);
        let h = Arc::new(SinkHealth::reporting_to(Arc::clone(problems)));
        let handle = match &s.kind {
            SinkKind::Jsonl { path } => {
                let sink = JsonlSink::new(&s.name, gateway, path).keeping(Arc::clone(space));
                airlock_north::spawn(sink, outbox.clone(), stop, Arc::clone(&h))?
            }
            SinkKind::Http(http) => {
                let sink = HttpSink::new(&s.name, gateway, http, data_dir, Arc::clone(&h))
                    .map_err(|e| anyhow::anyhow!("sink {}: {e}", s.name))?
                    .keeping(Arc::clone(space));
                airlock_north::spawn(sink, outbox.clone(), stop, Arc::clone(&h))?
            }
            SinkKind::Mqtt(m) => {
                let sink = MqttPublisher::new(&s.name, gateway, m).counting(Arc::clone(&h));
                airlock_north::spawn(sink, outbox.clone(), stop, Arc::clone(&h))?
            }
            SinkKind::Kafka(k) => {
                let sink = airlock_north::kafka::KafkaSink::new(&s.name, gateway, k);
                airlock_north::spawn(sink, outbox.clone(), stop, Arc::clone(&h))?
            }
            SinkKind::Diode(d) => {
                let Some(plant) = plant else {
                    anyhow::bail!("sink {}: a diode sink on the receiving half", s.name);
                };
                let sent = outbox.position(&s.name).map(|p| p.0).unwrap_or_default();
                let probe = plant.probe(outbox.clone(), s.name.clone());
                let sink = airlock_diode::send::DiodeSender::new(&s.name, gateway, d.clone(), sent, probe);
                airlock_north::spawn(sink, outbox.clone(), stop, Arc::clone(&h))?
            }
        };
        handles.push(handle);
        healths.push((s.name.clone(), h));
    }
    Ok((handles, healths))
}
