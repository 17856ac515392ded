//! The one validation pass: raw structs in, a [`Config`] or every problem out.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_model::{AssetPath, check_segment};
use toml::Spanned;

mod source;

use crate::modbus::{DataType, ModbusDevice, ModbusTag, Space, WordOrder};
use crate::raw::RawSink;
use crate::raw::{RawConfig, RawDevice, RawTag};
use crate::{
    BearingSettings, Config, ConfigError, ConfigErrors, Device, DiodeSink, Edge, Gateway, HttpSink, MqttSink,
    OeeSettings, Production, Protocol, Receive, ReceiveConfig, Replay, Secret, Sink, SinkKind, Sparkplug, Store, Tag,
    TagAlarms, TagEdge, VibrationSettings,
};

/// Defaults, stated once (and in `docs/config.md`).
pub const POLL_INTERVAL_MS_DEFAULT: i64 = 1000;
pub const TIMEOUT_MS_DEFAULT: i64 = 1000;
pub const RATE_MAX_PER_S_DEFAULT: f64 = 20.0;
pub const BACKOFF_INITIAL_MS_DEFAULT: i64 = 500;
pub const BACKOFF_MAX_MS_DEFAULT: i64 = 30_000;
pub const UNIT_ID_DEFAULT: i64 = 1;
/// Longest poll interval and timeout accepted: one day.
const INTERVAL_MS_MAX: i64 = 86_400_000;

/// Collects problems while walking the raw config.
struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn err(&mut self, span: Range<usize>, key: String, message: String) {
        self.errors.push(ConfigError::at(self.file, self.text, span, key, message));
    }

    /// An integer key in `min..=max`, or its default when absent.
    fn int(&mut self, v: &Option<Spanned<i64>>, key: &str, min: i64, max: i64, default: i64) -> i64 {
        match v {
            None => default,
            Some(s) if (min..=max).contains(s.get_ref()) => *s.get_ref(),
            Some(s) => {
                let what = if *s.get_ref() == 0 && min > 0 { " (zero is not allowed)" } else { "" };
                let msg = format!("{} is out of range {min}..={max}{what}", s.get_ref());
                self.err(s.span(), key.to_owned(), msg);
                default
            }
        }
    }

    /// A name usable as a segment of an asset path and an MQTT topic.
    fn segment(&mut self, name: &Spanned<String>, key: String) {
        if let Err(e) = check_segment(name.get_ref()) {
            self.err(name.span(), key, format!("{:?} is not a valid name: {e}", name.get_ref()));
        }
    }
}

pub fn validate(raw: &RawConfig, text: &str, file: &Path) -> Result<Config, ConfigErrors> {
    let mut c = Checker { file, text, errors: Vec::new() };
    let gateway = gateway(&mut c, raw);
    if raw.device.is_empty() {
        c.errors.push(ConfigError::whole_file(file, "no [[device]] is configured".into()));
    }
    let mut names: HashMap<&str, Range<usize>> = HashMap::new();
    let mut devices = Vec::new();
    for d in &raw.device {
        let d = d.get_ref();
        if let Some(first) = names.insert(d.name.get_ref(), d.name.span()) {
            let (line, _) = line_of(text, first.start);
            let msg = format!("device name {:?} is already used on line {line}", d.name.get_ref());
            c.err(d.name.span(), "device.name".into(), msg);
        }
        devices.extend(device(&mut c, d).map(std::sync::Arc::new));
    }
    let store = store(&mut c, raw);
    let edge = edge(&mut c, raw);
    let sinks = sinks(&mut c, raw);
    let web = raw.web.as_ref().and_then(|w| web(&mut c, w));
    if let Some(r) = &raw.receive {
        let msg = "[receive] belongs in the receiving half's config (`airlock receive FILE`), not a gateway's".into();
        c.err(r.span(), "receive".into(), msg);
    }
    if c.errors.is_empty() {
        Ok(Config { gateway, edge, store, devices, sinks, web })
    } else {
        c.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(c.errors))
    }
}

/// The receiving half of a diode: `[receive]`, its own `[store]` and `[[sink]]`s; no devices.
pub fn validate_receive(raw: &RawConfig, text: &str, file: &Path) -> Result<ReceiveConfig, ConfigErrors> {
    let mut c = Checker { file, text, errors: Vec::new() };
    for d in &raw.device {
        let msg = "a receiving half reads no devices: it takes what the sending half sends".into();
        c.err(d.span(), "device".into(), msg);
    }
    if let Some(g) = &raw.gateway {
        let msg = "the receiving half sends under the sender's name ([receive] sender), not its own".into();
        c.err(g.span(), "gateway".into(), msg);
    }
    if let Some(w) = &raw.web {
        let msg =
            "the dashboard ([web]) is served by a gateway (airlock run, airlock demo), not by a receiving half".into();
        c.err(w.span(), "web".into(), msg);
    }
    if raw.store.is_none() {
        let msg = "the receiving half needs a [store] (data_dir): it keeps what it received in its own outbox".into();
        c.errors.push(ConfigError::whole_file(file, msg));
    }
    if raw.sink.is_empty() {
        let msg = "the receiving half needs at least one [[sink]] to send what it receives to".into();
        c.errors.push(ConfigError::whole_file(file, msg));
    }
    let receive = match &raw.receive {
        None => {
            c.errors.push(ConfigError::whole_file(file, "no [receive] section (listen, sender)".into()));
            None
        }
        Some(r) => receive(&mut c, r.get_ref()),
    };
    let store = store(&mut c, raw);
    let sinks = sinks(&mut c, raw);
    for (s, raw_sink) in sinks.iter().zip(&raw.sink) {
        if matches!(s.kind, SinkKind::Diode(_)) {
            let msg = "a receiving half cannot send on through another diode".into();
            c.err(raw_sink.get_ref().kind.span(), format!("sink[{}].type", s.name), msg);
        }
    }
    match receive {
        Some(receive) if c.errors.is_empty() => Ok(ReceiveConfig { receive, store, sinks }),
        _ => {
            c.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(c.errors))
        }
    }
}

fn receive(c: &mut Checker, r: &crate::raw::RawReceive) -> Option<Receive> {
    let listen = socket_address(c, &r.listen, "receive.listen".into());
    c.segment(&r.sender, "receive.sender".into());
    let reorder = c.int(&r.reorder_ms, "receive.reorder_ms", 10, 600_000, 1000);
    let silent = c.int(&r.silent_after_s, "receive.silent_after_s", 1, 3600, 5);
    let buffer = c.int(&r.receive_buffer_bytes, "receive.receive_buffer_bytes", 65_536, 1 << 30, 8 << 20);
    let key_file = diode_key(c, &r.key_file, "receive.key_file".into());
    Some(Receive {
        listen: listen?,
        sender: r.sender.get_ref().clone(),
        reorder: Duration::from_millis(reorder.unsigned_abs()),
        silent_after: Duration::from_secs(silent.unsigned_abs()),
        receive_buffer_bytes: buffer.unsigned_abs() as usize,
        key_file,
    })
}

/// The smallest diode key.
pub const DIODE_KEY_BYTES_MIN: u64 = 16;

/// A diode's shared key file: it must be readable and hold at least 16 bytes (its bytes are
/// the key, whatever they are).
fn diode_key(c: &mut Checker, file: &Option<Spanned<String>>, key: String) -> Option<PathBuf> {
    let file = file.as_ref()?;
    let path = resolve(c, file.get_ref());
    let problem = match std::fs::metadata(&path) {
        Err(e) => Some(format!("cannot read {}: {e}", path.display())),
        Ok(m) if m.len() < DIODE_KEY_BYTES_MIN => Some(format!(
            "{} holds {} bytes; a diode key needs at least {DIODE_KEY_BYTES_MIN} (make one with `head -c 32 /dev/urandom > diode.key` and copy it to both halves)",
            path.display(),
            m.len()
        )),
        Ok(_) => None,
    };
    if let Some(msg) = problem {
        c.err(file.span(), key, msg);
    }
    Some(path)
}

/// How a sink sends a backlog: `replay` (`in-order` or `live-first`) and its rate cap.
fn replay(c: &mut Checker, s: &RawSink, key: &impl Fn(&str) -> String) -> Replay {
    let replay_rate = rate_max_per_s(c, &s.replay_rate_max_per_s, key("replay_rate_max_per_s"));
    match s.replay.as_ref().map(|r| (r, r.get_ref().as_str())) {
        None | Some((_, "in-order")) => {
            if let Some(r) = &s.replay_rate_max_per_s {
                c.err(r.span(), key("replay_rate_max_per_s"), "is only for replay = \"live-first\"".into());
            }
            Replay::InOrder
        }
        Some((_, "live-first")) => {
            Replay::LiveFirst { rate_max_per_s: if s.replay_rate_max_per_s.is_some() { replay_rate } else { 1000.0 } }
        }
        Some((r, other)) => {
            c.err(
                r.span(),
                key("replay"),
                format!("unknown replay {other:?}; expected \"in-order\" or \"live-first\""),
            );
            Replay::InOrder
        }
    }
}

