//! The MQTT sink: the outbox published as a Unified Namespace in JSON, at least once.
//!
//! - **Topics**: `topic_prefix` + the record's asset path (`acme/dortmund/.../press1/speed`);
//!   airlock's own events under `topic_prefix` + `_airlock/events/<kind>`; the sink's status,
//!   retained, at `topic_prefix` + `_airlock/<gateway>/status`: `online` once connected,
//!   `offline` on a clean stop, and `offline` as the last will when the connection dies.
//! - **Payload**: the record's JSON with its message id first (`wire_json`).
//! - **Acknowledgement**: with QoS 1 a record counts as delivered only when the broker's PUBACK
//!   for it has come back. Each publish gets a packet id not in flight, and the PUBACKs are
//!   handed to the shared runner ([`crate::spawn`]), which moves the outbox cursor only over
//!   records acknowledged, never past one still in flight. At most `inflight_max` records are
//!   unacknowledged at a time (the runner's window). With QoS 0 a record counts as delivered
//!   once written to the connection.
//! - **The connection** is our own MQTT 3.1.1 client ([`link`]): a batch of records goes out
//!   framed in one write, and acknowledgements are read as many at a time as have come.
//! - **Reconnect**: when the connection fails, the client and its state are dropped; after the
//!   runner's backoff (100 ms doubling to 30 s, with jitter) a new connection resends everything
//!   unacknowledged, from the outbox, with the same message ids.
//! - **One way**: the client never subscribes to anything, so nothing can come back down
//!   through it; packets the broker sends are only ever read for acknowledgements.
//! - **Pace**: at most `rate_max_per_s` messages per second, so a backlog after an outage does
//!   not choke the IT network.

pub mod link;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use airlock_config::{MqttSink, Secret};
use airlock_model::Timestamp;
use airlock_store::{OutboxReader, OutboxRecord, RecordId};

use self::link::{LinkError, Options, PublishLink, Will};

use crate::sparkplug::{self, EdgeNode};
use crate::{Ledger, Limits, Sent, Sink, SinkError, SinkHealth, message_id, wire_json};

/// Records handed to the client at a time.
const SEND_BATCH: usize = 256;
/// The largest MQTT packet sent or taken.
const PACKET_BYTES_MAX: usize = 1 << 20;
/// Records in flight at most, whatever `inflight_max` says: packet ids are 16 bits, and the
/// status and Sparkplug births (outside the window) need ids too.
const WINDOW_MAX: usize = 60_000;
/// At a clean stop, how long the farewell's PUBACK is waited for.
const FAREWELL_WAIT: Duration = Duration::from_millis(500);

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
    link: PublishLink,
    /// When this connection was made (ms since the epoch): older records are history.
    started_ms: u64,
    /// QoS 1 publishes awaiting their PUBACK, by packet id (`None`: status, births).
    by_packet: HashMap<u16, Option<RecordId>>,
    /// The packet id given last.
    last_packet: u16,
    /// Delivered records not yet handed to the runner.
    acked: Vec<RecordId>,
    /// PUBACKs read and not yet matched.
    pubacks: Vec<u16>,
}

