//! The only connection to an OT broker the subscriber holds: a small MQTT 3.1.1 client of our
//! own that can connect, subscribe, ping, and take what the broker sends. It has no PUBLISH
//! encoder and no last will, so the OT side cannot send data to the plant's broker by any call
//! (the architecture test checks that no southbound file names a publish). It reads the byte
//! stream itself, so a message larger than the bound is read past in pieces, counted and
//! reported, while the connection stays up: a retained oversized message no longer makes a
//! reconnect loop. Reads are cancel-safe (bytes go into the session's buffer before they are
//! parsed), and a ping every half keep-alive with an answer due within the keep-alive tells a
//! dead link from a quiet one.

use std::sync::Arc;
use std::time::Duration;

pub use airlock_tls::mqtt::LinkError;
use airlock_tls::mqtt::{
    CONNACK, CONNECT, PINGREQ, PINGRESP, PUBACK, PUBLISH, SUBACK, SUBSCRIBE, Stream, connack_refusal, fixed_header,
    packet, put_string,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// How to reach the broker and what to ask of it.
#[derive(Clone, Debug)]
pub struct Options {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    /// Sent in CONNECT; the client pings every half of it.
    pub keep_alive: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    /// TLS settings, or plain TCP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// A PUBLISH whose packet is larger than this is read past and reported, not kept.
    pub message_bytes_max: usize,
}

/// What the broker sent, as the subscriber sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// The answer to the subscription: how many filters the broker refused.
    Subscribed { refused: usize },
    /// A message on a subscribed topic.
    Message { topic: String, payload: Vec<u8> },
    /// A message over the bound, read past: its topic (when it was readable) and size.
    Oversized { topic: Option<String>, bytes: usize },
}

/// Time allowed to open the connection and get the CONNACK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Topic filters in one subscription at most (a SUBACK has a code for each).
const SUBSCRIPTIONS_MAX: usize = 65_535;

/// What the broker's byte stream holds, packet by packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// The answer to CONNECT: its return code (0 is accepted).
    ConnAck {
        code: u8,
    },
    /// A message; `ack` is the packet id of a QoS 1 message, which wants a PUBACK.
    Publish {
        topic: String,
        payload: Vec<u8>,
        ack: Option<[u8; 2]>,
    },
    /// The answer to SUBSCRIBE: how many filters were refused.
    SubAck {
        refused: usize,
    },
    PingResp,
    /// A message over the bound, read past: its topic (when it was readable) and size.
    Oversized {
        topic: Option<String>,
        bytes: usize,
    },
}

/// The broker's byte stream cut into frames, holding at most one message under the bound (or a
/// SUBACK of at most 65,537 bytes) plus what one read brings: bytes go in with [`push`](Self::push), frames come out of
/// [`next_frame`](Self::next_frame). Pure (no I/O), so that it can be fuzzed.
#[derive(Debug)]
pub struct Frames {
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    /// An oversized message being read past: bytes still to skip, its topic, its size.
    skipping: Option<(usize, Option<String>, usize)>,
    message_bytes_max: usize,
}

impl Frames {
    pub fn new(message_bytes_max: usize) -> Self {
        Self { buf: Vec::with_capacity(READ_CHUNK), skipping: None, message_bytes_max }
    }

