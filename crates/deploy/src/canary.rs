//! Canary: steps of instances or traffic weight for the new version, each judged by analysis
//! against the old version as baseline; a failed verdict aborts, an inconclusive one pauses.

use std::time::Duration;

use cutover_spec::{CanaryStep, Pause};

use crate::analysis::Verdict;
use crate::observed::{Observed, Plan, Progress, Promote, Set, State, Traffic};
use crate::tactics::{abort, capacity_percent, failure, size_next, tend};

#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    pub steps: Vec<CanaryStep>,
    /// How long a step without a pause of its own waits for a verdict before pausing as
    /// inconclusive.
    pub window: Duration,
}

/// What a step asks for: instances of the new version, and its traffic share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// Each instance takes its natural share.
    Natural,
    Percent(u32),
}

/// The instances and share for step `index`; a step that says neither keeps the last one that
/// did, and past the last step the new version takes everything.
fn setup(c: &Canary, index: usize, desired: u32) -> (u32, Goal) {
    if index >= c.steps.len() {
        return (desired, Goal::Percent(100));
    }
    for step in c.steps[..=index].iter().rev() {
        match (step.instances, step.weight) {
            (instances, Some(w)) => {
                // Enough instances to carry the weight's share of the full load.
                let needed = (u64::from(desired) * u64::from(w)).div_ceil(100) as u32;
                let needed = if w > 0 { needed.max(1) } else { 0 };
                return (needed.max(instances.unwrap_or(0)), Goal::Percent(w));
            }
            (Some(n), None) => return (n, Goal::Natural),
            (None, None) => continue,
        }
    }
    (0, Goal::Percent(0))
}

