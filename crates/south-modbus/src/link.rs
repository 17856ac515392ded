//! The only handle on a Modbus connection the driver holds: a [`ReadLink`] frames the four plain
//! reads (function codes 1 to 4, one for each [`Space`]) and nothing else. No other request can
//! be built here: the function code comes from the space read, and this crate has no code that
//! frames a write. Requests may be sent before earlier answers came (up to the device's
//! `requests_in_flight_max`); answers are read as they come (a device may answer requests in
//! flight in any order: pymodbus does), each through the frame guard, matched to its request by
//! transaction id and checked against it (unit, function, byte count) before its data is
//! handed on.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use airlock_config::Space;

use crate::guard::FrameCheck;
use crate::plan::ReadRequest;

/// A read answer: registers or bits.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// What a device answered to a read: its data, or the exception code it refused the read with.
pub type Answer = Result<Data, u8>;

/// An answer, to the request sent with `key`, which went out at `asked`.
#[derive(Debug)]
pub struct Answered {
    pub key: usize,
    pub answer: Answer,
    pub asked: Instant,
}

/// Why a link can no longer be used: the connection failed, closed, or carried something that
/// is not an answer to the request.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Io(io::Error),
    #[error("the device closed the connection inside an answer")]
    Cut,
    #[error("the device closed the connection")]
    Closed,
    /// What came is not the answer to the request: the guard's or this module's reason.
    #[error("{0}")]
    Malformed(String),
    /// An answer was awaited with no request in flight (a defect of the caller).
    #[error("an answer was awaited with no request in flight")]
    NothingAsked,
}

/// A connection to a device: bytes both ways, and a way to acknowledge what came at once.
pub trait Connection: AsyncRead + AsyncWrite + Unpin {
    /// Acknowledges the bytes received now, not with the next request. A device whose TCP
    /// holds a small segment back until the one before it is acknowledged (Nagle's algorithm;
    /// libmodbus's server, for one) sends the answers still in flight at the end of a poll only
    /// after our delayed acknowledgement: some 40 ms each on Linux.
    fn acknowledge_now(&self) {}
}

impl Connection for TcpStream {
    fn acknowledge_now(&self) {
        // Best effort: without it the answers still come, later.
        #[cfg(target_os = "linux")]
        let _ = self.set_quickack(true);
    }
}

/// The function code of a read of `space`: the only four this link sends.
pub fn function_code(space: Space) -> u8 {
    match space {
        Space::Coil => 1,
        Space::DiscreteInput => 2,
        Space::HoldingRegister => 3,
        Space::InputRegister => 4,
    }
}

/// Room kept for reading: some 30 answers of 125 registers.
const READ_ROOM: usize = 8 * 1024;

/// A request that went out and whose answer has not been read.
#[derive(Debug)]
struct Asked {
    transaction: u16,
    space: Space,
    count: u16,
    at: Instant,
    key: usize,
    /// Whether it went out while others awaited their answers.
    ahead: bool,
}

/// A Modbus TCP connection that can only read.
#[derive(Debug)]
pub struct ReadLink<S> {
    stream: S,
    unit: u8,
    /// The last transaction id sent.
    transaction: u16,
    in_flight: VecDeque<Asked>,
    /// Bytes read from the device and not yet checked (what came after an answer).
    received: Vec<u8>,
    check: FrameCheck,
    /// Whether an answer is being read (`check` and `frame` hold its start): a call of
    /// [`ReadLink::answer`] that was cancelled goes on with it at the next.
    reading: bool,
    /// The answer being read, header first.
    frame: Vec<u8>,
}

impl<S: Connection> ReadLink<S> {
    /// Speaks Modbus TCP to unit `unit` over `stream`.
    pub fn attach(stream: S, unit: u8) -> Self {
        Self {
            stream,
            unit,
            transaction: 0,
            in_flight: VecDeque::new(),
            received: Vec::with_capacity(READ_ROOM),
            check: FrameCheck::default(),
            reading: false,
            frame: Vec::with_capacity(7 + 253),
        }
    }

