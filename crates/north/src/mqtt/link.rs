//! The connection the MQTT sink publishes over: a small MQTT 3.1.1 client of our own. Up go
//! CONNECT (with the last will), PUBLISH at QoS 0 or 1, PINGREQ and DISCONNECT; back come
//! CONNACK, PUBACK and PINGRESP, each refused unless exactly as long as the protocol makes it,
//! and anything else ends the session: the sink never subscribes, so the broker owes it nothing
//! else, and nothing can come back down through it. Publishes are framed into one buffer and
//! written with one call, and acknowledgements are read as many at a time as the socket holds,
//! so a backlog drains at the broker's pace, not at one write and one flush per message (as
//! with rumqttc, which this replaced: issue 15). Reading is cancel-safe (bytes go into the
//! link's buffer before they are parsed); writing is done only where it is never cancelled.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

pub use airlock_tls::mqtt::LinkError;
use airlock_tls::mqtt::{
    CONNACK, CONNECT, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBLISH, Stream, connack_refusal, fixed_header, packet,
    put_header, put_string,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How to reach the broker and what to tell it.
#[derive(Clone, Debug)]
pub struct Options {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Sent in CONNECT; the link pings every half of it (zero: no pings).
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS settings, or plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The last will, sent at QoS 1 by the broker if the connection dies.
    pub will: Will,
}

/// A message the broker publishes for us when the connection dies.
#[derive(Clone, Debug)]
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// Time allowed to open the connection and get the CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a goodbye may wait for the broker to take its bytes, at most.
const CLOSE_WAIT_MAX: Duration = Duration::from_secs(5);
/// How long a write may wait for the broker to take a byte when there is no keep-alive to go by.
const WRITE_STALL_MAX: Duration = Duration::from_secs(60);
/// Bytes read from the socket at a time: some 16,000 PUBACKs.
const READ_CHUNK: usize = 64 * 1024;

/// What the broker sent back.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    ConnAck { code: u8 },
    PubAck(u16),
    PingResp,
}

/// The broker's bytes cut into answers: bytes go in with [`push`](Self::push), answers come out
/// of [`next_answer`](Self::next_answer). It holds at most one read and one partial answer (an
/// answer is at most 4 bytes; a longer one is refused as soon as its header is read). Pure (no
/// I/O), so that it can be fuzzed.
#[derive(Debug, Default)]
pub struct Answers {
    buf: Vec<u8>,
    /// Where the next answer starts in `buf`.
    at: usize,
}

impl Answers {
    /// Bytes from the broker.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.at > 0 {
            self.buf.drain(..self.at);
            self.at = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held and not yet parsed.
    pub fn held(&self) -> usize {
        self.buf.len() - self.at
    }

    /// The next whole answer, `None` until more bytes come, or an error for bytes that break
    /// the protocol (the session then ends).
    pub fn next_answer(&mut self) -> Result<Option<Answer>, LinkError> {
        let rest = &self.buf[self.at..];
        let Some(&first) = rest.first() else { return Ok(None) };
        let Some((header, length)) = fixed_header(rest).map_err(LinkError::Protocol)? else { return Ok(None) };
        let (kind, flags) = (first >> 4, first & 0x0f);
        let expected = match kind {
            CONNACK | PUBACK => 2,
            PINGRESP => 0,
            PUBLISH => {
                return Err(LinkError::Protocol("a PUBLISH, though this client subscribes to nothing".to_owned()));
            }
            other => return Err(LinkError::Protocol(format!("an unexpected packet of type {other}"))),
        };
        if length != expected || flags != 0 {
            return Err(LinkError::Protocol(format!(
                "a packet of type {kind} with flags {flags:#x} and {length} bytes (expected {expected}, no flags)"
            )));
        }
        let Some(body) = rest.get(header..header + length) else { return Ok(None) };
        let answer = match kind {
            CONNACK => Answer::ConnAck { code: body[1] },
            PUBACK => Answer::PubAck(u16::from_be_bytes([body[0], body[1]])),
            _ => Answer::PingResp,
        };
        self.at += header + length;
        Ok(Some(answer))
    }
}

