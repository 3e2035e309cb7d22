//! A deployment's decisions, free of I/O: from one look at the fleet and the two sides, the
//! plan to carry out next, under the rules every provider shares. Both drivers (the polling one
//! for clouds in the `executor` module, the event-driven local controller) hand it what they see
//! and carry out what it says; it is the only caller of a strategy's planner.
//!
//! What lives here once: the progress deadline (it bounds each new instance's way to serving,
//! not the deploy: a canary step may hold far longer, and its own window bounds it), the bound
//! on an abort, the rule that a rolling deploy runs in the live set alone, the first deploy
//! that has nothing to go back to, "done" meaning the old instances are gone, the count of
//! instances lost after they served, and a canary's steps, verdicts and operator requests.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use cutover_deploy::{
    Action, InstanceView, Limits, Observed, Plan, Progress, Promote, Promotion, Sample, Set, State,
    Strategy, Verdict,
};
use tokio::time::Instant;

use crate::step::{StepRecord, Stepper};

/// What a deploy is held to, from the stack file.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// How long a new instance may take from launch to serving.
    pub progress_deadline: Duration,
    /// How long a drain may take; an abort has a deadline and a drain to finish in.
    pub drain_timeout: Duration,
    /// What a canary step's analysis holds the new side to.
    pub analysis: Limits,
    /// The command that shows the fleet, for a rollback that did not finish.
    pub status_command: &'static str,
}

/// A launch asked for and not yet visible as an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launching {
    pub id: String,
    pub version: String,
    pub set: Set,
}

/// One look at the fleet, as the driver saw it.
#[derive(Debug, Clone, Default)]
pub struct Look {
    pub desired: u32,
    /// Oldest first. A starting instance's `detail` says what it waits for, for the deadline's
    /// message.
    pub instances: Vec<InstanceView>,
    pub launching: Vec<Launching>,
    pub promotion: Promotion,
    /// A launch of the target version that could not start: the deploy gives up with it.
    pub launch_error: Option<String>,
    /// What the next and the live side answered in the current step's window (from
    /// [`Decider::window_since`]); `None` when no window runs.
    pub window: Option<(Option<Sample>, Option<Sample>)>,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub plan: Plan,
    /// The live and the next side's weights for the plan's traffic split.
    pub weights: (u32, u32),
    /// Steps that ended with this decision, by moving on or by failing their analysis.
    pub steps: Vec<StepRecord>,
}

/// The course of one deployment between looks.
#[derive(Debug, Clone)]
pub struct Decider {
    strategy: Strategy,
    target: String,
    previous: String,
    bounds: Bounds,
    /// Why and since when it is being given up.
    aborted: Option<(String, Instant)>,
    step: Stepper,
    /// Instances of the target version lost after they served.
    lost: BTreeSet<String>,
    /// When each instance was launched, or first seen.
    since: HashMap<String, Instant>,
    /// The progress last decided.
    recorded: Progress,
}

impl Decider {
    pub fn new(strategy: Strategy, previous: &str, target: &str, bounds: Bounds) -> Self {
        Self {
            strategy,
            target: target.to_owned(),
            previous: previous.to_owned(),
            bounds,
            aborted: None,
            step: Stepper::default(),
            lost: BTreeSet::new(),
            since: HashMap::new(),
            recorded: Progress::Rolling,
        }
    }

    /// Takes up a deployment from its record: the progress it had and how many steps were
    /// behind it.
    pub fn resumed(mut self, recorded: Progress, steps_done: usize) -> Self {
        match &recorded {
            Progress::Paused { step, .. } => self.step.index = *step,
            Progress::Aborting { reason } => {
                self.aborted = Some((reason.clone(), Instant::now()));
            }
            // Left mid-step by a process that stopped: the steps already judged are behind.
            _ => self.step.index = steps_done,
        }
        self.recorded = recorded;
        self
    }

