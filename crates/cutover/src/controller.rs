//! The controller: keeps the group at its desired size on the current release, and carries out
//! deploys by running a planner against what it observes of the fleet and the load balancer.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cutover_deploy::{
    judge, steady, Action, Canary, InstanceView, Observed, Progress, Promote, Promotion, Rolling,
    Sample, Set, State, StepObserved, Strategy, Traffic, Verdict,
};
use cutover_deploy::{CrashLoop, End, Restarts};
use cutover_fleet::autoscale::Autoscaler;
use cutover_fleet::{Exit, Instance, InstanceId, LaunchSpec, LocalFleet};
use cutover_proxy::metrics::MetricsSnapshot;
use cutover_proxy::target::{Reason, TargetState};
use cutover_spec::Spec;
use cutover_store::{DeploymentRow, InstanceRow, ScalingRow, Store};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::drains::{self, Drains};
use crate::plane::Plane;

/// The two target groups managed instances join: the live one takes the traffic between
/// deploys; the other holds a new version while a strategy shifts traffic to it, then the
/// previous version, kept warm for an instant rollback. They trade places when a deploy is done.
pub const GROUPS: [&str; 2] = ["blue", "green"];

fn other(group: &'static str) -> &'static str {
    if group == GROUPS[0] {
        GROUPS[1]
    } else {
        GROUPS[0]
    }
}
/// How often instance logs are checked against their size limit.
const LOG_ROTATION_CHECK: Duration = Duration::from_secs(5);
/// How often the controller looks again when nothing wakes it sooner.
const TICK: Duration = Duration::from_millis(100);
/// How long a shutdown waits for launches in flight (a process start and one registration).
const LAUNCH_DEADLINE: Duration = Duration::from_secs(10);
/// The store's key for which of [`GROUPS`] is live, so a controller that adopts a running data
/// plane knows which group is which.
const LIVE_KEY: &str = "live";

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
    /// The steps a canary went through, with their verdicts.
    pub steps: Vec<StepRecord>,
    /// For a rollback to a warm set: microseconds from the command to the traffic flip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flip_us: Option<u64>,
    /// What draining its old instances came to.
    #[serde(default)]
    pub drains: Drains,
}

pub use cutover_rollout::StepRecord;

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
    /// Says what is wrong with the version; the request must change.
    #[error("{0}")]
    BadVersion(String),
    #[error("{0}")]
    BadCommand(String),
    #[error("no release {0} has run here; `cutover history` lists those that have")]
    UnknownRelease(String),
    #[error("no earlier release to roll back to")]
    NothingToRollBack,
    #[error("no strategy named `{0}`; expected one of {1}")]
    BadStrategy(String, String),
    #[error("desired size {0} is outside the group's min {1} and max {2}")]
    OutOfBounds(u32, u32, u32),
    #[error("no deployment is in progress")]
    NoDeployment,
    #[error("deployment {0} uses the {1} strategy; only a canary has steps to promote or pause")]
    NotStepped(u64, &'static str),
}

/// An instance as `cutover status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub id: String,
    pub version: String,
    /// The target group it serves from.
    pub group: &'static str,
    pub pid: u32,
    pub port: u16,
    pub state: State,
    pub health: Option<TargetState>,
    pub reason: Option<&'static str>,
    pub in_flight: usize,
    pub rps: u64,
}

/// Whose doing an instance's exit was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// It exited, or a signal of its own making (a crash) ended it: what its release does.
    Own,
    /// SIGKILL, which only another process sends.
    Killed,
    /// Another process held its port when it tried to listen.
    PortTaken,
}

impl Ending {
    fn of(exit: &Exit) -> Self {
        if exit.port_taken {
            Ending::PortTaken
        } else if exit.signal == Some(nix::sys::signal::Signal::SIGKILL as i32) {
            Ending::Killed
        } else {
            Ending::Own
        }
    }
}

