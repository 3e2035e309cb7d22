//! The observer: owns groups, targets and their health, applies reports, and publishes routing snapshots.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::drain::{self, DrainHandle};
use crate::health::{self, HealthConfig};
use crate::metrics::MetricsSnapshot;
pub use crate::report::Report;
use crate::table::{Balance, GroupRoute, Snapshot};
use crate::target::{Event, Health, Reason, TargetState};
use crate::tries;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The caller named a group that does not exist; not retryable.
    #[error("no target group named `{0}`")]
    NoGroup(String),
    /// The target's address did not resolve; retryable if DNS was at fault.
    #[error("target `{0}` does not resolve to an address: {1}")]
    Resolve(String, String),
    #[error("weight {0} is above 999")]
    Weight(u32),
}

/// Consecutive proxy-visible failures that eject a target.
const PASSIVE_THRESHOLD: u32 = 3;
/// How long an ejected target stays out before an active check may readmit it.
const EJECT_BACK_OFF: Duration = Duration::from_secs(5);
/// How often the tick notes which targets answered: the resolution of telling a hung target
/// (nothing answered during a whole try) from a slow request.
const PROGRESS_TICK: Duration = Duration::from_millis(100);
const TICKS_PER_SECOND: u32 = 10;
/// Seconds of answers a group's p99 is taken over.
const P99_WINDOW: usize = 10;

struct TargetEntry {
    backend: Arc<Backend>,
    health: Health,
    checker: CancellationToken,
}

struct GroupState {
    weight: u32,
    balance: Balance,
    health: Arc<HealthConfig>,
    targets: BTreeMap<String, TargetEntry>,
    /// Counts of targets that have left, so group totals never go backwards.
    retired: MetricsSnapshot,
    /// The group's totals once a second, oldest first, over [`P99_WINDOW`] seconds.
    window: VecDeque<MetricsSnapshot>,
    /// The last p99 worth trusting, handed to targets as they join.
    p99: Option<Duration>,
}

impl GroupState {
    fn totals(&self) -> MetricsSnapshot {
        let mut total = self.retired.clone();
        for e in self.targets.values() {
            total.add(&e.backend.metrics.snapshot());
        }
        total
    }

    /// The p99 of the answers in the window, once there are enough of them to trust; the last
    /// trusted one while traffic is thin.
    fn recent_p99(&mut self) -> Option<Duration> {
        let now = self.totals();
        if self.window.len() >= P99_WINDOW {
            self.window.pop_front();
        }
        let p99 = self.window.front().and_then(|oldest| {
            let recent = now.since(oldest);
            let answers: u64 = recent.latency.iter().sum();
            (answers >= tries::P99_MIN_ANSWERS)
                .then(|| recent.quantile(0.99))
                .flatten()
        });
        self.window.push_back(now);
        if p99.is_some() {
            self.p99 = p99;
        }
        self.p99
    }
}

/// A target as `cutover status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub target: String,
    pub state: TargetState,
    pub reason: Option<Reason>,
    pub ejected: bool,
    pub in_flight: usize,
    pub upgraded: usize,
    pub requests: u64,
    /// Requests in the last full second.
    pub rps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub name: String,
    pub weight: u32,
    pub targets: Vec<TargetStatus>,
}

/// Groups and targets. The request path reads only [`Registry::table`]; everything else locks.
pub struct Registry {
    groups: Mutex<BTreeMap<String, GroupState>>,
    table: ArcSwap<Snapshot>,
    reports: mpsc::UnboundedSender<Report>,
}

