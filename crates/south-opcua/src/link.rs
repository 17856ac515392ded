//! The only handle on an OPC UA session the driver and `browse` hold: a [`ReadSession`] can
//! read attributes, browse, and make and delete its own subscriptions and monitored items,
//! and nothing else (no Write, no Call, no node management, no history update). async-opcua's
//! `Session`, which can do all of those, is made and kept inside this module and never handed
//! out; clippy's `disallowed-methods` forbids the write-side services anyway, and
//! `crates/airlock/tests/architecture.rs` checks that no other file of a southbound crate names
//! the session type.
//!
//! Every session also gets [`RefuseArguments`], a type loader consulted before async-opcua's
//! own: async-opcua 0.19 decodes an `Argument` by padding its array dimensions to a value rank
//! read from the wire, without bound, so a 100-byte value made it allocate 1.75 GB (found by
//! `fuzz/`, input in `fuzz/known/`). airlock reads process values; it refuses the `Argument`
//! structures instead of decoding them.

use std::sync::Arc;
use std::time::Duration;

use opcua::client::transport::TcpConnector;
use opcua::client::{Client, IdentityToken, OnSubscriptionNotificationCore, Session, SessionEventLoop};
use opcua::types::{
    BrowseDescription, BrowseResult, ByteString, Context, DataValue, DynEncodable, EncodingResult, EndpointDescription,
    Error, MonitoredItemCreateRequest, MonitoredItemCreateResult, NodeId, ReadValueId, StatusCode, TimestampsToReturn,
    TypeLoader, TypeLoaderCollection, TypeLoaderPriority,
};

/// `Argument` and the only structures that hold Arguments (`ProgramDiagnosticDataType`,
/// `ProgramDiagnostic2DataType`), in namespace 0: their data type ids and binary encoding ids
/// (async-opcua decodes an ExtensionObject under either).
const ARGUMENT_ENCODINGS: [u32; 6] = [296, 298, 894, 896, 24_033, 24_034];

/// A type loader that refuses the structures async-opcua 0.19 cannot decode within bounded
/// memory, before its generated loader sees them.
#[derive(Debug)]
pub struct RefuseArguments;

impl TypeLoader for RefuseArguments {
    fn load_from_binary(
        &self,
        node_id: &NodeId,
        _stream: &mut dyn std::io::Read,
        _ctx: &Context<'_>,
        _length: Option<usize>,
    ) -> Option<EncodingResult<Box<dyn DynEncodable>>> {
        let id = node_id.as_u32().filter(|id| node_id.namespace == 0 && ARGUMENT_ENCODINGS.contains(id))?;
        Some(Err(Error::decoding(format!(
            "airlock does not decode Argument structures (encoding i={id}): their decoder's memory is unbounded"
        ))))
    }

    fn priority(&self) -> TypeLoaderPriority {
        TypeLoaderPriority::Core
    }
}

/// Puts [`RefuseArguments`] before every type loader in `loaders`. (async-opcua's generated
/// loader already has the highest priority there is, so adding ours the usual way would put it
/// after, where it is never asked.)
pub fn refuse_arguments_first(loaders: &mut TypeLoaderCollection) {
    let mut first = TypeLoaderCollection::new_empty();
    first.add(Arc::new(RefuseArguments));
    for loader in loaders.iter() {
        first.add(Arc::clone(loader));
    }
    *loaders = first;
}

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
        refuse_arguments_first(session.encoding_context().write().loaders_mut());
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

#[cfg(test)]
mod tests {
    use opcua::types::{BinaryDecodable, ContextOwned, DataValue};

    use super::refuse_arguments_first;

    #[test]
    fn the_value_that_took_async_opcua_gigabytes_is_refused_before_decoding() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/known/opcua_value-oom-1754mb");
        let bytes = std::fs::read(&path).expect("the known input");
        let mut context = ContextOwned::default();
        refuse_arguments_first(context.loaders_mut());
        let mut stream = std::io::Cursor::new(&bytes[..]);
        let decoded = DataValue::decode(&mut stream, &context.context());
        let error = decoded.expect_err("an Argument structure is refused").to_string();
        assert!(error.contains("does not decode Argument structures"), "{error}");
    }
}
