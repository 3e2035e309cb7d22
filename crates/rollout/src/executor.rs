//! The polling executor, for providers that are asked how things stand (clouds): observes the
//! fleet and the two target groups, asks the [`Decider`] what to do, records it, and does it:
//! launch, register once ready, shift the weights, deregister and wait for the drain to end,
//! terminate. Every wait is bounded by the progress deadline, and the message that ends one
//! names the instance and what it was waiting for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use cutover_control::{Side, TargetHealth, TargetState};
use cutover_deploy::{
    Action, InstanceView, Limits, Plan, Progress, Promote, Promotion, Set, State, Strategy,
};
use cutover_store::Store;
use tokio::time::Instant;

use crate::decider::{Bounds, Decider, Launching, Look};
use crate::failure::Failure;
use crate::fleet::{Fleet, Machine, MachineState};
use crate::journal::{Event, Journal, Outcome};
use crate::lease::{self, Request};
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
    /// The Auto Scaling groups the deploy works with (the one it rolls inside, or the new
    /// release's and the ones it replaces); other groups' instances are theirs to replace and
    /// left alone.
    pub groups: Vec<String>,
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
    weights: Option<(u32, u32)>,
    decider: Decider,
    /// Blue-green's check through the preview listener, and where it stands.
    check: Option<PreviewCheck<'a>>,
    promotion: Promotion,
}

