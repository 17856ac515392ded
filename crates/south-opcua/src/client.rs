//! The OPC UA device task: one client session per server.
//!
//! It connects (GetEndpoints, then the endpoint of the configured policy and mode), creates one
//! subscription with a monitored item per tag, and hands values on as they are published. The
//! session's own event loop (async-opcua) keeps the session alive and reconnects with
//! exponential backoff after a loss; this task makes the subscription and its monitored items
//! again on every new session (and when the server ends the subscription, e.g. a timeout);
//! while the server is unreachable every tag is bad (comms lost). A monitored item the
//! server refuses (an unknown node id) makes that tag bad with the server's status code; a
//! server that refuses subscriptions is read by polling reads instead, as is a device with
//! `read_mode = "poll"`. A server certificate that is not trusted is named by its thumbprint.

use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use airlock_config::{Device, Identity, OpcUaDevice, ReadMode, Security};
use airlock_model::pace::{Backoff, RateCap};
use airlock_model::{DeviceHealth, LinkState, Quality, Reason, Sample, Timestamp};
use airlock_pipeline::{DeviceHandle, Running, Source};
use opcua::client::{
    Client, ClientBuilder, IdentityToken, MonitoredItem, OnSubscriptionNotification, SessionConnectMode,
    SessionPollResult,
};
use opcua::crypto::{PrivateKey, SecurityPolicy};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeTrigger, DataValue, DeadbandType, EndpointDescription, ExtensionObject,
    MessageSecurityMode, MonitoredItemCreateRequest, NodeId, ReadValueId, StatusChangeNotification, StatusCode,
    TimestampsToReturn, UserTokenPolicy, Variant,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::link::ReadSession;
use crate::trust::{APPLICATION_URI, Pki, read_certificate};
use crate::value::reading;

/// Values waiting between the subscription callback and the task, at most.
const VALUES_QUEUED_MAX: usize = 65_536;
/// And their bytes at most (a server may send strings and arrays of any size): beyond, a value
/// is dropped and counted, as when the queue is full.
const VALUES_QUEUED_BYTES_MAX: usize = 64 << 20;
/// Values per Publish response at most, so that a large subscription's responses stay within
/// the message size a server allows (a server sends more responses instead).
const NOTIFICATIONS_PER_PUBLISH: u32 = 1000;
/// Monitored items per CreateMonitoredItems request.
const ITEMS_PER_REQUEST: usize = 1000;
/// The longest array a message may hold: a waveform tag's 4,096 samples with room to spare
/// (async-opcua's default, 1,000, failed every message holding a longer waveform, and with it
/// every tag of that request). Lists of nodes and values go in requests of at most 1,000.
const ARRAY_LENGTH_MAX: usize = 8192;
/// Nodes per Read request when polling.
const READ_CHUNK: usize = 500;

/// One OPC UA server and the tags read from it.
#[derive(Debug)]
pub struct OpcUaTask {
    device: Device,
    opcua: OpcUaDevice,
    /// The pipeline's handle: tag ids, and where samples go.
    out: DeviceHandle,
    pki: Pki,
    health: Arc<DeviceHealth>,
    /// The bytes of the values waiting in the queue (about).
    queued_bytes: Arc<AtomicUsize>,
}

/// What the subscription's callback hands to the task.
enum Notice {
    /// A monitored item's value, by its client handle (the tag's index + 1), and its size.
    Value(u32, DataValue, usize),
    /// The server changed the subscription's state (a bad status: it is gone, e.g. timed out).
    Status(StatusCode),
}

/// The subscription's callbacks: values and status changes into the task's bounded channel;
/// when it is full the value is dropped and counted.
struct Notices {
    tx: mpsc::Sender<Notice>,
    health: Arc<DeviceHealth>,
    queued_bytes: Arc<AtomicUsize>,
}

impl OnSubscriptionNotification for Notices {
    fn on_data_value(&mut self, dv: DataValue, item: &MonitoredItem) {
        let bytes = dv.value.as_ref().map_or(0, approx_bytes) + 64;
        if self.queued_bytes.load(Relaxed) + bytes > VALUES_QUEUED_BYTES_MAX {
            DeviceHealth::count(&self.health.batches_dropped, 1);
            return;
        }
        self.queued_bytes.fetch_add(bytes, Relaxed);
        if self.tx.try_send(Notice::Value(item.client_handle(), dv, bytes)).is_err() {
            self.queued_bytes.fetch_sub(bytes, Relaxed);
            DeviceHealth::count(&self.health.batches_dropped, 1);
        }
    }

