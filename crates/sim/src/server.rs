//! A small Modbus TCP server that answers reads (function codes 1 to 4) from register banks,
//! and answers every other function code with exception 01 (illegal function) after counting
//! it, so that a test can prove no write ever reached it. It can also misbehave on purpose
//! ([`Fault`]) to test a client's fault handling.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Items per space in a bank: addresses 0..4096 exist, above is "illegal data address".
pub const BANK_SIZE: usize = 4096;
/// The most request times kept for rate checks; older ones are forgotten.
const REQUEST_TIMES_MAX: usize = 100_000;

/// The four data spaces of one device.
#[derive(Debug, Clone)]
pub struct Banks {
    pub coils: Vec<bool>,
    pub discrete_inputs: Vec<bool>,
    pub input_registers: Vec<u16>,
    pub holding_registers: Vec<u16>,
}

impl Default for Banks {
    fn default() -> Self {
        Self {
            coils: vec![false; BANK_SIZE],
            discrete_inputs: vec![false; BANK_SIZE],
            input_registers: vec![0; BANK_SIZE],
            holding_registers: vec![0; BANK_SIZE],
        }
    }
}

/// How the server misbehaves, for fault tests. `None` is an honest server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    None = 0,
    /// Accepts a connection and closes it at once.
    CloseOnConnect = 1,
    /// Accepts and reads requests but never answers.
    Hang = 2,
    /// Answers every request with exception 04 (server device failure).
    Exception = 3,
    /// Answers every request with bytes that are not a Modbus frame.
    Garbage = 4,
    /// Answers every request rightly, and then sends two bytes more (a CRC, as some serial
    /// converters add).
    TrailingBytes = 5,
    /// Answers every request rightly, and sends the two bytes more 5 ms later, in a segment
    /// of their own (a serial converter that forwards the CRC late): the client's next
    /// request has often gone out by then.
    LateTrailingBytes = 6,
    /// Takes 20 ms to answer, and drops every request that came meanwhile (a device that
    /// serves one request at a time and empties its receive buffer before it listens again).
    DropsQueuedRequests = 7,
    /// Answers rightly, with Nagle's algorithm on (no TCP_NODELAY), as libmodbus's server and
    /// many embedded stacks do: an answer waits until the one before it is acknowledged.
    Nagle = 8,
}

impl Fault {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Fault::CloseOnConnect,
            2 => Fault::Hang,
            3 => Fault::Exception,
            4 => Fault::Garbage,
            5 => Fault::TrailingBytes,
            6 => Fault::LateTrailingBytes,
            7 => Fault::DropsQueuedRequests,
            8 => Fault::Nagle,
            _ => Fault::None,
        }
    }
}

/// What the server has received, for tests and the benchmark.
#[derive(Debug)]
pub struct RequestLog {
    by_function: [AtomicU64; 256],
    times: Mutex<Vec<Instant>>,
}

impl Default for RequestLog {
    fn default() -> Self {
        Self { by_function: std::array::from_fn(|_| AtomicU64::new(0)), times: Mutex::default() }
    }
}

impl RequestLog {
    fn record(&self, function: u8) {
        self.by_function[usize::from(function)].fetch_add(1, Relaxed);
        if let Ok(mut t) = self.times.lock()
            && t.len() < REQUEST_TIMES_MAX
        {
            t.push(Instant::now());
        }
    }

    /// Requests received with function code `function`.
    pub fn count(&self, function: u8) -> u64 {
        self.by_function[usize::from(function)].load(Relaxed)
    }

    /// Every function code received at least once, with its count.
    pub fn functions(&self) -> Vec<(u8, u64)> {
        (0..=255u8).map(|f| (f, self.count(f))).filter(|(_, n)| *n > 0).collect()
    }

    /// When each request arrived (the first 100,000).
    pub fn times(&self) -> Vec<Instant> {
        self.times.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

/// A running server. Dropping the handle leaves it running; call [`ServerHandle::stop`].
#[derive(Debug)]
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub banks: Arc<Mutex<Banks>>,
    pub log: Arc<RequestLog>,
    fault: Arc<AtomicU8>,
    task: JoinHandle<()>,
}

impl ServerHandle {
    pub fn set_fault(&self, fault: Fault) {
        self.fault.store(fault as u8, Relaxed);
    }

    /// Stops accepting connections (open connections end with their tasks).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Serves `banks` on `addr` (port 0 picks a free port).
pub async fn serve(addr: SocketAddr, banks: Arc<Mutex<Banks>>) -> io::Result<ServerHandle> {
    let listener =
        TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("listen on {addr}: {e}")))?;
    let addr = listener.local_addr()?;
    let log = Arc::new(RequestLog::default());
    let fault = Arc::new(AtomicU8::new(Fault::None as u8));
    let task = tokio::spawn(accept_loop(listener, Arc::clone(&banks), Arc::clone(&log), Arc::clone(&fault)));
    Ok(ServerHandle { addr, banks, log, fault, task })
}

async fn accept_loop(listener: TcpListener, banks: Arc<Mutex<Banks>>, log: Arc<RequestLog>, fault: Arc<AtomicU8>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        while connections.try_join_next().is_some() {}
        if Fault::from_u8(fault.load(Relaxed)) == Fault::CloseOnConnect {
            drop(stream);
            continue;
        }
        let (banks, log, fault) = (Arc::clone(&banks), Arc::clone(&log), Arc::clone(&fault));
        connections.spawn(async move {
            if let Err(e) = connection(stream, &banks, &log, &fault).await {
                log::debug!("sim connection ended: {e}");
            }
        });
    }
}

