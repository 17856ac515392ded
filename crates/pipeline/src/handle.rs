//! The shell every driver shares: a [`DeviceHandle`] names the device's tag ids, makes its
//! samples, marks all its tags bad at once, and hands batches on through the one bounded
//! channel ([`bounded_channel`]: in batches and in samples). A value that does not fit its tag's configured type (70,000 for a
//! u16, from a JSON payload or an OPC UA variant of another type) becomes a bad sample with the
//! reason `out of range`, logged once per device until a value fits again. A driver never waits on that channel: when it is full (or the
//! device holds its share of it) the batch is dropped, counted in the device's health, and logged once until there is room again, so a
//! slow disk never slows a poll and one device never slows another.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use airlock_config::Device;
use airlock_model::{DeviceHealth, Quality, Reason, Sample, SampleBatch, TagId, Timestamp, Value, ValueType};
use tokio::sync::{mpsc, watch};

/// Batches that may wait between the device tasks and the collector.
pub const CHANNEL_BATCHES: usize = 1024;

/// Samples that may wait between the device tasks and the collector (some 8 MB): the memory
/// bound of the channel when the collector stays behind (a slow disk). Counted in batches
/// only, 1,024 batches of [`BATCH_SAMPLES`] could hold 64 MB, and the allocator kept that
/// memory once the collector caught up. At 10,000 tags read once a second this is 13 s of a
/// collector that takes nothing. One device alone stops at about half of it
/// ([`bounded_channel`]): at a 1 ms poll of 10,000 registers (2 M samples a second) 32 ms,
/// where the collector's backlog peaked at some 30,000 samples.
pub const CHANNEL_SAMPLES: usize = 1 << 17;

/// A driver that reads many tags in one poll gathers its answers' samples and hands them on
/// once they are this many, once the oldest has waited [`BATCH_WAIT`], and at the poll's end:
/// each hand-over wakes the collector's thread, which costs more than the samples themselves
/// when a batch holds only one request's answer.
pub const BATCH_SAMPLES: usize = 1024;
pub const BATCH_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// A southbound driver: a device task that reads until told to stop.
pub trait Source: Send {
    /// Reads the device, handing samples to its handle, until `stop` turns true.
    fn run(self: Box<Self>, stop: watch::Receiver<bool>) -> Running;
}

/// A running source, as the gateway spawns it.
pub type Running = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The sending end of the batch channel (cloned per device).
#[derive(Debug, Clone)]
pub struct BatchSender {
    tx: mpsc::Sender<SampleBatch>,
    room: Arc<Room>,
}

/// The samples waiting in the batch channel, in all and by device, and how many may.
#[derive(Debug, Default)]
struct Room {
    waiting: AtomicUsize,
    samples_max: usize,
    /// By device slot (a `DeviceHandle`'s index; a slot keeps its counter).
    devices: Mutex<Vec<Arc<AtomicUsize>>>,
}

impl Room {
    /// The counter of device slot `device`.
    fn of(&self, device: usize) -> Arc<AtomicUsize> {
        let mut devices = self.devices.lock().unwrap_or_else(PoisonError::into_inner);
        if devices.len() <= device {
            devices.resize_with(device + 1, Default::default);
        }
        Arc::clone(&devices[device])
    }
}

/// The receiving end of the batch channel: what it takes off no longer counts as waiting.
#[derive(Debug)]
pub struct BatchReceiver {
    rx: mpsc::Receiver<SampleBatch>,
    /// The senders' count of samples waiting (`None`: a plain channel's, not counted), and its
    /// devices' counters as last looked up.
    room: Option<Arc<Room>>,
    devices: Vec<Arc<AtomicUsize>>,
}

impl BatchReceiver {
    /// The next batch, waiting for one; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<SampleBatch> {
        let batch = self.rx.recv().await?;
        self.taken(&batch);
        Some(batch)
    }

    /// The next batch if one waits.
    pub fn try_recv(&mut self) -> Result<SampleBatch, mpsc::error::TryRecvError> {
        let batch = self.rx.try_recv()?;
        self.taken(&batch);
        Ok(batch)
    }

    /// Batches waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Samples waiting (0 for a plain channel's receiver).
    pub fn samples(&self) -> usize {
        self.room.as_ref().map_or(0, |r| r.waiting.load(Relaxed))
    }

    fn taken(&mut self, batch: &SampleBatch) {
        let Some(room) = &self.room else { return };
        let n = batch.samples.len();
        room.waiting.fetch_sub(n, Relaxed);
        if self.devices.len() <= batch.device {
            self.devices = room.devices.lock().unwrap_or_else(PoisonError::into_inner).clone();
        }
        if let Some(device) = self.devices.get(batch.device) {
            device.fetch_sub(n, Relaxed);
        }
    }
}

