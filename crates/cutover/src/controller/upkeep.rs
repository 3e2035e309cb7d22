//! Each wake-up: the group kept at its size on the current release (warm set expiry, per-slot
//! restarts, the crash loop said once), or the deploy in progress handed to its decider.

use super::*;

impl Controller {
    pub(super) fn step(self: &Arc<Self>) {
        let mut inner = self.lock();
        let views = self.observe(&mut inner);
        // While the release is being fetched nothing may change for the deploy, but the fleet
        // is still kept at its size.
        let preparing = inner.run.as_ref().is_some_and(|r| r.preparing);
        let active = !preparing
            && inner
                .deployment
                .as_ref()
                .is_some_and(|(d, _)| !d.finished());
        let actions = if active {
            self.step_deployment(&mut inner, views)
        } else {
            self.apply_weights(&mut inner, (100, 0));
            let mut actions = Vec::new();
            // The warm set's window has passed: it drains (it has had no traffic since the flip).
            if inner
                .warm
                .as_ref()
                .is_some_and(|w| Instant::now() >= w.until)
            {
                if let Some(w) = self.set_warm(&mut inner, None) {
                    tracing::info!(version = %w.version, "rollback window over; stopping the warm set");
                }
                actions.extend(
                    views
                        .iter()
                        .filter(|v| v.set == Set::Next && v.state != State::Draining)
                        .map(|v| Action::Drain { id: v.id.clone() }),
                );
            }
            let current = inner.current.clone();
            let live = inner.live;
            let launching = inner
                .launching
                .iter()
                .filter(|(_, v, g)| *v == current && *g == live)
                .count() as u32;
            actions.extend(cutover_deploy::steady::plan(
                &current,
                inner.desired,
                &views,
                launching,
            ));
            self.watch_crash_loop(&mut inner);
            actions
        };
        let (launches, others): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::Launch { .. }));
        for action in others {
            self.act(&mut inner, action);
        }
        self.admit(&mut inner, launches);
    }

    /// Carries out the launches a plan asks for whose slots may take one now; the others wait
    /// for a later step, when the plan asks again.
    pub(super) fn admit(self: &Arc<Self>, inner: &mut Inner, launches: Vec<Action>) {
        let mut wanted: BTreeMap<String, Vec<(InstanceId, Set)>> = BTreeMap::new();
        for action in launches {
            if let Action::Launch { version, set } = action {
                let id = InstanceId::new(&version);
                wanted.entry(version).or_default().push((id, set));
            }
        }
        let now = Instant::now();
        for (version, wanted) in wanted {
            let ids = wanted.iter().map(|(id, _)| id.0.clone()).collect();
            let admitted = inner.restarts.admit(&version, ids, now);
            for (id, set) in wanted {
                if admitted.contains(&id.0) {
                    let action = Action::Launch {
                        version: version.clone(),
                        set,
                    };
                    self.record(inner, &action);
                    let group = match set {
                        Set::Live => inner.live,
                        Set::Next => inner.live.other(),
                    };
                    inner.launching.push((id.clone(), version.clone(), group));
                    if let Some(run) = inner.run.as_mut() {
                        run.decider.launched(&id.0);
                    }
                    let this = self.clone();
                    let version = version.clone();
                    tokio::spawn(async move { this.launch(id, version, group).await });
                }
            }
        }
    }

    /// Says so, once and loudly, when the current release starts or stops crash-looping in
    /// most of its slots.
    pub(super) fn watch_crash_loop(&self, inner: &mut Inner) {
        let looping = inner.restarts.crash_loop(&inner.current, inner.desired);
        if looping == inner.crash_loop {
            return;
        }
        match &looping {
            Some(l) => {
                tracing::error!(version = %l.version, slots = l.slots, of = l.of, "{l}");
                self.persist(
                    "event",
                    self.store.event(
                        None,
                        "crash_loop",
                        &serde_json::json!({ "reason": l.to_string() }),
                    ),
                );
            }
            // Only the release that looped can recover; a deploy that moved on says nothing.
            None if inner
                .crash_loop
                .as_ref()
                .is_some_and(|l| l.version == inner.current) =>
            {
                tracing::info!(version = %inner.current, "instances start and stay up again")
            }
            None => {}
        }
        inner.crash_loop = looping;
    }
}
