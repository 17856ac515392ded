//! The Modbus TCP southbound driver, read-only by construction. It has three parts: the request
//! [`plan`]ner (pure) that coalesces a device's tags into the fewest read requests within the
//! protocol's limits; the [`decode`]r (pure) that turns registers and bits into engineering
//! values; and the device task ([`driver`]) that keeps one persistent connection per device,
//! paces requests under a rate cap, times each one out, and reconnects with exponential backoff
//! and jitter. The connection is a [`link::ReadLink`] of our own framing, which can build the
//! four plain reads (function codes 1 to 4) and no other request, and reads every answer
//! through the frame [`guard`]; `crates/airlock/tests/architecture.rs` fails if this crate's
//! source names a write call.

pub mod decode;
pub mod driver;
pub mod guard;
pub mod link;
pub mod pacer;
pub mod plan;

pub use airlock_model::SampleBatch;
pub use driver::{DeviceTask, requests};
pub use plan::{PlanLimits, PlannedTag, ReadRequest, plan};
