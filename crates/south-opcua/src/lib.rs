//! The OPC UA southbound driver, read-only by construction: one client session per server
//! (async-opcua), values through one subscription of monitored items (or polling reads for
//! servers that need it), and browsing of the address space for `airlock browse`. The services
//! it calls are Read, Browse/BrowseNext and CreateSubscription/CreateMonitoredItems (with what a
//! session needs: GetEndpoints, CreateSession, ActivateSession, Publish); `clippy.toml` forbids
//! the client's write, call, node-management and history-update methods, and
//! `crates/airlock/tests/architecture.rs` fails if this crate's source names one.
//!
//! [`value`] maps a DataValue to a sample (pure); [`trust`] keeps airlock's application
//! certificate and the explicit trust list; [`client`] is the device task; [`browse`] walks the
//! address space.

pub mod browse;
pub mod client;
pub mod link;
pub mod trust;
pub mod value;

pub use client::OpcUaTask;