    /// Bytes from the broker.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held, not yet parsed (bounded by the message bound, a topic and one read).
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `None` until more bytes come, or an error for bytes that break
    /// the protocol (the session then ends).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            if let Some((left, topic, bytes)) = self.skipping.take() {
                let n = left.min(self.buf.len());
                self.buf.drain(..n);
                if n < left {
                    self.skipping = Some((left - n, topic, bytes));
                    return Ok(None);
                }
                return Ok(Some(Frame::Oversized { topic, bytes }));
            }
            let Some((header, length)) = fixed_header(&self.buf).map_err(LinkError::Protocol)? else { return Ok(None) };
            // What a subscriber can be sent, and how long each may be: anything else, or longer,
            // is refused as soon as its header is read (not buffered first).
            let longest = match self.buf[0] >> 4 {
                PUBLISH => usize::MAX,
                CONNACK => 2,
                SUBACK => 2 + SUBSCRIPTIONS_MAX,
                PINGRESP => 0,
                other => return Err(LinkError::Protocol(format!("an unexpected packet of type {other}"))),
            };
            if length > longest {
                let kind = self.buf[0] >> 4;
                return Err(LinkError::Protocol(format!("a packet of type {kind} of {length} bytes")));
            }
            if self.buf[0] >> 4 == PUBLISH && length > self.message_bytes_max {
                // Wait for the topic (at most 64 KiB in) to name it, then skip the rest.
                let topic = match topic_of(&self.buf[header..]) {
                    Some(t) => Some(t),
                    None if self.buf.len() < header + 2 + usize::from(u16::MAX) => return Ok(None),
                    None => None,
                };
                let have = (self.buf.len() - header).min(length);
                self.buf.drain(..header + have);
                self.skipping = Some((length - have, topic, length));
                continue;
            }
            if self.buf.len() < header + length {
                return Ok(None);
            }
            let kind = self.buf[0] >> 4;
            let flags = self.buf[0] & 0x0f;
            let frame = {
                let body = &self.buf[header..header + length];
                match kind {
                    CONNACK if body.len() == 2 => Frame::ConnAck { code: body[1] },
                    PUBLISH => {
                        let qos = (flags >> 1) & 3;
                        let (topic, rest) = split_topic(body)?;
                        match qos {
                            0 => Frame::Publish { topic, payload: rest.to_vec(), ack: None },
                            1 if rest.len() >= 2 => {
                                Frame::Publish { topic, payload: rest[2..].to_vec(), ack: Some([rest[0], rest[1]]) }
                            }
                            _ => {
                                return Err(LinkError::Protocol(format!(
                                    "a PUBLISH at QoS {qos} on a QoS 0 subscription"
                                )));
                            }
                        }
                    }
                    SUBACK => {
                        let codes = body.get(2..).unwrap_or_default();
                        Frame::SubAck { refused: codes.iter().filter(|c| **c == 0x80).count() }
                    }
                    PINGRESP => Frame::PingResp,
                    other => return Err(LinkError::Protocol(format!("an unexpected packet of type {other}"))),
                }
            };
            self.buf.drain(..header + length);
            return Ok(Some(frame));
        }
    }
}

/// A connected session that can subscribe and receive, and nothing else.
pub struct SubscribeOnly {
    stream: Box<dyn Stream>,
    frames: Frames,
    /// Where the socket reads into before the bytes join the frames.
    chunk: Box<[u8]>,
    keep_alive: Duration,
    last_sent: Instant,
    ping_sent: Option<Instant>,
}

impl SubscribeOnly {
    /// Connects, logs in and subscribes to `filters` at QoS 0. The SUBACK comes as
    /// [`Incoming::Subscribed`] from [`next`](Self::next).
    pub async fn connect(o: &Options, filters: &[String]) -> Result<Self, LinkError> {
        let address = format!("{}:{}", o.host, o.port);
        let opened = async {
            let stream = airlock_tls::mqtt::open(&o.host, o.port, o.tls.as_ref()).await?;
            let mut link = Self {
                stream,
                frames: Frames::new(o.message_bytes_max),
                chunk: vec![0; READ_CHUNK].into_boxed_slice(),
                keep_alive: o.keep_alive,
                last_sent: Instant::now(),
                ping_sent: None,
            };
            link.send(&connect_packet(o)?).await?;
            link.connack().await?;
            Ok::<_, LinkError>(link)
        };
        let mut link =
            tokio::time::timeout(CONNECT_TIMEOUT, opened).await.map_err(|_| LinkError::ConnectTimeout(address))??;
        link.send(&subscribe_packet(filters)?).await?;
        Ok(link)
    }

    /// Waits for the CONNACK and reads its answer.
    async fn connack(&mut self) -> Result<(), LinkError> {
        loop {
            match self.frames.next_frame()? {
                Some(Frame::ConnAck { code }) => {
                    return connack_refusal(code).map_or(Ok(()), |why| Err(LinkError::Refused(why)));
                }
                Some(other) => return Err(LinkError::Protocol(format!("{other:?} before the CONNACK"))),
                None => self.fill().await?,
            }
        }
    }

    /// The next thing the broker sent. Pings it when due; an error ends the session.
    pub async fn next(&mut self) -> Result<Incoming, LinkError> {
        loop {
            // Looked at before anything is read too: while the broker keeps the socket full,
            // a read is always ready and would win every race with the timer below (a broker
            // takes only what the client sends as a sign of life).
            self.ping_if_due().await?;
            if let Some(incoming) = self.parse().await? {
                return Ok(incoming);
            }
            // Only once every frame held is parsed: a PINGRESP among them counts.
            if self.ping_sent.is_some_and(|sent| Instant::now() >= sent + self.keep_alive) {
                return Err(LinkError::PingTimeout);
            }
            let ping_due = self.last_sent + self.keep_alive / 2;
            let answer_due = self.ping_sent.map(|t| t + self.keep_alive);
            let wake = answer_due.map_or(ping_due, |a| a.min(ping_due));
            tokio::select! {
                // What the socket holds is read first: a PINGRESP already there must not lose
                // to a timer that ran out meanwhile.
                biased;
                read = self.fill() => read?,
                () = tokio::time::sleep_until(wake) => self.ping_if_due().await?,
            }
        }
    }