/// `type = "kafka"`: brokers, a topic (template), compression, TLS, SASL.
fn kafka_sink(c: &mut Checker, s: &RawSink, key: &impl Fn(&str) -> String) -> Option<crate::KafkaSink> {
    let Some(brokers) = &s.brokers else {
        c.err(s.kind.span(), key("brokers"), "a kafka sink needs brokers = [\"host:9092\", ...]".into());
        return None;
    };
    if brokers.get_ref().is_empty() {
        c.err(brokers.span(), key("brokers"), "name at least one broker (host:port)".into());
    }
    for b in brokers.get_ref() {
        let ok =
            b.get_ref().rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            c.err(b.span(), key("brokers"), format!("{:?} is not host:port", b.get_ref()));
        } else if b.get_ref().starts_with('[') || b.get_ref().matches(':').count() > 1 {
            // Every connection goes through the sink's broker gate (a SOCKS5 proxy in the
            // gateway), and rskafka cannot ask a proxy for an IPv6 address.
            let msg = format!(
                "{:?} is an IPv6 address: give the broker's host name (or an IPv4 address), as the cluster advertises it",
                b.get_ref()
            );
            c.err(b.span(), key("brokers"), msg);
        }
    }
    let topic = s.topic.as_ref().map_or("airlock.{class}".to_owned(), |t| t.get_ref().clone());
    // Kafka's topic names: letters, digits, `.`, `_`, `-`, at most 249.
    let filled = topic.replace("{class}", "aggregates");
    if filled.is_empty()
        || filled.len() > 249
        || !filled.chars().all(|ch| ch.is_ascii_alphanumeric() || ".-_".contains(ch))
    {
        let span = s.topic.as_ref().map_or(s.kind.span(), |t| t.span());
        let msg =
            format!("{topic:?} is not a Kafka topic name (letters, digits, `.`, `_`, `-`; `{{class}}` for the class)");
        c.err(span, key("topic"), msg);
    }
    let lz4 = match s.compression.as_ref().map(|v| v.get_ref().as_str()) {
        None | Some("lz4") => true,
        Some("none") => false,
        Some(other) => {
            let span = s.compression.as_ref().map_or(0..0, |v| v.span());
            c.err(span, key("compression"), format!("{other:?}: compression is \"lz4\" or \"none\""));
            true
        }
    };
    let sasl = match s.sasl.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
        None => None,
        Some((mechanism, span)) => {
            let m = match mechanism {
                "plain" => Some(crate::Sasl::Plain),
                "scram-sha-256" => Some(crate::Sasl::ScramSha256),
                "scram-sha-512" => Some(crate::Sasl::ScramSha512),
                other => {
                    let msg = format!("{other:?}: sasl is \"plain\", \"scram-sha-256\" or \"scram-sha-512\"");
                    c.err(span.clone(), key("sasl"), msg);
                    None
                }
            };
            let password = match (&s.password_env, &s.password_file) {
                (Some(e), None) => Some(Secret::Env(e.get_ref().clone())),
                (None, Some(f)) => Some(Secret::File(resolve(c, f.get_ref()))),
                _ => {
                    c.err(
                        span.clone(),
                        key("sasl"),
                        "SASL needs username and one of password_env, password_file".into(),
                    );
                    None
                }
            };
            if s.username.is_none() {
                c.err(span, key("username"), "SASL needs username".into());
            }
            match (m, password, &s.username) {
                (Some(m), Some(p), Some(u)) => Some((m, u.get_ref().clone(), p)),
                _ => None,
            }
        }
    };
    let tls = s.tls.as_ref().is_some_and(|t| *t.get_ref());
    if let Some(crate::Sasl::Plain) = sasl.as_ref().map(|s| s.0)
        && !tls
        && !s.allow_plain_credentials.as_ref().is_some_and(|a| *a.get_ref())
    {
        let span = s.sasl.as_ref().map_or(0..0, |v| v.span());
        let msg = "SASL PLAIN without tls = true sends the password in the clear: set tls = true, or allow_plain_credentials = true".into();
        c.err(span, key("sasl"), msg);
    }
    let client_cert = match (&s.client_cert_file, &s.client_key_file) {
        (Some(cert), Some(k)) => Some((resolve(c, cert.get_ref()), resolve(c, k.get_ref()))),
        (None, None) => None,
        (Some(v), None) | (None, Some(v)) => {
            c.err(v.span(), key("client_cert_file"), "client_cert_file and client_key_file come together".into());
            None
        }
    };
    let rate = rate_max_per_s(c, &s.rate_max_per_s, key("rate_max_per_s"));
    let rate = if s.rate_max_per_s.is_some() { rate } else { 50_000.0 };
    let replay = replay(c, s, key);
    Some(crate::KafkaSink {
        brokers: brokers.get_ref().iter().map(|b| b.get_ref().clone()).collect(),
        topic,
        lz4,
        tls,
        ca_file: s.ca_file.as_ref().map(|f| resolve(c, f.get_ref())),
        client_cert,
        sasl,
        rate_max_per_s: rate,
        replay,
    })
}

/// `[web]`: loopback is open to whoever is on the box; any other address needs a token and
/// TLS (or an explicit `allow_plain_http = true`).
fn web(c: &mut Checker, w: &Spanned<crate::raw::RawWeb>) -> Option<crate::Web> {
    let w = w.get_ref();
    let listen = socket_address(c, &w.listen, "web.listen".into())?;
    let tls = match (&w.cert_file, &w.key_file) {
        (Some(cert), Some(key)) => Some((resolve(c, cert.get_ref()), resolve(c, key.get_ref()))),
        (None, None) => None,
        (Some(s), None) | (None, Some(s)) => {
            let msg = "cert_file and key_file come together (the certificate chain and its private key, PEM)".into();
            c.err(s.span(), if w.cert_file.is_some() { "web.cert_file" } else { "web.key_file" }.into(), msg);
            None
        }
    };
    let token_env = w.token_env.as_ref().map(|t| t.get_ref().clone());
    if let Some(t) = &w.token_env
        && (t.get_ref().is_empty() || !t.get_ref().chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'))
    {
        c.err(t.span(), "web.token_env".into(), format!("{:?} is not an environment variable's name", t.get_ref()));
    }
    if !listen.ip().is_loopback() {
        if token_env.is_none() {
            let msg = format!(
                "{listen} is reachable from the network: set token_env (the environment variable holding the access token), or listen on 127.0.0.1"
            );
            c.err(w.listen.span(), "web.listen".into(), msg);
        }
        let plain = w.allow_plain_http.as_ref().is_some_and(|p| *p.get_ref());
        if tls.is_none() && !plain && w.cert_file.is_none() && w.key_file.is_none() {
            let msg = format!(
                "{listen} is reachable from the network: set cert_file and key_file for HTTPS, or allow_plain_http = true to send the token and the plant's data unencrypted"
            );
            c.err(w.listen.span(), "web.listen".into(), msg);
        }
    }
    Some(crate::Web { listen, token_env, tls })
}

/// An `ip:port` (no host name: resolving one would need an answer from the network).
fn socket_address(c: &mut Checker, v: &Spanned<String>, key: String) -> Option<std::net::SocketAddr> {
    match v.get_ref().parse() {
        Ok(a) => Some(a),
        Err(_) => {
            let msg = format!(
                "{:?} is not ip:port (a diode side takes an IP address, not a host name: resolving a name needs an answer from the network)",
                v.get_ref()
            );
            c.err(v.span(), key, msg);
            None
        }
    }
}

/// The smallest link MTU a diode takes: one datagram must hold its headers and a symbol.
pub const DIODE_MTU_MIN: i64 = 128;

/// The bytes of a diode heartbeat datagram on the link without the gateway's name: IP and UDP
/// headers (28), the datagram header (16), the heartbeat's fields (62) and checksum (4).
/// `airlock-diode`'s wire tests check it against what `encode_heartbeat` writes.
pub const DIODE_HEARTBEAT_BYTES: i64 = 28 + 16 + 62 + 4;

fn diode_sink(c: &mut Checker, s: &RawSink, key: &impl Fn(&str) -> String, gateway_name: &str) -> Option<DiodeSink> {
    let Some(address) = &s.address else {
        c.err(s.kind.span(), key("address"), "a diode sink needs address (the receiving half's ip:port)".into());
        return None;
    };
    let address = socket_address(c, address, key("address"));
    let bind = s.bind.as_ref().map(|b| socket_address(c, b, key("bind")));
    let mtu = match &s.mtu_bytes {
        Some(m) if *m.get_ref() < DIODE_MTU_MIN => {
            let msg = format!(
                "{} is below {DIODE_MTU_MIN}: a datagram needs 28 bytes of IP and UDP headers, 38 of its own and a symbol of at least 16",
                m.get_ref()
            );
            c.err(m.span(), key("mtu_bytes"), msg);
            1500
        }
        _ => c.int(&s.mtu_bytes, &key("mtu_bytes"), DIODE_MTU_MIN, 65_535, 1500),
    };
    // A heartbeat carries the gateway's name whole (up to 255 bytes): it must fit one datagram.
    let heartbeat_bytes = DIODE_HEARTBEAT_BYTES + gateway_name.len().min(255) as i64;
    if let Some(m) = &s.mtu_bytes
        && (DIODE_MTU_MIN..heartbeat_bytes).contains(m.get_ref())
    {
        let msg = format!(
            "{} is too small for a heartbeat of gateway {gateway_name:?}: it needs {heartbeat_bytes} bytes (28 of IP and UDP headers, 82 of its own, the name's {})",
            m.get_ref(),
            gateway_name.len()
        );
        c.err(m.span(), key("mtu_bytes"), msg);
    }
    let repair = ranged(c, &s.repair_percent, key("repair_percent"), 0.0, 400.0, "percent").unwrap_or(5.0);
    let rate = c.int(&s.rate_max_bytes_per_s, &key("rate_max_bytes_per_s"), 10_000, 10_000_000_000, 10_000_000);
    let heartbeat = c.int(&s.heartbeat_s, &key("heartbeat_s"), 1, 3600, 1);
    let repeat = s.repeat_after_ms.as_ref().map(|_| c.int(&s.repeat_after_ms, &key("repeat_after_ms"), 10, 600_000, 0));
    let block = c.int(&s.block_bytes, &key("block_bytes"), 1024, 16 << 20, 65_536);
    // RaptorQ encodes at most 56,403 symbols in one block; a symbol is what a datagram holds.
    let symbol = ((mtu - 28 - 38).max(0) / 8) * 8;
    if let Some(b) = &s.block_bytes
        && block > 56_403 * symbol
    {
        let msg = format!(
            "{block} is more than one block can hold at mtu_bytes = {mtu}: 56,403 symbols of {symbol} bytes ({} bytes)",
            56_403 * symbol
        );
        c.err(b.span(), key("block_bytes"), msg);
    }
    let key_file = diode_key(c, &s.key_file, key("key_file"));
    Some(DiodeSink {
        key_file,
        address: address?,
        bind: bind.flatten(),
        mtu_bytes: mtu.unsigned_abs() as usize,
        repair_percent: repair,
        rate_max_bytes_per_s: rate.unsigned_abs(),
        heartbeat: Duration::from_secs(heartbeat.unsigned_abs()),
        repeat: repeat.map(|ms| Duration::from_millis(ms.unsigned_abs())),
        block_bytes: block.unsigned_abs() as usize,
    })
}

fn line_of(text: &str, offset: usize) -> (usize, usize) {
    let e = ConfigError::at(Path::new(""), text, offset..offset, String::new(), String::new());
    (e.line, e.column)
}

/// The fastest a simulated plant's clock may run: a year in about five minutes.
const CLOCK_SPEED_MAX: f64 = 100_000.0;

fn gateway(c: &mut Checker, raw: &RawConfig) -> Gateway {
    let g = raw.gateway.as_ref().map(|g| g.get_ref());
    let name = match g.and_then(|g| g.name.as_ref()) {
        Some(n) => {
            c.segment(n, "gateway.name".into());
            n.get_ref().clone()
        }
        None => "airlock".into(),
    };
    let clock_speed =
        ranged(c, &g.and_then(|g| g.clock_speed.clone()), "gateway.clock_speed".into(), 0.001, CLOCK_SPEED_MAX, "")
            .unwrap_or(1.0);
    let clock_start = g.and_then(|g| g.clock_start.as_ref()).and_then(|s| {
        let t = airlock_model::Timestamp::parse_rfc3339(s.get_ref());
        if t.is_none() {
            let msg = format!("{:?} is not a time like 2026-11-29T06:00:00Z", s.get_ref());
            c.err(s.span(), "gateway.clock_start".into(), msg);
        }
        t
    });
    Gateway { name, clock_speed, clock_start }
}

/// The southbound protocols a device may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Modbus,
    OpcUa,
    Mqtt,
}

