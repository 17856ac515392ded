//! The data model of airlock: what a plant engineer calls a device, a tag, a sample, its quality,
//! an asset path and an event, as plain types with no I/O and no runtime. Every other crate speaks
//! these words. A [`Sample`] carries a value, a [`Quality`] (good, uncertain or bad, each with a
//! [`Reason`]), the time the source stamped it (if it did) and the time the gateway read it, like
//! OPC UA's `DataValue`. Tags live under an ISA-95 [`AssetPath`]
//! (`enterprise/site/area/line/cell/device/tag`), which later becomes the Unified Namespace topic.

mod asset;
mod event;
mod health;
pub mod pace;
mod sample;
mod time;

pub use asset::{AssetPath, AssetPathError, check_segment, find_path};
pub use event::{Event, Severity, Transition};
pub use health::{
    CollectorHealth, DeviceHealth, EventFeed, FeedEvent, Latency, LinkState, Problem, Problems, panic_text,
};
pub use sample::{Quality, Reason, Sample, SampleBatch, TagId, Value, ValueType, readable};
pub use time::{Clock, Timestamp, parse_duration};