/// Requests through the preview listener, once it reaches only the new set: `Err` says what
/// failed. The caller's, because what a request is (a URL, a client) is the provider's.
pub type PreviewCheck<'a> =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + 'a>> + 'a>;

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
        // Held from the moment the record exists: nobody else picks it up meanwhile.
        lease::beat(store, journal.id(), settings.poll)?;
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
        let decider = Decider::new(
            settings.strategy.clone(),
            journal.from(),
            journal.to(),
            Bounds {
                progress_deadline: settings.progress_deadline,
                drain_timeout: settings.drain_timeout,
                analysis: settings.analysis.clone(),
                status_command: "cutover aws status",
            },
        );
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
            weights: None,
            decider,
            check: None,
            promotion: Promotion::NotConfigured,
        })
    }

    /// Checks the new set through the preview listener before a blue-green flip: the flip
    /// waits for `check`, and a failed one rolls the deploy back. A plane without a preview
    /// listener skips it (its health checks are the whole check), and so do other strategies.
    pub fn with_preview_check(mut self, check: PreviewCheck<'a>) -> Self {
        if matches!(self.settings.strategy, Strategy::BlueGreen) {
            self.check = Some(check);
            self.promotion = Promotion::Pending;
        }
        self
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
        let mut recorded = journal.recorded().clone();
        let done: Vec<crate::StepRecord> =
            serde_json::from_value(journal.row.steps.clone()).unwrap_or_default();
        // Held by the operator's pause: resuming lifts it and the step runs on. A step that
        // waits for `promote` waits again.
        let held = lease::unhold(store, journal.id())?;
        if held && ask == Ask::Continue && matches!(recorded, Progress::Paused { .. }) {
            recorded = Progress::Rolling;
        }
        let mut rollout = Self::new(fleet, traffic, settings, journal)?;
        rollout.decider = rollout.decider.clone().resumed(recorded, done.len());
        match ask {
            Ask::Continue => {}
            Ask::Promote(p) => rollout.decider.promote(p),
            Ask::Abort => rollout.decider.abort("aborted by the operator"),
        }
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

    /// Records what the caller did for this deployment around the run (an Auto Scaling group
    /// created for it, say), in its timeline.
    pub fn note(&mut self, kind: &'static str, detail: String) {
        self.event(kind, detail);
    }

    fn event(&mut self, kind: &'static str, detail: String) {
        self.journal.event(kind, detail);
    }

    /// Once the whole new set is healthy: the preview listener onto it, then the check, once.
    async fn preview(&mut self, views: &[InstanceView]) -> Result<(), C::Error> {
        if self.promotion != Promotion::Pending {
            return Ok(());
        }
        let to = self.journal.to();
        let healthy = views
            .iter()
            .filter(|v| v.set == Set::Next && v.version == to && v.state == State::Healthy)
            .count();
        if (healthy as u32) < self.settings.desired {
            return Ok(());
        }
        let next = self.live.other();
        if !self.traffic.point_preview(next).await? {
            self.promotion = Promotion::NotConfigured;
            self.event(
                "preview",
                "no preview listener: the health checks are the check".into(),
            );
            return Ok(());
        }
        let Some(check) = &self.check else {
            return Ok(());
        };
        let result = check().await;
        self.promotion = match result {
            Ok(()) => {
                self.event(
                    "preview",
                    format!("the new set answered through the preview listener ({next})"),
                );
                Promotion::Passed
            }
            Err(why) => {
                self.event("preview", format!("failed: {why}"));
                Promotion::Failed(why)
            }
        };
        Ok(())
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
            self.listen();
            let plan = match self.tick().await {
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
                    let (store, id, live) = (self.journal.store, self.journal.id(), self.live);
                    let outcome = self.journal.paused(plan.progress, live);
                    lease::release(store, id)?;
                    return Ok(outcome);
                }
                _ => {}
            }
            tokio::time::sleep(self.settings.poll).await;
        }
    }

    /// Says this process still runs the deployment, and takes what another one asked of it.
    fn listen(&mut self) {
        let (store, id) = (self.journal.store, self.journal.id());
        if let Err(e) = lease::beat(store, id, self.settings.poll) {
            tracing::warn!("recording the heartbeat: {e}");
        }
        let request = match lease::take(store, id) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("reading requests: {e}");
                None
            }
        };
        let what = match request {
            None => return,
            Some(Request::Pause) => {
                self.decider.hold(true);
                if let Err(e) = lease::hold(store, id) {
                    tracing::warn!("recording the pause: {e}");
                }
                "pause"
            }
            Some(Request::Promote { full }) => {
                self.decider
                    .promote(if full { Promote::Full } else { Promote::Next });
                if full {
                    "promote past every step"
                } else {
                    "promote to the next step"
                }
            }
            Some(Request::Abort) => {
                self.decider.abort("aborted by the operator");
                "abort"
            }
        };
        self.event("request", format!("{what}, asked by another process"));
    }

    async fn finish(self, progress: Progress) -> Result<Outcome, C::Error> {
        let live = if progress == Progress::Done && self.decider.strategy().uses_next_set() {
            self.live.other()
        } else {
            self.live
        };
        let (store, id) = (self.journal.store, self.journal.id());
        let outcome = self.journal.finish(progress, live)?;
        lease::release(store, id)?;
        Ok(outcome)
    }

    /// One observation, one plan, its actions carried out.
    async fn tick(&mut self) -> Result<Plan, C::Error> {
        let machines = self.fleet.machines().await?;
        let mut health = HashMap::new();
        for side in Side::BOTH {
            health.insert(side, self.traffic.health(side).await?);
        }
        let views = self.observe(&machines, &health).await?;
        self.preview(&views).await?;
        let window = match self.decider.window_since() {
            // The analysis window: the new side against the live one since the step's traffic
            // was in place.
            Some(since) => Some((
                self.traffic.sample(self.live.other(), since).await?,
                self.traffic.sample(self.live, since).await?,
            )),
            None => None,
        };
        let look = Look {
            desired: self.settings.desired,
            instances: views.clone(),
            launching: self
                .unseen
                .iter()
                .map(|(id, (version, set))| Launching {
                    id: id.clone(),
                    version: version.clone(),
                    set: *set,
                })
                .collect(),
            promotion: self.promotion.clone(),
            launch_error: None,
            window,
        };
        let decision = self.decider.decide(look);
        for record in decision.steps {
            self.journal.step(record)?;
        }
        let mut plan = decision.plan;
        if let Err(e) = self.apply_weights(decision.weights).await {
            // The plan's actions assume its traffic split (a drain after a flip): none of them
            // happen, and the next observation plans again.
            self.failed(e)?;
            if plan.progress == Progress::Done {
                plan.progress = Progress::Rolling;
            }
            plan.actions.clear();
            return Ok(plan);
        }
        for action in plan.actions.clone() {
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
        } else if self.decider.aborted().is_none() {
            self.event("error", e.to_string());
            self.decider.abort(e.to_string());
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
            m.auto_scaling_group
                .as_ref()
                .is_none_or(|g| self.settings.groups.contains(g))
        }) {
            self.unseen.remove(&m.id);
            self.sides.insert(m.id.clone(), m.side);
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
                // Stopped or terminated by someone else (an operator, a spot reclaim, the
                // host): like an instance killed by a signal on one host, it says nothing
                // about the release. It is replaced and the deploy goes on, within the
                // decider's bound on losses.
                MachineState::Gone { detail } => {
                    if self.known.contains(&m.id) {
                        views.push(view(
                            State::Lost,
                            Some(format!(
                                "{} is {detail}: stopped or terminated outside cutover",
                                m.id
                            )),
                        ));
                    }
                }
                MachineState::Booting { detail } => {
                    self.known.insert(m.id.clone());
                    views.push(view(State::Starting, Some(format!("waiting for {detail}"))));
                }
                MachineState::Ready => {
                    self.known.insert(m.id.clone());
                    let waiting = match target {
                        Some(t) => format!("waiting to turn healthy ({})", t.describe()),
                        None => "waiting to be registered".into(),
                    };
                    let state = match target.map(|t| t.state) {
                        None | Some(TargetState::Unused) => {
                            register.entry(m.side).or_default().push(m.id.clone());
                            views.push(view(State::Starting, Some(waiting)));
                            continue;
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
                        Some(TargetState::Initial | TargetState::Unavailable) => {
                            views.push(view(State::Starting, Some(waiting)));
                            continue;
                        }
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
                self.decider.launched(&id);
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
