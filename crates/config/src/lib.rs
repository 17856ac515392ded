//! airlock's configuration, read in two steps. First the TOML text is deserialized into raw
//! structs ([`raw`]) that reject unknown keys and remember where every value stood in the file.
//! Then one pure pass ([`validate`]) checks everything at once (names, ranges, register
//! overlaps, data types, intervals, rate caps) and either returns a [`Config`] whose types cannot
//! be invalid (durations, resolved asset paths, typed register spaces) or *every* problem found,
//! each naming the file, line, column and key. Nothing here does I/O except [`load`], which reads
//! the file, and [`Secret::read`]. Every key is documented in `docs/config.md`.

mod error;
pub mod modbus;
pub mod mqtt;
pub mod opcua;
mod raw;
mod sections;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_model::AssetPath;

pub use error::{ConfigError, ConfigErrors};
pub use modbus::{DataType, ModbusDevice, ModbusTag, Space, WordOrder};
pub use mqtt::{MqttDevice, MqttSource, Payload};
pub use opcua::{Identity, OpcUaDevice, OpcUaNode, ReadMode, Security};
pub use validate::DIODE_HEARTBEAT_BYTES;

/// A validated configuration: every value in range, every name resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway: Gateway,
    pub edge: Edge,
    pub store: Store,
    /// Shared, not copied, by whatever holds a device (its task, the reload's comparison): a
    /// device of 10,000 tags is megabytes.
    pub devices: Vec<std::sync::Arc<Device>>,
    pub sinks: Vec<Sink>,
    /// The read-only dashboard, when `[web]` is set.
    pub web: Option<Web>,
}

/// The read-only web dashboard, JSON API and `/metrics` (`[web]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Web {
    pub listen: std::net::SocketAddr,
    /// The environment variable holding the access token, if access needs one.
    pub token_env: Option<String>,
    /// The server's certificate chain and key (PEM), for HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// Plant-wide settings of the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub shift: Duration,
    /// When the first shift of a day starts, after midnight UTC.
    pub shift_start: Duration,
    /// Parts are reported per interval of this length.
    pub production_interval: Duration,
}

/// What the edge does with one tag. All optional: a tag with none of it is reported upstream
/// when its value or quality changes, in the outbox's `raw` class.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TagEdge {
    /// Absolute band in engineering units (a percent of span is converted).
    pub deadband: Option<f64>,
    pub heartbeat: Option<Duration>,
    /// Swinging door: deviation and the longest time between kept samples.
    pub swinging_door: Option<(f64, Duration)>,
    /// Tumbling windows of this length.
    pub window: Option<Duration>,
    /// Boxed, as the settings below: most tags have none, and 10,000 tags are held at once.
    pub alarms: Option<Box<TagAlarms>>,
    /// The tag is a part counter; report production (an event every N parts when given).
    pub production: Option<Production>,
    /// The tag is a vibration velocity RMS (mm/s): ISO zones and a wear trend.
    pub vibration: Option<VibrationSettings>,
    /// The tag is a waveform in which a bearing's defect frequencies are watched.
    pub bearing: Option<Box<BearingSettings>>,
}

/// A rolling bearing watched in a waveform tag.
#[derive(Debug, Clone, PartialEq)]
pub struct BearingSettings {
    pub balls: u32,
    pub ball_diameter_mm: f64,
    pub pitch_diameter_mm: f64,
    pub contact_angle_deg: f64,
    /// The device's tag with the shaft speed in rpm (its index in the device's tags).
    pub shaft_speed_tag: usize,
}

/// ISO 10816-3 / 20816-3 settings of a vibration tag.
#[derive(Debug, Clone, PartialEq)]
pub struct VibrationSettings {
    /// Machine group 1 (300 kW to 50 MW) or 2 (15 kW to 300 kW).
    pub group: u8,
    pub rigid: bool,
    /// Advise maintenance when zone D is this many days away.
    pub advice_days: f64,
}

/// How a machine's OEE is computed from its tags (indices into the device's tags).
#[derive(Debug, Clone, PartialEq)]
pub struct OeeSettings {
    pub state_tag: usize,
    pub running_value: f64,
    pub parts_tag: usize,
    pub rejects_tag: Option<usize>,
    pub ideal_cycle_s: f64,
    pub drop_percent: f64,
    pub baseline: Duration,
    pub compare: Duration,
}