const KINDS: [(&str, Kind); 3] = [("modbus_tcp", Kind::Modbus), ("opcua", Kind::OpcUa), ("mqtt", Kind::Mqtt)];

fn device(c: &mut Checker, d: &RawDevice) -> Option<Device> {
    let k = |key: &str| format!("device[{}].{key}", d.name.get_ref());
    c.segment(&d.name, k("name"));
    let path = match AssetPath::parse(d.asset_path.get_ref()) {
        Ok(p) if p.segments().count() <= 5 => p.child(d.name.get_ref()).ok(),
        Ok(_) => {
            let msg = "has more than 5 segments; give enterprise/site/area/line/cell at most".into();
            c.err(d.asset_path.span(), k("asset_path"), msg);
            None
        }
        Err(e) => {
            c.err(d.asset_path.span(), k("asset_path"), format!("is not a valid asset path: {e}"));
            None
        }
    };
    let kind = KINDS.iter().find(|(n, _)| n == d.protocol.get_ref()).map(|(_, k)| *k);
    if kind.is_none() {
        let msg =
            format!("unknown protocol {:?}; expected \"modbus_tcp\", \"opcua\" or \"mqtt\"", d.protocol.get_ref());
        c.err(d.protocol.span(), k("protocol"), msg);
    }
    if let Some(kind) = kind {
        source::refuse_device_keys(c, d, kind);
    }
    match kind {
        Some(Kind::OpcUa) => source::check_endpoint(c, &d.address, k("address")),
        Some(Kind::Mqtt) => source::check_broker(c, &d.address, k("address")),
        _ => check_address(c, &d.address, k("address")),
    }
    let poll_ms = c.int(&d.poll_interval_ms, &k("poll_interval_ms"), 1, INTERVAL_MS_MAX, POLL_INTERVAL_MS_DEFAULT);
    let timeout_ms = c.int(&d.timeout_ms, &k("timeout_ms"), 1, INTERVAL_MS_MAX, TIMEOUT_MS_DEFAULT);
    let backoff_initial_ms =
        c.int(&d.backoff_initial_ms, &k("backoff_initial_ms"), 1, INTERVAL_MS_MAX, BACKOFF_INITIAL_MS_DEFAULT);
    let backoff_max_ms = c.int(&d.backoff_max_ms, &k("backoff_max_ms"), 1, INTERVAL_MS_MAX, BACKOFF_MAX_MS_DEFAULT);
    if let Some(s) = &d.backoff_max_ms
        && backoff_max_ms < backoff_initial_ms
    {
        let msg = format!("{backoff_max_ms} is less than backoff_initial_ms ({backoff_initial_ms})");
        c.err(s.span(), k("backoff_max_ms"), msg);
    }
    let rate = rate_max_per_s(c, &d.rate_max_per_s, k("rate_max_per_s"));
    if d.tag.is_empty() && d.tag_sections.is_empty() {
        c.err(d.name.span(), k("tag"), "the device has no [[device.tag]]".into());
    }
    let poll_interval = Duration::from_millis(poll_ms.unsigned_abs());
    let (tags, protocol) = match kind? {
        Kind::Modbus => {
            let (tags, modbus) = modbus_device(c, d, path.as_ref());
            (tags, Protocol::ModbusTcp(std::sync::Arc::new(modbus)))
        }
        Kind::OpcUa => {
            let (tags, opcua) = source::opcua_device(c, d, path.as_ref(), poll_interval);
            (tags, Protocol::OpcUa(opcua?))
        }
        Kind::Mqtt => {
            let (tags, mqtt) = source::mqtt_device(c, d, path.as_ref());
            (tags, Protocol::Mqtt(mqtt?))
        }
    };
    let oee = oee(c, d);
    let path = path?;
    // Held for the gateway's life: no room beyond the tags (grown a push at a time, the vector
    // could hold half as much again: 1.2 MB at 10,000 tags).
    let mut tags = tags;
    tags.shrink_to_fit();
    Some(Device {
        name: d.name.get_ref().clone(),
        path,
        poll_interval,
        timeout: Duration::from_millis(timeout_ms.unsigned_abs()),
        rate_max_per_s: rate,
        backoff_initial: Duration::from_millis(backoff_initial_ms.unsigned_abs()),
        backoff_max: Duration::from_millis(backoff_max_ms.unsigned_abs()),
        oee,
        tags,
        protocol,
    })
}

fn modbus_device(c: &mut Checker, d: &RawDevice, device_path: Option<&AssetPath>) -> (Vec<Tag>, ModbusDevice) {
    let k = |key: &str| format!("device[{}].{key}", d.name.get_ref());
    let unit_id = c.int(&d.unit_id, &k("unit_id"), 0, 255, UNIT_ID_DEFAULT);
    let max_gap_registers = c.int(&d.max_gap_registers, &k("max_gap_registers"), 0, 124, 0);
    let max_gap_bits = c.int(&d.max_gap_bits, &k("max_gap_bits"), 0, 1999, 0);
    let in_flight_max = c.int(&d.requests_in_flight_max, &k("requests_in_flight_max"), 1, 16, 1);
    let mut placed = Vec::new();
    let mut tags = Vec::new();
    for_each_tag(c, d, device_path, Kind::Modbus, |c, t, key, tag| {
        if let Some(m) = modbus_tag(c, t, key, tag.as_ref())
            && let (Some(tag), Some(span)) = (tag, t.address.as_ref().map(|a| a.span()))
        {
            placed.push((m, span));
            tags.push(tag);
        }
    });
    check_overlaps(c, d, &placed);
    let mut modbus = ModbusDevice {
        address: d.address.get_ref().clone(),
        unit_id: u8::try_from(unit_id).unwrap_or(1),
        max_gap_registers: u16::try_from(max_gap_registers).unwrap_or(0),
        max_gap_bits: u16::try_from(max_gap_bits).unwrap_or(0),
        requests_in_flight_max: u8::try_from(in_flight_max).unwrap_or(1),
        tags: placed.into_iter().map(|(t, _)| t).collect(),
    };
    // Collected in place over the (tag, span) pairs, it would keep their larger room.
    modbus.tags.shrink_to_fit();
    (tags, modbus)
}

