//! The running gateway: one task per device (OT side), one collector thread that writes what
//! they read to local disk, and one thread per sink (IT side) that carries the outbox upstream.
//!
//! ```text
//!  device tasks ──bounded channel──► collector ──► historian (every sample)
//!  (tokio)          (try_send: drop     (thread)  └► outbox (changed values) ──► sinks (threads)
//!                    and count when full)                      OutboxReader only
//! ```
//!
//! Between the device tasks and the collector sits a bounded channel of [`CHANNEL_BATCHES`]
//! poll batches. A device task never waits on it: when it is full the batch is dropped and
//! counted in that device's health, so a slow disk never slows a poll. The collector writes with
//! blocking calls on its own thread; when the disk refuses writes it logs once, counts, and goes
//! on (the store discards what it could not write and keeps its memory bounded).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_config::{Config, DataType, Protocol, SinkKind};
use airlock_model::{AssetPath, DeviceHealth, Sample, TagId, Timestamp};
use airlock_north::http::HttpSink;
use airlock_north::{JsonlSink, SinkHealth};
use airlock_south_modbus::{DeviceTask, SampleBatch};
use airlock_south_mqtt::SubscriberTask;
use airlock_south_opcua::OpcUaTask;
use airlock_store::{
    FsyncPolicy, HistorianConfig, HistorianWriter, OutboxConfig, OutboxReader, OutboxWriter, StoreError,
};
use anyhow::Context as _;
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::condense::{Condenser, Record};

/// Poll batches that may wait between the device tasks and the collector.
pub const CHANNEL_BATCHES: usize = 1024;
/// How often the collector reclaims and applies retention.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

/// What the gateway knows of a tag, indexed by `TagId`.
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub name: String,
    pub path: AssetPath,
    pub unit: Option<String>,
    pub device: usize,
    /// The range of an unsigned counter (it rolls over there), for production counts.
    pub counter_modulus: Option<u64>,
}

/// The tag table: every configured tag, in config order; a tag's `TagId` is its index.
pub fn tag_table(config: &Config) -> Vec<TagInfo> {
    let mut tags = Vec::new();
    for (device, d) in config.devices.iter().enumerate() {
        tags.extend(d.tags.iter().map(|t| TagInfo {
            name: t.name.clone(),
            path: t.path.clone(),
            unit: t.unit.clone(),
            device,
            counter_modulus: match t.data_type {
                DataType::U16 | DataType::I16 => Some(1 << 16),
                DataType::U32 | DataType::I32 => Some(1 << 32),
                _ => None,
            },
        }));
    }
    tags
}

/// The latest sample of every tag, shared with the live view.
pub type Latest = Arc<Mutex<Vec<Option<Sample>>>>;

/// Counters of the collector, for the view.
#[derive(Debug, Default)]
pub struct CollectorHealth {
    pub samples_stored: AtomicU64,
    pub records_queued: AtomicU64,
    pub store_errors: AtomicU64,
}

/// A started gateway. Stop it with [`Gateway::stop`].
pub struct Gateway {
    pub config: Config,
    pub tags: Arc<Vec<TagInfo>>,
    pub health: Vec<Arc<DeviceHealth>>,
    pub latest: Latest,
    pub collector_health: Arc<CollectorHealth>,
    pub sink_health: Vec<(String, Arc<SinkHealth>)>,
    pub outbox: OutboxReader,
    devices: JoinSet<()>,
    shutdown: watch::Sender<bool>,
    collector: Option<JoinHandle<()>>,
    sinks: Vec<JoinHandle<()>>,
    sinks_stop: Arc<AtomicBool>,
}

