//! The real planners driven by a fake provider, a fake traffic plane and a fake clock, over
//! random fleets of 1 to 10,000 instances, random strategies and random fault schedules.
//! Every tick checks the invariants; every deployment must end, and the store's history must
//! say what happened.

use std::time::Duration;

use cutover_deploy::{
    Action, Canary, InstanceView, Observed, Plan, Progress, Promote, Rolling, Set, State,
    StepObserved, Strategy as Deploy, Traffic, Verdict,
};
use cutover_spec::{CanaryStep, Pause};
use cutover_store::{DeploymentRow, Store};
use proptest::prelude::*;

const OLD: &str = "v1";
const NEW: &str = "v2";
/// Ticks a launched instance takes to start, and a healthy one to drain.
const START: u32 = 2;
/// Ticks a new instance may stay unhealthy before the deploy gives up on it.
const DEADLINE: u32 = 8;
/// Ticks healthy after which a death is the instance's bad luck (lost), not its release's fault.
const SETTLE: u32 = 3;

/// What goes wrong with one instance of the new version.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    NeverHealthy,
    /// Crashes this many ticks after turning healthy: failed if before [`SETTLE`], lost after.
    CrashAfter(u32),
    /// Fails its health checks this many ticks after turning healthy.
    UnhealthyAfter(u32),
    /// Takes this many ticks to drain.
    SlowDrain(u32),
}

#[derive(Debug, Clone)]
struct Sim {
    id: String,
    version: String,
    set: Set,
    state: State,
    born: u32,
    healthy_at: Option<u32>,
    fault: Fault,
    gone_at: Option<u32>,
}

/// The fake world: instances, the clock, the two sets' weights.
struct World {
    now: u32,
    next_id: usize,
    instances: Vec<Sim>,
    faults: Vec<Fault>,
    weights: (u32, u32),
    /// Healthy instances that later failed: capacity the planner could not have kept.
    failures: u32,
    /// Instances of the new version lost after they had served.
    lost_new: u32,
    /// Ticks at which one settled healthy instance, of either version, dies for no fault of
    /// its release (the OOM killer, an operator, the host).
    deaths: Vec<u32>,
}

impl World {
    fn new(desired: u32, faults: Vec<Fault>, deaths: Vec<u32>) -> Self {
        let instances = (0..desired)
            .map(|i| Sim {
                id: format!("o{i:05}"),
                version: OLD.into(),
                set: Set::Live,
                state: State::Healthy,
                born: 0,
                healthy_at: Some(0),
                fault: Fault::None,
                gone_at: None,
            })
            .collect();
        Self {
            now: 0,
            next_id: 0,
            instances,
            faults,
            weights: (100, 0),
            failures: 0,
            lost_new: 0,
            deaths,
        }
    }

