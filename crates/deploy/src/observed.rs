//! What a planner sees of the fleet, and what it may ask the executor to do.

use serde::{Deserialize, Serialize};

/// An instance's state as the controller observes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Launched and registered, not yet healthy by the load balancer's active checks.
    Starting,
    /// Healthy and taking traffic.
    Healthy,
    /// Crashed, exited, or failed its health checks.
    Failed,
    /// Deregistered; the executor waits for the drain confirmation, then stops it.
    Draining,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub version: String,
    pub state: State,
    /// What went wrong, for a failed instance: it becomes the deploy's reason.
    pub detail: Option<String>,
}

/// Everything a planner decides from. The executor fills it from the fleet, the load balancer
/// and the clock; the planner never reads any of them itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The version being rolled out.
    pub target: String,
    /// The version it replaces, restored on abort.
    pub previous: String,
    pub desired: u32,
    pub instances: Vec<InstanceView>,
    /// The progress deadline has passed without the deploy finishing.
    pub deadline_passed: bool,
    /// Launches asked for but not yet visible as instances.
    pub launches_in_flight: Vec<String>,
    /// Set once a plan said `Aborting`: an abort never turns back into a rollout, even after the
    /// instance that caused it is gone.
    pub aborted: Option<String>,
}

/// Something the executor carries out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Start one instance of `version` and register it.
    Launch { version: String },
    /// Deregister, wait for the drain confirmation, then stop.
    Drain { id: String },
    /// Deregister and stop at once: it never took traffic, or it is already dead.
    Remove { id: String },
}

/// Where the deploy stands after this plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "progress", rename_all = "snake_case")]
pub enum Progress {
    /// Working towards the target version.
    Rolling,
    /// Every instance runs the target version and is healthy.
    Done,
    /// Giving up: removing new instances, restoring the previous version.
    Aborting { reason: String },
    /// Aborted, and the previous version is back at full size.
    RolledBack { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub progress: Progress,
    pub actions: Vec<Action>,
}
