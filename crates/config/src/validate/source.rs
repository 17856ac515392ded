//! Validation of the OPC UA and OT-side MQTT parts of a device, and of which keys belong to
//! which protocol.

use std::ops::Range;
use std::time::Duration;

use airlock_model::AssetPath;
use toml::Spanned;

use super::{Checker, INTERVAL_MS_MAX, Kind, for_each_tag, lookup, positive, resolve};
use crate::mqtt::{MqttDevice, MqttSource, Payload};
use crate::opcua::{Identity, OpcUaDevice, OpcUaNode, ReadMode, Security};
use crate::raw::{RawDevice, RawTag};
use crate::{Secret, Tag};

const MODBUS: &[Kind] = &[Kind::Modbus];
const OPCUA: &[Kind] = &[Kind::OpcUa];
const MQTT: &[Kind] = &[Kind::Mqtt];
const OPCUA_MQTT: &[Kind] = &[Kind::OpcUa, Kind::Mqtt];

fn names(kinds: &[Kind]) -> String {
    let name = |k: &Kind| super::KINDS.iter().find(|(_, x)| x == k).map_or("?", |(n, _)| n);
    kinds.iter().map(name).collect::<Vec<_>>().join(" or ")
}

fn span<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(|v| v.span())
}

/// A key's place in the file (when set), its name, and the protocols that use it.
type KeyUse<'a> = (Option<Range<usize>>, &'a str, &'a [Kind]);

fn refuse(c: &mut Checker, keys: &[KeyUse], kind: Kind, key: &dyn Fn(&str) -> String) {
    for (span, name, kinds) in keys {
        if let Some(span) = span
            && !kinds.contains(&kind)
        {
            c.err(span.clone(), key(name), format!("is only for a device with protocol {}", names(kinds)));
        }
    }
}

/// A device key that its protocol does not use is a mistake worth naming.
pub(super) fn refuse_device_keys(c: &mut Checker, d: &RawDevice, kind: Kind) {
    let keys = [
        (span(&d.unit_id), "unit_id", MODBUS),
        (span(&d.max_gap_registers), "max_gap_registers", MODBUS),
        (span(&d.max_gap_bits), "max_gap_bits", MODBUS),
        (span(&d.requests_in_flight_max), "requests_in_flight_max", MODBUS),
        (span(&d.security), "security", OPCUA),
        (span(&d.user_cert_file), "user_cert_file", OPCUA),
        (span(&d.user_key_file), "user_key_file", OPCUA),
        (span(&d.trusted_server_certs), "trusted_server_certs", OPCUA),
        (span(&d.read_mode), "read_mode", OPCUA),
        (span(&d.publishing_interval_ms), "publishing_interval_ms", OPCUA),
        (span(&d.username), "username", OPCUA_MQTT),
        (span(&d.password_env), "password_env", OPCUA_MQTT),
        (span(&d.password_file), "password_file", OPCUA_MQTT),
        (span(&d.allow_plain_credentials), "allow_plain_credentials", OPCUA_MQTT),
        (span(&d.client_id), "client_id", MQTT),
        (span(&d.payload), "payload", MQTT),
        (span(&d.group_id), "group_id", MQTT),
        (span(&d.edge_node_id), "edge_node_id", MQTT),
        (span(&d.ca_file), "ca_file", MQTT),
        (span(&d.client_cert_file), "client_cert_file", MQTT),
        (span(&d.client_key_file), "client_key_file", MQTT),
    ];
    refuse(c, &keys, kind, &|k| format!("device[{}].{k}", d.name.get_ref()));
}