/// Serves one connection: MBAP header (transaction, protocol, length, unit), then the PDU.
async fn connection(mut stream: TcpStream, banks: &Mutex<Banks>, log: &RequestLog, fault: &AtomicU8) -> io::Result<()> {
    let mut nodelay = true;
    stream.set_nodelay(nodelay)?;
    let mut header = [0u8; 7];
    let mut pdu = [0u8; 256];
    let mut reply = Vec::with_capacity(260);
    loop {
        stream.read_exact(&mut header).await?;
        let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
        if !(2..=254).contains(&length) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "bad MBAP length"));
        }
        let pdu = &mut pdu[..length - 1];
        stream.read_exact(pdu).await?;
        log.record(pdu[0]);
        reply.clear();
        let fault = Fault::from_u8(fault.load(Relaxed));
        if nodelay != (fault != Fault::Nagle) {
            nodelay = !nodelay;
            stream.set_nodelay(nodelay)?;
        }
        match fault {
            Fault::Hang => continue,
            Fault::Garbage => reply.extend_from_slice(b"\xde\xad\xbe\xef garbage, not a frame\r\n"),
            Fault::Exception => frame(&mut reply, &header, &[pdu[0] | 0x80, 0x04]),
            Fault::None | Fault::CloseOnConnect | Fault::Nagle => {
                let body = answer(pdu, banks);
                frame(&mut reply, &header, &body);
            }
            Fault::TrailingBytes => {
                let body = answer(pdu, banks);
                frame(&mut reply, &header, &body);
                reply.extend_from_slice(&[0xc5, 0x3a]);
            }
            Fault::DropsQueuedRequests => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let mut dropped = [0u8; 1024];
                while matches!(stream.try_read(&mut dropped), Ok(n) if n > 0) {}
                let body = answer(pdu, banks);
                frame(&mut reply, &header, &body);
            }
            Fault::LateTrailingBytes => {
                let body = answer(pdu, banks);
                frame(&mut reply, &header, &body);
                stream.write_all(&reply).await?;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                reply.clear();
                reply.extend_from_slice(&[0xc5, 0x3a]);
            }
        }
        stream.write_all(&reply).await?;
    }
}

fn frame(reply: &mut Vec<u8>, header: &[u8; 7], body: &[u8]) {
    reply.extend_from_slice(&header[..4]);
    reply.extend_from_slice(&((body.len() + 1) as u16).to_be_bytes());
    reply.push(header[6]);
    reply.extend_from_slice(body);
}

/// The response PDU for request `pdu`.
fn answer(pdu: &[u8], banks: &Mutex<Banks>) -> Vec<u8> {
    let function = pdu[0];
    let exception = |code: u8| vec![function | 0x80, code];
    if !(1..=4).contains(&function) {
        return exception(0x01);
    }
    if pdu.len() != 5 {
        return exception(0x03);
    }
    let start = usize::from(u16::from_be_bytes([pdu[1], pdu[2]]));
    let count = usize::from(u16::from_be_bytes([pdu[3], pdu[4]]));
    let limit = if function <= 2 { 2000 } else { 125 };
    if count == 0 || count > limit {
        return exception(0x03);
    }
    if start + count > BANK_SIZE {
        return exception(0x02);
    }
    let Ok(banks) = banks.lock() else { return exception(0x04) };
    match function {
        1 => bits(function, &banks.coils[start..start + count]),
        2 => bits(function, &banks.discrete_inputs[start..start + count]),
        3 => words(function, &banks.holding_registers[start..start + count]),
        _ => words(function, &banks.input_registers[start..start + count]),
    }
}

fn bits(function: u8, bits: &[bool]) -> Vec<u8> {
    let mut out = vec![function, bits.len().div_ceil(8) as u8];
    out.resize(2 + bits.len().div_ceil(8), 0);
    for (i, b) in bits.iter().enumerate() {
        out[2 + i / 8] |= u8::from(*b) << (i % 8);
    }
    out
}

fn words(function: u8, words: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + words.len() * 2);
    out.push(function);
    out.push((words.len() * 2) as u8);
    for w in words {
        out.extend_from_slice(&w.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pdu: &[u8], expected: &[u8]) {
        let mut banks = Banks::default();
        banks.holding_registers[1] = 0x1234;
        banks.coils[3] = true;
        banks.coils[8] = true;
        assert_eq!(answer(pdu, &Mutex::new(banks)), expected);
    }

    #[test]
    fn answers_reads_and_refuses_everything_else() {
        check(&[3, 0, 0, 0, 2], &[3, 4, 0, 0, 0x12, 0x34]);
        check(&[1, 0, 0, 0, 9], &[1, 2, 0b1000, 1]);
        check(&[4, 0x0f, 0xff, 0, 2], &[0x84, 2]);
        check(&[3, 0, 0, 0, 126], &[0x83, 3]);
        check(&[6, 0, 1, 0, 1], &[0x86, 1]);
        check(&[16, 0, 1, 0, 1, 2, 0, 1], &[0x90, 1]);
        check(&[3, 0, 0], &[0x83, 3]);
    }
}
