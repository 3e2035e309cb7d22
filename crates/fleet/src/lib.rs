//! The fleet: instances of a release as supervised local processes, each in its own process group.

pub mod autoscale;
pub mod command;
pub mod cpu;
pub mod instance;
pub mod local;
pub mod logs;
pub mod user;

pub use command::{CommandError, LaunchSpec};
pub use instance::{Instance, InstanceId};
pub use local::{Exit, FleetError, LocalFleet, StopReport};
