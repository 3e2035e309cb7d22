//! What a planner sees of the fleet, and what it may ask the executor to do.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::analysis::Verdict;
pub use cutover_control::Progress;

/// Which of the two target groups an instance serves from. The live set takes the traffic
/// between deploys; the next set holds a new version while a strategy shifts traffic to it, and
/// the previous version after that, kept warm for an instant rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Set {
    Live,
    Next,
}

/// An instance's state as the controller observes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Launched and registered, not yet healthy by the load balancer's active checks.
    Starting,
    /// Healthy and taking traffic.
    Healthy,
    /// Crashed, exited, or failed its health checks before it had served for long: what its
    /// release does, so a deploy of that release gives up.
    Failed,
    /// It served, then died or stopped answering once past the settle window: what happened to
    /// this instance (the OOM killer, an operator, the host), not what its release does. It is
    /// replaced at once and is never a reason to abort.
    Lost,
    /// Deregistered; the executor waits for the drain confirmation, then stops it.
    Draining,
}

impl State {
    /// Its name as the admin API and `cutover status` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Healthy => "healthy",
            State::Failed => "failed",
            State::Lost => "lost",
            State::Draining => "draining",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub version: String,
    pub set: Set,
    pub state: State,
    /// What went wrong, for a failed instance: it becomes the deploy's reason.
    pub detail: Option<String>,
}

/// Everything a planner decides from. The executor fills it from the fleet, the load balancer
/// and the clock; the planner never reads any of them itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The version being rolled out.
    pub target: String,
    /// The version it replaces, restored on abort.
    pub previous: String,
    pub desired: u32,
    pub instances: Vec<InstanceView>,
    /// The progress deadline has passed without the deploy finishing.
    pub deadline_passed: bool,
    /// Launches asked for but not yet visible as instances: version and set.
    pub launches_in_flight: Vec<(String, Set)>,
    /// Set once a plan said `Aborting`: an abort never turns back into a rollout, even after the
    /// instance that caused it is gone.
    pub aborted: Option<String>,
    /// Where a stepped strategy (canary) stands; the default for the others.
    pub step: StepObserved,
    /// Blue-green's check of the new set through the preview listener, before the flip.
    pub promotion: Promotion,
    /// Instances of the target version lost after they served, since the deploy began. One
    /// such loss is bad luck and is replaced; more than [`LOST_PER_INSTANCE`] times the desired
    /// size is a release that cannot stay up.
    pub lost: u32,
}

/// Losses of the target version, per desired instance, a deploy tolerates.
pub const LOST_PER_INSTANCE: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Promotion {
    /// No preview listener: the new set's health is the whole check.
    #[default]
    NotConfigured,
    /// Asked for, not answered yet.
    Pending,
    Passed,
    Failed(String),
}

/// The executor's record of the current step: which one, since when its traffic is in place,
/// what the analysis says of it, and what the operator asked for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepObserved {
    pub index: usize,
    /// How long this step's capacity and traffic share have been in place; `None` until they are.
    pub held_for: Option<Duration>,
    pub verdict: Verdict,
    /// `cutover promote` was asked for: go on now (`full`: skip the remaining steps).
    pub promote: Option<Promote>,
    /// `cutover pause` holds the deploy where it is until `cutover resume`.
    pub paused: bool,
    /// The last plan paused at this step (for a human, or as inconclusive): only `promote` moves
    /// it on, never a verdict that turns up later.
    pub waiting: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Promote {
    Next,
    Full,
}

/// Something the executor carries out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Start one instance of `version` and register it in `set`.
    Launch { version: String, set: Set },
    /// Deregister, wait for the drain confirmation, then stop.
    Drain { id: String },
    /// Deregister and stop at once: it never took traffic, or it is already dead.
    Remove { id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub progress: Progress,
    pub actions: Vec<Action>,
    pub traffic: Traffic,
    /// The step the deploy is at after this plan; a change starts a new analysis window.
    pub step: usize,
    /// This step's capacity and traffic share are in place: its analysis window may run.
    pub reached: bool,
}