pub fn plan(c: &Canary, o: &Observed) -> Plan {
    if let Some(reason) = failure(o) {
        return abort(o, reason, o.desired, false);
    }
    let s = &o.step;
    if let Verdict::Fail { reason } = &s.verdict {
        let reason = format!("step {} failed analysis: {reason}", s.index + 1);
        return abort(o, reason, o.desired, false);
    }
    let last = c.steps.len();
    let index = match s.promote {
        Some(Promote::Full) => last,
        Some(Promote::Next) => (s.index + 1).min(last),
        None => s.index.min(last),
    };
    let (want, goal) = setup(c, index, o.desired);
    let mut actions = tend(o);
    size_next(o, want, &mut actions);
    let healthy = o.count(Set::Next, &o.target, State::Healthy);
    let capacity = capacity_percent(healthy, o.desired);
    let (traffic, in_place) = match goal {
        Goal::Natural => (Traffic::Natural, healthy >= want),
        // Never more share than the healthy instances can carry: scale up first.
        Goal::Percent(w) => (
            Traffic::Next(w.min(capacity)),
            healthy >= want && capacity >= w,
        ),
    };
    let plan = |progress, step, reached, actions| Plan {
        progress,
        actions,
        traffic,
        step,
        reached,
    };
    if index >= last {
        let done = in_place && actions.is_empty();
        let progress = if done {
            Progress::Done
        } else {
            Progress::Rolling
        };
        return plan(progress, index, in_place, actions);
    }
    // A step that has just begun gets a fresh analysis window from the executor first.
    if index != s.index || !in_place {
        return plan(Progress::Rolling, index, false, actions);
    }
    let paused = |reason: String| Progress::Paused {
        step: index,
        reason,
    };
    if s.paused {
        return plan(
            paused("paused by `cutover pause`".into()),
            index,
            true,
            actions,
        );
    }
    if s.waiting {
        let reason = match &s.verdict {
            Verdict::Inconclusive { .. } if c.steps[index].pause != Pause::UntilPromoted => {
                format!("{}; `cutover promote` to go on", s.verdict)
            }
            _ => "waiting for `cutover promote`".into(),
        };
        return plan(paused(reason), index, true, actions);
    }
    let held = s.held_for.unwrap_or_default();
    let ended = match c.steps[index].pause {
        Pause::UntilPromoted => {
            return plan(
                paused("waiting for `cutover promote`".into()),
                index,
                true,
                actions,
            )
        }
        Pause::For(d) => held >= d,
        // No pause of its own: over as soon as there is a verdict, or at the window's end.
        Pause::None => s.verdict == Verdict::Pass || held >= c.window,
    };
    if !ended {
        return plan(Progress::Rolling, index, true, actions);
    }
    match &s.verdict {
        Verdict::Pass => plan(Progress::Rolling, index + 1, false, actions),
        v => plan(
            paused(format!("{v}; `cutover promote` to go on")),
            index,
            true,
            actions,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::tests::*;
    use crate::observed::{Action, StepObserved};

    fn step(instances: Option<u32>, weight: Option<u32>, pause: Pause) -> CanaryStep {
        CanaryStep {
            instances,
            weight,
            pause,
        }
    }

    fn canary() -> Canary {
        Canary {
            steps: vec![
                step(Some(1), None, Pause::None),
                step(None, Some(50), Pause::For(Duration::from_secs(60))),
                step(None, None, Pause::UntilPromoted),
            ],
            window: Duration::from_secs(600),
        }
    }

    fn at(index: usize, held_secs: Option<u64>, verdict: Verdict) -> StepObserved {
        StepObserved {
            index,
            held_for: held_secs.map(Duration::from_secs),
            verdict,
            ..StepObserved::default()
        }
    }

    const INCONCLUSIVE: Verdict = Verdict::Inconclusive {
        requests: 3,
        needed: 100,
    };

    fn four_old() -> Vec<crate::observed::InstanceView> {
        vec![old("a", H), old("b", H), old("c", H), old("d", H)]
    }

    #[test]
    fn taste_one_node_then_weight_then_wait_for_promote() {
        let c = canary();
        // Step 1: one new instance, natural share; the old set keeps its full size.
        let p = plan(&c, &observed(4, four_old()));
        assert_eq!(p.actions, vec![launch_next()]);
        assert_eq!((p.traffic, p.reached), (Traffic::Natural, false));
        let mut o = observed(4, [four_old(), vec![new("n1", H)]].concat());
        o.step = at(0, None, INCONCLUSIVE);
        let p = plan(&c, &o);
        assert!(p.reached && p.actions.is_empty() && p.progress == Progress::Rolling);
        // A pass ends a step without a pause at once.
        o.step = at(0, Some(5), Verdict::Pass);
        assert_eq!(plan(&c, &o).step, 1);
        // Step 2: 50% of 4 needs 2 instances; until then only the share one can carry.
        o.step = at(1, None, INCONCLUSIVE);
        let p = plan(&c, &o);
        assert_eq!(p.actions, vec![launch_next()]);
        assert_eq!((p.traffic, p.reached), (Traffic::Next(25), false));
        o.instances.push(new("n2", H));
        let p = plan(&c, &o);
        assert_eq!((p.traffic, p.reached), (Traffic::Next(50), true));
        o.step = at(1, Some(30), Verdict::Pass);
        assert_eq!(plan(&c, &o).step, 1, "the pause is a minute");
        o.step = at(1, Some(60), Verdict::Pass);
        assert_eq!(plan(&c, &o).step, 2);
        // Step 3 keeps the 50% and waits for a human.
        o.step = at(2, Some(0), Verdict::Pass);
        let p = plan(&c, &o);
        assert!(matches!(p.progress, Progress::Paused { step: 2, .. }));
        assert_eq!(p.traffic, Traffic::Next(50));
        o.step.promote = Some(Promote::Next);
        let p = plan(&c, &o);
        assert_eq!(p.step, 3);
        assert_eq!(p.actions, vec![launch_next(), launch_next()]);
        // Past the last step: full size, then everything; the old set stays (warm).
        o.step = at(3, None, Verdict::Pass);
        o.instances.extend([new("n3", H), new("n4", H)]);
        let p = plan(&c, &o);
        assert_eq!(
            (p.progress, p.traffic, p.actions),
            (Progress::Done, Traffic::Next(100), vec![])
        );
    }

    #[test]
    fn a_failed_verdict_takes_the_weight_to_zero_in_the_same_plan() {
        let mut o = observed(4, [four_old(), vec![new("n1", H), new("n2", H)]].concat());
        o.step = at(
            1,
            Some(10),
            Verdict::Fail {
                reason: "error rate 20%".into(),
            },
        );
        let p = plan(&canary(), &o);
        assert!(
            matches!(p.progress, Progress::Aborting { ref reason } if reason.contains("step 2") && reason.contains("20%"))
        );
        assert_eq!(p.traffic, Traffic::Next(0));
        assert_eq!(
            p.actions,
            vec![
                Action::Drain { id: "n1".into() },
                Action::Drain { id: "n2".into() }
            ]
        );
    }

    #[test]
    fn inconclusive_at_the_end_of_a_step_pauses_and_stays_paused() {
        let mut o = observed(4, [four_old(), vec![new("n1", H), new("n2", H)]].concat());
        o.step = at(1, Some(60), INCONCLUSIVE);
        let p = plan(&canary(), &o);
        assert!(
            matches!(p.progress, Progress::Paused { step: 1, ref reason } if reason.contains("inconclusive: 3 of 100"))
        );
        // A pass turning up later does not move a paused step on: only promote does.
        o.step = at(1, Some(90), Verdict::Pass);
        o.step.waiting = true;
        assert!(matches!(
            plan(&canary(), &o).progress,
            Progress::Paused { step: 1, .. }
        ));
        o.step.promote = Some(Promote::Full);
        assert_eq!(plan(&canary(), &o).step, 3);
    }

    #[test]
    fn a_step_without_a_pause_waits_for_a_verdict_up_to_the_window() {
        let mut o = observed(4, [four_old(), vec![new("n1", H)]].concat());
        o.step = at(0, Some(599), INCONCLUSIVE);
        assert_eq!(plan(&canary(), &o).progress, Progress::Rolling);
        o.step = at(0, Some(600), INCONCLUSIVE);
        assert!(matches!(
            plan(&canary(), &o).progress,
            Progress::Paused { step: 0, .. }
        ));
    }

    #[test]
    fn operator_pause_holds_even_a_passing_step() {
        let mut o = observed(4, [four_old(), vec![new("n1", H)]].concat());
        o.step = at(0, Some(5), Verdict::Pass);
        o.step.paused = true;
        assert!(matches!(
            plan(&canary(), &o).progress,
            Progress::Paused { step: 0, ref reason } if reason.contains("cutover pause")
        ));
    }
}
