//! The rolling strategy: replace instances a batch at a time within max_surge and max_unavailable.

use crate::observed::{Action, InstanceView, Observed, Plan, Progress, Set, State, Traffic};
use crate::tactics::{abort, failure};

/// Rolling settings from the stack file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rolling {
    /// Instances above `desired` that may run during the deploy.
    pub max_surge: u32,
    /// Instances below `desired` that may be out of service during the deploy.
    pub max_unavailable: u32,
}

/// The next actions. Called again after every change the executor observes; it is idempotent:
/// the same observation gives the same plan.
pub fn plan(settings: Rolling, o: &Observed) -> Plan {
    match failure(o) {
        Some(reason) => {
            let floor = o.desired.saturating_sub(settings.max_unavailable);
            abort(o, reason, floor, true)
        }
        None => roll(settings, o),
    }
}

fn count(o: &Observed, version: &str, state: State) -> u32 {
    o.instances
        .iter()
        .filter(|i| i.version == version && i.state == state)
        .count() as u32
}

fn launching(o: &Observed, version: &str) -> u32 {
    o.launches_in_flight
        .iter()
        .filter(|(v, _)| v == version)
        .count() as u32
}

fn roll(s: Rolling, o: &Observed) -> Plan {
    let mut actions = Vec::new();
    let d = o.desired;
    // Dead instances take no traffic: clear them away, they free capacity. A lost one of the
    // new version is replaced like any other shortfall.
    for i in o
        .instances
        .iter()
        .filter(|i| i.state == State::Lost || (i.version != o.target && i.state == State::Failed))
    {
        actions.push(Action::Remove { id: i.id.clone() });
    }
    let new_healthy = count(o, &o.target, State::Healthy);
    let new_starting = count(o, &o.target, State::Starting) + launching(o, &o.target);
    let old_live: Vec<&InstanceView> = o
        .instances
        .iter()
        .filter(|i| i.version != o.target && matches!(i.state, State::Healthy | State::Starting))
        .collect();
    let old_healthy = old_live
        .iter()
        .filter(|i| i.state == State::Healthy)
        .count() as u32;
    let draining = o
        .instances
        .iter()
        .filter(|i| i.state == State::Draining)
        .count() as u32;

    if new_healthy >= d && old_live.is_empty() && draining == 0 {
        // Surplus new instances (a surge that overshot) are drained too.
        let surplus: Vec<Action> = o
            .instances
            .iter()
            .filter(|i| i.version == o.target && i.state == State::Healthy)
            .skip(d as usize)
            .map(|i| Action::Drain { id: i.id.clone() })
            .collect();
        if surplus.is_empty() && actions.is_empty() {
            return Plan::simple(Progress::Done, actions, Traffic::Natural);
        }
        actions.extend(surplus);
        return Plan::simple(Progress::Rolling, actions, Traffic::Natural);
    }

    // Launch while below the surge ceiling and short of the new version's target count.
    let running = new_healthy + new_starting + old_live.len() as u32;
    let ceiling = d + s.max_surge;
    let want_new = d.saturating_sub(new_healthy + new_starting);
    let room = ceiling.saturating_sub(running + draining);
    for _ in 0..want_new.min(room) {
        actions.push(Action::Launch {
            version: o.target.clone(),
            set: Set::Live,
        });
    }

    // Drain old instances while the healthy count stays at or above desired - max_unavailable.
    let floor = d.saturating_sub(s.max_unavailable);
    let mut available = new_healthy + old_healthy;
    // Starting old instances (never healthy) go first: they take no traffic yet.
    let mut old_sorted = old_live.clone();
    old_sorted.sort_by_key(|i| (i.state == State::Healthy, i.id.clone()));
    for old in old_sorted {
        let costs = u32::from(old.state == State::Healthy);
        if available.saturating_sub(costs) < floor {
            break;
        }
        available -= costs;
        actions.push(Action::Drain { id: old.id.clone() });
    }
    Plan::simple(Progress::Rolling, actions, Traffic::Natural)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::observed::tests::{V1, V2};

    fn inst(id: &str, version: &str, state: State) -> InstanceView {
        crate::observed::tests::inst(id, version, Set::Live, state)
    }

    use crate::observed::tests::observed;

    fn launch(v: &str) -> Action {
        Action::Launch {
            version: v.into(),
            set: Set::Live,
        }
    }
    fn drain(id: &str) -> Action {
        Action::Drain { id: id.into() }
    }
    fn remove(id: &str) -> Action {
        Action::Remove { id: id.into() }
    }

    use State::{Draining as D, Failed as F, Healthy as H, Starting as S};

    const SURGE: Rolling = Rolling {
        max_surge: 1,
        max_unavailable: 0,
    };

    /// Each row: the instances seen, and the plan expected.
    #[test]
    fn surge_one_unavailable_zero_step_by_step() {
        let rows: Vec<(Vec<InstanceView>, Vec<Action>, Progress)> = vec![
            // Start: one new instance, nothing drained while it is not healthy.
            (
                vec![inst("a", V1, H), inst("b", V1, H), inst("c", V1, H)],
                vec![launch(V2)],
                Progress::Rolling,
            ),
            (
                vec![
                    inst("a", V1, H),
                    inst("b", V1, H),
                    inst("c", V1, H),
                    inst("n1", V2, S),
                ],
                vec![],
                Progress::Rolling,
            ),
            // New one healthy: one old one drains; no launch while four processes run.
            (
                vec![
                    inst("a", V1, H),
                    inst("b", V1, H),
                    inst("c", V1, H),
                    inst("n1", V2, H),
                ],
                vec![drain("a")],
                Progress::Rolling,
            ),
            (
                vec![
                    inst("a", V1, D),
                    inst("b", V1, H),
                    inst("c", V1, H),
                    inst("n1", V2, H),
                ],
                vec![],
                Progress::Rolling,
            ),
            // Drained and stopped: room for the next.
            (
                vec![inst("b", V1, H), inst("c", V1, H), inst("n1", V2, H)],
                vec![launch(V2)],
                Progress::Rolling,
            ),
            (
                vec![
                    inst("b", V1, H),
                    inst("c", V1, H),
                    inst("n1", V2, H),
                    inst("n2", V2, H),
                    inst("n3", V2, H),
                ],
                vec![drain("b"), drain("c")],
                Progress::Rolling,
            ),
            (
                vec![inst("n1", V2, H), inst("n2", V2, H), inst("n3", V2, H)],
                vec![],
                Progress::Done,
            ),
        ];
        for (i, (instances, actions, progress)) in rows.into_iter().enumerate() {
            let p = plan(SURGE, &observed(3, instances));
            assert_eq!((p.actions, p.progress), (actions, progress), "row {i}");
        }
    }

    #[test]
    fn surge_zero_unavailable_one_drains_first() {
        let s = Rolling {
            max_surge: 0,
            max_unavailable: 1,
        };
        let p = plan(s, &observed(2, vec![inst("a", V1, H), inst("b", V1, H)]));
        assert_eq!(p.actions, vec![drain("a")]);
        let p = plan(s, &observed(2, vec![inst("a", V1, D), inst("b", V1, H)]));
        assert_eq!(
            p.actions,
            vec![],
            "a draining instance still counts against the ceiling"
        );
        let p = plan(s, &observed(2, vec![inst("b", V1, H)]));
        assert_eq!(p.actions, vec![launch(V2)]);
        let p = plan(s, &observed(2, vec![inst("b", V1, H), inst("n1", V2, S)]));
        assert_eq!(
            p.actions,
            vec![],
            "b is the last healthy one: it stays until n1 is healthy"
        );
        let p = plan(s, &observed(2, vec![inst("b", V1, H), inst("n1", V2, H)]));
        assert_eq!(p.actions, vec![drain("b")]);
    }

    #[test]
    fn launches_in_flight_are_not_asked_for_twice() {
        let mut o = observed(2, vec![inst("a", V1, H), inst("b", V1, H)]);
        o.launches_in_flight = vec![(V2.into(), Set::Live)];
        assert_eq!(plan(SURGE, &o).actions, vec![]);
    }

    #[test]
    fn a_failed_new_instance_aborts_and_restores_the_old_version() {
        let o = observed(
            3,
            vec![
                inst("b", V1, H),
                inst("c", V1, H),
                inst("n1", V2, H),
                inst("n2", V2, F),
            ],
        );
        let p = plan(SURGE, &o);
        assert!(
            matches!(p.progress, Progress::Aborting { ref reason } if reason.contains("n2")),
            "{p:?}"
        );
        // n1 keeps serving until an old replacement is healthy: three healthy is the floor.
        assert_eq!(p.actions, vec![remove("n2"), launch(V1)]);
        let o = observed(
            3,
            vec![
                inst("b", V1, H),
                inst("c", V1, H),
                inst("r", V1, H),
                inst("n1", V2, H),
            ],
        );
        let mut o = o;
        o.aborted = Some("n2 failed".into());
        assert_eq!(plan(SURGE, &o).actions, vec![drain("n1")]);
        // Old version back at full size, new ones gone: rolled back.
        let mut o = observed(
            3,
            vec![inst("b", V1, H), inst("c", V1, H), inst("r", V1, H)],
        );
        o.deadline_passed = true;
        let p = plan(SURGE, &o);
        assert!(matches!(p.progress, Progress::RolledBack { .. }), "{p:?}");
        assert!(p.actions.is_empty());
    }

    #[test]
    fn an_abort_stays_an_abort_once_the_failed_instance_is_gone() {
        let mut o = observed(2, vec![inst("a", V1, H), inst("b", V1, H)]);
        o.aborted = Some("n1 failed".into());
        let p = plan(SURGE, &o);
        assert_eq!(
            p.progress,
            Progress::RolledBack {
                reason: "n1 failed".into()
            }
        );
        assert!(p.actions.is_empty(), "no new launch of the failed version");
    }

    #[test]
    fn the_progress_deadline_aborts_a_slow_start() {
        let mut o = observed(
            2,
            vec![inst("a", V1, H), inst("b", V1, H), inst("n1", V2, S)],
        );
        o.deadline_passed = true;
        let p = plan(SURGE, &o);
        assert!(
            matches!(p.progress, Progress::Aborting { ref reason } if reason.contains("deadline"))
        );
        assert_eq!(p.actions, vec![remove("n1")]);
    }

    #[test]
    fn a_new_instance_lost_after_it_served_is_replaced_and_the_deploy_goes_on() {
        use State::Lost as L;
        let o = observed(
            2,
            vec![inst("a", V1, H), inst("n1", V2, L), inst("n2", V2, H)],
        );
        let p = plan(SURGE, &o);
        assert_eq!(p.progress, Progress::Rolling, "{p:?}");
        assert_eq!(p.actions, vec![remove("n1"), launch(V2)]);
        // An old one lost the same way is cleared away too; nothing aborts.
        let o = observed(2, vec![inst("a", V1, L), inst("b", V1, H)]);
        let p = plan(SURGE, &o);
        assert_eq!(p.progress, Progress::Rolling);
        assert_eq!(p.actions[0], remove("a"));
    }

    #[test]
    fn dead_old_instances_are_cleared_away() {
        // A dead process takes no room under the surge ceiling: two launches fit beside b.
        let p = plan(
            SURGE,
            &observed(2, vec![inst("a", V1, F), inst("b", V1, H)]),
        );
        assert_eq!(p.actions, vec![remove("a"), launch(V2), launch(V2)]);
    }

    #[test]
    fn invariants_hold_at_every_step_of_a_simulated_rollout() {
        for desired in 1..=6u32 {
            for surge in 0..=3u32 {
                for unavailable in 0..=3u32 {
                    if surge == 0 && unavailable == 0 || unavailable > desired {
                        continue;
                    }
                    simulate(
                        desired,
                        Rolling {
                            max_surge: surge,
                            max_unavailable: unavailable,
                        },
                    );
                }
            }
        }
    }

    /// Carries out plans in a toy world where a launch becomes starting, then healthy, and a
    /// drain completes one step later; checks the surge ceiling and availability floor throughout.
    fn simulate(desired: u32, s: Rolling) {
        let mut instances: Vec<InstanceView> = (0..desired)
            .map(|i| inst(&format!("o{i}"), V1, H))
            .collect();
        let mut next = 0;
        for step in 0..200 {
            let live = instances.len() as u32;
            let healthy = instances.iter().filter(|i| i.state == H).count() as u32;
            assert!(
                live <= desired + s.max_surge,
                "d={desired} {s:?} step {step}: {live} processes"
            );
            assert!(
                healthy >= desired - s.max_unavailable,
                "d={desired} {s:?} step {step}: only {healthy} healthy"
            );
            // Time passes: starting ones turn healthy, draining ones finish.
            instances.retain(|i| i.state != D);
            for i in instances.iter_mut().filter(|i| i.state == S) {
                i.state = H;
            }
            let p = plan(s, &observed(desired, instances.clone()));
            if p.progress == Progress::Done {
                assert!(instances.iter().all(|i| i.version == V2 && i.state == H));
                assert_eq!(instances.len() as u32, desired);
                return;
            }
            for a in p.actions {
                match a {
                    Action::Launch { version, .. } => {
                        next += 1;
                        instances.push(inst(&format!("n{next}"), &version, S));
                    }
                    Action::Drain { id } | Action::Remove { id } => {
                        if let Some(i) = instances.iter_mut().find(|i| i.id == id) {
                            i.state = D;
                        }
                    }
                }
            }
        }
        panic!("d={desired} {s:?}: no progress after 200 steps");
    }
}