/// A tag key that its device's protocol does not use.
pub(super) fn refuse_tag_keys(c: &mut Checker, t: &RawTag, key: &str, kind: Kind) {
    let keys = [
        (span(&t.space), "space", MODBUS),
        (span(&t.address), "address", MODBUS),
        (span(&t.order), "order", MODBUS),
        (span(&t.bit), "bit", MODBUS),
        (span(&t.scale), "scale", MODBUS),
        (span(&t.offset), "offset", MODBUS),
        (span(&t.node_id), "node_id", OPCUA),
        (span(&t.sampling_interval_ms), "sampling_interval_ms", OPCUA),
        (span(&t.queue_size), "queue_size", OPCUA),
        (span(&t.server_deadband), "server_deadband", OPCUA),
        (span(&t.topic), "topic", MQTT),
        (span(&t.value_pointer), "value_pointer", MQTT),
        (span(&t.time_pointer), "time_pointer", MQTT),
        (span(&t.metric), "metric", MQTT),
        (span(&t.sparkplug_device), "sparkplug_device", MQTT),
    ];
    refuse(c, &keys, kind, &|k| format!("{key}.{k}"));
}

/// `host:port`, `mqtt://host:port` or `mqtts://host:port` (TLS).
pub(super) fn check_broker(c: &mut Checker, address: &Spanned<String>, key: String) {
    let a = address.get_ref();
    let rest = match a.split_once("://") {
        Some(("mqtt" | "mqtts", rest)) => rest,
        Some(_) => "",
        None => a.as_str(),
    };
    if !super::is_host_port(rest) {
        let msg = format!("{a:?} is not host:port or mqtts://host:port (e.g. \"192.168.10.40:1883\")");
        c.err(address.span(), key, msg);
    }
}

/// `opc.tcp://host:port[/path]`.
pub(super) fn check_endpoint(c: &mut Checker, address: &Spanned<String>, key: String) {
    let a = address.get_ref();
    let ok = a.strip_prefix("opc.tcp://").is_some_and(|rest| {
        let authority = rest.split('/').next().unwrap_or("");
        match authority.rsplit_once(':') {
            Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
            None => false,
        }
    });
    if !ok {
        let msg = format!("{a:?} is not an OPC UA endpoint (e.g. \"opc.tcp://192.168.10.30:4840\")");
        c.err(address.span(), key, msg);
    }
}

fn password(c: &mut Checker, d: &RawDevice) -> Option<Secret> {
    let k = |key: &str| format!("device[{}].{key}", d.name.get_ref());
    match (&d.password_env, &d.password_file) {
        (Some(_), Some(f)) => {
            c.err(f.span(), k("password_file"), "give password_env or password_file, not both".into());
            None
        }
        (Some(e), None) => Some(Secret::Env(e.get_ref().clone())),
        (None, Some(f)) => Some(Secret::File(resolve(c, f.get_ref()))),
        (None, None) => None,
    }
}