    fn on_subscription_status_change(&mut self, notification: StatusChangeNotification) {
        if self.tx.try_send(Notice::Status(notification.status)).is_err() {
            DeviceHealth::count(&self.health.batches_dropped, 1);
        }
    }
}

/// About how many bytes a value holds: its strings, byte strings and array elements.
fn approx_bytes(v: &Variant) -> usize {
    match v {
        Variant::String(s) => s.len().max(0).unsigned_abs(),
        Variant::ByteString(b) => b.len(),
        Variant::LocalizedText(t) => t.text.len().max(0).unsigned_abs() + t.locale.len().max(0).unsigned_abs(),
        Variant::Array(a) => a.values.iter().map(|e| 16 + approx_bytes(e)).sum(),
        Variant::Variant(inner) => approx_bytes(inner),
        Variant::DataValue(dv) => dv.value.as_ref().map_or(0, approx_bytes),
        _ => 16,
    }
}

/// Aborts the session's event loop when the task ends or is dropped.
struct EventLoopGuard(JoinHandle<()>);

impl Drop for EventLoopGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl OpcUaTask {
    /// A task for `device` (`opcua` is its protocol part), reading into `out`; its
    /// certificates live under `data_dir/opcua`.
    pub fn new(device: &Device, opcua: &OpcUaDevice, out: DeviceHandle, data_dir: &Path) -> Self {
        Self {
            device: device.clone(),
            opcua: opcua.clone(),
            pki: Pki::new(data_dir, &device.name),
            health: out.health(),
            out,
            queued_bytes: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Reads the server until `shutdown` turns true or its sender is dropped.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tokio::select! {
            () = self.connect_forever() => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }

    fn client(&self) -> Result<Client, String> {
        let d = &self.device;
        let retry = Retry { limit: -1, initial: d.backoff_initial, max: d.backoff_max };
        client(&self.pki, &d.name, retry, d.timeout, self.opcua.security != Security::None)
    }

    async fn connect_forever(self) {
        let name = self.device.name.clone();
        let fatal = |e: String| {
            log::error!("device {name}: {e}; its tags stay bad");
            self.health.set_last_error(e);
            self.out.emit(0, self.out.all_bad(Reason::CommsLost));
        };
        if let Err(e) = self.pki.prepare(&self.opcua.trusted_server_certs) {
            return fatal(e);
        }
        let identity = match identity_token(&self.opcua.identity) {
            Ok(i) => i,
            Err(e) => return fatal(e),
        };
        let seed = Timestamp::now().as_nanos().unsigned_abs() ^ (self.out.device() as u64) << 32;
        let mut backoff = Backoff::new(self.device.backoff_initial, self.device.backoff_max, seed);
        let mut down_reported = false;
        let mut batch = 0u64;
        loop {
            self.health.set_state(LinkState::Connecting);
            let mut client = match self.client() {
                Ok(c) => c,
                Err(e) => return fatal(format!("cannot set up the OPC UA client: {e}")),
            };
            // GetEndpoints retries inside async-opcua; bound it, so that a server that is not
            // there at start makes the tags bad like one that goes away later.
            let connect = ReadSession::connect(&mut client, endpoint(&self.opcua), identity.clone());
            let connected = match tokio::time::timeout(self.connect_timeout(), connect).await {
                Ok(result) => result.map_err(|e| self.explain(e.status(), &e.to_string())),
                Err(_) => Err(format!("no answer from {} within {:?}", self.opcua.endpoint, self.connect_timeout())),
            };
            match connected {
                Ok((session, event_loop)) => {
                    backoff.reset();
                    let why = self.serve(session, event_loop, &mut batch).await;
                    log::warn!("device {name}: the session ended: {why}");
                }
                Err(why) => {
                    DeviceHealth::count(&self.health.comm_errors, 1);
                    self.health.set_last_error(why.clone());
                    if !std::mem::replace(&mut down_reported, true) {
                        log::warn!("device {name}: {why}; its tags are bad until it answers");
                        batch += 1;
                        self.out.emit(batch, self.out.all_bad(Reason::CommsLost));
                    }
                }
            }
            self.health.set_state(LinkState::Backoff);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// How long the first contact (GetEndpoints and the session's set-up) may take.
    fn connect_timeout(&self) -> Duration {
        (self.device.timeout * 5).max(Duration::from_secs(5))
    }

    /// An error for people: an untrusted server certificate is named by its thumbprint.
    fn explain(&self, status: StatusCode, error: &str) -> String {
        let endpoint = &self.opcua.endpoint;
        if matches!(status, StatusCode::BadCertificateUntrusted | StatusCode::BadSecurityChecksFailed)
            && let Some((thumbprint, file)) = self.pki.rejected().into_iter().next()
        {
            return format!(
                "the server certificate of {endpoint} (SHA-1 thumbprint {thumbprint}) is not trusted: \
                 check it, then add its file to trusted_server_certs (a copy is at {})",
                file.display()
            );
        }
        format!("cannot connect to {endpoint}: {error}")
    }

    /// Runs one session until its event loop ends (it retries for ever, so: a fatal error), and
    /// says why it ended.
    async fn serve(
        &self,
        session: ReadSession,
        event_loop: opcua::client::SessionEventLoop<opcua::client::transport::TcpConnector>,
        batch: &mut u64,
    ) -> String {
        let name = &self.device.name;
        let (events_tx, mut events) = mpsc::channel::<Result<SessionPollResult, StatusCode>>(64);
        let _guard = EventLoopGuard(tokio::spawn(async move {
            let mut stream = Box::pin(event_loop.enter());
            while let Some(event) = next(&mut stream).await {
                let last = event.is_err();
                let wanted = matches!(
                    event,
                    Err(_)
                        | Ok(SessionPollResult::ConnectionLost(_)
                            | SessionPollResult::Reconnected(_)
                            | SessionPollResult::ReconnectFailed(_))
                );
                if wanted && events_tx.send(event).await.is_err() || last {
                    break;
                }
            }
        }));
        let (values_tx, mut values) = mpsc::channel::<Notice>(VALUES_QUEUED_MAX);
        let mut poll = matches!(self.opcua.mode, ReadMode::Poll);
        let mut subscription: Option<u32> = None;
        let mut up = false;
        let mut down_reported = false;
        let mut ticker = tokio::time::interval(self.device.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut buf = Vec::with_capacity(4096);
        let plan = self.read_plan();
        let mut pace = RateCap::new(self.device.rate_max_per_s);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    None | Some(Err(_)) => {
                        return match event { Some(Err(code)) => code.to_string(), _ => "event loop ended".into() };
                    }
                    Some(Ok(SessionPollResult::Reconnected(mode))) => {
                        up = true;
                        down_reported = false;
                        self.health.set_state(LinkState::Up);
                        log::info!("device {name}: session open on {} ({mode:?})", self.opcua.endpoint);
                        // A new session has none of the old one's subscriptions: make ours again
                        // (async-opcua's own re-creation sends no Publish afterwards, seen with
                        // asyncua 2.1). A reactivated session kept them.
                        if matches!(mode, SessionConnectMode::NewSession(_)) && !poll {
                            if let Some(old) = subscription.take() {
                                let _ = session.delete_subscription(old).await;
                            }
                            match self.subscribe(&session, values_tx.clone(), batch).await {
                                Ok(id) => subscription = Some(id),
                                Err(e) => {
                                    log::warn!("device {name}: no subscription ({e}); reading by polling instead");
                                    poll = true;
                                }
                            }
                        }
                    }
                    Some(Ok(SessionPollResult::ConnectionLost(code) | SessionPollResult::ReconnectFailed(code))) => {
                        up = false;
                        self.health.set_state(LinkState::Backoff);
                        DeviceHealth::count(&self.health.comm_errors, 1);
                        let why = self.explain(code, &code.to_string());
                        self.health.set_last_error(why.clone());
                        if !std::mem::replace(&mut down_reported, true) {
                            log::warn!("device {name}: {why}; its tags are bad until it is back");
                            *batch += 1;
                            self.out.emit(*batch, self.out.all_bad(Reason::CommsLost));
                        }
                    }
                    Some(Ok(_)) => {}
                },
                n = values.recv_many(&mut buf, 4096) => {
                    if n == 0 {
                        continue;
                    }
                    let now = Timestamp::now();
                    let mut samples = Vec::with_capacity(n);
                    let mut lost = None;
                    for notice in buf.drain(..) {
                        match notice {
                            // A monitored item's client handle is its tag's index + 1.
                            Notice::Value(handle, dv, bytes) => {
                                self.queued_bytes.fetch_sub(bytes, Relaxed);
                                let tag = (handle as usize).checked_sub(1).filter(|t| *t < self.device.tags.len());
                                if let Some(tag) = tag {
                                    samples.push(self.sample(tag, &dv, now));
                                }
                            }
                            Notice::Status(status) if status.is_bad() => lost = Some(status),
                            Notice::Status(_) => {}
                        }
                    }
                    *batch += 1;
                    DeviceHealth::count(&self.health.polls, 1);
                    self.out.emit(*batch, samples);
                    if let Some(status) = lost {
                        // The server dropped the subscription (e.g. it timed out): the tags are
                        // bad until a new one is made on the same session.
                        log::warn!("device {name}: the server ended the subscription ({status}); making a new one");
                        let code = (status.bits() >> 16) as u16;
                        *batch += 1;
                        self.out.emit(*batch, self.out.all_bad(Reason::SourceStatus(code)));
                        if let Some(old) = subscription.take() {
                            let _ = session.delete_subscription(old).await;
                        }
                        match self.subscribe(&session, values_tx.clone(), batch).await {
                            Ok(id) => subscription = Some(id),
                            Err(e) => log::warn!("device {name}: no new subscription yet ({e})"),
                        }
                    }
                }
                _ = ticker.tick(), if poll && up => {
                    *batch += 1;
                    let samples = self.read_all(&session, &plan, &mut pace).await;
                    DeviceHealth::count(&self.health.polls, 1);
                    self.out.emit(*batch, samples);
                }
            }
        }
    }

    /// Creates the subscription and one monitored item per tag. A refused item makes its tag
    /// bad with the server's status code.
    async fn subscribe(
        &self,
        session: &ReadSession,
        values: mpsc::Sender<Notice>,
        batch: &mut u64,
    ) -> Result<u32, String> {
        let ReadMode::Subscribe { publishing_interval } = self.opcua.mode else {
            return Err("the device reads by polling".into());
        };
        let callback =
            Notices { tx: values, health: Arc::clone(&self.health), queued_bytes: Arc::clone(&self.queued_bytes) };
        let id = session
            .create_subscription(publishing_interval, 30, 10, NOTIFICATIONS_PER_PUBLISH, callback)
            .await
            .map_err(|e| e.to_string())?;
        let mut requests = Vec::new();
        let mut tags = Vec::new();
        let now = Timestamp::now();
        let mut refused = Vec::new();
        for (i, n) in self.opcua.nodes.iter().enumerate() {
            let Ok(node) = NodeId::from_str(&n.node_id) else {
                refused.push(Sample::bad(self.out.tag_id(i), Reason::SourceStatus(0x8033), now));
                continue;
            };
            let mut r: MonitoredItemCreateRequest = node.into();
            r.requested_parameters.client_handle = i as u32 + 1;
            r.requested_parameters.sampling_interval = n.sampling_interval.as_secs_f64() * 1000.0;
            r.requested_parameters.queue_size = n.queue_size;
            r.requested_parameters.discard_oldest = true;
            if let Some(deadband) = n.server_deadband {
                r.requested_parameters.filter = ExtensionObject::from_message(DataChangeFilter {
                    trigger: DataChangeTrigger::StatusValue,
                    deadband_type: DeadbandType::Absolute as u32,
                    deadband_value: deadband,
                });
            }
            requests.push(r);
            tags.push(i);
        }
        // In requests of at most ITEMS_PER_REQUEST, so that a large tag list fits a server's
        // message and operation limits.
        for (chunk, tags) in requests.chunks(ITEMS_PER_REQUEST).zip(tags.chunks(ITEMS_PER_REQUEST)) {
            let created = session
                .create_monitored_items(id, TimestampsToReturn::Both, chunk.to_vec())
                .await
                .map_err(|e| e.to_string())?;
            for (item, &tag) in created.iter().zip(tags) {
                let status = item.status_code;
                if status.is_bad() {
                    let n = &self.opcua.nodes[tag];
                    log::warn!(
                        "device {}: tag {}: the server refused {:?}: {status}",
                        self.device.name,
                        self.device.tags[tag].name,
                        n.node_id
                    );
                    refused.push(Sample::bad(
                        self.out.tag_id(tag),
                        Reason::SourceStatus((status.bits() >> 16) as u16),
                        now,
                    ));
                }
            }
        }
        if !refused.is_empty() {
            *batch += 1;
            self.out.emit(*batch, refused);
        }
        Ok(id)
    }

    /// The Read requests of one poll: node ids parsed once, at most READ_CHUNK nodes each,
    /// with the tags they feed.
    fn read_plan(&self) -> Vec<(Vec<ReadValueId>, Vec<usize>)> {
        let ids: Vec<(usize, NodeId)> = self
            .opcua
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| NodeId::from_str(&n.node_id).ok().map(|id| (i, id)))
            .collect();
        ids.chunks(READ_CHUNK)
            .map(|chunk| {
                let reads = chunk
                    .iter()
                    .map(|(_, node_id)| ReadValueId {
                        node_id: node_id.clone(),
                        attribute_id: AttributeId::Value as u32,
                        ..Default::default()
                    })
                    .collect();
                (reads, chunk.iter().map(|(i, _)| *i).collect())
            })
            .collect()
    }

    /// One poll: every request of `plan`, each when the device's rate cap allows it.
    async fn read_all(
        &self,
        session: &ReadSession,
        plan: &[(Vec<ReadValueId>, Vec<usize>)],
        pace: &mut RateCap,
    ) -> Vec<Sample> {
        let mut samples = Vec::with_capacity(self.opcua.nodes.len());
        for (reads, tags) in plan {
            let at = pace.reserve(std::time::Instant::now());
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            DeviceHealth::count(&self.health.requests, 1);
            let asked = std::time::Instant::now();
            let result = session.read(reads, TimestampsToReturn::Both).await;
            self.health.latency.record(asked.elapsed());
            let now = Timestamp::now();
            match result {
                Ok(values) => samples.extend(tags.iter().zip(&values).map(|(&t, dv)| self.sample(t, dv, now))),
                Err(e) => {
                    let reason = if e.status() == StatusCode::BadTimeout { Reason::Timeout } else { Reason::CommsLost };
                    DeviceHealth::count(&self.health.comm_errors, 1);
                    self.health.set_last_error(format!("read: {e}"));
                    samples.extend(tags.iter().map(|&t| Sample::bad(self.out.tag_id(t), reason, now)));
                }
            }
        }
        samples
    }

    fn sample(&self, tag: usize, dv: &DataValue, now: Timestamp) -> Sample {
        let (value, quality, source_time) = reading(dv, self.device.tags[tag].data_type);
        if !matches!(quality, Quality::Good) {
            DeviceHealth::count(&self.health.exceptions, 1);
        }
        self.out.sample(tag, value, quality, source_time, now)
    }
}

impl Source for OpcUaTask {
    fn run(self: Box<Self>, stop: watch::Receiver<bool>) -> Running {
        Box::pin((*self).run(stop))
    }
}

/// How a session retries after a loss: `limit` attempts (-1: for ever), waits doubling from
/// `initial` up to `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub limit: i32,
    pub initial: Duration,
    pub max: Duration,
}