struct Tracked {
    instance: Instance,
    launched: Instant,
    /// When the load balancer first found it healthy.
    healthy_at: Option<Instant>,
    /// Its slot has been told it served past the settle window.
    settled: bool,
    /// How it ended (failed or lost), once its slot has been told: it is judged once.
    ended: Option<State>,
    group: &'static str,
}

impl Tracked {
    fn new(instance: Instance, group: &'static str) -> Self {
        Self {
            instance,
            launched: Instant::now(),
            healthy_at: None,
            settled: false,
            ended: None,
            group,
        }
    }
}

/// What the executor keeps of the deployment in progress beyond its record: the strategy and
/// where a stepped one stands.
struct Run {
    strategy: Strategy,
    step: usize,
    /// When this step's capacity and share were in place, and each group's totals then: the
    /// start of its analysis window.
    window: Option<(Instant, MetricsSnapshot, MetricsSnapshot)>,
    verdict: Verdict,
    promote: Option<Promote>,
    paused: bool,
    /// The release is being fetched and unpacked: nothing may change until it is ready.
    preparing: bool,
    /// Cancels that preparation (`cutover abort`).
    cancel_prepare: CancellationToken,
    /// Blue-green's probe through the preview listener: `None` when there is none to run.
    check: Option<Check>,
    /// Instances of the target version lost after they served, during this deploy.
    lost: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Check {
    NotStarted,
    Running,
    Done(Promotion),
}

/// Requests the pre-promotion check sends through the preview listener; every one must be
/// answered below 500 by the new set.
const PREVIEW_REQUESTS: usize = 20;

impl Run {
    fn new(strategy: Strategy) -> Self {
        Self {
            preparing: false,
            cancel_prepare: CancellationToken::new(),
            check: None,
            lost: BTreeSet::new(),
            strategy,
            step: 0,
            window: None,
            verdict: Verdict::default(),
            promote: None,
            paused: false,
        }
    }
}

/// Where one autoscaling policy's current evaluation period began, and the counters then.
struct Sampling {
    at: Instant,
    requests: u64,
    cpu: BTreeMap<InstanceId, Duration>,
}

/// The previous version, still running in the other group at weight 0.
struct Warm {
    version: String,
    until: Instant,
}

struct Inner {
    current: String,
    instances: BTreeMap<InstanceId, Tracked>,
    /// Instances that exited on their own: how, when, and whose doing it was.
    exited: BTreeMap<InstanceId, (String, Instant, Ending)>,
    draining: BTreeSet<InstanceId>,
    /// Launches under way: version and group.
    launching: Vec<(String, &'static str)>,
    live: &'static str,
    /// Weights last given to the live and the other group.
    weights: (u32, u32),
    warm: Option<Warm>,
    run: Option<Run>,
    /// The group's desired size: the stack file's, or as autoscaling or `cutover scale` set it.
    desired: u32,
    scaler: Option<Autoscaler>,
    sampling: Vec<Sampling>,
    last_scaling: Option<ScalingRow>,
    launch_error: Option<String>,
    /// Each launch's slot and the back-off of slots whose instances died young.
    restarts: Restarts,
    /// The current release crash-loops in most slots (said once, loudly, when it starts).
    crash_loop: Option<CrashLoop>,
    deployment: Option<(Deployment, Instant)>,
    /// Command of each release that has one of its own (`cutover deploy --command`).
    commands: BTreeMap<String, String>,
    history: Vec<Deployment>,
    next_id: u64,
}

pub struct Controller {
    spec: Spec,
    /// Where the preview listener listens, once it does.
    preview: std::sync::OnceLock<std::net::SocketAddr>,
    releases: Option<crate::release::Releases>,
    fleet: LocalFleet,
    plane: Plane,
    store: Store,
    inner: Mutex<Inner>,
    wake: tokio::sync::Notify,
    writes: crate::writes::Writes,
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
        data_dir: &std::path::Path,
        fleet: LocalFleet,
        plane: Plane,
        store: Store,
    ) -> anyhow::Result<Arc<Self>> {
        let current = match store.current_release()? {
            Some(v) => v,
            None => {
                store.set_current_release(&spec.release.version)?;
                spec.release.version.clone()
            }
        };
        let releases = crate::release::Releases::new(data_dir, &spec.release);
        if let Some(r) = &releases {
            // Nothing can start until the serving release is on disk.
            r.prepare(&current).await?;
        }
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
                steps: serde_json::from_value(row.steps.clone()).unwrap_or_default(),
                flip_us: None,
                drains: Drains::from_events(
                    store
                        .events(row.id)
                        .unwrap_or_default()
                        .iter()
                        .map(|(_, kind, detail)| (kind.as_str(), detail)),
                ),
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
        let mut restarts = Restarts::default();
        let release = &spec.release;
        // A warm set whose window is still open survives the restart; one whose window closed
        // meanwhile is drained like any other old version.
        let now_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let warm = store
            .warm()?
            .filter(|(v, until)| *until > now_unix && *v != current && deployment.is_none())
            .map(|(version, until)| Warm {
                version,
                until: Instant::now() + Duration::from_secs(until - now_unix),
            });
        // A data plane that kept serving while no controller ran still has the targets where the
        // last controller put them, and its weights: take them as they are. A fresh one has
        // nothing: the live group is the first again.
        let groups = plane.status();
        let weight_of = |group: &str| {
            groups
                .iter()
                .find(|g| g.name == group)
                .map_or(0, |g| g.weight)
        };
        let serving: BTreeMap<String, &'static str> = groups
            .iter()
            .cloned()
            .filter_map(|g| Some((GROUPS.into_iter().find(|n| *n == g.name)?, g.targets)))
            .flat_map(|(group, targets)| {
                targets
                    .into_iter()
                    .filter(|t| t.state != TargetState::Draining)
                    .map(move |t| (t.target, group))
            })
            .collect();
        let live = match store.meta(LIVE_KEY)? {
            Some(g) if !serving.is_empty() && g == GROUPS[1] => GROUPS[1],
            _ => GROUPS[0],
        };
        let weights = (weight_of(live), weight_of(other(live)));
        store.set_meta(LIVE_KEY, live)?;
        plane.set_preview(other(live));
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
            // Where the data plane has it, it stays. Otherwise (the load balancer restarted with
            // the daemon) survivors of the warm release go back to the other group at weight 0;
            // the rest join the live group, where the steady state keeps the current release and
            // drains any other.
            let group = match serving.get(&instance.target()) {
                Some(group) => group,
                None => {
                    let group = if warm.as_ref().is_some_and(|w| w.version == instance.version) {
                        other(live)
                    } else {
                        live
                    };
                    plane.register(group, &instance.target()).await?;
                    group
                }
            };
            restarts.adopt(&instance.version, &instance.id.0);
            instances.insert(instance.id.clone(), Tracked::new(instance, group));
        }
        if !instances.is_empty() {
            tracing::info!(adopted = instances.len(), "re-adopted running instances");
        }
        // Targets of instances that are gone: out of rotation, drained by the data plane.
        let known: BTreeSet<String> = instances
            .values()
            .map(|t: &Tracked| t.instance.target())
            .collect();
        for (target, group) in &serving {
            if !known.contains(target) {
                tracing::warn!(%target, %group, "deregistering a target no instance accounts for");
                drop(
                    plane
                        .deregister(group, target, spec.deploy.drain_timeout)
                        .await,
                );
            }
        }
        let group = &spec.group;
        let desired = store
            .desired()?
            .map_or(group.desired, |d| d.clamp(group.min, group.max));
        let last_scaling = store.scaling()?.pop();
        let scaler = spec
            .autoscale
            .clone()
            .map(|a| Autoscaler::new(a, group.min, group.max));
        let sampling = spec
            .autoscale
            .iter()
            .flat_map(|a| &a.policies)
            .map(|_| Sampling {
                at: Instant::now(),
                requests: 0,
                cpu: BTreeMap::new(),
            })
            .collect();
        Ok(Arc::new(Self {
            preview: std::sync::OnceLock::new(),
            spec,
            releases,
            fleet,
            plane,
            store,
            inner: Mutex::new(Inner {
                current,
                instances,
                exited: BTreeMap::new(),
                draining: BTreeSet::new(),
                launching: Vec::new(),
                live,
                weights,
                warm,
                run: None,
                desired,
                scaler,
                sampling,
                last_scaling,
                launch_error: None,
                restarts,
                crash_loop: None,
                deployment,
                commands,
                history,
                next_id,
            }),
            wake: tokio::sync::Notify::new(),
            writes: Default::default(),
        }))
    }