pub(super) fn opcua_device(
    c: &mut Checker,
    d: &RawDevice,
    device_path: Option<&AssetPath>,
    poll_interval: Duration,
) -> (Vec<Tag>, Option<OpcUaDevice>) {
    let k = |key: &str| format!("device[{}].{key}", d.name.get_ref());
    let security = match &d.security {
        Some(s) => lookup(c, s, &Security::ALL, k("security")),
        None => Some(Security::None),
    };
    let password = password(c, d);
    let identity = match (&d.username, password, &d.user_cert_file, &d.user_key_file) {
        (None, None, None, None) => Some(Identity::Anonymous),
        (Some(u), Some(p), None, None) => Some(Identity::User { username: u.get_ref().clone(), password: p }),
        (Some(u), None, None, None) => {
            c.err(u.span(), k("username"), "a username needs password_env or password_file".into());
            None
        }
        (None, Some(_), _, _) => {
            c.err(d.name.span(), k("username"), "a password needs a username".into());
            None
        }
        (None, None, Some(cert), Some(key)) => {
            Some(Identity::Certificate { cert: resolve(c, cert.get_ref()), key: resolve(c, key.get_ref()) })
        }
        (None, None, Some(cert), None) => {
            c.err(cert.span(), k("user_key_file"), "a user certificate needs user_key_file".into());
            None
        }
        (None, None, None, Some(key)) => {
            c.err(key.span(), k("user_cert_file"), "a user key needs user_cert_file".into());
            None
        }
        (Some(u), _, _, _) => {
            c.err(u.span(), k("username"), "give a username or a user certificate, not both".into());
            None
        }
    };
    if let (Some(Security::None), Some(Identity::User { .. }), Some(user), Some(host)) =
        (security, &identity, &d.username, super::url_host(d.address.get_ref()))
    {
        let what = "a user name and password over security \"none\"";
        let (allow, key) = (&d.allow_plain_credentials, k("username"));
        super::plain_credential(c, allow, host, user.span(), key, what, "security = \"sign_and_encrypt\"");
    }
    let trusted = d
        .trusted_server_certs
        .as_ref()
        .map(|list| list.get_ref().iter().map(|p| resolve(c, p.get_ref())).collect())
        .unwrap_or_default();
    let modes = [("subscribe", false), ("poll", true)];
    let poll = match &d.read_mode {
        Some(m) => lookup(c, m, &modes, k("read_mode")),
        None => Some(false),
    };
    let publishing = c.int(
        &d.publishing_interval_ms,
        &k("publishing_interval_ms"),
        1,
        INTERVAL_MS_MAX,
        poll_interval.as_millis() as i64,
    );
    if poll == Some(true)
        && let Some(p) = &d.publishing_interval_ms
    {
        c.err(p.span(), k("publishing_interval_ms"), "is only for read_mode = \"subscribe\"".into());
    }
    let mut tags = Vec::new();
    let mut nodes = Vec::new();
    for_each_tag(c, d, device_path, Kind::OpcUa, |c, t, key, tag| {
        if let Some(node) = opcua_node(c, t, key, poll_interval, tag.as_ref())
            && let Some(tag) = tag
        {
            tags.push(tag);
            nodes.push(node);
        }
    });
    let device = match (security, identity, poll) {
        (Some(security), Some(identity), Some(poll)) => Some(OpcUaDevice {
            endpoint: d.address.get_ref().clone(),
            security,
            identity,
            trusted_server_certs: trusted,
            mode: match poll {
                true => ReadMode::Poll,
                false => ReadMode::Subscribe { publishing_interval: Duration::from_millis(publishing.unsigned_abs()) },
            },
            nodes,
        }),
        _ => None,
    };
    (tags, device)
}

fn opcua_node(c: &mut Checker, t: &RawTag, key: &str, poll_interval: Duration, tag: Option<&Tag>) -> Option<OpcUaNode> {
    let k = |field: &str| format!("{key}.{field}");
    let Some(node_id) = &t.node_id else {
        c.err(t.name.span(), k("node_id"), "an OPC UA tag needs node_id (e.g. \"ns=2;s=Press.Speed\")".into());
        return None;
    };
    if !looks_like_node_id(node_id.get_ref()) {
        let msg = format!("{:?} is not an OPC UA node id (ns=N;i=|s=|g=|b=..., or i=N)", node_id.get_ref());
        c.err(node_id.span(), k("node_id"), msg);
    }
    let sampling = c.int(
        &t.sampling_interval_ms,
        &k("sampling_interval_ms"),
        0,
        INTERVAL_MS_MAX,
        poll_interval.as_millis() as i64,
    );
    let queue = c.int(&t.queue_size, &k("queue_size"), 1, 10_000, 1);
    let deadband = positive(c, &t.server_deadband, k("server_deadband"), true);
    if deadband.is_some()
        && let (Some(s), Some(false)) = (&t.server_deadband, tag.map(|t| t.data_type.is_number()))
    {
        c.err(s.span(), k("server_deadband"), "is only for a numeric tag".into());
    }
    Some(OpcUaNode {
        node_id: node_id.get_ref().clone(),
        sampling_interval: Duration::from_millis(sampling.unsigned_abs()),
        queue_size: queue as u32,
        server_deadband: deadband,
    })
}