/// A plain channel's receiver as a batch receiver, its samples not counted (tests that send
/// batches of their own).
impl From<mpsc::Receiver<SampleBatch>> for BatchReceiver {
    fn from(rx: mpsc::Receiver<SampleBatch>) -> Self {
        Self { rx, room: None, devices: Vec::new() }
    }
}

/// The batch channel: at most `batches` batches wait between the drivers and the collector
/// (each of at most [`BATCH_SAMPLES`] samples).
pub fn channel(batches: usize) -> (BatchSender, BatchReceiver) {
    bounded_channel(batches, batches.saturating_mul(BATCH_SAMPLES))
}

/// The batch channel: at most `batches` batches and `samples` samples wait between the
/// drivers and the collector, and a device that holds as many as a hand-over would leave
/// free adds no more (one busy device stops at about half, two at a third each), so that a
/// device that holds none always finds room up to the bound. A hand-over into a channel where
/// nothing waits goes whatever its size (a device of more tags than the bound still gets its
/// polls, and its comms-lost marking, through).
pub fn bounded_channel(batches: usize, samples: usize) -> (BatchSender, BatchReceiver) {
    let (tx, rx) = mpsc::channel(batches.max(1));
    let room = Arc::new(Room { samples_max: samples, ..Room::default() });
    (BatchSender { tx, room: Arc::clone(&room) }, BatchReceiver { rx, room: Some(room), devices: Vec::new() })
}

impl BatchSender {
    /// Takes room for `samples` samples of the device counted in `device`, if there is; given
    /// back with [`Self::give_back`] if the batches do not go.
    fn take_room(&self, device: &AtomicUsize, samples: usize) -> bool {
        let max = self.room.samples_max;
        // The device's own count changes only by its hand-overs and the collector's taking
        // them: read once, it may only have fallen since.
        let mine = device.load(Relaxed);
        let taken = self.room.waiting.fetch_update(Relaxed, Relaxed, |waiting| {
            let after = waiting.checked_add(samples)?;
            (waiting == 0 || (after <= max && mine <= max - after)).then_some(after)
        });
        if taken.is_ok() {
            device.fetch_add(samples, Relaxed);
        }
        taken.is_ok()
    }

    fn give_back(&self, device: &AtomicUsize, samples: usize) {
        self.room.waiting.fetch_sub(samples, Relaxed);
        device.fetch_sub(samples, Relaxed);
    }
}

/// One device's way into the pipeline.
#[derive(Debug)]
pub struct DeviceHandle {
    /// The device's index in the config, and its name for logs.
    device: usize,
    name: String,
    first_tag: TagId,
    tags: usize,
    /// Each tag's configured type (what its values must fit), the most characters of its text
    /// (`length_chars`; 0: any) and its name (for the log).
    types: Arc<[(ValueType, u16, Box<str>)]>,
    /// Whether a value out of its type's range was logged and none has fitted since.
    out_of_range: AtomicBool,
    health: Arc<DeviceHealth>,
    out: BatchSender,
    /// The device's samples waiting in the channel.
    waiting: Arc<AtomicUsize>,
    /// Whether the channel was full at the last try (so it is logged once per episode).
    full: AtomicBool,
}

/// A second handle of the same device, sharing its health (a restarted task gets one).
impl Clone for DeviceHandle {
    fn clone(&self) -> Self {
        Self {
            device: self.device,
            name: self.name.clone(),
            first_tag: self.first_tag,
            tags: self.tags,
            types: Arc::clone(&self.types),
            out_of_range: AtomicBool::new(false),
            health: Arc::clone(&self.health),
            out: self.out.clone(),
            waiting: Arc::clone(&self.waiting),
            full: AtomicBool::new(false),
        }
    }
}

