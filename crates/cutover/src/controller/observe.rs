//! What the controller sees: instance exits as they happen, and each instance's state for the
//! planners (a death told apart from a failure, the slot's back-off told).

use super::*;

impl Controller {
    pub(super) fn on_exit(&self, exit: Exit) {
        if exit.requested {
            return;
        }
        let mut inner = self.lock();
        // Recorded even for an instance not yet tracked: a process that exits at once can beat
        // its own launch task to the lock, and must still count as failed when it is tracked.
        {
            let how = match (exit.code, exit.signal) {
                _ if exit.port_taken => {
                    "exited: another process took its port before it could listen".to_owned()
                }
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "exited".to_owned(),
            };
            tracing::warn!(instance = %exit.id, code = ?exit.code, signal = ?exit.signal, ran_for_ms = exit.ran_for_ms, "instance exited; replacing");
            let ending = Ending::of(&exit);
            inner
                .exited
                .insert(exit.id.clone(), (how, Instant::now(), ending));
        }
    }

    /// What the planners see: each tracked instance with its state.
    pub(super) fn observe(&self, inner: &mut Inner) -> Vec<InstanceView> {
        let health: BTreeMap<(String, String), (TargetState, Option<Reason>)> = self
            .plane
            .status()
            .into_iter()
            .filter(|g| Side::parse(&g.name).is_some())
            .flat_map(|g| {
                let name = g.name;
                g.targets
                    .into_iter()
                    .map(move |t| ((name.clone(), t.target), (t.state, t.reason)))
            })
            .collect();
        let live = inner.live;
        let now = Instant::now();
        let Inner {
            instances,
            exited,
            draining,
            restarts,
            ..
        } = inner;
        let policy = restarts.policy();
        let mut views = Vec::new();
        for (id, t) in instances.iter_mut() {
            let h = health.get(&(t.group.name().to_owned(), t.instance.target()));
            if matches!(h, Some((TargetState::Healthy, _))) && t.healthy_at.is_none() {
                t.healthy_at = Some(now);
            }
            // Dead: what its release does if it died young, what befell it otherwise.
            let dead = |at: Instant| match t.ended {
                Some(end) => end,
                None if policy.early(t.healthy_at, at) => State::Failed,
                None => State::Lost,
            };
            let mut detail = None;
            let mut killed_young = false;
            let state = if draining.contains(id) {
                State::Draining
            } else if let Some((how, at, ending)) = exited.get(id) {
                detail = Some(how.clone());
                match ending {
                    // A stolen port is no sign of a broken release: replaced at once, uncounted.
                    Ending::PortTaken => t.ended.unwrap_or(State::Lost),
                    // SIGKILL comes from outside (the OOM killer, an operator, a script), never
                    // from the release's own code: the instance is lost, not failed, whenever it
                    // dies, so one such kill never aborts a deploy. Its slot still backs off if
                    // it died young (below), and the deploy's loss bound still holds.
                    Ending::Killed => {
                        killed_young = policy.early(t.healthy_at, *at);
                        t.ended.unwrap_or(State::Lost)
                    }
                    Ending::Own => dead(*at),
                }
            } else {
                match h {
                    Some((TargetState::Healthy, _)) => State::Healthy,
                    // It answers, and says it is not well; or it was well and no longer is.
                    Some((TargetState::Unhealthy, reason))
                        if t.healthy_at.is_some()
                            || *reason == Some(Reason::ResponseCodeMismatch) =>
                    {
                        detail = Some(format!(
                            "unhealthy, {}",
                            reason.unwrap_or(Reason::FailedHealthChecks).as_str()
                        ));
                        dead(now)
                    }
                    // Still coming up: refusing connections while starting is not a failure
                    // until the progress deadline says so.
                    _ => {
                        detail = Some(match h.and_then(|(_, r)| *r) {
                            Some(r) => format!("waiting to turn healthy ({})", r.as_str()),
                            None => "waiting to turn healthy".to_owned(),
                        });
                        State::Starting
                    }
                }
            };
            match state {
                State::Failed | State::Lost if t.ended.is_none() => {
                    t.ended = Some(state);
                    let end = if state == State::Failed || killed_young {
                        End::Early
                    } else {
                        End::Lost
                    };
                    restarts.ended(&id.0, end, now);
                }
                State::Healthy if !t.settled && !policy.early(t.healthy_at, now) => {
                    t.settled = true;
                    restarts.settled(&id.0);
                }
                _ => {}
            }
            views.push((
                t.launched,
                InstanceView {
                    id: id.0.clone(),
                    version: t.instance.version.clone(),
                    set: if t.group == live {
                        Set::Live
                    } else {
                        Set::Next
                    },
                    state,
                    detail,
                },
            ));
        }
        // Oldest first: where a planner must choose, the newest go first.
        views.sort_by_key(|(launched, v)| (*launched, v.id.clone()));
        views.into_iter().map(|(_, v)| v).collect()
    }
}