/// The text forms of OPC UA Part 6, 5.3.1.10: `[ns=N;]i=|s=|g=|b=...`.
fn looks_like_node_id(s: &str) -> bool {
    let rest = match s.strip_prefix("ns=") {
        Some(r) => match r.split_once(';') {
            Some((ns, rest)) if ns.parse::<u16>().is_ok() => rest,
            _ => return false,
        },
        None => s,
    };
    match rest.split_at_checked(2) {
        Some(("i=", n)) => n.parse::<u32>().is_ok(),
        Some(("s=" | "g=" | "b=", v)) => !v.is_empty(),
        _ => false,
    }
}

pub(super) fn mqtt_device(
    c: &mut Checker,
    d: &RawDevice,
    device_path: Option<&AssetPath>,
) -> (Vec<Tag>, Option<MqttDevice>) {
    let k = |key: &str| format!("device[{}].{key}", d.name.get_ref());
    let payloads = [("json", false), ("sparkplug_b", true)];
    let sparkplug = match &d.payload {
        Some(p) => lookup(c, p, &payloads, k("payload")),
        None => Some(false),
    };
    let payload = match sparkplug {
        Some(true) => {
            let id = |c: &mut Checker, v: &Option<Spanned<String>>, field: &str| match v {
                Some(v) if valid_sparkplug_id(v.get_ref()) => Some(v.get_ref().clone()),
                Some(v) => {
                    let msg = format!("{:?} may not be empty or hold /, +, #", v.get_ref());
                    c.err(v.span(), k(field), msg);
                    None
                }
                None => {
                    let msg = format!("a Sparkplug B device needs {field}");
                    c.err(d.payload.as_ref().map_or_else(|| d.name.span(), |p| p.span()), k(field), msg);
                    None
                }
            };
            let group = id(c, &d.group_id, "group_id");
            let node = id(c, &d.edge_node_id, "edge_node_id");
            match (group, node) {
                (Some(group_id), Some(edge_node_id)) => Some(Payload::SparkplugB { group_id, edge_node_id }),
                _ => None,
            }
        }
        Some(false) => {
            for (v, field) in [(&d.group_id, "group_id"), (&d.edge_node_id, "edge_node_id")] {
                if let Some(v) = v {
                    c.err(v.span(), k(field), "is only for payload = \"sparkplug_b\"".into());
                }
            }
            Some(Payload::Json)
        }
        None => None,
    };
    let password = password(c, d);
    if password.is_some() && d.username.is_none() {
        c.err(d.name.span(), k("username"), "a password needs a username".into());
    }
    let plain = !d.address.get_ref().starts_with("mqtts://");
    if let (true, Some(user), Some(host)) = (plain, &d.username, super::url_host(d.address.get_ref()))
        && password.is_some()
    {
        let (allow, key) = (&d.allow_plain_credentials, k("username"));
        super::plain_credential(c, allow, host, user.span(), key, "a password over plain MQTT", "mqtts://");
    }
    let mut tags = Vec::new();
    let mut sources = Vec::new();
    for_each_tag(c, d, device_path, Kind::Mqtt, |c, t, key, tag| {
        if let Some(source) = mqtt_source(c, t, key, sparkplug)
            && let Some(tag) = tag
        {
            tags.push(tag);
            sources.push(source);
        }
    });
    let (tls, address) = match d.address.get_ref().split_once("://") {
        Some(("mqtts", rest)) => (true, rest.to_owned()),
        Some((_, rest)) => (false, rest.to_owned()),
        None => (false, d.address.get_ref().clone()),
    };
    let file = |c: &Checker, v: &Option<Spanned<String>>| v.as_ref().map(|f| resolve(c, f.get_ref()));
    let ca_file = file(c, &d.ca_file);
    let client_cert = match (file(c, &d.client_cert_file), file(c, &d.client_key_file)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => {
            c.err(
                span(&d.client_cert_file).unwrap_or_default(),
                k("client_key_file"),
                "a client certificate needs client_key_file".into(),
            );
            None
        }
        (None, Some(_)) => {
            c.err(
                span(&d.client_key_file).unwrap_or_default(),
                k("client_cert_file"),
                "a client key needs client_cert_file".into(),
            );
            None
        }
    };
    if !tls {
        for (v, field) in [
            (&d.ca_file, "ca_file"),
            (&d.client_cert_file, "client_cert_file"),
            (&d.client_key_file, "client_key_file"),
        ] {
            if let Some(v) = v {
                c.err(v.span(), k(field), "is only for a TLS broker (address = \"mqtts://host:port\")".into());
            }
        }
    }
    let client_id =
        d.client_id.as_ref().map_or_else(|| format!("airlock-ot-{}", d.name.get_ref()), |c| c.get_ref().clone());
    let device = payload.map(|payload| MqttDevice {
        address,
        tls,
        ca_file,
        client_cert,
        client_id,
        username: d.username.as_ref().map(|u| u.get_ref().clone()),
        password,
        payload,
        sources,
    });
    (tags, device)
}

