//! The IT half's loop: datagrams from one UDP socket into the assembler, what it hands on into
//! this side's own outbox (mirrored records under the sender's ids; `diode_gap` and
//! `diode_silent` events under the receiver's own), whose sinks carry on as on a single box.
//!
//! It never sends: its one socket is only ever received from (`tests/architecture.rs` checks
//! this file has no send call). Where it stands (the newest id per class it has handed on) is
//! written to `diode.state` after each sync of the outbox, so a restart drops what it already
//! has and names what it missed.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_model::{AssetPath, Problems, Severity, Timestamp, Transition};
use airlock_store::{Class, Origin, OutboxReader, OutboxWriter, RecordId, StoreError};
use airlock_upstream::{EventRecord, GapCause, GapRecord, Upstream};

use crate::assemble::{AssembleStats, Assembler, MISSING_RANGES_MAX, MissingCause, Output, State};
use crate::wire::Heartbeat;

/// How the receiving half listens.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiveSettings {
    pub listen: SocketAddr,
    /// The sending gateway's name: datagrams of any other are counted and ignored.
    pub sender: String,
    /// How long a missing block is waited for before its records are named missing.
    pub reorder: Duration,
    /// No heartbeat for this long: the link is reported silent.
    pub silent_after: Duration,
    /// The socket's receive buffer (the kernel may cap it at `net.core.rmem_max`).
    pub receive_buffer_bytes: usize,
    /// The key shared with the sender (`key_file`): only datagrams sealed with it are taken.
    pub key_file: Option<std::path::PathBuf>,
}

/// What the receiving half shows: its counters and the OT side's last heartbeat.
#[derive(Debug, Default)]
pub struct ReceiveStatus {
    pub stats: Mutex<AssembleStats>,
    pub heartbeat: Mutex<Option<(Instant, Heartbeat)>>,
    pub silent: AtomicBool,
    /// Datagrams the kernel dropped because the socket's buffer was full.
    pub kernel_drops: AtomicU64,
    pub store_errors: AtomicU64,
}

/// Why the receiving half could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the sender name {0:?} is not a valid asset path segment")]
    Sender(String),
    #[error("{0}")]
    Key(String),
}

/// Said by `airlock check` and logged at start when the receiving half has no `key_file`.
pub const NO_KEY_WARNING: &str = "warning: no key_file: a forged datagram with a right checksum and the sender's name is \
     taken (one claiming id 2^64-1 would make every later record a duplicate); keep the receiver on the diode's link \
     only, or share a key_file with the sending half";

/// A gap event naming one record of the sender's, `origin`, lost on this side.
fn one_lost(origin: RecordId, time: Timestamp, cause: GapCause) -> GapRecord {
    GapRecord {
        time: Timestamp::now(),
        class: origin.class.name().into(),
        records: 1,
        first_id: origin.to_string().into(),
        last_id: origin.to_string().into(),
        from: time,
        to: time,
        cause,
    }
}

/// The state file in the data folder: where the receiver stands (see [`encode_state`]).
pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join("diode.state")
}

/// The state file's bytes: the newest id per class (four u64), the count of ranges named
/// missing (u32) and each (class u8, first u64, last u64), then a CRC-32 of all before it;
/// little-endian.
pub fn encode_state(state: &State) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(40 + 17 * state.missing.len());
    for l in state.last {
        bytes.extend_from_slice(&l.to_le_bytes());
    }
    bytes.extend_from_slice(&(state.missing.len() as u32).to_le_bytes());
    for (&(class, first), &last) in &state.missing {
        bytes.push(class);
        bytes.extend_from_slice(&first.to_le_bytes());
        bytes.extend_from_slice(&last.to_le_bytes());
    }
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    bytes
}