/// Alarm settings of a tag.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TagAlarms {
    pub high: Option<f64>,
    pub low: Option<f64>,
    pub hysteresis: f64,
    pub on_delay: Duration,
    pub off_delay: Duration,
    pub rate_max_per_s: Option<f64>,
    pub stale: Option<Duration>,
}

/// A part counter tag.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Production {
    pub every_parts: Option<u64>,
    /// The most parts the machine makes in a second: a reading that adds more is refused.
    pub parts_max_per_s: Option<f64>,
}

/// Where and how long airlock keeps data on local disk.
#[derive(Debug, Clone)]
pub struct Store {
    /// Resolved against the config file's folder when relative.
    pub data_dir: PathBuf,
    /// How often appended data is synced to disk at most (0: at every commit).
    pub fsync_interval: Duration,
    pub outbox_bytes_max: u64,
    pub outbox_age_max: Duration,
    pub historian_bytes_max: u64,
    pub historian_age_max: Duration,
    /// Bytes the file system holding `data_dir` keeps free, whatever the budgets (0: none).
    pub free_space_reserve: u64,
}

/// Where upstream records go. A closed set: one variant per northbound sink.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// A JSON Lines file (one record per line), appended to.
    Jsonl { path: PathBuf },
    /// An MQTT broker, publishing the Unified Namespace as JSON.
    Mqtt(Box<MqttSink>),
    /// An HTTP endpoint (an ERP web hook) receiving batches of records.
    Http(HttpSink),
    /// The OT half of a data diode: one-way UDP datagrams with forward error correction.
    Diode(DiodeSink),
    /// A Kafka cluster (`type = "kafka"`).
    Kafka(KafkaSink),
}

/// A Kafka sink: records produced to a topic per class, keyed by asset path.
#[derive(Debug, Clone, PartialEq)]
pub struct KafkaSink {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The topic; `{class}` is replaced by the record's class (events, aggregates, series, raw).
    pub topic: String,
    /// Compress each batch with LZ4.
    pub lz4: bool,
    /// TLS (rustls), trusting `ca_file` or the Mozilla roots; a client certificate if given.
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// SASL: the mechanism, the user name and where the password is read from.
    pub sasl: Option<(Sasl, String, Secret)>,
    pub rate_max_per_s: f64,
    /// How a backlog (after an outage) is sent.
    pub replay: Replay,
}

/// A SASL mechanism of a Kafka sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sasl {
    Plain,
    ScramSha256,
    ScramSha512,
}

/// The sending half of a diode (`type = "diode"`).
#[derive(Debug, Clone, PartialEq)]
pub struct DiodeSink {
    /// The receiving half's address (an IP address: a name would need an answer from IT).
    pub address: std::net::SocketAddr,
    /// The local address to send from (default: any).
    pub bind: Option<std::net::SocketAddr>,
    /// The link's MTU: each datagram is at most this minus 28 bytes (IPv4 and UDP headers).
    pub mtu_bytes: usize,
    /// Repair symbols per block, in percent of its source symbols (at least one).
    pub repair_percent: f64,
    /// Bytes per second on the wire at most, headers included.
    pub rate_max_bytes_per_s: u64,
    pub heartbeat: Duration,
    /// Send each block again this long after the first time (a burst longer than the repair
    /// covers then costs nothing), or never.
    pub repeat: Option<Duration>,
    /// Bytes of records in one block at most (a larger record gets a block of its own).
    pub block_bytes: usize,
    /// A secret shared with the receiving half: every datagram then carries an HMAC-SHA256
    /// tag made with it, and the receiver takes no datagram without a right one.
    pub key_file: Option<std::path::PathBuf>,
}

/// `airlock receive`'s configuration: the IT half of a diode.
#[derive(Debug, Clone)]
pub struct ReceiveConfig {
    pub receive: Receive,
    pub store: Store,
    pub sinks: Vec<Sink>,
}