/// Walks a device's tags: names unique, the protocol-neutral part checked; `each` gets every
/// tag (with its neutral part when that is valid) to check and keep its protocol part.
fn for_each_tag(
    c: &mut Checker,
    d: &RawDevice,
    device_path: Option<&AssetPath>,
    kind: Kind,
    mut each: impl FnMut(&mut Checker, &RawTag, &str, Option<Tag>),
) {
    let names = tag_names(c, d);
    let siblings: Vec<&str> = names.iter().map(|n| n.get_ref().as_str()).collect();
    let mut seen: HashMap<&str, Range<usize>> = HashMap::new();
    for name in &names {
        if let Some(first) = seen.insert(name.get_ref(), name.span()) {
            let (line, _) = line_of(c.text, first.start);
            let msg = format!("tag name {:?} is already used on this device on line {line}", name.get_ref());
            let key = format!("device[{}].tag[{}].name", d.name.get_ref(), name.get_ref());
            c.err(name.span(), key, msg);
        }
    }
    let mut check = |c: &mut Checker, t: &RawTag| {
        let key = format!("device[{}].tag[{}]", d.name.get_ref(), t.name.get_ref());
        source::refuse_tag_keys(c, t, &key, kind);
        let tag = tag(c, t, &key, device_path, &siblings, kind);
        each(c, t, &key, tag);
    };
    for t in &d.tag {
        check(c, t.get_ref());
    }
    // A tag read section by section is parsed here, checked, and dropped.
    for s in &d.tag_sections {
        match crate::sections::section::<RawTag>(c.text, c.file, s) {
            Ok(t) => check(c, t.get_ref()),
            Err(e) => c.errors.push(e),
        }
    }
}

/// The names of a device's tags, in file order (a tag read section by section is parsed for
/// its name alone; one that does not parse is reported when it is checked).
fn tag_names(c: &Checker, d: &RawDevice) -> Vec<Spanned<String>> {
    #[derive(serde::Deserialize)]
    struct Named {
        name: Spanned<String>,
    }
    let mut names: Vec<Spanned<String>> = d.tag.iter().map(|t| t.get_ref().name.clone()).collect();
    for s in &d.tag_sections {
        if let Ok(n) = crate::sections::section::<Named>(c.text, c.file, s) {
            names.push(n.into_inner().name);
        }
    }
    names
}

fn check_address(c: &mut Checker, address: &Spanned<String>, key: String) {
    if !is_host_port(address.get_ref()) {
        let msg = format!("{:?} is not host:port (e.g. \"192.168.10.21:502\")", address.get_ref());
        c.err(address.span(), key, msg);
    }
}

/// `host:port` with a port above 0.
pub(super) fn is_host_port(a: &str) -> bool {
    match a.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// A credential sent where anyone on the path can read it (a password over `mqtt://`, a token
/// over `http://`, an OPC UA user over security `none`) to a host other than this machine is
/// refused, unless the config accepts it with `allow_plain_credentials = true`.
fn plain_credential(
    c: &mut Checker,
    allow: &Option<Spanned<bool>>,
    host: &str,
    span: Range<usize>,
    key: String,
    what: &str,
    fix: &str,
) {
    if is_loopback(host) || allow.as_ref().is_some_and(|a| *a.get_ref()) {
        return;
    }
    let msg = format!(
        "{what} to {host} crosses the network readable by anyone on the path: use {fix}, or set \
         allow_plain_credentials = true to accept that"
    );
    c.err(span, key, msg);
}

/// Whether `host` is this machine, so that what is sent to it crosses no network.
fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of `scheme://[user@]host[:port][/path]` (or of `host:port`).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)).filter(|h| !h.is_empty())
}

/// The slowest rate anything may be capped at: one every 1,000 s. Below it a pace becomes a
/// wait of ages (1e-30 per second once passed and panicked a device task).
const RATE_MIN_PER_S: f64 = 0.001;

fn rate_max_per_s(c: &mut Checker, v: &Option<Spanned<f64>>, key: String) -> f64 {
    ranged(c, v, key, RATE_MIN_PER_S, 100_000.0, "per second").unwrap_or(RATE_MAX_PER_S_DEFAULT)
}

/// A finite number from `min` to `max` (both included), or `None` and an error naming the range.
fn ranged(c: &mut Checker, v: &Option<Spanned<f64>>, key: String, min: f64, max: f64, unit: &str) -> Option<f64> {
    let s = v.as_ref()?;
    let x = *s.get_ref();
    if x.is_finite() && (min..=max).contains(&x) {
        return Some(x);
    }
    c.err(s.span(), key, format!("{x} is out of range: it must be at least {min} and at most {max} {unit}"));
    None
}

/// Where a tag's type is written, or its name when the type is not given.
fn type_span(t: &RawTag) -> Range<usize> {
    t.data_type.as_ref().map_or_else(|| t.name.span(), |d| d.span())
}

/// The protocol-neutral part of a tag: name, type, unit, edge settings.
fn tag(
    c: &mut Checker,
    t: &RawTag,
    key: &str,
    device_path: Option<&AssetPath>,
    siblings: &[&str],
    kind: Kind,
) -> Option<Tag> {
    c.segment(&t.name, format!("{key}.name"));
    let data_type = match &t.data_type {
        Some(name) => data_type(c, t, name, key, kind == Kind::Modbus),
        None if kind == Kind::Modbus => {
            let msg = format!("a Modbus tag needs type ({})", DataType::NAMES.join(", "));
            c.err(t.name.span(), format!("{key}.type"), msg);
            None
        }
        None => {
            data_type_keys_only_for_their_type(c, t, key, "");
            Some(DataType::F64)
        }
    };
    let edge = tag_edge(c, t, key, data_type.unwrap_or(DataType::F64), siblings);
    let historian_resolution = historian_resolution(c, t, key, data_type);
    Some(Tag {
        name: t.name.get_ref().clone(),
        path: device_path?.child(t.name.get_ref()).ok()?,
        data_type: data_type?,
        unit: t.unit.as_ref().map(|u| u.get_ref().clone()),
        historian_resolution,
        edge,
    })
}

/// The resolution a tag's values are stored to in the historian: from 10^-9 to 10^9 (finer or
/// coarser is no instrument's), for a tag the historian stores as a number (not a bool, a
/// string or a waveform).
fn historian_resolution(c: &mut Checker, t: &RawTag, key: &str, data_type: Option<DataType>) -> Option<f64> {
    let s = t.historian_resolution.as_ref()?;
    let key = format!("{key}.historian_resolution");
    if matches!(data_type, Some(DataType::Bool | DataType::String { .. } | DataType::Waveform { .. })) {
        c.err(s.span(), key, "is only for a numeric tag".into());
        return None;
    }
    ranged(c, &t.historian_resolution, key, 1e-9, 1e9, "")
}

/// The Modbus part of a tag: space, address, order, bit, scale.
fn modbus_tag(c: &mut Checker, t: &RawTag, key: &str, tag: Option<&Tag>) -> Option<ModbusTag> {
    let k = |field: &str| format!("{key}.{field}");
    let space = match &t.space {
        Some(s) => lookup(c, s, &Space::ALL, k("space")),
        None => {
            c.err(t.name.span(), k("space"), "a Modbus tag needs space".into());
            None
        }
    };
    let order = match &t.order {
        Some(o) => lookup(c, o, &WordOrder::ALL, k("order")),
        None => Some(WordOrder::Abcd),
    };
    let Some(raw_address) = &t.address else {
        c.err(t.name.span(), k("address"), "a Modbus tag needs address".into());
        return None;
    };
    let address = c.int(&Some(raw_address.clone()), &k("address"), 0, 65_535, 0);
    let bit = t.bit.as_ref().map(|b| c.int(&Some(b.clone()), &k("bit"), 0, 15, 0));
    let (space, order, tag) = (space?, order?, tag?);
    let data_type = tag.data_type;
    check_type_fits_space(c, t, key, space, data_type, bit.is_some());
    let width = if space.is_bit() { 1 } else { i64::from(data_type.registers()) };
    if address + width > 65_536 {
        let msg = format!("{address} + {width} runs past the last address 65535");
        c.err(raw_address.span(), k("address"), msg);
    }
    let scale = finite(c, &t.scale, k("scale"), 1.0);
    let offset = finite(c, &t.offset, k("offset"), 0.0);
    if scale == 0.0 {
        c.err(t.scale.as_ref().map_or(0..0, |s| s.span()), k("scale"), "0 would erase every value".into());
    }
    Some(ModbusTag {
        name: tag.name.clone(),
        path: tag.path.clone(),
        space,
        address: u16::try_from(address).ok()?,
        data_type,
        order,
        bit: bit.and_then(|b| u8::try_from(b).ok()),
        scale,
        offset,
    })
}

fn positive(c: &mut Checker, v: &Option<Spanned<f64>>, key: String, zero_ok: bool) -> Option<f64> {
    let s = v.as_ref()?;
    let x = *s.get_ref();
    if !x.is_finite() || x < 0.0 || (x == 0.0 && !zero_ok) {
        let what = if zero_ok { "0 or more" } else { "above 0" };
        c.err(s.span(), key, format!("{x} must be a finite number {what}"));
        return None;
    }
    Some(x)
}

fn seconds(c: &mut Checker, v: &Option<Spanned<i64>>, key: String, max: i64) -> Option<Duration> {
    let s = v.as_ref()?;
    let n = c.int(&Some(s.clone()), &key, 1, max, 1);
    Some(Duration::from_secs(n.unsigned_abs()))
}

