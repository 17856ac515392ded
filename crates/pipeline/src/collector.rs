//! The collector: the OT chamber's only writer to the store. It takes the drivers' batches from
//! the bounded channel, appends every sample to the historian, runs it through the condenser,
//! and puts the typed records that come out into the outbox by class, group-committing both.
//! When the disk refuses writes it logs once, counts, and goes on (the store discards what it
//! could not write and keeps its memory bounded). Problems the gateway reports about itself
//! (a sink that cannot deliver, and later its recovery) are taken from the [`Problems`] board
//! on every edge tick and queued as events of the gateway's own asset.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_model::{
    AssetPath, Clock, CollectorHealth, FeedEvent, Problem, Problems, Sample, SampleBatch, Severity, Timestamp,
    Transition, Value, panic_text,
};
use airlock_store::{Class, HistorianWriter, OutboxWriter, RecordId, StoreError};
use airlock_upstream::{EventRecord, Upstream};
use tokio::sync::mpsc::error::TryRecvError;

use crate::condense::{Condenser, Moved, Record};
use crate::handle::BatchReceiver;

/// How often the collector reclaims and applies retention.
const MAINTAIN_EVERY: Duration = Duration::from_secs(1);

/// The latest sample of every tag, shared with the live view.
pub type Latest = Arc<Mutex<Vec<Option<Sample>>>>;

/// An event record as the feed shows it (`None` for a record that is no event).
fn feed_event(id: RecordId, record: &Upstream, gateway: &str) -> Option<FeedEvent> {
    let (asset, kind, severity, state, message) = match record {
        Upstream::Event(e) => (e.asset.to_string(), e.kind.to_string(), e.severity, e.state, e.message.to_string()),
        Upstream::Gap(g) => {
            (gateway.to_owned(), g.cause.kind().to_owned(), Severity::Warning, Transition::Once, g.message())
        }
        Upstream::Recovered(r) => {
            (gateway.to_owned(), "outbox_recovered".into(), Severity::Warning, Transition::Once, r.message())
        }
        Upstream::Undecodable(u) => {
            (gateway.to_owned(), "outbox_undecodable".into(), Severity::Warning, Transition::Once, u.message())
        }
        _ => return None,
    };
    Some(FeedEvent { id: id.to_string(), time: record.time(), asset, kind, severity, state, message })
}

/// Keeps `s` as its tag's latest sample. One whose value (bit for bit) and quality are those
/// kept only moves the kept one's times on: most registers hold still from poll to poll, and
/// a clone of every sample (and the drop of the one it replaced) was a sixth of the
/// collector's time at a 1 ms poll.
fn keep_latest(slot: &mut Option<Sample>, s: &Sample) {
    let same_value = |kept: &Option<Value>| match (kept, &s.value) {
        (Some(Value::F64(a)), Some(Value::F64(b))) => a.to_bits() == b.to_bits(),
        // A waveform's clone is a reference count; comparing it would read every point.
        (Some(Value::Waveform(_)), _) => false,
        (kept, new) => kept == new,
    };
    match slot {
        Some(kept) if kept.quality == s.quality && same_value(&kept.value) => {
            kept.gateway_time = s.gateway_time;
            kept.source_time = s.source_time;
        }
        _ => *slot = Some(s.clone()),
    }
}

/// A new config's middle, handed to the running collector (`airlock run` on SIGHUP): the
/// condenser of the new tag table, which takes over the edge state of unchanged devices, the
/// new table's tag paths for the historian, and per batch-channel slot (a running device task's
/// `DeviceHandle` index) how far its tag ids move, or `None` for a task that is stopping.
/// The collector switches between two batches, then answers on `done`.
pub struct Reload {
    pub condenser: Condenser,
    /// The tag paths of the new table, in tag id order.
    pub paths: Vec<String>,
    /// The tags' historian resolutions, in tag id order.
    pub resolutions: Vec<Option<f64>>,
    /// Devices unchanged by the reload: where their tags were and are.
    pub unchanged: Vec<Moved>,
    /// Per slot: how much to add to a tag id of its batches, or `None` to drop them.
    pub routes: Vec<Option<i64>>,
    pub done: std::sync::mpsc::Sender<Result<(), String>>,
}

/// The collector: the OT chamber's only writer to the store.
pub struct Collector {
    outbox: OutboxWriter,
    historian: HistorianWriter,
    condenser: Condenser,
    /// Upstream records of the current batch (reused).
    records: Vec<Record>,
    latest: Latest,
    health: Arc<CollectorHealth>,
    /// The store error being reported, so that it is logged once per change.
    failing: Option<String>,
    /// Problems of the gateway itself, to send upstream, and the asset they are reported under.
    problems: Arc<Problems>,
    gateway: Option<AssetPath>,
    /// The outbox's corrupt-read and corrupt-cursor counts already reported.
    corrupt_seen: (u64, u64),
    /// The class whose records an outbox full of higher classes refuses, if it does (said
    /// once, when it starts; over when a record of that class or a lower one is taken again).
    outbox_full: Option<Class>,
    /// The gateway's clock: the wall clock, or a simulated plant's.
    clock: Clock,
    /// Where reloads come from, and the routes of the last one (`None`: every slot's ids as
    /// they are, as at start).
    reloads: Option<std::sync::mpsc::Receiver<Reload>>,
    routes: Option<Vec<Option<i64>>>,
    /// Slots below this are the devices started with the gateway (their ids as they are until
    /// a reload routes them); a batch from another before its reload is applied is dropped.
    first_slots: usize,
    /// Tag paths and resolutions the historian could not take at a reload (a full disk): tried again every
    /// second; until then samples are not put in the historian (they would go under old paths).
    rebind: Option<(Vec<String>, Vec<Option<f64>>)>,
    /// Tests only: a sample of this tag makes the collector panic (a bug meeting it).
    #[cfg(test)]
    panic_on: Option<airlock_model::TagId>,
}

