//! `airlock check FILE`: validate a config and say what it would read.

use std::path::Path;
use std::process::ExitCode;

use airlock_config::{Config, Payload, Protocol, ReadMode, ReceiveConfig, Security, SinkKind};

pub fn run(file: &Path) -> ExitCode {
    // A file that cannot be read goes to the gateway's loader, which says why.
    let text = std::fs::read_to_string(file).unwrap_or_default();
    if airlock_config::is_receive(&text) {
        return match airlock_config::load_receive(file) {
            Ok(config) => {
                crate::print_out(&receive_summary(&config, file));
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::FAILURE
            }
        };
    }
    match airlock_config::load(file) {
        Ok(config) => {
            crate::print_out(&summary(&config, file));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprint!("{errors}");
            ExitCode::FAILURE
        }
    }
}

/// The summary: per device its address, tags, requests per poll with and without coalescing,
/// and a warning where the rate cap is slower than the poll interval asks.
pub fn summary(config: &Config, file: &Path) -> String {
    let tags: usize = config.devices.iter().map(|d| d.tag_count()).sum();
    let mut out = format!(
        "{}: ok: gateway {:?}, {} devices, {tags} tags\n",
        file.display(),
        config.gateway.name,
        config.devices.len()
    );
    if config.gateway.clock_speed != 1.0 || config.gateway.clock_start.is_some() {
        out += &format!(
            "  warning: the gateway's clock runs at {}x from {}: for a simulated plant only; sample times, edge windows and upstream times follow it, not the wall clock\n",
            config.gateway.clock_speed,
            config.gateway.clock_start.map_or("its start".to_owned(), |t| t.to_string())
        );
    }
    let mut total_requests = 0;
    for d in &config.devices {
        let m = match &d.protocol {
            Protocol::ModbusTcp(m) => m,
            Protocol::OpcUa(o) => {
                let how = match o.mode {
                    ReadMode::Subscribe { publishing_interval } => {
                        format!("subscription, published every {} ms", publishing_interval.as_millis())
                    }
                    ReadMode::Poll => format!("read every {} ms", d.poll_interval.as_millis()),
                };
                out += &format!(
                    "  {:<12} opcua {} security {}: {} tags, {how}\n",
                    d.name,
                    o.endpoint,
                    security_name(o.security),
                    d.tags.len()
                );
                continue;
            }
            Protocol::Mqtt(m) => {
                let payload = match &m.payload {
                    Payload::Json => "JSON".to_owned(),
                    Payload::SparkplugB { group_id, edge_node_id } => format!("Sparkplug B {group_id}/{edge_node_id}"),
                };
                out += &format!(
                    "  {:<12} mqtt {} ({payload}, subscribe only): {} tags\n",
                    d.name,
                    m.address,
                    d.tags.len()
                );
                continue;
            }
        };
        let coalesced = airlock_south_modbus::requests(m, true).len();
        let single = airlock_south_modbus::requests(m, false).len();
        total_requests += coalesced;
        out += &format!(
            "  {:<12} modbus_tcp {} unit {}: {} tags, {coalesced} requests per poll ({single} without coalescing), every {} ms, at most {} requests/s\n",
            d.name,
            m.address,
            m.unit_id,
            m.tags.len(),
            d.poll_interval.as_millis(),
            d.rate_max_per_s
        );
        let needed = coalesced as f64 / d.poll_interval.as_secs_f64();
        if needed > d.rate_max_per_s {
            out += &format!(
                "  warning: {} needs {needed:.1} requests/s but rate_max_per_s is {}: polls will come every {:.0} ms\n",
                d.name,
                d.rate_max_per_s,
                1000.0 * coalesced as f64 / d.rate_max_per_s
            );
        }
    }
    if config.devices.iter().any(|d| matches!(d.protocol, Protocol::ModbusTcp(_))) {
        out += &format!("  {total_requests} Modbus requests per poll cycle in all\n");
    }
    out += &format!(
        "  store: {}, synced every {} ms\n",
        config.store.data_dir.display(),
        config.store.fsync_interval.as_millis()
    );
    for s in &config.sinks {
        out += &format!("  sink {:<10} {}\n", s.name, sink_summary(&s.kind));
        if let SinkKind::Diode(d) = &s.kind {
            out += &diode_rate_warning(config, &s.name, d);
        }
    }
    if config.sinks.is_empty() {
        out += "  no sink: records wait in the outbox (bounded) until one is configured\n";
    }
    if let Some(w) = &config.web {
        let scheme = if w.tls.is_some() { "https" } else { "http" };
        let access = w.token_env.as_ref().map_or("no token (loopback)".to_owned(), |v| format!("token from ${v}"));
        out += &format!("  web: read-only dashboard on {scheme}://{}/, {access}\n", w.listen);
    }
    out
}