/// Reads a state file's bytes; `None` if they are not one. Pure, never panics.
pub fn decode_state(bytes: &[u8]) -> Option<State> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let u64_at = |at: usize| body.get(at..at + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let mut state = State::default();
    for c in 0..4 {
        state.last[c] = u64_at(c * 8)?;
    }
    let count = body.get(32..36).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)? as usize;
    if body.len() != 36 + count.checked_mul(17)? || count > MISSING_RANGES_MAX {
        return None;
    }
    for i in 0..count {
        let at = 36 + i * 17;
        let class = *body.get(at)?;
        let (first, last) = (u64_at(at + 1)?, u64_at(at + 9)?);
        if class > 3 || first > last {
            return None;
        }
        state.missing.insert((class, first), last);
    }
    Some(state)
}

/// Reads where the receiver stood; `None` if it never received anything (or the file is
/// corrupt, said in the log: then it starts where the sender stands at its next heartbeat).
pub fn read_state(path: &Path) -> Option<State> {
    let bytes = std::fs::read(path).ok()?;
    let state = decode_state(&bytes);
    if state.is_none() {
        log::error!("{}: corrupt; the receiver starts where the sender stands at its next heartbeat", path.display());
    }
    state
}

/// Written whole (a temporary file, synced, renamed, the folder synced), so that a power
/// loss leaves the old state or the new, never a torn or empty file.
fn write_state(path: &Path, state: &State) -> std::io::Result<()> {
    let tmp = path.with_extension("state.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    std::io::Write::write_all(&mut f, &encode_state(state))?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Records of each class looked at, from the newest back, to find the newest mirrored id.
const TAIL_RECORDS: u64 = 65_536;

/// The newest mirrored (sender's) id per class the outbox holds, among its last records;
/// `None` if it holds none.
pub fn newest_mirrored(reader: &OutboxReader) -> Option<[u64; 4]> {
    let end = reader.end().ok()?;
    let mut newest = [0u64; 4];
    for class in Class::ALL {
        let c = class as usize;
        let mut after = end;
        after.0[c] = end.0[c].saturating_sub(TAIL_RECORDS);
        while after.0[c] < end.0[c] {
            let Ok(records) = reader.read_encoded(&after, 4096) else { break };
            let Some(last) = records.last() else { break };
            for r in &records {
                if let Origin::Mirrored(id) = r.origin {
                    newest[c] = newest[c].max(id.seq);
                }
            }
            after.0[c] = last.id.seq;
        }
    }
    newest.iter().any(|n| *n > 0).then_some(newest)
}

/// The receiving half's running state.
pub struct Receiver {
    settings: ReceiveSettings,
    socket: UdpSocket,
    assembler: Assembler,
    outbox: OutboxWriter,
    state: PathBuf,
    asset: AssetPath,
    status: Arc<ReceiveStatus>,
    last_heartbeat: Option<Instant>,
    started: Instant,
    kernel_drops_seen: u64,
    synced_at: Instant,
    unsynced: bool,
    problems: Option<Arc<Problems>>,
    overflow_reported_at: Option<Instant>,
    overflow_unreported: u64,
    kernel_drops_baseline: Option<u64>,
}

/// How often a growing kernel drop count is said upstream (`diode_overflow`), at most.
const OVERFLOW_EVERY: Duration = Duration::from_secs(10);

/// How often the outbox is synced and the state written while records come in.
const SYNC_EVERY: Duration = Duration::from_millis(100);

impl Receiver {
    /// Binds the socket and reads where this side stood.
    /// `reader`: the same outbox's reader, to see what it already holds.
    pub fn new(
        settings: ReceiveSettings,
        outbox: OutboxWriter,
        reader: &OutboxReader,
        data_dir: &Path,
        status: Arc<ReceiveStatus>,
    ) -> Result<Self, ReceiveError> {
        let asset = AssetPath::parse(&settings.sender).map_err(|_| ReceiveError::Sender(settings.sender.clone()))?;
        let socket = bind(settings.listen, settings.receive_buffer_bytes)
            .map_err(|source| ReceiveError::Listen { address: settings.listen, source })?;
        let state = state_path(data_dir);
        // The state file is written after the outbox syncs, so it may lag what the outbox holds
        // (a kill between the two), or be gone: the outbox's newest mirrored ids win.
        let held = newest_mirrored(reader);
        let start = match (read_state(&state), held) {
            (Some(mut s), Some(held)) => {
                for (last, held) in s.last.iter_mut().zip(held) {
                    *last = (*last).max(held);
                }
                Some(s)
            }
            (Some(s), None) => Some(s),
            (None, Some(held)) => {
                log::warn!("diode: no readable {}; starting after what the outbox holds", state.display());
                Some(State { last: held, ..State::default() })
            }
            (None, None) => None,
        };
        let key =
            settings.key_file.as_deref().map(crate::wire::Key::from_file).transpose().map_err(ReceiveError::Key)?;
        if key.is_none() {
            log::warn!("diode: {NO_KEY_WARNING}");
        }
        let assembler = Assembler::new(&settings.sender, settings.reorder, start).with_key(key);
        Ok(Self {
            settings,
            socket,
            assembler,
            outbox,
            state,
            asset,
            status,
            last_heartbeat: None,
            started: Instant::now(),
            kernel_drops_seen: 0,
            synced_at: Instant::now(),
            unsynced: false,
            problems: None,
            overflow_reported_at: None,
            overflow_unreported: 0,
            kernel_drops_baseline: None,
        })
    }

    /// Sends this side's own problems (a sink that cannot deliver) upstream as events.
    pub fn reporting(mut self, problems: Arc<Problems>) -> Self {
        self.problems = Some(problems);
        self
    }

    fn report_problems(&mut self) {
        let Some(problems) = self.problems.clone() else { return };
        let taken = problems.take();
        if taken.is_empty() {
            return;
        }
        let mut result = Ok(());
        for p in taken {
            result = result.and(self.event(p.kind, p.severity, p.state, p.message));
        }
        match result.and_then(|()| self.outbox.commit().map(|_| ())) {
            Ok(()) => self.unsynced = true,
            Err(e) => log::error!("diode: the outbox: {e}"),
        }
    }

    /// The address it listens on (the port, when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives until `stop` is set; then syncs the outbox and the state.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; 65_536];
        let mut out = Vec::new();
        let mut last_check = Instant::now();
        while !stop.load(Relaxed) {
            match self.socket.recv_from(&mut buf) {
                Ok((n, _from)) => {
                    let now = Instant::now();
                    if let Err(e) = self.assembler.datagram(&buf[..n], now, &mut out) {
                        log::debug!("diode: a datagram refused: {e}");
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => {
                    log::warn!("diode: receive: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            if last_check.elapsed() >= Duration::from_millis(50) {
                last_check = Instant::now();
                self.assembler.expire(Instant::now(), &mut out);
                self.watch_silence();
                self.watch_kernel_drops();
                self.report_problems();
            }
            if !out.is_empty() {
                self.store(&mut out);
            }
            if self.unsynced && self.synced_at.elapsed() >= SYNC_EVERY {
                self.sync();
            }
            if let Ok(mut s) = self.status.stats.lock() {
                *s = self.assembler.stats;
            }
        }
        self.sync();
    }

    fn store(&mut self, out: &mut Vec<Output>) {
        let mut result: Result<(), StoreError> = Ok(());
        // Records refused one after another by an outbox full of higher classes, named in one
        // gap event (one a record would itself push out the events it holds).
        let mut refused: Option<GapRecord> = None;
        for o in out.drain(..) {
            let appended = match o {
                Output::Record(r) => {
                    let class = Class::ALL[usize::from(r.class.min(3))];
                    let origin = RecordId { class, seq: r.seq };
                    let time = Timestamp(r.time);
                    match self.outbox.append_mirrored(origin, time, &r.bytes) {
                        // Refused by an outbox full of higher classes: a run of them is named in
                        // one gap event.
                        Err(StoreError::OutboxFull { .. }) => {
                            match refused.as_mut().filter(|run| *run.class == *class.name()) {
                                Some(run) => {
                                    run.records += 1;
                                    run.last_id = origin.to_string().into();
                                    run.to = time;
                                    Ok(())
                                }
                                None => self.say_gap(refused.replace(one_lost(origin, time, GapCause::Full))),
                            }
                        }
                        appended => {
                            let said = self.say_gap(refused.take());
                            match appended {
                                Ok(_) => said,
                                // Too large for this side's outbox (its budget is smaller than
                                // the sender's): named, as lost, never dropped in silence.
                                Err(e @ StoreError::TooLarge { .. }) => {
                                    log::warn!("diode: record {origin} is not kept: {e}");
                                    said.and(self.say_gap(Some(one_lost(origin, time, GapCause::DiodeLost))))
                                }
                                Err(e) => said.and(Err(e)),
                            }
                        }
                    }
                }
                Output::Missing { class, first, last, from, to, cause } => {
                    let class = Class::ALL[usize::from(class.min(3))];
                    let gap = GapRecord {
                        time: Timestamp::now(),
                        class: class.name().into(),
                        records: last - first + 1,
                        first_id: RecordId { class, seq: first }.to_string().into(),
                        last_id: RecordId { class, seq: last }.to_string().into(),
                        from: Timestamp(from),
                        to: Timestamp(to),
                        cause: match cause {
                            MissingCause::BlocksLost => GapCause::DiodeLost,
                            MissingCause::ReceiverDown => GapCause::DiodeDown,
                        },
                    };
                    self.say_gap(Some(gap))
                }
                Output::Heartbeat(beat) => {
                    let now = Instant::now();
                    self.last_heartbeat = Some(now);
                    if self.status.silent.swap(false, Relaxed) {
                        let message = format!("heartbeats from {} arrive again", self.settings.sender);
                        log::info!("diode: {message}");
                        self.event("diode_silent", Severity::Warning, Transition::Cleared, message)
                    } else {
                        Ok(())
                    }
                    .map(|()| {
                        if let Ok(mut h) = self.status.heartbeat.lock() {
                            *h = Some((now, beat));
                        }
                    })
                }
                Output::SenderRestarted => {
                    log::info!("diode: {} started again (a new session)", self.settings.sender);
                    Ok(())
                }
            };
            if let Err(e) = appended {
                result = Err(e);
            }
        }
        if let Err(e) = self.say_gap(refused) {
            result = Err(e);
        }
        let committed = result.and_then(|()| self.outbox.commit().map(|_| ()));
        match committed {
            Ok(()) => self.unsynced = true,
            Err(e) => {
                self.status.store_errors.fetch_add(1, Relaxed);
                log::error!("diode: the outbox: {e}");
            }
        }
    }

    /// A gap event (if any), said in the log and stored.
    fn say_gap(&mut self, gap: Option<GapRecord>) -> Result<(), StoreError> {
        let Some(gap) = gap else { return Ok(()) };
        log::warn!("diode: {}", gap.message());
        self.outbox.append(Class::Event, &Upstream::Gap(gap)).map(|_| ())
    }

    fn event(&mut self, kind: &str, severity: Severity, state: Transition, message: String) -> Result<(), StoreError> {
        self.event_with(kind, severity, state, message, Vec::new())
    }

    fn event_with(
        &mut self,
        kind: &str,
        severity: Severity,
        state: Transition,
        message: String,
        body: Vec<(Box<str>, f64)>,
    ) -> Result<(), StoreError> {
        let event = EventRecord {
            time: Timestamp::now(),
            asset: self.asset.clone(),
            kind: kind.into(),
            severity,
            state,
            message: message.into(),
            body,
        };
        self.outbox.append(Class::Event, &Upstream::Event(event)).map(|_| ())
    }

    /// Syncs the outbox, then writes where the receiver stands: never ahead of what is on disk.
    fn sync(&mut self) {
        let state = self.assembler.state();
        match self.outbox.sync() {
            Ok(_) => {
                if let Err(e) = write_state(&self.state, &state) {
                    log::error!("diode: write {}: {e}", self.state.display());
                }
                self.unsynced = false;
            }
            Err(e) => {
                self.status.store_errors.fetch_add(1, Relaxed);
                log::error!("diode: sync the outbox: {e}");
            }
        }
        self.synced_at = Instant::now();
    }

    fn watch_silence(&mut self) {
        let since = self.last_heartbeat.unwrap_or(self.started);
        if since.elapsed() < self.settings.silent_after || self.status.silent.load(Relaxed) {
            return;
        }
        self.status.silent.store(true, Relaxed);
        let message = format!(
            "no heartbeat from {} for {:.0} s: the link or the sending half is down",
            self.settings.sender,
            since.elapsed().as_secs_f64()
        );
        log::warn!("diode: {message}");
        let appended = self.event("diode_silent", Severity::Alarm, Transition::Raised, message);
        match appended.and_then(|()| self.outbox.commit().map(|_| ())) {
            Ok(()) => self.unsynced = true,
            Err(e) => log::error!("diode: the outbox: {e}"),
        }
    }

    fn watch_kernel_drops(&mut self) {
        let Ok(port) = self.socket.local_addr().map(|a| a.port()) else { return };
        let Some(drops) = kernel_drops(port) else { return };
        // The count is the socket's since it was made: the first reading is where it starts.
        if self.kernel_drops_baseline.is_none() {
            self.kernel_drops_baseline = Some(drops);
        }
        let drops = drops.saturating_sub(self.kernel_drops_baseline.unwrap_or(0));
        self.status.kernel_drops.store(drops, Relaxed);
        if drops <= self.kernel_drops_seen {
            return;
        }
        self.overflow_unreported += drops - self.kernel_drops_seen;
        self.kernel_drops_seen = drops;
        // Said upstream at most every OVERFLOW_EVERY, with the count since the last time.
        if self.overflow_reported_at.is_some_and(|at| at.elapsed() < OVERFLOW_EVERY) {
            return;
        }
        let dropped = std::mem::take(&mut self.overflow_unreported);
        self.overflow_reported_at = Some(Instant::now());
        let message = format!(
            "the kernel dropped {dropped} datagrams from {}: the receive buffer overflowed (raise receive_buffer_bytes and net.core.rmem_max on this host, or lower the sender's rate_max_bytes_per_s); blocks they belonged to are named in diode_gap if the repair did not cover them",
            self.settings.sender
        );
        log::warn!("diode: {message}");
        let body = vec![("datagrams".into(), dropped as f64)];
        let appended = self.event_with("diode_overflow", Severity::Warning, Transition::Once, message, body);
        match appended.and_then(|()| self.outbox.commit()) {
            Ok(_) => self.unsynced = true,
            Err(e) => log::error!("diode: the outbox: {e}"),
        }
    }
}

fn bind(address: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(address);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        log::warn!("diode: set the receive buffer to {buffer} bytes: {e}");
    }
    socket.bind(&address.into())?;
    let socket: UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_millis(20)))?;
    Ok(socket)
}

/// The kernel's drop count for the UDP socket on `port` (`/proc/net/udp`, `/proc/net/udp6`).
fn kernel_drops(port: u16) -> Option<u64> {
    let suffix = format!(":{port:04X}");
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        text.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            if !local.ends_with(&suffix) {
                return None;
            }
            fields.last()?.parse().ok()
        })
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::wire::BlockRecord;

    /// The kernel's count of datagrams a full receive buffer dropped is read back for the
    /// socket's port (what `diode_overflow` reports).
    #[test]
    fn a_full_receive_buffer_is_counted_by_the_kernel_and_read_back() {
        let socket = bind("127.0.0.1:0".parse().unwrap(), 65_536).unwrap();
        let port = socket.local_addr().unwrap().port();
        assert_eq!(kernel_drops(port), Some(0));
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let payload = [7u8; 1200];
        // Never read: the buffer fills and the kernel drops the rest (bounded: 20 MB at most).
        for _ in 0..16_000 {
            sender.send_to(&payload, ("127.0.0.1", port)).unwrap();
            if kernel_drops(port).is_some_and(|d| d > 0) {
                break;
            }
        }
        assert!(kernel_drops(port).unwrap() > 0, "no drop counted after 20 MB into a 64 KiB buffer");
    }

    /// A receiving outbox that holds only events refuses the raw records that come: a run of
    /// them in one batch is named in one gap event (one a record would push out the events it
    /// holds), and a run broken by a record that is taken is named in two.
    #[test]
    fn records_refused_by_a_full_outbox_are_named_in_one_gap_event_a_run() {
        let dir = std::env::temp_dir().join(format!("airlock-diode-refused-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let bytes_max = 64 << 10;
        let config = airlock_store::OutboxConfig {
            bytes_max,
            fsync: airlock_store::FsyncPolicy::Never,
            sinks: vec!["jsonl".into()],
            mirror: true,
            ..airlock_store::OutboxConfig::default()
        };
        let (writer, reader) = OutboxWriter::open(&dir.join("outbox"), config).unwrap();
        let settings = ReceiveSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            sender: "press-gw".into(),
            reorder: Duration::from_millis(100),
            silent_after: Duration::from_secs(30),
            receive_buffer_bytes: 1 << 16,
            key_file: None,
        };
        let mut r = Receiver::new(settings, writer, &reader, &dir, Arc::new(ReceiveStatus::default())).unwrap();
        let event = |i: i64| {
            Upstream::Event(EventRecord {
                time: Timestamp(1_700_000_000_000_000_000 + i),
                asset: AssetPath::parse("acme/press1").unwrap(),
                kind: "alarm".into(),
                severity: Severity::Warning,
                state: Transition::Once,
                message: format!("alarm {i}: {}", "x".repeat(300)).into(),
                body: Vec::new(),
            })
        };
        let mut i = 0;
        while r.outbox.stats().bytes + 200 < bytes_max {
            r.outbox.append(Class::Event, &event(i)).unwrap();
            i += 1;
        }
        let mut bytes = Vec::new();
        airlock_upstream::encode(&event(0), &mut bytes);
        let raw = |seq: u64| Output::Record(BlockRecord { class: 3, seq, time: seq as i64, bytes: bytes.clone() });
        let gaps = |reader: &OutboxReader| -> Vec<GapRecord> {
            reader
                .read(&airlock_store::Position::default(), usize::MAX)
                .unwrap()
                .into_iter()
                .filter_map(|r| match r.record {
                    Upstream::Gap(g) => Some(g),
                    _ => None,
                })
                .collect()
        };
        r.store(&mut (1..=50).map(raw).collect());
        let stats = r.outbox.stats();
        assert_eq!(stats.refused_full[Class::Raw as usize], 50);
        let found = gaps(&reader);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].records, &*found[0].first_id, &*found[0].last_id), (50, "r1", "r50"));
        assert_eq!(found[0].cause, GapCause::Full);
        // A run ended by a record that is taken (an event, which pushes out the oldest events
        // and so makes room): the run is named when it ends, and the raw records after the
        // event are taken.
        let mut broken: Vec<Output> = (51..=60).map(raw).collect();
        let mut one = Vec::new();
        airlock_upstream::encode(&event(1), &mut one);
        broken.push(Output::Record(BlockRecord { class: 0, seq: 7, time: 7, bytes: one }));
        broken.extend((61..=70).map(raw));
        r.store(&mut broken);
        let found = gaps(&reader);
        let raw_gaps: Vec<(u64, &str, &str)> =
            found.iter().filter(|g| &*g.class == "raw").map(|g| (g.records, &*g.first_id, &*g.last_id)).collect();
        // (The first gap event was among the oldest events the event pushed out: that is named
        // by a gap of its own, of events.)
        assert_eq!(raw_gaps, [(10, "r51", "r60")]);
        assert!(found.iter().any(|g| &*g.class == "events" && g.cause == GapCause::Full), "{found:?}");
        let held: Vec<String> = reader
            .read(&airlock_store::Position::default(), usize::MAX)
            .unwrap()
            .into_iter()
            .filter_map(|r| match r.origin {
                Origin::Mirrored(o) if o.class == Class::Raw => Some(o.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(held, (61..=70).map(|i| format!("r{i}")).collect::<Vec<_>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
