//! The only handle on the OT broker the subscriber holds: a [`SubscribeOnly`] connection can
//! subscribe and take what the broker sends, and nothing else. rumqttc's `AsyncClient` (which
//! can publish) and `EventLoop` (whose public request queue and network could be used to send)
//! are made and kept inside this module and never handed out; clippy forbids rumqttc's publish
//! calls outside the IT sink, and `crates/airlock/tests/architecture.rs` checks that no other
//! file of a southbound crate names these types.

use rumqttc::{AsyncClient, ClientError, ConnectionError, Event, EventLoop, MqttOptions, SubscribeFilter};

/// A connection to an OT broker that can only subscribe and receive.
pub struct SubscribeOnly {
    client: AsyncClient,
    events: EventLoop,
}

impl SubscribeOnly {
    /// A connection with `options`; it connects on the first [`poll`](Self::poll).
    pub fn new(options: MqttOptions) -> Self {
        let (client, events) = AsyncClient::new(options, 16);
        Self { client, events }
    }

    /// The next thing the broker sent (or the connection did), reconnecting when called after a
    /// failure.
    pub async fn poll(&mut self) -> Result<Event, ConnectionError> {
        self.events.poll().await
    }

    /// Asks for `filters`, without waiting.
    pub fn subscribe(&self, filters: impl IntoIterator<Item = SubscribeFilter>) -> Result<(), ClientError> {
        self.client.try_subscribe_many(filters)
    }
}
