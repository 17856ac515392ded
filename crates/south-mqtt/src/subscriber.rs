//! The subscriber task: one per device (one OT broker connection), subscribe-only.
//!
//! After every connect it subscribes again (clean session): to each JSON topic, or to the one
//! filter that covers a Sparkplug B edge node. When the connection drops, every tag goes bad
//! (comms lost) and the task reconnects after an exponential backoff with jitter. It hands
//! samples on through its `DeviceHandle`, which never waits: a full channel drops the batch
//! and counts it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_config::{Device, MqttDevice, Payload, Secret};
use airlock_model::pace::Backoff;
use airlock_model::{DeviceHealth, LinkState, Reason, Sample, Timestamp};
use airlock_pipeline::{DeviceHandle, Running, Source};
use tokio::sync::watch;

use crate::json::{JsonTopics, Reading};
use crate::link::{Incoming, Options, SubscribeOnly};
use crate::sparkplug::EdgeNode;

/// Largest message accepted from the broker (a long waveform in JSON fits); a larger one is
/// read past, counted and logged, and the connection stays up.
const MESSAGE_BYTES_MAX: usize = 1 << 20;
/// A topic's bad payloads are logged at most once in this long a window.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Topics logged in one window, at most: topics under a Sparkplug filter are the publisher's
/// to choose, and a new one on every message must not write a log line for each (the rest are
/// counted as communication errors, not logged).
const LOGGED_TOPICS_MAX: usize = 100;
/// A topic is logged (and paced) by its first this many characters; MQTT allows 65,535 bytes.
const LOGGED_TOPIC_CHARS: usize = 200;

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

    fn options(&self) -> Result<Options, String> {
        let (host, port) = self
            .mqtt
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((h.trim_start_matches('[').trim_end_matches(']').to_owned(), p.parse::<u16>().ok()?))
            })
            .ok_or_else(|| format!("{:?} is not host:port", self.mqtt.address))?;
        let password = self.mqtt.password.as_ref().map(Secret::read).transpose()?;
        let tls = if self.mqtt.tls {
            let client = self.mqtt.client_cert.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
            Some(Arc::new(airlock_tls::client_config(self.mqtt.ca_file.as_deref(), client)?))
        } else {
            None
        };
        Ok(Options {
            host,
            port,
            client_id: self.mqtt.client_id.clone(),
            keep_alive: Duration::from_secs(15),
            username: self.mqtt.username.clone(),
            password: self.mqtt.username.as_ref().map(|_| password.unwrap_or_default()),
            tls,
            message_bytes_max: MESSAGE_BYTES_MAX,
        })
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
        let filters = decoder.filters();
        let mut batches = 0u64;
        let mut last_logged = LogPace::default();
        let mut down_reported = false;
        self.health.set_state(LinkState::Connecting);
        loop {
            let failed = match SubscribeOnly::connect(&options, &filters).await {
                Ok(mut link) => {
                    backoff.reset();
                    self.health.set_state(LinkState::Up);
                    if std::mem::take(&mut down_reported) {
                        log::info!("device {name}: connected to {} again", self.mqtt.address);
                    }
                    loop {
                        match link.next().await {
                            Ok(incoming) => self.on_incoming(incoming, &mut decoder, &mut batches, &mut last_logged),
                            Err(e) => break e,
                        }
                    }
                }
                Err(e) => e,
            };
            self.health.set_state(LinkState::Backoff);
            DeviceHealth::count(&self.health.comm_errors, 1);
            let why = failed.to_string();
            if !std::mem::replace(&mut down_reported, true) {
                log::warn!("device {name}: broker {}: {why}; its tags are bad until it is back", self.mqtt.address);
                batches += 1;
                self.out.emit(batches, self.out.all_bad(Reason::CommsLost));
            }
            self.health.set_last_error(why);
            tokio::time::sleep(backoff.next_delay()).await;
            self.health.set_state(LinkState::Connecting);
        }
    }

    /// What one thing the broker sent does: samples, a refused subscription, a dropped message.
    fn on_incoming(&self, incoming: Incoming, decoder: &mut Decoder, batches: &mut u64, last_logged: &mut LogPace) {
        let name = &self.device.name;
        match incoming {
            Incoming::Subscribed { refused: 0 } => {}
            Incoming::Subscribed { refused } => {
                let e = format!("the broker refused {refused} of the subscriptions (check its ACL)");
                log::error!("device {name}: {e}");
                self.health.set_last_error(e);
            }
            Incoming::Oversized { topic, bytes } => {
                DeviceHealth::count(&self.health.comm_errors, 1);
                let topic = topic.unwrap_or_else(|| "(unreadable topic)".to_owned());
                let why = format!("a message of {bytes} bytes is over the {MESSAGE_BYTES_MAX}-byte bound; dropped");
                if let Some(topic) = last_logged.due(&topic) {
                    log::warn!("device {name}: {topic:?}: {why}");
                    self.health.set_last_error(format!("{topic}: {why}"));
                }
            }
            Incoming::Message { topic, payload } => {
                let (readings, problem) = decoder.decode(&topic, &payload);
                if let Some(why) = problem {
                    DeviceHealth::count(&self.health.comm_errors, 1);
                    if let Some(topic) = last_logged.due(&topic) {
                        log::warn!("device {name}: a message on {topic:?} does not decode: {why}");
                        self.health.set_last_error(format!("{topic}: {why}"));
                    }
                }
                if !readings.is_empty() {
                    *batches += 1;
                    DeviceHealth::count(&self.health.polls, 1);
                    let now = Timestamp::now();
                    let samples = readings.into_iter().map(|r| self.sample(r, now)).collect();
                    self.out.emit(*batches, samples);
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

/// Which topics' problems have been logged in the current window of [`LOG_EVERY`].
#[derive(Debug)]
struct LogPace {
    window: Instant,
    topics: HashSet<String>,
}

impl Default for LogPace {
    fn default() -> Self {
        Self { window: Instant::now(), topics: HashSet::new() }
    }
}

impl LogPace {
    /// The topic as it is to be logged (cut to [`LOGGED_TOPIC_CHARS`]) if a problem on it is
    /// due to be: once per topic and window, and for at most [`LOGGED_TOPICS_MAX`] topics.
    fn due(&mut self, topic: &str) -> Option<String> {
        if self.window.elapsed() >= LOG_EVERY {
            self.window = Instant::now();
            self.topics.clear();
        }
        let shown = match topic.char_indices().nth(LOGGED_TOPIC_CHARS) {
            Some((cut, _)) => format!("{}…", &topic[..cut]),
            None => topic.to_owned(),
        };
        if self.topics.len() >= LOGGED_TOPICS_MAX || self.topics.contains(&shown) {
            return None;
        }
        self.topics.insert(shown.clone());
        Some(shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_topic_on_every_message_logs_a_bounded_number_of_short_lines() {
        let mut pace = LogPace::default();
        let long = "spBv1.0/g/DDATA/n/".to_owned() + &"d".repeat(60_000);
        let mut logged = Vec::new();
        for i in 0..10_000 {
            let topic = if i % 2 == 0 { format!("spBv1.0/g/DDATA/n/d{i}") } else { format!("{long}{i}") };
            logged.extend(pace.due(&topic));
        }
        assert_eq!(logged.len(), LOGGED_TOPICS_MAX);
        assert!(logged.iter().all(|t| t.chars().count() <= LOGGED_TOPIC_CHARS + 1), "a topic logged whole");
        // One topic: once per window.
        let mut pace = LogPace::default();
        assert!(pace.due("plant/press1").is_some());
        assert!(pace.due("plant/press1").is_none());
        // A window later (when the clock has run that long since boot) it is due again.
        if let Some(earlier) = pace.window.checked_sub(LOG_EVERY) {
            pace.window = earlier;
            assert_eq!(pace.due("plant/press1").as_deref(), Some("plant/press1"));
        }
    }
}
