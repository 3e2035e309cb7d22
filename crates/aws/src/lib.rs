//! The AWS provider: the same strategies and stack file, run on EC2 instances behind an
//! Application Load Balancer (two target groups, weighted forwarding) and Auto Scaling groups.

pub mod asg;
pub mod clients;
pub mod compute;
pub mod error;
pub mod groups;
pub mod metrics;
pub mod stack;
pub mod traffic;

pub use clients::Clients;
pub use compute::Ec2;
pub use cutover_control::{Reason, Side, TargetHealth, TargetState};
pub use cutover_rollout::{
    flip_back, in_progress, lease, Ask, Event, Fleet, Machine, MachineState, Outcome, Request,
    Rollout, Settings, StepRecord, TrafficPlane,
};
pub use error::AwsError;
pub use stack::Stack;
pub use traffic::Elb;

/// Store key of the side that takes the traffic between deploys.
pub const LIVE_KEY: &str = "aws.live";

/// The side that takes the traffic between deploys (blue until a deploy swaps them).
pub fn live(store: &cutover_store::Store) -> Result<Side, AwsError> {
    Ok(cutover_rollout::live(store, LIVE_KEY)?)
}

/// Tags on everything cutover launches or creates: which stack, which release, which group.
pub mod tags {
    pub const STACK: &str = "cutover:stack";
    pub const VERSION: &str = "cutover:version";
    pub const GROUP: &str = "cutover:group";
    pub const DEPLOYMENT: &str = "cutover:deployment";
}