    /// Requests sent whose answers have not been read.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether the request sent with `key`, still awaited, went out while others awaited theirs.
    pub fn sent_ahead(&self, key: usize) -> bool {
        self.in_flight.iter().any(|a| a.key == key && a.ahead)
    }

    /// Acknowledges what the device sent at once ([`Connection::acknowledge_now`]): for when
    /// answers are awaited and no request will go out to carry the acknowledgement.
    pub fn acknowledge_now(&self) {
        self.stream.acknowledge_now();
    }

    /// Sends the read `req`; [`ReadLink::answer`] gives its answer with `key`. A link whose
    /// send failed (or was cancelled) is not used again.
    pub async fn send(&mut self, req: &ReadRequest, key: usize) -> Result<(), LinkError> {
        self.transaction = self.transaction.wrapping_add(1);
        let function = function_code(req.space);
        let [t0, t1] = self.transaction.to_be_bytes();
        let [s0, s1] = req.start.to_be_bytes();
        let [c0, c1] = req.count.to_be_bytes();
        // MBAP header (transaction, protocol 0, length 6, unit), then the read's PDU.
        let request = [t0, t1, 0, 0, 0, 6, self.unit, function, s0, s1, c0, c1];
        let ahead = !self.in_flight.is_empty();
        let asked =
            Asked { transaction: self.transaction, space: req.space, count: req.count, at: Instant::now(), key, ahead };
        self.in_flight.push_back(asked);
        self.stream.write_all(&request).await.map_err(LinkError::Io)
    }

    /// The next answer to come, to any request in flight. Cancel safe: a call dropped before
    /// the answer was whole leaves what it read for the next call (which may come after more
    /// requests went out). A link whose answer failed is not used again.
    pub async fn answer(&mut self) -> Result<Answered, LinkError> {
        let (Some(oldest), Some(newest)) = (self.in_flight.front(), self.in_flight.back()) else {
            return Err(LinkError::NothingAsked);
        };
        let count = newest.transaction.wrapping_sub(oldest.transaction).wrapping_add(1);
        let window = Some((oldest.transaction, count));
        if self.reading {
            self.check.set_window(window);
        } else {
            self.check.expect_answer_among(window);
            self.frame.clear();
            self.reading = true;
        }
        // Only `read_buf` awaits, and it is cancel safe: bytes read are in `received`.
        loop {
            if !self.received.is_empty() {
                let taken = self.check.feed(&self.received, &mut self.frame).map_err(LinkError::Malformed)?;
                self.received.drain(..taken);
                if self.check.answered() {
                    break;
                }
            }
            if self.received.capacity() - self.received.len() < READ_ROOM / 2 {
                self.received.reserve(READ_ROOM);
            }
            let read = self.stream.read_buf(&mut self.received).await.map_err(LinkError::Io)?;
            if read == 0 {
                return Err(if self.check.in_answer() { LinkError::Cut } else { LinkError::Closed });
            }
        }
        self.reading = false;
        let transaction = self.frame.get(..2).map_or(0, |t| u16::from_be_bytes([t[0], t[1]]));
        let asked = self.in_flight.iter().position(|a| a.transaction == transaction);
        let Some(asked) = asked.and_then(|at| self.in_flight.remove(at)) else {
            // Within the window of those in flight, but answered already.
            let e = format!("malformed frame: a second answer to transaction {transaction}");
            return Err(LinkError::Malformed(e));
        };
        if self.in_flight.is_empty() {
            // Nothing else awaited: what came after the answer in its read is stray (a CRC,
            // padding, however long), and dropped; later bytes meet the guard's tail bound.
            self.received.clear();
        }
        let answer = parse_answer(&self.frame, self.unit, asked.space, asked.count).map_err(LinkError::Malformed)?;
        Ok(Answered { key: asked.key, answer, asked: asked.at })
    }
}