/// The longest a busy collector (a batch always waiting) goes between commits; an idle one
/// commits as soon as the channel is empty.
const COMMIT_EVERY_BUSY: Duration = Duration::from_millis(5);

/// How long a collector that has just taken batches sleeps before it looks at the channel
/// again, rather than wait on it: a driver handing a batch to a collector that is not waiting
/// wakes nobody. At a 1 ms poll a batch came about every millisecond, and each hand-over's
/// wake-up (and the driver thread preempting the collector) cost more of the gateway's CPU
/// than the collector's work on the samples. A batch waits at most this much longer; an idle
/// plant pays one timer wake-up after each burst of batches.
const BUSY_HOLDOFF: Duration = Duration::from_millis(2);

/// How often the edge's time-driven steps run (windows closing, stale alarms).
const EDGE_TICK: Duration = Duration::from_millis(100);

impl Collector {
    pub fn new(
        outbox: OutboxWriter,
        historian: HistorianWriter,
        condenser: Condenser,
        latest: Latest,
        health: Arc<CollectorHealth>,
    ) -> Self {
        let problems = Arc::new(Problems::default());
        Self {
            outbox,
            historian,
            condenser,
            records: Vec::new(),
            latest,
            health,
            failing: None,
            problems,
            gateway: None,
            corrupt_seen: (0, 0),
            outbox_full: None,
            clock: Clock::wall(),
            reloads: None,
            routes: None,
            first_slots: usize::MAX,
            rebind: None,
            #[cfg(test)]
            panic_on: None,
        }
    }

    /// Runs on `clock` instead of the wall clock: samples' times (as read by the drivers, on
    /// the wall clock) are moved onto it before anything stores or condenses them, and the
    /// edge's ticks and the store's upkeep read it (a simulated plant only: `clock_speed`).
    pub fn on_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Takes new configs' middles from `reloads` (see [`Reload`]); `devices`: how many device
    /// tasks start with the gateway (slots `0..devices`).
    pub fn reloading(mut self, reloads: std::sync::mpsc::Receiver<Reload>, devices: usize) -> Self {
        self.reloads = Some(reloads);
        self.first_slots = devices;
        self
    }

    /// Takes the gateway's own problems from `board` and sends them upstream as events of
    /// `gateway` (the gateway's asset path: its name).
    pub fn reporting(mut self, board: Arc<Problems>, gateway: AssetPath) -> Self {
        self.problems = board;
        self.gateway = Some(gateway);
        self
    }