/// A connected session that publishes and reads acknowledgements.
pub struct PublishLink {
    stream: Box<dyn Stream>,
    /// Packets framed and not yet written.
    out: Vec<u8>,
    answers: Answers,
    /// Where the socket reads into before the bytes join the answers.
    chunk: Box<[u8]>,
    keep_alive: Duration,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    /// The packet ids of the QoS 1 publishes sent and not yet acknowledged: a PUBACK for any
    /// other id (never sent, or acknowledged already) is no progress, and is dropped.
    awaiting: HashSet<u16>,
    /// When the broker last acknowledged a publish, or the first publish of those awaited
    /// went. (Not any byte: a broker that answers pings and holds back PUBACKs is stuck too.)
    last_acked: Instant,
}

impl PublishLink {
    /// Connects, logs in (with the last will) and waits for the broker to accept.
    pub async fn connect(o: &Options) -> Result<Self, LinkError> {
        let opened = async {
            let stream = airlock_tls::mqtt::open(&o.host, o.port, o.tls.as_ref()).await?;
            let mut link = Self {
                stream,
                out: connect_packet(o)?,
                answers: Answers::default(),
                chunk: vec![0; READ_CHUNK].into_boxed_slice(),
                keep_alive: o.keep_alive,
                last_sent: Instant::now(),
                ping_sent: None,
                awaiting: HashSet::new(),
                last_acked: Instant::now(),
            };
            link.flush().await?;
            loop {
                match link.answers.next_answer()? {
                    Some(Answer::ConnAck { code }) => {
                        return match connack_refusal(code) {
                            None => Ok(link),
                            Some(why) => Err(LinkError::Refused(why)),
                        };
                    }
                    Some(other) => return Err(LinkError::Protocol(format!("{other:?} before the CONNACK"))),
                    None => link.fill().await?,
                }
            }
        };
        let address = format!("{}:{}", o.host, o.port);
        tokio::time::timeout(CONNECT_TIMEOUT, opened).await.map_err(|_| LinkError::ConnectTimeout(address))?
    }

