//! The OT half: a sink that sends outbox records one way, as RaptorQ-encoded blocks in UDP
//! datagrams, paced to a byte rate, with a heartbeat.
//!
//! It never reads from the network: its one socket is unconnected and only ever sent from
//! (`tests/architecture.rs` checks this file has no receive call), so no answer, ICMP error
//! or packet from IT can reach it. With no way to learn of loss, a record is acknowledged in
//! the outbox once the block holding it is sent; the outbox keeps it for its retention, so an
//! operator can send a range again by hand (`airlock diode resend`).

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airlock_config::DiodeSink;
use airlock_model::Timestamp;
use airlock_north::{Ledger, Limits, Sent, Sink, SinkError};
use airlock_store::OutboxRecord;
use raptorq::{EncodingPacket, ObjectTransmissionInformation, SourceBlockEncoder};

use crate::wire::{self, Header, Heartbeat, Symbol};

/// What the OT side tells the IT side about itself in each heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtState {
    pub devices_up: u16,
    pub devices_down: u16,
    /// Records in the outbox not yet sent through the diode.
    pub queued: u64,
    pub store_failing: bool,
}

/// Reads the OT side's state for a heartbeat.
pub type StateProbe = Box<dyn Fn() -> OtState + Send>;

/// Blocks waiting to be sent again (`repeat`), at most this many bytes of datagrams; beyond,
/// the oldest are not repeated (counted).
const REPEAT_BYTES_MAX: usize = 64 << 20;
/// The pacer lets this much time's worth of datagrams go back to back.
const BURST: Duration = Duration::from_millis(2);

/// A record as a block holds it: class, sequence number, time (ns), upstream bytes.
type Encoded = (u8, u64, i64, Vec<u8>);

/// The diode sink: `type = "diode"`.
pub struct DiodeSender {
    name: String,
    gateway: String,
    settings: DiodeSink,
    socket: Option<UdpSocket>,
    header: Header,
    next_block: u64,
    /// Per class, the newest id sent.
    sent: [u64; 4],
    symbol_bytes: usize,
    /// The key shared with the receiver (`key_file`), read when the sink opens.
    key: Option<wire::Key>,
    pace: Pace,
    last_heartbeat: Option<Instant>,
    repeats: VecDeque<(Instant, Vec<Vec<u8>>)>,
    repeat_bytes: usize,
    probe: StateProbe,
    scratch: Vec<u8>,
    ledger: Arc<Ledger>,
    pub stats: SendStats,
}

/// Counters of the sending half.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    pub blocks: u64,
    pub datagrams: u64,
    pub bytes: u64,
    pub repeated_blocks: u64,
    /// Blocks whose repeat was skipped because the repeat queue was full.
    pub repeats_skipped: u64,
    pub heartbeats: u64,
}

impl DiodeSender {
    /// `sent`: per class, where the sink's cursor stands (the newest id already sent), so the
    /// first block says what came before it.
    pub fn new(name: &str, gateway: &str, settings: DiodeSink, sent: [u64; 4], probe: StateProbe) -> Self {
        let session = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let symbol_bytes = wire::symbol_bytes_sealed(settings.mtu_bytes, settings.key_file.is_some());
        Self {
            name: name.to_owned(),
            gateway: gateway.to_owned(),
            header: Header { sender: wire::sender_hash(gateway), session },
            pace: Pace { rate: settings.rate_max_bytes_per_s as f64, next: Instant::now() },
            settings,
            socket: None,
            next_block: 0,
            sent,
            symbol_bytes,
            key: None,
            last_heartbeat: None,
            repeats: VecDeque::new(),
            repeat_bytes: 0,
            probe,
            scratch: Vec::new(),
            ledger: Arc::default(),
            stats: SendStats::default(),
        }
    }

    fn io(&self, action: &'static str, e: std::io::Error) -> SinkError {
        SinkError::Io { action, target: self.settings.address.to_string(), source: e }
    }

    /// Sends one datagram, paced. `send_to` on an unconnected socket: an ICMP error from the
    /// other side is never reported to it.
    async fn put(&mut self, datagram: &[u8]) -> Result<(), SinkError> {
        self.pace.wait(datagram.len() + wire::IP_UDP_BYTES).await;
        let address = self.settings.address;
        let Some(socket) = &self.socket else {
            return Err(SinkError::Rejected { target: address.to_string(), what: "no socket".into() });
        };
        loop {
            match socket.send_to(datagram, address) {
                Ok(_) => break,
                // The kernel's queue is full for a moment: wait a little, never drop.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => return Err(self.io("send to", e)),
            }
        }
        self.stats.datagrams += 1;
        self.stats.bytes += datagram.len() as u64;
        Ok(())
    }