    /// Writes to the store; a failed write is warned about, not fatal: serving traffic matters
    /// more.
    fn persist(&self, what: &str, result: Result<(), cutover_store::StoreError>) {
        self.writes.record(what, result);
    }

    /// Whether the state database takes writes, for `cutover status`.
    pub fn writes(&self) -> serde_json::Value {
        self.writes.status()
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
            steps: serde_json::to_value(&d.steps).unwrap_or_default(),
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
            self.autoscale();
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
    fn observe(&self, inner: &mut Inner) -> Vec<InstanceView> {
        let health: BTreeMap<(String, String), (TargetState, Option<Reason>)> = self
            .plane
            .status()
            .into_iter()
            .filter(|g| GROUPS.contains(&g.name.as_str()))
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
            let h = health.get(&(t.group.to_owned(), t.instance.target()));
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
                    _ => State::Starting,
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

    fn step(self: &Arc<Self>) {
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
            self.apply_weights(&mut inner, Traffic::Next(0), &[]);
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
                .filter(|(v, g)| *v == current && *g == live)
                .count() as u32;
            actions.extend(steady::plan(&current, inner.desired, &views, launching));
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
    fn admit(self: &Arc<Self>, inner: &mut Inner, launches: Vec<Action>) {
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
                        Set::Next => other(inner.live),
                    };
                    inner.launching.push((version.clone(), group));
                    let this = self.clone();
                    let version = version.clone();
                    tokio::spawn(async move { this.launch(id, version, group).await });
                }
            }
        }
    }

    /// Says so, once and loudly, when the current release starts or stops crash-looping in
    /// most of its slots.
    fn watch_crash_loop(&self, inner: &mut Inner) {
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

    /// Slots backing off, and the crash loop if there is one: for `cutover status`.
    pub fn restarts(&self) -> serde_json::Value {
        let inner = self.lock();
        let held: Vec<serde_json::Value> = inner
            .restarts
            .held(Instant::now())
            .into_iter()
            .map(|h| {
                serde_json::json!({
                    "version": h.version,
                    "died_young": h.deaths,
                    "for_ms": u64::try_from(h.for_.as_millis()).unwrap_or(u64::MAX),
                })
            })
            .collect();
        serde_json::json!({
            "backing_off": held,
            "crash_loop": inner.crash_loop.as_ref().map(|l| l.to_string()),
        })
    }

    /// One planner step of the deployment in progress: observe, judge, plan, route, record.
    fn step_deployment(
        self: &Arc<Self>,
        inner: &mut Inner,
        views: Vec<InstanceView>,
    ) -> Vec<Action> {
        let Some((deployment, started)) = inner.deployment.clone() else {
            return Vec::new();
        };
        let deadline = self.spec.deploy.progress_deadline;
        let deadline_passed = started.elapsed() > deadline
            && inner.instances.values().any(|t| {
                t.instance.version == deployment.to
                    && t.healthy_at.is_none()
                    && t.launched.elapsed() > deadline
            });
        let live = inner.live;
        let launches_in_flight = inner
            .launching
            .iter()
            .map(|(v, g)| (v.clone(), if *g == live { Set::Live } else { Set::Next }))
            .collect();
        let mut run = inner.run.take().unwrap_or_else(|| {
            Run::new(Strategy::Rolling(Rolling {
                max_surge: self.spec.deploy.max_surge,
                max_unavailable: self.spec.deploy.max_unavailable,
            }))
        });

        // The analysis window: the new version's group against the live one since the step began.
        if let Some((_, live_then, next_then)) = &run.window {
            let now_live = self.plane.group_metrics(live).unwrap_or_default();
            let now_next = self.plane.group_metrics(other(live)).unwrap_or_default();
            run.verdict = judge(
                &self.spec.deploy.analysis,
                &sample(&now_next.since(next_then)),
                &sample(&now_live.since(live_then)),
            );
        }
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
                    let result = preview_check(addr).await;
                    this.checked(id, result);
                });
            }
        }
        let promotion = match &run.check {
            None => Promotion::NotConfigured,
            Some(Check::NotStarted | Check::Running) => Promotion::Pending,
            Some(Check::Done(p)) => p.clone(),
        };
        run.lost.extend(
            views
                .iter()
                .filter(|v| v.state == State::Lost && v.version == deployment.to)
                .map(|v| v.id.clone()),
        );
        let observed = Observed {
            lost: u32::try_from(run.lost.len()).unwrap_or(u32::MAX),
            promotion,
            target: deployment.to.clone(),
            previous: deployment.from.clone(),
            desired: inner.desired,
            instances: views,
            deadline_passed: deadline_passed || inner.launch_error.is_some(),
            launches_in_flight,
            aborted: match &deployment.progress {
                Progress::Aborting { reason } | Progress::RolledBack { reason } => {
                    Some(reason.clone())
                }
                _ => None,
            },
            step: StepObserved {
                index: run.step,
                held_for: run.window.as_ref().map(|(at, _, _)| at.elapsed()),
                verdict: run.verdict.clone(),
                promote: run.promote,
                paused: run.paused,
                waiting: matches!(&deployment.progress, Progress::Paused { step, .. } if *step == run.step),
            },
        };
        let mut plan = run.strategy.plan(&observed);
        if let (Some(err), Progress::Aborting { reason } | Progress::RolledBack { reason }) =
            (&inner.launch_error, &mut plan.progress)
        {
            *reason = format!("{} could not be started: {err}", observed.target);
        }
        let mut records = Vec::new();
        if plan.step != run.step {
            let verdict = match run.promote {
                Some(_) => "promoted".to_owned(),
                None => run.verdict.to_string(),
            };
            records.push((run.step, verdict));
            run.step = plan.step;
            run.window = None;
            run.verdict = Verdict::default();
            run.promote = None;
            self.wake.notify_one();
        } else if plan.reached && run.window.is_none() {
            run.window = Some((
                Instant::now(),
                self.plane.group_metrics(live).unwrap_or_default(),
                self.plane.group_metrics(other(live)).unwrap_or_default(),
            ));
        }
        if let (Verdict::Fail { .. }, Progress::Aborting { .. }) = (&run.verdict, &plan.progress) {
            if deployment.progress == Progress::Rolling
                || matches!(deployment.progress, Progress::Paused { .. })
            {
                records.push((run.step, run.verdict.to_string()));
            }
        }
        let uses_next = run.strategy.uses_next_set();
        let keeps_warm = run.strategy.keeps_previous_warm();
        let steps = match &run.strategy {
            Strategy::Canary(c) => c.steps.clone(),
            _ => Vec::new(),
        };
        let observed_views = observed.instances;
        inner.run = Some(run);
        self.apply_weights(inner, plan.traffic, &observed_views);

        let finished = matches!(plan.progress, Progress::Done | Progress::RolledBack { .. });
        let mut changed = None;
        if let Some((d, started)) = inner.deployment.as_mut() {
            for (index, verdict) in records {
                d.steps.push(StepRecord {
                    step: index + 1,
                    what: cutover_rollout::step::describe(steps.get(index)),
                    verdict,
                    at: now_rfc3339(),
                });
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
                        inner.live = other(inner.live);
                        self.persist("live group", self.store.set_meta(LIVE_KEY, inner.live));
                        self.plane.set_preview(other(inner.live));
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
    fn prune(&self, inner: &Inner) {
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

    /// Sets the two groups' weights for `traffic`, in one routing change, if they differ.
    fn apply_weights(&self, inner: &mut Inner, traffic: Traffic, views: &[InstanceView]) {
        let weights = traffic.weights(views);
        if weights == inner.weights {
            return;
        }
        let live = inner.live;
        match self
            .plane
            .set_weights(&[(live, weights.0), (other(live), weights.1)])
        {
            Ok(()) => {
                tracing::info!(
                    live = live,
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
    fn record(&self, inner: &Inner, action: &Action) {
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

    fn act(self: &Arc<Self>, inner: &mut Inner, action: Action) {
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

    async fn launch(self: Arc<Self>, id: InstanceId, version: String, group: &'static str) {
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
            Ok(instance) => match self.plane.register(group, &instance.target()).await {
                Ok(()) => Ok(instance),
                Err(e) => Err((Some(instance), e.to_string())),
            },
            Err(e) => Err((None, e.to_string())),
        };
        let mut inner = self.lock();
        if let Some(pos) = inner
            .launching
            .iter()
            .position(|(v, g)| *v == version && *g == group)
        {
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
    fn retire(self: &Arc<Self>, inner: &mut Inner, id: InstanceId, timeout: Duration) {
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
            if let Some(handle) = this.plane.deregister(group, &target, timeout).await {
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
    fn drained(&self, id: &InstanceId, report: &cutover_proxy::DrainReport) {
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

    /// The strategy called `name`, or the stack file's, with the stack file's settings.
    fn strategy(&self, name: Option<&str>) -> Result<Strategy, DeployError> {
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
            Named::Rolling => Strategy::Rolling(Rolling {
                max_surge: d.max_surge,
                max_unavailable: d.max_unavailable,
            }),
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

    fn begin(
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
            let next = other(inner.live);
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
        let mut run = Run::new(strategy);
        if matches!(run.strategy, Strategy::BlueGreen) && !onto_warm && self.preview.get().is_some()
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
    fn set_warm(&self, inner: &mut Inner, warm: Option<Warm>) -> Option<Warm> {
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

    fn checked(&self, id: u64, result: Result<(), String>) {
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
    async fn prepare(self: Arc<Self>, id: u64, version: String, cancel: CancellationToken) {
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
        let strategy = self.strategy(Some("rolling"))?;
        self.begin(&target, command, strategy, false)
    }

    /// Applies `f` to the run of the deployment in progress, which must have steps.
    fn steer(&self, f: impl FnOnce(&mut Run, &mut Deployment)) -> Result<Deployment, DeployError> {
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

    fn steer_steps(&self, f: impl FnOnce(&mut Run)) -> Result<Deployment, DeployError> {
        let mut refused = None;
        let d = self.steer(|run, d| {
            if matches!(run.strategy, Strategy::Canary(_)) {
                f(run);
            } else {
                refused = Some(DeployError::NotStepped(d.id, run.strategy.name()));
            }
        })?;
        refused.map_or(Ok(d), Err)
    }

    /// Moves a canary on to its next step now, or (`full`) straight to full size.
    pub fn promote(&self, full: bool) -> Result<Deployment, DeployError> {
        self.steer_steps(|run| {
            run.promote = Some(if full { Promote::Full } else { Promote::Next });
            run.paused = false;
        })
    }

    pub fn pause(&self) -> Result<Deployment, DeployError> {
        self.steer_steps(|run| run.paused = true)
    }

    pub fn resume(&self) -> Result<Deployment, DeployError> {
        self.steer_steps(|run| run.paused = false)
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
            if !matches!(d.progress, Progress::Aborting { .. }) {
                d.progress = Progress::Aborting {
                    reason: "aborted by `cutover abort`".into(),
                };
            }
        })
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
        self.lock().desired
    }

    /// The last scaling action, by a policy or by hand.
    pub fn last_scaling(&self) -> Option<ScalingRow> {
        self.lock().last_scaling.clone()
    }

    pub fn scaling_history(&self) -> Vec<ScalingRow> {
        self.store.scaling().unwrap_or_default()
    }

    /// Sets the desired size by hand, within min and max (`cutover scale N`).
    pub fn scale(&self, to: u32) -> Result<u32, DeployError> {
        let g = &self.spec.group;
        if to < g.min || to > g.max {
            return Err(DeployError::OutOfBounds(to, g.min, g.max));
        }
        let mut inner = self.lock();
        let from = inner.desired;
        if let Some(scaler) = inner.scaler.as_mut() {
            scaler.manual(from, to, Instant::now());
        }
        self.record_scaling(
            &mut inner,
            from,
            to,
            "set by `cutover scale`".into(),
            serde_json::Value::Null,
        );
        drop(inner);
        self.wake.notify_one();
        Ok(from)
    }

    fn record_scaling(
        &self,
        inner: &mut Inner,
        from: u32,
        to: u32,
        reason: String,
        metrics: serde_json::Value,
    ) {
        tracing::info!(from, to, %reason, "desired size changed");
        inner.desired = to;
        self.persist("scaling", self.store.scaled(from, to, &reason, &metrics));
        inner.last_scaling = Some(ScalingRow {
            at: now_rfc3339(),
            from,
            to,
            reason,
            metrics,
        });
    }

    /// Ends each policy's evaluation period when it is due: measures its metric, and lets the
    /// autoscaler decide on the periods so far.
    fn autoscale(&self) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(scaler) = inner.scaler.as_mut() else {
            return;
        };
        let now = Instant::now();
        let policies = scaler.spec().policies.clone();
        let requests: u64 = GROUPS
            .iter()
            .filter_map(|g| self.plane.group_metrics(g))
            .map(|m| m.requests)
            .sum();
        // Only groups that take traffic count: a warm set at weight 0 serves nothing.
        let serving: Vec<&'static str> = [
            (inner.live, inner.weights.0),
            (other(inner.live), inner.weights.1),
        ]
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .map(|(g, _)| g)
        .collect();
        let healthy = self
            .plane
            .status()
            .iter()
            .filter(|g| serving.contains(&g.name.as_str()))
            .flat_map(|g| &g.targets)
            .filter(|t| t.state == TargetState::Healthy)
            .count()
            .max(1) as f64;
        for (i, policy) in policies.iter().enumerate() {
            let Some(sampling) = inner.sampling.get_mut(i) else {
                continue;
            };
            let elapsed = now.saturating_duration_since(sampling.at);
            if elapsed < policy.period {
                continue;
            }
            let value = match policy.kind {
                cutover_spec::PolicyKind::Cpu { .. } => {
                    let mut cpu = BTreeMap::new();
                    let mut percents = Vec::new();
                    for (id, t) in &inner.instances {
                        if inner.draining.contains(id) || !serving.contains(&t.group) {
                            continue;
                        }
                        let Some(used) = cutover_fleet::cpu::group_cpu_time(t.instance.pid) else {
                            continue;
                        };
                        if let Some(before) = sampling.cpu.get(id) {
                            let busy = used.saturating_sub(*before).as_secs_f64();
                            percents.push(100.0 * busy / elapsed.as_secs_f64());
                        }
                        cpu.insert(id.clone(), used);
                    }
                    sampling.cpu = cpu;
                    (!percents.is_empty())
                        .then(|| percents.iter().sum::<f64>() / percents.len() as f64)
                }
                _ => {
                    let per_minute = requests.saturating_sub(sampling.requests) as f64
                        / (elapsed.as_secs_f64() / 60.0);
                    Some(per_minute / healthy)
                }
            };
            sampling.at = now;
            sampling.requests = requests;
            if let Some(v) = value {
                scaler.record(i, v);
            }
        }
        // Capacity still starting is not capacity yet: no decision until it is healthy.
        let pending = inner
            .instances
            .iter()
            .any(|(id, t)| t.healthy_at.is_none() && !inner.draining.contains(id))
            || !inner.launching.is_empty();
        let current = inner.desired;
        if let Some(d) = scaler.decide(current, now, pending) {
            let metrics = serde_json::to_value(&d.metrics).unwrap_or_default();
            self.record_scaling(inner, d.from, d.to, d.reason, metrics);
            drop(guard);
            self.wake.notify_one();
        }
    }

    /// The previous version kept warm for a rollback by flip, and how long it stays.
    pub fn warm(&self) -> Option<(String, Duration)> {
        let inner = self.lock();
        let w = inner.warm.as_ref()?;
        Some((
            w.version.clone(),
            w.until.saturating_duration_since(Instant::now()),
        ))
    }

    pub fn current(&self) -> String {
        self.lock().current.clone()
    }

    pub fn instances(&self) -> Vec<InstanceStatus> {
        let mut inner = self.lock();
        let views = self.observe(&mut inner);
        let status: BTreeMap<String, cutover_proxy::TargetStatus> = self
            .plane
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
                    group: t.group,
                    pid: t.instance.pid,
                    port: t.instance.port,
                    state: v.state,
                    health: h.map(|h| h.state),
                    reason: h.and_then(|h| h.reason).map(|r| r.as_str()),
                    in_flight: h.map(|h| h.in_flight).unwrap_or(0),
                    rps: h.map(|h| h.rps).unwrap_or(0),
                })
            })
            .collect()
    }

    /// A new data plane took over from one that died: gives it every instance's target in the
    /// group it was in, the preview group, and (at the next step) the weights.
    pub async fn resync(self: &Arc<Self>) {
        let (targets, live) = {
            let mut inner = self.lock();
            // Weights no plan computes, so the next step sends the real ones.
            inner.weights = (u32::MAX, u32::MAX);
            let targets: Vec<(&'static str, String)> = inner
                .instances
                .iter()
                .filter(|(id, _)| !inner.draining.contains(*id))
                .map(|(_, t)| (t.group, t.instance.target()))
                .collect();
            (targets, inner.live)
        };
        self.plane.set_preview(other(live));
        for (group, target) in targets {
            if let Err(e) = self.plane.register(group, &target).await {
                tracing::error!(%group, %target, error = %e, "cannot give the new data plane a target");
            }
        }
        tracing::info!("the new data plane has the fleet's targets");
        self.wake.notify_one();
    }

    /// Drains and stops every instance (for `cutover stop` and SIGTERM).
    pub async fn shutdown(self: &Arc<Self>) {
        // A launch still in flight would track its instance after the ids below are taken, and
        // that instance would outlive the stack. Nothing starts new launches any more.
        let deadline = Instant::now() + LAUNCH_DEADLINE;
        while !self.lock().launching.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

fn sample(m: &MetricsSnapshot) -> Sample {
    let answered: u64 = m.responses.iter().sum::<u64>() + m.proxy_errors;
    Sample {
        requests: answered,
        errors: m.responses[4] + m.proxy_errors,
        p99: m.quantile(0.99),
    }
}

/// Sends [`PREVIEW_REQUESTS`] requests for `/` through the preview listener at `addr`: every one
/// must be answered by the new set below 500.
async fn preview_check(addr: std::net::SocketAddr) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    for _ in 0..PREVIEW_REQUESTS {
        match client.get(format!("http://{addr}/")).send().await {
            Ok(r) if r.status().as_u16() < 500 => {}
            Ok(r) => failures.push(format!("HTTP {}", r.status().as_u16())),
            Err(e) => failures.push(e.without_url().to_string()),
        }
    }
    match failures.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} of {PREVIEW_REQUESTS} requests through the preview listener failed, first: {first}",
            failures.len()
        )),
    }
}