impl Gateway {
    /// Opens the store, starts one task per device on the current tokio runtime, the collector
    /// thread and one thread per configured sink.
    pub fn start(config: Config) -> anyhow::Result<Self> {
        let tags = Arc::new(tag_table(&config));
        let store = &config.store;
        let fsync = FsyncPolicy::Interval(store.fsync_interval);
        let sink_names = config.sinks.iter().map(|s| s.name.clone()).collect();
        let outbox_config =
            OutboxConfig { bytes_max: store.outbox_bytes_max, age_max: store.outbox_age_max, fsync, sinks: sink_names };
        let outbox_dir = store.data_dir.join("outbox");
        let (outbox_writer, outbox) = OutboxWriter::open(&outbox_dir, outbox_config)
            .with_context(|| format!("open the outbox in {}", outbox_dir.display()))?;
        let historian_config = HistorianConfig {
            bytes_max: store.historian_bytes_max,
            age_max: store.historian_age_max,
            fsync,
            ..HistorianConfig::default()
        };
        let historian_dir = store.data_dir.join("historian");
        let (mut historian_writer, _) = HistorianWriter::open(&historian_dir, historian_config)
            .with_context(|| format!("open the historian in {}", historian_dir.display()))?;
        let paths: Vec<&str> = tags.iter().map(|t| t.path.as_str()).collect();
        historian_writer.bind_tags(&paths).context("add the tags to the historian")?;

        let latest: Latest = Arc::new(Mutex::new(vec![None; tags.len()]));
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (shutdown, stop) = watch::channel(false);
        let mut devices = JoinSet::new();
        let mut health = Vec::new();
        let mut first_tag = 0u32;
        for (i, d) in config.devices.iter().enumerate() {
            let (tx, stop, first) = (tx.clone(), stop.clone(), TagId(first_tag));
            first_tag += d.tag_count() as u32;
            match &d.protocol {
                Protocol::ModbusTcp(m) => {
                    let task = DeviceTask::new(i, d, m, first, true);
                    health.push(task.health());
                    devices.spawn(task.run(tx, stop));
                }
                Protocol::Mqtt(m) => {
                    let task = SubscriberTask::new(i, d, m, first);
                    health.push(task.health());
                    devices.spawn(task.run(tx, stop));
                }
                Protocol::OpcUa(o) => {
                    let task = OpcUaTask::new(i, d, o, first, &config.store.data_dir);
                    health.push(task.health());
                    devices.spawn(task.run(tx, stop));
                }
            }
        }

        let collector_health = Arc::new(CollectorHealth::default());
        let collector = Collector {
            outbox: outbox_writer,
            historian: historian_writer,
            condenser: Condenser::new(&config, Arc::clone(&tags)),
            records: Vec::new(),
            latest: Arc::clone(&latest),
            health: Arc::clone(&collector_health),
            failing: None,
        };
        // The collector waits for batches on a small runtime of its own (timers only), so an
        // idle plant costs it a wake-up per edge tick, not a poll per millisecond.
        let waits = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        let collector =
            std::thread::Builder::new().name("collector".into()).spawn(move || collector.run(rx, &waits))?;

        let sinks_stop = Arc::new(AtomicBool::new(false));
        let mut sinks = Vec::new();
        let mut sink_health = Vec::new();
        for s in &config.sinks {
            let gateway = &config.gateway.name;
            let stop = Arc::clone(&sinks_stop);
            let (handle, h) = match &s.kind {
                SinkKind::Jsonl { path } => {
                    let h = Arc::new(SinkHealth::default());
                    let sink = Box::new(JsonlSink::new(&s.name, gateway, path));
                    (airlock_north::spawn(sink, outbox.clone(), stop, Arc::clone(&h))?, h)
                }
                SinkKind::Http(http) => {
                    let h = Arc::new(SinkHealth::default());
                    let sink = HttpSink::new(&s.name, gateway, http, &config.store.data_dir, Arc::clone(&h))
                        .map_err(|e| anyhow::anyhow!("sink {}: {e}", s.name))?;
                    (airlock_north::spawn(Box::new(sink), outbox.clone(), stop, Arc::clone(&h))?, h)
                }
                SinkKind::Mqtt(m) => airlock_north::mqtt::spawn(&s.name, gateway, m, outbox.clone(), stop)?,
            };
            sinks.push(handle);
            sink_health.push((s.name.clone(), h));
        }
        Ok(Self {
            config,
            tags,
            health,
            latest,
            collector_health,
            sink_health,
            outbox,
            devices,
            shutdown,
            collector: Some(collector),
            sinks,
            sinks_stop,
        })
    }

    /// Stops the device tasks, lets the collector write what they read and sync it, then lets
    /// the sinks deliver what the outbox holds, and returns when all are done.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.devices.join_next().await.is_some() {}
        let collector = self.collector.take();
        let sinks = std::mem::take(&mut self.sinks);
        let stop = Arc::clone(&self.sinks_stop);
        let joined = tokio::task::spawn_blocking(move || {
            if let Some(c) = collector {
                let _ = c.join();
            }
            stop.store(true, Relaxed);
            for s in sinks {
                let _ = s.join();
            }
        });
        let _ = joined.await;
    }
}

