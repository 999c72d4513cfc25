//! The domain: ids, statuses and the rules of presence, and the plain types every other part
//! exchanges. No I/O, no HTTP, no database, no runtime: everything here is a value or a pure
//! function, tested on its own.

pub mod ids;
pub mod model;
pub mod presence;
pub mod recent;
pub mod roster;

pub use ids::{AccountId, ChannelId, DeviceId, Uaid};
pub use model::*;
pub use presence::{app_view, best_of, visible, Policy, Status};