    /// Encodes one block of records and sends its datagrams.
    /// Sends one block; returns its bytes on the wire (every datagram).
    async fn send_block(&mut self, encoded: &[Encoded]) -> Result<usize, SinkError> {
        let refs: Vec<(u8, u64, i64, &[u8])> = encoded.iter().map(|(c, s, t, b)| (*c, *s, *t, b.as_slice())).collect();
        let mut block = std::mem::take(&mut self.scratch);
        wire::encode_block(&mut block, &self.gateway, self.sent, &refs);
        let datagrams = self.datagrams(&block);
        self.scratch = block;
        let datagrams = datagrams?;
        for d in &datagrams {
            self.put(d).await?;
        }
        for (class, seq, ..) in encoded {
            let slot = &mut self.sent[usize::from(*class)];
            *slot = (*slot).max(*seq);
        }
        self.next_block += 1;
        self.stats.blocks += 1;
        if let Some(after) = self.settings.repeat {
            let bytes: usize = datagrams.iter().map(Vec::len).sum();
            while self.repeat_bytes + bytes > REPEAT_BYTES_MAX {
                let Some((_, old)) = self.repeats.pop_front() else { break };
                self.repeat_bytes -= old.iter().map(Vec::len).sum::<usize>();
                self.stats.repeats_skipped += 1;
            }
            self.repeat_bytes += bytes;
            self.repeats.push_back((Instant::now() + after, datagrams));
            return Ok(bytes);
        }
        Ok(datagrams.iter().map(Vec::len).sum())
    }

    /// Writes the block just sent (in `scratch`) of `records` into the egress ledger.
    fn to_ledger(&self, records: &[OutboxRecord], wire_bytes: usize) {
        let topic = format!("udp://{} block {}", self.settings.address, self.next_block.saturating_sub(1));
        self.ledger.sent_as(Timestamp::now(), &topic, records, &self.scratch, wire_bytes);
    }

    /// The datagrams of one block: every source symbol, then the repair symbols.
    fn datagrams(&self, block: &[u8]) -> Result<Vec<Vec<u8>>, SinkError> {
        let (number, symbol, repair) = (self.next_block, self.symbol_bytes, self.settings.repair_percent);
        block_datagrams_sealed(self.header, number, block, symbol, repair, self.key.as_ref())
            .map_err(|e| SinkError::Rejected { target: self.name.clone(), what: format!("a block: {e}") })
    }

    async fn heartbeat_if_due(&mut self) -> Result<(), SinkError> {
        let due = self.last_heartbeat.is_none_or(|at| at.elapsed() >= self.settings.heartbeat);
        if !due {
            return Ok(());
        }
        let state = (self.probe)();
        let beat = Heartbeat {
            next_block: self.next_block,
            sent: self.sent,
            repeat_ms: self.settings.repeat.map_or(0, |d| d.as_millis().min(u128::from(u32::MAX)) as u32),
            heartbeat_ms: self.settings.heartbeat.as_millis().min(u128::from(u32::MAX)) as u32,
            devices_up: state.devices_up,
            devices_down: state.devices_down,
            queued: state.queued,
            store_failing: state.store_failing,
            name: self.gateway.clone(),
        };
        let mut d = Vec::new();
        wire::encode_heartbeat_sealed(&mut d, self.header, &beat, self.key.as_ref());
        self.put(&d).await?;
        self.last_heartbeat = Some(Instant::now());
        self.stats.heartbeats += 1;
        Ok(())
    }

    async fn repeat_due(&mut self) -> Result<(), SinkError> {
        while self.repeats.front().is_some_and(|(due, _)| *due <= Instant::now()) {
            let Some((_, datagrams)) = self.repeats.pop_front() else { break };
            self.repeat_bytes -= datagrams.iter().map(Vec::len).sum::<usize>();
            for d in &datagrams {
                self.put(d).await?;
            }
            self.stats.repeated_blocks += 1;
        }
        Ok(())
    }
}

/// The datagrams of block number `number`: its bytes RaptorQ-encoded in symbols of
/// `symbol_bytes`, every source symbol, then `repair_percent` of repair symbols (at least one).
pub fn block_datagrams(
    header: Header,
    number: u64,
    block: &[u8],
    symbol_bytes: usize,
    repair_percent: f64,
) -> Result<Vec<Vec<u8>>, wire::WireError> {
    block_datagrams_sealed(header, number, block, symbol_bytes, repair_percent, None)
}

/// As [`block_datagrams`], each datagram sealed with `key` when there is one.
pub fn block_datagrams_sealed(
    header: Header,
    number: u64,
    block: &[u8],
    symbol_bytes: usize,
    repair_percent: f64,
    key: Option<&wire::Key>,
) -> Result<Vec<Vec<u8>>, wire::WireError> {
    wire::check_block_shape(block.len(), symbol_bytes)?;
    let (Ok(block_bytes), Ok(symbol_u16)) = (u32::try_from(block.len()), u16::try_from(symbol_bytes)) else {
        return Err(wire::WireError::Bad("block size out of range"));
    };
    let mut padded = block.to_vec();
    padded.resize(block.len().div_ceil(symbol_bytes) * symbol_bytes, 0);
    let oti = ObjectTransmissionInformation::new(padded.len() as u64, symbol_u16, 1, 1, 8);
    let encoder = SourceBlockEncoder::new(0, &oti, &padded);
    let source = padded.len() / symbol_bytes;
    let repair = repair_symbols(source, repair_percent);
    let packets = encoder.source_packets().into_iter().chain(encoder.repair_packets(0, repair as u32));
    let mut out = Vec::with_capacity(source + repair);
    for p in packets {
        let p: EncodingPacket = p;
        let s = Symbol {
            block: number,
            block_bytes,
            symbol_bytes: symbol_u16,
            esi: p.payload_id().encoding_symbol_id(),
            data: p.data(),
        };
        let mut d = Vec::with_capacity(symbol_bytes + 64);
        wire::encode_symbol_sealed(&mut d, header, &s, key);
        out.push(d);
    }
    Ok(out)
}

