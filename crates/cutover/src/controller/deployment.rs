//! The deployment in progress on one host: begun, prepared, decided by the shared
//! [`cutover_rollout::Decider`] from what the controller sees, steered by the operator, rolled
//! back to the warm set by a traffic flip or by a deploy of the release before.

use super::*;

impl Controller {
    /// One planner step of the deployment in progress: observe, judge, plan, route, record.
    pub(super) fn step_deployment(
        self: &Arc<Self>,
        inner: &mut Inner,
        views: Vec<InstanceView>,
    ) -> Vec<Action> {
        let Some((deployment, _)) = inner.deployment.clone() else {
            return Vec::new();
        };
        let live = inner.live;
        let mut run = match inner.run.take() {
            Some(run) => run,
            // Taken up from the store by a restarted daemon: it rolls back.
            None => self.run_for(&deployment, self.rolling()),
        };
        let window = match &run.window {
            Some((live_then, next_then)) if run.decider.window_since().is_some() => {
                let now_live = self.plane.group_metrics(live.name()).unwrap_or_default();
                let now_next = self
                    .plane
                    .group_metrics(live.other().name())
                    .unwrap_or_default();
                Some((
                    Some(sample(&now_next.since(next_then))),
                    Some(sample(&now_live.since(live_then))),
                ))
            }
            _ => None,
        };
        // Blue-green's check starts once the whole new set is healthy, and only once.
        if run.check == Some(Check::NotStarted)
            && views
                .iter()
                .filter(|v| v.set == Set::Next && v.version == deployment.to)
                .filter(|v| v.state == State::Healthy)
                .count() as u32
                >= inner.desired
        {
            if let Some(addr) = self.preview.get().copied() {
                run.check = Some(Check::Running);
                let this = self.clone();
                let id = deployment.id;
                tokio::spawn(async move {
                    let result = crate::preview::check(&format!("http://{addr}/")).await;
                    this.checked(id, result);
                });
            }
        }
        let promotion = match &run.check {
            None => Promotion::NotConfigured,
            Some(Check::NotStarted | Check::Running) => Promotion::Pending,
            Some(Check::Done(p)) => p.clone(),
        };
        let look = Look {
            desired: inner.desired,
            instances: views,
            launching: inner
                .launching
                .iter()
                .map(|(id, version, group)| Launching {
                    id: id.0.clone(),
                    version: version.clone(),
                    set: if *group == live { Set::Live } else { Set::Next },
                })
                .collect(),
            promotion,
            launch_error: inner.launch_error.clone(),
            window,
        };
        let step = run.decider.step_index();
        let decision = run.decider.decide(look);
        let plan = decision.plan;
        if run.decider.step_index() != step {
            // A new step: its capacity goes in at once, and its window starts when it is.
            self.wake.notify_one();
        }
        match (run.decider.window_since(), &run.window) {
            (None, _) => run.window = None,
            (Some(_), None) => {
                run.window = Some((
                    self.plane.group_metrics(live.name()).unwrap_or_default(),
                    self.plane
                        .group_metrics(live.other().name())
                        .unwrap_or_default(),
                ))
            }
            (Some(_), Some(_)) => {}
        }
        let records = decision.steps;
        let uses_next = run.decider.strategy().uses_next_set();
        let keeps_warm = run.decider.strategy().keeps_previous_warm();
        inner.run = Some(run);
        self.apply_weights(inner, decision.weights);

        let finished = matches!(plan.progress, Progress::Done | Progress::RolledBack { .. });
        let mut changed = None;
        if let Some((d, started)) = inner.deployment.as_mut() {
            for record in records {
                d.steps.push(record);
                changed = Some(d.clone());
            }
            if d.progress != plan.progress {
                tracing::info!(deployment = d.id, progress = ?plan.progress, "deployment progress");
                d.progress = plan.progress.clone();
                if finished {
                    d.finished_at = Some(now_rfc3339());
                    d.duration_ms =
                        Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
                }
                changed = Some(d.clone());
            }
        }
        if let Some(d) = &changed {
            self.save(d);
            self.persist(
                "event",
                self.store
                    .event(Some(d.id), "progress", &serde_json::json!(d.progress)),
            );
        }
        if finished {
            if let Some((d, _)) = inner.deployment.clone() {
                if d.progress == Progress::Done {
                    inner.current = d.to.clone();
                    self.persist("current release", self.store.set_current_release(&d.to));
                    if uses_next {
                        // The new set's group is the live one now; weights stay as they are.
                        inner.live = inner.live.other();
                        self.persist(
                            "live group",
                            self.store.set_meta(LIVE_KEY, inner.live.name()),
                        );
                        self.plane.set_preview(inner.live.other());
                        inner.weights = (inner.weights.1, inner.weights.0);
                    }
                    if keeps_warm {
                        let warm = Warm {
                            version: d.from.clone(),
                            until: Instant::now() + self.spec.deploy.rollback_window,
                        };
                        self.set_warm(inner, Some(warm));
                    }
                }
                inner.launch_error = None;
                inner.run = None;
                // Slots of versions that will not be launched again are forgotten.
                let warm = inner.warm.as_ref().map(|w| w.version.clone());
                let current = inner.current.clone();
                let keep: Vec<&str> = [Some(current.as_str()), warm.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                inner.restarts.retain(&keep);
                inner.history.push(d);
                self.prune(inner);
            }
        }
        plan.actions
    }

    /// Removes unpacked releases no rollback will ask for: all but the current one, the warm
    /// one, and those of the last three successful deployments.
    pub(super) fn prune(&self, inner: &Inner) {
        let Some(releases) = &self.releases else {
            return;
        };
        let mut keep: Vec<&str> = vec![inner.current.as_str()];
        keep.extend(inner.warm.as_ref().map(|w| w.version.as_str()));
        for d in inner
            .history
            .iter()
            .rev()
            .filter(|d| d.progress == Progress::Done)
            .take(3)
        {
            keep.extend([d.from.as_str(), d.to.as_str()]);
        }
        releases.prune(&keep);
    }

    /// The strategy called `name`, or the stack file's, with the stack file's settings.
    pub(super) fn strategy(&self, name: Option<&str>) -> Result<Strategy, DeployError> {
        use cutover_spec::Strategy as Named;
        let d = &self.spec.deploy;
        let named = match name {
            None => d.strategy,
            Some(n) => Named::parse(n).ok_or_else(|| {
                let names: Vec<&str> = Named::ALL.iter().map(|(_, n)| *n).collect();
                DeployError::BadStrategy(n.to_owned(), names.join(", "))
            })?,
        };
        Ok(match named {
            Named::Rolling => self.rolling(),
            Named::ReplaceGroup => Strategy::ReplaceGroup,
            Named::BlueGreen => Strategy::BlueGreen,
            Named::Canary if d.steps.is_empty() => {
                return Err(DeployError::BadCommand(
                    "a canary needs steps: deploy.steps in the stack file is empty".into(),
                ))
            }
            Named::Canary => Strategy::Canary(Canary {
                steps: d.steps.clone(),
                window: d.progress_deadline,
            }),
        })
    }

    pub(super) fn rolling(&self) -> Strategy {
        Strategy::Rolling(Rolling {
            max_surge: self.spec.deploy.max_surge,
            max_unavailable: self.spec.deploy.max_unavailable,
        })
    }

    /// The course of deployment `d` with `strategy`, held to the stack file's bounds; one
    /// recorded as aborting goes on aborting.
    pub(super) fn run_for(&self, d: &Deployment, strategy: Strategy) -> Run {
        let deploy = &self.spec.deploy;
        let bounds = Bounds {
            progress_deadline: deploy.progress_deadline,
            drain_timeout: deploy.drain_timeout,
            analysis: deploy.analysis.clone(),
            status_command: "cutover status",
        };
        let mut decider = Decider::new(strategy, &d.from, &d.to, bounds);
        if let Progress::Aborting { reason } = &d.progress {
            decider.abort(reason.clone());
        }
        Run::new(decider)
    }

    /// Starts a deploy to `version` with the named strategy (default: the stack file's),
    /// optionally with its own command template.
    pub fn start_deploy(
        self: &Arc<Self>,
        version: &str,
        command: Option<String>,
        strategy: Option<&str>,
    ) -> Result<Deployment, DeployError> {
        let strategy = self.strategy(strategy)?;
        self.begin(version, command, strategy, false)
    }

    pub(super) fn begin(
        self: &Arc<Self>,
        version: &str,
        command: Option<String>,
        strategy: Strategy,
        onto_warm: bool,
    ) -> Result<Deployment, DeployError> {
        cutover_spec::version::check(version).map_err(DeployError::BadVersion)?;
        if let Some(c) = &command {
            cutover_fleet::command::expand(c, 1, version, "i")
                .map_err(|e| DeployError::BadCommand(e.to_string()))?;
        }
        let mut inner = self.lock();
        if let Some((d, _)) = inner.deployment.as_ref().filter(|(d, _)| !d.finished()) {
            return Err(DeployError::InProgress(d.id, d.to.clone()));
        }
        if inner.current == version {
            return Err(DeployError::Current(version.to_owned()));
        }
        if !onto_warm {
            // The other group is needed for the new version: a warm previous set gives way.
            if let Some(w) = self.set_warm(&mut inner, None) {
                tracing::info!(version = %w.version, "a new deploy replaces the warm set");
            }
            let next = inner.live.other();
            let warm: Vec<InstanceId> = inner
                .instances
                .iter()
                .filter(|(id, t)| t.group == next && !inner.draining.contains(*id))
                .map(|(id, _)| id.clone())
                .collect();
            for id in warm {
                self.retire(&mut inner, id, self.spec.deploy.drain_timeout);
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let d = Deployment {
            id,
            from: inner.current.clone(),
            to: version.to_owned(),
            strategy: strategy.name().into(),
            started_at: now_rfc3339(),
            finished_at: None,
            duration_ms: None,
            progress: Progress::Rolling,
            steps: Vec::new(),
            flip_us: None,
            drains: Drains::default(),
        };
        let mut run = self.run_for(&d, strategy);
        if matches!(run.decider.strategy(), Strategy::BlueGreen)
            && !onto_warm
            && self.preview.get().is_some()
        {
            run.check = Some(Check::NotStarted);
        }
        let d = match &self.releases {
            Some(r) if !r.dir_of(version).is_dir() => {
                run.preparing = true;
                let this = self.clone();
                let v = version.to_owned();
                let cancel = run.cancel_prepare.clone();
                tokio::spawn(async move { this.prepare(id, v, cancel).await });
                Deployment {
                    progress: Progress::Preparing,
                    ..d
                }
            }
            _ => d,
        };
        inner.deployment = Some((d.clone(), Instant::now()));
        inner.run = Some(run);
        self.persist(
            "release",
            self.store.record_release(version, command.as_deref()),
        );
        if let Some(command) = command {
            inner.commands.insert(version.to_owned(), command);
        }
        self.save(&d);
        inner.launch_error = None;
        drop(inner);
        self.wake.notify_one();
        tracing::info!(
            deployment = id,
            to = version,
            strategy = d.strategy,
            "deployment started"
        );
        Ok(d)
    }

    /// Sets (or clears) the warm set, on disk too so a restarted daemon keeps it; returns the
    /// one it replaces.
    pub(super) fn set_warm(&self, inner: &mut Inner, warm: Option<Warm>) -> Option<Warm> {
        let on_disk = warm.as_ref().map(|w| {
            let left = w.until.saturating_duration_since(Instant::now());
            let until = SystemTime::now() + left;
            let secs = until
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            (w.version.clone(), secs)
        });
        self.persist(
            "warm set",
            self.store
                .set_warm(on_disk.as_ref().map(|(v, s)| (v.as_str(), *s))),
        );
        std::mem::replace(&mut inner.warm, warm)
    }

    pub fn preview(&self) -> Option<std::net::SocketAddr> {
        self.preview.get().copied()
    }

    /// The preview listener is up at `addr`: blue-green deploys check through it from now on.
    pub fn set_preview(&self, addr: std::net::SocketAddr) {
        let _ = self.preview.set(addr);
    }

    pub(super) fn checked(&self, id: u64, result: Result<(), String>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let ours = inner.deployment.as_ref().is_some_and(|(d, _)| d.id == id);
        if let (true, Some(run)) = (ours, inner.run.as_mut()) {
            match &result {
                Ok(()) => tracing::info!(deployment = id, "pre-promotion check passed"),
                Err(e) => tracing::warn!(deployment = id, error = %e, "pre-promotion check failed"),
            }
            run.check = Some(Check::Done(match result {
                Ok(()) => Promotion::Passed,
                Err(e) => Promotion::Failed(e),
            }));
        }
        self.wake.notify_one();
    }

    /// Fetches and unpacks the release of deployment `id`; on failure the deployment ends before
    /// any instance has changed.
    pub(super) async fn prepare(
        self: Arc<Self>,
        id: u64,
        version: String,
        cancel: CancellationToken,
    ) {
        let Some(releases) = &self.releases else {
            return;
        };
        let cancelled = async move {
            cancel.cancelled().await;
            "aborted by `cutover abort` while the release was being prepared".to_owned()
        };
        let result = releases.prepare_until(&version, cancelled).await;
        let mut inner = self.lock();
        let inner = &mut *inner;
        if let (Some((d, started)), Some(run)) = (
            inner.deployment.as_mut().filter(|(d, _)| d.id == id),
            inner.run.as_mut(),
        ) {
            run.preparing = false;
            match result {
                Ok(dir) => {
                    tracing::info!(deployment = id, release = %dir.display(), "release ready");
                    if d.progress == Progress::Preparing {
                        d.progress = Progress::Rolling;
                    }
                }
                Err(e) => {
                    tracing::error!(deployment = id, error = %e, "release not ready");
                    let reason = e.to_string();
                    d.progress = Progress::RolledBack { reason };
                    d.finished_at = Some(now_rfc3339());
                    d.duration_ms =
                        Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
                    let d = d.clone();
                    self.save(&d);
                    inner.run = None;
                    inner.history.push(d);
                }
            }
        }
        self.wake.notify_one();
    }

    /// Rolls back. While the previous version is warm, this is one routing change back to it
    /// (then its set is the live one); otherwise a rolling deploy to the release before the
    /// current one, or to `to` (any release this daemon has run).
    pub async fn rollback(self: &Arc<Self>, to: Option<&str>) -> Result<Deployment, DeployError> {
        if let Some(to) = to {
            cutover_spec::version::check(to).map_err(DeployError::BadVersion)?;
        }
        let began = Instant::now();
        let warm = {
            let inner = self.lock();
            inner
                .warm
                .as_ref()
                .filter(|w| Instant::now() < w.until && to.is_none_or(|t| t == w.version))
                .map(|w| (w.version.clone(), inner.commands.get(&w.version).cloned()))
        };
        if let Some((version, command)) = warm {
            let d = self.begin(&version, command, Strategy::BlueGreen, true)?;
            // The flip happens now, not at the controller's next tick, and counts once the
            // traffic plane has it.
            self.step();
            self.plane.flush().await;
            let flip_us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
            let mut inner = self.lock();
            let inner = &mut *inner;
            let mut latest = None;
            let current = inner.deployment.as_mut().map(|(d, _)| d);
            for x in inner.history.iter_mut().chain(current) {
                if x.id == d.id {
                    x.flip_us = Some(flip_us);
                    latest = Some(x.clone());
                }
            }
            tracing::info!(deployment = d.id, to = %version, flip_us, "rolled back by a traffic flip");
            return Ok(latest.unwrap_or(d));
        }
        let (target, command) = {
            let inner = self.lock();
            let history: Vec<cutover_rollout::Past<'_>> = inner
                .history
                .iter()
                .map(|d| cutover_rollout::Past {
                    from: &d.from,
                    to: &d.to,
                    progress: &d.progress,
                })
                .collect();
            let target = cutover_rollout::rollback::target(
                &history,
                &inner.current,
                Some(&self.spec.release.version),
                to,
            )?;
            let command = inner.commands.get(&target).cloned();
            (target, command)
        };
        let strategy = self.strategy(Some("rolling"))?;
        self.begin(&target, command, strategy, false)
    }

    /// Applies `f` to the run of the deployment in progress, which must have steps.
    pub(super) fn steer(
        &self,
        f: impl FnOnce(&mut Run, &mut Deployment),
    ) -> Result<Deployment, DeployError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let (Some((d, _)), Some(run)) = (
            inner.deployment.as_mut().filter(|(d, _)| !d.finished()),
            inner.run.as_mut(),
        ) else {
            return Err(DeployError::NoDeployment);
        };
        f(run, d);
        let d = d.clone();
        self.wake.notify_one();
        Ok(d)
    }

    pub(super) fn steer_steps(&self, f: impl FnOnce(&mut Run)) -> Result<Deployment, DeployError> {
        let mut refused = None;
        let d = self.steer(|run, d| {
            if matches!(run.decider.strategy(), Strategy::Canary(_)) {
                f(run);
            } else {
                refused = Some(DeployError::NotStepped(d.id, run.decider.strategy().name()));
            }
        })?;
        refused.map_or(Ok(d), Err)
    }

    /// Moves a canary on to its next step now, or (`full`) straight to full size.
    pub fn promote(&self, full: bool) -> Result<Deployment, DeployError> {
        self.steer_steps(|run| {
            run.decider
                .promote(if full { Promote::Full } else { Promote::Next });
        })
    }

    pub fn pause(&self) -> Result<Deployment, DeployError> {
        self.steer_steps(|run| run.decider.hold(true))
    }

    pub fn resume(&self) -> Result<Deployment, DeployError> {
        self.steer_steps(|run| run.decider.hold(false))
    }

    /// Gives up on the deployment in progress: traffic back to the old version, the new one
    /// drained and stopped.
    pub fn abort(&self) -> Result<Deployment, DeployError> {
        self.steer(|run, d| {
            // A release still being fetched is given up at once; its deploy then ends rolled
            // back, before any instance has changed.
            if run.preparing {
                run.cancel_prepare.cancel();
            }
            run.decider.abort("aborted by `cutover abort`");
            if let Some(reason) = run.decider.aborted() {
                d.progress = Progress::Aborting {
                    reason: reason.to_owned(),
                };
            }
        })
    }
}

fn sample(m: &MetricsSnapshot) -> Sample {
    let answered: u64 = m.responses.iter().sum::<u64>() + m.proxy_errors;
    Sample {
        requests: answered,
        errors: m.responses[4] + m.proxy_errors,
        p99: m.quantile(0.99),
    }
}
