//! Steady state between deploys: replace dead instances, keep the group at its desired size.

use crate::observed::{Action, InstanceView, Set, State};

/// Actions that bring `version` back to `desired` instances in the live set; `instances` comes
/// oldest first. A dead instance is replaced in the same plan: whether its slot must first wait
/// out a back-off is the executor's to say ([`crate::restarts`]). The next set, where a previous
/// version may be kept warm for a rollback, is the executor's to expire; only its dead go here.
pub fn plan(
    version: &str,
    desired: u32,
    instances: &[InstanceView],
    launching: u32,
) -> Vec<Action> {
    let mut actions: Vec<Action> = instances
        .iter()
        .filter(|i| matches!(i.state, State::Failed | State::Lost))
        .map(|i| Action::Remove { id: i.id.clone() })
        .collect();
    // Instances of another version only linger after an interrupted deploy: drain them once ours are up.
    let ours: Vec<&InstanceView> = instances
        .iter()
        .filter(|i| {
            i.set == Set::Live
                && i.version == version
                && matches!(i.state, State::Healthy | State::Starting)
        })
        .collect();
    let live = ours.len() as u32 + launching;
    if live < desired {
        for _ in live..desired {
            actions.push(Action::Launch {
                version: version.to_owned(),
                set: Set::Live,
            });
        }
    }
    let healthy = ours.iter().filter(|i| i.state == State::Healthy).count() as u32;
    if healthy >= desired {
        for i in instances.iter().filter(|i| {
            i.set == Set::Live
                && i.version != version
                && matches!(i.state, State::Healthy | State::Starting)
        }) {
            actions.push(Action::Drain { id: i.id.clone() });
        }
    }
    // Surplus of our own (the desired size went down): those still starting go first (they
    // never served), then the newest healthy ones (`instances` comes oldest first), drained.
    let starting: Vec<&&InstanceView> = ours
        .iter()
        .filter(|i| i.state == State::Starting)
        .rev()
        .collect();
    let surplus = (ours.len() as u32).saturating_sub(desired);
    let removed = surplus.min(starting.len() as u32);
    for i in starting.into_iter().take(removed as usize) {
        actions.push(Action::Remove { id: i.id.clone() });
    }
    if healthy >= desired {
        let extra = (surplus - removed).min(healthy - desired);
        for i in ours
            .iter()
            .filter(|i| i.state == State::Healthy)
            .rev()
            .take(extra as usize)
        {
            actions.push(Action::Drain { id: i.id.clone() });
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, version: &str, state: State) -> InstanceView {
        InstanceView {
            id: id.into(),
            version: version.into(),
            set: Set::Live,
            state,
            detail: None,
        }
    }

    #[test]
    fn replaces_the_dead_and_fills_up() {
        let a = plan(
            "v1",
            3,
            &[
                inst("a", "v1", State::Failed),
                inst("b", "v1", State::Healthy),
            ],
            0,
        );
        assert_eq!(
            a,
            vec![
                Action::Remove { id: "a".into() },
                Action::Launch {
                    version: "v1".into(),
                    set: Set::Live
                },
                Action::Launch {
                    version: "v1".into(),
                    set: Set::Live
                }
            ]
        );
        let counted = plan("v1", 2, &[inst("b", "v1", State::Healthy)], 1);
        assert!(counted.is_empty(), "a launch in flight counts");
    }

    #[test]
    fn drains_other_versions_and_surplus_once_healthy() {
        let a = plan(
            "v2",
            1,
            &[
                inst("o", "v1", State::Healthy),
                inst("n1", "v2", State::Healthy),
                inst("n2", "v2", State::Healthy),
            ],
            0,
        );
        assert_eq!(
            a,
            vec![
                Action::Drain { id: "o".into() },
                Action::Drain { id: "n2".into() }
            ]
        );
        let a = plan(
            "v2",
            1,
            &[
                inst("o", "v1", State::Healthy),
                inst("n1", "v2", State::Starting),
            ],
            0,
        );
        assert!(a.is_empty(), "the old one stays until ours is healthy");
    }

    #[test]
    fn scaling_in_removes_starting_ones_first_then_the_newest() {
        let fleet = [
            inst("old", "v1", State::Healthy),
            inst("mid", "v1", State::Healthy),
            inst("new", "v1", State::Healthy),
            inst("booting", "v1", State::Starting),
        ];
        assert_eq!(
            plan("v1", 2, &fleet, 0),
            vec![
                Action::Remove {
                    id: "booting".into()
                },
                Action::Drain { id: "new".into() }
            ]
        );
    }
}