/// The edge settings of a tag: what condenses it, aggregates it, watches it, counts it.
fn tag_edge(c: &mut Checker, t: &RawTag, key: &str, data_type: DataType, siblings: &[&str]) -> TagEdge {
    let k = |field: &str| format!("{key}.{field}");
    let numeric = !matches!(data_type, DataType::Bool | DataType::String { .. });
    let numeric_only = [
        (t.deadband.as_ref().map(|v| v.span()), "deadband"),
        (t.deadband_percent.as_ref().map(|v| v.span()), "deadband_percent"),
        (t.swinging_door_dev.as_ref().map(|v| v.span()), "swinging_door_dev"),
        (t.window_s.as_ref().map(|v| v.span()), "window_s"),
        (t.alarm_high.as_ref().map(|v| v.span()), "alarm_high"),
        (t.alarm_low.as_ref().map(|v| v.span()), "alarm_low"),
        (t.alarm_rate_max_per_s.as_ref().map(|v| v.span()), "alarm_rate_max_per_s"),
    ];
    if !numeric {
        for (span, name) in numeric_only.into_iter().filter_map(|(s, n)| s.map(|s| (s, n))) {
            c.err(span, k(name), "is only for a numeric tag".into());
        }
    }
    let deadband = match (positive(c, &t.deadband, k("deadband"), true), &t.deadband_percent) {
        (Some(_), Some(p)) => {
            c.err(p.span(), k("deadband_percent"), "give deadband or deadband_percent, not both".into());
            None
        }
        (Some(abs), None) => Some(abs),
        (None, Some(p)) => {
            let percent = positive(c, &Some(p.clone()), k("deadband_percent"), true);
            // A span given but not finite is said by `finite`; a missing one below.
            let lo = t.span_min.as_ref().map(|_| finite(c, &t.span_min, k("span_min"), f64::NAN));
            let hi = t.span_max.as_ref().map(|_| finite(c, &t.span_max, k("span_max"), f64::NAN));
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo.is_nan() || hi.is_nan() => None,
                (Some(lo), Some(hi)) if hi > lo => match percent.map(|p| p / 100.0 * (hi - lo)) {
                    Some(band) if !band.is_finite() => {
                        let msg = format!("{band} is not a finite deadband ({p} % of {lo} to {hi})", p = p.get_ref());
                        c.err(p.span(), k("deadband_percent"), msg);
                        None
                    }
                    band => band,
                },
                _ => {
                    c.err(p.span(), k("span_max"), "a deadband in percent needs span_min < span_max".into());
                    None
                }
            }
        }
        (None, None) => None,
    };
    let heartbeat = seconds(c, &t.heartbeat_s, k("heartbeat_s"), 86_400 * 7);
    let sdt_max = seconds(c, &t.swinging_door_max_s, k("swinging_door_max_s"), 86_400 * 7);
    let swinging_door = positive(c, &t.swinging_door_dev, k("swinging_door_dev"), true)
        .map(|dev| (dev, sdt_max.unwrap_or(Duration::from_secs(3600))));
    let window = seconds(c, &t.window_s, k("window_s"), 86_400);
    let alarms = tag_alarms(c, t, key);
    let production = match (&t.production, &t.production_every_parts) {
        (Some(p), every) if *p.get_ref() => {
            if !matches!(
                data_type,
                DataType::U16 | DataType::U32 | DataType::U64 | DataType::I16 | DataType::I32 | DataType::I64
            ) {
                c.err(p.span(), k("production"), "a part counter must be an integer type".into());
            }
            let every = every
                .as_ref()
                .map(|e| c.int(&Some(e.clone()), &k("production_every_parts"), 1, i64::MAX, 1).unsigned_abs());
            let parts_max_per_s = positive(c, &t.production_parts_max_per_s, k("production_parts_max_per_s"), false);
            Some(Production { every_parts: every, parts_max_per_s })
        }
        (_, Some(e)) => {
            c.err(e.span(), k("production_every_parts"), "is only for a tag with production = true".into());
            None
        }
        _ => None,
    };
    if production.is_none()
        && let Some(m) = &t.production_parts_max_per_s
    {
        c.err(m.span(), k("production_parts_max_per_s"), "is only for a tag with production = true".into());
    }
    let vibration = vibration(c, t, key, numeric);
    let bearing = bearing(c, t, key, data_type, siblings);
    let (alarms, bearing) = (alarms.map(Box::new), bearing.map(Box::new));
    TagEdge { deadband, heartbeat, swinging_door, window, alarms, production, vibration, bearing }
}

/// A bearing watched in a waveform tag: its geometry and the tag with the shaft speed (rpm).
fn bearing(c: &mut Checker, t: &RawTag, key: &str, data_type: DataType, siblings: &[&str]) -> Option<BearingSettings> {
    let k = |field: &str| format!("{key}.{field}");
    let any = [
        t.bearing_balls.as_ref().map(|v| v.span()),
        t.bearing_ball_diameter_mm.as_ref().map(|v| v.span()),
        t.bearing_pitch_diameter_mm.as_ref().map(|v| v.span()),
        t.bearing_contact_angle_deg.as_ref().map(|v| v.span()),
        t.shaft_speed_tag.as_ref().map(|v| v.span()),
    ];
    let first = any.iter().flatten().next().cloned()?;
    if !matches!(data_type, DataType::Waveform { .. }) {
        c.err(first, k("bearing_balls"), "a bearing is watched in a waveform tag only".into());
        return None;
    }
    let missing = |c: &mut Checker, field: &str| {
        c.err(type_span(t), k(field), format!("a bearing needs {field}"));
    };
    let balls = match &t.bearing_balls {
        Some(b) => c.int(&Some(b.clone()), &k("bearing_balls"), 3, 100, 9),
        None => {
            missing(c, "bearing_balls");
            9
        }
    };
    let ball = ranged(c, &t.bearing_ball_diameter_mm, k("bearing_ball_diameter_mm"), 0.1, 10_000.0, "mm");
    let pitch = ranged(c, &t.bearing_pitch_diameter_mm, k("bearing_pitch_diameter_mm"), 0.1, 10_000.0, "mm");
    if ball.is_none() && t.bearing_ball_diameter_mm.is_none() {
        missing(c, "bearing_ball_diameter_mm");
    }
    if pitch.is_none() && t.bearing_pitch_diameter_mm.is_none() {
        missing(c, "bearing_pitch_diameter_mm");
    }
    if let (Some(b), Some(p), Some(span)) = (ball, pitch, t.bearing_pitch_diameter_mm.as_ref().map(|v| v.span()))
        && b >= p
    {
        c.err(span, k("bearing_pitch_diameter_mm"), format!("{p} is not larger than the ball diameter {b}"));
    }
    let angle = match &t.bearing_contact_angle_deg {
        Some(a) if !(0.0..=90.0).contains(a.get_ref()) => {
            let msg = format!("{} is no contact angle: 0 to 90 degrees", a.get_ref());
            c.err(a.span(), k("bearing_contact_angle_deg"), msg);
            0.0
        }
        Some(a) => *a.get_ref(),
        None => 0.0,
    };
    let shaft = match &t.shaft_speed_tag {
        Some(name) => {
            let found = siblings.iter().position(|s| *s == name.get_ref());
            if found.is_none() {
                c.err(name.span(), k("shaft_speed_tag"), format!("no tag {:?} on this device", name.get_ref()));
            }
            found
        }
        None => {
            missing(c, "shaft_speed_tag");
            None
        }
    };
    Some(BearingSettings {
        balls: balls as u32,
        ball_diameter_mm: ball?,
        pitch_diameter_mm: pitch?,
        contact_angle_deg: angle,
        shaft_speed_tag: shaft?,
    })
}

fn vibration(c: &mut Checker, t: &RawTag, key: &str, numeric: bool) -> Option<VibrationSettings> {
    let k = |field: &str| format!("{key}.{field}");
    let Some(group) = &t.vibration_group else {
        for (span, name) in [
            (t.vibration_foundation.as_ref().map(|v| v.span()), "vibration_foundation"),
            (t.vibration_advice_days.as_ref().map(|v| v.span()), "vibration_advice_days"),
        ] {
            if let Some(span) = span {
                c.err(span, k(name), "is only for a vibration tag (set vibration_group)".into());
            }
        }
        return None;
    };
    if !numeric {
        c.err(group.span(), k("vibration_group"), "is only for a numeric tag".into());
    }
    let g = c.int(&Some(group.clone()), &k("vibration_group"), 1, 2, 2);
    let rigid = match t.vibration_foundation.as_ref().map(|f| (f, f.get_ref().as_str())) {
        None | Some((_, "rigid")) => true,
        Some((_, "flexible")) => false,
        Some((f, other)) => {
            c.err(
                f.span(),
                k("vibration_foundation"),
                format!("unknown foundation {other:?}; expected \"rigid\" or \"flexible\""),
            );
            true
        }
    };
    let advice_days = ranged(c, &t.vibration_advice_days, k("vibration_advice_days"), 0.01, 3650.0, "days");
    let advice_days = advice_days.unwrap_or(14.0);
    Some(VibrationSettings { group: g as u8, rigid, advice_days })
}

/// A device's OEE rule: its tags must exist on the device.
fn oee(c: &mut Checker, d: &RawDevice) -> Option<OeeSettings> {
    let o = d.oee.as_ref()?.get_ref();
    let k = |field: &str| format!("device[{}].oee.{field}", d.name.get_ref());
    let names = tag_names(c, d);
    let find = |c: &mut Checker, name: &Spanned<String>, field: &str| -> Option<usize> {
        let found = names.iter().position(|t| t.get_ref() == name.get_ref());
        if found.is_none() {
            c.err(name.span(), k(field), format!("no tag {:?} on this device", name.get_ref()));
        }
        found
    };
    let state = find(c, &o.state_tag, "state_tag");
    let parts = find(c, &o.parts_tag, "parts_tag");
    let rejects = o.rejects_tag.as_ref().map(|r| find(c, r, "rejects_tag"));
    let cycle = ranged(c, &Some(o.ideal_cycle_s.clone()), k("ideal_cycle_s"), 0.000_001, 86_400.0, "seconds");
    let drop = ranged(c, &o.performance_drop_percent, k("performance_drop_percent"), 0.1, 100.0, "percent");
    let drop = drop.unwrap_or(5.0);
    let minutes = |c: &mut Checker, v: &Option<Spanned<i64>>, f: &str, default: i64| {
        Duration::from_secs(c.int(v, &k(f), 1, 24 * 60, default).unsigned_abs() * 60)
    };
    let baseline = minutes(c, &o.baseline_minutes, "baseline_minutes", 60);
    let compare = minutes(c, &o.compare_minutes, "compare_minutes", 15);
    Some(OeeSettings {
        state_tag: state?,
        running_value: finite(c, &o.running_value, k("running_value"), 1.0),
        parts_tag: parts?,
        rejects_tag: match rejects {
            Some(r) => Some(r?),
            None => None,
        },
        ideal_cycle_s: cycle?,
        drop_percent: drop,
        baseline,
        compare,
    })
}

