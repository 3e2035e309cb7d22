//! Carrying out a plan on one host: launches, drains with their reports, weights on the data
//! plane, each intent recorded first.

use super::*;

impl Controller {
    /// Sets the live and the other group's weights, in one routing change, if they differ.
    pub(super) fn apply_weights(&self, inner: &mut Inner, weights: (u32, u32)) {
        if weights == inner.weights {
            return;
        }
        let live = inner.live;
        match self
            .plane
            .set_weights(&[(live.name(), weights.0), (live.other().name(), weights.1)])
        {
            Ok(()) => {
                tracing::info!(
                    live = live.name(),
                    live_weight = weights.0,
                    other_weight = weights.1,
                    "traffic split"
                );
                inner.weights = weights;
            }
            Err(e) => tracing::error!(error = %e, "cannot set weights"),
        }
    }

    /// Puts the intent on disk before anything happens, so a restart knows what was under way.
    pub(super) fn record(&self, inner: &Inner, action: &Action) {
        let deployment = inner
            .deployment
            .as_ref()
            .filter(|(d, _)| !d.finished())
            .map(|(d, _)| d.id);
        self.persist(
            "event",
            self.store
                .event(deployment, "action", &serde_json::json!(action)),
        );
    }

    pub(super) fn act(self: &Arc<Self>, inner: &mut Inner, action: Action) {
        let already = matches!(&action, Action::Drain { id } | Action::Remove { id } if inner.draining.contains(&InstanceId(id.clone())));
        if !already && !matches!(action, Action::Launch { .. }) {
            self.record(inner, &action);
        }
        match action {
            Action::Launch { .. } => self.admit(inner, vec![action]),
            Action::Drain { id } | Action::Remove { id }
                if inner.draining.contains(&InstanceId(id.clone())) => {}
            Action::Drain { id } => {
                self.retire(inner, InstanceId(id), self.spec.deploy.drain_timeout)
            }
            Action::Remove { id } => self.retire(inner, InstanceId(id), Duration::ZERO),
        }
    }

    pub(super) async fn launch(self: Arc<Self>, id: InstanceId, version: String, group: Side) {
        let release = &self.spec.release;
        let command = self
            .lock()
            .commands
            .get(&version)
            .cloned()
            .unwrap_or_else(|| release.command.clone());
        let spec = LaunchSpec {
            command,
            version: version.clone(),
            env: release.env.clone(),
            user: release.user.clone(),
            workdir: self.releases.as_ref().map(|r| r.dir_of(&version)),
            stop_signal: signal_of(release.stop_signal),
            stop_timeout: release.stop_timeout,
        };
        // Recorded before the process exists, so a restart can find it even if its pid never was.
        self.persist("instance", self.store.instance_intended(&id.0, &version));
        let launched = self.fleet.launch_as(id.clone(), &spec).await;
        let outcome: Result<Instance, (Option<Instance>, String)> = match launched {
            Ok(instance) => match self.plane.register(group.name(), &instance.target()).await {
                Ok(()) => Ok(instance),
                Err(e) => Err((Some(instance), e.to_string())),
            },
            Err(e) => Err((None, e.to_string())),
        };
        let mut inner = self.lock();
        inner.launching.retain(|(l, _, _)| *l != id);
        match outcome {
            Ok(instance) => {
                self.persist(
                    "instance",
                    self.store.instance_started(&InstanceRow {
                        id: instance.id.0.clone(),
                        version: instance.version.clone(),
                        pid: instance.pid,
                        start_ticks: instance.start_ticks,
                        port: instance.port,
                        log: instance.log.display().to_string(),
                    }),
                );
                inner
                    .instances
                    .insert(instance.id.clone(), Tracked::new(instance, group));
            }
            Err((launched, e)) => {
                inner.exited.remove(&id);
                self.persist("instance", self.store.instance_stopped(&id.0));
                tracing::error!(%version, error = %e, "launch failed");
                let deploying = inner
                    .deployment
                    .as_ref()
                    .is_some_and(|(d, _)| !d.finished() && d.to == version);
                // A launch that fails is a death before any health check: its slot backs off.
                inner.restarts.ended(&id.0, End::Early, Instant::now());
                if deploying {
                    inner.launch_error = Some(e);
                }
                if let Some(instance) = launched {
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _ = this.fleet.stop(&instance.id).await;
                    });
                }
            }
        }
        drop(inner);
        self.wake.notify_one();
    }

    /// Deregisters, waits for the drain confirmation, then stops the process.
    pub(super) fn retire(self: &Arc<Self>, inner: &mut Inner, id: InstanceId, timeout: Duration) {
        let Some((group, target)) = inner
            .instances
            .get(&id)
            .map(|t| (t.group, t.instance.target()))
        else {
            return;
        };
        inner.draining.insert(id.clone());
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(handle) = this.plane.deregister(group.name(), &target, timeout).await {
                let report = handle.wait().await;
                tracing::info!(instance = %id, completed = report.completed, closed = report.closed, cut = report.cut, "drained");
                this.drained(&id, &report);
            }
            let exited = this.lock().exited.contains_key(&id);
            if exited {
                this.fleet.forget(&id);
            } else if let Err(e) = this.fleet.stop(&id).await {
                tracing::warn!(instance = %id, error = %e, "stop failed");
            }
            this.persist("instance", this.store.instance_stopped(&id.0));
            let mut inner = this.lock();
            inner.restarts.ended(&id.0, End::Stopped, Instant::now());
            inner.instances.remove(&id);
            inner.draining.remove(&id);
            inner.exited.remove(&id);
            drop(inner);
            this.wake.notify_one();
        });
    }

    /// Counts a drain towards the deployment in progress, and records it.
    pub(super) fn drained(&self, id: &InstanceId, report: &cutover_proxy::DrainReport) {
        let mut inner = self.lock();
        let deployment = inner
            .deployment
            .as_mut()
            .filter(|(d, _)| !d.finished())
            .map(|(d, _)| {
                d.drains.add(report);
                d.id
            });
        drop(inner);
        self.persist(
            "event",
            self.store
                .event(deployment, drains::EVENT, &Drains::event(&id.0, report)),
        );
    }
}
