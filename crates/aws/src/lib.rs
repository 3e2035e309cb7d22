//! The AWS provider: the same strategies and stack file, run on EC2 instances behind an
//! Application Load Balancer (two target groups, weighted forwarding) and Auto Scaling groups.

pub mod clients;
pub mod compute;
pub mod error;
pub mod groups;
pub mod journal;
pub mod rollout;
pub mod stack;
pub mod traffic;

pub use clients::Clients;
pub use compute::{Compute, Ec2, Machine, MachineState};
pub use error::AwsError;
pub use rollout::{Outcome, Rollout, Settings};
pub use stack::Stack;
pub use traffic::{Color, Elb, TargetHealth, TrafficPlane};

/// Tags on everything cutover launches or creates: which stack, which release, which group.
pub mod tags {
    pub const STACK: &str = "cutover:stack";
    pub const VERSION: &str = "cutover:version";
    pub const GROUP: &str = "cutover:group";
    pub const DEPLOYMENT: &str = "cutover:deployment";
}