fn tag_alarms(c: &mut Checker, t: &RawTag, key: &str) -> Option<TagAlarms> {
    let k = |field: &str| format!("{key}.{field}");
    let any =
        t.alarm_high.is_some() || t.alarm_low.is_some() || t.alarm_rate_max_per_s.is_some() || t.stale_s.is_some();
    if !any {
        for (v, name) in [
            (&t.alarm_hysteresis.as_ref().map(|v| v.span()), "alarm_hysteresis"),
            (&t.alarm_on_delay_ms.as_ref().map(|v| v.span()), "alarm_on_delay_ms"),
            (&t.alarm_off_delay_ms.as_ref().map(|v| v.span()), "alarm_off_delay_ms"),
        ] {
            if let Some(span) = v {
                c.err(
                    span.clone(),
                    k(name),
                    "has no alarm to apply to: set alarm_high, alarm_low, alarm_rate_max_per_s or stale_s".into(),
                );
            }
        }
        return None;
    }
    let finite = |c: &mut Checker, v: &Option<Spanned<f64>>, name: &str| finite(c, v, k(name), f64::NAN);
    let high = t.alarm_high.as_ref().map(|_| finite(c, &t.alarm_high, "alarm_high"));
    let low = t.alarm_low.as_ref().map(|_| finite(c, &t.alarm_low, "alarm_low"));
    if let (Some(h), Some(l), Some(span)) = (high, low, t.alarm_low.as_ref().map(|v| v.span()))
        && l >= h
    {
        c.err(span, k("alarm_low"), format!("{l} is not below alarm_high ({h})"));
    }
    let ms = |c: &mut Checker, v: &Option<Spanned<i64>>, name: &str| {
        Duration::from_millis(c.int(v, &k(name), 0, 3_600_000, 0).unsigned_abs())
    };
    Some(TagAlarms {
        high,
        low,
        hysteresis: positive(c, &t.alarm_hysteresis, k("alarm_hysteresis"), true).unwrap_or(0.0),
        on_delay: ms(c, &t.alarm_on_delay_ms, "alarm_on_delay_ms"),
        off_delay: ms(c, &t.alarm_off_delay_ms, "alarm_off_delay_ms"),
        rate_max_per_s: positive(c, &t.alarm_rate_max_per_s, k("alarm_rate_max_per_s"), false),
        stale: seconds(c, &t.stale_s, k("stale_s"), 86_400),
    })
}

fn edge(c: &mut Checker, raw: &RawConfig) -> Edge {
    let e = raw.edge.as_ref().map(|e| e.get_ref());
    let get = |f: fn(&crate::raw::RawEdge) -> &Option<Spanned<i64>>| e.and_then(|e| f(e).clone());
    let shift_h = c.int(&get(|e| &e.shift_hours), "edge.shift_hours", 1, 24, 8);
    if let Some(h) = get(|e| &e.shift_hours).filter(|h| (1..=24).contains(h.get_ref()) && 24 % h.get_ref() != 0) {
        let msg = format!(
            "{} hours do not divide the day: shifts would start at shift_start_hour only every few days (1, 2, 3, 4, 6, 8, 12 or 24)",
            h.get_ref()
        );
        c.err(h.span(), "edge.shift_hours".into(), msg);
    }
    let start_h = c.int(&get(|e| &e.shift_start_hour), "edge.shift_start_hour", 0, 23, 6);
    let interval = c.int(&get(|e| &e.production_interval_s), "edge.production_interval_s", 1, 86_400, 60);
    Edge {
        shift: Duration::from_secs(shift_h.unsigned_abs() * 3600),
        shift_start: Duration::from_secs(start_h.unsigned_abs() * 3600),
        production_interval: Duration::from_secs(interval.unsigned_abs()),
    }
}

fn lookup<T: Copy>(c: &mut Checker, v: &Spanned<String>, table: &[(&str, T)], key: String) -> Option<T> {
    let found = table.iter().find(|(name, _)| name == v.get_ref()).map(|(_, t)| *t);
    if found.is_none() {
        let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
        let msg = format!("unknown value {:?}; expected one of {}", v.get_ref(), names.join(", "));
        c.err(v.span(), key, msg);
    }
    found
}

/// A tag's type. A Modbus string needs its length (it sizes the read); elsewhere it is free.
fn data_type(
    c: &mut Checker,
    t: &RawTag,
    name: &Spanned<String>,
    key: &str,
    string_needs_length: bool,
) -> Option<DataType> {
    let span = name.span();
    let name = name.get_ref().as_str();
    let length = match (&t.length_chars, name) {
        (Some(l), "string") => c.int(&Some(l.clone()), &format!("{key}.length_chars"), 1, 250, 1),
        (None, "string") if string_needs_length => {
            let msg = "a string needs length_chars (1..=250 characters)".into();
            c.err(span.clone(), format!("{key}.length_chars"), msg);
            1
        }
        (None, "string") => 0,
        (Some(_), _) => 0,
        (None, _) => 0,
    };
    data_type_keys_only_for_their_type(c, t, key, name);
    let found = if name == "waveform" {
        let need = |c: &mut Checker, v: &Option<Spanned<i64>>, field: &str, min: i64, max: i64| match v {
            Some(v) => c.int(&Some(v.clone()), &format!("{key}.{field}"), min, max, min),
            None => {
                c.err(span.clone(), format!("{key}.{field}"), format!("a waveform needs {field} ({min}..={max})"));
                min
            }
        };
        let samples = need(c, &t.waveform_samples, "waveform_samples", 16, 4096);
        let rate = need(c, &t.sample_rate_hz, "sample_rate_hz", 1, 1_000_000);
        Some(DataType::Waveform { samples: samples as u16, rate_hz: rate as u32 })
    } else {
        DataType::parse(name, u16::try_from(length).unwrap_or(1))
    };
    if found.is_none() {
        let msg = format!("unknown data type {name:?}; expected one of {}", DataType::NAMES.join(", "));
        c.err(span, format!("{key}.type"), msg);
    }
    found
}

/// `length_chars` belongs to a string, `waveform_samples` and `sample_rate_hz` to a waveform.
fn data_type_keys_only_for_their_type(c: &mut Checker, t: &RawTag, key: &str, name: &str) {
    if name != "string"
        && let Some(l) = &t.length_chars
    {
        c.err(l.span(), format!("{key}.length_chars"), "only a string has a length".into());
    }
    let waveform_keys = [
        (t.waveform_samples.as_ref().map(|v| v.span()), "waveform_samples"),
        (t.sample_rate_hz.as_ref().map(|v| v.span()), "sample_rate_hz"),
    ];
    if name != "waveform" {
        for (span, field) in waveform_keys.into_iter().filter_map(|(s, f)| s.map(|s| (s, f))) {
            c.err(span, format!("{key}.{field}"), "is only for a waveform".into());
        }
    }
}

fn check_type_fits_space(c: &mut Checker, t: &RawTag, key: &str, space: Space, ty: DataType, has_bit: bool) {
    if space.is_bit() && ty != DataType::Bool {
        let msg = format!("a {} holds bits: its type must be bool", space.name());
        c.err(type_span(t), format!("{key}.type"), msg);
    }
    if has_bit && (space.is_bit() || ty != DataType::Bool) {
        let msg = "bit selects one bit of a register: only for type bool in a register space".into();
        c.err(t.bit.as_ref().map_or(0..0, |b| b.span()), format!("{key}.bit"), msg);
    }
    if !space.is_bit() && ty == DataType::Bool && !has_bit {
        let msg = "a bool in a register space needs bit (0..=15)".into();
        c.err(type_span(t), format!("{key}.bit"), msg);
    }
}

fn finite(c: &mut Checker, v: &Option<Spanned<f64>>, key: String, default: f64) -> f64 {
    match v {
        Some(s) if !s.get_ref().is_finite() => {
            c.err(s.span(), key, format!("{} is not a finite number", s.get_ref()));
            default
        }
        Some(s) => *s.get_ref(),
        None => default,
    }
}