/// Repair symbols for a block of `source` symbols: the configured share, at least one.
pub fn repair_symbols(source: usize, percent: f64) -> usize {
    let share = (source as f64 * percent / 100.0).ceil();
    // The receiver refuses symbol ids past this (its decoding work grows with them).
    (share as usize).clamp(1, wire::SOURCE_SYMBOLS_MAX - 1)
}

impl Sink for DiodeSender {
    fn name(&self) -> &str {
        &self.name
    }

    fn ledger(&mut self, ledger: Arc<Ledger>) {
        self.ledger = ledger;
    }

    fn limits(&self) -> Limits {
        // No rate in records: the byte pacer is the cap. Everything read is sent at once.
        Limits { batch_max: 4096, window: 4096, rate_max_per_s: None, ..Limits::default() }
    }

    async fn open(&mut self) -> Result<(), SinkError> {
        // A new session keeps the socket: binding a fixed local address again would fail while
        // the old socket holds it. Nothing is ever read from it, so nothing is stale in it.
        if self.socket.is_some() {
            return self.heartbeat_if_due().await;
        }
        if let Some(path) = &self.settings.key_file {
            let key =
                wire::Key::from_file(path).map_err(|what| SinkError::Rejected { target: self.name.clone(), what })?;
            self.key = Some(key);
        }
        let any: SocketAddr = match self.settings.address {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
        };
        let bind = self.settings.bind.unwrap_or(any);
        let socket = UdpSocket::bind(bind).map_err(|e| self.io("bind a UDP socket for", e))?;
        socket.set_nonblocking(true).map_err(|e| self.io("set up the socket for", e))?;
        self.socket = Some(socket);
        self.heartbeat_if_due().await
    }

    async fn send(&mut self, records: &[OutboxRecord]) -> Result<Sent, SinkError> {
        let room = self.settings.block_bytes.saturating_sub(wire::block_overhead(&self.gateway));
        let mut block: Vec<Encoded> = Vec::new();
        let mut bytes = 0;
        let mut block_start = 0;
        for (i, r) in records.iter().enumerate() {
            let mut encoded = Vec::new();
            airlock_upstream::encode(&r.record, &mut encoded);
            let size = wire::record_bytes(encoded.len());
            if !block.is_empty() && bytes + size > room {
                let wire_bytes = self.send_block(&block).await?;
                self.to_ledger(&records[block_start..i], wire_bytes);
                block_start = i;
                block.clear();
                bytes = 0;
                // A long batch (a backlog, paced) must not hold up heartbeats or repeats.
                self.repeat_due().await?;
                self.heartbeat_if_due().await?;
            }
            block.push((r.id.class as u8, r.id.seq, r.time.0, encoded));
            bytes += size;
        }
        if !block.is_empty() {
            let wire_bytes = self.send_block(&block).await?;
            self.to_ledger(&records[block_start..], wire_bytes);
        }
        self.repeat_due().await?;
        self.heartbeat_if_due().await?;
        Ok(Sent::Delivered)
    }

    async fn tick(&mut self) -> Result<(), SinkError> {
        if self.socket.is_none() {
            return Ok(());
        }
        self.repeat_due().await?;
        self.heartbeat_if_due().await
    }

    async fn close(&mut self) {
        // What is due to be repeated goes now: a stop must not cost a burst its second chance.
        while let Some((_, datagrams)) = self.repeats.pop_front() {
            for d in &datagrams {
                if self.put(d).await.is_err() {
                    return;
                }
            }
        }
        // A last heartbeat says what was sent, so that the receiver can name a lost last block
        // now rather than at the next start; sent three times, as any datagram may be lost.
        for _ in 0..3 {
            self.last_heartbeat = None;
            if self.heartbeat_if_due().await.is_err() {
                return;
            }
        }
    }
}

/// Paces datagrams to a byte rate: back to back up to [`BURST`] ahead of the rate, then a sleep.
struct Pace {
    rate: f64,
    next: Instant,
}

impl Pace {
    async fn wait(&mut self, bytes: usize) {
        let now = Instant::now();
        if self.next < now {
            self.next = now;
        }
        if self.next > now + BURST {
            tokio::time::sleep_until((self.next - BURST).into()).await;
        }
        self.next += Duration::from_secs_f64(bytes as f64 / self.rate.max(1.0));
    }
}
