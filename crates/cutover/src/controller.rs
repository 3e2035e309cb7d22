//! The controller: keeps the group at its desired size on the current release, and carries out
//! deploys by running a planner against what it observes of the fleet and the load balancer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cutover_deploy::{rolling, steady, Action, InstanceView, Observed, Progress, Rolling, State};
use cutover_fleet::{Backoff, Exit, Instance, InstanceId, LaunchSpec, LocalFleet};
use cutover_proxy::target::TargetState;
use cutover_proxy::Registry;
use cutover_spec::Spec;
use cutover_store::{DeploymentRow, InstanceRow, Store};
use serde::Serialize;
use tokio::sync::mpsc;

/// The target group the managed instances join.
pub const GROUP: &str = "app";
/// How often instance logs are checked against their size limit.
const LOG_ROTATION_CHECK: Duration = Duration::from_secs(5);
/// How often the controller looks again when nothing wakes it sooner.
const TICK: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize)]
pub struct Deployment {
    pub id: u64,
    pub from: String,
    pub to: String,
    pub strategy: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub progress: Progress,
}

impl Deployment {
    pub fn finished(&self) -> bool {
        matches!(self.progress, Progress::Done | Progress::RolledBack { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("deployment {0} to {1} is still in progress")]
    InProgress(u64, String),
    #[error("{0} is already the current release")]
    Current(String),
    #[error("`{0}` is not a valid version")]
    BadVersion(String),
    #[error("{0}")]
    BadCommand(String),
    #[error("no release {0} has run here; `cutover history` lists those that have")]
    UnknownRelease(String),
    #[error("no earlier release to roll back to")]
    NothingToRollBack,
}

/// An instance as `cutover status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub version: String,
    pub pid: u32,
    pub port: u16,
    pub state: State,
    pub health: Option<TargetState>,
    pub reason: Option<&'static str>,
    pub in_flight: usize,
    pub rps: u64,
}

struct Tracked {
    instance: Instance,
    launched: Instant,
    ever_healthy: bool,
}

struct Inner {
    current: String,
    instances: BTreeMap<InstanceId, Tracked>,
    /// Instances that exited on their own, with how.
    exited: BTreeMap<InstanceId, String>,
    draining: BTreeSet<InstanceId>,
    launching: Vec<String>,
    launch_error: Option<String>,
    crashes: u32,
    hold_launches_until: Option<Instant>,
    deployment: Option<(Deployment, Instant)>,
    /// Command of each release that has one of its own (`cutover deploy --command`).
    commands: BTreeMap<String, String>,
    history: Vec<Deployment>,
    next_id: u64,
}

pub struct Controller {
    spec: Spec,
    fleet: LocalFleet,
    registry: Arc<Registry>,
    store: Store,
    backoff: Backoff,
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Controller {
    /// A controller that first takes up where the last daemon on this data dir left off: the
    /// current release, the history, the instances still running (re-adopted after checking pid
    /// and start time), and a deploy that was in progress (rolled back).
    pub async fn start(
        spec: Spec,
        fleet: LocalFleet,
        registry: Arc<Registry>,
        store: Store,
    ) -> anyhow::Result<Arc<Self>> {
        let current = match store.current_release()? {
            Some(v) => v,
            None => {
                store.set_current_release(&spec.release.version)?;
                spec.release.version.clone()
            }
        };
        let commands: BTreeMap<String, String> = store.release_commands()?.into_iter().collect();
        let rows = store.deployments()?;
        let next_id = rows.iter().map(|d| d.id).max().unwrap_or(0) + 1;
        let mut history = Vec::new();
        let mut deployment = None;
        for row in rows {
            let progress: Progress =
                serde_json::from_value(row.progress.clone()).unwrap_or(Progress::Rolling);
            let d = Deployment {
                id: row.id,
                from: row.from_version,
                to: row.to_version,
                strategy: row.strategy,
                started_at: row.started_at,
                finished_at: row.finished_at,
                duration_ms: row.duration_ms,
                progress,
            };
            if d.finished() {
                history.push(d);
            } else {
                // The daemon stopped mid-deploy: finish it by rolling back to what was serving.
                let reason = match &d.progress {
                    Progress::Aborting { reason } => reason.clone(),
                    _ => "the daemon restarted during the deployment".to_owned(),
                };
                tracing::warn!(deployment = d.id, %reason, "resuming an interrupted deployment as a rollback");
                deployment = Some((
                    Deployment {
                        progress: Progress::Aborting { reason },
                        ..d
                    },
                    Instant::now(),
                ));
            }
        }
        let mut instances = BTreeMap::new();
        let release = &spec.release;
        for row in store.live_instances()? {
            if row.pid == 0 {
                // Launched, or about to be, when the last daemon died: find and stop what ran.
                for pid in cutover_fleet::instance::kill_unrecorded(&row.id) {
                    tracing::warn!(instance = %row.id, pid, "stopped an instance that was never recorded as started");
                }
                store.instance_stopped(&row.id)?;
                continue;
            }
            let ours = row
                .start_ticks
                .is_some_and(|t| cutover_fleet::instance::is_same_process(row.pid, t));
            if !ours {
                store.instance_stopped(&row.id)?;
                continue;
            }
            let instance = Instance {
                id: InstanceId(row.id.clone()),
                version: row.version.clone(),
                pid: row.pid,
                port: row.port,
                start_ticks: row.start_ticks,
                log: row.log.clone().into(),
            };
            fleet.adopt(
                instance.clone(),
                signal_of(release.stop_signal),
                release.stop_timeout,
            );
            registry.register(GROUP, &instance.target()).await?;
            instances.insert(
                instance.id.clone(),
                Tracked {
                    instance,
                    launched: Instant::now(),
                    ever_healthy: false,
                },
            );
        }
        if !instances.is_empty() {
            tracing::info!(adopted = instances.len(), "re-adopted running instances");
        }
        Ok(Arc::new(Self {
            spec,
            fleet,
            registry,
            store,
            backoff: Backoff::default(),
            inner: Mutex::new(Inner {
                current,
                instances,
                exited: BTreeMap::new(),
                draining: BTreeSet::new(),
                launching: Vec::new(),
                launch_error: None,
                crashes: 0,
                hold_launches_until: None,
                deployment,
                commands,
                history,
                next_id,
            }),
            wake: tokio::sync::Notify::new(),
        }))
    }

    /// Writes to the store; a failed write is logged, not fatal: serving traffic matters more.
    fn persist(&self, what: &str, result: Result<(), cutover_store::StoreError>) {
        if let Err(e) = result {
            tracing::error!(%what, error = %e, "cannot record state");
        }
    }

    fn save(&self, d: &Deployment) {
        let row = DeploymentRow {
            id: d.id,
            from_version: d.from.clone(),
            to_version: d.to.clone(),
            strategy: d.strategy.clone(),
            started_at: d.started_at.clone(),
            finished_at: d.finished_at.clone(),
            duration_ms: d.duration_ms,
            progress: serde_json::to_value(&d.progress).unwrap_or_default(),
        };
        self.persist("deployment", self.store.save_deployment(&row));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs until `stop` resolves: applies exits, plans, acts.
    pub async fn run(
        self: Arc<Self>,
        mut exits: mpsc::UnboundedReceiver<Exit>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut last_rotation = Instant::now();
        loop {
            if last_rotation.elapsed() >= LOG_ROTATION_CHECK {
                self.fleet.rotate_logs();
                last_rotation = Instant::now();
            }
            while let Ok(exit) = exits.try_recv() {
                self.on_exit(exit);
            }
            self.step();
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(exit) = exits.recv() => self.on_exit(exit),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    fn on_exit(&self, exit: Exit) {
        if exit.requested {
            return;
        }
        let mut inner = self.lock();
        // Recorded even for an instance not yet tracked: a process that exits at once can beat
        // its own launch task to the lock, and must still count as failed when it is tracked.
        {
            let how = match (exit.code, exit.signal) {
                (Some(code), _) => format!("exited with code {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "exited".to_owned(),
            };
            inner.exited.insert(exit.id.clone(), how);
            let crashes = inner.crashes + 1;
            inner.crashes = crashes;
            let delay = self
                .backoff
                .delay(crashes, Duration::from_millis(exit.ran_for_ms));
            if exit.ran_for_ms >= self.backoff.stable_after.as_millis() as u64 {
                inner.crashes = 0;
            }
            inner.hold_launches_until = Some(Instant::now() + delay);
            tracing::warn!(instance = %exit.id, code = ?exit.code, signal = ?exit.signal, ?delay, "instance exited; replacing");
        }
    }

    /// What the planners see: each tracked instance with its state.
    fn observe(&self, inner: &mut Inner) -> Vec<InstanceView> {
        let health: BTreeMap<String, (TargetState, Option<&'static str>)> = self
            .registry
            .status()
            .into_iter()
            .filter(|g| g.name == GROUP)
            .flat_map(|g| g.targets)
            .map(|t| (t.target, (t.state, t.reason)))
            .collect();
        let mut views = Vec::new();
        for (id, t) in inner.instances.iter_mut() {
            let h = health.get(&t.instance.target());
            if matches!(h, Some((TargetState::Healthy, _))) {
                t.ever_healthy = true;
            }
            let mut detail = None;
            let state = if inner.draining.contains(id) {
                State::Draining
            } else if let Some(how) = inner.exited.get(id) {
                detail = Some(how.clone());
                State::Failed
            } else {
                match h {
                    Some((TargetState::Healthy, _)) => State::Healthy,
                    // It answers, and says it is not well; or it was well and no longer is.
                    Some((TargetState::Unhealthy, reason))
                        if t.ever_healthy || *reason == Some("Target.ResponseCodeMismatch") =>
                    {
                        detail = Some(format!(
                            "unhealthy, {}",
                            reason.unwrap_or("Target.FailedHealthChecks")
                        ));
                        State::Failed
                    }
                    // Still coming up: refusing connections while starting is not a failure
                    // until the progress deadline says so.
                    _ => State::Starting,
                }
            };
            views.push(InstanceView {
                id: id.0.clone(),
                version: t.instance.version.clone(),
                state,
                detail,
            });
        }
        views
    }

    fn step(self: &Arc<Self>) {
        let mut inner = self.lock();
        let views = self.observe(&mut inner);
        let actions = if let Some((deployment, started)) =
            inner.deployment.as_ref().filter(|(d, _)| !d.finished())
        {
            let deadline_passed = started.elapsed() > self.spec.deploy.progress_deadline
                && inner.instances.values().any(|t| {
                    t.instance.version == deployment.to
                        && !t.ever_healthy
                        && t.launched.elapsed() > self.spec.deploy.progress_deadline
                });
            let observed = Observed {
                target: deployment.to.clone(),
                previous: deployment.from.clone(),
                desired: self.spec.group.desired,
                instances: views,
                deadline_passed: deadline_passed || inner.launch_error.is_some(),
                launches_in_flight: inner.launching.clone(),
                aborted: match &deployment.progress {
                    Progress::Aborting { reason } | Progress::RolledBack { reason } => {
                        Some(reason.clone())
                    }
                    _ => None,
                },
            };
            let settings = Rolling {
                max_surge: self.spec.deploy.max_surge,
                max_unavailable: self.spec.deploy.max_unavailable,
            };
            let mut plan = rolling::plan(settings, &observed);
            if let (Some(err), Progress::Aborting { reason } | Progress::RolledBack { reason }) =
                (&inner.launch_error, &mut plan.progress)
            {
                *reason = format!("{} could not be started: {err}", observed.target);
            }
            let finished = matches!(plan.progress, Progress::Done | Progress::RolledBack { .. });
            let mut changed = None;
            if let Some((d, started)) = inner.deployment.as_mut() {
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
                    }
                    inner.launch_error = None;
                    inner.history.push(d);
                }
            }
            plan.actions
        } else {
            let may_launch = inner
                .hold_launches_until
                .is_none_or(|t| Instant::now() >= t);
            let current = inner.current.clone();
            let launching = inner.launching.iter().filter(|v| **v == current).count() as u32;
            steady::plan(
                &current,
                self.spec.group.desired,
                &views,
                launching,
                may_launch,
            )
        };
        for action in actions {
            self.act(&mut inner, action);
        }
    }

    fn act(self: &Arc<Self>, inner: &mut Inner, action: Action) {
        let already = matches!(&action, Action::Drain { id } | Action::Remove { id } if inner.draining.contains(&InstanceId(id.clone())));
        if !already {
            // The intent is on disk before anything happens, so a restart knows what was under way.
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
        match action {
            Action::Launch { version } => {
                inner.launching.push(version.clone());
                let this = self.clone();
                tokio::spawn(async move { this.launch(version).await });
            }
            Action::Drain { id } | Action::Remove { id }
                if inner.draining.contains(&InstanceId(id.clone())) => {}
            Action::Drain { id } => {
                self.retire(inner, InstanceId(id), self.spec.deploy.drain_timeout)
            }
            Action::Remove { id } => self.retire(inner, InstanceId(id), Duration::ZERO),
        }
    }

    async fn launch(self: Arc<Self>, version: String) {
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
            workdir: None,
            stop_signal: signal_of(release.stop_signal),
            stop_timeout: release.stop_timeout,
        };
        let id = InstanceId::new(&version);
        // Recorded before the process exists, so a restart can find it even if its pid never was.
        self.persist("instance", self.store.instance_intended(&id.0, &version));
        let launched = self.fleet.launch_as(id.clone(), &spec).await;
        let outcome: Result<Instance, (Option<Instance>, String)> = match launched {
            Ok(instance) => match self.registry.register(GROUP, &instance.target()).await {
                Ok(_) => Ok(instance),
                Err(e) => Err((Some(instance), e.to_string())),
            },
            Err(e) => Err((None, e.to_string())),
        };
        let mut inner = self.lock();
        if let Some(pos) = inner.launching.iter().position(|v| *v == version) {
            inner.launching.remove(pos);
        }
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
                inner.instances.insert(
                    instance.id.clone(),
                    Tracked {
                        instance,
                        launched: Instant::now(),
                        ever_healthy: false,
                    },
                );
            }
            Err((launched, e)) => {
                inner.exited.remove(&id);
                self.persist("instance", self.store.instance_stopped(&id.0));
                tracing::error!(%version, error = %e, "launch failed");
                let deploying = inner
                    .deployment
                    .as_ref()
                    .is_some_and(|(d, _)| !d.finished() && d.to == version);
                if deploying {
                    inner.launch_error = Some(e);
                } else {
                    inner.crashes += 1;
                    let delay = self.backoff.delay(inner.crashes, Duration::ZERO);
                    inner.hold_launches_until = Some(Instant::now() + delay);
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
    fn retire(self: &Arc<Self>, inner: &mut Inner, id: InstanceId, timeout: Duration) {
        let Some(target) = inner.instances.get(&id).map(|t| t.instance.target()) else {
            return;
        };
        inner.draining.insert(id.clone());
        let this = self.clone();
        tokio::spawn(async move {
            if let Some(handle) = this.registry.deregister(GROUP, &target, timeout) {
                let report = handle.wait().await;
                tracing::info!(instance = %id, completed = report.completed, cut = report.cut, "drained");
            }
            let exited = this.lock().exited.contains_key(&id);
            if exited {
                this.fleet.forget(&id);
            } else if let Err(e) = this.fleet.stop(&id).await {
                tracing::warn!(instance = %id, error = %e, "stop failed");
            }
            this.persist("instance", this.store.instance_stopped(&id.0));
            let mut inner = this.lock();
            inner.instances.remove(&id);
            inner.draining.remove(&id);
            inner.exited.remove(&id);
            drop(inner);
            this.wake.notify_one();
        });
    }

    /// Starts a rolling deploy to `version`, optionally with its own command template.
    pub fn start_deploy(
        &self,
        version: &str,
        command: Option<String>,
    ) -> Result<Deployment, DeployError> {
        if version.is_empty()
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        {
            return Err(DeployError::BadVersion(version.to_owned()));
        }
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
        let id = inner.next_id;
        inner.next_id += 1;
        let d = Deployment {
            id,
            from: inner.current.clone(),
            to: version.to_owned(),
            strategy: "rolling".into(),
            started_at: now_rfc3339(),
            finished_at: None,
            duration_ms: None,
            progress: Progress::Rolling,
        };
        inner.deployment = Some((d.clone(), Instant::now()));
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
        tracing::info!(deployment = id, to = version, "deployment started");
        Ok(d)
    }

    /// Rolls back: a rolling deploy to the release before the current one, or to `to` if given
    /// (any release this daemon has run). The previous instances are gone after a rolling
    /// deploy, so this is a redeploy, not a traffic flip.
    pub fn rollback(&self, to: Option<&str>) -> Result<Deployment, DeployError> {
        let (target, command) = {
            let inner = self.lock();
            let known: Vec<&str> = std::iter::once(self.spec.release.version.as_str())
                .chain(
                    inner
                        .history
                        .iter()
                        .filter(|d| d.progress == Progress::Done)
                        .map(|d| d.to.as_str()),
                )
                .collect();
            let target = match to {
                Some(v) if known.contains(&v) => v.to_owned(),
                Some(v) => return Err(DeployError::UnknownRelease(v.to_owned())),
                None => inner
                    .history
                    .iter()
                    .rev()
                    .find(|d| d.progress == Progress::Done && d.to == inner.current)
                    .map(|d| d.from.clone())
                    .ok_or(DeployError::NothingToRollBack)?,
            };
            let command = inner.commands.get(&target).cloned();
            (target, command)
        };
        self.start_deploy(&target, command)
    }

    pub fn deployment(&self, id: Option<u64>) -> Option<Deployment> {
        let inner = self.lock();
        let latest = inner.deployment.as_ref().map(|(d, _)| d.clone());
        match id {
            None => latest,
            Some(id) => latest
                .filter(|d| d.id == id)
                .or_else(|| inner.history.iter().find(|d| d.id == id).cloned()),
        }
    }

    pub fn history(&self) -> Vec<Deployment> {
        self.lock().history.clone()
    }

    pub fn desired(&self) -> u32 {
        self.spec.group.desired
    }

    pub fn current(&self) -> String {
        self.lock().current.clone()
    }

    pub fn instances(&self) -> Vec<InstanceStatus> {
        let mut inner = self.lock();
        let views = self.observe(&mut inner);
        let status: BTreeMap<String, cutover_proxy::TargetStatus> = self
            .registry
            .status()
            .into_iter()
            .flat_map(|g| g.targets)
            .map(|t| (t.target.clone(), t))
            .collect();
        views
            .into_iter()
            .filter_map(|v| {
                let t = inner.instances.get(&InstanceId(v.id.clone()))?;
                let h = status.get(&t.instance.target());
                Some(InstanceStatus {
                    id: v.id,
                    version: v.version,
                    pid: t.instance.pid,
                    port: t.instance.port,
                    state: v.state,
                    health: h.map(|h| h.state),
                    reason: h.and_then(|h| h.reason),
                    in_flight: h.map(|h| h.in_flight).unwrap_or(0),
                    rps: h.map(|h| h.rps).unwrap_or(0),
                })
            })
            .collect()
    }

    /// Drains and stops every instance (for `cutover stop` and SIGTERM).
    pub async fn shutdown(self: &Arc<Self>) {
        let ids: Vec<InstanceId> = self.lock().instances.keys().cloned().collect();
        {
            let mut inner = self.lock();
            for id in &ids {
                if !inner.draining.contains(id) {
                    self.retire(&mut inner, id.clone(), self.spec.deploy.drain_timeout);
                }
            }
        }
        let deadline = Instant::now()
            + self.spec.deploy.drain_timeout
            + self.spec.release.stop_timeout
            + Duration::from_secs(5);
        while !self.lock().instances.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn signal_of(s: cutover_spec::StopSignal) -> nix::sys::signal::Signal {
    use cutover_spec::StopSignal::*;
    use nix::sys::signal::Signal;
    match s {
        Term => Signal::SIGTERM,
        Int => Signal::SIGINT,
        Quit => Signal::SIGQUIT,
        Hup => Signal::SIGHUP,
        Usr1 => Signal::SIGUSR1,
        Usr2 => Signal::SIGUSR2,
    }
}
