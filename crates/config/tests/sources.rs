//! OPC UA and OT-side MQTT devices in the config: good ones validate into typed values, and
//! every mistake names its line and key (keys of another protocol included).

#![allow(clippy::unwrap_used)] // tests unwrap: a failure is the test failing

use std::path::Path;
use std::time::Duration;

use airlock_config::{DataType, Identity, MqttSource, Payload, Protocol, ReadMode, Secret, Security, parse};

/// (line, key, message fragment) of every problem in `text`.
fn problems(text: &str) -> Vec<(usize, String, String)> {
    match parse(text, Path::new("floor.toml")) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.into_iter().map(|e| (e.line, e.key, e.message)).collect(),
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1).unwrap()
}

fn assert_problems(text: &str, expected: &[(&str, &str, &str)]) {
    let got = problems(text);
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    for ((line, key, message), (needle, k, fragment)) in got.iter().zip(expected) {
        assert_eq!((*line, key.as_str()), (line_of(text, needle), *k), "{message}");
        assert!(message.contains(fragment), "{message:?} does not say {fragment:?}");
    }
}

const OPCUA: &str = r#"
[[device]]
name = "cell"
asset_path = "acme/plant"
protocol = "opcua"
address = "opc.tcp://10.0.0.5:4840/ua"
security = "sign_and_encrypt"
username = "reader"
password_env = "CELL_PASSWORD"
trusted_server_certs = ["pki/cell.der"]
publishing_interval_ms = 250

[[device.tag]]
name = "speed"
node_id = "ns=2;s=Press.Speed"
sampling_interval_ms = 100
queue_size = 5
server_deadband = 0.5
unit = "rpm"

[[device.tag]]
name = "accel"
type = "waveform"
waveform_samples = 1024
sample_rate_hz = 2048
node_id = "ns=3;i=1001"
"#;

#[test]
fn an_opcua_device_validates_into_typed_values() {
    let config = parse(OPCUA, Path::new("/etc/airlock/floor.toml")).unwrap();
    let d = &config.devices[0];
    let Protocol::OpcUa(o) = &d.protocol else { panic!("not OPC UA") };
    assert_eq!(o.endpoint, "opc.tcp://10.0.0.5:4840/ua");
    assert_eq!(o.security, Security::SignAndEncrypt);
    assert_eq!(o.identity, Identity::User { username: "reader".into(), password: Secret::Env("CELL_PASSWORD".into()) });
    assert_eq!(o.trusted_server_certs, [Path::new("/etc/airlock/pki/cell.der")]);
    assert_eq!(o.mode, ReadMode::Subscribe { publishing_interval: Duration::from_millis(250) });
    assert_eq!(o.nodes[0].node_id, "ns=2;s=Press.Speed");
    assert_eq!((o.nodes[0].sampling_interval.as_millis(), o.nodes[0].queue_size), (100, 5));
    assert_eq!(o.nodes[0].server_deadband, Some(0.5));
    // Defaults: sampling at the poll interval, newest value only, type f64.
    assert_eq!((o.nodes[1].sampling_interval.as_millis(), o.nodes[1].queue_size), (1000, 1));
    assert_eq!(d.tags[0].data_type, DataType::F64);
    assert_eq!(d.tags[1].data_type, DataType::Waveform { samples: 1024, rate_hz: 2048 });
    assert_eq!(d.tags[0].path.as_str(), "acme/plant/cell/speed");
}

#[test]
fn opcua_mistakes_name_line_and_key() {
    let text = OPCUA
        .replace("opc.tcp://10.0.0.5:4840/ua", "http://10.0.0.5")
        .replace("\"sign_and_encrypt\"", "\"encrypt\"")
        .replace("ns=2;s=Press.Speed", "Press.Speed")
        .replace("queue_size = 5", "queue_size = 0\nspace = \"coil\"");
    assert_problems(
        &text,
        &[
            ("http://", "device[cell].address", "is not an OPC UA endpoint"),
            ("\"encrypt\"", "device[cell].security", "unknown value \"encrypt\""),
            ("Press.Speed", "device[cell].tag[speed].node_id", "is not an OPC UA node id"),
            ("queue_size", "device[cell].tag[speed].queue_size", "out of range 1..=10000"),
            ("space =", "device[cell].tag[speed].space", "is only for a device with protocol modbus_tcp"),
        ],
    );
    let no_node = OPCUA.replace("node_id = \"ns=3;i=1001\"\n", "");
    assert_problems(&no_node, &[("name = \"accel\"", "device[cell].tag[accel].node_id", "needs node_id")]);
    let no_password = OPCUA.replace("password_env = \"CELL_PASSWORD\"\n", "");
    assert_problems(&no_password, &[("username", "device[cell].username", "needs password_env or password_file")]);
}

const MQTT_JSON: &str = r#"
[[device]]
name = "ot"
asset_path = "acme/plant"
protocol = "mqtt"
address = "10.0.0.9:1883"

[[device.tag]]
name = "speed"
topic = "press1/status"
value_pointer = "/speed"
time_pointer = "/ts"
"#;

const MQTT_SPARKPLUG: &str = r#"
[[device]]
name = "ot"
asset_path = "acme/plant"
protocol = "mqtt"
address = "10.0.0.9:1883"
payload = "sparkplug_b"
group_id = "plant"
edge_node_id = "edge1"

[[device.tag]]
name = "speed"
type = "i32"
metric = "Speed"
sparkplug_device = "press1"
"#;