/// An async-opcua client with airlock's identity, the device's trust list and `retry`. The
/// application certificate is made (once, then kept) only when a secured channel needs it.
pub(crate) fn client(pki: &Pki, name: &str, retry: Retry, timeout: Duration, secured: bool) -> Result<Client, String> {
    ClientBuilder::new()
        .application_name("airlock")
        .application_uri(APPLICATION_URI)
        .product_uri(APPLICATION_URI)
        .pki_dir(&pki.dir)
        .certificate_path(&pki.own_cert)
        .private_key_path(&pki.own_key)
        .create_sample_keypair(secured)
        .trust_server_certs(false)
        .verify_server_certs(true)
        .session_retry_limit(retry.limit)
        .session_retry_initial(retry.initial)
        .session_retry_max(retry.max)
        .request_timeout(timeout.max(Duration::from_millis(100)))
        .max_array_length(ARRAY_LENGTH_MAX)
        .recreate_subscriptions(false)
        .session_name(format!("airlock {name}"))
        .client()
        .map_err(|errors| errors.join("; "))
}

pub(crate) fn identity_token(identity: &Identity) -> Result<IdentityToken, String> {
    Ok(match identity {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::User { username, password } => IdentityToken::new_user_name(username, password.read()?),
        Identity::Certificate { cert, key } => {
            let cert = read_certificate(cert)?;
            let key = PrivateKey::read_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            IdentityToken::X509(Box::new(cert), Box::new(key))
        }
    })
}

/// The endpoint to match among the server's: its URL, policy and message mode.
pub(crate) fn endpoint(opcua: &OpcUaDevice) -> EndpointDescription {
    let (policy, mode) = match opcua.security {
        Security::None => (SecurityPolicy::None, MessageSecurityMode::None),
        Security::Sign => (SecurityPolicy::Basic256Sha256, MessageSecurityMode::Sign),
        Security::SignAndEncrypt => (SecurityPolicy::Basic256Sha256, MessageSecurityMode::SignAndEncrypt),
    };
    (opcua.endpoint.as_str(), policy.to_uri(), mode, UserTokenPolicy::anonymous()).into()
}

/// The next item of a stream, without a futures crate.
pub(crate) async fn next<S: futures_core::Stream + ?Sized>(stream: &mut Pin<Box<S>>) -> Option<S::Item> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}
