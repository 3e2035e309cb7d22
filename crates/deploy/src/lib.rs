//! Deploy strategies as pure planners: `(settings, observed state) -> actions`, no I/O, no clock.

pub mod observed;
pub mod rolling;
pub mod steady;

pub use observed::{Action, InstanceView, Observed, Plan, Progress, State};
pub use rolling::{plan, Rolling};