/// A warning if a diode sink's rate cap is below what the devices would send if every tag
/// changed at every poll (each record about its encoding plus the block's framing, then the
/// repair and the datagram headers on top); empty if it is not.
fn diode_rate_warning(config: &Config, sink: &str, d: &airlock_config::DiodeSink) -> String {
    let mut bytes_per_s = 0.0;
    for device in &config.devices {
        let per_poll: f64 = device.tags.iter().map(|t| (45 + t.path.as_str().len() + 21) as f64).sum();
        bytes_per_s += per_poll / device.poll_interval.as_secs_f64().max(1e-3);
    }
    let symbol = airlock_diode::wire::symbol_bytes(d.mtu_bytes).max(1) as f64;
    let wire = bytes_per_s
        * (1.0 + d.repair_percent / 100.0)
        * (d.mtu_bytes.max(1) as f64 / symbol)
        * if d.repeat.is_some() { 2.0 } else { 1.0 };
    if wire <= d.rate_max_bytes_per_s as f64 {
        return String::new();
    }
    format!(
        "  warning: sink {sink}: if every tag changed at every poll, the devices would send about {:.0} bytes/s through the diode (with repair and headers{}), above its rate_max_bytes_per_s = {}: records would queue in the outbox (deadbands and condensing usually send far less)\n",
        wire,
        if d.repeat.is_some() { ", each block twice" } else { "" },
        d.rate_max_bytes_per_s
    )
}

/// The receiving half's summary: where it listens, whom it takes, where it sends.
pub fn receive_summary(config: &ReceiveConfig, file: &Path) -> String {
    let r = &config.receive;
    let mut out = format!(
        "{}: ok: the receiving half of a diode, listening on {} for {:?} (a missing block waited for {} ms)\n",
        file.display(),
        r.listen,
        r.sender,
        r.reorder.as_millis()
    );
    if r.key_file.is_none() {
        out += &format!("  {}\n", airlock_diode::receive::NO_KEY_WARNING);
    }
    out += &format!("  store: {}\n", config.store.data_dir.display());
    for s in &config.sinks {
        out += &format!("  sink {:<10} {}\n", s.name, sink_summary(&s.kind));
    }
    out
}

fn sink_summary(kind: &SinkKind) -> String {
    match kind {
        SinkKind::Diode(d) => format!(
            "diode to {} (MTU {}, {} % repair, at most {} bytes/s{})",
            d.address,
            d.mtu_bytes,
            d.repair_percent,
            d.rate_max_bytes_per_s,
            d.repeat.map_or(String::new(), |r| format!(", each block again after {} ms", r.as_millis()))
        ),
        SinkKind::Jsonl { path } => format!("jsonl {}", path.display()),
        SinkKind::Kafka(k) => format!(
            "kafka {} topic {:?}{}{}{}",
            k.brokers.join(","),
            k.topic,
            if k.lz4 { ", LZ4" } else { "" },
            if k.tls { ", TLS" } else { "" },
            k.sasl.as_ref().map_or(String::new(), |(m, u, _)| format!(", SASL {m:?} as {u}"))
        ),
        SinkKind::Http(h) => format!("http {} ({})", h.url, h.classes.join(", ")),
        SinkKind::Mqtt(m) => {
            let scheme = if m.tls { "mqtts" } else { "mqtt" };
            let profile = match &m.sparkplug {
                Some(sp) => format!("Sparkplug B group {}", sp.group_id),
                None => format!("Unified Namespace under {:?}", m.topic_prefix),
            };
            format!("{scheme}://{}:{} QoS {}, {profile}", m.host, m.port, m.qos)
        }
    }
}

fn security_name(s: Security) -> &'static str {
    Security::ALL.iter().find(|(_, x)| *x == s).map_or("?", |(n, _)| n)
}
