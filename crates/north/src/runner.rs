//! The one runner every sink runs on: read → send → acknowledge.
//!
//! A sink runs on its own thread with its own single-threaded async runtime, so a slow or
//! blocking receiver holds up nobody else. The runner reads records after the sink's cursor,
//! hands them to the sink in order ([`Sink::send`]) within the sink's window and rate cap, and
//! moves the cursor only over records the receiver has taken: at once for a sink that delivers
//! synchronously (a file, an HTTP POST), or as acknowledgements come back for one that
//! pipelines (MQTT PUBACKs, [`Sink::acknowledged`]). The cursor never passes a record still in
//! flight. On any failure (the receiver, or reading the outbox) the sink's session is dropped
//! and, after the model's backoff, a new one resends everything unacknowledged, with the same
//! message ids. With live-first replay, new records go on a lane of their own ahead of the
//! paced backlog.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_config::Replay;
use airlock_model::pace::RateCap;
use airlock_model::panic_text;
use airlock_store::{OutboxReader, OutboxRecord, Position, RecordId};
use tokio::sync::Notify;

use crate::{Sent, Sink, SinkError, SinkHealth, last_per_class};

/// The longest the runner waits when nothing can be sent (it is woken by new records and
/// acknowledgements); this bounds how late it sees a stop or a due birth.
const IDLE: Duration = Duration::from_millis(100);
/// At a stop, how long the sink is given to deliver what it has read.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// At a stop, how long a sink that has to open a new session is given for it.
const LAST_TRY_OPEN: Duration = Duration::from_secs(2);
/// A session that lasted this long was healthy: the next failure starts the backoff afresh.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Runs `sink` on its own thread until `stop` is set; then it delivers what is left (one try
/// if the sink is failing), says goodbye ([`Sink::close`]) and persists its cursor.
pub fn spawn<S: Sink + 'static>(
    sink: S,
    reader: OutboxReader,
    stop: Arc<AtomicBool>,
    health: Arc<SinkHealth>,
) -> std::io::Result<JoinHandle<()>> {
    let mut sink = sink;
    sink.ledger(Arc::clone(&health.ledger));
    let new_records = Arc::new(Notify::new());
    let waker = Arc::clone(&new_records);
    reader.on_new_records(move || waker.notify_one()).map_err(std::io::Error::other)?;
    let name = format!("sink-{}", sink.name());
    std::thread::Builder::new().name(name).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => return log::error!("sink {}: start its runtime: {e}", sink.name()),
        };
        let mut runner = Runner { sink, reader, stop, health, new_records, failing: None, stop_seen: None };
        // Supervised: a panic in the sink (a bug meeting an answer nobody foresaw) ends only
        // this turn; the runner starts again after a backoff, from the outbox cursor.
        let mut backoff = crate::sink_backoff(runner.sink.name());
        loop {
            let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(runner.run())));
            let Err(payload) = turn else { break };
            let delay = backoff.next_delay();
            let why =
                format!("its thread panicked: {}; restarted in {:.1} s", panic_text(payload), delay.as_secs_f64());
            log::error!("sink {}: {why}", runner.sink.name());
            runner.health.restarts.fetch_add(1, Relaxed);
            runner.health.raise(runner.sink.name(), &why);
            runner.failing = Some(why);
            let until = Instant::now() + delay;
            while Instant::now() < until && !runner.stop.load(Relaxed) {
                std::thread::sleep(IDLE);
            }
            if runner.stop.load(Relaxed) {
                break;
            }
        }
        if let Err(e) = runner.reader.persist_cursors() {
            log::error!("sink {}: save its position: {e}", runner.sink.name());
        }
    })
}

struct Runner<S> {
    sink: S,
    reader: OutboxReader,
    stop: Arc<AtomicBool>,
    health: Arc<SinkHealth>,
    new_records: Arc<Notify>,
    /// Why the last session failed, while nothing has been delivered since.
    failing: Option<String>,
    /// When this runner first saw the stop.
    stop_seen: Option<Instant>,
}

