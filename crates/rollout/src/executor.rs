//! The executor: observes the fleet and the two target groups, asks the strategy's pure planner
//! what to do, records it, and does it: launch, register once ready, shift the weights,
//! deregister and wait for the drain to end, terminate. Every wait is bounded by the progress
//! deadline, and the message that ends one names the instance and what it was waiting for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use cutover_control::{Side, TargetHealth, TargetState};
use cutover_deploy::{
    Action, InstanceView, Limits, Observed, Plan, Progress, Promote, Promotion, Set, State,
    Strategy,
};
use cutover_store::Store;
use tokio::time::Instant;

use crate::failure::Failure;
use crate::fleet::{Fleet, Machine, MachineState};
use crate::journal::{Event, Journal, Outcome};
use crate::step::Stepper;
use crate::traffic::TrafficPlane;

/// What the operator asks of a deployment picked up from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// Go on from where it is (after a process that ran it stopped).
    Continue,
    Promote(Promote),
    /// Roll back: remove what it launched, restore the old version's traffic.
    Abort,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub strategy: Strategy,
    pub desired: u32,
    pub progress_deadline: Duration,
    /// The target groups' deregistration delay; a drain not over a minute past it is cut.
    pub drain_timeout: Duration,
    /// How often AWS is asked how things stand.
    pub poll: Duration,
    /// The Auto Scaling group the deploy rolls inside, if any; other groups' instances are
    /// theirs to replace and left alone.
    pub group: Option<String>,
    /// The store key naming the live side.
    pub live_key: &'static str,
    /// What a canary step's analysis holds the new side to.
    pub analysis: Limits,
}

/// One deployment in progress, with what the executor remembers between observations.
pub struct Rollout<'a, C, T> {
    fleet: &'a C,
    traffic: &'a T,
    settings: Settings,
    journal: Journal<'a>,
    live: Side,
    /// Instances alive when the deploy began or launched by it: one of them gone means someone
    /// or something else took it away.
    known: HashSet<String>,
    /// Launched, not yet listed by DescribeInstances (which is eventually consistent).
    unseen: HashMap<String, (String, Set)>,
    draining: HashMap<String, (Side, Instant)>,
    /// Each instance's side as last observed.
    sides: HashMap<String, Side>,
    terminated: HashSet<String>,
    /// When each instance was launched (or first seen, if an earlier run launched it).
    since: HashMap<String, Instant>,
    weights: Option<(u32, u32)>,
    aborted: Option<(String, Instant)>,
    step: Stepper,
}