    /// Runs the collector on a thread of its own until every sender of `rx` is dropped. It
    /// waits for batches on a small runtime of its own (timers only), so an idle plant costs it
    /// a wake-up per edge tick, not a poll per millisecond.
    /// Supervised: a panic (a bug meeting a sample nobody foresaw) loses only the batch being
    /// handled; it is counted, logged, reported upstream as a `task_restarted` event, and the
    /// collector goes on after a second with its store and edge state as they are.
    pub fn spawn(mut self, mut rx: BatchReceiver) -> std::io::Result<JoinHandle<()>> {
        let waits = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
        std::thread::Builder::new().name("collector".into()).spawn(move || {
            loop {
                let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(&mut rx, &waits)));
                let Err(payload) = turn else { return };
                let message = format!("the collector panicked: {}; it goes on in 1 s", panic_text(payload));
                log::error!("{message}");
                self.health.restarts.fetch_add(1, Relaxed);
                self.problems.report(Problem {
                    time: Timestamp::now(),
                    kind: "task_restarted",
                    severity: Severity::Alarm,
                    state: Transition::Once,
                    message,
                });
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    }

    /// Runs until every device task has dropped its sender, then syncs. Batches that wait are
    /// taken one after another and committed together; when no batch waits it commits, then,
    /// if it has just taken batches, sleeps [`BUSY_HOLDOFF`] and looks again, and otherwise
    /// sleeps until the next batch, the next edge tick, or the moment the outbox or the
    /// historian may sync what it holds unsynced (records go upstream only once synced; what
    /// is not synced waits in the stores' buffers).
    fn run(&mut self, rx: &mut BatchReceiver, waits: &tokio::runtime::Runtime) {
        let mut maintained = Instant::now();
        let mut ticked = Instant::now();
        let mut committed = Instant::now();
        // Whether batches were taken since the collector last waited on the channel.
        let mut busy = false;
        loop {
            if let Some(reload) = self.reloads.as_ref().and_then(|r| r.try_recv().ok()) {
                // What waits in the channel was read under the config before: stored under it
                // first (a device the reload stops sent its last batches there), except the
                // batches of devices only the reload knows, kept for after it.
                // As many as wait now, not more: under load the channel never runs empty.
                let mut after = Vec::new();
                for _ in 0..rx.len() {
                    let Ok(batch) = rx.try_recv() else { break };
                    if self.route(batch.device).is_some() {
                        self.handle(batch);
                    } else {
                        after.push(batch);
                    }
                }
                self.reload(reload);
                for batch in after {
                    self.handle(batch);
                }
            }
            if ticked.elapsed() >= EDGE_TICK {
                ticked = Instant::now();
                self.health.ticks.fetch_add(1, Relaxed);
                let mut records = std::mem::take(&mut self.records);
                self.condenser.on_tick(self.clock.now(), &mut records);
                self.problems_to(&mut records);
                self.queue(&mut records);
                self.records = records;
            }
            let batch = match rx.try_recv() {
                Ok(batch) => Some(batch),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    self.commit();
                    committed = Instant::now();
                    let until_tick = EDGE_TICK.saturating_sub(ticked.elapsed());
                    let sync_due = [self.outbox.sync_due_in(), self.historian.sync_due_in()]
                        .into_iter()
                        .filter_map(|due| due.ok().flatten())
                        .min();
                    // At least a millisecond, so a sync that is due now is retried, not spun on.
                    let wait = sync_due.map_or(until_tick, |d| d.max(Duration::from_millis(1)).min(until_tick));
                    if std::mem::take(&mut busy) {
                        std::thread::sleep(BUSY_HOLDOFF.min(wait));
                        None
                    } else {
                        match waits.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                            Ok(Some(batch)) => Some(batch),
                            Ok(None) => break,
                            Err(_) => None,
                        }
                    }
                }
            };
            if let Some(batch) = batch {
                busy = true;
                self.handle(batch);
                // Batches that keep coming are committed together, but at least this often.
                if committed.elapsed() >= COMMIT_EVERY_BUSY {
                    self.commit();
                    committed = Instant::now();
                }
            }
            if maintained.elapsed() >= MAINTAIN_EVERY {
                maintained = Instant::now();
                if let Some((paths, resolutions)) = self.rebind.take() {
                    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
                    match self.historian.bind_tags_with_resolutions(&refs, &resolutions) {
                        Ok(()) => log::info!("the historian took the new tags; samples go into it again"),
                        Err(_) => self.rebind = Some((paths, resolutions)),
                    }
                }
                let now = self.clock.now();
                let result = self.outbox.maintain(now).and_then(|()| self.historian.maintain(now));
                self.report(result);
                self.report_corruption();
            }
        }
        // The gateway's own problems still on the board go out with the last commit.
        let mut records = std::mem::take(&mut self.records);
        self.problems_to(&mut records);
        self.queue(&mut records);
        self.records = records;
        self.commit();
        let result = self.outbox.sync().map(|_| ()).and_then(|()| self.historian.sync());
        self.report(result);
    }

    /// How much to add to the tag ids of a batch from device slot `device` (`None`: a task
    /// stopped by a reload, or started by a reload not applied yet).
    fn route(&self, device: usize) -> Option<i64> {
        match &self.routes {
            Some(routes) => routes.get(device).copied().flatten(),
            None => (device < self.first_slots).then_some(0),
        }
    }

    /// One batch, routed to its tags, into the stores and the edge.
    fn handle(&mut self, mut batch: SampleBatch) {
        match self.route(batch.device) {
            // A task stopped by a reload applied before its batch came, or one started by a
            // reload not applied yet: what it read goes nowhere.
            None => return,
            Some(0) => {}
            Some(delta) => {
                for s in &mut batch.samples {
                    s.tag = airlock_model::TagId(u32::try_from(i64::from(s.tag.0) + delta).unwrap_or(u32::MAX));
                }
            }
        }
        if !self.clock.is_wall() {
            for s in &mut batch.samples {
                s.gateway_time = self.clock.at(s.gateway_time);
                s.source_time = s.source_time.map(|t| self.clock.at(t));
            }
        }
        self.take(&batch.samples);
    }

    /// Switches to a new config's middle (between two batches): the historian learns the new
    /// tags, the new condenser takes over unchanged devices' edge state, the latest values of
    /// unchanged devices move to their new ids, and the routes apply from the next batch.
    fn reload(&mut self, mut r: Reload) {
        self.commit();
        let paths: Vec<&str> = r.paths.iter().map(String::as_str).collect();
        self.rebind = None;
        if let Err(e) = self.historian.bind_tags_with_resolutions(&paths, &r.resolutions) {
            log::error!(
                "reload: the historian cannot take the new tags ({e}); samples stay out of it until it can (tried every second)"
            );
            self.rebind = Some((r.paths.clone(), r.resolutions.clone()));
        }
        let mut fresh = Vec::new();
        for moved in &r.unchanged {
            if !r.condenser.adopt(&mut self.condenser, moved) {
                fresh.push(moved.device);
            }
        }
        if !fresh.is_empty() {
            log::info!(
                "reload: {} unchanged devices moved to other tag ids; their edge state starts afresh",
                fresh.len()
            );
        }
        self.condenser = r.condenser;
        if let Ok(mut latest) = self.latest.lock() {
            let mut next = vec![None; paths.len()];
            for m in &r.unchanged {
                for i in 0..m.count {
                    let (from, to) = (m.old_first.0 as usize + i, m.first.0 as usize + i);
                    if let (Some(slot), Some(old)) = (next.get_mut(to), latest.get_mut(from)) {
                        *slot = old.take().map(|mut s: Sample| {
                            s.tag = airlock_model::TagId(to as u32);
                            s
                        });
                    }
                }
            }
            *latest = next;
        }
        self.routes = Some(r.routes);
        let _ = r.done.send(Ok(()));
    }

    fn take(&mut self, samples: &[Sample]) {
        #[cfg(test)]
        if let Some(tag) = self.panic_on.filter(|t| samples.iter().any(|s| s.tag == *t)) {
            panic!("a sample of tag {} that nobody foresaw", tag.0);
        }
        if let Ok(mut l) = self.latest.lock() {
            for s in samples {
                if let Some(slot) = l.get_mut(s.tag.0 as usize) {
                    keep_latest(slot, s);
                }
            }
        }
        // After a reload the historian could not follow, nothing goes in under old paths.
        let stored = if self.rebind.is_some() { Ok(()) } else { self.historian.append(samples) };
        if stored.is_ok() && self.rebind.is_none() {
            self.health.samples_stored.fetch_add(samples.len() as u64, Relaxed);
        }
        self.report(stored);
        let mut records = std::mem::take(&mut self.records);
        self.condenser.on_samples(samples, &mut records);
        self.queue(&mut records);
        self.records = records;
    }

    /// Corrupt bytes the store found and skipped since the last look, said upstream (through the
    /// problems board, so they go out as events of the gateway's asset).
    fn report_corruption(&mut self) {
        let stats = self.outbox.stats();
        let historian = self.historian.stats();
        let (reads, cursors) = (stats.corrupt_reads + historian.corrupt_reads, stats.corrupt_cursors);
        let (seen_reads, seen_cursors) = std::mem::replace(&mut self.corrupt_seen, (reads, cursors));
        let say = |message: String| self.say("store_corrupt", message);
        if reads > seen_reads {
            say(format!("store: {} records found corrupt on disk were skipped", reads - seen_reads));
        }
        if cursors > seen_cursors {
            say(format!(
                "outbox: {} sink positions were corrupt on disk: those sinks send again from the oldest record held \
                 (duplicates by id, nothing lost)",
                cursors - seen_cursors
            ));
        }
    }

    /// The gateway's own problems, as events of its asset.
    fn problems_to(&self, records: &mut Vec<Record>) {
        let Some(gateway) = &self.gateway else { return };
        for p in self.problems.take() {
            let event = EventRecord {
                time: self.clock.at(p.time),
                asset: gateway.clone(),
                kind: p.kind.into(),
                severity: p.severity,
                state: p.state,
                message: p.message.into(),
                body: Vec::new(),
            };
            records.push((Class::Event, Upstream::Event(event)));
        }
    }

    /// Puts the edge's records into the outbox, each in its class.
    fn queue(&mut self, records: &mut Vec<Record>) {
        let mut queued = 0;
        let mut result = Ok(());
        for (class, record) in records.drain(..) {
            if result.is_err() {
                continue;
            }
            match self.outbox.append(class, &record) {
                Ok(id) => {
                    queued += 1;
                    if self.outbox_full.is_some_and(|refused| class as usize >= refused as usize) {
                        self.outbox_full = None;
                        log::info!("the outbox takes {} records again", class.name());
                    }
                    if class == Class::Event {
                        let gateway = self.gateway.as_ref().map_or("", |g| g.as_str());
                        if let Some(event) = feed_event(id, &record, gateway) {
                            self.health.events.push(event);
                        }
                    }
                }
                // One record too large for the outbox is refused alone, and said so upstream.
                Err(StoreError::TooLarge { bytes, max }) => {
                    let message = format!(
                        "the outbox refused a {} record of {bytes} bytes ({}): one record may take at most {max} bytes",
                        class.name(),
                        record.topic()
                    );
                    self.say("outbox_refused", message);
                }
                // The outbox holds only records of higher classes (a sink offline through an
                // alarm storm): this one is not kept, counted in the outbox's stats, and said
                // once upstream, not once a record.
                Err(e @ StoreError::OutboxFull { .. }) => {
                    if self.outbox_full.replace(class).is_none() {
                        self.say(
                            "outbox_refused",
                            format!("{e}; records of lower classes are refused until there is room"),
                        );
                    }
                }
                Err(e) => result = Err(e),
            }
        }
        self.health.records_queued.fetch_add(queued, Relaxed);
        self.report(result);
    }

    /// A store's warning of `kind`, said in the log and upstream (through the problems board).
    fn say(&self, kind: &'static str, message: String) {
        log::warn!("{message}");
        self.problems.report(Problem {
            time: Timestamp::now(),
            kind,
            severity: Severity::Warning,
            state: Transition::Once,
            message,
        });
    }

    /// Group commit: the store syncs as its policy says.
    /// Both stores, each whatever the other's result (an outbox that keeps failing must not
    /// keep the historian from syncing).
    fn commit(&mut self) {
        let outbox = self.outbox.commit().map(|_| ());
        let historian = self.historian.commit().map(|_| ());
        self.report(outbox.and(historian));
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use airlock_model::{TagId, Value};
    use airlock_store::{HistorianConfig, HistorianReader, OutboxConfig, OutboxReader, Position};

    use super::*;
    use crate::tags::TagTable;
    use tokio::sync::mpsc;

    /// A collector of `config`'s tags on fresh stores in `dir`: it, the outbox's and the
    /// historian's readers, and its health.
    fn collector_on(
        dir: &Path,
        config: &airlock_config::Config,
    ) -> (Collector, OutboxReader, HistorianReader, Arc<CollectorHealth>) {
        collector_with(dir, config, OutboxConfig::default())
    }

    /// As [`collector_on`], with an outbox of `outbox_config`.
    fn collector_with(
        dir: &Path,
        config: &airlock_config::Config,
        outbox_config: OutboxConfig,
    ) -> (Collector, OutboxReader, HistorianReader, Arc<CollectorHealth>) {
        collector_of(dir, config, outbox_config, HistorianConfig::default())
    }

    /// As [`collector_on`], with stores of these configs.
    fn collector_of(
        dir: &Path,
        config: &airlock_config::Config,
        outbox_config: OutboxConfig,
        historian_config: HistorianConfig,
    ) -> (Collector, OutboxReader, HistorianReader, Arc<CollectorHealth>) {
        let _ = std::fs::remove_dir_all(dir);
        let tags = TagTable::new(config);
        let (outbox, reader) = OutboxWriter::open(&dir.join("outbox"), outbox_config).unwrap();
        let (mut historian, history) = HistorianWriter::open(&dir.join("historian"), historian_config).unwrap();
        let paths: Vec<&str> = tags.iter().map(|t| t.path.as_str()).collect();
        historian.bind_tags_with_resolutions(&paths, &crate::historian_resolutions(config)).unwrap();
        let health = Arc::new(CollectorHealth::default());
        let latest: Latest = Arc::new(Mutex::new(vec![None; tags.len()]));
        let collector =
            Collector::new(outbox, historian, Condenser::new(config, Arc::new(tags)), latest, Arc::clone(&health));
        (collector, reader, history, health)
    }

    /// One device with one u16 tag, `speed`.
    fn one_speed_tag() -> airlock_config::Config {
        let text = "[[device]]\nname = \"a\"\nasset_path = \"acme\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:502\"\n\
                    [[device.tag]]\nname = \"speed\"\naddress = 0\ntype = \"u16\"\nspace = \"holding_register\"\n";
        airlock_config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_latest_sample_is_kept_whole_and_only_its_times_move_while_it_holds_still() {
        let at = |ms: i64| Timestamp::from_millis(1_800_000_000_000 + ms);
        let mut slot = None;
        let first = Sample::good(TagId(3), Value::F64(0.0), at(0));
        keep_latest(&mut slot, &first);
        assert_eq!(slot.as_ref(), Some(&first));
        // The same value again: the kept sample is the new one, times and all.
        let mut again = Sample::good(TagId(3), Value::F64(0.0), at(1));
        again.source_time = Some(at(-5));
        keep_latest(&mut slot, &again);
        assert_eq!(slot.as_ref(), Some(&again));
        // -0.0 equals 0.0 as a number but is another value: it is kept as read.
        let negative = Sample::good(TagId(3), Value::F64(-0.0), at(2));
        keep_latest(&mut slot, &negative);
        assert!(matches!(slot.as_ref().and_then(|s| s.value.clone()), Some(Value::F64(v)) if v.is_sign_negative()));
        // Another type with an equal number, another quality, no value, text, a waveform.
        let nexts = [
            Sample::good(TagId(3), Value::I64(0), at(3)),
            Sample::bad(TagId(3), airlock_model::Reason::Timeout, at(4)),
            Sample::bad(TagId(3), airlock_model::Reason::CommsLost, at(5)),
            Sample::good(TagId(3), Value::Text("ok".into()), at(6)),
            Sample::good(TagId(3), Value::Text("ok".into()), at(7)),
            Sample::good(TagId(3), Value::Waveform(Arc::from([1.0f32, 2.0])), at(8)),
            Sample::good(TagId(3), Value::Waveform(Arc::from([1.0f32, 3.0])), at(9)),
            Sample::good(TagId(3), Value::F64(f64::NAN), at(10)),
            Sample::good(TagId(3), Value::F64(f64::NAN), at(11)),
        ];
        for next in &nexts {
            keep_latest(&mut slot, next);
            let kept = slot.as_ref().unwrap();
            assert_eq!(
                (kept.tag, kept.quality, kept.gateway_time, kept.source_time),
                (next.tag, next.quality, next.gateway_time, next.source_time)
            );
            match (&kept.value, &next.value) {
                (Some(Value::F64(a)), Some(Value::F64(b))) => assert_eq!(a.to_bits(), b.to_bits()),
                (a, b) => assert_eq!(a, b),
            }
        }
    }

    /// A panic while handling one batch loses that batch only: the collector is counted as
    /// restarted, says so upstream (a `task_restarted` event in the outbox), and stores the
    /// batches that come after it.
    #[test]
    fn a_panicking_collector_goes_on_with_the_next_batch_and_says_so_upstream() {
        let dir = std::env::temp_dir().join(format!("airlock-collector-panic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let text = "[gateway]\nname = \"line1\"\n[[device]]\nname = \"press1\"\nasset_path = \"acme/press1\"\nprotocol = \"modbus_tcp\"\n\
                    address = \"127.0.0.1:502\"\n\
                    [[device.tag]]\nname = \"speed\"\naddress = 0\ntype = \"u16\"\nspace = \"holding_register\"\n\
                    [[device.tag]]\nname = \"poison\"\naddress = 1\ntype = \"u16\"\nspace = \"holding_register\"\n";
        let config = airlock_config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
        let (collector, reader, _, health) = collector_on(&dir, &config);
        let mut collector = collector.reporting(Arc::new(Problems::default()), AssetPath::parse("line1").unwrap());
        collector.panic_on = Some(TagId(1));
        let (tx, rx) = mpsc::channel(16);
        let thread = collector.spawn(rx.into()).unwrap();

        let batch = |tag: u32, n: usize| SampleBatch {
            device: 0,
            poll: 0,
            samples: (0..n)
                .map(|i| {
                    Sample::good(TagId(tag), Value::U64(i as u64), Timestamp::from_millis(1_800_000_000_000 + i as i64))
                })
                .collect(),
        };
        tx.try_send(batch(1, 3)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while health.restarts.load(Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the collector did not restart");
            std::thread::sleep(Duration::from_millis(10));
        }
        tx.try_send(batch(0, 5)).unwrap();
        while health.samples_stored.load(Relaxed) < 5 {
            assert!(Instant::now() < deadline, "the batch after the panic was not stored");
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(tx);
        thread.join().expect("the collector's thread ends cleanly when its senders are gone");

        assert_eq!(health.restarts.load(Relaxed), 1);
        assert_eq!(health.samples_stored.load(Relaxed), 5, "the poisoned batch is lost, nothing else");
        let held = reader.read(&Position::default(), usize::MAX).unwrap();
        let restarted: Vec<String> = held
            .iter()
            .filter_map(|r| match &r.record {
                Upstream::Event(e) if e.kind.as_ref() == "task_restarted" => Some(e.message.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(restarted.len(), 1, "{held:#?}");
        assert!(restarted[0].contains("the collector panicked: a sample of tag 1"), "{restarted:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A tag's historian resolution comes with a reload: samples before it are stored rounded
    /// to the old one, after it to the new one, and with none as read.
    #[test]
    fn a_reload_brings_the_historian_resolution_of_its_tags() {
        let dir = std::env::temp_dir().join(format!("airlock-collector-resolution-{}", std::process::id()));
        let device = |resolution: &str| {
            format!(
                "[[device]]\nname = \"a\"\nasset_path = \"acme\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:502\"\n\
                 [[device.tag]]\nname = \"power\"\naddress = 0\ntype = \"f32\"\nspace = \"input_register\"\n{resolution}"
            )
        };
        let parse = |text: &str| airlock_config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
        let configs = [
            parse(&device("historian_resolution = 0.5\n")),
            parse(&device("historian_resolution = 0.1\n")),
            parse(&device("")),
        ];
        let (collector, _, history, _) = collector_on(&dir, &configs[0]);
        let (reloads, reload_rx) = std::sync::mpsc::channel();
        let collector = collector.reloading(reload_rx, 1);
        let (tx, rx) = mpsc::channel(16);
        let thread = collector.spawn(rx.into()).unwrap();
        let at = |i: i64| Timestamp::from_millis(1_800_000_000_000 + i);
        for (i, config) in configs.iter().enumerate() {
            if i > 0 {
                let tags = Arc::new(TagTable::new(config));
                let (done, done_rx) = std::sync::mpsc::channel();
                let reload = Reload {
                    condenser: Condenser::new(config, Arc::clone(&tags)),
                    paths: tags.iter().map(|t| t.path.to_string()).collect(),
                    resolutions: crate::historian_resolutions(config),
                    unchanged: vec![Moved { old_first: TagId(0), first: TagId(0), count: 1, old_device: 0, device: 0 }],
                    routes: vec![Some(0)],
                    done,
                };
                reloads.send(reload).unwrap();
                assert_eq!(done_rx.recv_timeout(Duration::from_secs(10)), Ok(Ok(())));
            }
            let sample = Sample::good(TagId(0), Value::F64(1.37), at(i as i64));
            tx.blocking_send(SampleBatch { device: 0, poll: i as u64, samples: vec![sample] }).unwrap();
        }
        drop(tx);
        thread.join().unwrap();
        let stored = history.raw("acme/a/power", at(0), at(3)).unwrap();
        let values: Vec<Option<f64>> = stored.iter().map(|s| s.value).collect();
        assert_eq!(values, [Some(1.5), Some(1.4000000000000001), Some(1.37)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A reload that stops a device finds that device's last batches still waiting in the
    /// channel (the collector was behind): they are stored under the config they were read
    /// with, and only then is the reload applied. Applied first, it routed them nowhere.
    #[test]
    fn batches_waiting_when_a_reload_stops_their_device_are_stored_first() {
        let dir = std::env::temp_dir().join(format!("airlock-collector-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let device = |name: &str| {
            format!(
                "[[device]]\nname = \"{name}\"\nasset_path = \"acme\"\nprotocol = \"modbus_tcp\"\naddress = \"127.0.0.1:502\"\n\
                 [[device.tag]]\nname = \"speed\"\naddress = 0\ntype = \"u16\"\nspace = \"holding_register\"\n"
            )
        };
        let parse = |text: &str| airlock_config::parse(text, Path::new("t.toml")).unwrap_or_else(|e| panic!("{e}"));
        let (before, after) = (parse(&(device("a") + &device("b"))), parse(&device("a")));
        let (collector, _, history, health) = collector_on(&dir, &before);
        let (reloads, reload_rx) = std::sync::mpsc::channel();
        let collector = collector.reloading(reload_rx, 2);
        let (tx, rx) = mpsc::channel(16);
        // Device b's last batch waits in the channel; then the reload that stops b comes.
        let samples = (0..5)
            .map(|i| Sample::good(TagId(1), Value::U64(i), Timestamp::from_millis(1_800_000_000_000 + i as i64)))
            .collect();
        tx.try_send(SampleBatch { device: 1, poll: 0, samples }).unwrap();
        let new_tags = Arc::new(TagTable::new(&after));
        let (done, _done_rx) = std::sync::mpsc::channel();
        reloads
            .send(Reload {
                condenser: Condenser::new(&after, Arc::clone(&new_tags)),
                paths: new_tags.iter().map(|t| t.path.to_string()).collect(),
                resolutions: crate::historian_resolutions(&after),
                unchanged: vec![Moved { old_first: TagId(0), first: TagId(0), count: 1, old_device: 0, device: 0 }],
                routes: vec![Some(0), None],
                done,
            })
            .unwrap();
        let thread = collector.spawn(rx.into()).unwrap();
        drop(tx);
        thread.join().unwrap();
        assert_eq!(health.samples_stored.load(Relaxed), 5, "device b's last batch was dropped");
        let b = history.raw("acme/b/speed", Timestamp(0), Timestamp::from_millis(i64::MAX / 2)).unwrap();
        assert_eq!(b.len(), 5);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A reload under load: a device keeps the channel full, so it never runs empty. The
    /// collector stores what waited when the reload came, applies it, and answers, within a
    /// bounded time. (Draining until the channel was empty, it never applied the reload.)
    #[test]
    fn a_reload_is_applied_while_a_device_keeps_the_channel_full() {
        let dir = std::env::temp_dir().join(format!("airlock-collector-reload-load-{}", std::process::id()));
        let config = one_speed_tag();
        let (collector, _, _, health) = collector_on(&dir, &config);
        let (reloads, reload_rx) = std::sync::mpsc::channel();
        let collector = collector.reloading(reload_rx, 1);
        let (tx, rx) = mpsc::channel(16);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let device = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let started = Instant::now();
                // Bounded in count and time whatever the collector does. A batch of 500 samples
                // is made faster than it is stored: the channel stays full.
                for i in 0..200_000u64 {
                    if stop.load(Relaxed) || started.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    let samples = (0..500)
                        .map(|k| {
                            let at = Timestamp::from_millis(1_800_000_000_000 + (i * 500 + k) as i64);
                            Sample::good(TagId(0), Value::U64(k), at)
                        })
                        .collect();
                    if tx.blocking_send(SampleBatch { device: 0, poll: i, samples }).is_err() {
                        break;
                    }
                }
            })
        };
        let thread = collector.spawn(rx.into()).unwrap();
        let loaded = Instant::now();
        while health.samples_stored.load(Relaxed) < 50_000 && loaded.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let tags = Arc::new(TagTable::new(&config));
        let (done, done_rx) = std::sync::mpsc::channel();
        reloads
            .send(Reload {
                condenser: Condenser::new(&config, Arc::clone(&tags)),
                paths: tags.iter().map(|t| t.path.to_string()).collect(),
                resolutions: crate::historian_resolutions(&config),
                unchanged: vec![Moved { old_first: TagId(0), first: TagId(0), count: 1, old_device: 0, device: 0 }],
                routes: vec![Some(0)],
                done,
            })
            .unwrap();
        let applied = done_rx.recv_timeout(Duration::from_secs(10));
        let stored_then = health.samples_stored.load(Relaxed);
        stop.store(true, Relaxed);
        device.join().unwrap();
        thread.join().unwrap();
        assert_eq!(applied, Ok(Ok(())), "the reload was not applied under load");
        assert!(stored_then >= 50_000, "{stored_then} samples stored: the device did not keep the collector busy");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A disk slow to sync (both stores' sync jobs held, as ext4 holds an `fdatasync` while it
    /// writes back other files) does not stop the collector: it goes on taking batches from a
    /// small channel the device keeps full, many times what the channel holds, and nothing of
    /// it is visible upstream before it is synced. Once the syncs go on, every sample is in the
    /// historian and the outbox's records reach the sinks.
    #[test]
    fn the_collector_drains_the_channel_while_the_stores_syncs_are_held() {
        let dir = std::env::temp_dir().join(format!("airlock-collector-held-sync-{}", std::process::id()));
        let config = one_speed_tag();
        let every_commit = airlock_store::FsyncPolicy::Interval(Duration::ZERO);
        let (collector, reader, history, health) = collector_of(
            &dir,
            &config,
            OutboxConfig { fsync: every_commit, sync_thread: true, ..OutboxConfig::default() },
            HistorianConfig { fsync: every_commit, sync_thread: true, ..HistorianConfig::default() },
        );
        let held = [collector.outbox.sync_hooks().unwrap(), collector.historian.sync_hooks().unwrap()];
        let gates = held.iter().map(|hooks| hooks.gate.lock().unwrap()).collect::<Vec<_>>();
        // 400 batches of 250 samples through a channel of 4 batches: 100 times what it holds.
        const BATCHES: u64 = 400;
        const SAMPLES: u64 = 250;
        let (tx, rx) = mpsc::channel(4);
        let thread = collector.spawn(rx.into()).unwrap();
        let (sent_tx, sent) = std::sync::mpsc::channel();
        let device = std::thread::spawn(move || {
            let started = Instant::now();
            for i in 0..BATCHES {
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                let samples = (0..SAMPLES)
                    .map(|k| {
                        let at = Timestamp::from_millis(1_800_000_000_000 + (i * SAMPLES + k) as i64);
                        Sample::good(TagId(0), Value::U64(k % 7), at)
                    })
                    .collect();
                if tx.blocking_send(SampleBatch { device: 0, poll: i, samples }).is_err() {
                    break;
                }
            }
            let _ = sent_tx.send(started.elapsed());
            // The channel closes (the collector ends) only when the test says so.
            std::thread::park_timeout(Duration::from_secs(120));
            drop(tx);
        });
        let took = sent.recv_timeout(Duration::from_secs(30)).expect("the device's sends ended");
        let stored = Instant::now();
        while health.samples_stored.load(Relaxed) < BATCHES * SAMPLES && stored.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            health.samples_stored.load(Relaxed),
            BATCHES * SAMPLES,
            "the collector took every batch while the syncs were held (the device's sends took {took:?})"
        );
        assert_eq!(reader.end().unwrap(), Position([0; 4]), "nothing reaches the sinks before it is synced");
        // The disk catches up.
        drop(gates);
        let synced = Instant::now();
        while reader.end().unwrap() == Position([0; 4]) && synced.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_ne!(reader.end().unwrap(), Position([0; 4]), "the outbox's records reach the sinks once synced");
        device.thread().unpark();
        device.join().unwrap();
        thread.join().unwrap();
        let from = Timestamp::from_millis(1_800_000_000_000);
        let path = TagTable::new(&config).iter().next().unwrap().path.to_string();
        let samples = history.raw(&path, from, Timestamp::from_millis(1_800_000_000_000 + 200_000)).unwrap();
        assert_eq!(samples.len() as u64, BATCHES * SAMPLES, "every sample is in the historian");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// An outbox that holds only events (a sink offline through an alarm storm) refuses raw
    /// records: that is said upstream once, not once a record or once a batch, until a raw
    /// record is taken again; then a new refusal is said again.
    #[test]
    fn the_outbox_refusing_records_is_said_once_until_it_takes_them_again() {
        let dir = std::env::temp_dir().join(format!("airlock-collector-refused-{}", std::process::id()));
        let config = one_speed_tag();
        let bytes_max = 64 << 10;
        let outbox = OutboxConfig { bytes_max, sinks: vec!["slow".into()], ..OutboxConfig::default() };
        let (mut collector, reader, _, _) = collector_with(&dir, &config, outbox);
        let record = |i: usize| {
            Upstream::Event(EventRecord {
                time: Timestamp::from_millis(1_800_000_000_000 + i as i64),
                asset: AssetPath::parse("acme/a").unwrap(),
                kind: "alarm".into(),
                severity: Severity::Warning,
                state: Transition::Once,
                message: format!("alarm {i}: {}", "x".repeat(300)).into(),
                body: Vec::new(),
            })
        };
        let fill_with_events = |collector: &mut Collector| {
            let mut i = 0;
            while collector.outbox.stats().bytes + 700 < bytes_max {
                collector.outbox.append(Class::Event, &record(i)).unwrap();
                i += 1;
            }
            collector.outbox.commit().unwrap();
        };
        let refusals =
            |collector: &Collector| collector.problems.take().iter().filter(|p| p.kind == "outbox_refused").count();
        fill_with_events(&mut collector);
        for round in 0..5 {
            let mut raw: Vec<Record> = (0..20).map(|i| (Class::Raw, record(i))).collect();
            collector.queue(&mut raw);
            assert_eq!(refusals(&collector), usize::from(round == 0), "round {round}");
        }
        // The first few fit in what room was left; every later one was refused.
        let refused = collector.outbox.stats().refused_full[Class::Raw as usize];
        assert!((90..=100).contains(&refused), "{refused} refused");
        // An event is still taken (pushing out the oldest), and ends nothing.
        collector.queue(&mut vec![(Class::Event, record(0))]);
        assert_eq!(refusals(&collector), 0);
        // The sink takes everything; the outbox has room; a raw record is taken again.
        collector.outbox.sync().unwrap();
        let held = reader.read(&Position::default(), usize::MAX).unwrap();
        reader.ack("slow", held.last().unwrap().id).unwrap();
        collector.outbox.maintain(Timestamp::now()).unwrap();
        collector.queue(&mut vec![(Class::Raw, record(0))]);
        assert_eq!(refusals(&collector), 0);
        assert_eq!(collector.outbox.stats().refused_full[Class::Raw as usize], refused, "taken");
        // Full of events again: said again, once.
        fill_with_events(&mut collector);
        for _ in 0..3 {
            collector.queue(&mut (0..20).map(|i| (Class::Raw, record(i))).collect());
        }
        assert_eq!(refusals(&collector), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
