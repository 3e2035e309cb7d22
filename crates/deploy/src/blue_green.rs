//! Blue-green: the new version's full set beside the old at weight 0, then one atomic flip.

use crate::observed::{Observed, Plan, Progress, Promotion, Set, State, Traffic};
use crate::tactics::{abort, failure, size_next, tend};

/// Brings the next set to full size at weight 0 and flips all traffic to it once every instance
/// is healthy. The old set is left running: the executor keeps it warm for the rollback window.
/// A rollback to a warm set is this same plan, whose first step is the flip.
pub fn plan(o: &Observed) -> Plan {
    if let Some(reason) = failure(o) {
        return abort(o, reason, o.desired, false);
    }
    let mut actions = tend(o);
    size_next(o, o.desired, &mut actions);
    if o.count(Set::Next, &o.target, State::Healthy) >= o.desired {
        match &o.promotion {
            Promotion::Pending => {
                return Plan::simple(Progress::Rolling, actions, Traffic::Next(0))
            }
            Promotion::Failed(why) => {
                let reason = format!("the pre-promotion check failed: {why}");
                return abort(o, reason, o.desired, false);
            }
            Promotion::NotConfigured | Promotion::Passed => {}
        }
        let progress = if actions.is_empty() {
            Progress::Done
        } else {
            Progress::Rolling
        };
        return Plan::simple(progress, actions, Traffic::Next(100));
    }
    Plan::simple(Progress::Rolling, actions, Traffic::Next(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::tests::*;
    use crate::observed::Action;

    #[test]
    fn a_lost_instance_of_either_set_is_replaced_without_an_abort() {
        let p = plan(&observed(
            2,
            vec![old("a", L), old("b", H), new("n1", L), new("n2", H)],
        ));
        assert_eq!(p.progress, Progress::Rolling);
        assert_eq!(
            p.actions,
            vec![
                Action::Remove { id: "a".into() },
                Action::Remove { id: "n1".into() },
                Action::Launch {
                    version: V1.into(),
                    set: Set::Live
                },
                launch_next(),
            ]
        );
        let p = plan(&observed(2, vec![old("a", H), old("b", H), new("n1", F)]));
        assert!(
            matches!(p.progress, Progress::Aborting { .. }),
            "died young: the release's fault"
        );
    }

    #[test]
    fn the_new_set_waits_at_weight_zero_then_flips_in_one_plan() {
        let p = plan(&observed(2, vec![old("a", H), old("b", H)]));
        assert_eq!(p.actions, vec![launch_next(), launch_next()]);
        assert_eq!(p.traffic, Traffic::Next(0));
        let p = plan(&observed(
            2,
            vec![old("a", H), old("b", H), new("n1", H), new("n2", S)],
        ));
        assert_eq!((p.traffic, p.actions.len()), (Traffic::Next(0), 0));
        let p = plan(&observed(
            2,
            vec![old("a", H), old("b", H), new("n1", H), new("n2", H)],
        ));
        assert_eq!(
            (p.progress, p.traffic, p.actions),
            (Progress::Done, Traffic::Next(100), vec![]),
            "the old set is not drained: it stays warm"
        );
    }

    #[test]
    fn the_flip_waits_for_the_pre_promotion_check_and_a_failed_one_aborts() {
        let mut o = observed(
            2,
            vec![old("a", H), old("b", H), new("n1", H), new("n2", H)],
        );
        o.promotion = Promotion::Pending;
        assert_eq!(plan(&o).traffic, Traffic::Next(0));
        o.promotion = Promotion::Passed;
        assert_eq!(plan(&o).traffic, Traffic::Next(100));
        o.promotion = Promotion::Failed("HTTP 500".into());
        let p = plan(&o);
        assert!(
            matches!(p.progress, Progress::Aborting { ref reason } if reason.contains("pre-promotion"))
        );
        assert_eq!(p.traffic, Traffic::Next(0));
    }

    #[test]
    fn a_new_set_that_never_turns_healthy_leaves_the_old_one_serving() {
        let mut o = observed(2, vec![old("a", H), old("b", H), new("n1", S)]);
        o.deadline_passed = true;
        let p = plan(&o);
        assert!(matches!(p.progress, Progress::Aborting { .. }));
        assert_eq!(p.traffic, Traffic::Next(0));
        assert_eq!(p.actions, vec![Action::Remove { id: "n1".into() }]);
    }

    #[test]
    fn the_old_set_is_kept_at_full_size_while_the_new_one_comes_up() {
        let p = plan(&observed(2, vec![old("a", F), old("b", H), new("n1", S)]));
        assert_eq!(
            p.actions,
            vec![
                Action::Remove { id: "a".into() },
                launch_live_old(),
                launch_next()
            ]
        );
    }
}