/// Two tags may not claim the same register (bits of one register are fine, each bit once).
/// Each tag that does is named once, against the nearest tag before it that it overlaps: a
/// sweep over the tags in address order holding only those still open at the current
/// address: time in the tags times the tags overlapping at one address (one or two in a real
/// config, so 10,000 tags take some 10,000 steps, not 50 million), and 10,000 tags on one
/// register give 9,999 problems, not 50 million pairs.
fn check_overlaps(c: &mut Checker, d: &RawDevice, tags: &[(ModbusTag, Range<usize>)]) {
    let mut sorted: Vec<&(ModbusTag, Range<usize>)> = tags.iter().collect();
    sorted.sort_by_key(|(t, _)| (t.space, t.address, t.width()));
    let end = |t: &ModbusTag| u32::from(t.address) + u32::from(t.width());
    let mut open: Vec<&ModbusTag> = Vec::new();
    for (b, span) in sorted {
        open.retain(|a| a.space == b.space && end(a) > u32::from(b.address));
        // A bit of a register that is also read whole is fine; so are different bits.
        if let Some(a) = open.iter().rev().find(|a| a.bit == b.bit) {
            let key = format!("device[{}].tag[{}].address", d.name.get_ref(), b.name);
            let msg = format!(
                "{} {}..{} overlaps tag {:?} ({}..{})",
                b.space.name(),
                b.address,
                end(b),
                a.name,
                a.address,
                end(a)
            );
            c.err(span.clone(), key, msg);
        }
        open.push(b);
    }
}

/// Paths in the config are relative to the config file's folder.
fn resolve(c: &Checker, path: &str) -> PathBuf {
    let p = PathBuf::from(path);
    if p.is_absolute() { p } else { c.file.parent().unwrap_or(Path::new("")).join(p) }
}

const MIB: i64 = 1 << 20;
const DAY_MS: u64 = 86_400_000;

fn store(c: &mut Checker, raw: &RawConfig) -> Store {
    let s = raw.store.as_ref().map(|s| s.get_ref());
    let get = |f: fn(&crate::raw::RawStore) -> &Option<Spanned<i64>>| s.and_then(|s| f(s).clone());
    let data_dir = s.and_then(|s| s.data_dir.as_ref()).map_or("airlock-data", |d| d.get_ref().as_str());
    let fsync_ms = c.int(&get(|s| &s.fsync_interval_ms), "store.fsync_interval_ms", 0, 60_000, 10);
    let outbox_bytes = c.int(&get(|s| &s.outbox_bytes_max), "store.outbox_bytes_max", MIB, i64::MAX, 1 << 30);
    let outbox_hours = c.int(&get(|s| &s.outbox_age_max_hours), "store.outbox_age_max_hours", 1, 24 * 3650, 168);
    let historian_bytes =
        c.int(&get(|s| &s.historian_bytes_max), "store.historian_bytes_max", 16 * MIB, i64::MAX, 10 << 30);
    let historian_days = c.int(&get(|s| &s.historian_age_max_days), "store.historian_age_max_days", 1, 36_500, 365);
    let reserve_mb = c.int(&get(|s| &s.free_space_reserve_mb), "store.free_space_reserve_mb", 0, 1_000_000, 256);
    Store {
        data_dir: resolve(c, data_dir),
        fsync_interval: Duration::from_millis(fsync_ms.unsigned_abs()),
        outbox_bytes_max: outbox_bytes.unsigned_abs(),
        outbox_age_max: Duration::from_millis(outbox_hours.unsigned_abs() * 3_600_000),
        historian_bytes_max: historian_bytes.unsigned_abs(),
        historian_age_max: Duration::from_millis(historian_days.unsigned_abs() * DAY_MS),
        free_space_reserve: reserve_mb.unsigned_abs() << 20,
    }
}

fn sinks(c: &mut Checker, raw: &RawConfig) -> Vec<Sink> {
    let gateway_name = raw.gateway.as_ref().and_then(|g| g.get_ref().name.as_ref()).map_or("airlock", |n| n.get_ref());
    let mut names: HashMap<&str, Range<usize>> = HashMap::new();
    let mut out = Vec::new();
    for s in &raw.sink {
        let s = s.get_ref();
        let key = |field: &str| format!("sink[{}].{field}", s.name.get_ref());
        c.segment(&s.name, key("name"));
        if let Some(first) = names.insert(s.name.get_ref(), s.name.span()) {
            let (line, _) = line_of(c.text, first.start);
            c.err(
                s.name.span(),
                key("name"),
                format!("sink name {:?} is already used on line {line}", s.name.get_ref()),
            );
        }
        out.extend(sink(c, s, key, gateway_name));
    }
    out
}

fn sink(c: &mut Checker, s: &RawSink, key: impl Fn(&str) -> String, gateway_name: &str) -> Option<Sink> {
    let kind = s.kind.get_ref().as_str();
    refuse_keys_of_other_types(c, s, kind, &key);
    let name = s.name.get_ref().clone();
    match kind {
        "jsonl" => {
            let Some(path) = &s.path else {
                c.err(s.kind.span(), key("path"), "a jsonl sink needs path (the file to append to)".into());
                return None;
            };
            Some(Sink { name, kind: SinkKind::Jsonl { path: resolve(c, path.get_ref()) } })
        }
        "mqtt" => mqtt_sink(c, s, &key, None).map(|m| Sink { name, kind: SinkKind::Mqtt(Box::new(m)) }),
        "sparkplug" => {
            let sp = sparkplug(c, s, &key);
            mqtt_sink(c, s, &key, sp).map(|m| Sink { name, kind: SinkKind::Mqtt(Box::new(m)) })
        }
        "http" => http_sink(c, s, &key).map(|h| Sink { name, kind: SinkKind::Http(h) }),
        "diode" => diode_sink(c, s, &key, gateway_name).map(|d| Sink { name, kind: SinkKind::Diode(d) }),
        "kafka" => kafka_sink(c, s, &key).map(|k| Sink { name, kind: SinkKind::Kafka(k) }),
        other => {
            c.err(
                s.kind.span(),
                key("type"),
                format!(
                    "unknown sink type {other:?}; expected \"jsonl\", \"mqtt\", \"sparkplug\", \"http\", \"kafka\" or \"diode\""
                ),
            );
            None
        }
    }
}