impl Connection {
    #[expect(clippy::disallowed_methods, reason = "the IT-side sink: publishing to the IT broker is its job")]
    /// Frames one publish at QoS 1 (the status, births, farewell; `record` when it carries one)
    /// or, with `qos0`, at QoS 0.
    fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        record: Option<RecordId>,
        qos0: bool,
    ) -> Result<(), LinkError> {
        if qos0 {
            return self.link.publish(topic, payload, None, retain);
        }
        // The window keeps far fewer in flight (WINDOW_MAX); all 65,535 taken means PUBACKs
        // have stopped coming, and the session ends (everything is resent on the next).
        let Some(id) = free_packet_id(self.last_packet, &self.by_packet) else {
            return Err(LinkError::Protocol("65,535 publishes await their PUBACK".to_owned()));
        };
        self.link.publish(topic, payload, Some(id), retain)?;
        self.last_packet = id;
        self.by_packet.insert(id, record);
        Ok(())
    }

    /// Matches the PUBACKs read to their records.
    fn match_acks(&mut self) {
        for id in self.pubacks.drain(..) {
            if let Some(Some(record)) = self.by_packet.remove(&id) {
                self.acked.push(record);
            }
        }
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

    fn options(&mut self, password: Option<String>, tls: Option<Arc<rustls::ClientConfig>>) -> Options {
        let will = self.last_will();
        let c = &self.config;
        Options {
            host: c.host.clone(),
            port: c.port,
            client_id: c.client_id.clone(),
            keep_alive: c.keep_alive,
            // A password without a user name is not sent (MQTT 3.1.1 cannot carry it).
            password: c.username.as_ref().map(|_| password.unwrap_or_default()),
            username: c.username.clone(),
            tls,
            will,
        }
    }

    /// The last will of the next connection: the offline status, or the Sparkplug NDEATH.
    fn last_will(&mut self) -> Will {
        match &mut self.profile {
            Profile::Uns => Will { topic: self.status_topic(), payload: b"offline".to_vec(), retain: true },
            Profile::Sparkplug { node, death, .. } => {
                let d = node.next_death();
                let will = Will { topic: d.topic.clone(), payload: d.payload.clone(), retain: false };
                *death = Some(d);
                will
            }
        }
    }

    /// Right after connecting, and when Sparkplug births are due: the online status, or the
    /// Sparkplug births.
    async fn announce(&mut self) -> Result<(), SinkError> {
        let messages = match &mut self.profile {
            Profile::Uns => vec![(self.status_topic(), b"online".to_vec(), true)],
            Profile::Sparkplug { node, births_at, .. } => {
                *births_at = Instant::now();
                node.births().into_iter().map(|m| (m.topic, m.payload, false)).collect()
            }
        };
        let Some(c) = self.connection.as_mut() else { return Ok(()) };
        let mut framed = Ok(());
        for (topic, payload, retain) in messages {
            framed = framed.and_then(|()| c.publish(&topic, &payload, retain, None, false));
        }
        if let Err(e) = framed.and(c.link.flush().await) {
            self.connection = None;
            return Err(self.failed(e.to_string()));
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

    fn qos0(&self) -> bool {
        self.config.qos == 0
    }
}

/// The packet id after `last` that is not in flight (1..=65,535), or `None` when all are.
fn free_packet_id<V>(last: u16, in_flight: &HashMap<u16, V>) -> Option<u16> {
    let mut id = last;
    for _ in 0..u16::MAX {
        id = id.checked_add(1).unwrap_or(1);
        if !in_flight.contains_key(&id) {
            return Some(id);
        }
    }
    None
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
            window: usize::from(self.config.inflight_max).clamp(1, WINDOW_MAX),
            rate_max_per_s: Some(self.config.rate_max_per_s),
            replay: self.config.replay,
        }
    }

    /// Connects, waits for the broker's CONNACK, and announces (status or births).
    async fn open(&mut self) -> Result<(), SinkError> {
        self.connection = None;
        let password = self.config.password.as_ref().map(Secret::read).transpose().map_err(|e| self.failed(e))?;
        let tls = self.config.tls.then(|| tls_config(&self.config)).transpose().map_err(|e| self.failed(e))?;
        let options = self.options(password, tls.map(Arc::new));
        let link = PublishLink::connect(&options).await.map_err(|e| self.failed(e.to_string()))?;
        let c = Connection {
            link,
            started_ms: Timestamp::now().as_millis().max(0) as u64,
            by_packet: HashMap::new(),
            last_packet: 0,
            acked: Vec::new(),
            pubacks: Vec::new(),
        };
        if let Profile::Sparkplug { node, .. } = &mut self.profile {
            node.connected();
        }
        self.connection = Some(c);
        self.announce().await?;
        log::info!("sink {}: connected to {}:{}", self.name, self.config.host, self.config.port);
        Ok(())
    }

    async fn send(&mut self, records: &[OutboxRecord]) -> Result<Sent, SinkError> {
        let qos0 = self.qos0();
        let target = || format!("{}:{}", self.config.host, self.config.port);
        let Some(c) = self.connection.as_mut() else {
            return Err(SinkError::Rejected { target: target(), what: "not connected".into() });
        };
        let mut written = Vec::new();
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
            // A packet is at most PACKET_BYTES_MAX, and a topic at most 65,535 bytes: a record
            // beyond them would fail every session for good, so it is skipped, counted and
            // logged (it stays in the historian).
            let framed = if topic.len() + payload.len() + 64 > PACKET_BYTES_MAX {
                Err(format!("{} bytes, more than an MQTT packet carries here ({PACKET_BYTES_MAX})", payload.len()))
            } else {
                match c.publish(&topic, &payload, false, Some(record.id), qos0) {
                    Ok(()) => Ok(()),
                    Err(LinkError::Unframeable(why)) => Err(why),
                    Err(e) => {
                        self.connection = None;
                        return Err(self.failed(e.to_string()));
                    }
                }
            };
            if let Err(why) = framed {
                log::warn!("sink {}: record {} is {why}; skipped", self.name, record.id);
                if let Some(h) = &self.health {
                    h.dead_lettered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                c.acked.push(record.id);
                continue;
            }
            self.ledger.sent(Timestamp::now(), &topic, std::slice::from_ref(record), &payload);
            if qos0 {
                written.push(record.id);
            }
        }
        if let Err(e) = c.link.flush().await {
            self.connection = None;
            return Err(self.failed(e.to_string()));
        }
        c.acked.extend(written);
        Ok(Sent::InFlight)
    }

    async fn acknowledged(&mut self) -> Result<Vec<RecordId>, SinkError> {
        let Some(c) = self.connection.as_mut() else { return std::future::pending().await };
        if c.acked.is_empty() {
            // Cancel-safe: bytes read stay in the link, PUBACKs parsed in `pubacks`.
            if let Err(e) = c.link.acknowledgements(&mut c.pubacks).await {
                self.connection = None;
                return Err(self.failed(e.to_string()));
            }
            c.match_acks();
        }
        Ok(std::mem::take(&mut c.acked))
    }

    /// Pings when due, and sends the Sparkplug births again when their interval has passed.
    async fn tick(&mut self) -> Result<(), SinkError> {
        let Some(c) = self.connection.as_mut() else { return Ok(()) };
        if let Err(e) = c.link.ping_if_due().await {
            self.connection = None;
            return Err(self.failed(e.to_string()));
        }
        let due = matches!(&self.profile, Profile::Sparkplug { births_at, birth_every, .. } if births_at.elapsed() >= *birth_every);
        if due { self.announce().await } else { Ok(()) }
    }

    /// The farewell (offline status or NDEATH), its PUBACK waited for briefly, then DISCONNECT.
    async fn close(&mut self) {
        let (topic, payload, retain) = self.farewell();
        let Some(mut c) = self.connection.take() else { return };
        if c.publish(&topic, &payload, retain, None, false).is_ok() && c.link.flush().await.is_ok() {
            let mut acks = Vec::new();
            let _ = tokio::time::timeout(FAREWELL_WAIT, c.link.acknowledgements(&mut acks)).await;
        }
        c.link.disconnect().await;
    }
}

/// TLS with the broker's certificate verified against `ca_file` (or the Mozilla roots), and a
/// client certificate when one is configured (mutual TLS).
fn tls_config(c: &MqttSink) -> Result<rustls::ClientConfig, String> {
    let client = c.client_cert.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
    airlock_tls::client_config(c.ca_file.as_deref(), client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_those_in_flight_wrap_and_run_out() {
        let mut in_flight: HashMap<u16, ()> = HashMap::new();
        assert_eq!(free_packet_id(0, &in_flight), Some(1));
        assert_eq!(free_packet_id(u16::MAX, &in_flight), Some(1), "0 is never an id");
        in_flight.extend([(1, ()), (2, ()), (4, ())]);
        assert_eq!(free_packet_id(0, &in_flight), Some(3));
        assert_eq!(free_packet_id(3, &in_flight), Some(5));
        // All 65,535 in flight: an answer, not a loop that never ends.
        in_flight.extend((1..=u16::MAX).map(|i| (i, ())));
        assert_eq!(free_packet_id(7, &in_flight), None);
    }
}