/// How traffic splits between the live and the next set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "traffic", content = "percent", rename_all = "snake_case")]
pub enum Traffic {
    /// Each set in proportion to its healthy instances: every instance takes an equal share.
    Natural,
    /// The next set takes this percentage, the live set the rest.
    Next(u32),
}

impl Traffic {
    /// The live and the next set's weights (0–999, as ELBv2's weighted forwarding) for this
    /// split. `Natural` gives each healthy instance an equal share; with nothing healthy anywhere
    /// the live set keeps the traffic.
    pub fn weights(self, instances: &[InstanceView]) -> (u32, u32) {
        match self {
            Traffic::Next(p) => (100 - p.min(100), p.min(100)),
            Traffic::Natural => {
                let healthy = |set| {
                    instances
                        .iter()
                        .filter(|v| v.set == set && v.state == State::Healthy)
                        .count() as u32
                };
                let (live, next) = (healthy(Set::Live), healthy(Set::Next));
                let most = live.max(next);
                if most == 0 {
                    (100, 0)
                } else if most > 999 {
                    // Weights top out at 999: scale, keeping any non-empty set above zero.
                    let scale = |n: u32| {
                        if n == 0 {
                            0
                        } else {
                            ((u64::from(n) * 999) / u64::from(most)).max(1) as u32
                        }
                    };
                    (scale(live), scale(next))
                } else {
                    (live, next)
                }
            }
        }
    }
}

impl Plan {
    /// A plan for a strategy without steps.
    pub fn simple(progress: Progress, actions: Vec<Action>, traffic: Traffic) -> Self {
        Self {
            progress,
            actions,
            traffic,
            step: 0,
            reached: false,
        }
    }
}

impl Observed {
    /// Instances of `version` in `set` that are in `state`.
    pub fn count(&self, set: Set, version: &str, state: State) -> u32 {
        self.instances
            .iter()
            .filter(|i| i.set == set && i.version == version && i.state == state)
            .count() as u32
    }

    /// Instances of `version` in `set` that are running or starting, launches included.
    pub fn live(&self, set: Set, version: &str) -> u32 {
        self.instances
            .iter()
            .filter(|i| {
                i.set == set
                    && i.version == version
                    && matches!(i.state, State::Healthy | State::Starting)
            })
            .count() as u32
            + self
                .launches_in_flight
                .iter()
                .filter(|(v, s)| *s == set && v == version)
                .count() as u32
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const V1: &str = "v1";
    pub const V2: &str = "v2";
    pub use State::{Draining as D, Failed as F, Healthy as H, Lost as L, Starting as S};

    pub fn inst(id: &str, version: &str, set: Set, state: State) -> InstanceView {
        InstanceView {
            id: id.into(),
            version: version.into(),
            set,
            state,
            detail: None,
        }
    }

    /// An instance of the old version in the live set.
    pub fn old(id: &str, state: State) -> InstanceView {
        inst(id, V1, Set::Live, state)
    }

    /// An instance of the new version in the next set.
    pub fn new(id: &str, state: State) -> InstanceView {
        inst(id, V2, Set::Next, state)
    }

    pub fn observed(desired: u32, instances: Vec<InstanceView>) -> Observed {
        Observed {
            target: V2.into(),
            previous: V1.into(),
            desired,
            instances,
            deadline_passed: false,
            launches_in_flight: vec![],
            aborted: None,
            step: StepObserved::default(),
            promotion: Promotion::default(),
            lost: 0,
        }
    }

    pub fn launch_next() -> Action {
        Action::Launch {
            version: V2.into(),
            set: Set::Next,
        }
    }

    pub fn launch_live_old() -> Action {
        Action::Launch {
            version: V1.into(),
            set: Set::Live,
        }
    }
}