impl DeviceHandle {
    /// The handle of config device `index` (`device`), whose tags have ids from `first_tag` on.
    pub fn new(index: usize, device: &Device, first_tag: TagId, out: BatchSender) -> Self {
        Self {
            device: index,
            name: device.name.clone(),
            first_tag,
            tags: device.tag_count(),
            types: (0..device.tag_count())
                .map(|i| {
                    let chars = match device.tags[i].data_type {
                        airlock_config::DataType::String { length_chars } => length_chars,
                        _ => 0,
                    };
                    (crate::tags::value_type(device, i), chars, device.tags[i].name.as_str().into())
                })
                .collect(),
            out_of_range: AtomicBool::new(false),
            health: Arc::new(DeviceHealth::default()),
            waiting: out.room.of(index),
            out,
            full: AtomicBool::new(false),
        }
    }

    pub fn device(&self) -> usize {
        self.device
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn health(&self) -> Arc<DeviceHealth> {
        Arc::clone(&self.health)
    }

    /// The id of the device's tag `index` (in config order).
    pub fn tag_id(&self, index: usize) -> TagId {
        TagId(self.first_tag.0 + index as u32)
    }

    /// A sample of tag `index`; bad (`out of range`, no value) if the value does not fit the
    /// tag's configured type (a text: its `length_chars`).
    pub fn sample(
        &self,
        index: usize,
        value: Option<Value>,
        quality: Quality,
        source_time: Option<Timestamp>,
        gateway_time: Timestamp,
    ) -> Sample {
        let tag = self.tag_id(index);
        if let (Some(v), Some((t, chars, name))) = (&value, self.types.get(index)) {
            // A text longer than the tag's `length_chars` does not fit either, whichever driver
            // read it (a Sparkplug or OPC UA string carries any length).
            let too_long = matches!(v, Value::Text(text) if *chars > 0 && text.chars().count() > usize::from(*chars));
            if !t.admits(v) || too_long {
                if !self.out_of_range.swap(true, Relaxed) {
                    log::warn!(
                        "device {}: tag {name} read {v}, which does not fit its type {t:?}{}; marked bad (out of range)",
                        self.name,
                        if too_long { format!(" of at most {chars} characters") } else { String::new() }
                    );
                }
                return Sample {
                    tag,
                    value: None,
                    quality: Quality::Bad(Reason::OutOfRange),
                    source_time,
                    gateway_time,
                };
            }
            if quality.is_good() && self.out_of_range.load(Relaxed) {
                self.out_of_range.store(false, Relaxed);
            }
        }
        Sample { tag, value, quality, source_time, gateway_time }
    }

    /// Every tag of the device, bad for `reason`, now.
    pub fn all_bad(&self, reason: Reason) -> Vec<Sample> {
        let now = Timestamp::now();
        (0..self.tags).map(|i| Sample::bad(self.tag_id(i), reason, now)).collect()
    }

    /// Hands `samples` on as batch `poll` (never waits), in batches of at most
    /// [`BATCH_SAMPLES`], so that the channel holds a bounded number of samples whatever one
    /// message from a device brings. All go or none: room for every batch is taken before the
    /// first is sent (a poll handed over in part left the same last tags of a device silent,
    /// poll after poll, while the rest read on: now the whole device's drop shows in its
    /// health). It goes if its samples fit beside those waiting (or nothing waits), the device
    /// does not hold its share already ([`bounded_channel`]), and a batch slot is free for each
    /// of its batches: under a collector that stays behind, a hand-over of several batches
    /// finds room less often than one of a single batch, and one of more batches than the
    /// channel has slots (1,024: a million samples) never does. Returns whether they went; a
    /// drop is counted once.
    pub fn emit(&self, poll: u64, samples: Vec<Sample>) -> bool {
        let n = samples.len();
        if n == 0 {
            return true;
        }
        if !self.out.take_room(&self.waiting, n) {
            self.dropped();
            return false;
        }
        let went = if n <= BATCH_SAMPLES {
            self.out.tx.try_send(SampleBatch { device: self.device, poll, samples }).is_ok()
        } else if let Ok(permits) = self.out.tx.try_reserve_many(n.div_ceil(BATCH_SAMPLES)) {
            let mut rest = samples.into_iter();
            for permit in permits {
                permit.send(SampleBatch {
                    device: self.device,
                    poll,
                    samples: rest.by_ref().take(BATCH_SAMPLES).collect(),
                });
            }
            true
        } else {
            false
        };
        if !went {
            self.out.give_back(&self.waiting, n);
            self.dropped();
            return false;
        }
        self.sent(n as u64);
        true
    }

    fn sent(&self, samples: u64) {
        DeviceHealth::count(&self.health.samples, samples);
        if self.full.swap(false, Relaxed) {
            log::info!("device {}: the sample channel has room again", self.name);
        }
    }

    fn dropped(&self) {
        DeviceHealth::count(&self.health.batches_dropped, 1);
        if !self.full.swap(true, Relaxed) {
            log::warn!(
                "device {}: the sample channel has no room for it (full, or this device holds as much as is left free); \
                 dropping batches until it drains",
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        let toml = r#"
            [[device]]
            name = "press1"
            asset_path = "acme/plant"
            protocol = "mqtt"
            address = "127.0.0.1:1883"
            [[device.tag]]
            name = "count"
            topic = "press1/status"
            value_pointer = "/count"
            type = "u16"
            [[device.tag]]
            name = "offset"
            topic = "press1/status"
            value_pointer = "/offset"
            type = "i16"
            [[device.tag]]
            name = "speed"
            topic = "press1/status"
            value_pointer = "/speed"
            type = "f64"
            [[device.tag]]
            name = "recipe"
            topic = "press1/status"
            value_pointer = "/recipe"
            type = "string"
            length_chars = 4
        "#;
        let config = airlock_config::parse(toml, std::path::Path::new("test.toml")).expect("a valid config");
        (*config.devices[0]).clone()
    }

    /// A driver's batch is at most [`BATCH_SAMPLES`] samples, whatever one message brings (a
    /// Sparkplug publisher chooses how many metrics a payload repeats: a megabyte of them was
    /// one batch of some 130,000 samples, and 1,024 such batches could wait in the channel).
    #[test]
    fn a_large_handover_goes_in_batches_of_bounded_size_in_order() {
        let (tx, mut rx) = channel(8);
        let h = DeviceHandle::new(0, &device(), TagId(10), tx);
        let samples: Vec<Sample> =
            (0..5_000).map(|i| Sample::good(TagId(10), Value::U64(i), Timestamp::from_millis(i as i64))).collect();
        assert!(h.emit(7, samples));
        let mut sizes = Vec::new();
        let mut next = 0;
        while let Ok(batch) = rx.try_recv() {
            sizes.push(batch.samples.len());
            for s in &batch.samples {
                assert_eq!(s.value, Some(Value::U64(next)));
                next += 1;
            }
        }
        assert_eq!(sizes, [1024, 1024, 1024, 1024, 904]);
        // With room for two batches only: none goes (a hand-over is whole or not at all: a
        // device's poll marked bad in part would read as some tags good and the rest silent),
        // and the drop is counted once.
        let (tx, mut rx) = channel(2);
        let h = DeviceHandle::new(0, &device(), TagId(10), tx);
        let samples: Vec<Sample> =
            (0..5_000).map(|i| Sample::good(TagId(10), Value::U64(i), Timestamp::from_millis(i as i64))).collect();
        assert!(!h.emit(7, samples.clone()));
        assert!(rx.try_recv().is_err());
        assert_eq!(h.health().batches_dropped.load(Relaxed), 1);
        assert_eq!(h.health().samples.load(Relaxed), 0);
        // With room for all five: all go.
        let (tx, mut rx) = channel(5);
        let h = DeviceHandle::new(0, &device(), TagId(10), tx);
        assert!(h.emit(7, samples));
        assert_eq!((0..5).filter_map(|_| rx.try_recv().ok()).map(|b| b.samples.len()).sum::<usize>(), 5_000);
        assert_eq!(h.health().samples.load(Relaxed), 5_000);
    }

    /// Issue 15: the channel is bounded in samples, not in batches only (1,024 batches of
    /// 1,024 samples held 64 MB while a collector stayed behind), and a device that holds as
    /// much as it would leave free adds no more, so that a busy device cannot take the room a
    /// quiet one needs. A
    /// hand-over past either is dropped whole and counted, in one batch or several, and room
    /// comes back as the collector takes batches off.
    #[test]
    fn the_channel_holds_a_bounded_number_of_samples_whatever_the_batches() {
        let poll = |n: u64| -> Vec<Sample> {
            (0..n).map(|i| Sample::good(TagId(10), Value::U64(i), Timestamp::from_millis(i as i64))).collect()
        };
        let (tx, mut rx) = bounded_channel(1024, 3_000);
        let h: Vec<DeviceHandle> = (0..5).map(|d| DeviceHandle::new(d, &device(), TagId(10), tx.clone())).collect();
        // A busy device, alone: until it holds as much as it would leave free.
        assert!(h[0].emit(1, poll(1_000)));
        assert!(h[0].emit(2, poll(500)));
        assert!(!h[0].emit(3, poll(100)), "it holds more than it would leave free");
        assert!(!h[0].emit(3, poll(1_100)), "two batches");
        assert_eq!((rx.len(), rx.samples()), (2, 1_500), "a drop takes no room");
        // The others still find room, up to the bound.
        assert!(h[1].emit(1, poll(500)));
        assert!(h[1].emit(2, poll(500)));
        assert!(!h[1].emit(3, poll(100)));
        assert!(h[2].emit(1, poll(400)));
        assert!(!h[2].emit(2, poll(200)), "past the bound");
        assert!(h[3].emit(1, poll(100)));
        assert!(!h[4].emit(1, poll(1)), "the channel is full");
        assert_eq!(rx.samples(), 3_000);
        let dropped: Vec<u64> = h.iter().map(|h| h.health().batches_dropped.load(Relaxed)).collect();
        assert_eq!(dropped, [2, 1, 1, 0, 1]);
        // The collector takes the busy device's first poll: it has room again.
        assert_eq!(rx.try_recv().map(|b| (b.device, b.samples.len())).ok(), Some((0, 1_000)));
        assert_eq!(rx.samples(), 2_000);
        assert!(h[0].emit(4, poll(400)));
        let mut taken = 1_000;
        while let Ok(batch) = rx.try_recv() {
            taken += batch.samples.len();
        }
        assert_eq!((taken, rx.samples()), (3_400, 0));
        assert_eq!(h.iter().map(|h| h.health().samples.load(Relaxed)).sum::<u64>(), 3_400);
        // Into a channel where nothing waits, a hand-over goes whatever its size.
        assert!(h[4].emit(6, poll(5_000)));
        assert_eq!(rx.samples(), 5_000);
        // Room taken and the batches refused (the channel's batches full): room given back.
        let (tx, full) = bounded_channel(1, 10_000);
        let h = DeviceHandle::new(0, &device(), TagId(10), tx);
        assert!(h.emit(1, poll(500)));
        assert!(!h.emit(2, poll(500)), "one batch, none free");
        assert_eq!(full.samples(), 500);
        assert!(!h.emit(3, poll(2_000)), "two batches, none free");
        assert_eq!(full.samples(), 500);
    }

    #[test]
    fn a_value_outside_its_tags_type_is_a_bad_sample_out_of_range() {
        let (tx, _rx) = channel(1);
        let h = DeviceHandle::new(0, &device(), TagId(10), tx);
        let now = Timestamp::from_millis(0);
        let cases = [
            (0, Value::U64(70_000), false),
            (0, Value::I64(-1), false),
            (0, Value::U64(65_535), true),
            (1, Value::I64(-32_769), false),
            (1, Value::I64(-5), true),
            (2, Value::I64(-5), true),
            (2, Value::Text("fast".into()), false),
            // A text within the tag's length_chars (characters, not bytes), and one past it.
            (3, Value::Text("äöüß".into()), true),
            (3, Value::Text("x".repeat(1 << 20).into()), false),
        ];
        for (tag, value, fits) in cases {
            let s = h.sample(tag, Some(value.clone()), Quality::Good, None, now);
            assert_eq!(s.tag, TagId(10 + tag as u32));
            if fits {
                assert_eq!((s.value, s.quality), (Some(value), Quality::Good));
            } else {
                assert_eq!((s.value, s.quality), (None, Quality::Bad(Reason::OutOfRange)), "{value:?}");
            }
        }
    }
}