fn valid_sparkplug_id(s: &str) -> bool {
    !s.is_empty() && !s.contains(['/', '+', '#'])
}

fn mqtt_source(c: &mut Checker, t: &RawTag, key: &str, sparkplug: Option<bool>) -> Option<MqttSource> {
    let k = |field: &str| format!("{key}.{field}");
    let json_keys =
        [(span(&t.topic), "topic"), (span(&t.value_pointer), "value_pointer"), (span(&t.time_pointer), "time_pointer")];
    let sparkplug_keys = [(span(&t.metric), "metric"), (span(&t.sparkplug_device), "sparkplug_device")];
    match sparkplug? {
        true => {
            for (s, field) in json_keys.into_iter().filter_map(|(s, f)| s.map(|s| (s, f))) {
                c.err(s, k(field), "is only for payload = \"json\"".into());
            }
            let Some(metric) = &t.metric else {
                c.err(t.name.span(), k("metric"), "a Sparkplug B tag needs metric (the metric's name)".into());
                return None;
            };
            let device = match &t.sparkplug_device {
                Some(d) if valid_sparkplug_id(d.get_ref()) => Some(d.get_ref().clone()),
                Some(d) => {
                    c.err(
                        d.span(),
                        k("sparkplug_device"),
                        format!("{:?} may not be empty or hold /, +, #", d.get_ref()),
                    );
                    return None;
                }
                None => None,
            };
            Some(MqttSource::Sparkplug { device, metric: metric.get_ref().clone() })
        }
        false => {
            for (s, field) in sparkplug_keys.into_iter().filter_map(|(s, f)| s.map(|s| (s, f))) {
                c.err(s, k(field), "is only for payload = \"sparkplug_b\"".into());
            }
            let Some(topic) = &t.topic else {
                c.err(t.name.span(), k("topic"), "a JSON tag needs topic".into());
                return None;
            };
            if topic.get_ref().is_empty() || topic.get_ref().contains(['+', '#']) {
                let msg = format!("{:?} must be one topic, without wildcards", topic.get_ref());
                c.err(topic.span(), k("topic"), msg);
            }
            let pointer = |c: &mut Checker, v: &Option<Spanned<String>>, field: &str| -> Option<String> {
                let v = v.as_ref()?;
                if !(v.get_ref().is_empty() || v.get_ref().starts_with('/')) {
                    let msg = format!("{:?} is not a JSON pointer (\"\" or \"/key/0/...\")", v.get_ref());
                    c.err(v.span(), k(field), msg);
                }
                Some(v.get_ref().clone())
            };
            Some(MqttSource::Json {
                topic: topic.get_ref().clone(),
                value_pointer: pointer(c, &t.value_pointer, "value_pointer").unwrap_or_default(),
                time_pointer: pointer(c, &t.time_pointer, "time_pointer"),
            })
        }
    }
}
