//! The running gateway: one task per device, and one collector thread that takes the samples
//! they read, keeps the latest value of every tag for the live view, and hands each batch to
//! the upstream writer.
//!
//! Between the device tasks and the collector sits a bounded channel of [`CHANNEL_BATCHES`]
//! poll batches. A device task never waits on it: when it is full the batch is dropped and
//! counted in that device's health, so a slow disk can never slow a poll. The collector runs on
//! its own OS thread because it writes files with blocking calls.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use airlock_config::{Config, Protocol};
use airlock_model::{AssetPath, DeviceHealth, Sample, TagId};
use airlock_south_modbus::{DeviceTask, SampleBatch};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::upstream::Upstream;

/// Poll batches that may wait between the device tasks and the collector.
pub const CHANNEL_BATCHES: usize = 1024;

/// What the gateway knows of a tag, indexed by `TagId`.
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub name: String,
    pub path: AssetPath,
    pub unit: Option<String>,
    pub device: usize,
}

/// The tag table: every configured tag, in config order; a tag's `TagId` is its index.
pub fn tag_table(config: &Config) -> Vec<TagInfo> {
    let mut tags = Vec::new();
    for (device, d) in config.devices.iter().enumerate() {
        let Protocol::ModbusTcp(m) = &d.protocol;
        tags.extend(m.tags.iter().map(|t| TagInfo {
            name: t.name.clone(),
            path: t.path.clone(),
            unit: t.unit.clone(),
            device,
        }));
    }
    tags
}

/// The latest sample of every tag, shared with the live view.
pub type Latest = Arc<Mutex<Vec<Option<Sample>>>>;

/// A started gateway. Stop it with [`Gateway::stop`].
pub struct Gateway {
    pub config: Config,
    pub tags: Arc<Vec<TagInfo>>,
    pub health: Vec<Arc<DeviceHealth>>,
    pub latest: Latest,
    devices: JoinSet<()>,
    shutdown: watch::Sender<bool>,
    collector: Option<JoinHandle<Upstream>>,
}

impl Gateway {
    /// Starts one task per device on the current tokio runtime and the collector thread.
    pub fn start(config: Config, upstream: Upstream) -> std::io::Result<Self> {
        let tags = Arc::new(tag_table(&config));
        let latest: Latest = Arc::new(Mutex::new(vec![None; tags.len()]));
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let (shutdown, stop) = watch::channel(false);
        let mut devices = JoinSet::new();
        let mut health = Vec::new();
        let mut first_tag = 0u32;
        for (i, d) in config.devices.iter().enumerate() {
            let task = DeviceTask::new(i, d, TagId(first_tag), true);
            first_tag += d.tag_count() as u32;
            health.push(task.health());
            devices.spawn(task.run(tx.clone(), stop.clone()));
        }
        let collector = std::thread::Builder::new().name("collector".into()).spawn({
            let latest = Arc::clone(&latest);
            move || collect(rx, latest, upstream)
        })?;
        Ok(Self { config, tags, health, latest, devices, shutdown, collector: Some(collector) })
    }

    /// Stops every device task, drains the channel, and returns the upstream writer (flushed).
    pub async fn stop(mut self) -> Upstream {
        let _ = self.shutdown.send(true);
        while self.devices.join_next().await.is_some() {}
        let collector = self.collector.take();
        let joined = tokio::task::spawn_blocking(move || collector.map(|c| c.join()));
        match joined.await {
            Ok(Some(Ok(upstream))) => upstream,
            _ => Upstream::none(),
        }
    }
}

/// The collector loop: ends when every device task has dropped its sender.
fn collect(mut rx: mpsc::Receiver<SampleBatch>, latest: Latest, mut upstream: Upstream) -> Upstream {
    while let Some(batch) = rx.blocking_recv() {
        if let Ok(mut l) = latest.lock() {
            for s in &batch.samples {
                if let Some(slot) = l.get_mut(s.tag.0 as usize) {
                    *slot = Some(s.clone());
                }
            }
        }
        upstream.write(&batch.samples);
    }
    upstream.flush();
    upstream
}
