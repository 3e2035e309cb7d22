//! Replace-group: a complete new set beside the old; when all are healthy, traffic moves to it
//! and the old set drains and stops. If the new set never turns healthy, the old one is untouched.

use crate::observed::{Action, Observed, Plan, Progress, Set, State, Traffic};
use crate::tactics::{abort, failure, size_next, tend};

pub fn plan(o: &Observed) -> Plan {
    if let Some(reason) = failure(o) {
        return abort(o, reason, o.desired, false);
    }
    if o.count(Set::Next, &o.target, State::Healthy) < o.desired {
        let mut actions = tend(o);
        size_next(o, o.desired, &mut actions);
        return Plan::simple(Progress::Rolling, actions, Traffic::Next(0));
    }
    // Everything new is healthy: it takes all traffic, and the old set drains.
    let mut actions = Vec::new();
    size_next(o, o.desired, &mut actions);
    for i in &o.instances {
        if i.version == o.target {
            if i.state == State::Lost {
                actions.push(Action::Remove { id: i.id.clone() });
            }
            continue;
        }
        match i.state {
            State::Healthy => actions.push(Action::Drain { id: i.id.clone() }),
            State::Starting | State::Failed | State::Lost => {
                actions.push(Action::Remove { id: i.id.clone() })
            }
            State::Draining => {}
        }
    }
    let old_gone = o.instances.iter().all(|i| i.version == o.target);
    let progress = if old_gone && actions.is_empty() {
        Progress::Done
    } else {
        Progress::Rolling
    };
    Plan::simple(progress, actions, Traffic::Next(100))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::tests::*;

    #[test]
    fn the_old_set_drains_only_once_the_whole_new_set_is_healthy() {
        let p = plan(&observed(
            2,
            vec![old("a", H), old("b", H), new("n1", H), new("n2", S)],
        ));
        assert_eq!((p.traffic, p.actions), (Traffic::Next(0), vec![]));
        let p = plan(&observed(
            2,
            vec![old("a", H), old("b", H), new("n1", H), new("n2", H)],
        ));
        assert_eq!(p.traffic, Traffic::Next(100));
        assert_eq!(
            p.actions,
            vec![
                Action::Drain { id: "a".into() },
                Action::Drain { id: "b".into() }
            ]
        );
        let p = plan(&observed(2, vec![new("n1", H), new("n2", H)]));
        assert_eq!(p.progress, Progress::Done);
    }

    #[test]
    fn a_failed_new_set_is_removed_and_the_old_one_never_touched() {
        let p = plan(&observed(
            2,
            vec![old("a", H), old("b", H), new("n1", H), new("n2", F)],
        ));
        assert!(matches!(p.progress, Progress::Aborting { ref reason } if reason.contains("n2")));
        assert_eq!(
            p.actions,
            vec![
                Action::Remove { id: "n2".into() },
                Action::Drain { id: "n1".into() }
            ]
        );
        assert_eq!(p.traffic, Traffic::Next(0));
    }

    #[test]
    fn a_new_instance_failing_after_the_switch_keeps_the_rest_serving_until_the_old_return() {
        let o = observed(
            2,
            vec![old("a", D), old("b", D), new("n1", H), new("n2", F)],
        );
        let p = plan(&o);
        assert!(matches!(p.progress, Progress::Aborting { .. }));
        // Nothing old is healthy: the new set keeps all traffic, n1 keeps serving.
        assert_eq!(p.traffic, Traffic::Next(100));
        assert!(!p.actions.contains(&Action::Drain { id: "n1".into() }));
    }
}
