//! airlock's face, read-only by construction: a web dashboard (overview, tag browser, trends,
//! events, the egress ledger), the same data as a JSON API under `/api/v1/`, and Prometheus
//! metrics at `/metrics`. It holds only read-only handles of the running gateway (a
//! [`Dashboard`]): health counters, the latest values, the historian's query handle, a view of
//! the outbox that can neither append nor acknowledge, the sinks' health and ledgers. This crate
//! depends on no driver, and every route answers GET and HEAD only (anything else is 405
//! before it reaches a handler). Pages are drawn on the server (charts as SVG), with a small
//! script and style sheet embedded in the binary, behind a strict Content-Security-Policy and
//! no CORS. Off loopback it needs a token (bearer header, or a cookie from a one-time login
//! link) and TLS unless plain HTTP is explicitly allowed (`[web]` in the config).

mod answers;
mod api;
mod auth;
mod chart;
mod metrics;
mod pages;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use std::sync::Mutex;

use airlock_model::{Clock, CollectorHealth, DeviceHealth, Sample, Timestamp, ValueType};
use airlock_north::SinkHealth;
use airlock_store::{HistorianReader, OutboxView};

pub use api::Status;
pub use serve::{RunningWeb, start, start_on};

/// Why the web server could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the access token: {0}")]
    Token(String),
    #[error("TLS: {0}")]
    Tls(String),
}

/// One device as the dashboard sees it.
pub struct DeviceView {
    pub name: String,
    /// `modbus_tcp`, `opcua` or `mqtt`.
    pub protocol: &'static str,
    pub address: String,
    pub health: Arc<DeviceHealth>,
}

/// One sink as the dashboard sees it.
pub struct SinkView {
    pub name: String,
    /// `jsonl`, `mqtt`, `sparkplug`, `http` or `diode`.
    pub kind: &'static str,
    pub health: Arc<SinkHealth>,
}

/// One tag as the dashboard sees it.
pub struct TagView {
    /// Its asset path (`enterprise/site/area/line/cell/device/tag`).
    pub path: String,
    pub name: String,
    pub unit: Option<String>,
    /// Its device, an index into [`Dashboard::devices`].
    pub device: usize,
    pub value_type: ValueType,
}

/// The latest sample of each tag, by tag id (what the collector keeps for the live view).
pub type Latest = Arc<Mutex<Vec<Option<Sample>>>>;

/// The store's budgets, to show usage against.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    pub outbox_bytes_max: u64,
    pub historian_bytes_max: u64,
}

/// Everything the web reads, and nothing that writes: the gateway's read-only handles.
pub struct Dashboard {
    pub gateway: String,
    /// The gateway's clock: trends end at its now.
    pub clock: Clock,
    pub devices: Vec<DeviceView>,
    /// Every tag, in tag id order (as [`Dashboard::latest`]).
    pub tags: Arc<[TagView]>,
    pub latest: Latest,
    pub collector: Arc<CollectorHealth>,
    pub sinks: Vec<SinkView>,
    pub outbox: OutboxView,
    pub historian: HistorianReader,
    pub budgets: Budgets,
    pub started: Instant,
}

impl Dashboard {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
