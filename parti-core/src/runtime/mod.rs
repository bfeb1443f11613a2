//! The async runtime around the [`decide`](crate::decide) logic, generic over
//! [`Store`](crate::store::Store): each piece does one job against the store and leaves the
//! decisions to the pure logic.
//!
//! - [`IdClaimer`]: stable worker ids — claim the lowest free `worker-<n>`, renew it by
//!   compare-and-set, notice when it is lost, release it.

mod id_claim;
mod instance;

pub use id_claim::{ClaimedId, IdClaimer};
pub use instance::InstanceId;
