//! The shell every driver shares: a [`DeviceHandle`] names the device's tag ids, makes its
//! samples, marks all its tags bad at once, and hands batches on through the one bounded
//! channel ([`channel`]). A driver never waits on that channel: when it is full the batch is
//! dropped, counted in the device's health, and logged once until there is room again, so a
//! slow disk never slows a poll and one device never slows another.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use airlock_config::Device;
use airlock_model::{DeviceHealth, Quality, Reason, Sample, SampleBatch, TagId, Timestamp, Value};
use tokio::sync::{mpsc, watch};

/// Batches that may wait between the device tasks and the collector.
pub const CHANNEL_BATCHES: usize = 1024;

/// A southbound driver: a device task that reads until told to stop.
pub trait Source: Send {
    /// Reads the device, handing samples to its handle, until `stop` turns true.
    fn run(self: Box<Self>, stop: watch::Receiver<bool>) -> Running;
}

/// A running source, as the gateway spawns it.
pub type Running = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The sending end of the batch channel (cloned per device).
#[derive(Debug, Clone)]
pub struct BatchSender(mpsc::Sender<SampleBatch>);

/// The batch channel: at most `batches` batches wait between the drivers and the collector.
pub fn channel(batches: usize) -> (BatchSender, mpsc::Receiver<SampleBatch>) {
    let (tx, rx) = mpsc::channel(batches.max(1));
    (BatchSender(tx), rx)
}

/// One device's way into the pipeline.
#[derive(Debug)]
pub struct DeviceHandle {
    /// The device's index in the config, and its name for logs.
    device: usize,
    name: String,
    first_tag: TagId,
    tags: usize,
    health: Arc<DeviceHealth>,
    out: BatchSender,
    /// Whether the channel was full at the last try (so it is logged once per episode).
    full: AtomicBool,
}

impl DeviceHandle {
    /// The handle of config device `index` (`device`), whose tags have ids from `first_tag` on.
    pub fn new(index: usize, device: &Device, first_tag: TagId, out: BatchSender) -> Self {
        Self {
            device: index,
            name: device.name.clone(),
            first_tag,
            tags: device.tag_count(),
            health: Arc::new(DeviceHealth::default()),
            out,
            full: AtomicBool::new(false),
        }
    }

    pub fn device(&self) -> usize {
        self.device
    }

    pub fn health(&self) -> Arc<DeviceHealth> {
        Arc::clone(&self.health)
    }

    /// The id of the device's tag `index` (in config order).
    pub fn tag_id(&self, index: usize) -> TagId {
        TagId(self.first_tag.0 + index as u32)
    }

    /// A sample of tag `index`.
    pub fn sample(
        &self,
        index: usize,
        value: Option<Value>,
        quality: Quality,
        source_time: Option<Timestamp>,
        gateway_time: Timestamp,
    ) -> Sample {
        Sample { tag: self.tag_id(index), value, quality, source_time, gateway_time }
    }

    /// Every tag of the device, bad for `reason`, now.
    pub fn all_bad(&self, reason: Reason) -> Vec<Sample> {
        let now = Timestamp::now();
        (0..self.tags).map(|i| Sample::bad(self.tag_id(i), reason, now)).collect()
    }

    /// Hands `samples` on as batch `poll` (never waits). Returns whether they went.
    pub fn emit(&self, poll: u64, samples: Vec<Sample>) -> bool {
        if samples.is_empty() {
            return true;
        }
        let n = samples.len() as u64;
        match self.out.0.try_send(SampleBatch { device: self.device, poll, samples }) {
            Ok(()) => {
                DeviceHealth::count(&self.health.samples, n);
                if self.full.swap(false, Relaxed) {
                    log::info!("device {}: the sample channel has room again", self.name);
                }
                true
            }
            Err(_) => {
                DeviceHealth::count(&self.health.batches_dropped, 1);
                if !self.full.swap(true, Relaxed) {
                    log::warn!("device {}: the sample channel is full; dropping batches until it drains", self.name);
                }
                false
            }
        }
    }
}