/// How the IT half of a diode listens.
#[derive(Debug, Clone, PartialEq)]
pub struct Receive {
    pub listen: std::net::SocketAddr,
    /// The sending gateway's name: only its datagrams are taken, and its name goes on every
    /// record the sinks send.
    pub sender: String,
    pub reorder: Duration,
    pub silent_after: Duration,
    pub receive_buffer_bytes: usize,
    /// The secret the sending half's diode sink has (`key_file` there too): only datagrams
    /// whose HMAC-SHA256 tag it makes are taken.
    pub key_file: Option<std::path::PathBuf>,
}

/// An HTTP(S) web hook: JSON batches POSTed, acknowledged on 2xx.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSink {
    pub url: String,
    /// Which outbox classes it receives (by name: events, aggregates, series, raw).
    pub classes: Vec<String>,
    pub batch_records_max: usize,
    pub timeout: Duration,
    /// The environment variable holding a bearer token, read when the sink starts.
    pub bearer_token_env: Option<String>,
    /// The dead-letter files' budget: beyond it the oldest dead letters are removed (counted).
    pub dead_letters_max_bytes: u64,
    /// An HTTP proxy to go through (`http://host:port`); none is taken from the environment.
    pub proxy: Option<String>,
}

/// An MQTT broker airlock publishes to. It never subscribes.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttSink {
    pub host: String,
    pub port: u16,
    /// `mqtts://`: TLS with server certificate verification.
    pub tls: bool,
    /// The CA certificates (PEM) the broker's certificate must chain to; the Mozilla roots when
    /// not given.
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for brokers that require one (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Put before every topic, e.g. `uns/`.
    pub topic_prefix: String,
    pub client_id: String,
    /// 0 or 1.
    pub qos: u8,
    pub username: Option<String>,
    /// Where the password is read from when the sink starts (never from the config itself).
    pub password: Option<Secret>,
    /// Messages published and not yet acknowledged by the broker, at most.
    pub inflight_max: u16,
    /// Messages per second at most, so that a backlog does not choke the IT network.
    pub rate_max_per_s: f64,
    pub keep_alive: Duration,
    /// Publish Sparkplug B instead of the Unified Namespace in JSON.
    pub sparkplug: Option<Sparkplug>,
    /// How a backlog (after an outage) is sent.
    pub replay: Replay,
}

/// How a sink sends a backlog when it (re)connects.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Replay {
    /// Everything in outbox order, the backlog first.
    InOrder,
    /// New records first; the backlog meanwhile on its own lane, at most this many per second.
    LiveFirst { rate_max_per_s: f64 },
}

/// The Sparkplug B edge node airlock presents (send-only).
#[derive(Debug, Clone, PartialEq)]
pub struct Sparkplug {
    pub group_id: String,
    /// The edge node id; the gateway's name when not given.
    pub edge_node_id: Option<String>,
    /// How often NBIRTH and DBIRTHs are sent again (they are also sent after every connect).
    pub birth_interval: Duration,
}

/// A secret named by the config, read when it is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

impl Secret {
    /// The secret's text (a file's trailing line break removed), or why it cannot be had.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Env(name) => std::env::var(name).map_err(|_| format!("the password variable {name} is not set")),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|e| format!("read the password file {}: {e}", path.display())),
        }
    }
}

/// One named reader of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Sink {
    pub name: String,
    pub kind: SinkKind,
}

/// Settings of this airlock instance.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The instance name, unique in the plant; it goes on every upstream message.
    pub name: String,
    /// For a simulated plant only: the gateway's clock runs this many times faster than the
    /// wall clock (1 for a real plant), starting at `clock_start` (default: when it starts).
    pub clock_speed: f64,
    pub clock_start: Option<airlock_model::Timestamp>,
}

/// One machine or controller that airlock reads.
#[derive(Debug, Clone)]
pub struct Device {
    pub name: String,
    /// The device's place: the configured asset path with the device name appended.
    pub path: AssetPath,
    pub poll_interval: Duration,
    pub timeout: Duration,
    /// Requests per second this device may receive at most, whatever else the config says.
    pub rate_max_per_s: f64,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The device's tags, whatever the protocol; a tag's index here is its index in the
    /// protocol's own list.
    pub tags: Vec<Tag>,
    pub protocol: Protocol,
    pub oee: Option<OeeSettings>,
}