impl Registry {
    /// A registry and the observer task that applies reports to it.
    pub fn new() -> Arc<Self> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Report>();
        let registry = Arc::new(Self {
            groups: Mutex::new(BTreeMap::new()),
            table: ArcSwap::from_pointee(Snapshot::default()),
            reports: tx,
        });
        let weak = Arc::downgrade(&registry);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PROGRESS_TICK);
            let mut ticks: u32 = 0;
            loop {
                tokio::select! {
                    report = rx.recv() => {
                        let (Some(report), Some(registry)) = (report, weak.upgrade()) else { return };
                        registry.apply(report);
                    }
                    _ = tick.tick() => {
                        let Some(registry) = weak.upgrade() else { return };
                        ticks = ticks.wrapping_add(1);
                        registry.tick(ticks.is_multiple_of(TICKS_PER_SECOND));
                    }
                }
            }
        });
        registry
    }

    /// Notes which targets answered since the last tick; once a second also their request
    /// rates and each group's recent p99 (for `auto` try timeouts).
    fn tick(&self, second: bool) {
        let now = std::time::Instant::now();
        let mut groups = self.lock();
        for g in groups.values_mut() {
            for e in g.targets.values() {
                e.backend.pace.tick(e.backend.metrics.answered(), now);
                if second {
                    e.backend.sample_rate();
                }
            }
            if second {
                let p99 = g.recent_p99();
                if p99.is_some() {
                    for e in g.targets.values() {
                        e.backend.pace.set_group_p99(p99);
                    }
                }
            }
        }
    }

    /// The current routing snapshot: a lock-free read.
    pub fn table(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.table.load()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, GroupState>> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.groups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a group, or updates its health settings and balance if it exists.
    pub fn ensure_group(
        &self,
        name: &str,
        weight: u32,
        balance: Balance,
        health: HealthConfig,
    ) -> Result<(), RegistryError> {
        if weight > 999 {
            return Err(RegistryError::Weight(weight));
        }
        let mut groups = self.lock();
        let health = Arc::new(health);
        groups
            .entry(name.to_owned())
            .and_modify(|g| {
                g.balance = balance;
                g.health = health.clone();
            })
            .or_insert_with(|| GroupState {
                weight,
                balance,
                health,
                targets: BTreeMap::new(),
                retired: MetricsSnapshot::default(),
                // Counts start at zero: the first second's answers are in the window at once.
                window: VecDeque::from([MetricsSnapshot::default()]),
                p99: None,
            });
        self.publish(&groups);
        Ok(())
    }

    /// Sets several groups' weights in one routing change.
    pub fn set_weights(&self, weights: &[(&str, u32)]) -> Result<(), RegistryError> {
        let mut groups = self.lock();
        for (name, w) in weights {
            if *w > 999 {
                return Err(RegistryError::Weight(*w));
            }
            if !groups.contains_key(*name) {
                return Err(RegistryError::NoGroup((*name).to_owned()));
            }
        }
        for (name, w) in weights {
            if let Some(g) = groups.get_mut(*name) {
                g.weight = *w;
            }
        }
        self.publish(&groups);
        Ok(())
    }

    /// Adds a target to a group; it starts in `initial` and takes traffic once its checks pass.
    pub async fn register(&self, group: &str, target: &str) -> Result<Arc<Backend>, RegistryError> {
        let addr = resolve(target).await?;
        let mut groups = self.lock();
        let g = groups
            .get_mut(group)
            .ok_or_else(|| RegistryError::NoGroup(group.to_owned()))?;
        if let Some(existing) = g.targets.get(target) {
            if existing.health.state != TargetState::Draining {
                return Ok(existing.backend.clone());
            }
        }
        let backend = Backend::new(Arc::from(group), target.to_owned(), addr);
        backend.pace.set_group_p99(g.p99);
        let checker = CancellationToken::new();
        health::spawn(
            group.to_owned(),
            backend.clone(),
            g.health.clone(),
            self.reports.clone(),
            checker.clone(),
        );
        if let Some(old) = g.targets.insert(
            target.to_owned(),
            TargetEntry {
                backend: backend.clone(),
                health: Health::new(),
                checker,
            },
        ) {
            old.checker.cancel();
            g.retired.add(&old.backend.metrics.snapshot());
        }
        self.publish(&groups);
        Ok(backend)
    }

    /// Takes a target out of rotation at once and drains it; the handle resolves when nothing is
    /// in flight any more, or at `timeout`. `None` if the target is not registered.
    pub fn deregister(
        self: &Arc<Self>,
        group: &str,
        target: &str,
        timeout: Duration,
    ) -> Option<DrainHandle> {
        let mut groups = self.lock();
        let g = groups.get_mut(group)?;
        let entry = g.targets.get_mut(target)?;
        entry.checker.cancel();
        let health_config = g.health.thresholds;
        entry.health = entry
            .health
            .on(Event::Deregister, health_config, std::time::Instant::now());
        let backend = entry.backend.clone();
        self.publish(&groups);
        drop(groups);
        let (tx, rx) = watch::channel(None);
        let registry = self.clone();
        let (group, target) = (group.to_owned(), target.to_owned());
        tokio::spawn(async move {
            // A deadline past what the clock can hold is no deadline: drain until done.
            let now = tokio::time::Instant::now();
            let deadline = now
                .checked_add(timeout)
                .unwrap_or_else(|| now + Duration::from_secs(30 * 24 * 3600));
            let report = drain::drain(backend.clone(), deadline).await;
            registry.forget(&group, &target, &backend);
            let _ = tx.send(Some(report));
        });
        Some(DrainHandle::new(rx))
    }

    fn forget(&self, group: &str, target: &str, backend: &Arc<Backend>) {
        let mut groups = self.lock();
        if let Some(g) = groups.get_mut(group) {
            if g.targets
                .get(target)
                .is_some_and(|e| Arc::ptr_eq(&e.backend, backend))
            {
                if let Some(old) = g.targets.remove(target) {
                    g.retired.add(&old.backend.metrics.snapshot());
                }
            }
        }
        self.publish(&groups);
    }

    /// The request path's view of one exchange with a target: failures in a row eject it.
    /// Lock-free: the count lives on the backend and an ejection goes to the observer.
    pub fn passive(&self, backend: &Arc<Backend>, ok: bool) {
        if ok {
            if backend.failures.load(Ordering::Relaxed) != 0 {
                backend.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let failures = backend.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures == PASSIVE_THRESHOLD {
            self.eject(backend, "consecutive failures");
        }
    }

    /// A try on `backend` timed out and the target answered nothing at all meanwhile: it is
    /// hung (stopped, deadlocked, its event loop blocked), so it is ejected at once, before
    /// active checks notice and before the other requests waiting on it time out too. Many
    /// waiting tries find out at about the same time; one ejection is enough.
    pub fn stalled(&self, backend: &Arc<Backend>) {
        if backend
            .failures
            .fetch_max(PASSIVE_THRESHOLD, Ordering::Relaxed)
            < PASSIVE_THRESHOLD
        {
            self.eject(backend, "no answer during a whole try");
        }
    }

    fn eject(&self, backend: &Arc<Backend>, why: &'static str) {
        let until = std::time::Instant::now() + EJECT_BACK_OFF;
        let _ = self.reports.send(Report {
            group: backend.group.to_string(),
            backend: backend.clone(),
            event: Event::Eject { until },
            why,
        });
    }

    fn apply(&self, report: Report) {
        let mut groups = self.lock();
        if matches!(report.event, Event::Eject { .. }) && !others_routable(&groups, &report.backend)
        {
            // Ejecting the last target that takes traffic would turn some failed requests into
            // every request failing (no healthy target): it stays, and active checks judge it.
            report.backend.failures.store(0, Ordering::Relaxed);
            tracing::debug!(target = %report.backend.key, why = report.why, "not ejected: the last routable target");
            return;
        }
        let Some(g) = groups.get_mut(&report.group) else {
            return;
        };
        let thresholds = g.health.thresholds;
        let Some(entry) = g.targets.get_mut(&report.backend.key) else {
            return;
        };
        if !Arc::ptr_eq(&entry.backend, &report.backend) {
            return;
        }
        let before = entry.health;
        entry.health = entry
            .health
            .on(report.event, thresholds, std::time::Instant::now());
        if matches!(report.event, Event::Eject { .. }) {
            report.backend.failures.store(0, Ordering::Relaxed);
            if !before.is_ejected() {
                tracing::warn!(group = %report.group, target = %report.backend.key, why = report.why, "ejected");
            }
        }
        if before.is_routable() != entry.health.is_routable() || before.state != entry.health.state
        {
            tracing::info!(group = %report.group, target = %report.backend.key, state = ?entry.health.state,
                reason = ?entry.health.reason.map(|r| r.as_str()), "target changed");
            self.publish(&groups);
        }
    }

    /// Builds and swaps in a new routing snapshot. A group with no healthy target fails open
    /// (sends to all its targets) only when no other group with weight has a healthy one: a
    /// canary set that turns unhealthy must lose its share, not have it sent to sick instances.
    fn publish(&self, groups: &BTreeMap<String, GroupState>) {
        let healthy = |g: &GroupState| -> Vec<Arc<Backend>> {
            g.targets
                .values()
                .filter(|e| e.health.is_routable())
                .map(|e| e.backend.clone())
                .collect()
        };
        let mut routes: Vec<(GroupRoute, bool)> = groups
            .iter()
            .map(|(name, g)| {
                let mut targets = healthy(g);
                let failing_open = targets.is_empty() && g.health.fail_open;
                if failing_open {
                    targets = g
                        .targets
                        .values()
                        .filter(|e| e.health.state != TargetState::Draining)
                        .map(|e| e.backend.clone())
                        .collect();
                }
                let route = GroupRoute::new(Arc::from(name.as_str()), g.weight, g.balance, targets);
                (route, failing_open)
            })
            .collect();
        let any_healthy = routes
            .iter()
            .any(|(r, open)| !open && r.weight > 0 && !r.targets.is_empty());
        if any_healthy {
            for (route, _) in routes.iter_mut().filter(|(_, open)| *open) {
                route.targets.clear();
            }
        }
        let routes: Vec<GroupRoute> = routes.into_iter().map(|(r, _)| r).collect();
        self.table.store(Arc::new(Snapshot::new(routes)));
    }

    pub fn status(&self) -> Vec<GroupStatus> {
        let groups = self.lock();
        groups
            .iter()
            .map(|(name, g)| GroupStatus {
                name: name.clone(),
                weight: g.weight,
                targets: g
                    .targets
                    .iter()
                    .map(|(key, e)| TargetStatus {
                        target: key.clone(),
                        state: e.health.state,
                        reason: e.health.reason,
                        ejected: e.health.is_ejected(),
                        in_flight: e.backend.in_flight(),
                        upgraded: e.backend.upgraded(),
                        requests: e.backend.metrics.snapshot().requests,
                        rps: e.backend.rps(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// A group's totals, including targets that have left.
    pub fn group_metrics(&self, group: &str) -> Option<MetricsSnapshot> {
        let groups = self.lock();
        Some(groups.get(group)?.totals())
    }

    /// Prometheus text for every target and group.
    pub fn metrics_text(&self) -> String {
        let groups = self.lock();
        let mut out = String::new();
        out.push_str(
            "# TYPE cutover_requests_total counter\n# TYPE cutover_responses_total counter\n",
        );
        out.push_str(
            "# TYPE cutover_request_duration_seconds histogram\n# TYPE cutover_in_flight gauge\n",
        );
        for (name, g) in groups.iter() {
            let _ = std::fmt::Write::write_fmt(
                &mut out,
                format_args!("cutover_group_weight{{group=\"{name}\"}} {}\n", g.weight),
            );
            for (key, e) in &g.targets {
                let labels = format!("group=\"{name}\",target=\"{key}\"");
                e.backend.metrics.snapshot().render(&mut out, &labels);
                let _ = std::fmt::Write::write_fmt(
                    &mut out,
                    format_args!("cutover_in_flight{{{labels}}} {}\n", e.backend.in_flight()),
                );
            }
        }
        out
    }
}

/// Whether any target but `backend` takes traffic, in a group with weight.
fn others_routable(groups: &BTreeMap<String, GroupState>, backend: &Arc<Backend>) -> bool {
    groups.values().filter(|g| g.weight > 0).any(|g| {
        g.targets
            .values()
            .any(|e| e.health.is_routable() && !Arc::ptr_eq(&e.backend, backend))
    })
}

async fn resolve(target: &str) -> Result<SocketAddr, RegistryError> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs = tokio::net::lookup_host(target)
        .await
        .map_err(|e| RegistryError::Resolve(target.to_owned(), e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| RegistryError::Resolve(target.to_owned(), "no addresses".into()))
}
