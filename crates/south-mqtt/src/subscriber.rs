//! The subscriber task: one per device (one OT broker connection), subscribe-only.
//!
//! After every connect it subscribes again (clean session): to each JSON topic, or to the one
//! filter that covers a Sparkplug B edge node. When the connection drops, every tag goes bad
//! (comms lost) and the task reconnects after an exponential backoff with jitter. It hands
//! samples on through its `DeviceHandle`, which never waits: a full channel drops the batch
//! and counts it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_config::{Device, MqttDevice, Payload, Secret};
use airlock_model::pace::Backoff;
use airlock_model::{DeviceHealth, LinkState, Reason, Sample, Timestamp};
use airlock_pipeline::{DeviceHandle, Running, Source};
use rumqttc::{ConnectionError, Event, MqttOptions, Packet, QoS, SubscribeFilter, TlsConfiguration, Transport};
use tokio::sync::watch;

use crate::json::{JsonTopics, Reading};
use crate::link::SubscribeOnly;
use crate::sparkplug::EdgeNode;

/// Largest message accepted from the broker (a long waveform in JSON fits).
const MESSAGE_BYTES_MAX: usize = 1 << 20;
/// A topic's bad payloads are logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Topics whose decode failures are remembered for log pacing, at most (then forgotten at once).
const LOGGED_TOPICS_MAX: usize = 1024;

/// How the device's payloads are read.
#[derive(Debug)]
enum Decoder {
    Json(JsonTopics),
    Sparkplug(EdgeNode),
}

impl Decoder {
    fn filters(&self) -> Vec<String> {
        match self {
            Decoder::Json(j) => j.topics(),
            Decoder::Sparkplug(n) => vec![n.filter()],
        }
    }

    fn decode(&mut self, topic: &str, payload: &[u8]) -> (Vec<Reading>, Option<String>) {
        match self {
            Decoder::Json(j) => j.decode(topic, payload),
            Decoder::Sparkplug(n) => n.on_message(topic, payload),
        }
    }
}

/// One OT broker and the tags read from it.
#[derive(Debug)]
pub struct SubscriberTask {
    device: Device,
    mqtt: MqttDevice,
    /// The pipeline's handle: tag ids, and where samples go.
    out: DeviceHandle,
    health: Arc<DeviceHealth>,
}

impl SubscriberTask {
    /// A task for `device` (`mqtt` is its protocol part), reading into `out`.
    pub fn new(device: &Device, mqtt: &MqttDevice, out: DeviceHandle) -> Self {
        Self { device: device.clone(), mqtt: mqtt.clone(), health: out.health(), out }
    }

    pub fn health(&self) -> Arc<DeviceHealth> {
        Arc::clone(&self.health)
    }

    /// Reads the broker until `shutdown` turns true or its sender is dropped.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tokio::select! {
            () = self.subscribe_forever() => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }

    fn options(&self) -> Result<MqttOptions, String> {
        let (host, port) = self
            .mqtt
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("{:?} is not host:port", self.mqtt.address))?;
        let mut o = MqttOptions::new(&self.mqtt.client_id, host, port);
        o.set_keep_alive(Duration::from_secs(15));
        o.set_clean_session(true);
        o.set_max_packet_size(MESSAGE_BYTES_MAX, 64 * 1024);
        if let Some(user) = &self.mqtt.username {
            let password = self.mqtt.password.as_ref().map(Secret::read).transpose()?.unwrap_or_default();
            o.set_credentials(user, password);
        }
        if self.mqtt.tls {
            let client = self.mqtt.client_cert.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
            let tls = airlock_tls::client_config(self.mqtt.ca_file.as_deref(), client)?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(tls))));
        }
        Ok(o)
    }

    async fn subscribe_forever(self) {
        let name = self.device.name.clone();
        let mut decoder = match &self.mqtt.payload {
            Payload::Json => Decoder::Json(JsonTopics::new(&self.mqtt.sources, &self.device.tags)),
            Payload::SparkplugB { group_id, edge_node_id } => {
                Decoder::Sparkplug(EdgeNode::new(group_id, edge_node_id, &self.mqtt.sources))
            }
        };
        let seed = Timestamp::now().as_nanos().unsigned_abs() ^ (self.out.device() as u64) << 32;
        let mut backoff = Backoff::new(self.device.backoff_initial, self.device.backoff_max, seed);
        let options = match self.options() {
            Ok(o) => o,
            Err(e) => {
                log::error!("device {name}: {e}; its tags stay bad");
                self.health.set_last_error(e);
                self.out.emit(0, self.out.all_bad(Reason::CommsLost));
                return;
            }
        };
        let mut link = SubscribeOnly::new(options);
        let mut batches = 0u64;
        let mut last_logged: HashMap<String, Instant> = HashMap::new();
        let mut down_reported = false;
        self.health.set_state(LinkState::Connecting);
        loop {
            match link.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.reset();
                    self.health.set_state(LinkState::Up);
                    if std::mem::take(&mut down_reported) {
                        log::info!("device {name}: connected to {} again", self.mqtt.address);
                    }
                    let filters = decoder.filters().into_iter().map(|t| SubscribeFilter::new(t, QoS::AtMostOnce));
                    if let Err(e) = link.subscribe(filters) {
                        log::error!("device {name}: cannot subscribe: {e}");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused =
                        ack.return_codes.iter().filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)).count();
                    if refused > 0 {
                        let e = format!("the broker refused {refused} of the subscriptions (check its ACL)");
                        log::error!("device {name}: {e}");
                        self.health.set_last_error(e);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = p.topic.as_str();
                    let (readings, problem) = decoder.decode(topic, &p.payload);
                    if let Some(why) = problem {
                        DeviceHealth::count(&self.health.comm_errors, 1);
                        let due = last_logged.get(topic).is_none_or(|t| t.elapsed() >= LOG_EVERY);
                        if due {
                            // Bounded: topics under a Sparkplug filter are the publisher's to choose.
                            if last_logged.len() >= LOGGED_TOPICS_MAX {
                                last_logged.clear();
                            }
                            log::warn!("device {name}: a message on {topic:?} does not decode: {why}");
                            self.health.set_last_error(format!("{topic}: {why}"));
                            last_logged.insert(topic.to_owned(), Instant::now());
                        }
                    }
                    if !readings.is_empty() {
                        batches += 1;
                        DeviceHealth::count(&self.health.polls, 1);
                        let now = Timestamp::now();
                        let samples = readings.into_iter().map(|r| self.sample(r, now)).collect();
                        self.out.emit(batches, samples);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.health.set_state(LinkState::Backoff);
                    DeviceHealth::count(&self.health.comm_errors, 1);
                    let why = describe(&e);
                    if !std::mem::replace(&mut down_reported, true) {
                        log::warn!(
                            "device {name}: broker {}: {why}; its tags are bad until it is back",
                            self.mqtt.address
                        );
                        batches += 1;
                        self.out.emit(batches, self.out.all_bad(Reason::CommsLost));
                    }
                    self.health.set_last_error(why);
                    tokio::time::sleep(backoff.next_delay()).await;
                    self.health.set_state(LinkState::Connecting);
                }
            }
        }
    }

    fn sample(&self, r: Reading, now: Timestamp) -> Sample {
        self.out.sample(r.tag, r.value, r.quality, r.source_time, now)
    }
}

impl Source for SubscriberTask {
    fn run(self: Box<Self>, stop: watch::Receiver<bool>) -> Running {
        Box::pin((*self).run(stop))
    }
}

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("connection refused ({code:?})"),
        other => other.to_string(),
    }
}
