//! What an OT MQTT publisher sends as JSON, on any topic: readings or a reason, never a panic.
#![no_main]

use std::sync::OnceLock;

use airlock_config::Protocol;
use airlock_south_mqtt::json::JsonTopics;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[[device]]
name = "ot"
asset_path = "acme/plant"
protocol = "mqtt"
address = "127.0.0.1:1883"
[[device.tag]]
name = "speed"
topic = "press/status"
value_pointer = "/speed"
time_pointer = "/ts"
type = "f64"
[[device.tag]]
name = "count"
topic = "press/status"
value_pointer = "/count/0"
type = "u16"
[[device.tag]]
name = "state"
topic = "press/status"
value_pointer = "/state"
type = "string"
length_chars = 12
[[device.tag]]
name = "on"
topic = "press/on"
type = "bool"
[[device.tag]]
name = "wave"
topic = "press/wave"
type = "waveform"
waveform_samples = 16
sample_rate_hz = 1000
"#;

fn topics() -> &'static JsonTopics {
    static TOPICS: OnceLock<JsonTopics> = OnceLock::new();
    TOPICS.get_or_init(|| {
        let config = airlock_config::parse(CONFIG, std::path::Path::new("fuzz.toml")).expect("the fuzz config");
        let d = &config.devices[0];
        let Protocol::Mqtt(m) = &d.protocol else { panic!("an MQTT device") };
        JsonTopics::new(&m.sources, &d.tags)
    })
}

fuzz_target!(|bytes: &[u8]| {
    let topic = match bytes.first().map(|b| b % 4) {
        Some(0) => "press/status",
        Some(1) => "press/on",
        Some(2) => "press/wave",
        _ => "elsewhere",
    };
    let _ = topics().decode(topic, bytes.get(1..).unwrap_or_default());
});
