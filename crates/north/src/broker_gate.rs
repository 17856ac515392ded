//! The Kafka sink's gate: the brokers a gateway connects to are the ones its config lists, and
//! no others. A Kafka cluster names its brokers (host and port) in its metadata, and rskafka
//! connects wherever the cluster says; an IT-side cluster must not choose where the gateway
//! opens connections (on a gateway with a leg in the OT network, an OT address), as the HTTP
//! sink follows no redirect. So every connection rskafka opens goes through this gate, a SOCKS5
//! proxy (RFC 1928, CONNECT only, no authentication) on loopback in the same process: it opens
//! the connection when the address asked for is one the config lists, and refuses it
//! otherwise, keeping the address refused for the sink's problem. Every step of a handshake is
//! bounded in time and bytes, and so is the number of connections through it.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// A handshake (and the connection to the broker) must be done within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes copied through a connection at a time, each way.
const COPY_BYTES: usize = 256 << 10;
/// Connections through the gate at once, at most: the sink opens one for each partition it
/// writes (at most 16 of each of the four classes' topics) and a few for metadata, and a
/// session's tunnels may outlive it until the broker closes them; twice that and more.
const CONNECTIONS_MAX: usize = 256;

/// A broker address as the config lists it or a client asks for it: a host (a name, matched
/// without regard to case, or an IP address) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Address {
    host: Host,
    port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

impl Host {
    fn of(text: &str) -> Self {
        let bare = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')).unwrap_or(text);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(bare.to_ascii_lowercase()),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(ip) => write!(f, "{ip}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

impl Address {
    /// `host:port` (an IPv6 address in brackets); `None` if it is not that.
    fn parse(text: &str) -> Option<Self> {
        let (host, port) = text.rsplit_once(':')?;
        Some(Self { host: Host::of(host), port: port.parse().ok()? })
    }
}

/// The gate, serving while it lives.
pub struct BrokerGate {
    /// Where rskafka's `socks5_proxy` points.
    pub address: SocketAddr,
    refused: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

impl BrokerGate {
    /// Opens the gate on a free loopback port for the brokers `allowed` (`host:port` each, as
    /// the config lists them); a listed address that is not `host:port` is left out (the
    /// config's validation refuses one). Call inside a tokio runtime.
    pub async fn open(allowed: &[String]) -> io::Result<Self> {
        let allowed: Arc<Vec<Address>> = Arc::new(allowed.iter().filter_map(|a| Address::parse(a)).collect());
        let listener = TcpListener::bind((IpAddr::from([127, 0, 0, 1]), 0)).await?;
        let address = listener.local_addr()?;
        let refused = Arc::new(Mutex::new(None));
        let task = tokio::spawn(serve(listener, allowed, Arc::clone(&refused)));
        Ok(Self { address, refused, task })
    }

    /// The last address the gate refused, as the cluster named it.
    pub fn refused(&self) -> Option<String> {
        self.refused.lock().ok().and_then(|r| r.clone())
    }

    /// Forgets the address refused (a new session starts).
    pub fn forget_refused(&self) {
        if let Ok(mut r) = self.refused.lock() {
            *r = None;
        }
    }
}

impl Drop for BrokerGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, allowed: Arc<Vec<Address>>, refused: Arc<Mutex<Option<String>>>) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // Out of file handles, say: the next accept is tried after a pause.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        // A connection over the bound is closed at once (the sink then fails and backs off).
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            log::warn!("kafka: {CONNECTIONS_MAX} connections go through the broker gate already; one more is closed");
            continue;
        };
        let (allowed, refused) = (Arc::clone(&allowed), Arc::clone(&refused));
        tokio::spawn(async move {
            let _slot = slot;
            let opened = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(client, &allowed)).await;
            match opened {
                Ok(Ok(Opened::Through(mut client, mut broker))) => {
                    // Answers go through as they come (no Nagle wait on a small one), in large
                    // copies: a produce request is some hundreds of KB.
                    let _ = (client.set_nodelay(true), broker.set_nodelay(true));
                    let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut broker, COPY_BYTES, COPY_BYTES)
                        .await;
                }
                Ok(Ok(Opened::Refused(address))) => {
                    log::warn!(
                        "kafka: the cluster named the broker {address}, which is not in the sink's `brokers`: \
                         no connection is opened to it"
                    );
                    if let Ok(mut r) = refused.lock() {
                        *r = Some(address);
                    }
                }
                Ok(Err(e)) => log::debug!("kafka: a connection through the broker gate failed: {e}"),
                Err(_) => log::debug!("kafka: a handshake through the broker gate took over {HANDSHAKE_TIMEOUT:?}"),
            }
        });
    }
}

enum Opened {
    Through(TcpStream, TcpStream),
    Refused(String),
}

/// SOCKS5 replies: succeeded, not allowed by the rules, host unreachable, command or address
/// type not supported.
const SUCCEEDED: u8 = 0;
const NOT_ALLOWED: u8 = 2;
const UNREACHABLE: u8 = 4;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ADDRESS_NOT_SUPPORTED: u8 = 8;

/// One client's SOCKS5 handshake: the connection to its broker, or the address refused.
async fn handshake(mut client: TcpStream, allowed: &[Address]) -> io::Result<Opened> {
    let asked = read_request(&mut client).await?;
    let asked = match asked {
        Ok(asked) => asked,
        Err(reply) => {
            send_reply(&mut client, reply).await?;
            return Err(io::Error::other(format!("a request refused with reply {reply}")));
        }
    };
    if !allowed.contains(&asked) {
        send_reply(&mut client, NOT_ALLOWED).await?;
        return Ok(Opened::Refused(asked.to_string()));
    }
    let target = match &asked.host {
        Host::Ip(ip) => TcpStream::connect(SocketAddr::new(*ip, asked.port)).await,
        Host::Name(name) => TcpStream::connect((name.as_str(), asked.port)).await,
    };
    match target {
        Ok(broker) => {
            send_reply(&mut client, SUCCEEDED).await?;
            Ok(Opened::Through(client, broker))
        }
        Err(e) => {
            send_reply(&mut client, UNREACHABLE).await?;
            Err(e)
        }
    }
}