    pub fn strategy(&self) -> &Strategy {
        &self.strategy
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    pub fn previous(&self) -> &str {
        &self.previous
    }

    /// The current canary step (0-based).
    pub fn step_index(&self) -> usize {
        self.step.index
    }

    pub fn aborted(&self) -> Option<&str> {
        self.aborted.as_ref().map(|(r, _)| r.as_str())
    }

    /// Since when the current step's traffic has been in place: the analysis window the driver
    /// brings numbers for.
    pub fn window_since(&self) -> Option<SystemTime> {
        self.step.since()
    }

    /// An instance the driver launched now: the progress deadline runs from here.
    pub fn launched(&mut self, id: &str) {
        self.since.insert(id.to_owned(), Instant::now());
    }

    /// Gives the deploy up with `reason` (kept if it is already being given up).
    pub fn abort(&mut self, reason: impl Into<String>) {
        self.aborted.get_or_insert((reason.into(), Instant::now()));
    }

    /// `cutover promote`: the next step now, or (`Full`) straight to full size.
    pub fn promote(&mut self, p: Promote) {
        self.step.promote = Some(p);
        self.step.paused = false;
    }

    /// `cutover pause` (true) and `resume` (false).
    pub fn hold(&mut self, paused: bool) {
        self.step.paused = paused;
    }

    /// The plan for what `look` shows.
    pub fn decide(&mut self, look: Look) -> Decision {
        let now = Instant::now();
        let Look {
            desired,
            mut instances,
            launching,
            promotion,
            launch_error,
            window,
        } = look;
        // A deploy being given up is judged no more: its verdict was recorded when it failed.
        if let (Some((next, live)), None) = (window, &self.aborted) {
            if self.step.since().is_some() {
                self.step.judge(&self.bounds.analysis, next, live);
            }
        }
        // A rolling deploy runs in the live set alone: a set kept warm in the other one by an
        // earlier deploy takes no traffic, and goes now.
        let mut expire = Vec::new();
        if !self.strategy.uses_next_set() {
            instances.retain(|v| {
                let warm = v.set == Set::Next;
                if warm && matches!(v.state, State::Healthy | State::Starting) {
                    expire.push(Action::Drain { id: v.id.clone() });
                }
                !warm || v.state == State::Draining
            });
        }
        for v in &instances {
            self.since.entry(v.id.clone()).or_insert(now);
            if v.state == State::Lost && v.version == self.target {
                self.lost.insert(v.id.clone());
            }
        }
        for l in &launching {
            self.since.entry(l.id.clone()).or_insert(now);
        }
        if let Some(e) = launch_error {
            self.abort(format!("{} could not be started: {e}", self.target));
        }
        let deadline = self.bounds.progress_deadline;
        let late = |id: &str| {
            self.since
                .get(id)
                .is_some_and(|at| now.saturating_duration_since(*at) > deadline)
        };
        let deadline_passed = instances
            .iter()
            .any(|v| v.version == self.target && v.state == State::Starting && late(&v.id))
            || launching.iter().any(|l| late(&l.id));
        if deadline_passed && self.aborted.is_none() {
            let waiting: Vec<String> = instances
                .iter()
                .filter(|v| v.version == self.target && v.state == State::Starting)
                .map(|v| {
                    let what = v.detail.as_deref().unwrap_or("waiting to turn healthy");
                    format!("{} {what}", v.id)
                })
                .chain(
                    launching
                        .iter()
                        .filter(|l| late(&l.id))
                        .map(|l| format!("{} still being launched", l.id)),
                )
                .collect();
            let reason = format!(
                "{} did not finish within the progress deadline ({}){}",
                self.target,
                humantime::format_duration(deadline),
                if waiting.is_empty() {
                    String::new()
                } else {
                    format!(": {}", waiting.join("; "))
                }
            );
            self.abort(reason);
        }
        // An abort has its own bound: old instances relaunched within a progress deadline and
        // the new ones drained within a drain timeout, or the deploy ends with the fleet as is.
        let bound = deadline + self.bounds.drain_timeout;
        let unfinished = self
            .aborted
            .as_ref()
            .filter(|(_, at)| now.saturating_duration_since(*at) > bound)
            .map(|(reason, _)| {
                format!(
                    "{reason}; the rollback did not finish within {}: check `{}`",
                    humantime::format_duration(bound),
                    self.bounds.status_command
                )
            });
        if let Some(reason) = unfinished {
            let plan = Plan::simple(
                Progress::RolledBack { reason },
                Vec::new(),
                cutover_deploy::Traffic::Natural,
            );
            return self.decided(plan, &instances);
        }
        let observed = Observed {
            target: self.target.clone(),
            previous: self.previous.clone(),
            desired,
            launches_in_flight: launching
                .iter()
                .map(|l| (l.version.clone(), l.set))
                .collect(),
            instances,
            deadline_passed,
            aborted: self.aborted.as_ref().map(|(r, _)| r.clone()),
            step: self.step.observed(&self.recorded),
            promotion,
            lost: u32::try_from(self.lost.len()).unwrap_or(u32::MAX),
        };
        let mut plan = self.strategy.plan(&observed);
        let mut steps = Vec::new();
        if let Strategy::Canary(c) = &self.strategy {
            steps.extend(self.step.after(&plan, &c.steps, now, SystemTime::now()));
        }
        if self.previous.is_empty() {
            // Nothing to go back to: an abort removes what was launched and stops there.
            if let Progress::Aborting { reason } | Progress::RolledBack { reason } = &plan.progress
            {
                let reason = reason.clone();
                let actions: Vec<Action> = observed
                    .instances
                    .iter()
                    .filter(|v| v.state != State::Draining)
                    .map(|v| Action::Remove { id: v.id.clone() })
                    .collect();
                let progress = if observed.instances.is_empty() && launching.is_empty() {
                    Progress::RolledBack { reason }
                } else {
                    Progress::Aborting { reason }
                };
                plan = Plan::simple(progress, actions, plan.traffic);
            }
        }
        if plan.progress == Progress::Done
            && observed
                .instances
                .iter()
                .any(|v| v.state == State::Draining)
        {
            // Done means the old instances are gone, not merely deregistered.
            plan.progress = Progress::Rolling;
        }
        if let Progress::Aborting { reason } = &plan.progress {
            self.abort(reason.clone());
        }
        if !expire.is_empty() {
            expire.append(&mut plan.actions);
            plan.actions = expire;
        }
        let mut decision = self.decided(plan, &observed.instances);
        decision.steps = steps;
        decision
    }

    fn decided(&mut self, plan: Plan, instances: &[InstanceView]) -> Decision {
        self.recorded = plan.progress.clone();
        // An instance of another version in the next set (a warm set this deploy drains) never
        // takes a share: the next set's traffic is the target version's.
        let counted: Vec<InstanceView> = instances
            .iter()
            .filter(|v| v.set == Set::Live || v.version == self.target)
            .cloned()
            .collect();
        Decision {
            weights: plan.traffic.weights(&counted),
            plan,
            steps: Vec::new(),
        }
    }

    /// The verdict on the current step so far.
    pub fn verdict(&self) -> &Verdict {
        &self.step.verdict
    }
}

#[cfg(test)]
#[path = "decider_tests.rs"]
mod tests;
