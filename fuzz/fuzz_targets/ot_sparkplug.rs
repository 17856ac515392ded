//! What an OT Sparkplug B edge node sends, on any of its topics, in any order: readings or a
//! reason, never a panic, and memory bounded by the config.
#![no_main]

use airlock_config::MqttSource;
use airlock_south_mqtt::sparkplug::EdgeNode;
use libfuzzer_sys::fuzz_target;

const TOPICS: [&str; 8] = [
    "spBv1.0/plant/NBIRTH/edge1",
    "spBv1.0/plant/NDATA/edge1",
    "spBv1.0/plant/NDEATH/edge1",
    "spBv1.0/plant/DBIRTH/edge1/press1",
    "spBv1.0/plant/DDATA/edge1/press1",
    "spBv1.0/plant/DDEATH/edge1/press1",
    "spBv1.0/plant/DBIRTH/edge1/stranger",
    "spBv1.0/plant/NCMD/edge1",
];

fuzz_target!(|bytes: &[u8]| {
    let sources = [
        MqttSource::Sparkplug { device: None, metric: "Temp".into() },
        MqttSource::Sparkplug { device: Some("press1".into()), metric: "Speed".into() },
        MqttSource::Sparkplug { device: Some("press1".into()), metric: "Count".into() },
    ];
    let mut node = EdgeNode::new("plant", "edge1", &sources);
    // Messages: a topic byte, a length byte, then that many payload bytes.
    let mut rest = bytes;
    while let [topic, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let _ = node.on_message(TOPICS[usize::from(*topic) % TOPICS.len()], &tail[..n]);
        rest = &tail[n..];
    }
});