/// The greeting and the CONNECT request: the address asked for, or the reply that refuses a
/// request this gate does not serve.
async fn read_request(client: &mut TcpStream) -> io::Result<Result<Address, u8>> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    let [version, methods] = head;
    if version != 5 {
        return Err(io::Error::other(format!("SOCKS version {version}")));
    }
    let mut offered = vec![0u8; usize::from(methods)];
    client.read_exact(&mut offered).await?;
    if !offered.contains(&0) {
        client.write_all(&[5, 0xff]).await?;
        return Err(io::Error::other("no SOCKS method without authentication offered"));
    }
    client.write_all(&[5, 0]).await?;
    let mut request = [0u8; 4];
    client.read_exact(&mut request).await?;
    let [version, command, _, kind] = request;
    if version != 5 {
        return Err(io::Error::other(format!("SOCKS version {version} in the request")));
    }
    let host = match kind {
        1 => {
            let mut ip = [0u8; 4];
            client.read_exact(&mut ip).await?;
            Host::Ip(IpAddr::from(ip))
        }
        3 => {
            let mut length = [0u8; 1];
            client.read_exact(&mut length).await?;
            let mut name = vec![0u8; usize::from(length[0])];
            client.read_exact(&mut name).await?;
            Host::of(&String::from_utf8_lossy(&name))
        }
        4 => {
            let mut ip = [0u8; 16];
            client.read_exact(&mut ip).await?;
            Host::Ip(IpAddr::V6(Ipv6Addr::from(ip)))
        }
        _ => return Ok(Err(ADDRESS_NOT_SUPPORTED)),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    if command != 1 {
        return Ok(Err(COMMAND_NOT_SUPPORTED));
    }
    Ok(Ok(Address { host, port: u16::from_be_bytes(port) }))
}

/// A reply with an empty bound address (the client does not use it).
async fn send_reply(client: &mut TcpStream, reply: u8) -> io::Result<()> {
    client.write_all(&[5, reply, 0, 1, 0, 0, 0, 0, 0, 0]).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A SOCKS5 CONNECT to `host:port` through the gate at `gate` (names as a domain, as
    /// rskafka's client sends them): the stream, or the reply code that refused it.
    async fn connect(gate: SocketAddr, host: &str, port: u16) -> Result<TcpStream, u8> {
        let mut s = TcpStream::connect(gate).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut chosen = [0u8; 2];
        s.read_exact(&mut chosen).await.unwrap();
        assert_eq!(chosen, [5, 0]);
        let mut request = vec![5, 1, 0, 3, host.len() as u8];
        request.extend_from_slice(host.as_bytes());
        request.extend_from_slice(&port.to_be_bytes());
        s.write_all(&request).await.unwrap();
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).await.unwrap();
        if reply[1] == SUCCEEDED { Ok(s) } else { Err(reply[1]) }
    }

    /// The listed broker is reached through the gate, bytes both ways; another port of the
    /// same host, another host, and a name the list does not hold are refused before any
    /// connection is made, and the last refused is kept for the sink's problem.
    #[tokio::test]
    async fn only_the_listed_brokers_are_connected_to() {
        let broker = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = broker.local_addr().unwrap().port();
        let other = TcpListener::bind("127.0.0.3:0").await.unwrap();
        let other_port = other.local_addr().unwrap().port();
        let gate = BrokerGate::open(&[format!("127.0.0.1:{port}"), "Kafka.Example:9092".into()]).await.unwrap();
        let echo = tokio::spawn(async move {
            let (mut s, _) = broker.accept().await.unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&b).await.unwrap();
        });
        let mut s = connect(gate.address, "127.0.0.1", port).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        echo.await.unwrap();
        assert_eq!(gate.refused(), None);

        assert_eq!(connect(gate.address, "127.0.0.1", port + 1).await.err(), Some(NOT_ALLOWED));
        assert_eq!(connect(gate.address, "127.0.0.3", other_port).await.err(), Some(NOT_ALLOWED));
        assert_eq!(gate.refused().as_deref(), Some(format!("127.0.0.3:{other_port}").as_str()));
        assert_eq!(connect(gate.address, "kafka.example.org", 9092).await.err(), Some(NOT_ALLOWED));
        let nothing = tokio::time::timeout(Duration::from_millis(200), other.accept()).await;
        assert!(nothing.is_err(), "a refused address was connected to");
    }

    /// Addresses as a config lists them and as a client asks: names match without regard to
    /// case, IPv6 in brackets or not, and what is not `host:port` is no address.
    #[test]
    fn addresses_parse_as_listed() {
        let a = |t: &str| Address::parse(t);
        assert_eq!(a("Kafka.Example:9092"), a("kafka.example:9092"));
        assert_eq!(a("[::1]:9092").unwrap().host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(a("[::1]:9092").unwrap().to_string(), "[::1]:9092");
        assert_eq!(a("10.0.0.5:9092").unwrap().to_string(), "10.0.0.5:9092");
        assert!(a("kafka").is_none() && a("kafka:port").is_none() && a("kafka:70000").is_none());
    }
}
