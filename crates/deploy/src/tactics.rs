//! The moves every strategy plans with: when a deploy gives up, keeping a set at its size,
//! growing the next set, the abort plan, and the share of traffic a set can carry.

use crate::observed::{Action, Observed, Plan, Progress, Set, State, Traffic, LOST_PER_INSTANCE};

/// Why a deploy gives up, or `None` while it may go on.
pub(crate) fn failure(o: &Observed) -> Option<String> {
    if let Some(reason) = &o.aborted {
        return Some(reason.clone());
    }
    if let Some(bad) = o
        .instances
        .iter()
        .find(|i| i.version == o.target && i.state == State::Failed)
    {
        let what = bad
            .detail
            .as_deref()
            .unwrap_or("crashed or failed its health checks");
        return Some(format!(
            "instance {} of {} failed: {what}",
            bad.id, o.target
        ));
    }
    let tolerated = o.desired.max(1).saturating_mul(LOST_PER_INSTANCE);
    if o.lost > tolerated {
        return Some(format!(
            "{} lost {} instances (taken away from outside, or dead after serving), more than {tolerated} for {} desired: it does not stay up",
            o.target, o.lost, o.desired
        ));
    }
    if o.deadline_passed {
        return Some(format!(
            "{} did not become healthy before the progress deadline",
            o.target
        ));
    }
    None
}

/// For strategies with a next set: clears what does not belong and keeps the old version at full
/// size in the live set, so it serves throughout whatever the new set does.
pub(crate) fn tend(o: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    for i in &o.instances {
        let stray = i.set == Set::Next && i.version != o.target;
        match i.state {
            State::Failed if i.version != o.target => {
                actions.push(Action::Remove { id: i.id.clone() })
            }
            State::Lost => actions.push(Action::Remove { id: i.id.clone() }),
            State::Healthy if stray => actions.push(Action::Drain { id: i.id.clone() }),
            State::Starting if stray => actions.push(Action::Remove { id: i.id.clone() }),
            _ => {}
        }
    }
    for _ in o.live(Set::Live, &o.previous)..o.desired {
        actions.push(Action::Launch {
            version: o.previous.clone(),
            set: Set::Live,
        });
    }
    actions
}

/// Launches of the target version in the next set up to `want`, or drains of the newest surplus.
pub(crate) fn size_next(o: &Observed, want: u32, actions: &mut Vec<Action>) {
    let have = o.live(Set::Next, &o.target);
    for _ in have..want {
        actions.push(Action::Launch {
            version: o.target.clone(),
            set: Set::Next,
        });
    }
    if have > want {
        let mut ours: Vec<_> = o
            .instances
            .iter()
            .filter(|i| {
                i.set == Set::Next
                    && i.version == o.target
                    && matches!(i.state, State::Healthy | State::Starting)
            })
            .collect();
        // Starting ones first (they take nothing yet), then the newest.
        ours.sort_by(|a, b| {
            (a.state == State::Healthy)
                .cmp(&(b.state == State::Healthy))
                .then(b.id.cmp(&a.id))
        });
        for i in ours.into_iter().take((have - want) as usize) {
            actions.push(match i.state {
                State::Healthy => Action::Drain { id: i.id.clone() },
                _ => Action::Remove { id: i.id.clone() },
            });
        }
    }
}

/// Gives up: new instances that never served go at once; those serving drain only as far as
/// `floor` healthy instances remain, so the old version takes over capacity before the new one
/// leaves; the previous version is brought back to full size in the live set. With `natural`
/// traffic every healthy instance keeps its share (rolling); otherwise the new set's share is
/// what the old one cannot yet carry, which is 0 when the old set is at full size: a canary that
/// fails analysis loses its traffic in this very plan.
pub(crate) fn abort(o: &Observed, reason: String, floor: u32, natural: bool) -> Plan {
    let mut actions = Vec::new();
    for i in &o.instances {
        let never_served =
            i.version == o.target && matches!(i.state, State::Starting | State::Failed);
        let dead = i.state == State::Lost || (i.version != o.target && i.state == State::Failed);
        if never_served || dead {
            actions.push(Action::Remove { id: i.id.clone() });
        }
    }
    for _ in o.live(Set::Live, &o.previous)..o.desired {
        actions.push(Action::Launch {
            version: o.previous.clone(),
            set: Set::Live,
        });
    }
    let old_healthy = o.count(Set::Live, &o.previous, State::Healthy);
    let mut serving: Vec<&crate::observed::InstanceView> = o
        .instances
        .iter()
        .filter(|i| i.version == o.target && i.state == State::Healthy)
        .collect();
    serving.sort_by(|a, b| a.id.cmp(&b.id));
    let mut available = old_healthy + serving.len() as u32;
    for i in serving {
        if available <= floor {
            break;
        }
        available -= 1;
        actions.push(Action::Drain { id: i.id.clone() });
    }
    let restored = old_healthy >= o.desired;
    let new_gone = !o.instances.iter().any(|i| i.version == o.target);
    let progress = if restored && new_gone && actions.is_empty() {
        Progress::RolledBack { reason }
    } else {
        Progress::Aborting { reason }
    };
    let traffic = if natural {
        Traffic::Natural
    } else {
        // The new set takes what the old one cannot yet carry, but never more than its own
        // healthy instances can: with an old instance lost meanwhile, the old set carries the
        // rest as best it can.
        let new_healthy = o.count(Set::Next, &o.target, State::Healthy);
        let short = 100 - capacity_percent(old_healthy, o.desired);
        Traffic::Next(match (old_healthy, new_healthy) {
            (_, 0) => 0,
            (0, _) => 100,
            _ => short.min(capacity_percent(new_healthy, o.desired)),
        })
    };
    Plan::simple(progress, actions, traffic)
}

/// The share of traffic a set of `healthy` instances can carry when `desired` carry all of it.
pub(crate) fn capacity_percent(healthy: u32, desired: u32) -> u32 {
    if desired == 0 {
        return 100;
    }
    ((u64::from(healthy) * 100) / u64::from(desired)).min(100) as u32
}
