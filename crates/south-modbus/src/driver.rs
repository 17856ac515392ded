//! The device task: one per device, owning that device's only connection.
//!
//! Each poll tick it sends the planned read requests in order, each after the pacer allows it,
//! with at most `requests_in_flight_max` of them awaiting their answers (1 by default: one
//! request in flight), and takes the answers in the same order (one that comes before its turn
//! waits for it), each awaited under the device's timeout. What the device answers decides
//! what happens next:
//! - data: the tags of that request are decoded (a tag that does not decode is bad on its own);
//! - an exception response: the tags of that request are bad with that exception code, and the
//!   connection stays up (the device is alive and said no);
//! - a timeout, a dropped connection or a malformed frame: the device's tags go bad, the
//!   connection is dropped, and the task reconnects after an exponential backoff with jitter.
//!
//! Problems are logged once per change of state, never once per poll. A device task shares
//! nothing with other device tasks but the pipeline's channel, reached through its
//! `DeviceHandle`, which never waits: a full channel drops the batch and counts it, so a slow
//! consumer slows no device and a slow device slows no other.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use airlock_config::{Device, ModbusDevice};
use airlock_model::{DeviceHealth, LinkState, Reason, Sample, Timestamp};
use airlock_pipeline::{BATCH_SAMPLES, BATCH_WAIT, DeviceHandle, Running, Source};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, timeout};

use crate::decode::{decode_bit, decode_registers};
use crate::link::{Answer, Data, LinkError, ReadLink};

/// The link to a device, over TCP.
type Link = ReadLink<TcpStream>;
use crate::pacer::{Backoff, Pacer};
use crate::plan::{PlanLimits, ReadRequest, plan};

/// Why a device is unreachable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    Connect(String),
    /// No answer in time. `ahead`: the request went out before the answer to the one before
    /// it was taken (requests in flight), as with `Transport`.
    Timeout {
        request: String,
        ahead: bool,
    },
    Transport {
        request: String,
        error: String,
        ahead: bool,
    },
}

impl Failure {
    fn reason(&self) -> Reason {
        match self {
            Failure::Timeout { .. } => Reason::Timeout,
            Failure::Connect(_) | Failure::Transport { .. } => Reason::CommsLost,
        }
    }

    /// Whether the request that failed went out while another awaited its answer.
    fn sent_ahead(&self) -> bool {
        matches!(self, Failure::Timeout { ahead: true, .. } | Failure::Transport { ahead: true, .. })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "connect: {e}"),
            Failure::Timeout { request, .. } => write!(f, "{request}: no answer within the timeout"),
            Failure::Transport { request, error, .. } => write!(f, "{request}: {error}"),
        }
    }
}

/// What the task has already reported, so that it logs and emits once per change.
#[derive(Debug, Default)]
struct Reported {
    failure: Option<Failure>,
    /// The last exception code seen per request (0 for none).
    exceptions: Vec<u8>,
}

/// One Modbus TCP device and everything needed to read it.
#[derive(Debug)]
pub struct DeviceTask {
    device: Arc<Device>,
    modbus: Arc<ModbusDevice>,
    requests: Vec<ReadRequest>,
    /// The pipeline's handle: tag ids, and where samples go.
    out: DeviceHandle,
    health: Arc<DeviceHealth>,
}

impl DeviceTask {
    /// A task for `device` (a Modbus device: `modbus` is its protocol part), reading into
    /// `out`. `coalesce: false` plans one request per tag (the benchmark's baseline).
    pub fn new(device: &Arc<Device>, modbus: &Arc<ModbusDevice>, out: DeviceHandle, coalesce: bool) -> Self {
        Self {
            device: Arc::clone(device),
            modbus: Arc::clone(modbus),
            requests: requests(modbus, coalesce),
            health: out.health(),
            out,
        }
    }

    pub fn health(&self) -> Arc<DeviceHealth> {
        Arc::clone(&self.health)
    }

    pub fn requests(&self) -> &[ReadRequest] {
        &self.requests
    }