/// The data or exception of `frame` (a whole frame the guard let through: a right header, and
/// the body its length says), if it answers a read of `count` registers or bits of `space` from
/// unit `unit`: `count` of them, or the device's exception code.
pub fn parse_answer(frame: &[u8], unit: u8, space: Space, count: u16) -> Result<Answer, String> {
    let asked_function = function_code(space);
    let (Some(&from), Some(pdu)) = (frame.get(6), frame.get(7..)) else {
        return Err(format!("malformed frame: {} bytes are no frame", frame.len()));
    };
    if from != unit {
        return Err(format!("malformed frame: the answer is from unit {from}, the request was to unit {unit}"));
    }
    let Some((&function, rest)) = pdu.split_first() else {
        return Err("malformed frame: an answer with no function code".to_owned());
    };
    if function == asked_function | 0x80 {
        return match rest {
            [code] => Ok(Err(*code)),
            _ => Err(format!("malformed frame: an exception answer with {} bytes after its function code", rest.len())),
        };
    }
    if function != asked_function {
        return Err(format!("malformed frame: function {function} answers a request with function {asked_function}"));
    }
    let count = usize::from(count);
    let bits = matches!(function, 1 | 2);
    let needed = if bits { count.div_ceil(8) } else { 2 * count };
    let data = match rest.split_first() {
        Some((&bytes, data)) if usize::from(bytes) == needed && data.len() == needed => data,
        _ => {
            let byte_count = rest.first().map_or_else(|| "none".to_owned(), u8::to_string);
            return Err(format!(
                "malformed frame: a byte count of {byte_count} and {} bytes of data answer a read of {count} {}, which needs {needed}",
                rest.len().saturating_sub(1),
                if bits { "bits" } else { "registers" }
            ));
        }
    };
    Ok(Ok(if bits {
        Data::Bits((0..count).map(|i| data[i / 8] >> (i % 8) & 1 == 1).collect())
    } else {
        Data::Words(data.chunks_exact(2).map(|w| u16::from_be_bytes([w[0], w[1]])).collect())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    impl Connection for DuplexStream {}

    fn read(space: Space, start: u16, count: u16) -> ReadRequest {
        ReadRequest { space, start, count, tags: Vec::new() }
    }

    /// The only function codes a link can send are the four reads, one per space.
    #[test]
    fn every_space_is_read_with_its_read_function_code() {
        let codes: Vec<u8> =
            [Space::Coil, Space::DiscreteInput, Space::HoldingRegister, Space::InputRegister].map(function_code).into();
        assert_eq!(codes, [1, 2, 3, 4]);
    }

    /// Requests go out framed as the spec says; answers come back in order, data and
    /// exceptions alike, whatever pieces the bytes come in (a CRC after one of them too).
    #[tokio::test(flavor = "current_thread")]
    async fn pipelined_reads_are_framed_and_answered_in_order() {
        let (ours, mut device) = duplex(4096);
        let mut link = ReadLink::attach(ours, 7);
        link.send(&read(Space::HoldingRegister, 0x1234, 2), 10).await.unwrap();
        link.send(&read(Space::Coil, 3, 10), 11).await.unwrap();
        link.send(&read(Space::InputRegister, 0, 1), 12).await.unwrap();
        assert_eq!(link.in_flight(), 3);
        let mut requests = [0u8; 36];
        device.read_exact(&mut requests).await.unwrap();
        assert_eq!(requests[..12], [0, 1, 0, 0, 0, 6, 7, 3, 0x12, 0x34, 0, 2]);
        assert_eq!(requests[12..24], [0, 2, 0, 0, 0, 6, 7, 1, 0, 3, 0, 10]);
        assert_eq!(requests[24..], [0, 3, 0, 0, 0, 6, 7, 4, 0, 0, 0, 1]);
        let answers: Vec<u8> = [
            &[0, 1, 0, 0, 0, 7, 7, 3, 4, 0xab, 0xcd, 0, 9][..],
            &[0xc5, 0x3a], // a CRC some converters add
            &[0, 2, 0, 0, 0, 5, 7, 1, 2, 0b0000_0101, 0b10],
            &[0, 3, 0, 0, 0, 3, 7, 0x84, 2],
        ]
        .concat();
        for piece in answers.chunks(5) {
            device.write_all(piece).await.unwrap();
        }
        let first = link.answer().await.unwrap();
        assert_eq!((first.key, first.answer), (10, Ok(Data::Words(vec![0xabcd, 9]))));
        let second = link.answer().await.unwrap();
        let bits = [true, false, true, false, false, false, false, false, false, true];
        assert_eq!((second.key, second.answer), (11, Ok(Data::Bits(bits.to_vec()))));
        let third = link.answer().await.unwrap();
        assert_eq!((third.key, third.answer), (12, Err(2)), "exception 02");
        assert_eq!(link.in_flight(), 0);
        assert!(matches!(link.answer().await, Err(LinkError::NothingAsked)));
    }

    /// A device that answers the requests in flight in another order (pymodbus does): each
    /// answer goes to its own request; a second answer to one of them is malformed.
    #[tokio::test(flavor = "current_thread")]
    async fn answers_in_any_order_go_to_their_own_requests() {
        let (ours, mut device) = duplex(4096);
        let mut link = ReadLink::attach(ours, 1);
        for key in 0..3 {
            link.send(&read(Space::HoldingRegister, key as u16, 1), key).await.unwrap();
        }
        let mut requests = [0u8; 36];
        device.read_exact(&mut requests).await.unwrap();
        for transaction in [3u8, 1, 2] {
            device.write_all(&[0, transaction, 0, 0, 0, 5, 1, 3, 2, 0, transaction]).await.unwrap();
        }
        for (key, value) in [(2, 3), (0, 1), (1, 2)] {
            let answered = link.answer().await.unwrap();
            assert_eq!((answered.key, answered.answer), (key, Ok(Data::Words(vec![value]))));
        }
        for key in 3..6 {
            link.send(&read(Space::HoldingRegister, 0, 1), key).await.unwrap(); // transactions 4 to 6
        }
        device.write_all(&[0, 5, 0, 0, 0, 5, 1, 3, 2, 0, 5, 0, 5, 0, 0, 0, 5, 1, 3, 2, 0, 5]).await.unwrap();
        assert_eq!(link.answer().await.unwrap().key, 4);
        let error = link.answer().await.unwrap_err().to_string();
        assert!(error.contains("a second answer to transaction 5"), "{error}");
    }

    /// With one request in flight, whatever comes after an answer in its segment is dropped,
    /// however long (fixed-size frames) and whatever it holds: zeros after which the next
    /// answer's first bytes made a right header for transaction 0 in the guard's tail window.
    #[tokio::test(flavor = "current_thread")]
    async fn anything_after_the_only_answer_awaited_in_its_segment_is_dropped() {
        for padding in [vec![0u8; 4], vec![0; 40], vec![0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 1]] {
            let (ours, mut device) = duplex(4096);
            let mut link = ReadLink::attach(ours, 1);
            for transaction in [1u8, 2] {
                link.send(&read(Space::HoldingRegister, 0, 1), usize::from(transaction)).await.unwrap();
                let mut request = [0u8; 12];
                device.read_exact(&mut request).await.unwrap();
                let answer = [0, transaction, 0, 0, 0, 5, 1, 3, 2, 0, transaction];
                device.write_all(&[&answer[..], &padding].concat()).await.unwrap();
                let answered = link.answer().await.unwrap();
                assert_eq!(answered.answer, Ok(Data::Words(vec![u16::from(transaction)])), "{padding:?}");
            }
        }
    }

    /// A call of `answer` dropped before its answer was whole (the task's wait for a rate cap's
    /// slot came first) leaves what it read for the next call, which may come after another
    /// request went out, and then take that request's answer first.
    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_begun_by_a_dropped_call_is_read_on_by_the_next() {
        let wait = std::time::Duration::from_millis(20);
        let (ours, mut device) = duplex(4096);
        let mut link = ReadLink::attach(ours, 1);
        link.send(&read(Space::HoldingRegister, 0, 1), 0).await.unwrap();
        assert!(!link.sent_ahead(0));
        assert!(tokio::time::timeout(wait, link.answer()).await.is_err(), "nothing came");
        link.send(&read(Space::HoldingRegister, 0, 1), 1).await.unwrap();
        assert!(link.sent_ahead(1), "sent while the first awaited its answer");
        // The second request's answer comes first, in two parts, with a dropped call between.
        device.write_all(&[0, 2, 0, 0]).await.unwrap();
        assert!(tokio::time::timeout(wait, link.answer()).await.is_err(), "half a header is no answer");
        device.write_all(&[0, 5, 1, 3, 2, 0, 8]).await.unwrap();
        let second = link.answer().await.unwrap();
        assert_eq!((second.key, second.answer), (1, Ok(Data::Words(vec![8]))));
        device.write_all(&[0, 1, 0, 0, 0, 5, 1, 3, 2, 0, 7]).await.unwrap();
        let first = link.answer().await.unwrap();
        assert_eq!((first.key, first.answer), (0, Ok(Data::Words(vec![7]))));
    }

    /// What right headers can carry that is still no answer to the request: another unit,
    /// another function, the wrong number of bytes.
    #[tokio::test(flavor = "current_thread")]
    async fn answers_that_do_not_fit_their_request_are_malformed() {
        let cases: [(&[u8], &str); 5] = [
            (&[0, 1, 0, 0, 0, 5, 9, 3, 2, 0, 1], "from unit 9, the request was to unit 7"),
            (&[0, 1, 0, 0, 0, 5, 7, 4, 2, 0, 1], "function 4 answers a request with function 3"),
            (
                &[0, 1, 0, 0, 0, 5, 7, 3, 2, 0, 1],
                "a byte count of 2 and 2 bytes of data answer a read of 2 registers, which needs 4",
            ),
            (&[0, 1, 0, 0, 0, 7, 7, 3, 2, 0, 1, 0, 2], "a byte count of 2 and 4 bytes of data"),
            (&[0, 1, 0, 0, 0, 4, 7, 0x83, 2, 2], "an exception answer with 2 bytes"),
        ];
        for (bytes, expected) in cases {
            let (ours, mut device) = duplex(4096);
            let mut link = ReadLink::attach(ours, 7);
            link.send(&read(Space::HoldingRegister, 0, 2), 0).await.unwrap();
            device.write_all(bytes).await.unwrap();
            let error = link.answer().await.unwrap_err().to_string();
            assert!(error.starts_with("malformed frame") && error.contains(expected), "{error}");
        }
    }

    /// The device closes the connection in the middle of an answer's header: the read fails as
    /// a cut answer; a close before any of it, as a close.
    #[tokio::test(flavor = "current_thread")]
    async fn a_close_inside_an_answer_is_named_so() {
        for (sent, inside) in
            [(&[0u8, 1, 0, 0, 0][..], true), (&[0, 1, 0, 0, 0, 5, 7, 3, 2][..], true), (&[][..], false)]
        {
            let (ours, mut device) = duplex(4096);
            let mut link = ReadLink::attach(ours, 7);
            link.send(&read(Space::HoldingRegister, 0, 1), 0).await.unwrap();
            device.write_all(sent).await.unwrap();
            drop(device);
            let error = link.answer().await.unwrap_err();
            assert_eq!(matches!(error, LinkError::Cut), inside, "{error:?}");
            assert_eq!(matches!(error, LinkError::Closed), !inside, "{error:?}");
        }
    }
}
