//! The async runtime around the [`decide`](crate::decide) logic, generic over
//! [`Store`](crate::store::Store): each piece does one job against the store and leaves the
//! decisions to the pure logic.
//!
//! - [`Manager`] ([`manager.rs`](Manager)): the API a worker process uses; its main task
//!   (`session.rs`) claims an id and runs, per claimed id, the heartbeat (`heartbeat.rs`), the
//!   election (`election.rs`, which runs the leader's calculator, `leader.rs`, while it holds
//!   the lease), the follower of this worker's assignment record (`follower.rs`) and the id
//!   renewal; `publish.rs` writes assignments as the fewest compare-and-set writes.
//! - [`IdClaimer`]: stable worker ids — claim the lowest free `worker-<n>`, renew it by
//!   compare-and-set, notice when it is lost, release it.
//! - [`PartitionSource`] and [`StaticSource`]: what the leader assigns.
//! - [`Hooks`]: callbacks for assigned and revoked partitions, state, leadership, errors.

mod context;
mod election;
mod executor;
mod follower;
pub(crate) mod freeze;
mod heartbeat;
mod hooks;
mod id_claim;
mod instance;
mod instrumented;
mod leader;
mod manager;
mod publish;
mod reopen;
mod repeats;
mod session;
mod source;
mod status;

#[cfg_attr(not(feature = "testing"), allow(unused_imports))]
pub(crate) use freeze::Freezer;
pub use hooks::{HookContext, Hooks, LeadershipChange};
#[doc(hidden)]
pub use id_claim::{ClaimedId, IdClaimer};
pub use instance::InstanceId;
pub use manager::{Manager, ManagerBuilder};
#[doc(hidden)]
pub use repeats::{QUIET, Repeats, Verdict};
pub use source::{PartitionSource, StaticSource};
pub use status::{LeaderInfo, Transition, WorkerAssignment};
