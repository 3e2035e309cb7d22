//! Where a stepped deploy (canary) stands between observations: the step, its analysis window,
//! the verdict on it, what the operator asked for, and the steps already behind it. Kept in the
//! store, so that a deploy paused by one process is picked up by another.

use std::time::SystemTime;

use cutover_deploy::{judge, Limits, Plan, Progress, Promote, Sample, StepObserved, Verdict};
use cutover_spec::{CanaryStep, Pause};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// One step behind the deploy, as `history` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based.
    pub step: usize,
    pub what: String,
    pub verdict: String,
    pub at: String,
}

/// What the store keeps of a step between processes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub deployment: u64,
    pub index: usize,
    /// Held by `pause` (as opposed to waiting for `promote`).
    pub paused: bool,
}

/// The analysis window of the current step: since when its traffic has been in place.
#[derive(Debug, Clone, Copy)]
struct Window {
    at: Instant,
    since: SystemTime,
}

#[derive(Debug, Clone, Default)]
pub struct Stepper {
    pub index: usize,
    window: Option<Window>,
    pub verdict: Verdict,
    pub promote: Option<Promote>,
    pub paused: bool,
}

impl Stepper {
    pub fn resumed(saved: &Saved) -> Self {
        Self {
            index: saved.index,
            paused: saved.paused,
            ..Self::default()
        }
    }

    pub fn saved(&self, deployment: u64) -> Saved {
        Saved {
            deployment,
            index: self.index,
            paused: self.paused,
        }
    }

    /// Since when the step's traffic has been in place, for the metrics query.
    pub fn since(&self) -> Option<SystemTime> {
        self.window.map(|w| w.since)
    }

    /// The verdict on what the new side (`next`) and the old one (`live`) did in the window.
    /// No numbers at all is no evidence: inconclusive, never a pass.
    pub fn judge(&mut self, limits: &Limits, next: Option<Sample>, live: Option<Sample>) {
        self.verdict = match next {
            Some(next) => judge(limits, &next, &live.unwrap_or_default()),
            None => Verdict::Inconclusive {
                requests: 0,
                needed: limits.min_requests.max(1),
            },
        };
    }

    /// What the planner is told; `waiting` when the recorded progress is a pause at this step
    /// that only `promote` ends.
    pub fn observed(&self, recorded: &Progress) -> StepObserved {
        StepObserved {
            index: self.index,
            held_for: self.window.map(|w| w.at.elapsed()),
            verdict: self.verdict.clone(),
            promote: self.promote,
            paused: self.paused,
            waiting: !self.paused
                && matches!(recorded, Progress::Paused { step, .. } if *step == self.index),
        }
    }

    /// Takes in the plan: a new step starts a fresh window (and closes the old step's record);
    /// a step whose traffic is in place starts its window. Returns the record of a step that
    /// ended, by moving on or by failing its analysis.
    pub fn after(
        &mut self,
        plan: &Plan,
        steps: &[CanaryStep],
        now: Instant,
        wall: SystemTime,
    ) -> Option<StepRecord> {
        let record = |index: usize, verdict: String| StepRecord {
            step: index + 1,
            what: describe(steps.get(index)),
            verdict,
            at: humantime::format_rfc3339_millis(wall).to_string(),
        };
        if plan.step != self.index {
            let verdict = match self.promote {
                Some(_) => "promoted".to_owned(),
                None => self.verdict.to_string(),
            };
            let r = record(self.index, verdict);
            self.index = plan.step;
            self.window = None;
            self.verdict = Verdict::default();
            self.promote = None;
            return Some(r);
        }
        if plan.reached && self.window.is_none() {
            self.window = Some(Window {
                at: now,
                since: wall,
            });
        }
        if let (Verdict::Fail { .. }, Progress::Aborting { .. }) = (&self.verdict, &plan.progress) {
            let r = record(self.index, self.verdict.to_string());
            // Recorded once: the abort's later plans fail on the same verdict.
            self.verdict = Verdict::Inconclusive {
                requests: 0,
                needed: 0,
            };
            return Some(r);
        }
        None
    }
}

/// A step as `history` names it.
pub fn describe(step: Option<&CanaryStep>) -> String {
    let Some(step) = step else {
        return "full size".into();
    };
    let mut parts = Vec::new();
    if let Some(n) = step.instances {
        parts.push(format!("{n} instance{}", if n == 1 { "" } else { "s" }));
    }
    if let Some(w) = step.weight {
        parts.push(format!("weight {w}%"));
    }
    match step.pause {
        Pause::None => {}
        Pause::For(d) => parts.push(format!("for {}", humantime::format_duration(d))),
        Pause::UntilPromoted => parts.push("until promoted".into()),
    }
    parts.join(", ")
}