impl<'a, C, T> Rollout<'a, C, T>
where
    C: Fleet,
    T: TrafficPlane<Error = C::Error>,
{
    /// Records a new deployment from the store's current release to `target`.
    pub fn begin(
        fleet: &'a C,
        traffic: &'a T,
        store: &'a Store,
        settings: Settings,
        target: &str,
        on_event: impl FnMut(&Event) + 'a,
    ) -> Result<Self, C::Error> {
        let journal = Journal::begin(
            store,
            target,
            settings.strategy.name(),
            settings.live_key,
            on_event,
        )?;
        Self::new(fleet, traffic, settings, journal)
    }

    /// A run of `journal`'s deployment that remembers nothing yet: every observation rebuilds
    /// what it needs from the fleet and the traffic plane.
    fn new(
        fleet: &'a C,
        traffic: &'a T,
        settings: Settings,
        journal: Journal<'a>,
    ) -> Result<Self, C::Error> {
        let live = journal.live()?;
        Ok(Self {
            fleet,
            traffic,
            settings,
            journal,
            live,
            known: HashSet::new(),
            unseen: HashMap::new(),
            draining: HashMap::new(),
            sides: HashMap::new(),
            terminated: HashSet::new(),
            since: HashMap::new(),
            weights: None,
            aborted: None,
            step: Stepper::default(),
        })
    }

    /// Picks up the deployment in progress where its record says it is, with what the operator
    /// asks of it; `None` if no deployment is in progress.
    pub fn resume(
        fleet: &'a C,
        traffic: &'a T,
        store: &'a Store,
        settings: Settings,
        ask: Ask,
        on_event: impl FnMut(&Event) + 'a,
    ) -> Result<Option<Self>, C::Error> {
        let Some(journal) = Journal::resume(store, settings.live_key, on_event)? else {
            return Ok(None);
        };
        let mut step = Stepper::default();
        let mut aborted = None;
        match journal.recorded() {
            Progress::Paused { step: index, .. } => step.index = *index,
            Progress::Aborting { reason } => aborted = Some((reason.clone(), Instant::now())),
            _ => {
                // Left mid-step by a process that stopped: the steps already judged are behind.
                let done: Vec<crate::StepRecord> =
                    serde_json::from_value(journal.row.steps.clone()).unwrap_or_default();
                step.index = done.len();
            }
        }
        match ask {
            Ask::Continue => {}
            Ask::Promote(p) => step.promote = Some(p),
            Ask::Abort => {
                aborted.get_or_insert(("aborted by the operator".into(), Instant::now()));
            }
        }
        let mut rollout = Self::new(fleet, traffic, settings, journal)?;
        rollout.aborted = aborted;
        rollout.step = step;
        let what = match ask {
            Ask::Continue => "picked up where its record left it".to_owned(),
            Ask::Promote(Promote::Next) => "promoted to the next step".to_owned(),
            Ask::Promote(Promote::Full) => "promoted past every step".to_owned(),
            Ask::Abort => "aborted by the operator".to_owned(),
        };
        rollout.event("resume", what);
        Ok(Some(rollout))
    }

    pub fn id(&self) -> u64 {
        self.journal.id()
    }

    fn event(&mut self, kind: &'static str, detail: String) {
        self.journal.event(kind, detail);
    }

    fn side(&self, set: Set) -> Side {
        match set {
            Set::Live => self.live,
            Set::Next => self.live.other(),
        }
    }

    /// Runs the deployment to its end: done, or rolled back with the reason.
    pub async fn run(mut self) -> Result<Outcome, C::Error> {
        let first = self.journal.from().is_empty();
        self.weights = Some(self.traffic.weights().await?);
        for m in self.fleet.machines().await? {
            if !matches!(m.state, MachineState::Gone { .. }) {
                self.known.insert(m.id);
            }
        }
        let start = format!(
            "{} → {} ({}, {} instances, live group {})",
            if first {
                "nothing"
            } else {
                self.journal.from()
            },
            self.journal.to(),
            self.settings.strategy.name(),
            self.settings.desired,
            self.live.name()
        );
        self.event("start", start);
        loop {
            let plan = match self.tick(first).await {
                Ok(plan) => plan,
                Err(e) if e.retryable() => {
                    self.event("retry", e.to_string());
                    tokio::time::sleep(self.settings.poll).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.journal.progress(&plan.progress)?;
            match &plan.progress {
                Progress::Done => return self.finish(plan.progress).await,
                Progress::RolledBack { .. } => return self.finish(plan.progress).await,
                // Nobody tends a paused deploy here: it stops with its state in the store, and
                // `promote` or `resume` picks it up.
                Progress::Paused { .. } => {
                    let live = self.live;
                    return Ok(self.journal.paused(plan.progress, live));
                }
                Progress::Aborting { reason } => {
                    // An abort has its own bound: old instances relaunched and drains done
                    // within another progress deadline, or the deploy ends with the fleet as is.
                    let since = self
                        .aborted
                        .get_or_insert((reason.clone(), Instant::now()))
                        .1;
                    if since.elapsed() > self.settings.progress_deadline {
                        return self
                            .finish(Progress::RolledBack {
                                reason: format!(
                                    "{reason}; the rollback did not finish within the progress \
                                     deadline: check `cutover aws status`"
                                ),
                            })
                            .await;
                    }
                }
                _ => {}
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    async fn finish(self, progress: Progress) -> Result<Outcome, C::Error> {
        let live = if progress == Progress::Done && self.settings.strategy.uses_next_set() {
            self.live.other()
        } else {
            self.live
        };
        Ok(self.journal.finish(progress, live)?)
    }

    /// One observation, one plan, its actions carried out.
    async fn tick(&mut self, first: bool) -> Result<Plan, C::Error> {
        let machines = self.fleet.machines().await?;
        let mut health = HashMap::new();
        for side in Side::BOTH {
            health.insert(side, self.traffic.health(side).await?);
        }
        let mut views = self.observe(&machines, &health).await?;
        if let Some(since) = self.step.since() {
            // The analysis window: the new side against the live one since the step's traffic
            // was in place.
            let next = self.traffic.sample(self.live.other(), since).await?;
            let live = self.traffic.sample(self.live, since).await?;
            self.step.judge(&self.settings.analysis, next, live);
        }
        // A rolling deploy runs in the live group alone: a set kept warm in the other one by an
        // earlier blue-green deploy takes no traffic, and goes now.
        let mut expire = Vec::new();
        if !self.settings.strategy.uses_next_set() {
            views.retain(|v| {
                let warm = v.set == Set::Next;
                if warm && matches!(v.state, State::Healthy | State::Starting) {
                    expire.push(Action::Drain { id: v.id.clone() });
                }
                !warm || v.state == State::Draining
            });
        }
        let target = self.journal.to().to_owned();
        // The deadline bounds each new instance's way to serving, not the deploy: a canary
        // step may hold far longer, and its own window bounds it.
        let deadline = self.settings.progress_deadline;
        let late = |id: &String| self.since.get(id).is_some_and(|at| at.elapsed() > deadline);
        let deadline_passed = views
            .iter()
            .any(|v| v.version == target && v.state == State::Starting && late(&v.id))
            || self.unseen.keys().any(late);
        if deadline_passed && self.aborted.is_none() {
            let waiting = waiting_for(&views, &machines, &health, &target);
            let reason = format!(
                "{target} did not finish within the progress deadline ({}){}",
                humantime::format_duration(self.settings.progress_deadline),
                if waiting.is_empty() {
                    String::new()
                } else {
                    format!(": {}", waiting.join("; "))
                }
            );
            self.aborted = Some((reason, Instant::now()));
        }
        let observed = Observed {
            target: target.clone(),
            previous: self.journal.from().to_owned(),
            desired: self.settings.desired,
            launches_in_flight: self.unseen.values().cloned().collect(),
            instances: views.clone(),
            deadline_passed,
            aborted: self.aborted.as_ref().map(|(r, _)| r.clone()),
            step: self.step.observed(self.journal.recorded()),
            promotion: Promotion::NotConfigured,
            // EC2 instances that die are Auto Scaling's or the operator's to replace; every
            // failure aborts here.
            lost: 0,
        };
        let mut plan = self.settings.strategy.plan(&observed);
        if let Strategy::Canary(c) = &self.settings.strategy {
            if let Some(record) =
                self.step
                    .after(&plan, &c.steps, Instant::now(), SystemTime::now())
            {
                self.journal.step(record)?;
            }
        }
        if first {
            // Nothing to go back to: an abort removes what was launched and stops there.
            if let Progress::Aborting { reason } | Progress::RolledBack { reason } = &plan.progress
            {
                let reason = reason.clone();
                let actions: Vec<Action> = views
                    .iter()
                    .filter(|v| v.state != State::Draining)
                    .map(|v| Action::Remove { id: v.id.clone() })
                    .collect();
                let progress = if views.is_empty() && self.unseen.is_empty() {
                    Progress::RolledBack { reason }
                } else {
                    Progress::Aborting { reason }
                };
                plan = Plan::simple(progress, actions, plan.traffic);
            }
        }
        if plan.progress == Progress::Done && !self.draining.is_empty() {
            // Done means the old instances are gone, not merely deregistered.
            plan.progress = Progress::Rolling;
        }
        if let Err(e) = self.apply_weights(plan.traffic.weights(&views)).await {
            // The plan's actions assume its traffic split (a drain after a flip): none of them
            // happen, and the next observation plans again.
            self.failed(e)?;
            if plan.progress == Progress::Done {
                plan.progress = Progress::Rolling;
            }
            plan.actions.clear();
            return Ok(plan);
        }
        for action in expire.into_iter().chain(plan.actions.clone()) {
            if let Err(e) = self.act(&action).await {
                self.failed(e)?;
            }
        }
        Ok(plan)
    }

    /// A call that failed: tried again next time if it may succeed then, else the deploy is
    /// aborted with it as the reason. A call that fails during the abort itself ends the run.
    fn failed(&mut self, e: C::Error) -> Result<(), C::Error> {
        if e.retryable() {
            self.event("retry", e.to_string());
        } else if self.aborted.is_none() {
            self.event("error", e.to_string());
            self.aborted = Some((e.to_string(), Instant::now()));
        } else {
            return Err(e);
        }
        Ok(())
    }

    /// The planner's view of each instance; registers the ready ones, ends finished drains.
    async fn observe(
        &mut self,
        machines: &[Machine],
        health: &HashMap<Side, Vec<TargetHealth>>,
    ) -> Result<Vec<InstanceView>, C::Error> {
        let mut views = Vec::new();
        let mut register: BTreeMap<Side, Vec<String>> = BTreeMap::new();
        let mut drained = Vec::new();
        // An Auto Scaling group's instances are the group's to replace, not this executor's.
        for m in machines.iter().filter(|m| {
            m.auto_scaling_group.is_none() || m.auto_scaling_group == self.settings.group
        }) {
            self.unseen.remove(&m.id);
            self.sides.insert(m.id.clone(), m.side);
            self.since.entry(m.id.clone()).or_insert_with(Instant::now);
            if self.terminated.contains(&m.id) {
                continue;
            }
            let set = if m.side == self.live {
                Set::Live
            } else {
                Set::Next
            };
            let view = |state, detail: Option<String>| InstanceView {
                id: m.id.clone(),
                version: m.version.clone(),
                set,
                state,
                detail,
            };
            let target = health
                .get(&m.side)
                .and_then(|h| h.iter().find(|t| t.id == m.id));
            if let Some((_, since)) = self.draining.get(&m.id) {
                let over = match target {
                    None => true,
                    Some(t) => t.state == TargetState::Unused,
                };
                let cut = since.elapsed() > self.settings.drain_timeout + Duration::from_secs(60);
                if over || cut || matches!(m.state, MachineState::Gone { .. }) {
                    drained.push((m.id.clone(), cut && !over));
                } else {
                    views.push(view(State::Draining, None));
                }
                continue;
            }
            match &m.state {
                MachineState::Gone { detail } => {
                    if self.known.contains(&m.id) {
                        views.push(view(
                            State::Failed,
                            Some(format!(
                                "{} is {detail}: stopped or terminated outside cutover",
                                m.id
                            )),
                        ));
                    }
                }
                MachineState::Booting { .. } => {
                    self.known.insert(m.id.clone());
                    views.push(view(State::Starting, None));
                }
                MachineState::Ready => {
                    self.known.insert(m.id.clone());
                    let state = match target.map(|t| t.state) {
                        None | Some(TargetState::Unused) => {
                            register.entry(m.side).or_default().push(m.id.clone());
                            State::Starting
                        }
                        Some(TargetState::Healthy) => State::Healthy,
                        Some(TargetState::Unhealthy) => {
                            let t = target.map(TargetHealth::describe).unwrap_or_default();
                            views.push(view(State::Failed, Some(format!("unhealthy: {t}"))));
                            continue;
                        }
                        Some(TargetState::Draining) => {
                            // Deregistered by an earlier run: see it through.
                            self.draining.insert(m.id.clone(), (m.side, Instant::now()));
                            State::Draining
                        }
                        Some(TargetState::Initial | TargetState::Unavailable) => State::Starting,
                    };
                    views.push(view(state, None));
                }
            }
        }
        for (side, ids) in register {
            self.event(
                "register",
                format!("{} in {side} (running, ready)", ids.join(", ")),
            );
            // It may have gone between the listing and now (InvalidTarget): the next
            // observation sees it gone, and the deploy reacts to that.
            if let Err(e) = self.traffic.register(side, &ids).await {
                self.event("retry", format!("registering {}: {e}", ids.join(", ")));
            }
        }
        for (id, cut) in drained {
            self.draining.remove(&id);
            self.event(
                "terminate",
                if cut {
                    format!("{id}: drain cut at the deadline")
                } else {
                    format!("{id}: drained")
                },
            );
            match self.fleet.terminate(std::slice::from_ref(&id)).await {
                Ok(()) => {
                    self.terminated.insert(id);
                }
                Err(e) => {
                    self.event("retry", format!("terminating {id}: {e}"));
                    if let Some(side) = self.sides.get(&id).copied() {
                        self.draining.insert(id, (side, Instant::now()));
                    }
                }
            }
        }
        Ok(views)
    }

    async fn apply_weights(&mut self, (live, next): (u32, u32)) -> Result<(), C::Error> {
        // Only the ratio matters to the listener: keep it stable while counts change.
        let (live, next) = match (live, next) {
            (_, 0) => (1, 0),
            (0, _) => (0, 1),
            other => other,
        };
        let (blue, green) = self.live.blue_green(live, next);
        if self.weights == Some((blue, green)) {
            return Ok(());
        }
        self.event("traffic", format!("blue {blue}, green {green}"));
        self.traffic.set_weights(blue, green).await?;
        self.weights = Some((blue, green));
        Ok(())
    }

    async fn act(&mut self, action: &Action) -> Result<(), C::Error> {
        match action {
            Action::Launch { version, set } => {
                let side = self.side(*set);
                let id = self.fleet.launch(version, side, self.journal.id()).await?;
                self.event("launch", format!("{id}: {version} in {side}"));
                self.known.insert(id.clone());
                self.since.insert(id.clone(), Instant::now());
                self.unseen.insert(id, (version.clone(), *set));
            }
            Action::Drain { id } => {
                let Some(side) = self.sides.get(id).copied() else {
                    return Ok(());
                };
                self.event("drain", format!("{id} from {side}"));
                self.traffic
                    .deregister(side, std::slice::from_ref(id))
                    .await?;
                self.draining.insert(id.clone(), (side, Instant::now()));
            }
            Action::Remove { id } => {
                if let Some(side) = self.sides.get(id).copied() {
                    // It may never have been registered: that is fine, it is going anyway.
                    if let Err(e) = self
                        .traffic
                        .deregister(side, std::slice::from_ref(id))
                        .await
                    {
                        tracing::debug!("deregistering {id}: {e}");
                    }
                }
                self.event("terminate", format!("{id}: removed"));
                self.fleet.terminate(std::slice::from_ref(id)).await?;
                self.terminated.insert(id.clone());
                self.draining.remove(id);
            }
        }
        Ok(())
    }
}

/// For the deadline's message: each instance of the new version not yet serving, and what it
/// was waiting for.
fn waiting_for(
    views: &[InstanceView],
    machines: &[Machine],
    health: &HashMap<Side, Vec<TargetHealth>>,
    target: &str,
) -> Vec<String> {
    views
        .iter()
        .filter(|v| v.version == target && v.state == State::Starting)
        .map(|v| {
            let m = machines.iter().find(|m| m.id == v.id);
            let what = match m.map(|m| &m.state) {
                Some(MachineState::Booting { detail }) => format!("waiting for {detail}"),
                _ => {
                    let t = m.and_then(|m| {
                        health
                            .get(&m.side)
                            .and_then(|h| h.iter().find(|t| t.id == v.id))
                    });
                    match t {
                        Some(t) => format!("waiting to turn healthy ({})", t.describe()),
                        None => "waiting to be registered".into(),
                    }
                }
            };
            format!("{} {what}", v.id)
        })
        .collect()
}
