//! The vocabulary every part of cutover shares, on every provider: the two sides a deploy moves
//! traffic between, where a deployment stands, and a target's health as typed states and
//! reasons (in ALB's words, which the local data plane speaks too).

pub mod health;
pub mod progress;
pub mod side;

pub use health::{Reason, TargetHealth, TargetState};
pub use progress::Progress;
pub use side::Side;