    /// The clock moves one tick: instances start, fail and finish draining as scheduled.
    fn tick(&mut self) {
        self.now += 1;
        let now = self.now;
        let mut failed = 0;
        self.instances.retain(|i| i.gone_at.is_none_or(|t| t > now));
        for i in &mut self.instances {
            match i.state {
                State::Starting if i.fault != Fault::NeverHealthy && now >= i.born + START => {
                    i.state = State::Healthy;
                    i.healthy_at = Some(now);
                }
                State::Healthy => {
                    let since = now - i.healthy_at.unwrap_or(now);
                    if let Fault::CrashAfter(k) | Fault::UnhealthyAfter(k) = i.fault {
                        if since >= k {
                            i.state = if k < SETTLE {
                                State::Failed
                            } else {
                                self.lost_new += 1;
                                State::Lost
                            };
                            failed += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        if self.deaths.contains(&now) {
            let settled: Vec<usize> = (0..self.instances.len())
                .filter(|&n| {
                    let i = &self.instances[n];
                    i.state == State::Healthy && i.healthy_at.is_some_and(|at| now >= at + SETTLE)
                })
                .collect();
            if !settled.is_empty() {
                let victim = &mut self.instances[settled[now as usize % settled.len()]];
                victim.state = State::Lost;
                if victim.version == NEW {
                    self.lost_new += 1;
                }
                failed += 1;
            }
        }
        self.failures += failed;
    }

    fn views(&self) -> Vec<InstanceView> {
        self.instances
            .iter()
            .map(|i| InstanceView {
                id: i.id.clone(),
                version: i.version.clone(),
                set: i.set,
                state: i.state,
                detail: None,
            })
            .collect()
    }

    fn healthy(&self, set: Set) -> u32 {
        self.instances
            .iter()
            .filter(|i| i.set == set && i.state == State::Healthy)
            .count() as u32
    }

    /// The fake traffic plane: weights as the executor sets them.
    fn route(&mut self, traffic: Traffic) {
        self.weights = match traffic {
            Traffic::Next(p) => (100 - p, p),
            Traffic::Natural => match (self.healthy(Set::Live), self.healthy(Set::Next)) {
                (0, 0) => (100, 0),
                counts => counts,
            },
        };
    }

    /// The fake provider: carries out a plan's actions.
    fn act(&mut self, actions: Vec<Action>) {
        let now = self.now;
        for a in actions {
            match a {
                Action::Launch { version, set } => {
                    let fault = if version == NEW {
                        self.faults
                            .get(self.next_id % self.faults.len().max(1))
                            .copied()
                            .unwrap_or(Fault::None)
                    } else {
                        Fault::None
                    };
                    self.next_id += 1;
                    self.instances.push(Sim {
                        id: format!("n{:05}", self.next_id),
                        version,
                        set,
                        state: State::Starting,
                        born: now,
                        healthy_at: None,
                        fault,
                        gone_at: None,
                    });
                }
                Action::Drain { id } | Action::Remove { id } => {
                    if let Some(i) = self.instances.iter_mut().find(|i| i.id == id) {
                        if i.state != State::Draining {
                            let took = match i.fault {
                                Fault::SlowDrain(k) => k,
                                _ => 1,
                            };
                            i.state = State::Draining;
                            i.gone_at = Some(now + took);
                        }
                    }
                }
            }
        }
    }

    /// Healthy instances that take traffic: in a set with weight.
    fn serving(&self) -> u32 {
        let (live, next) = self.weights;
        let mut n = 0;
        if live > 0 {
            n += self.healthy(Set::Live);
        }
        if next > 0 {
            n += self.healthy(Set::Next);
        }
        n
    }
}

#[derive(Debug, Clone)]
struct Case {
    desired: u32,
    max_surge: u32,
    max_unavailable: u32,
    strategy: Deploy,
    faults: Vec<Fault>,
    /// The canary's analysis finds it bad once it has taken traffic.
    canary_bad: bool,
    /// The analysis never gets enough requests for a verdict.
    quiet: bool,
    /// Ticks at which a settled healthy instance dies independently of its release.
    deaths: Vec<u32>,
}

fn strategy(desired: u32) -> impl proptest::strategy::Strategy<Value = (u32, u32, Deploy)> {
    // Batches proportional to the fleet keep a 10,000-instance rolling deploy to a few dozen ticks.
    let batch = (desired / 8).max(1);
    (1..=batch, 0..=batch, 0..4u8, 0..3u8).prop_map(move |(surge, unavailable, kind, steps)| {
        let unavailable = unavailable.min(desired);
        let s = match kind {
            0 => Deploy::Rolling(Rolling {
                max_surge: surge,
                max_unavailable: unavailable,
            }),
            1 => Deploy::ReplaceGroup,
            2 => Deploy::BlueGreen,
            _ => Deploy::Canary(Canary {
                steps: canary_steps(steps),
                window: Duration::from_secs(5),
            }),
        };
        (surge, unavailable, s)
    })
}

fn canary_steps(which: u8) -> Vec<CanaryStep> {
    let step = |instances, weight, pause| CanaryStep {
        instances,
        weight,
        pause,
    };
    match which {
        0 => vec![step(Some(1), None, Pause::None)],
        1 => vec![
            step(Some(1), None, Pause::For(Duration::from_secs(2))),
            step(None, Some(25), Pause::For(Duration::from_secs(2))),
            step(None, Some(75), Pause::None),
        ],
        _ => vec![
            step(None, Some(10), Pause::None),
            step(None, None, Pause::UntilPromoted),
        ],
    }
}

fn fault() -> impl proptest::strategy::Strategy<Value = Fault> {
    prop_oneof![
        8 => Just(Fault::None),
        1 => Just(Fault::NeverHealthy),
        1 => (1..6u32).prop_map(Fault::CrashAfter),
        1 => (1..6u32).prop_map(Fault::UnhealthyAfter),
        1 => (2..6u32).prop_map(Fault::SlowDrain),
    ]
}

fn case() -> impl proptest::strategy::Strategy<Value = Case> {
    // Fleet sizes spread over orders of magnitude: 1 to 10,000.
    let desired = prop_oneof![1..=5u32, 6..=100u32, 101..=10_000u32];
    desired.prop_flat_map(|desired| {
        (
            strategy(desired),
            proptest::collection::vec(fault(), 0..12),
            any::<bool>(),
            proptest::bool::weighted(0.2),
            proptest::collection::vec(1..60u32, 0..=2),
        )
            .prop_map(
                move |((max_surge, max_unavailable, strategy), faults, bad, quiet, deaths)| Case {
                    desired,
                    max_surge,
                    max_unavailable,
                    strategy,
                    faults,
                    canary_bad: bad,
                    quiet,
                    deaths,
                },
            )
    })
}

/// The fake executor: observes, plans, routes, acts, and keeps the step record, as the
/// controller does; returns how the deployment ended.
fn run(case: &Case, store: &Store, id: u64) -> Progress {
    let mut world = World::new(case.desired, case.faults.clone(), case.deaths.clone());
    let floor = case.desired - case.max_unavailable;
    let mut progress = Progress::Rolling;
    let mut aborted = None;
    let mut step = StepObserved::default();
    let mut reached_at: Option<u32> = None;
    let mut saved = Vec::new();
    let limit = 60 + 8 * (case.desired / case.max_surge.max(1) + 4) * (START + 8);
    for _ in 0..limit {
        world.tick();
        let now = world.now;
        let deadline_passed = world
            .instances
            .iter()
            .any(|i| i.version == NEW && i.healthy_at.is_none() && now > i.born + DEADLINE);
        step.held_for = reached_at.map(|t| Duration::from_secs(u64::from(now - t)));
        step.verdict = match (reached_at, case.quiet, case.canary_bad) {
            (None, _, _) | (_, true, _) => Verdict::Inconclusive {
                requests: 0,
                needed: 100,
            },
            (Some(_), false, true) => Verdict::Fail {
                reason: "error rate".into(),
            },
            (Some(_), false, false) => Verdict::Pass,
        };
        step.waiting = matches!(progress, Progress::Paused { step: s, .. } if s == step.index);
        let observed = Observed {
            target: NEW.into(),
            previous: OLD.into(),
            desired: case.desired,
            instances: world.views(),
            deadline_passed,
            launches_in_flight: vec![],
            aborted: aborted.clone(),
            step: step.clone(),
            promotion: Default::default(),
            lost: world.lost_new,
        };
        let plan: Plan = case.strategy.plan(&observed);
        // No weight for a set with nothing healthy in it while the other has something.
        let (live_h, next_h) = (world.healthy(Set::Live), world.healthy(Set::Next));
        if let Traffic::Next(p) = plan.traffic {
            assert!(p <= 100);
            assert!(
                p == 0 || next_h > 0 || live_h == 0,
                "{p}% to a next set with no healthy instance"
            );
            assert!(
                p == 100 || live_h > 0 || next_h == 0,
                "{}% to a live set with no healthy instance",
                100 - p
            );
            // Capacity-aware: a share no larger than the healthy instances can carry.
            if p > 0 && p < 100 {
                assert!(
                    p * case.desired <= next_h * 100,
                    "{p}% on {next_h} of {}",
                    case.desired
                );
            }
        }
        world.route(plan.traffic);
        world.act(plan.actions);
        assert!(
            world.serving() + world.failures >= floor,
            "serving {} (+{} failed) below {floor} at tick {now}: {:?}",
            world.serving(),
            world.failures,
            plan.progress
        );
        if plan.step != step.index {
            step.index = plan.step;
            step.promote = None;
            reached_at = None;
        } else if plan.reached && reached_at.is_none() {
            reached_at = Some(now);
        }
        // A human at the console promotes whatever waits for one.
        if matches!(plan.progress, Progress::Paused { .. }) {
            step.promote = Some(Promote::Next);
        }
        if let Progress::Aborting { reason } = &plan.progress {
            aborted = Some(reason.clone());
        }
        if plan.progress != progress {
            progress = plan.progress.clone();
            let terminal = matches!(progress, Progress::Done | Progress::RolledBack { .. });
            let row = DeploymentRow {
                id,
                from_version: OLD.into(),
                to_version: NEW.into(),
                strategy: case.strategy.name().into(),
                started_at: "0".into(),
                finished_at: terminal.then(|| now.to_string()),
                duration_ms: terminal.then_some(u64::from(now) * 1000),
                progress: progress.clone(),
                steps: serde_json::json!([]),
            };
            store.save_deployment(&row).expect("store");
            saved.push(row);
            if terminal {
                check_end(case, &world, &progress);
                return progress;
            }
        }
    }
    panic!("no terminal state after {limit} ticks: {progress:?}");
}

fn check_end(case: &Case, world: &World, progress: &Progress) {
    let live: Vec<&Sim> = world
        .instances
        .iter()
        .filter(|i| i.state != State::Draining)
        .collect();
    match progress {
        Progress::Done => {
            let new_healthy = live
                .iter()
                .filter(|i| i.version == NEW && i.state == State::Healthy)
                .count() as u32;
            assert!(new_healthy >= case.desired, "done with {new_healthy} new");
            let all_new = live.iter().all(|i| i.version == NEW);
            if !case.strategy.keeps_previous_warm() {
                assert!(all_new, "done with old instances left running");
            }
        }
        Progress::RolledBack { .. } => {
            let old_healthy = live
                .iter()
                .filter(|i| i.version == OLD && i.set == Set::Live && i.state == State::Healthy)
                .count() as u32;
            assert_eq!(
                old_healthy, case.desired,
                "the old version is back at full size"
            );
            assert!(
                world.instances.iter().all(|i| i.version == OLD),
                "rolled back with new instances left"
            );
            assert_eq!(world.weights.1, 0, "no traffic to the aborted set");
        }
        other => panic!("not terminal: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        .. ProptestConfig::default()
    })]

    #[test]
    fn every_deploy_keeps_capacity_routes_only_to_healthy_and_ends(case in case()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.db")).expect("store");
        let end = run(&case, &store, 1);
        // The history in the store says what happened.
        let rows = store.deployments().expect("read back");
        prop_assert_eq!(rows.len(), 1);
        prop_assert_eq!(&rows[0].progress, &end);
        prop_assert!(rows[0].finished_at.is_some());
        if let Deploy::Canary(_) = case.strategy {
            if case.canary_bad && !case.quiet {
                prop_assert!(
                    matches!(end, Progress::RolledBack { .. }),
                    "a canary the analysis fails never completes"
                );
            }
        }
        // Independent deaths of instances that had served never make a deploy give up.
        if case.faults.iter().all(|f| matches!(f, Fault::None | Fault::SlowDrain(_)))
            && !(case.canary_bad && !case.quiet && matches!(case.strategy, Deploy::Canary(_)))
        {
            prop_assert_eq!(end, Progress::Done, "nothing went wrong, so it must finish");
        }
    }
}
