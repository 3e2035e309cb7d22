//! Independent deaths of healthy instances at random times, through a rolling deploy and the
//! steady state after it: the planners and the per-slot back-off together, in a toy world with
//! a clock of its own. What an operator's bad day must not do: hold a replacement back, abort a
//! good release, breach the surge ceiling, or let the planner's own drains dig below the floor.

use std::time::{Duration, Instant};

use cutover_deploy::observed::{
    Action, InstanceView, Observed, Progress, Set, State, LOST_PER_INSTANCE,
};
use cutover_deploy::restarts::{Backoff, End, Restarts};
use cutover_deploy::{rolling, steady, Rolling};
use proptest::prelude::*;

const TICK: Duration = Duration::from_millis(250);
/// Ticks from launch to healthy (a second), from deregistration to drained.
const START_TICKS: u32 = 4;
const DRAIN_TICKS: u32 = 2;

#[derive(Debug, Clone)]
struct Instance {
    id: String,
    version: String,
    state: State,
    since: u32,
    healthy_at: Option<Instant>,
}

struct World {
    now: Instant,
    tick: u32,
    instances: Vec<Instance>,
    restarts: Restarts,
    next_id: u32,
    /// Losses of the deploy's target version, as the executor counts them.
    lost: u32,
}

impl World {
    fn new(desired: u32, version: &str) -> Self {
        let now = Instant::now();
        let mut restarts = Restarts::new(Backoff::default());
        let instances: Vec<Instance> = (0..desired)
            .map(|n| Instance {
                id: format!("seed{n}"),
                version: version.into(),
                state: State::Healthy,
                since: 0,
                healthy_at: Some(now),
            })
            .collect();
        for i in &instances {
            restarts.adopt(version, &i.id);
        }
        Self {
            // Start past the settle window so that the seed instances count as served.
            now: now + Duration::from_secs(10),
            tick: 0,
            instances,
            restarts,
            next_id: 0,
            lost: 0,
        }
    }

    fn views(&self) -> Vec<InstanceView> {
        self.instances
            .iter()
            .map(|i| InstanceView {
                id: i.id.clone(),
                version: i.version.clone(),
                set: Set::Live,
                state: i.state,
                detail: None,
            })
            .collect()
    }

    /// Time passes: launches turn healthy, drains finish, the back-off clock moves.
    fn advance(&mut self) {
        self.tick += 1;
        self.now += TICK;
        let (tick, now) = (self.tick, self.now);
        for i in &mut self.instances {
            if i.state == State::Starting && tick - i.since >= START_TICKS {
                i.state = State::Healthy;
                i.healthy_at = Some(now);
            }
        }
        let done: Vec<String> = self
            .instances
            .iter()
            .filter(|i| i.state == State::Draining && tick - i.since >= DRAIN_TICKS)
            .map(|i| i.id.clone())
            .collect();
        for id in done {
            self.restarts.ended(&id, End::Stopped, now);
            self.instances.retain(|i| i.id != id);
        }
    }

    /// Kills the `pick`-th healthy instance that has served past the settle window, as the OOM
    /// killer or an operator would; the executor sees it lost.
    fn kill(&mut self, pick: usize, target: Option<&str>) -> bool {
        let settle = Backoff::default().settle;
        let now = self.now;
        let served: Vec<usize> = (0..self.instances.len())
            .filter(|&n| {
                let i = &self.instances[n];
                i.state == State::Healthy
                    && i.healthy_at
                        .is_some_and(|at| now.duration_since(at) >= settle)
            })
            .collect();
        if served.is_empty() {
            return false;
        }
        let n = served[pick % served.len()];
        let i = &mut self.instances[n];
        assert!(!Backoff::default().early(i.healthy_at, now));
        i.state = State::Lost;
        if target == Some(i.version.as_str()) {
            self.lost += 1;
        }
        let id = i.id.clone();
        self.restarts.ended(&id, End::Lost, now);
        true
    }

    /// Carries out a plan's actions as the executor does, launches through the slots. Returns
    /// how many launches the slots held back.
    fn apply(&mut self, actions: Vec<Action>) -> usize {
        let mut held = 0;
        for a in actions {
            match a {
                Action::Launch { version, .. } => {
                    self.next_id += 1;
                    let id = format!("i{}", self.next_id);
                    let admitted = self.restarts.admit(&version, vec![id.clone()], self.now);
                    if admitted.is_empty() {
                        held += 1;
                        continue;
                    }
                    self.instances.push(Instance {
                        id,
                        version,
                        state: State::Starting,
                        since: self.tick,
                        healthy_at: None,
                    });
                }
                Action::Drain { id } => {
                    if let Some(i) = self.instances.iter_mut().find(|i| i.id == id) {
                        i.state = State::Draining;
                        i.since = self.tick;
                    }
                }
                Action::Remove { id } => {
                    self.restarts.ended(&id, End::Stopped, self.now);
                    self.instances.retain(|i| i.id != id);
                }
            }
        }
        held
    }

