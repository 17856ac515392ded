//! The MQTT sink: the outbox published as a Unified Namespace in JSON, at least once.
//!
//! - **Topics**: `topic_prefix` + the record's asset path (`acme/dortmund/.../press1/speed`);
//!   airlock's own events under `topic_prefix` + `_airlock/events/<kind>`; the sink's status,
//!   retained, at `topic_prefix` + `_airlock/<gateway>/status`: `online` once connected,
//!   `offline` on a clean stop, and `offline` as the last will when the connection dies.
//! - **Payload**: the record's JSON with its message id first (`wire_json`).
//! - **Acknowledgement**: with QoS 1 a record is acknowledged in the outbox only when the
//!   broker's PUBACK for it has come back. Publishes are matched to their packet ids in the order
//!   rumqttc sends them; the outbox cursor moves over the longest run of acknowledged records
//!   from the oldest unacknowledged one, so it never passes a record still in flight. At most
//!   `inflight_max` records are unacknowledged at a time. With QoS 0 a record counts as
//!   delivered once written to the connection.
//! - **Reconnect**: when the connection fails, the client and its state are dropped; after a
//!   backoff (the model's `Backoff`: 100 ms doubling to 30 s, with jitter) a new connection resends everything unacknowledged, from
//!   the outbox, with the same message ids.
//! - **One way**: the client never subscribes to anything, so nothing can come back down
//!   through it; packets the broker sends are only ever read for acknowledgements.
//! - **Pace**: at most `rate_max_per_s` messages per second, so a backlog after an outage does
//!   not choke the IT network.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_config::{MqttSink, Replay, Secret};
use airlock_model::Timestamp;
use airlock_model::pace::RateCap;
use airlock_store::{OutboxReader, OutboxRecord, Position, RecordId};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::mpsc;

use crate::sparkplug::{self, EdgeNode};
use crate::{SinkHealth, last_per_class, message_id, wire_json};

/// Events the connection driver hands to the sink loop, at most this many waiting.
const EVENTS_WAITING_MAX: usize = 1024;
/// Records read from the outbox at a time.
const READ_BATCH: usize = 256;
/// The longest an idle sink sleeps before it looks again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Starts the MQTT sink `name` on its own thread.
pub fn spawn(
    name: &str,
    gateway: &str,
    config: &MqttSink,
    reader: OutboxReader,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(JoinHandle<()>, Arc<SinkHealth>)> {
    let health = Arc::new(SinkHealth::default());
    let profile = match &config.sparkplug {
        None => Profile::Uns,
        Some(sp) => Profile::Sparkplug {
            node: Box::new(EdgeNode::new(&sp.group_id, sp.edge_node_id.as_deref().unwrap_or(gateway))),
            birth_every: sp.birth_interval,
            births_at: Instant::now(),
            death: None,
        },
    };
    // Woken when records become visible, so that an idle sink sleeps instead of polling.
    let new_records = Arc::new(tokio::sync::Notify::new());
    let waker = Arc::clone(&new_records);
    reader.on_new_records(move || waker.notify_one()).map_err(std::io::Error::other)?;
    let sink = MqttSinkTask {
        name: name.to_owned(),
        gateway: gateway.to_owned(),
        config: config.clone(),
        reader,
        stop,
        health: Arc::clone(&health),
        profile,
        new_records,
    };
    let handle = std::thread::Builder::new().name(format!("sink-{name}")).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => return log::error!("sink {}: start its runtime: {e}", sink.name),
        };
        runtime.block_on(sink.run());
    })?;
    Ok((handle, health))
}

struct MqttSinkTask {
    name: String,
    gateway: String,
    config: MqttSink,
    reader: OutboxReader,
    stop: Arc<AtomicBool>,
    health: Arc<SinkHealth>,
    profile: Profile,
    new_records: Arc<tokio::sync::Notify>,
}

/// What the messages look like: the Unified Namespace in JSON, or Sparkplug B.
enum Profile {
    Uns,
    Sparkplug {
        node: Box<EdgeNode>,
        birth_every: Duration,
        births_at: Instant,
        /// This connection's NDEATH (its last will), sent too at a clean stop.
        death: Option<sparkplug::Message>,
    },
}

/// How a connection ended.
enum Ended {
    Stopped,
    Failed(String),
}