/// The collector: the OT chamber's only writer to the store.
struct Collector {
    outbox: OutboxWriter,
    historian: HistorianWriter,
    condenser: Condenser,
    /// Upstream records of the current batch (reused).
    records: Vec<Record>,
    latest: Latest,
    health: Arc<CollectorHealth>,
    /// The store error being reported, so that it is logged once per change.
    failing: Option<String>,
}

/// How often the edge's time-driven steps run (windows closing, stale alarms).
const EDGE_TICK: Duration = Duration::from_millis(100);

impl Collector {
    /// Runs until every device task has dropped its sender, then syncs. When no batch waits it
    /// commits, then sleeps until the next batch, the next edge tick, or the moment the outbox
    /// may sync what it holds unsynced (records go upstream only once synced).
    fn run(mut self, mut rx: mpsc::Receiver<SampleBatch>, waits: &tokio::runtime::Runtime) {
        let mut maintained = Instant::now();
        let mut ticked = Instant::now();
        loop {
            if ticked.elapsed() >= EDGE_TICK {
                ticked = Instant::now();
                let mut records = std::mem::take(&mut self.records);
                self.condenser.on_tick(Timestamp::now(), &mut records);
                self.queue(&mut records);
                self.records = records;
            }
            let batch = match rx.try_recv() {
                Ok(batch) => Some(batch),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    self.commit();
                    let until_tick = EDGE_TICK.saturating_sub(ticked.elapsed());
                    let sync_due = self.outbox.sync_due_in().ok().flatten();
                    // At least a millisecond, so a sync that is due now is retried, not spun on.
                    let wait = sync_due.map_or(until_tick, |d| d.max(Duration::from_millis(1)).min(until_tick));
                    match waits.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                        Ok(Some(batch)) => Some(batch),
                        Ok(None) => break,
                        Err(_) => None,
                    }
                }
            };
            if let Some(batch) = batch {
                self.take(&batch.samples);
            }
            if maintained.elapsed() >= MAINTAIN_EVERY {
                maintained = Instant::now();
                let now = Timestamp::now();
                let result = self.outbox.maintain(now).and_then(|()| self.historian.maintain(now));
                self.report(result);
            }
        }
        let result = self.outbox.sync().map(|_| ()).and_then(|()| self.historian.sync());
        self.report(result);
    }

    fn take(&mut self, samples: &[Sample]) {
        if let Ok(mut l) = self.latest.lock() {
            for s in samples {
                if let Some(slot) = l.get_mut(s.tag.0 as usize) {
                    *slot = Some(s.clone());
                }
            }
        }
        let stored = self.historian.append(samples);
        if stored.is_ok() {
            self.health.samples_stored.fetch_add(samples.len() as u64, Relaxed);
        }
        self.report(stored);
        let mut records = std::mem::take(&mut self.records);
        self.condenser.on_samples(samples, &mut records);
        self.queue(&mut records);
        self.records = records;
        self.commit();
    }

    /// Puts the edge's records into the outbox, each in its class.
    fn queue(&mut self, records: &mut Vec<Record>) {
        let mut queued = 0;
        let mut result = Ok(());
        for (class, time, payload) in records.drain(..) {
            if result.is_ok() {
                result = self.outbox.append(class, time, &payload).map(|_| ());
                queued += u64::from(result.is_ok());
            }
        }
        self.health.records_queued.fetch_add(queued, Relaxed);
        self.report(result);
    }

    /// Group commit: the store syncs as its policy says.
    fn commit(&mut self) {
        let result = self.outbox.commit().map(|_| ()).and_then(|()| self.historian.commit().map(|_| ()));
        self.report(result);
    }

    fn report(&mut self, result: Result<(), StoreError>) {
        match result {
            Ok(()) => {
                if self.failing.take().is_some() {
                    log::info!("store: writing again");
                }
            }
            Err(e) => {
                self.health.store_errors.fetch_add(1, Relaxed);
                let text = e.to_string();
                if self.failing.as_deref() != Some(text.as_str()) {
                    let hint = if e.is_disk_full() {
                        " (disk full: collection goes on, unwritten data is dropped and counted)"
                    } else {
                        ""
                    };
                    log::error!("store: {text}{hint}");
                    self.failing = Some(text);
                }
            }
        }
    }
}
