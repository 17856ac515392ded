//! The MQTT sink: the outbox published as a Unified Namespace in JSON, at least once.
//!
//! - **Topics**: `topic_prefix` + the record's asset path (`acme/dortmund/.../press1/speed`);
//!   airlock's own events under `topic_prefix` + `_airlock/events/<kind>`; the sink's status,
//!   retained, at `topic_prefix` + `_airlock/<gateway>/status`: `online` once connected,
//!   `offline` on a clean stop, and `offline` as the last will when the connection dies.
//! - **Payload**: the record's JSON with its message id first (`wire_json`).
//! - **Acknowledgement**: with QoS 1 a record counts as delivered only when the broker's PUBACK
//!   for it has come back. Publishes are matched to their packet ids in the order rumqttc sends
//!   them, and the PUBACKs handed to the shared runner ([`crate::spawn`]), which moves the
//!   outbox cursor only over records acknowledged, never past one still in flight. At most
//!   `inflight_max` records are unacknowledged at a time (the runner's window). With QoS 0 a
//!   record counts as delivered once written to the connection.
//! - **Reconnect**: when the connection fails, the client and its state are dropped; after the
//!   runner's backoff (100 ms doubling to 30 s, with jitter) a new connection resends everything
//!   unacknowledged, from the outbox, with the same message ids.
//! - **One way**: the client never subscribes to anything, so nothing can come back down
//!   through it; packets the broker sends are only ever read for acknowledgements.
//! - **Pace**: at most `rate_max_per_s` messages per second, so a backlog after an outage does
//!   not choke the IT network.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_config::{MqttSink, Secret};
use airlock_model::Timestamp;
use airlock_store::{OutboxReader, OutboxRecord, RecordId};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration,
    Transport,
};
use tokio::sync::mpsc;

use crate::sparkplug::{self, EdgeNode};
use crate::{Ledger, Limits, Sent, Sink, SinkError, SinkHealth, message_id, wire_json};

