//! Deploy strategies as pure planners: `(settings, observed state) -> actions`, no I/O, no clock.

pub mod analysis;
pub mod blue_green;
pub mod canary;
pub mod observed;
pub mod replace_group;
pub mod restarts;
pub mod rolling;
pub mod steady;
pub mod strategy;
pub mod tactics;

pub use analysis::{judge, Limits, Sample, Verdict};
pub use canary::Canary;
pub use observed::{
    Action, InstanceView, Observed, Plan, Progress, Promote, Promotion, Set, State, StepObserved,
    Traffic,
};
pub use restarts::{Backoff, CrashLoop, End, Restarts};
pub use rolling::{plan, Rolling};
pub use strategy::Strategy;