/// How a session ended.
enum Ended {
    Stopped,
    Failed(SinkError),
    /// An operator asked to send again from an earlier record: a new session at once.
    Rewound,
}

/// How often the runner looks for an operator's request to send again.
const REWIND_CHECK: Duration = Duration::from_secs(1);

impl<S: Sink> Runner<S> {
    async fn run(&mut self) {
        let mut backoff = crate::sink_backoff(self.sink.name());
        loop {
            let started = Instant::now();
            match self.session().await {
                Ended::Stopped => return,
                Ended::Rewound => continue,
                Ended::Failed(e) => {
                    self.health.failures.fetch_add(1, Relaxed);
                    let e = e.to_string();
                    if self.failing.as_deref() != Some(e.as_str()) {
                        log::warn!(
                            "sink {}: {e}; the records wait in the outbox, retrying with backoff",
                            self.sink.name()
                        );
                        self.health.raise(self.sink.name(), &e);
                        self.failing = Some(e);
                    }
                }
            }
            if self.stop.load(Relaxed) {
                return;
            }
            if started.elapsed() > HEALTHY_SESSION {
                backoff.reset();
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = stopped(&self.stop) => {} // one last try, then stop
            }
        }
    }

    /// One session: open, then send and acknowledge until a failure or the stop.
    async fn session(&mut self) -> Ended {
        let opened = if self.stop.load(Relaxed) {
            match tokio::time::timeout(LAST_TRY_OPEN, self.sink.open()).await {
                Ok(r) => r,
                Err(_) => return Ended::Stopped,
            }
        } else {
            tokio::select! {
                r = self.sink.open() => r,
                () = stopped(&self.stop) => return Ended::Stopped,
            }
        };
        if let Err(e) = opened {
            return Ended::Failed(e);
        }
        let limits = self.sink.limits();
        if let Err(e) = self.reader.take_rewind(self.sink.name()) {
            return Ended::Failed(e.into());
        }
        let mut rewind_checked = Instant::now();
        let mut s = match Session::new(&self.reader, self.sink.name(), &limits) {
            Ok(s) => s,
            Err(e) => return Ended::Failed(e.into()),
        };
        let mut pace = limits.rate_max_per_s.map(RateCap::new);
        let mut sending = Vec::with_capacity(limits.batch_max.min(1024));
        loop {
            let stopping = self.stop.load(Relaxed);
            // Send what the window and the paces allow: the live lane first.
            if stopping {
                self.stop_seen.get_or_insert_with(Instant::now);
            }
            while s.in_flight() < limits.window {
                if self.stop_seen.is_some_and(|t| t.elapsed() > STOP_GRACE) {
                    break;
                }
                let now = Instant::now();
                let room = limits.window - s.in_flight();
                let Some((lane, n)) = (match s.next_lane(&self.reader, room.min(limits.batch_max), pace.as_mut(), now) {
                    Ok(next) => next,
                    Err(e) => return Ended::Failed(e.into()),
                }) else {
                    break;
                };
                sending.clear();
                sending.extend(s.lanes[lane].batch.drain(..n));
                let sent = match self.sink.send(&sending).await {
                    Ok(sent) => sent,
                    Err(e) => return Ended::Failed(e),
                };
                let l = &mut s.lanes[lane];
                for r in &sending {
                    l.read.advance(r.id);
                    l.window.push_back((r.id, false));
                }
                if sent == Sent::Delivered {
                    let ids: Vec<RecordId> = sending.iter().map(|r| r.id).collect();
                    if let Err(e) = self.acknowledged(&mut s, &ids) {
                        return Ended::Failed(e);
                    }
                }
            }
            if let Err(e) = self.sink.tick().await {
                return Ended::Failed(e);
            }
            if rewind_checked.elapsed() >= REWIND_CHECK {
                rewind_checked = Instant::now();
                match self.reader.take_rewind(self.sink.name()) {
                    Ok(Some(_)) => return Ended::Rewound,
                    Ok(None) => {}
                    Err(e) => return Ended::Failed(e.into()),
                }
            }
            // A backlog lane read to its end retires here too, not only on an acknowledgement.
            if let Err(e) = self.acknowledged(&mut s, &[]) {
                return Ended::Failed(e);
            }
            if stopping && s.drained() {
                self.sink.close().await;
                return Ended::Stopped;
            }
            // Stopping is bounded: what is not delivered by then waits in the outbox.
            if self.stop_seen.is_some_and(|t| t.elapsed() > STOP_GRACE) {
                log::warn!("sink {}: stopping with records not delivered; they wait in the outbox", self.sink.name());
                return Ended::Stopped;
            }
            // Nothing more can go now: wait for new records, an acknowledgement, the next slot
            // of a rate cap, or IDLE at most.
            let now = Instant::now();
            let wait =
                s.next_slot(pace.as_ref(), now).map_or(IDLE, |at| (at - now).clamp(Duration::from_millis(1), IDLE));
            tokio::select! {
                () = self.new_records.notified() => {}
                acked = self.sink.acknowledged() => match acked {
                    Ok(ids) => {
                        if let Err(e) = self.acknowledged(&mut s, &ids) {
                            return Ended::Failed(e);
                        }
                    }
                    Err(e) => return Ended::Failed(e),
                },
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Marks `ids` delivered. The outbox cursor moves over every delivered record at the front
    /// of the first lane; a live lane's records are acknowledged once the backlog before them is.
    fn acknowledged(&mut self, s: &mut Session, ids: &[RecordId]) -> Result<(), SinkError> {
        if !ids.is_empty() && self.failing.take().is_some() {
            log::info!("sink {}: delivering again", self.sink.name());
            self.health.clear(self.sink.name());
        }
        for &id in ids {
            for lane in &mut s.lanes {
                if let Some(slot) = lane.window.iter_mut().find(|(w, done)| *w == id && !*done) {
                    slot.1 = true;
                    self.health.delivered.fetch_add(1, Relaxed);
                    self.health.ledger.delivered(id);
                    break;
                }
            }
        }
        loop {
            let first = &mut s.lanes[0];
            let mut done: Vec<RecordId> = Vec::new();
            while let Some((front, true)) = first.window.front().copied() {
                first.window.pop_front();
                done.push(front);
            }
            for id in last_per_class(done) {
                self.reader.ack(self.sink.name(), id)?;
            }
            let backlog_done = first
                .until
                .is_some_and(|until| first.window.is_empty() && first.batch.is_empty() && first.read_reached(&until));
            if !(backlog_done && s.lanes.len() > 1) {
                return Ok(());
            }
            // The backlog is through: the live lane takes over as the first lane.
            s.lanes.remove(0);
        }
    }
}

/// Resolves once `stop` is set (looked at every IDLE).
async fn stopped(stop: &AtomicBool) {
    while !stop.load(Relaxed) {
        tokio::time::sleep(IDLE).await;
    }
}

/// Records read in order from the outbox, sent, and acknowledged in that order.
struct Lane {
    /// Read from the outbox up to here (acknowledged or in flight).
    read: Position,
    /// The backlog lane ends here (the outbox's end when the session began).
    until: Option<Position>,
    /// The backlog lane's own pace (live-first replay).
    pace: Option<RateCap>,
    /// Read but not yet handed to the sink.
    batch: VecDeque<OutboxRecord>,
    /// Records in flight from this lane, in send order, and whether acknowledged.
    window: VecDeque<(RecordId, bool)>,
    /// A read up to `until` found nothing more (records dropped meanwhile leave holes).
    exhausted: bool,
}

impl Lane {
    fn new(read: Position, until: Option<Position>, pace: Option<RateCap>) -> Self {
        Self { read, until, pace, batch: VecDeque::new(), window: VecDeque::new(), exhausted: false }
    }

    /// Whether every record up to `until` has been read (records dropped meanwhile count).
    fn read_reached(&self, until: &Position) -> bool {
        (0..4).all(|c| self.read.0[c] >= until.0[c]) || self.exhausted
    }
}

/// What one session has read and in flight.
struct Session {
    /// One lane, or (live-first replay with a backlog) the backlog and the live lane.
    lanes: Vec<Lane>,
    batch_max: usize,
}

impl Session {
    /// A session's lanes from the sink's acknowledged position: one in outbox order, or
    /// (live-first, with a backlog) the backlog up to the outbox's current end plus a live lane.
    fn new(reader: &OutboxReader, sink: &str, limits: &crate::Limits) -> Result<Self, airlock_store::StoreError> {
        let acked = reader.position(sink)?;
        let mut lanes = Vec::new();
        if let Replay::LiveFirst { rate_max_per_s } = limits.replay {
            let end = reader.end()?;
            if end != acked {
                lanes.push(Lane::new(acked, Some(end), Some(RateCap::new(rate_max_per_s))));
                lanes.push(Lane::new(end, None, None));
                return Ok(Self { lanes, batch_max: limits.batch_max });
            }
        }
        lanes.push(Lane::new(acked, None, None));
        Ok(Self { lanes, batch_max: limits.batch_max })
    }

    /// Records sent and not yet acknowledged by the receiver. (A live lane's acknowledged
    /// records wait in its window for the backlog, without counting: counting them stalled a
    /// replay for good once more live records than the window had come.)
    fn in_flight(&self) -> usize {
        self.lanes.iter().map(|l| l.window.iter().filter(|(_, done)| !done).count()).sum()
    }

    /// Nothing read but unsent, nothing sent but unacknowledged.
    fn drained(&self) -> bool {
        self.lanes.iter().all(|l| l.batch.is_empty() && l.window.iter().all(|(_, done)| *done))
    }

    /// The lane whose records may go now (the live lane before the backlog) and how many of
    /// them, at most `max`, reading from the outbox when a lane has nothing read. The paces
    /// (the sink's and the lane's) are booked for each record counted.
    fn next_lane(
        &mut self,
        reader: &OutboxReader,
        max: usize,
        mut pace: Option<&mut RateCap>,
        now: Instant,
    ) -> Result<Option<(usize, usize)>, airlock_store::StoreError> {
        if max == 0 || pace.as_ref().is_some_and(|p| p.ready_at(now) > now) {
            return Ok(None);
        }
        for i in (0..self.lanes.len()).rev() {
            let lane = &mut self.lanes[i];
            if lane.pace.as_ref().is_some_and(|p| p.ready_at(now) > now) {
                continue;
            }
            if lane.batch.is_empty() {
                let through = lane.until.unwrap_or(Position([u64::MAX; 4]));
                let batch = reader.read_through(&lane.read, &through, self.batch_max)?;
                lane.exhausted = lane.until.is_some() && batch.is_empty();
                lane.batch = batch.into();
            }
            let mut n = 0;
            while n < max.min(lane.batch.len()) {
                let ready = |p: &Option<&mut RateCap>| p.as_ref().is_none_or(|p| p.ready_at(now) <= now);
                if !ready(&pace) || lane.pace.as_ref().is_some_and(|p| p.ready_at(now) > now) {
                    break;
                }
                if let Some(p) = pace.as_mut() {
                    p.reserve(now);
                }
                if let Some(p) = lane.pace.as_mut() {
                    p.reserve(now);
                }
                n += 1;
            }
            if n > 0 {
                return Ok(Some((i, n)));
            }
        }
        Ok(None)
    }

    /// The earliest rate-cap slot still ahead (the sink's or a lane's), if any: something may be
    /// waiting for it. `None`: nothing is held back by a rate cap.
    fn next_slot(&self, pace: Option<&RateCap>, now: Instant) -> Option<Instant> {
        let lanes = self.lanes.iter().filter_map(|l| l.pace.as_ref());
        pace.into_iter().chain(lanes).map(|p| p.ready_at(now)).filter(|at| *at > now).min()
    }
}
