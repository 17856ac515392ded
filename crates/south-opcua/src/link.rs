//! The only handle on an OPC UA session the driver and `browse` hold: a [`ReadSession`] can
//! read attributes, browse, and make and delete its own subscriptions and monitored items,
//! and nothing else (no Write, no Call, no node management, no history update). async-opcua's
//! `Session`, which can do all of those, is made and kept inside this module and never handed
//! out; clippy's `disallowed-methods` forbids the write-side services anyway, and
//! `crates/airlock/tests/architecture.rs` checks that no other file of a southbound crate names
//! the session type.

use std::sync::Arc;
use std::time::Duration;

use opcua::client::transport::TcpConnector;
use opcua::client::{Client, IdentityToken, OnSubscriptionNotificationCore, Session, SessionEventLoop};
use opcua::types::{
    BrowseDescription, BrowseResult, ByteString, DataValue, EndpointDescription, Error, MonitoredItemCreateRequest,
    MonitoredItemCreateResult, ReadValueId, StatusCode, TimestampsToReturn,
};

/// A session that can only read.
#[derive(Clone)]
pub struct ReadSession(Arc<Session>);

impl ReadSession {
    /// Connects `client` to the server endpoint matching `endpoint`, as `identity`.
    pub async fn connect(
        client: &mut Client,
        endpoint: impl Into<EndpointDescription>,
        identity: IdentityToken,
    ) -> Result<(Self, SessionEventLoop<TcpConnector>), Error> {
        let (session, event_loop) = client.connect_to_matching_endpoint(endpoint, identity).await?;
        Ok((Self(session), event_loop))
    }

    /// The Read service: attributes of `nodes`.
    pub async fn read(&self, nodes: &[ReadValueId], timestamps: TimestampsToReturn) -> Result<Vec<DataValue>, Error> {
        self.0.read(nodes, timestamps, 0.0).await
    }

    /// The Browse service.
    pub async fn browse(&self, nodes: &[BrowseDescription], max_references: u32) -> Result<Vec<BrowseResult>, Error> {
        self.0.browse(nodes, max_references, None).await
    }

    /// The BrowseNext service.
    pub async fn browse_next(&self, continuation_points: &[ByteString]) -> Result<Vec<BrowseResult>, Error> {
        self.0.browse_next(false, continuation_points).await
    }

    /// A subscription of its own, delivering to `callback`; returns its id.
    #[allow(clippy::too_many_arguments)] // the CreateSubscription service's own parameters
    pub async fn create_subscription(
        &self,
        publishing_interval: Duration,
        lifetime_count: u32,
        max_keep_alive_count: u32,
        max_notifications_per_publish: u32,
        callback: impl OnSubscriptionNotificationCore + 'static,
    ) -> Result<u32, Error> {
        let priority = 0;
        self.0
            .create_subscription(
                publishing_interval,
                lifetime_count,
                max_keep_alive_count,
                max_notifications_per_publish,
                priority,
                true,
                callback,
            )
            .await
    }

    /// Monitored items in one of its own subscriptions.
    pub async fn create_monitored_items(
        &self,
        subscription: u32,
        timestamps: TimestampsToReturn,
        items: Vec<MonitoredItemCreateRequest>,
    ) -> Result<Vec<MonitoredItemCreateResult>, Error> {
        let created = self.0.create_monitored_items(subscription, timestamps, items).await?;
        Ok(created.into_iter().map(|c| c.result).collect())
    }

    /// Deletes one of its own subscriptions.
    pub async fn delete_subscription(&self, subscription: u32) -> Result<StatusCode, Error> {
        self.0.delete_subscription(subscription).await
    }

    /// Closes the session.
    pub async fn disconnect(&self) -> Result<(), Error> {
        self.0.disconnect().await
    }
}
