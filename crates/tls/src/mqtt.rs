//! What airlock's two MQTT clients share, and nothing that sends a message: opening the
//! connection (TCP, or TLS over it), the fixed header and its remaining length, length-prefixed
//! strings, and what a CONNACK's return code means. The OT-side subscriber and the IT-side
//! sink each build their own packets on these (only the IT side has a PUBLISH encoder).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Either a TCP stream or TLS over one.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why a connection failed, on either side; the client backs off and connects again.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connect to {0} timed out")]
    ConnectTimeout(String),
    #[error("the broker closed the connection")]
    Closed,
    #[error("the broker refused the connection ({0})")]
    Refused(&'static str),
    #[error("the broker stopped answering pings")]
    PingTimeout,
    #[error("the broker has acknowledged nothing for {0:?} while publishes await their PUBACK")]
    Silent(std::time::Duration),
    #[error("the broker has taken no bytes for {0:?} (it stopped reading)")]
    WriteStalled(std::time::Duration),
    #[error("the broker broke the protocol: {0}")]
    Protocol(String),
    #[error("TLS: {0}")]
    Tls(String),
    /// A packet of ours that MQTT cannot carry (a field over 65,535 bytes); nothing was sent.
    #[error("{0}")]
    Unframeable(String),
}

/// Packet types (the first byte's high four bits).
pub const CONNECT: u8 = 1;
pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBSCRIBE: u8 = 8;
pub const SUBACK: u8 = 9;
pub const PINGREQ: u8 = 12;
pub const PINGRESP: u8 = 13;
pub const DISCONNECT: u8 = 14;

/// Opens TCP to `host:port` (no Nagle delay) and, with `tls`, a TLS session over it that
/// verifies the broker's certificate for `host`.
pub async fn open(
    host: &str,
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Box<dyn Stream>, LinkError> {
    let tcp = TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let Some(config) = tls else { return Ok(Box::new(tcp)) };
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| LinkError::Tls(format!("{host:?} as a server name: {e}")))?;
    let session = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .map_err(|e| LinkError::Tls(e.to_string()))?;
    Ok(Box::new(session))
}

/// The largest remaining length MQTT can express (four bytes of seven bits).
pub const REMAINING_LENGTH_MAX: usize = 268_435_455;

/// A fixed header's size and the remaining length, `None` until more bytes come, or the
/// protocol error of a length longer than four bytes.
pub fn fixed_header(buf: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut length = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else { return Ok(None) };
        length |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((2 + i, length)));
        }
    }
    Err("a remaining length longer than four bytes".to_owned())
}

/// Appends a fixed header: the first byte and `length` as the remaining length.
pub fn put_header(out: &mut Vec<u8>, first: u8, length: usize) -> Result<(), String> {
    if length > REMAINING_LENGTH_MAX {
        return Err(format!("a packet of {length} bytes, more than MQTT carries"));
    }
    out.push(first);
    let mut n = length;
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.push(b);
        if n == 0 {
            return Ok(());
        }
    }
}

/// A whole packet: the first byte, the remaining length, the body.
pub fn packet(first: u8, body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(body.len() + 5);
    put_header(&mut out, first, body.len())?;
    out.extend_from_slice(body);
    Ok(out)
}

/// A string field: its length in two bytes, then its bytes.
pub fn put_string(out: &mut Vec<u8>, s: &[u8]) -> Result<(), String> {
    let len = u16::try_from(s.len()).map_err(|_| format!("a field of {} bytes, more than 65,535", s.len()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    Ok(())
}

/// Why the broker refused a connection, from the CONNACK's return code; `None`: accepted.
pub fn connack_refusal(code: u8) -> Option<&'static str> {
    match code {
        0 => None,
        1 => Some("unacceptable protocol version"),
        2 => Some("client identifier rejected"),
        3 => Some("server unavailable"),
        4 => Some("bad user name or password"),
        5 => Some("not authorized"),
        _ => Some("an unknown return code"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn remaining_lengths_are_read_as_the_spec_writes_them() {
        assert_eq!(fixed_header(&[0x30, 0]).unwrap(), Some((2, 0)));
        assert_eq!(fixed_header(&[0x30, 0x7f]).unwrap(), Some((2, 127)));
        assert_eq!(fixed_header(&[0x30, 0x80, 0x01]).unwrap(), Some((3, 128)));
        assert_eq!(fixed_header(&[0x30, 0xff, 0xff, 0xff, 0x7f]).unwrap(), Some((5, REMAINING_LENGTH_MAX)));
        assert_eq!(fixed_header(&[0x30, 0x80]).unwrap(), None);
        assert!(fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]).is_err());
        for n in [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, REMAINING_LENGTH_MAX] {
            let mut out = Vec::new();
            put_header(&mut out, 0x30, n).unwrap();
            assert_eq!(fixed_header(&out).unwrap(), Some((out.len(), n)), "{n}");
        }
        assert!(put_header(&mut Vec::new(), 0x30, REMAINING_LENGTH_MAX + 1).is_err());
        let p = packet(0x30, &[7; 300]).unwrap();
        assert_eq!(fixed_header(&p).unwrap(), Some((3, 300)));
        assert!(put_string(&mut Vec::new(), &vec![b'a'; 65_536]).is_err());
    }
}