#[test]
fn mqtt_devices_validate_into_typed_values() {
    let config = parse(MQTT_JSON, Path::new("floor.toml")).unwrap();
    let Protocol::Mqtt(m) = &config.devices[0].protocol else { panic!("not MQTT") };
    assert_eq!(
        (m.address.as_str(), m.client_id.as_str(), &m.payload),
        ("10.0.0.9:1883", "airlock-ot-ot", &Payload::Json)
    );
    assert_eq!(
        m.sources[0],
        MqttSource::Json {
            topic: "press1/status".into(),
            value_pointer: "/speed".into(),
            time_pointer: Some("/ts".into())
        }
    );
    let config = parse(MQTT_SPARKPLUG, Path::new("floor.toml")).unwrap();
    let Protocol::Mqtt(m) = &config.devices[0].protocol else { panic!("not MQTT") };
    assert_eq!(m.payload, Payload::SparkplugB { group_id: "plant".into(), edge_node_id: "edge1".into() });
    assert_eq!(m.sources[0], MqttSource::Sparkplug { device: Some("press1".into()), metric: "Speed".into() });
    assert_eq!(config.devices[0].tags[0].data_type, DataType::I32);
}

#[test]
fn mqtt_mistakes_name_line_and_key() {
    let text = MQTT_JSON.replace("press1/status", "press1/#").replace("\"/speed\"", "\"speed\"");
    assert_problems(
        &text,
        &[
            ("press1/#", "device[ot].tag[speed].topic", "without wildcards"),
            ("value_pointer", "device[ot].tag[speed].value_pointer", "is not a JSON pointer"),
        ],
    );
    let text = MQTT_JSON.replace("time_pointer = \"/ts\"", "metric = \"Speed\"");
    assert_problems(&text, &[("metric", "device[ot].tag[speed].metric", "is only for payload = \"sparkplug_b\"")]);
    let text =
        MQTT_SPARKPLUG.replace("edge_node_id = \"edge1\"\n", "").replace("metric = \"Speed\"", "topic = \"a/b\"");
    assert_problems(
        &text,
        &[
            ("payload", "device[ot].edge_node_id", "needs edge_node_id"),
            ("name = \"speed\"", "device[ot].tag[speed].metric", "needs metric"),
            ("topic", "device[ot].tag[speed].topic", "is only for payload = \"json\""),
        ],
    );
    let text = MQTT_JSON.replace(
        "address = \"10.0.0.9:1883\"",
        "address = \"10.0.0.9:1883\"\nsecurity = \"none\"\nunit_id = 3\nrequests_in_flight_max = 2",
    );
    assert_problems(
        &text,
        &[
            ("security", "device[ot].security", "is only for a device with protocol opcua"),
            ("unit_id", "device[ot].unit_id", "is only for a device with protocol modbus_tcp"),
            (
                "requests_in_flight",
                "device[ot].requests_in_flight_max",
                "is only for a device with protocol modbus_tcp",
            ),
        ],
    );
    let text = MQTT_JSON.replace("\"mqtt\"", "\"profinet\"");
    assert_problems(&text, &[("profinet", "device[ot].protocol", "expected \"modbus_tcp\", \"opcua\" or \"mqtt\"")]);
}

#[test]
fn an_ot_broker_over_tls() {
    let text = MQTT_JSON.replace("\"10.0.0.9:1883\"", "\"mqtts://10.0.0.9:8883\"\nca_file = \"pki/ca.pem\"\nclient_cert_file = \"pki/me.pem\"\nclient_key_file = \"pki/me.key\"");
    let config = parse(&text, Path::new("/etc/airlock/floor.toml")).unwrap();
    let Protocol::Mqtt(m) = &config.devices[0].protocol else { panic!("not MQTT") };
    assert_eq!((m.address.as_str(), m.tls), ("10.0.0.9:8883", true));
    assert_eq!(m.ca_file.as_deref(), Some(Path::new("/etc/airlock/pki/ca.pem")));
    assert_eq!(m.client_cert.as_ref().map(|(c, _)| c.as_path()), Some(Path::new("/etc/airlock/pki/me.pem")));
    let plain_with_ca = MQTT_JSON.replace("\"10.0.0.9:1883\"", "\"10.0.0.9:1883\"\nca_file = \"ca.pem\"");
    assert_problems(&plain_with_ca, &[("ca_file", "device[ot].ca_file", "is only for a TLS broker")]);
    let bad = MQTT_JSON.replace("\"10.0.0.9:1883\"", "\"tcp://10.0.0.9:1883\"");
    assert_problems(&bad, &[("tcp://", "device[ot].address", "is not host:port or mqtts://host:port")]);
}

#[test]
fn device_credentials_over_a_plain_transport_are_refused_unless_accepted() {
    let opcua = r#"
[[device]]
name = "cell"
asset_path = "acme/plant"
protocol = "opcua"
address = "opc.tcp://10.0.0.5:4840/ua"
username = "reader"
password_env = "CELL_PASSWORD"

[[device.tag]]
name = "speed"
node_id = "ns=3;i=1001"
type = "f64"
"#;
    assert_problems(opcua, &[("username", "device[cell].username", "over security \"none\" to 10.0.0.5")]);
    let accepted = opcua.replace("username =", "allow_plain_credentials = true\nusername =");
    assert_problems(&accepted, &[]);
    assert_problems(&opcua.replace("10.0.0.5", "127.0.0.1"), &[]);
    let encrypted = opcua.replace("username =", "security = \"sign_and_encrypt\"\nusername =");
    assert_problems(&encrypted, &[]);

    let mqtt = MQTT_JSON
        .replace("address = \"10.0.0.9:1883\"", "address = \"10.0.0.9:1883\"\nusername = \"u\"\npassword_env = \"P\"");
    assert_problems(&mqtt, &[("username", "device[ot].username", "a password over plain MQTT to 10.0.0.9")]);
    assert_problems(&mqtt.replace("10.0.0.9:1883", "mqtts://10.0.0.9:8883"), &[]);
}