    /// Frames a PUBLISH (QoS 1 with `packet_id`, QoS 0 without) to go with the next
    /// [`flush`](Self::flush). On an error nothing is framed.
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        packet_id: Option<u16>,
        retain: bool,
    ) -> Result<(), LinkError> {
        frame_publish(&mut self.out, topic, payload, packet_id, retain)?;
        if let Some(id) = packet_id {
            if self.awaiting.is_empty() {
                self.last_acked = Instant::now();
            }
            self.awaiting.insert(id);
        }
        Ok(())
    }

    /// Writes everything framed, in one call where the socket takes it. Fails when the broker
    /// takes no byte for the keep-alive (a minute without one): a broker that stops reading
    /// would otherwise hold the sink, and its stop, forever. A slow link that takes bytes
    /// steadily is never cut.
    pub async fn flush(&mut self) -> Result<(), LinkError> {
        let stall = if self.keep_alive.is_zero() { WRITE_STALL_MAX } else { self.keep_alive };
        self.flush_within(stall).await
    }

    /// As [`flush`](Self::flush), failing once the broker has taken no byte for `stall`.
    async fn flush_within(&mut self, stall: Duration) -> Result<(), LinkError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let stalled = |_| LinkError::WriteStalled(stall);
        let mut written = 0;
        while written < self.out.len() {
            let n = tokio::time::timeout(stall, self.stream.write(&self.out[written..])).await.map_err(stalled)??;
            if n == 0 {
                return Err(LinkError::Closed);
            }
            written += n;
        }
        tokio::time::timeout(stall, self.stream.flush()).await.map_err(stalled)??;
        self.out.clear();
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Sends a PINGREQ when nothing has been sent for half the keep-alive.
    pub async fn ping_if_due(&mut self) -> Result<(), LinkError> {
        if self.keep_alive.is_zero() || self.last_sent.elapsed() < self.keep_alive / 2 {
            return Ok(());
        }
        self.out.extend_from_slice(&[PINGREQ << 4, 0]);
        self.flush().await?;
        self.ping_sent.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Waits until at least one PUBACK for a publish in flight has come and adds the packet
    /// ids of all that have to `into` (a PUBACK for any other id is dropped). Cancel-safe.
    /// Fails when a ping has gone unanswered for the keep-alive, or when the broker has
    /// acknowledged nothing in flight for the keep-alive while publishes await their PUBACK (a
    /// link that died while the sink kept sending, so that no ping was due, or a broker that
    /// answers pings, or sends PUBACKs for ids never sent, and holds back the PUBACKs owed).
    pub async fn acknowledgements(&mut self, into: &mut Vec<u16>) -> Result<(), LinkError> {
        // Whether the socket was read once past the deadline.
        let mut read_overdue = false;
        loop {
            while let Some(answer) = self.answers.next_answer()? {
                match answer {
                    Answer::PubAck(id) => {
                        if self.awaiting.remove(&id) {
                            self.last_acked = Instant::now();
                            into.push(id);
                        }
                    }
                    Answer::PingResp => self.ping_sent = None,
                    Answer::ConnAck { .. } => return Err(LinkError::Protocol("a second CONNACK".to_owned())),
                }
            }
            if !into.is_empty() {
                return Ok(());
            }
            let ping_due = self.ping_sent.map(|sent| (sent + self.keep_alive, LinkError::PingTimeout));
            let ack_due = (!self.awaiting.is_empty() && !self.keep_alive.is_zero())
                .then(|| (self.last_acked + self.keep_alive, LinkError::Silent(self.keep_alive)));
            let due = match (ping_due, ack_due) {
                (Some(p), Some(a)) => Some(if p.0 <= a.0 { p } else { a }),
                (p, a) => p.or(a),
            };
            match due {
                None => self.fill().await?,
                // What the socket holds is read before the deadline is looked at: a PINGRESP
                // already there must not lose to a timer that ran out meanwhile. Past it, the
                // socket is read once more and no more: a broker that keeps sending answers
                // that are no progress must not hold the deadline off.
                Some((at, failure)) => {
                    let overdue = Instant::now() >= at;
                    if overdue && read_overdue {
                        return Err(failure);
                    }
                    tokio::select! {
                        biased;
                        read = self.fill() => {
                            read?;
                            read_overdue |= overdue;
                        }
                        () = tokio::time::sleep_until(at) => return Err(failure),
                    }
                }
            }
        }
    }

    /// Says goodbye: the broker then discards the last will.
    /// Within [`CLOSE_WAIT_MAX`] whatever the broker does (over TLS the shutdown writes too).
    pub async fn disconnect(mut self) {
        // Whatever was framed and not written (or written in part, before a failed flush) is
        // not acknowledged: the outbox sends it again. Only the DISCONNECT goes.
        self.out.clear();
        self.out.extend_from_slice(&[DISCONNECT << 4, 0]);
        let _ = self.flush_within(CLOSE_WAIT_MAX).await;
        let _ = tokio::time::timeout(CLOSE_WAIT_MAX, self.stream.shutdown()).await;
    }

    /// Reads what the socket has into the answers (cancel-safe: nothing is lost if dropped).
    async fn fill(&mut self) -> Result<(), LinkError> {
        let n = self.stream.read(&mut self.chunk[..]).await?;
        if n == 0 {
            return Err(LinkError::Closed);
        }
        self.answers.push(&self.chunk[..n]);
        Ok(())
    }
}

