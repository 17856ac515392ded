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
//! `CHANNEL_BATCHES` batches, which a device task never waits on (`airlock_pipeline`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use airlock_config::{Config, Device, Protocol, SinkKind};
use airlock_model::{AssetPath, Clock, DeviceHealth, Problems, Timestamp};
use airlock_north::http::HttpSink;
use airlock_north::mqtt::MqttPublisher;
use airlock_north::{JsonlSink, SinkHealth};
use airlock_pipeline::{
    CHANNEL_BATCHES, Collector, CollectorHealth, Condenser, DeviceHandle, Latest, Source, TagTable, channel, supervise,
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
use tokio::task::JoinSet;

/// The driver of device `d`: one line per protocol.
fn source(d: &Device, handle: DeviceHandle, data_dir: &Path) -> Box<dyn Source> {
    match &d.protocol {
        Protocol::ModbusTcp(m) => Box::new(DeviceTask::new(d, m, handle, true)),
        Protocol::Mqtt(m) => Box::new(SubscriberTask::new(d, m, handle)),
        Protocol::OpcUa(o) => Box::new(OpcUaTask::new(d, o, handle, data_dir)),
    }
}

/// A started gateway. Stop it with [`Gateway::stop`].
pub struct Gateway {
    pub config: Config,
    pub tags: Arc<TagTable>,
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
    devices: JoinSet<()>,
    shutdown: watch::Sender<bool>,
    collector: Option<JoinHandle<()>>,
    sinks: Vec<JoinHandle<()>>,
    sinks_stop: Arc<AtomicBool>,
    /// The thread writing `<data_dir>/status.json` every second, and its stop flag.
    status: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
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

/// Starts the thread that writes the status file every [`STATUS_EVERY`] until `stop`, then
/// once more with `running: false`.
fn spawn_status(
    dashboard: airlock_web::Dashboard,
    path: std::path::PathBuf,
) -> std::io::Result<(JoinHandle<()>, Arc<AtomicBool>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::Builder::new().name("status".into()).spawn(move || {
        let status = airlock_web::Status::default();
        let mut failing = false;
        loop {
            let running = !flag.load(Relaxed);
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
            while std::time::Instant::now() < next && !flag.load(Relaxed) {
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
        };
        let outbox_dir = store.data_dir.join("outbox");
        let (outbox_writer, outbox) = OutboxWriter::open(&outbox_dir, outbox_config)
            .with_context(|| format!("open the outbox in {}", outbox_dir.display()))?;
        let historian_config = HistorianConfig {
            bytes_max: store.historian_bytes_max,
            age_max: store.historian_age_max,
            fsync,
            space: Some(Arc::clone(&space)),
            ..HistorianConfig::default()
        };
        let historian_dir = store.data_dir.join("historian");
        let (mut historian_writer, historian) = HistorianWriter::open(&historian_dir, historian_config)
            .with_context(|| format!("open the historian in {}", historian_dir.display()))?;
        let paths: Vec<&str> = tags.iter().map(|t| t.path.as_str()).collect();
        historian_writer.bind_tags(&paths).context("add the tags to the historian")?;

        // The gateway's own problems (a sink that cannot deliver, a task restarted), sent
        // upstream as events.
        let problems = Arc::new(Problems::default());
        let latest: Latest = Arc::new(Mutex::new(vec![None; tags.len()]));
        let (tx, rx) = channel(CHANNEL_BATCHES);
        let (shutdown, stop) = watch::channel(false);
        let mut devices = JoinSet::new();
        let mut health = Vec::new();
        for (i, d) in config.devices.iter().enumerate() {
            let handle = DeviceHandle::new(i, d, tags.first_tag(i), tx.clone());
            health.push(handle.health());
            let (device, data_dir) = (d.clone(), config.store.data_dir.clone());
            let make = move |handle| source(&device, handle, &data_dir);
            devices.spawn(supervise(handle, make, stop.clone(), Arc::clone(&problems)));
        }
        drop(tx);

        let collector_health = Arc::new(CollectorHealth::default());
        let gateway_asset = AssetPath::parse(&config.gateway.name)
            .map_err(|e| anyhow::anyhow!("the gateway name {:?}: {e}", config.gateway.name))?;
        let condenser = Condenser::new(&config, TagTable::clone(&tags));
        let collector = Collector::new(
            outbox_writer,
            historian_writer,
            condenser,
            Arc::clone(&latest),
            Arc::clone(&collector_health),
        )
        .reporting(Arc::clone(&problems), gateway_asset)
        .on_clock(clock)
        .spawn(rx)?;

        let sinks_stop = Arc::new(AtomicBool::new(false));
        let plant = PlantState { devices: health.clone(), collector: Arc::clone(&collector_health) };
        let (sinks, sink_health) = start_sinks(
            &config.sinks,
            &config.gateway.name,
            &outbox,
            &config.store.data_dir,
            &space,
            &problems,
            &sinks_stop,
            Some(&plant),
        )?;
        let started = std::time::Instant::now();
        let mut gateway = Self {
            config,
            tags,
            health,
            latest,
            collector_health,
            sink_health,
            outbox,
            clock,
            historian,
            web: None,
            devices,
            shutdown,
            collector: Some(collector),
            sinks,
            sinks_stop,
            status: None,
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
            .zip(&self.sink_health)
            .map(|(s, (_, h))| {
                let kind = match &s.kind {
                    SinkKind::Jsonl { .. } => "jsonl",
                    SinkKind::Http(_) => "http",
                    SinkKind::Mqtt(m) if m.sparkplug.is_some() => "sparkplug",
                    SinkKind::Mqtt(_) => "mqtt",
                    SinkKind::Diode(_) => "diode",
                    SinkKind::Kafka(_) => "kafka",
                };
                airlock_web::SinkView { name: s.name.clone(), kind, health: Arc::clone(h) }
            })
            .collect();
        airlock_web::Dashboard {
            gateway: self.config.gateway.name.clone(),
            clock: self.clock,
            devices,
            tags: self
                .tags
                .iter()
                .map(|t| airlock_web::TagView {
                    path: t.path.to_string(),
                    name: t.name.clone(),
                    unit: t.unit.as_deref().map(str::to_owned),
                    device: t.device,
                    value_type: t.value_type,
                })
                .collect(),
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
        let _ = self.shutdown.send(true);
        while self.devices.join_next().await.is_some() {}
        let collector = self.collector.take();
        let sinks = std::mem::take(&mut self.sinks);
        let stop = Arc::clone(&self.sinks_stop);
        let status = self.status.take();
        let joined = tokio::task::spawn_blocking(move || {
            if let Some(c) = collector {
                let _ = c.join();
            }
            stop.store(true, Relaxed);
            for s in sinks {
                let _ = s.join();
            }
            if let Some((thread, stop)) = status {
                stop.store(true, Relaxed);
                let _ = thread.join();
            }
        });
        let _ = joined.await;
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
