//! The validated shape of an OPC UA server airlock reads (read-only: subscriptions, reads and
//! browsing; the config has no key that could name a write or a method).

use std::path::PathBuf;
use std::time::Duration;

use crate::Secret;

/// An OPC UA server: its endpoint, how the channel is secured, who airlock is, what it reads.
#[derive(Debug, Clone)]
pub struct OpcUaDevice {
    /// `opc.tcp://host:port[/path]`.
    pub endpoint: String,
    pub security: Security,
    pub identity: Identity,
    /// Server certificates (DER or PEM files) trusted explicitly. A server whose certificate is
    /// not among them is refused, with its thumbprint in the error.
    pub trusted_server_certs: Vec<PathBuf>,
    /// Whether values come through a subscription or by polling reads.
    pub mode: ReadMode,
    /// One entry per tag of the device, in the same order.
    pub nodes: Vec<OpcUaNode>,
}

/// The security policy and message mode of the secure channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// No signing, no encryption (policy None).
    None,
    /// Basic256Sha256, every message signed.
    Sign,
    /// Basic256Sha256, every message signed and encrypted.
    SignAndEncrypt,
}

impl Security {
    pub const ALL: [(&'static str, Security); 3] =
        [("none", Security::None), ("sign", Security::Sign), ("sign_and_encrypt", Security::SignAndEncrypt)];
}

/// Who airlock says it is when it activates a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    Anonymous,
    User {
        username: String,
        password: Secret,
    },
    /// An X.509 user certificate and its private key (PEM or DER files).
    Certificate {
        cert: PathBuf,
        key: PathBuf,
    },
}

/// How values are read from the server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadMode {
    /// One subscription; the server sends changes at most every `publishing_interval`.
    Subscribe { publishing_interval: Duration },
    /// Read every tag at the device's poll interval, for servers without subscriptions.
    Poll,
}

/// The node a tag reads, and how the server samples it.
#[derive(Debug, Clone, PartialEq)]
pub struct OpcUaNode {
    /// The node id in OPC UA text form, e.g. `ns=2;s=Press.Speed` or `i=2258`.
    pub node_id: String,
    /// How often the server samples the value (subscriptions only).
    pub sampling_interval: Duration,
    /// Changes the server may queue between two publishes (subscriptions only).
    pub queue_size: u32,
    /// An absolute deadband applied by the server (subscriptions only; numeric tags).
    pub server_deadband: Option<f64>,
}