    /// Polls the device until `shutdown` turns true or its sender is dropped.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tokio::select! {
            () = self.poll_forever() => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }

    async fn poll_forever(self) {
        self.warn_if_rate_cap_binds();
        let mut pacer = Pacer::new(self.device.rate_max_per_s);
        let seed = Timestamp::now().as_nanos().unsigned_abs() ^ (self.out.device() as u64) << 32;
        let mut backoff = Backoff::new(self.device.backoff_initial, self.device.backoff_max, seed);
        let mut ticker = tokio::time::interval(self.device.poll_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut reported = Reported { exceptions: vec![0; self.requests.len()], ..Reported::default() };
        let mut link: Option<Link> = None;
        let mut poll = 0u64;
        let mut in_flight_max = usize::from(self.modbus.requests_in_flight_max.max(1));
        loop {
            ticker.tick().await;
            let ctx = match link.as_mut() {
                Some(ctx) => ctx,
                None => match self.connect().await {
                    Ok(ctx) => link.insert(ctx),
                    Err(failure) => {
                        self.went_down(failure, &mut reported);
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                },
            };
            poll += 1;
            let failure = self.poll(ctx, poll, in_flight_max, &mut pacer, &mut reported).await;
            match failure {
                None => {
                    backoff.reset();
                    self.came_up(&mut reported);
                }
                Some(failure) => {
                    link = None;
                    if failure.sent_ahead() && in_flight_max > 1 {
                        // Some devices drop a request that comes while they answer another (or
                        // close the connection, or answer it wrongly); a pulled cable looks the
                        // same from here, and the safe side is one request at a time.
                        log::warn!(
                            "device {}: {failure}, with requests in flight; reading it one request at a time from now on, as with requests_in_flight_max = 1 (a reload restores the setting)",
                            self.device.name
                        );
                        in_flight_max = 1;
                    }
                    self.went_down(failure, &mut reported);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    async fn connect(&self) -> Result<Link, Failure> {
        self.health.set_state(LinkState::Connecting);
        let address = self.modbus.address.as_str();
        let stream = match timeout(self.device.timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(Failure::Connect(format!("{address}: {e}"))),
            Err(_) => return Err(Failure::Connect(format!("{address}: no answer within the timeout"))),
        };
        stream.set_nodelay(true).map_err(|e| Failure::Connect(format!("set TCP_NODELAY: {e}")))?;
        Ok(ReadLink::attach(stream, self.modbus.unit_id))
    }

    /// One poll: every planned request in turn, up to `in_flight_max` sent ahead of the answer
    /// awaited (a device that timed out with several in flight is read one at a time after).
    /// Answers' samples are gathered and handed on together before the next answer would take
    /// them past [`BATCH_SAMPLES`], once the oldest has waited [`BATCH_WAIT`] or would wait
    /// longer for the rate cap's next slot and the next answer (at the last one's pace), and at
    /// the poll's end: one hand-over (and at most one wake-up of the collector) per thousand
    /// samples from a fast device, not one per request. Samples read but not yet handed on when
    /// the gateway stops are not kept (they were never in the store). Returns why the link
    /// failed, if it did (what was read is handed on).
    async fn poll(
        &self,
        link: &mut Link,
        poll: u64,
        in_flight_max: usize,
        pacer: &mut Pacer,
        reported: &mut Reported,
    ) -> Option<Failure> {
        DeviceHealth::count(&self.health.polls, 1);
        // The words of a tag read in parts (a waveform), gathered until its last part arrives.
        let mut partial: Result<Vec<u16>, Reason> = Ok(Vec::new());
        let mut samples: Vec<Sample> = Vec::new();
        let mut first_read = std::time::Instant::now();
        // The last answer's round trip: a device slower than BATCH_WAIT gets no batching.
        let mut round_trip = std::time::Duration::ZERO;
        let mut sent = 0;
        // Answers that came before their turn: (request, answer, its round trip, when answered).
        let mut early: Vec<(usize, Answer, std::time::Duration, Timestamp)> = Vec::new();
        for (i, req) in self.requests.iter().enumerate() {
            // Until this request's answer is in: send what the bound and the rate cap allow (this
            // request first, after its slot), and take answers as they come, keeping those that
            // came before their turn. A request ahead goes when its slot comes, while answers are
            // taken (they would wait unread, and be stamped late, while the task slept).
            let taken = loop {
                if let Some(at) = early.iter().position(|(key, ..)| *key == i) {
                    let (_, answer, took, now) = early.swap_remove(at);
                    break Ok((answer, took, now));
                }
                let slot = (sent < self.requests.len() && sent < i + in_flight_max).then(|| pacer.ready_at());
                if let Some(slot) = slot
                    && (sent == i || slot <= tokio::time::Instant::now())
                {
                    let slot = pacer.reserve();
                    // What has been read goes on now if the rate cap or the device's pace (its
                    // last round trip) would keep it past BATCH_WAIT.
                    if !samples.is_empty() && (slot.into_std() + round_trip > first_read + BATCH_WAIT) {
                        self.out.emit(poll, std::mem::take(&mut samples));
                    }
                    if slot > tokio::time::Instant::now() {
                        tokio::time::sleep_until(slot).await;
                    }
                    DeviceHealth::count(&self.health.requests, 1);
                    let next = &self.requests[sent];
                    match timeout(self.device.timeout, link.send(next, sent)).await {
                        Ok(Ok(())) => sent += 1,
                        Ok(Err(e)) => break Err(self.failure(next, Some(e), sent > i)),
                        Err(_) => break Err(self.failure(next, None, sent > i)),
                    }
                    continue;
                }
                // The next answer, or the slot of the next request ahead, whichever comes first
                // (`answer` keeps what it read of an answer when the slot comes first).
                let waited = tokio::select! {
                    biased;
                    answered = timeout(self.device.timeout, link.answer()) => answered,
                    () = tokio::time::sleep_until(slot.unwrap_or_else(tokio::time::Instant::now)), if slot.is_some() => continue,
                };
                let answered = match waited {
                    Ok(Ok(answered)) => answered,
                    // Ahead: another request was in flight, or this one went out while others were.
                    Ok(Err(e)) => break Err(self.failure(req, Some(e), sent > i + 1 || link.sent_ahead(i))),
                    Err(_) => break Err(self.failure(req, None, sent > i + 1 || link.sent_ahead(i))),
                };
                if link.in_flight() > 0
                    && !(sent < self.requests.len() && pacer.ready_at() <= tokio::time::Instant::now())
                {
                    // No request goes out now to carry the acknowledgement of this answer to a
                    // device that waits for it before it sends the next.
                    link.acknowledge_now();
                }
                let (took, now) = (answered.asked.elapsed(), Timestamp::now());
                if answered.key == i {
                    break Ok((answered.answer, took, now));
                }
                early.push((answered.key, answered.answer, took, now));
            };
            let (answer, took, now) = match taken {
                Ok(taken) => taken,
                Err(failure) => {
                    self.out.emit(poll, samples);
                    return Some(failure);
                }
            };
            round_trip = took;
            self.health.latency.record(round_trip);
            if samples.is_empty() {
                samples.reserve(BATCH_SAMPLES.min(self.device.tag_count()).max(req.tags.len()));
                first_read = std::time::Instant::now();
            }
            match answer {
                Ok(data) => {
                    self.exception_changed(i, 0, reported);
                    self.decode(req, Ok(&data), now, &mut partial, &mut samples);
                }
                Err(code) => {
                    DeviceHealth::count(&self.health.exceptions, 1);
                    self.exception_changed(i, code, reported);
                    self.decode(req, Err(Reason::Exception(code)), now, &mut partial, &mut samples);
                }
            }
            // Before the next answer would take the batch past its room (a grown vector holds
            // twice the room: at a 1 ms poll, 32 MB of batches waited for the collector, not 16).
            let next = self.requests.get(i + 1).map_or(0, |r| r.tags.len());
            if samples.len() + next > BATCH_SAMPLES || first_read.elapsed() >= BATCH_WAIT {
                self.out.emit(poll, std::mem::take(&mut samples));
            }
        }
        self.out.emit(poll, samples);
        None
    }

    /// Why `req` failed: the link's `error`, or no answer within the timeout (`None`); `ahead`:
    /// with other requests in flight.
    fn failure(&self, req: &ReadRequest, error: Option<LinkError>, ahead: bool) -> Failure {
        let request = self.describe(req);
        match error {
            Some(e) => Failure::Transport { request, error: e.to_string(), ahead },
            None => Failure::Timeout { request, ahead },
        }
    }

    /// The samples of `req`'s tags from its answer: the data, or why the device refused it.
    fn decode(
        &self,
        req: &ReadRequest,
        answer: Result<&Data, Reason>,
        now: Timestamp,
        partial: &mut Result<Vec<u16>, Reason>,
        samples: &mut Vec<Sample>,
    ) {
        for planned in &req.tags {
            let tag = &self.modbus.tags[planned.index];
            let at = usize::from(planned.offset);
            let value = if planned.parts > 1 {
                // A tag in parts: gather its words; decode once the last part is in.
                if planned.part == 0 {
                    *partial = Ok(Vec::with_capacity(usize::from(tag.width())));
                }
                match (answer, partial.as_mut()) {
                    (Ok(Data::Words(w)), Ok(words)) => {
                        let missing = usize::from(tag.width()).saturating_sub(words.len());
                        words.extend(w.iter().skip(at).take(missing));
                    }
                    (Err(reason), _) => *partial = Err(reason),
                    _ => {}
                }
                if planned.part + 1 < planned.parts {
                    continue;
                }
                std::mem::replace(partial, Ok(Vec::new())).and_then(|words| decode_registers(tag, &words))
            } else {
                answer.and_then(|data| match data {
                    Data::Words(w) => decode_registers(tag, w.get(at..).unwrap_or(&[])),
                    Data::Bits(b) => decode_bit(b.get(at..).unwrap_or(&[])),
                })
            };
            let id = self.out.tag_id(planned.index);
            samples.push(match value {
                Ok(v) => Sample::good(id, v, now),
                Err(reason) => Sample::bad(id, reason, now),
            });
        }
    }

    /// "read holding_register 100..120 from press1", for logs.
    fn describe(&self, req: &ReadRequest) -> String {
        let end = u32::from(req.start) + u32::from(req.count);
        format!("read {} {}..{end} from {}", req.space.name(), req.start, self.device.name)
    }

    fn exception_changed(&self, request: usize, code: u8, reported: &mut Reported) {
        let Some(last) = reported.exceptions.get_mut(request) else { return };
        if *last == code {
            return;
        }
        let req = &self.requests[request];
        if code == 0 {
            log::info!("{}: answers again", self.describe(req));
        } else {
            let message = format!("{}: exception {code:#04x} ({})", self.describe(req), exception_name(code));
            log::warn!("{message}; its tags are bad");
            self.health.set_last_error(message);
        }
        *last = code;
    }

    fn went_down(&self, failure: Failure, reported: &mut Reported) {
        DeviceHealth::count(&self.health.comm_errors, 1);
        self.health.set_state(LinkState::Backoff);
        // Once per kind of failure: the text of an OS error may differ from one attempt to the next.
        let same_kind = reported.failure.as_ref().map(std::mem::discriminant) == Some(std::mem::discriminant(&failure));
        if same_kind {
            return;
        }
        log::warn!("device {}: {failure}; its tags are bad, reconnecting with backoff", self.device.name);
        self.health.set_last_error(failure.to_string());
        self.out.emit(0, self.out.all_bad(failure.reason()));
        reported.failure = Some(failure);
    }

    fn came_up(&self, reported: &mut Reported) {
        self.health.set_state(LinkState::Up);
        if reported.failure.take().is_some() {
            log::info!("device {}: reading again", self.device.name);
        }
    }

    fn warn_if_rate_cap_binds(&self) {
        let per_poll = self.requests.len() as f64;
        let needed = per_poll / self.device.poll_interval.as_secs_f64();
        if needed > self.device.rate_max_per_s {
            let effective = Duration::try_from_secs_f64(per_poll / self.device.rate_max_per_s).unwrap_or(Duration::MAX);
            log::warn!(
                "device {}: {per_poll} requests per poll at {:?} need {needed:.1} requests/s, above rate_max_per_s {}; polls will come every {effective:?}",
                self.device.name,
                self.device.poll_interval,
                self.device.rate_max_per_s
            );
        }
    }
}

impl Source for DeviceTask {
    fn run(self: Box<Self>, stop: watch::Receiver<bool>) -> Running {
        Box::pin((*self).run(stop))
    }
}

/// The read requests of a device's tags, as the planner coalesces them (`coalesce: false`:
/// one per tag).
pub fn requests(modbus: &ModbusDevice, coalesce: bool) -> Vec<ReadRequest> {
    let limits =
        PlanLimits { max_gap_registers: modbus.max_gap_registers, max_gap_bits: modbus.max_gap_bits, coalesce };
    plan(&modbus.tags, limits)
}

fn exception_name(code: u8) -> &'static str {
    match code {
        1 => "illegal function",
        2 => "illegal data address",
        3 => "illegal data value",
        4 => "server device failure",
        5 => "acknowledge",
        6 => "server device busy",
        8 => "memory parity error",
        0x0a => "gateway path unavailable",
        0x0b => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}