/// Appends a PUBLISH to `out`; on an error nothing is appended.
fn frame_publish(
    out: &mut Vec<u8>,
    topic: &str,
    payload: &[u8],
    packet_id: Option<u16>,
    retain: bool,
) -> Result<(), LinkError> {
    let topic_len = u16::try_from(topic.len())
        .map_err(|_| LinkError::Unframeable(format!("a topic of {} bytes, more than 65,535", topic.len())))?;
    let length = 2 + topic.len() + if packet_id.is_some() { 2 } else { 0 } + payload.len();
    let first = (PUBLISH << 4) | if packet_id.is_some() { 0x02 } else { 0 } | u8::from(retain);
    put_header(out, first, length).map_err(LinkError::Unframeable)?;
    out.extend_from_slice(&topic_len.to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    if let Some(id) = packet_id {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(payload);
    Ok(())
}

fn connect_packet(o: &Options) -> Result<Vec<u8>, LinkError> {
    let frame = |e: String| LinkError::Unframeable(e);
    let mut body = Vec::new();
    put_string(&mut body, b"MQTT").map_err(frame)?;
    body.push(4); // protocol level 3.1.1
    // Clean session; the will at QoS 1 (bits 3-4 = 01), retained or not.
    let mut flags = 0x02 | 0x04 | 0x08 | if o.will.retain { 0x20 } else { 0 };
    if o.username.is_some() {
        flags |= 0x80;
        if o.password.is_some() {
            flags |= 0x40;
        }
    }
    body.push(flags);
    let keep_alive = u16::try_from(o.keep_alive.as_secs()).unwrap_or(u16::MAX);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_string(&mut body, o.client_id.as_bytes()).map_err(frame)?;
    put_string(&mut body, o.will.topic.as_bytes()).map_err(frame)?;
    put_string(&mut body, &o.will.payload).map_err(frame)?;
    if let Some(user) = &o.username {
        put_string(&mut body, user.as_bytes()).map_err(frame)?;
        if let Some(password) = &o.password {
            put_string(&mut body, password.as_bytes()).map_err(frame)?;
        }
    }
    packet(CONNECT << 4, &body).map_err(frame)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_whole_whatever_the_reads() {
        let stream = [0x20, 2, 0, 0, 0x40, 2, 0, 1, 0xd0, 0, 0x40, 2, 0xff, 0xfe];
        let expected = vec![Answer::ConnAck { code: 0 }, Answer::PubAck(1), Answer::PingResp, Answer::PubAck(65_534)];
        for step in 1..=stream.len() {
            let mut answers = Answers::default();
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                answers.push(piece);
                while let Some(a) = answers.next_answer().unwrap() {
                    got.push(a);
                }
            }
            assert_eq!(got, expected, "reads of {step} bytes");
            assert_eq!(answers.held(), 0);
        }
    }

    #[test]
    fn anything_a_publisher_never_asked_for_ends_the_session() {
        for bytes in [
            &[0x30, 5, 0, 1, b'a', b'x', b'y'][..], // a PUBLISH
            &[0x90, 3, 0, 1, 0],                    // a SUBACK
            &[0x40, 3, 0, 1, 0],                    // a PUBACK too long
            &[0x42, 2, 0, 1],                       // a PUBACK with flags
            &[0x40, 0xff, 0xff, 0xff, 0x7f],        // a 256 MB PUBACK, refused at its header
            &[0x40, 0xff, 0xff, 0xff, 0xff, 0x01],  // a remaining length of five bytes
            &[0x00, 0],                             // type 0 is reserved
        ] {
            let mut answers = Answers::default();
            answers.push(bytes);
            assert!(answers.next_answer().is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn a_publish_is_framed_as_the_spec_writes_it() {
        let o = Options {
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: "gw".into(),
            keep_alive: Duration::from_secs(30),
            username: Some("u".into()),
            password: Some("p".into()),
            tls: None,
            will: Will { topic: "s".into(), payload: b"offline".to_vec(), retain: true },
        };
        let connect = connect_packet(&o).unwrap();
        let mut expected = vec![0x10, 32, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xee, 0, 30, 0, 2, b'g', b'w', 0, 1, b's'];
        expected.extend_from_slice(&[0, 7]);
        expected.extend_from_slice(b"offline");
        expected.extend_from_slice(&[0, 1, b'u', 0, 1, b'p']);
        assert_eq!(connect, expected);

        let mut out = Vec::new();
        frame_publish(&mut out, "a/b", b"42", Some(7), false).unwrap();
        assert_eq!(out, [0x32, 9, 0, 3, b'a', b'/', b'b', 0, 7, b'4', b'2']);
        out.clear();
        frame_publish(&mut out, "t", b"", None, true).unwrap();
        assert_eq!(out, [0x31, 3, 0, 1, b't']);
        // A payload whose length takes two bytes, and a topic MQTT cannot carry.
        out.clear();
        frame_publish(&mut out, "t", &[9; 200], Some(1), false).unwrap();
        assert_eq!(out[..7], [0x32, 0x80 | (205 % 128), 205 / 128, 0, 1, b't', 0]);
        assert_eq!(out.len(), 3 + 205);
        out.clear();
        assert!(frame_publish(&mut out, &"x".repeat(70_000), b"", Some(1), false).is_err());
        assert!(out.is_empty());
    }
}
