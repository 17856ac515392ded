//! The middle of the gateway, between the drivers and the store. It owns the [`TagTable`] (the
//! one place tag ids are given), the [`DeviceHandle`] every driver reads into (its tag ids, the
//! sample helpers, the one bounded batch channel that a driver never waits on), the
//! [`Collector`] (the OT chamber's only store writer: every sample into the historian, what the
//! edge lets through into the outbox) and the [`Condenser`] (each tag's edge chain from the
//! config, each machine's OEE rule, the bearing watch), which turns samples into typed
//! [`Upstream`](airlock_upstream::Upstream) records. A driver is a [`Source`]; the binary only
//! assembles sources, this pipeline and the sinks. This crate knows no protocol: drivers
//! depend on it, never the other way round.

mod collector;
mod condense;
mod handle;
mod supervise;
mod tags;

pub use airlock_model::{CollectorHealth, EventFeed, FeedEvent};
pub use collector::{Collector, Latest, Reload};
pub use condense::{Condenser, Moved};
pub use handle::{
    BATCH_SAMPLES, BATCH_WAIT, BatchReceiver, BatchSender, CHANNEL_BATCHES, CHANNEL_SAMPLES, DeviceHandle, Running,
    Source, bounded_channel, channel,
};
pub use supervise::supervise;
pub use tags::{TagInfo, TagTable, historian_resolutions};
