//! The one deploy executor: observe → plan → record the intent → act, for every strategy, over
//! two small traits at the seam: the [`Fleet`] (launch, list, terminate instances of a release)
//! and the [`TrafficPlane`] (register, deregister and see the drain end, typed target health,
//! the two sides' weights). Providers are adapters: EC2 and Auto Scaling with ELBv2, local
//! processes with the data plane, and [`memory`], the in-memory one tests run against.

pub mod decider;
pub mod executor;
pub mod failure;
pub mod fleet;
pub mod journal;
pub mod lease;
pub mod matrix;
pub mod memory;
pub mod rollback;
pub mod step;
pub mod traffic;

pub use cutover_control::{Reason, Side, TargetHealth, TargetState};
pub use decider::{Bounds, Decider, Decision, Launching, Look};
pub use executor::{Ask, PreviewCheck, Rollout, Settings};
pub use failure::Failure;
pub use fleet::{Fleet, Machine, MachineState};
pub use journal::{in_progress, live, Event, Outcome};
pub use lease::{Lease, Request};
pub use rollback::{flip_back, NoTarget, Past};
pub use step::StepRecord;
pub use traffic::TrafficPlane;