    fn count(&self, state: State) -> u32 {
        self.instances.iter().filter(|i| i.state == state).count() as u32
    }

    /// Processes that take room under the surge ceiling: everything not yet dead.
    fn running(&self) -> u32 {
        self.instances
            .iter()
            .filter(|i| !matches!(i.state, State::Lost | State::Failed))
            .count() as u32
    }
}

fn healthy_after(actions: &[Action], w: &World) -> u32 {
    let drained = actions
        .iter()
        .filter(|a| match a {
            Action::Drain { id } => w
                .instances
                .iter()
                .any(|i| &i.id == id && i.state == State::Healthy),
            _ => false,
        })
        .count() as u32;
    w.count(State::Healthy) - drained
}

/// A rolling deploy from v1 to v2 with deaths at the given ticks, then the steady state with
/// more of them. Each death is `(tick, pick)`.
fn run(desired: u32, s: Rolling, deaths: &[(u32, usize)]) -> Result<(), TestCaseError> {
    let mut w = World::new(desired, "v1");
    let floor = desired.saturating_sub(s.max_unavailable);
    let mut done_at = None;
    let last_death = deaths.iter().map(|d| d.0).max().unwrap_or(0);
    for tick in 0..400u32 {
        let mut killed = false;
        for &(_, pick) in deaths.iter().filter(|d| d.0 == tick) {
            killed |= w.kill(pick, done_at.is_none().then_some("v2"));
        }
        let views = w.views();
        let actions = if done_at.is_none() {
            let o = Observed {
                target: "v2".into(),
                previous: "v1".into(),
                desired,
                instances: views,
                deadline_passed: false,
                launches_in_flight: Vec::new(),
                aborted: None,
                step: Default::default(),
                promotion: Default::default(),
                lost: w.lost,
            };
            let p = rolling::plan(s, &o);
            if matches!(
                p.progress,
                Progress::Aborting { .. } | Progress::RolledBack { .. }
            ) {
                // Only a release that lost more than its share cannot stay up.
                prop_assert!(
                    w.lost > LOST_PER_INSTANCE * desired,
                    "tick {tick}: a good release aborted after {} losses: {:?}",
                    w.lost,
                    p.progress
                );
                return Ok(());
            }
            if p.progress == Progress::Done {
                prop_assert_eq!(w.count(State::Healthy), desired);
                prop_assert!(w.instances.iter().all(|i| i.version == "v2"));
                done_at = Some(tick);
            }
            p.actions
        } else {
            steady::plan("v2", desired, &views, 0)
        };
        // The planner's own drains never dig below the floor, wherever the deaths left it.
        let before = w.count(State::Healthy);
        prop_assert!(
            healthy_after(&actions, &w) >= before.min(floor),
            "tick {tick}: drains take {before} healthy below the floor {floor}: {actions:?}"
        );
        let lost_before = w.count(State::Lost);
        let held = w.apply(actions);
        // A lost instance's slot is never held: its replacement starts in the same tick.
        prop_assert_eq!(held, 0, "tick {}: a replacement was held back", tick);
        prop_assert!(w.restarts.held(w.now).is_empty());
        if killed {
            prop_assert_eq!(
                w.count(State::Lost),
                0,
                "tick {}: the dead ({}) were not cleared at once",
                tick,
                lost_before
            );
        }
        prop_assert!(
            w.running() <= desired + s.max_surge,
            "tick {tick}: {} processes for {desired} + surge {}",
            w.running(),
            s.max_surge
        );
        prop_assert!(w.restarts.crash_loop("v2", desired).is_none());
        // Back at full size once the deaths are over and a start has had time to finish.
        if done_at.is_some() && tick > last_death + START_TICKS + 1 {
            prop_assert_eq!(w.count(State::Healthy), desired, "tick {}", tick);
            return Ok(());
        }
        w.advance();
    }
    prop_assert!(false, "no end after 400 ticks: done at {done_at:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn independent_deaths_of_healthy_instances_never_hold_a_replacement_or_abort(
        desired in 1u32..=6,
        surge in 0u32..=2,
        unavailable in 0u32..=2,
        deaths in prop::collection::vec((0u32..120, any::<usize>()), 0..8),
    ) {
        prop_assume!(surge + unavailable > 0 && unavailable <= desired);
        run(desired, Rolling { max_surge: surge, max_unavailable: unavailable }, &deaths)?;
    }
}

#[test]
fn a_death_in_every_batch_of_a_rollout_still_finishes() {
    // One loss every 2 s, as bench/chaos.sh does: the rollout keeps going and ends at v2.
    let deaths: Vec<(u32, usize)> = (1..30).map(|k| (k * 8, k as usize)).collect();
    run(
        4,
        Rolling {
            max_surge: 1,
            max_unavailable: 0,
        },
        &deaths,
    )
    .expect("the rollout survives its deaths");
}