/// A key set on a sink of a type that does not use it is a mistake worth naming.
fn refuse_keys_of_other_types(c: &mut Checker, s: &RawSink, kind: &str, key: &impl Fn(&str) -> String) {
    let spans = |v: Option<Range<usize>>, name: &'static str, types: &'static [&'static str]| (v, name, types);
    let keys = [
        spans(s.path.as_ref().map(|v| v.span()), "path", &["jsonl"]),
        spans(s.url.as_ref().map(|v| v.span()), "url", &["mqtt", "sparkplug", "http"]),
        spans(s.topic_prefix.as_ref().map(|v| v.span()), "topic_prefix", &["mqtt"]),
        spans(s.client_id.as_ref().map(|v| v.span()), "client_id", &["mqtt", "sparkplug"]),
        spans(s.qos.as_ref().map(|v| v.span()), "qos", &["mqtt"]),
        spans(s.username.as_ref().map(|v| v.span()), "username", &["mqtt", "sparkplug", "kafka"]),
        spans(s.password_env.as_ref().map(|v| v.span()), "password_env", &["mqtt", "sparkplug", "kafka"]),
        spans(s.password_file.as_ref().map(|v| v.span()), "password_file", &["mqtt", "sparkplug", "kafka"]),
        spans(s.inflight_max.as_ref().map(|v| v.span()), "inflight_max", &["mqtt", "sparkplug"]),
        spans(s.rate_max_per_s.as_ref().map(|v| v.span()), "rate_max_per_s", &["mqtt", "sparkplug", "kafka"]),
        spans(s.keep_alive_s.as_ref().map(|v| v.span()), "keep_alive_s", &["mqtt", "sparkplug"]),
        spans(s.classes.as_ref().map(|v| v.span()), "classes", &["http"]),
        spans(s.batch_records_max.as_ref().map(|v| v.span()), "batch_records_max", &["http"]),
        spans(s.timeout_ms.as_ref().map(|v| v.span()), "timeout_ms", &["http"]),
        spans(s.bearer_token_env.as_ref().map(|v| v.span()), "bearer_token_env", &["http"]),
        spans(s.dead_letters_max_mb.as_ref().map(|v| v.span()), "dead_letters_max_mb", &["http"]),
        spans(s.proxy.as_ref().map(|v| v.span()), "proxy", &["http"]),
        spans(
            s.allow_plain_credentials.as_ref().map(|v| v.span()),
            "allow_plain_credentials",
            &["mqtt", "sparkplug", "http", "kafka"],
        ),
        spans(s.group_id.as_ref().map(|v| v.span()), "group_id", &["sparkplug"]),
        spans(s.edge_node_id.as_ref().map(|v| v.span()), "edge_node_id", &["sparkplug"]),
        spans(s.birth_interval_s.as_ref().map(|v| v.span()), "birth_interval_s", &["sparkplug"]),
        spans(s.ca_file.as_ref().map(|v| v.span()), "ca_file", &["mqtt", "sparkplug", "kafka"]),
        spans(s.replay.as_ref().map(|v| v.span()), "replay", &["mqtt", "sparkplug", "kafka"]),
        spans(
            s.replay_rate_max_per_s.as_ref().map(|v| v.span()),
            "replay_rate_max_per_s",
            &["mqtt", "sparkplug", "kafka"],
        ),
        spans(s.client_cert_file.as_ref().map(|v| v.span()), "client_cert_file", &["mqtt", "sparkplug", "kafka"]),
        spans(s.client_key_file.as_ref().map(|v| v.span()), "client_key_file", &["mqtt", "sparkplug", "kafka"]),
        spans(s.brokers.as_ref().map(|v| v.span()), "brokers", &["kafka"]),
        spans(s.topic.as_ref().map(|v| v.span()), "topic", &["kafka"]),
        spans(s.compression.as_ref().map(|v| v.span()), "compression", &["kafka"]),
        spans(s.sasl.as_ref().map(|v| v.span()), "sasl", &["kafka"]),
        spans(s.tls.as_ref().map(|v| v.span()), "tls", &["kafka"]),
        spans(s.address.as_ref().map(|v| v.span()), "address", &["diode"]),
        spans(s.bind.as_ref().map(|v| v.span()), "bind", &["diode"]),
        spans(s.mtu_bytes.as_ref().map(|v| v.span()), "mtu_bytes", &["diode"]),
        spans(s.repair_percent.as_ref().map(|v| v.span()), "repair_percent", &["diode"]),
        spans(s.rate_max_bytes_per_s.as_ref().map(|v| v.span()), "rate_max_bytes_per_s", &["diode"]),
        spans(s.heartbeat_s.as_ref().map(|v| v.span()), "heartbeat_s", &["diode"]),
        spans(s.repeat_after_ms.as_ref().map(|v| v.span()), "repeat_after_ms", &["diode"]),
        spans(s.block_bytes.as_ref().map(|v| v.span()), "block_bytes", &["diode"]),
        spans(s.key_file.as_ref().map(|v| v.span()), "key_file", &["diode"]),
    ];
    let known = ["jsonl", "mqtt", "sparkplug", "http", "diode", "kafka"].contains(&kind);
    for (span, name, types) in keys {
        if let Some(span) = span
            && known
            && !types.contains(&kind)
        {
            c.err(span, key(name), format!("is only for a sink of type {}", types.join(" or ")));
        }
    }
}

fn mqtt_sink(
    c: &mut Checker,
    s: &RawSink,
    key: &impl Fn(&str) -> String,
    sparkplug: Option<Sparkplug>,
) -> Option<MqttSink> {
    let Some(url) = &s.url else {
        c.err(s.kind.span(), key("url"), "an mqtt sink needs url (mqtt://host:1883 or mqtts://host:8883)".into());
        return None;
    };
    let parsed = parse_mqtt_url(url.get_ref());
    if parsed.is_none() {
        let msg = format!("{:?} is not mqtt://host[:port] or mqtts://host[:port]", url.get_ref());
        c.err(url.span(), key("url"), msg);
    }
    let qos = c.int(&s.qos, &key("qos"), 0, 1, 1);
    let inflight = c.int(&s.inflight_max, &key("inflight_max"), 1, 65_535, 100);
    let keep_alive = c.int(&s.keep_alive_s, &key("keep_alive_s"), 5, 3600, 30);
    let rate = rate_max_per_s(c, &s.rate_max_per_s, key("rate_max_per_s"));
    let rate = if s.rate_max_per_s.is_some() { rate } else { 10_000.0 };
    let password = match (&s.password_env, &s.password_file) {
        (Some(_), Some(f)) => {
            c.err(f.span(), key("password_file"), "give password_env or password_file, not both".into());
            None
        }
        (Some(e), None) => Some(Secret::Env(e.get_ref().clone())),
        (None, Some(f)) => Some(Secret::File(resolve(c, f.get_ref()))),
        (None, None) => None,
    };
    if password.is_some() && s.username.is_none() {
        let span = s.password_env.as_ref().or(s.password_file.as_ref()).map_or(0..0, |v| v.span());
        c.err(span, key("username"), "a password needs a username".into());
    }
    if let (Some((false, host, _)), Some(secret)) = (&parsed, s.password_env.as_ref().or(s.password_file.as_ref())) {
        let field = if s.password_env.is_some() { "password_env" } else { "password_file" };
        plain_credential(
            c,
            &s.allow_plain_credentials,
            host,
            secret.span(),
            key(field),
            "a password over mqtt://",
            "mqtts://",
        );
    }
    let tls_files =
        [(&s.ca_file, "ca_file"), (&s.client_cert_file, "client_cert_file"), (&s.client_key_file, "client_key_file")];
    if parsed.as_ref().is_some_and(|(tls, _, _)| !*tls) {
        for (file, name) in tls_files.iter().filter_map(|(f, n)| f.as_ref().map(|f| (f, n))) {
            c.err(file.span(), key(name), "is only for a TLS connection (mqtts://)".into());
        }
    }
    let client_cert = match (&s.client_cert_file, &s.client_key_file) {
        (Some(cert), Some(k)) => Some((resolve(c, cert.get_ref()), resolve(c, k.get_ref()))),
        (Some(one), None) | (None, Some(one)) => {
            c.err(
                one.span(),
                key("client_cert_file"),
                "a client certificate needs both client_cert_file and client_key_file".into(),
            );
            None
        }
        (None, None) => None,
    };
    let ca_file = s.ca_file.as_ref().map(|f| resolve(c, f.get_ref()));
    let replay = replay(c, s, key);
    let (tls, host, port) = parsed?;
    let client_id =
        s.client_id.as_ref().map_or_else(|| format!("airlock-{}", s.name.get_ref()), |v| v.get_ref().clone());
    Some(MqttSink {
        host,
        port,
        tls,
        ca_file,
        client_cert,
        topic_prefix: s.topic_prefix.as_ref().map(|v| v.get_ref().clone()).unwrap_or_default(),
        client_id,
        qos: qos as u8,
        username: s.username.as_ref().map(|v| v.get_ref().clone()),
        password,
        inflight_max: inflight as u16,
        rate_max_per_s: rate,
        keep_alive: Duration::from_secs(keep_alive.unsigned_abs()),
        sparkplug,
        replay,
    })
}

/// A Sparkplug id element: no `/`, `+` or `#`, not empty.
fn sparkplug_id(c: &mut Checker, v: &Spanned<String>, key: String) {
    let id = v.get_ref();
    if id.is_empty() || id.contains(['/', '+', '#']) {
        c.err(v.span(), key, format!("{id:?} is not a Sparkplug id: not empty, and no '/', '+' or '#'"));
    }
}

fn sparkplug(c: &mut Checker, s: &RawSink, key: &impl Fn(&str) -> String) -> Option<Sparkplug> {
    let Some(group) = &s.group_id else {
        c.err(s.kind.span(), key("group_id"), "a sparkplug sink needs group_id".into());
        return None;
    };
    sparkplug_id(c, group, key("group_id"));
    if let Some(node) = &s.edge_node_id {
        sparkplug_id(c, node, key("edge_node_id"));
    }
    let every = c.int(&s.birth_interval_s, &key("birth_interval_s"), 10, 86_400, 600);
    Some(Sparkplug {
        group_id: group.get_ref().clone(),
        edge_node_id: s.edge_node_id.as_ref().map(|v| v.get_ref().clone()),
        birth_interval: Duration::from_secs(every.unsigned_abs()),
    })
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` to (tls, host, port).
fn parse_mqtt_url(url: &str) -> Option<(bool, String, u16)> {
    let (tls, rest) = match url.split_once("://")? {
        ("mqtt", rest) => (false, rest),
        ("mqtts", rest) => (true, rest),
        _ => return None,
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    (!host.is_empty() && !host.contains('/')).then(|| (tls, host.to_owned(), port))
}

const CLASS_NAMES: [&str; 4] = ["events", "aggregates", "series", "raw"];

fn http_sink(c: &mut Checker, s: &RawSink, key: &impl Fn(&str) -> String) -> Option<HttpSink> {
    let Some(url) = &s.url else {
        c.err(s.kind.span(), key("url"), "an http sink needs url (https://erp.example/hook)".into());
        return None;
    };
    let u = url.get_ref();
    let ok =
        (u.starts_with("http://") || u.starts_with("https://")) && u.split("://").nth(1).is_some_and(|r| !r.is_empty());
    if !ok {
        c.err(url.span(), key("url"), format!("{u:?} is not an http:// or https:// URL"));
    }
    if let (true, Some(token), Some(host)) = (u.starts_with("http://"), &s.bearer_token_env, url_host(u)) {
        plain_credential(
            c,
            &s.allow_plain_credentials,
            host,
            token.span(),
            key("bearer_token_env"),
            "a bearer token over http://",
            "https://",
        );
    }
    let classes: Vec<String> = match &s.classes {
        None => vec!["events".to_owned()],
        Some(list) => {
            for class in list.get_ref().iter().filter(|n| !CLASS_NAMES.contains(&n.get_ref().as_str())) {
                let msg = format!("unknown class {:?}; expected some of {}", class.get_ref(), CLASS_NAMES.join(", "));
                c.err(class.span(), key("classes"), msg);
            }
            if list.get_ref().is_empty() {
                c.err(list.span(), key("classes"), "names no class: the sink would receive nothing".into());
            }
            list.get_ref().iter().map(|n| n.get_ref().clone()).collect()
        }
    };
    let batch = c.int(&s.batch_records_max, &key("batch_records_max"), 1, 10_000, 100);
    let timeout = c.int(&s.timeout_ms, &key("timeout_ms"), 1, 600_000, 10_000);
    let dead_letters_mb = c.int(&s.dead_letters_max_mb, &key("dead_letters_max_mb"), 1, 100_000, 64);
    if let Some(p) = &s.proxy
        && !(p.get_ref().starts_with("http://") && url_host(p.get_ref()).is_some())
    {
        c.err(p.span(), key("proxy"), format!("{:?} is not an http://host:port proxy", p.get_ref()));
    }
    ok.then(|| HttpSink {
        url: u.clone(),
        classes,
        batch_records_max: batch.unsigned_abs() as usize,
        timeout: Duration::from_millis(timeout.unsigned_abs()),
        bearer_token_env: s.bearer_token_env.as_ref().map(|v| v.get_ref().clone()),
        dead_letters_max_bytes: dead_letters_mb.unsigned_abs() << 20,
        proxy: s.proxy.as_ref().map(|p| p.get_ref().clone()),
    })
}
