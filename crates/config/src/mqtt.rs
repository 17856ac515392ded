//! The validated shape of an OT-side MQTT broker that airlock subscribes to, read-only: topics
//! carrying plain JSON or Sparkplug B. Nothing is ever published there.

use std::path::PathBuf;

use crate::Secret;

/// A broker on the plant network and the values airlock takes from it.
#[derive(Debug, Clone)]
pub struct MqttDevice {
    /// `host:port`.
    pub address: String,
    /// `mqtts://` in the config: TLS, the broker's certificate verified against `ca_file` (or
    /// the Mozilla roots).
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for brokers that require one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub payload: Payload,
    /// One entry per tag of the device, in the same order.
    pub sources: Vec<MqttSource>,
}

/// How the payloads on the broker are written.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON document per message; each tag names where its value (and time) stand.
    Json,
    /// Sparkplug B: the edge node `group_id`/`edge_node_id` is followed through its births,
    /// data and deaths.
    SparkplugB { group_id: String, edge_node_id: String },
}

/// Where one tag's value comes from on the broker.
#[derive(Debug, Clone, PartialEq)]
pub enum MqttSource {
    /// A JSON payload on `topic`: the value at `value_pointer` (RFC 6901), the time (epoch
    /// milliseconds or RFC 3339) at `time_pointer` when given.
    Json { topic: String, value_pointer: String, time_pointer: Option<String> },
    /// A Sparkplug B metric of the edge node, or of one of its devices.
    Sparkplug { device: Option<String>, metric: String },
}
