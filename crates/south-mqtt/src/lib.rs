//! The OT-side MQTT subscriber: airlock reads values that machines publish on a plant broker,
//! as plain JSON (a JSON pointer per tag for the value and, optionally, the time) or as
//! Sparkplug B (births teach metric names, aliases and types; data carries values; deaths mark
//! tags bad). It subscribes and never publishes: nothing here can send a message to the plant
//! (its MQTT client, [`link`], is our own and has no PUBLISH encoder; the crate names no publish
//! call, which `crates/airlock/tests/architecture.rs` checks). The decoding ([`json`],
//! [`sparkplug`]) is pure; [`subscriber`] holds the one connection per device (plain or TLS,
//! with a client certificate if the broker asks), reconnecting with backoff. A message over
//! 1 MiB is read past and counted without dropping the connection. A payload that does not decode marks the tags it would
//! have fed bad, is counted, and is logged at most once per topic per minute.

pub mod json;
pub mod link;
pub mod sparkplug;
pub mod subscriber;

pub use subscriber::SubscriberTask;