    /// Sends a PINGREQ when half the keep-alive has passed since anything was sent.
    async fn ping_if_due(&mut self) -> Result<(), LinkError> {
        if self.keep_alive.is_zero() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= self.last_sent + self.keep_alive / 2 {
            self.send(&[PINGREQ << 4, 0]).await?;
            self.ping_sent.get_or_insert(now);
        }
        Ok(())
    }

    /// Reads what the socket has into the buffer (cancel-safe: nothing is lost if dropped).
    async fn fill(&mut self) -> Result<(), LinkError> {
        let n = self.stream.read(&mut self.chunk[..]).await?;
        if n == 0 {
            return Err(LinkError::Closed);
        }
        self.frames.push(&self.chunk[..n]);
        Ok(())
    }

    async fn send(&mut self, packet: &[u8]) -> Result<(), LinkError> {
        self.stream.write_all(packet).await?;
        self.stream.flush().await?;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// The next event from the frames held, answering what the protocol asks (a QoS 1 PUBACK).
    async fn parse(&mut self) -> Result<Option<Incoming>, LinkError> {
        loop {
            let incoming = match self.frames.next_frame()? {
                None => return Ok(None),
                Some(Frame::Publish { topic, payload, ack }) => {
                    if let Some([a, b]) = ack {
                        // The broker should not send QoS 1 on a QoS 0 subscription; if it
                        // does, the acknowledgement it waits for carries no data.
                        self.send(&[PUBACK << 4, 2, a, b]).await?;
                    }
                    Incoming::Message { topic, payload }
                }
                Some(Frame::SubAck { refused }) => Incoming::Subscribed { refused },
                Some(Frame::Oversized { topic, bytes }) => Incoming::Oversized { topic, bytes },
                Some(Frame::PingResp) => {
                    self.ping_sent = None;
                    continue;
                }
                Some(Frame::ConnAck { .. }) => return Err(LinkError::Protocol("a second CONNACK".to_owned())),
            };
            return Ok(Some(incoming));
        }
    }
}

/// The topic at the start of a PUBLISH body, if it is all there.
fn topic_of(body: &[u8]) -> Option<String> {
    split_topic(body).ok().map(|(t, _)| t)
}

/// A PUBLISH body's topic and what follows it.
fn split_topic(body: &[u8]) -> Result<(String, &[u8]), LinkError> {
    let short = || LinkError::Protocol("a PUBLISH shorter than its topic".to_owned());
    let len = usize::from(u16::from_be_bytes([*body.first().ok_or_else(short)?, *body.get(1).ok_or_else(short)?]));
    let topic = body.get(2..2 + len).ok_or_else(short)?;
    // A topic that is not UTF-8 matches no configured topic; keep it readable for the log.
    Ok((String::from_utf8_lossy(topic).into_owned(), &body[2 + len..]))
}

fn connect_packet(o: &Options) -> Result<Vec<u8>, LinkError> {
    let mut body = Vec::new();
    put_string(&mut body, b"MQTT").map_err(LinkError::Unframeable)?;
    body.push(4); // protocol level 3.1.1
    let mut flags = 0x02; // clean session
    if o.username.is_some() {
        flags |= 0x80;
        if o.password.is_some() {
            flags |= 0x40;
        }
    }
    body.push(flags);
    let keep_alive = u16::try_from(o.keep_alive.as_secs()).unwrap_or(u16::MAX);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    put_string(&mut body, o.client_id.as_bytes()).map_err(LinkError::Unframeable)?;
    if let Some(user) = &o.username {
        put_string(&mut body, user.as_bytes()).map_err(LinkError::Unframeable)?;
        if let Some(password) = &o.password {
            put_string(&mut body, password.as_bytes()).map_err(LinkError::Unframeable)?;
        }
    }
    packet(CONNECT << 4, &body).map_err(LinkError::Unframeable)
}

fn subscribe_packet(filters: &[String]) -> Result<Vec<u8>, LinkError> {
    let mut body = vec![0, 1]; // packet id 1: one subscription per session
    for f in filters {
        put_string(&mut body, f.as_bytes()).map_err(LinkError::Unframeable)?;
        body.push(0); // QoS 0
    }
    packet((SUBSCRIBE << 4) | 0x02, &body).map_err(LinkError::Unframeable)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_whole_whatever_the_reads_and_an_oversized_message_is_read_past() {
        let publish = |topic: &str, payload: &[u8]| {
            let mut body = Vec::new();
            put_string(&mut body, topic.as_bytes()).unwrap();
            body.extend_from_slice(payload);
            packet(PUBLISH << 4, &body).unwrap()
        };
        let mut stream = vec![0x20, 2, 0, 0];
        stream.extend(packet(SUBACK << 4, &[0, 1, 0, 0x80]).unwrap());
        stream.extend(publish("a", b"1"));
        stream.extend(publish("big", &[7; 300]));
        stream.extend(publish("b", b"2"));
        stream.extend([PINGRESP << 4, 0]);
        for piece in [1, 3, 7, 64, 4096] {
            let mut frames = Frames::new(100);
            let mut out = Vec::new();
            for bytes in stream.chunks(piece) {
                frames.push(bytes);
                while let Some(f) = frames.next_frame().unwrap() {
                    out.push(f);
                }
                assert!(frames.held() <= 100 + 5 + piece, "held {}", frames.held());
            }
            assert_eq!(
                out,
                vec![
                    Frame::ConnAck { code: 0 },
                    Frame::SubAck { refused: 1 },
                    Frame::Publish { topic: "a".into(), payload: b"1".to_vec(), ack: None },
                    Frame::Oversized { topic: Some("big".into()), bytes: 305 },
                    Frame::Publish { topic: "b".into(), payload: b"2".to_vec(), ack: None },
                    Frame::PingResp,
                ],
                "read {piece} bytes at a time"
            );
        }
        let mut frames = Frames::new(100);
        frames.push(&[PUBLISH << 4 | 0b0100, 3, 0, 1, b'a']);
        assert!(frames.next_frame().is_err(), "QoS 2 on a QoS 0 subscription");
        let mut frames = Frames::new(100);
        frames.push(&[0xf0, 0]);
        assert!(frames.next_frame().is_err(), "a packet a client never gets");
        // A hostile broker's SUBACK claiming 200 MB is refused at its header, not buffered.
        let mut frames = Frames::new(100);
        frames.push(&[SUBACK << 4, 0x80, 0x80, 0x80, 0x60]);
        assert!(frames.next_frame().is_err());
        let mut frames = Frames::new(100);
        frames.push(&[PINGRESP << 4, 5]);
        assert!(frames.next_frame().is_err(), "a PINGRESP with a body");
    }

    /// A broker that floods the subscriber with messages, faster than it takes them: the
    /// subscriber still pings within the keep-alive (a broker takes only what the client sends
    /// as a sign of life, and drops it after one and a half keep-alives without one). A ready
    /// read won every race with the ping timer, so a PINGREQ went out only when tokio's
    /// cooperative budget happened to let the timer in: here after some 2 s, too late.
    #[tokio::test]
    async fn a_flood_of_messages_does_not_keep_the_subscriber_from_pinging() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let broker = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf); // CONNECT
            s.write_all(&[CONNACK << 4, 2, 0, 0]).unwrap();
            let _ = s.read(&mut buf); // SUBSCRIBE
            s.write_all(&[SUBACK << 4, 3, 0, 1, 0]).unwrap();
            s.set_nonblocking(true).unwrap();
            let mut message = vec![PUBLISH << 4, 9, 0, 3, b'a', b'/', b'b'];
            message.extend_from_slice(b"1234");
            let burst: Vec<u8> = message.repeat(2_000);
            let started = std::time::Instant::now();
            let mut pinged = false;
            // A broker drops a client it has heard nothing from for one and a half keep-alives.
            while !pinged && started.elapsed() < std::time::Duration::from_millis(1_500) {
                let _ = s.write_all(&burst);
                match s.read(&mut buf) {
                    Ok(n) => pinged = buf[..n].contains(&(PINGREQ << 4)),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
            pinged
        });
        let options = Options {
            host: "127.0.0.1".into(),
            port,
            client_id: "flooded".into(),
            keep_alive: Duration::from_secs(1),
            username: None,
            password: None,
            tls: None,
            message_bytes_max: 1 << 20,
        };
        let mut link = SubscribeOnly::connect(&options, &["a/#".to_owned()]).await.unwrap();
        let mut messages = 0u64;
        let reading = async {
            while !broker.is_finished() {
                match link.next().await {
                    Ok(Incoming::Message { .. }) => {
                        messages += 1;
                        // A subscriber slower than the broker (each message decoded and
                        // handed on), so that the socket never runs dry.
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    Ok(_) => {}
                    Err(e) => panic!("after {messages} messages: {e}"),
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(8), reading).await;
        drop(link);
        assert!(messages > 1_000, "{messages} messages: not a flood");
        assert!(broker.join().unwrap(), "no PINGREQ within 1.5 s of a keep-alive of 1 s");
    }

    #[test]
    fn a_short_publish_is_a_protocol_error_not_a_panic() {
        assert!(split_topic(&[]).is_err());
        assert!(split_topic(&[0, 5, b'a']).is_err());
        assert_eq!(split_topic(&[0, 1, b'a', 9]).unwrap(), ("a".to_owned(), &[9u8][..]));
    }
}
