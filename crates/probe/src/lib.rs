//! The probe: open- or closed-loop HTTP load that counts every outcome, so a deploy can prove it dropped nothing.

pub mod connection;
pub mod outcome;
pub mod report;
pub mod runner;
pub mod target;

pub use outcome::{FailureKind, Outcome};
pub use report::Report;
pub use runner::{run, Load, ProbeConfig, ProbeError};
pub use target::Target;