/// One value of a device, as the edge and the store see it, whatever protocol reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub name: String,
    /// The tag's place: the device path with the tag name appended.
    pub path: AssetPath,
    /// What kind of value it is (for OPC UA and MQTT tags, `f64` unless configured).
    pub data_type: DataType,
    /// Engineering unit, e.g. `mm/s`, `degC`, `parts`.
    pub unit: Option<String>,
    /// The historian stores this tag's values rounded to the nearest multiple of this (a
    /// finite number above 0); `None`: as read.
    pub historian_resolution: Option<f64>,
    /// What the edge does with this tag's samples.
    pub edge: TagEdge,
}

/// How a device is read. A closed set: one variant per southbound driver.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// Shared with the device's task, not copied: its tags are most of a device's size.
    ModbusTcp(std::sync::Arc<ModbusDevice>),
    OpcUa(OpcUaDevice),
    /// An OT-side MQTT broker, subscribed to (never published to).
    Mqtt(MqttDevice),
}

impl SinkKind {
    /// What the sink is, as the dashboard and the command line name it (`type`, and
    /// `sparkplug` for an MQTT sink with a Sparkplug B section).
    pub fn name(&self) -> &'static str {
        match self {
            SinkKind::Jsonl { .. } => "jsonl",
            SinkKind::Http(_) => "http",
            SinkKind::Mqtt(m) if m.sparkplug.is_some() => "sparkplug",
            SinkKind::Mqtt(_) => "mqtt",
            SinkKind::Diode(_) => "diode",
            SinkKind::Kafka(_) => "kafka",
        }
    }
}

impl Protocol {
    /// The name used in the config's `protocol` key.
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::ModbusTcp(_) => "modbus_tcp",
            Protocol::OpcUa(_) => "opcua",
            Protocol::Mqtt(_) => "mqtt",
        }
    }

    /// Where the device is: `host:port` or an `opc.tcp://` endpoint.
    pub fn address(&self) -> &str {
        match self {
            Protocol::ModbusTcp(m) => &m.address,
            Protocol::OpcUa(o) => &o.endpoint,
            Protocol::Mqtt(m) => &m.address,
        }
    }
}

impl Device {
    /// The number of tags configured on this device.
    pub fn tag_count(&self) -> usize {
        self.tags.len()
    }
}

/// Reads and validates the config file at `path`.
/// `text` as a TOML basic string: quotes, backslashes and control characters escaped (for the
/// commands that print config: `browse --toml`, `import modbus-csv`).
pub fn toml_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one(ConfigError::whole_file(path, format!("cannot read the file: {e}"))))?;
    parse(&text, path)
}

/// Whether config `text` is a receiving half's (it has a `receive` table, however TOML writes
/// it); `false` for text that is no TOML (the gateway's loader then says where and why).
pub fn is_receive(text: &str) -> bool {
    // A gateway's config (10,000 tags, say) is not parsed as one tree to find that out.
    text.contains("receive") && text.parse::<toml::Table>().is_ok_and(|t| t.contains_key("receive"))
}

/// Reads and validates the receiving half's config file (`airlock receive`).
pub fn load_receive(path: &Path) -> Result<ReceiveConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one(ConfigError::whole_file(path, format!("cannot read the file: {e}"))))?;
    parse_receive(&text, path)
}

/// Validates the receiving half's config text; `file` is only used in messages.
pub fn parse_receive(text: &str, file: &Path) -> Result<ReceiveConfig, ConfigErrors> {
    let raw: raw::RawConfig =
        toml::from_str(text).map_err(|e| ConfigErrors::one(ConfigError::from_toml(file, text, &e, 0)))?;
    validate::validate_receive(&raw, text, file)
}

/// Validates config `text`; `file` is only used to name the file in errors.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let raw = match sections::read(text, file).map_err(ConfigErrors::one)? {
        Some(raw) => raw,
        None => toml::from_str(text).map_err(|e| ConfigErrors::one(ConfigError::from_toml(file, text, &e, 0)))?,
    };
    validate::validate(&raw, text, file)
}