/// Events the connection driver hands to the sink, at most this many waiting.
const EVENTS_WAITING_MAX: usize = 1024;
/// Records handed to the client at a time.
const SEND_BATCH: usize = 256;
/// The largest MQTT packet sent or taken.
const PACKET_BYTES_MAX: usize = 1 << 20;
/// How long a new connection may take to be accepted (CONNACK).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts the MQTT sink `name` on the shared runner, on its own thread.
pub fn spawn(
    name: &str,
    gateway: &str,
    config: &MqttSink,
    reader: OutboxReader,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(JoinHandle<()>, Arc<SinkHealth>)> {
    let health = Arc::new(SinkHealth::default());
    let publisher = MqttPublisher::new(name, gateway, config).counting(Arc::clone(&health));
    let handle = crate::spawn(publisher, reader, stop, Arc::clone(&health))?;
    Ok((handle, health))
}

/// Publishes outbox records to an MQTT broker, as the Unified Namespace in JSON or as Sparkplug B.
pub struct MqttPublisher {
    name: String,
    gateway: String,
    config: MqttSink,
    profile: Profile,
    connection: Option<Connection>,
    /// Where records too big for a packet are counted (as dead letters).
    health: Option<Arc<SinkHealth>>,
    ledger: Arc<Ledger>,
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

/// One connection to the broker and what it has in flight.
struct Connection {
    client: AsyncClient,
    events: mpsc::Receiver<Result<Event, String>>,
    /// Polls the client's event loop; aborted when the connection is dropped.
    driver: tokio::task::JoinHandle<()>,
    /// When this connection was made (ms since the epoch): older records are history.
    started_ms: u64,
    /// Publishes handed to the client, in order, until it sends them (`None`: status, births).
    requested: VecDeque<Option<RecordId>>,
    /// Sent publishes awaiting their PUBACK, by packet id.
    by_packet: HashMap<u16, RecordId>,
    /// Delivered records not yet handed to the runner.
    acked: Vec<RecordId>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl MqttPublisher {
    pub fn new(name: &str, gateway: &str, config: &MqttSink) -> Self {
        let profile = match &config.sparkplug {
            None => Profile::Uns,
            Some(sp) => Profile::Sparkplug {
                node: Box::new(EdgeNode::new(&sp.group_id, sp.edge_node_id.as_deref().unwrap_or(gateway))),
                birth_every: sp.birth_interval,
                births_at: Instant::now(),
                death: None,
            },
        };
        Self {
            name: name.to_owned(),
            gateway: gateway.to_owned(),
            config: config.clone(),
            profile,
            connection: None,
            health: None,
            ledger: Arc::default(),
        }
    }

    /// Counts the records too big for an MQTT packet in `health` (as dead letters).
    pub fn counting(mut self, health: Arc<SinkHealth>) -> Self {
        self.health = Some(health);
        self
    }

    fn failed(&self, what: impl Into<String>) -> SinkError {
        SinkError::Rejected { target: format!("{}:{}", self.config.host, self.config.port), what: what.into() }
    }

    fn status_topic(&self) -> String {
        format!("{}_airlock/{}/status", self.config.topic_prefix, self.gateway)
    }

    #[expect(clippy::disallowed_methods, reason = "the IT-side sink: publishing to the IT broker is its job")]
    fn options(&mut self, password: Option<&str>, tls: Option<Arc<rustls::ClientConfig>>) -> MqttOptions {
        let will = self.last_will();
        let c = &self.config;
        let mut o = MqttOptions::new(&c.client_id, &c.host, c.port);
        o.set_keep_alive(c.keep_alive);
        o.set_clean_session(true);
        // The runner's window bounds what is in flight; rumqttc's is only a backstop above it
        // (births and status messages are not counted in the window).
        o.set_inflight(c.inflight_max.saturating_add(1024));
        o.set_max_packet_size(PACKET_BYTES_MAX, PACKET_BYTES_MAX);
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

    /// Right after connecting, and when Sparkplug births are due: the online status, or the
    /// Sparkplug births.
    #[expect(clippy::disallowed_methods, reason = "the IT-side sink: publishing to the IT broker is its job")]
    fn announce(&mut self) -> Result<(), SinkError> {
        let messages = match &mut self.profile {
            Profile::Uns => vec![(self.status_topic(), b"online".to_vec(), true)],
            Profile::Sparkplug { node, births_at, .. } => {
                *births_at = Instant::now();
                node.births().into_iter().map(|m| (m.topic, m.payload, false)).collect()
            }
        };
        let Some(c) = self.connection.as_mut() else { return Ok(()) };
        for (topic, payload, retain) in messages {
            if let Err(e) = c.client.try_publish(topic, QoS::AtLeastOnce, retain, payload) {
                return Err(self.failed(format!("queue a publish: {e}")));
            }
            c.requested.push_back(None);
        }
        Ok(())
    }

    /// At a clean stop: the offline status, or the NDEATH.
    fn farewell(&self) -> (String, Vec<u8>, bool) {
        match &self.profile {
            Profile::Sparkplug { death: Some(d), .. } => (d.topic.clone(), d.payload.clone(), false),
            _ => (self.status_topic(), b"offline".to_vec(), true),
        }
    }

    fn qos(&self) -> QoS {
        if self.config.qos == 0 { QoS::AtMostOnce } else { QoS::AtLeastOnce }
    }
}

/// The topic and payload carrying `record`; `None` if it cannot be expressed (skipped).
fn message_for(
    profile: &mut Profile,
    gateway: &str,
    topic_prefix: &str,
    record: &OutboxRecord,
    started_ms: u64,
) -> Option<(String, Vec<u8>)> {
    match profile {
        Profile::Uns => {
            let mut payload = Vec::with_capacity(256);
            wire_json(gateway, record, &mut payload);
            Some((format!("{topic_prefix}{}", record.record.topic()), payload))
        }
        Profile::Sparkplug { node, .. } => {
            let id = message_id(gateway, record);
            node.record(&id, &record.record, started_ms).map(|m| (m.topic, m.payload))
        }
    }
}

impl Connection {
    /// Takes note of what the client did or the broker answered.
    fn handle(&mut self, event: Event, qos: QoS) {
        match event {
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(Some(id)) = self.requested.pop_front() {
                    if qos == QoS::AtMostOnce {
                        self.acked.push(id);
                    } else {
                        self.by_packet.insert(pkid, id);
                    }
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(id) = self.by_packet.remove(&ack.pkid) {
                    self.acked.push(id);
                }
            }
            _ => {}
        }
    }
}

impl Sink for MqttPublisher {
    fn name(&self) -> &str {
        &self.name
    }

    fn ledger(&mut self, ledger: Arc<Ledger>) {
        self.ledger = ledger;
    }

    fn limits(&self) -> Limits {
        Limits {
            batch_max: SEND_BATCH,
            window: usize::from(self.config.inflight_max).max(1),
            rate_max_per_s: Some(self.config.rate_max_per_s),
            replay: self.config.replay,
        }
    }

    /// Connects, waits for the broker's CONNACK, and announces (status or births).
    async fn open(&mut self) -> Result<(), SinkError> {
        self.connection = None;
        let password = self.config.password.as_ref().map(Secret::read).transpose().map_err(|e| self.failed(e))?;
        let tls = self.config.tls.then(|| tls_config(&self.config)).transpose().map_err(|e| self.failed(e))?;
        let options = self.options(password.as_deref(), tls.map(Arc::new));
        let (client, eventloop) = AsyncClient::new(options, usize::from(self.config.inflight_max) + 1024);
        let (events_tx, events) = mpsc::channel(EVENTS_WAITING_MAX);
        let driver = tokio::spawn(drive(eventloop, events_tx));
        let mut c = Connection {
            client,
            events,
            driver,
            started_ms: 0,
            requested: VecDeque::new(),
            by_packet: HashMap::new(),
            acked: Vec::new(),
        };
        let accepted = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                match c.events.recv().await {
                    Some(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok(()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    None => return Err("the connection ended".to_owned()),
                }
            }
        })
        .await;
        match accepted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.failed(e)),
            Err(_) => return Err(self.failed(format!("no CONNACK within {CONNECT_TIMEOUT:?}"))),
        }
        c.started_ms = Timestamp::now().as_millis().max(0) as u64;
        if let Profile::Sparkplug { node, .. } = &mut self.profile {
            node.connected();
        }
        self.connection = Some(c);
        self.announce()?;
        log::info!("sink {}: connected to {}:{}", self.name, self.config.host, self.config.port);
        Ok(())
    }

    #[expect(clippy::disallowed_methods, reason = "the IT-side sink: publishing to the IT broker is its job")]
    async fn send(&mut self, records: &[OutboxRecord]) -> Result<Sent, SinkError> {
        let qos = self.qos();
        let target = || format!("{}:{}", self.config.host, self.config.port);
        let Some(c) = self.connection.as_mut() else {
            return Err(SinkError::Rejected { target: target(), what: "not connected".into() });
        };
        for record in records {
            let Some((topic, payload)) =
                message_for(&mut self.profile, &self.gateway, &self.config.topic_prefix, record, c.started_ms)
            else {
                log::warn!(
                    "sink {}: record {} cannot be expressed in this sink's format; skipped",
                    self.name,
                    record.id
                );
                c.acked.push(record.id);
                continue;
            };
            // A packet is at most PACKET_BYTES_MAX: a bigger record would fail every session for
            // good, so it is skipped, counted and logged (it stays in the historian).
            if topic.len() + payload.len() + 64 > PACKET_BYTES_MAX {
                log::warn!(
                    "sink {}: record {} is {} bytes, more than an MQTT packet carries here ({PACKET_BYTES_MAX}); skipped",
                    self.name,
                    record.id,
                    payload.len()
                );
                if let Some(h) = &self.health {
                    h.dead_lettered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                c.acked.push(record.id);
                continue;
            }
            self.ledger.sent(Timestamp::now(), &topic, std::slice::from_ref(record), &payload);
            // The queue holds inflight_max + 1024 requests and the window keeps it far from full.
            if let Err(e) = c.client.try_publish(topic, qos, false, payload) {
                return Err(SinkError::Rejected { target: target(), what: format!("queue a publish: {e}") });
            }
            c.requested.push_back(Some(record.id));
        }
        Ok(Sent::InFlight)
    }

    async fn acknowledged(&mut self) -> Result<Vec<RecordId>, SinkError> {
        let qos = self.qos();
        let Some(c) = self.connection.as_mut() else { return std::future::pending().await };
        loop {
            if !c.acked.is_empty() {
                return Ok(std::mem::take(&mut c.acked));
            }
            // Cancel safe: an event is either still in the channel or already taken note of.
            let failure = match c.events.recv().await {
                Some(Ok(e)) => {
                    c.handle(e, qos);
                    continue;
                }
                Some(Err(e)) => e,
                None => "the connection ended".to_owned(),
            };
            self.connection = None;
            return Err(self.failed(failure));
        }
    }

    /// Sparkplug births again, when their interval has passed.
    async fn tick(&mut self) -> Result<(), SinkError> {
        let due = matches!(&self.profile, Profile::Sparkplug { births_at, birth_every, .. } if births_at.elapsed() >= *birth_every);
        if due && self.connection.is_some() { self.announce() } else { Ok(()) }
    }

    #[expect(clippy::disallowed_methods, reason = "the IT-side sink: publishing to the IT broker is its job")]
    async fn close(&mut self) {
        let (topic, payload, retain) = self.farewell();
        let Some(mut c) = self.connection.take() else { return };
        let _ = c.client.publish(topic, QoS::AtLeastOnce, retain, payload).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), wait_outgoing(&mut c.events)).await;
        let _ = c.client.disconnect().await;
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

/// TLS with the broker's certificate verified against `ca_file` (or the Mozilla roots), and a
/// client certificate when one is configured (mutual TLS).
fn tls_config(c: &MqttSink) -> Result<rustls::ClientConfig, String> {
    let client = c.client_cert.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
    airlock_tls::client_config(c.ca_file.as_deref(), client)
}