impl MqttSinkTask {
    async fn run(mut self) {
        let password = match read_secret(self.config.password.as_ref()) {
            Ok(p) => p,
            Err(e) => return log::error!("sink {}: {e}; the sink does not start", self.name),
        };
        let tls = match self.config.tls.then(|| tls_config(&self.config)).transpose() {
            Ok(t) => t.map(Arc::new),
            Err(e) => return log::error!("sink {}: {e}; the sink does not start", self.name),
        };
        let mut backoff = crate::sink_backoff(&self.name);
        let mut reported: Option<String> = None;
        loop {
            let started = Instant::now();
            match self.connection(password.as_deref(), tls.clone()).await {
                Ended::Stopped => break,
                Ended::Failed(e) => {
                    if reported.as_deref() != Some(e.as_str()) {
                        log::warn!("sink {}: {e}; records wait in the outbox, reconnecting with backoff", self.name);
                        reported = Some(e);
                    }
                    self.health.failures.fetch_add(1, Relaxed);
                }
            }
            if self.stop.load(Relaxed) {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                backoff.reset();
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
        if let Err(e) = self.reader.persist_cursors() {
            log::error!("sink {}: save its position: {e}", self.name);
        }
    }

    fn status_topic(&self) -> String {
        format!("{}_airlock/{}/status", self.config.topic_prefix, self.gateway)
    }

    fn options(&mut self, password: Option<&str>, tls: Option<Arc<rustls::ClientConfig>>) -> MqttOptions {
        let will = self.last_will();
        let c = &self.config;
        let mut o = MqttOptions::new(&c.client_id, &c.host, c.port);
        o.set_keep_alive(c.keep_alive);
        o.set_clean_session(true);
        // Our own window bounds what is in flight; rumqttc's is only a backstop above it
        // (births and status messages are not counted in our window).
        o.set_inflight(c.inflight_max.saturating_add(1024));
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_last_will(will);
        if let Some(tls) = tls {
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        if let (Some(user), Some(pass)) = (&c.username, password) {
            o.set_credentials(user, pass);
        } else if let Some(user) = &c.username {
            o.set_credentials(user, "");
        }
        o
    }

    /// The last will of the next connection: the offline status, or the Sparkplug NDEATH.
    fn last_will(&mut self) -> LastWill {
        match &mut self.profile {
            Profile::Uns => LastWill::new(self.status_topic(), "offline", QoS::AtLeastOnce, true),
            Profile::Sparkplug { node, death, .. } => {
                let d = node.next_death();
                let will = LastWill::new(&d.topic, d.payload.clone(), QoS::AtLeastOnce, false);
                *death = Some(d);
                will
            }
        }
    }

    /// Right after connecting: the online status, or the Sparkplug births.
    fn announce(&mut self, client: &AsyncClient, s: &mut Session) -> Result<(), String> {
        let messages = match &mut self.profile {
            Profile::Uns => vec![(self.status_topic(), b"online".to_vec(), true)],
            Profile::Sparkplug { node, births_at, .. } => {
                *births_at = Instant::now();
                node.births().into_iter().map(|m| (m.topic, m.payload, false)).collect()
            }
        };
        for (topic, payload, retain) in messages {
            client.try_publish(topic, QoS::AtLeastOnce, retain, payload).map_err(|e| e.to_string())?;
            s.requested.push_back(None);
        }
        Ok(())
    }

    /// Sparkplug births again, when their interval has passed.
    fn rebirth_if_due(&mut self, client: &AsyncClient, s: &mut Session) -> Result<(), String> {
        let due = matches!(&self.profile, Profile::Sparkplug { births_at, birth_every, .. } if births_at.elapsed() >= *birth_every);
        if due && s.connected { self.announce(client, s) } else { Ok(()) }
    }

    /// At a clean stop: the offline status, or the NDEATH.
    fn farewell(&self) -> (String, Vec<u8>, bool) {
        match &self.profile {
            Profile::Sparkplug { death: Some(d), .. } => (d.topic.clone(), d.payload.clone(), false),
            _ => (self.status_topic(), b"offline".to_vec(), true),
        }
    }

    /// The topic and payload carrying `record`; `None` if it cannot be expressed (skipped).
    fn message_for(&mut self, record: &OutboxRecord, s: &Session) -> Option<(String, Vec<u8>)> {
        match &mut self.profile {
            Profile::Uns => {
                let mut payload = Vec::with_capacity(256);
                wire_json(&self.gateway, record, &mut payload);
                Some((format!("{}{}", self.config.topic_prefix, record.record.topic()), payload))
            }
            Profile::Sparkplug { node, .. } => {
                let id = message_id(&self.gateway, record);
                node.record(&id, &record.record, s.started_ms).map(|m| (m.topic, m.payload))
            }
        }
    }

    /// One connection: from connect to failure or stop.
    async fn connection(&mut self, password: Option<&str>, tls: Option<Arc<rustls::ClientConfig>>) -> Ended {
        let capacity = usize::from(self.config.inflight_max) + 1024;
        let (client, eventloop) = AsyncClient::new(self.options(password, tls), capacity);
        let (events_tx, mut events) = mpsc::channel(EVENTS_WAITING_MAX);
        let driver = tokio::spawn(drive(eventloop, events_tx));
        let mut session = match self.session() {
            Ok(s) => s,
            Err(e) => return Ended::Failed(e.to_string()),
        };
        let mut pace = RateCap::new(self.config.rate_max_per_s);
        let ended = loop {
            if let Err(e) = self.fill(&client, &mut session, &mut pace) {
                break Ended::Failed(e);
            }
            let stopping = self.stop.load(Relaxed);
            if let Err(e) = self.rebirth_if_due(&client, &mut session) {
                break Ended::Failed(e);
            }
            if stopping && (!session.connected || session.drained()) {
                if session.connected {
                    let (topic, payload, retain) = self.farewell();
                    let _ = client.publish(topic, QoS::AtLeastOnce, retain, payload).await;
                    let _ = tokio::time::timeout(Duration::from_millis(500), wait_outgoing(&mut events)).await;
                    let _ = client.disconnect().await;
                }
                break Ended::Stopped;
            }
            // Paced: until the next slot. Otherwise nothing can go now (no records, or the window
            // is full): until new records, an acknowledgement, or IDLE_WAIT at most (which also
            // bounds how late a stop or a due birth is seen).
            let now = Instant::now();
            let wait = match session.next_slot(&pace, now) {
                Some(at) => (at - now).max(Duration::from_millis(1)),
                None => IDLE_WAIT,
            };
            tokio::select! {
                () = self.new_records.notified() => {}
                event = events.recv() => match event {
                    Some(Ok(e)) => {
                        if let Err(e) = self.handle(&client, &mut session, e) {
                            break Ended::Failed(e);
                        }
                    }
                    Some(Err(e)) => break Ended::Failed(e),
                    None => break Ended::Failed("the connection ended".into()),
                },
                () = tokio::time::sleep(wait) => {}
            }
        };
        driver.abort();
        ended
    }

    /// A new connection's lanes: one in outbox order, or (live-first, with a backlog) the
    /// backlog up to the outbox's current end plus a live lane after it.
    fn session(&self) -> Result<Session, airlock_store::StoreError> {
        let acked = self.reader.position(&self.name)?;
        let mut lanes = Vec::new();
        if let Replay::LiveFirst { rate_max_per_s } = self.config.replay {
            let end = self.reader.end()?;
            if end != acked {
                lanes.push(Lane::new(acked, Some(end), Some(RateCap::new(rate_max_per_s))));
                lanes.push(Lane::new(end, None, None));
                return Ok(Session::new(lanes));
            }
        }
        lanes.push(Lane::new(acked, None, None));
        Ok(Session::new(lanes))
    }

    /// Publishes what the window and the paces allow: the live lane first.
    fn fill(&mut self, client: &AsyncClient, s: &mut Session, pace: &mut RateCap) -> Result<(), String> {
        let qos = if self.config.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce };
        while s.connected && s.in_flight() < usize::from(self.config.inflight_max) {
            let now = Instant::now();
            if pace.ready_at(now) > now {
                return Ok(());
            }
            let Some(lane) = self.next_lane(s, now)? else { return Ok(()) };
            let Some(record) = s.lanes[lane].batch.pop_front() else { return Ok(()) };
            let id = record.id;
            s.lanes[lane].read.advance(id);
            let Some((topic, payload)) = self.message_for(&record, s) else {
                log::warn!("sink {}: record {id} cannot be expressed in this sink's format; skipped", self.name);
                s.lanes[lane].window.push_back((id, true));
                self.acknowledged(s, id)?;
                continue;
            };
            // The queue holds inflight_max + 1024 requests and our window keeps it far from full.
            client.try_publish(topic, qos, false, payload).map_err(|e| format!("queue a publish: {e}"))?;
            pace.reserve(now);
            if let Some(own) = s.lanes[lane].pace.as_mut() {
                own.reserve(now);
            }
            s.requested.push_back(Some(id));
            s.lanes[lane].window.push_back((id, false));
        }
        Ok(())
    }

    /// The lane whose next record may go now (the live lane before the backlog), reading from
    /// the outbox when a lane's batch is empty.
    fn next_lane(&self, s: &mut Session, now: Instant) -> Result<Option<usize>, String> {
        for i in (0..s.lanes.len()).rev() {
            let lane = &mut s.lanes[i];
            if lane.pace.as_ref().is_some_and(|p| p.ready_at(now) > now) {
                continue;
            }
            if lane.batch.is_empty() {
                let through = lane.until.unwrap_or(Position([u64::MAX; 4]));
                let batch = self.reader.read_through(&lane.read, &through, READ_BATCH).map_err(|e| e.to_string())?;
                lane.exhausted = lane.until.is_some() && batch.is_empty();
                lane.batch = batch.into();
            }
            if !lane.batch.is_empty() {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    fn handle(&mut self, client: &AsyncClient, s: &mut Session, event: Event) -> Result<(), String> {
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                s.connected = true;
                if let Profile::Sparkplug { node, .. } = &mut self.profile {
                    node.connected();
                }
                s.started_ms = Timestamp::now().as_millis().max(0) as u64;
                self.announce(client, s)?;
                log::info!("sink {}: connected to {}:{}", self.name, self.config.host, self.config.port);
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(Some(id)) = s.requested.pop_front() {
                    if self.config.qos == 0 {
                        self.acknowledged(s, id)?;
                    } else {
                        s.by_packet.insert(pkid, id);
                    }
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(id) = s.by_packet.remove(&ack.pkid) {
                    self.acknowledged(s, id)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Marks `id` delivered. The outbox cursor moves over every delivered record at the front of
    /// the first lane; a live lane's records are acknowledged once the backlog before them is.
    fn acknowledged(&self, s: &mut Session, id: RecordId) -> Result<(), String> {
        for lane in &mut s.lanes {
            if let Some(slot) = lane.window.iter_mut().find(|(w, _)| *w == id) {
                slot.1 = true;
                self.health.delivered.fetch_add(1, Relaxed);
                break;
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
                self.reader.ack(&self.name, id).map_err(|e| e.to_string())?;
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

/// Records read in order from the outbox, sent, and acknowledged in that order.
struct Lane {
    /// Read from the outbox up to here (acknowledged or in flight).
    read: Position,
    /// The backlog lane ends here (the outbox's end when the connection was made).
    until: Option<Position>,
    /// The backlog lane's own pace (live-first replay).
    pace: Option<RateCap>,
    /// Read but not yet handed to the client.
    batch: VecDeque<OutboxRecord>,
    /// Records in flight from this lane, in publish order, and whether acknowledged.
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

/// What one connection has in flight.
struct Session {
    connected: bool,
    /// When this connection was made (ms since the epoch): older records are history.
    started_ms: u64,
    /// One lane, or (live-first replay with a backlog) the backlog and the live lane.
    lanes: Vec<Lane>,
    /// Publishes handed to the client, in order, until it sends them (`None`: status, births).
    requested: VecDeque<Option<RecordId>>,
    /// Sent publishes awaiting their PUBACK, by packet id.
    by_packet: HashMap<u16, RecordId>,
}

impl Session {
    fn new(lanes: Vec<Lane>) -> Self {
        Self { connected: false, started_ms: 0, lanes, requested: VecDeque::new(), by_packet: HashMap::new() }
    }

    fn in_flight(&self) -> usize {
        self.lanes.iter().map(|l| l.window.len()).sum()
    }

    fn drained(&self) -> bool {
        self.lanes.iter().all(|l| l.window.is_empty() && l.batch.is_empty())
    }

    /// How long until some lane may send (for the wait between events).
    /// The earliest rate-cap slot still ahead (the sink's or a lane's), if any: something may be
    /// waiting for it. `None`: nothing is held back by a rate cap.
    fn next_slot(&self, pace: &RateCap, now: Instant) -> Option<Instant> {
        let lanes = self.lanes.iter().filter_map(|l| l.pace.as_ref()).map(|p| p.ready_at(now));
        std::iter::once(pace.ready_at(now)).chain(lanes).filter(|at| *at > now).min()
    }
}

/// Polls the event loop for as long as the connection lives, handing events over. It is never
/// cancelled mid-poll: the sink aborts it only after the connection has ended.
async fn drive(mut eventloop: EventLoop, events: mpsc::Sender<Result<Event, String>>) {
    loop {
        let event = eventloop.poll().await;
        let failed = event.is_err();
        let event = event.map_err(|e: ConnectionError| e.to_string());
        if events.send(event).await.is_err() || failed {
            return;
        }
    }
}

/// Waits until the client has sent its next publish (the `offline` status at a clean stop).
async fn wait_outgoing(events: &mut mpsc::Receiver<Result<Event, String>>) {
    while let Some(Ok(e)) = events.recv().await {
        if matches!(e, Event::Incoming(Packet::PubAck(_))) {
            return;
        }
    }
}

fn read_secret(secret: Option<&Secret>) -> Result<Option<String>, String> {
    secret.map(Secret::read).transpose()
}

/// TLS with the broker's certificate verified against `ca_file` (or the Mozilla roots), and a
/// client certificate when one is configured (mutual TLS).
fn tls_config(c: &MqttSink) -> Result<rustls::ClientConfig, String> {
    let client = c.client_cert.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
    airlock_tls::client_config(c.ca_file.as_deref(), client)
}
