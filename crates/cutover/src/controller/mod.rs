//! The controller, the daemon of one host: keeps the group at its desired size on the current
//! release, and drives each deploy's [`cutover_rollout::Decider`] from what it observes of the
//! fleet and the data plane. Its chores live in small modules: recovery at start, upkeep (each
//! wake-up), observation, instances, deployment, scaling; this one holds the state they share
//! and the admin API's facade.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cutover_deploy::{
    Action, Canary, InstanceView, Progress, Promote, Promotion, Rolling, Sample, Set, State,
    Strategy,
};
use cutover_deploy::{CrashLoop, End, Restarts};
use cutover_fleet::autoscale::Autoscaler;
use cutover_fleet::{Exit, Instance, InstanceId, LaunchSpec, LocalFleet};
use cutover_proxy::metrics::MetricsSnapshot;
use cutover_proxy::target::{Reason, TargetState};
use cutover_rollout::{Bounds, Decider, Launching, Look};
use cutover_spec::Spec;
use cutover_store::{DeploymentRow, InstanceRow, ScalingRow, Store};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::plane::Plane;
use cutover_api::drains::{self, Drains};
use cutover_control::Side;

mod deployment;
mod instances;
mod observe;
mod recovery;
mod scaling;
mod upkeep;

/// How often instance logs are checked against their size limit.
const LOG_ROTATION_CHECK: Duration = Duration::from_secs(5);
/// How often the controller looks again when nothing wakes it sooner.
const TICK: Duration = Duration::from_millis(100);
/// How long a shutdown waits for launches in flight (a process start and one registration).
const LAUNCH_DEADLINE: Duration = Duration::from_secs(10);
/// The store's key for which of [`GROUPS`] is live, so a controller that adopts a running data
/// plane knows which group is which.
const LIVE_KEY: &str = "live";

pub use cutover_api::admin::{Deployment, InstanceStatus};

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
    #[error(transparent)]
    NoRollbackTarget(#[from] cutover_rollout::NoTarget),
    #[error("no strategy named `{0}`; expected one of {1}")]
    BadStrategy(String, String),
    #[error("desired size {0} is outside the group's min {1} and max {2}")]
    OutOfBounds(u32, u32, u32),
    #[error("no deployment is in progress")]
    NoDeployment,
    #[error("deployment {0} uses the {1} strategy; only a canary has steps to promote or pause")]
    NotStepped(u64, &'static str),
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
    group: Side,
}

impl Tracked {
    fn new(instance: Instance, group: Side) -> Self {
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

/// What the controller keeps of the deployment in progress beyond its record: its course (the
/// decider), and what only a local deploy has.
struct Run {
    decider: Decider,
    /// Each group's totals when the current step's window began (live, next).
    window: Option<(MetricsSnapshot, MetricsSnapshot)>,
    /// The release is being fetched and unpacked: nothing may change until it is ready.
    preparing: bool,
    /// Cancels that preparation (`cutover abort`).
    cancel_prepare: CancellationToken,
    /// Blue-green's probe through the preview listener: `None` when there is none to run.
    check: Option<Check>,
}

#[derive(Debug, Clone, PartialEq)]
enum Check {
    NotStarted,
    Running,
    Done(Promotion),
}

impl Run {
    fn new(decider: Decider) -> Self {
        Self {
            decider,
            window: None,
            preparing: false,
            cancel_prepare: CancellationToken::new(),
            check: None,
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
    /// Launches under way: instance, version and group.
    launching: Vec<(InstanceId, String, Side)>,
    /// The side that takes the traffic between deploys; the other holds a new version while a
    /// strategy shifts traffic to it, then the previous one, kept warm for an instant rollback.
    live: Side,
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
    /// Writes to the store; a failed write is warned about, not fatal: serving traffic matters
    /// more.
    fn persist(&self, what: &str, result: Result<(), cutover_store::StoreError>) {
        self.writes.record(what, result);
    }

    /// Whether the state database takes writes, for `cutover status`.
    pub fn writes(&self) -> Option<cutover_api::admin::StateWrites> {
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
            progress: d.progress.clone(),
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

    /// Slots backing off, and the crash loop if there is one: for `cutover status`.
    pub fn restarts(&self) -> cutover_api::admin::Restarts {
        let inner = self.lock();
        let backing_off = inner
            .restarts
            .held(Instant::now())
            .into_iter()
            .map(|h| cutover_api::admin::BackingOff {
                version: h.version,
                died_young: h.deaths,
                for_ms: u64::try_from(h.for_.as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        cutover_api::admin::Restarts {
            backing_off,
            crash_loop: inner.crash_loop.as_ref().map(|l| l.to_string()),
        }
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
                    reason: h.and_then(|h| h.reason),
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
            let targets: Vec<(Side, String)> = inner
                .instances
                .iter()
                .filter(|(id, _)| !inner.draining.contains(*id))
                .map(|(_, t)| (t.group, t.instance.target()))
                .collect();
            (targets, inner.live)
        };
        self.plane.set_preview(live.other());
        for (group, target) in targets {
            if let Err(e) = self.plane.register(group.name(), &target).await {
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
