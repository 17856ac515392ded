//! The Modbus TCP southbound driver, read-only by construction. It has three parts: the request
//! [`plan`]ner (pure) that coalesces a device's tags into the fewest read requests within the
//! protocol's limits; the [`decode`]r (pure) that turns registers and bits into engineering
//! values; and the device task ([`driver`]) that keeps one persistent connection per device,
//! paces requests under a rate cap, times each one out, and reconnects with exponential backoff
//! and jitter. Only tokio-modbus's `Reader` side is used, and only its four plain read calls
//! (function codes 1 to 4): `clippy.toml` forbids every write call and `tests/read_only.rs`
//! fails if this crate's source names one.

pub mod decode;
pub mod driver;
pub mod guard;
pub mod link;
pub mod pacer;
pub mod plan;

pub use airlock_model::SampleBatch;
pub use driver::{DeviceTask, requests};
pub use plan::{PlanLimits, PlannedTag, ReadRequest, plan};
