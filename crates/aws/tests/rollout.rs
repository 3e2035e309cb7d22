//! The AWS executor against a fake cloud that can fail in the ways the emulator cannot: targets
//! that turn unhealthy, drains that take a while, status checks that never pass, a listener that
//! refuses a change. Time is tokio's paused clock, so deadlines of minutes run in milliseconds.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use cutover_aws::rollout::{Settings, LIVE_KEY};
use cutover_aws::{
    AwsError, Color, Compute, Machine, MachineState, Rollout, TargetHealth, TrafficPlane,
};
use cutover_deploy::{Progress, Rolling, Strategy};
use cutover_store::Store;

#[derive(Default)]
struct Cloud {
    next_id: u32,
    machines: Vec<Machine>,
    /// Calls to `machines` before a new instance passes its status checks.
    boot_polls: BTreeMap<String, u32>,
    /// Registered targets per group: id → (state, polls left in it).
    targets: BTreeMap<Color, BTreeMap<String, (String, u32)>>,
    weights: (u32, u32),
    weight_changes: Vec<(u32, u32)>,
    // Faults.
    unhealthy_versions: HashSet<String>,
    never_ready_versions: HashSet<String>,
    drain_polls: u32,
    refuse_weights: bool,
    // What the checks saw.
    peak_running: usize,
    /// Lowest count of healthy targets in the weighted groups, after the first deploy.
    min_serving: Option<usize>,
    terminated_while_draining: Vec<String>,
}

struct Fake(Mutex<Cloud>);

impl Fake {
    fn new() -> Self {
        Fake(Mutex::new(Cloud {
            weights: (1, 0),
            ..Cloud::default()
        }))
    }
    fn cloud(&self) -> std::sync::MutexGuard<'_, Cloud> {
        self.0.lock().expect("lock")
    }
    fn running(&self) -> Vec<Machine> {
        self.cloud()
            .machines
            .iter()
            .filter(|m| !matches!(m.state, MachineState::Gone { .. }))
            .cloned()
            .collect()
    }
    fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.running().into_iter().map(|m| m.version).collect();
        v.sort();
        v
    }
}

impl Compute for Fake {
    async fn launch(&self, version: &str, group: Color, _: u64) -> Result<String, AwsError> {
        let mut c = self.cloud();
        c.next_id += 1;
        let id = format!("i-{:04}", c.next_id);
        let launched_at = format!("{:08}", c.next_id);
        let polls = if c.never_ready_versions.contains(version) {
            u32::MAX
        } else {
            2
        };
        c.boot_polls.insert(id.clone(), polls);
        c.machines.push(Machine {
            id: id.clone(),
            version: version.into(),
            group,
            state: MachineState::Booting {
                detail: "pending".into(),
            },
            image: format!("ami-{version}"),
            zone: None,
            launched_at,
            auto_scaling_group: None,
        });
        let running = c
            .machines
            .iter()
            .filter(|m| !matches!(m.state, MachineState::Gone { .. }))
            .count();
        c.peak_running = c.peak_running.max(running);
        Ok(id)
    }

    async fn machines(&self) -> Result<Vec<Machine>, AwsError> {
        let mut c = self.cloud();
        let c = &mut *c;
        for m in &mut c.machines {
            if let Some(left) = c.boot_polls.get_mut(&m.id) {
                if *left == 0 {
                    if m.state != MachineState::Ready
                        && !matches!(m.state, MachineState::Gone { .. })
                    {
                        m.state = MachineState::Ready;
                    }
                } else if *left != u32::MAX {
                    *left -= 1;
                }
            }
        }
        Ok(c.machines.clone())
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut c = self.cloud();
        for id in ids {
            let draining = c
                .targets
                .values()
                .any(|t| t.get(id).is_some_and(|(s, _)| s == "draining"));
            if draining {
                c.terminated_while_draining.push(id.clone());
            }
            for t in c.targets.values_mut() {
                t.remove(id);
            }
            if let Some(m) = c.machines.iter_mut().find(|m| &m.id == id) {
                m.state = MachineState::Gone {
                    detail: "terminated".into(),
                };
            }
        }
        Ok(())
    }
}

impl TrafficPlane for Fake {
    async fn register(&self, group: Color, ids: &[String]) -> Result<(), AwsError> {
        let mut c = self.cloud();
        for id in ids {
            let Some(m) = c.machines.iter().find(|m| &m.id == id).cloned() else {
                continue;
            };
            if matches!(m.state, MachineState::Gone { .. }) {
                return Err(AwsError::Api {
                    service: "elbv2",
                    operation: "RegisterTargets",
                    code: Some("InvalidTarget".into()),
                    message: format!("InvalidTarget: {id} is not in a valid state"),
                    retryable: false,
                });
            }
            assert_eq!(
                m.state,
                MachineState::Ready,
                "{id} registered before it was ready"
            );
            assert_eq!(m.group, group, "{id} registered in the wrong group");
            let state = if c.unhealthy_versions.contains(&m.version) {
                "unhealthy"
            } else {
                "initial"
            };
            c.targets
                .entry(group)
                .or_default()
                .insert(id.clone(), (state.into(), 1));
        }
        Ok(())
    }

    async fn deregister(&self, group: Color, ids: &[String]) -> Result<(), AwsError> {
        let mut c = self.cloud();
        let polls = c.drain_polls;
        for id in ids {
            if let Some(t) = c.targets.entry(group).or_default().get_mut(id) {
                *t = ("draining".into(), polls);
            }
        }
        Ok(())
    }

    async fn health(&self, group: Color) -> Result<Vec<TargetHealth>, AwsError> {
        let mut c = self.cloud();
        let c = &mut *c;
        let targets = c.targets.entry(group).or_default();
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, (state, left)) in targets.iter_mut() {
            match state.as_str() {
                "initial" if *left == 0 => *state = "healthy".into(),
                "draining" if *left == 0 => {
                    gone.push(id.clone());
                    continue;
                }
                _ => *left = left.saturating_sub(1),
            }
            let reason = match state.as_str() {
                "initial" => Some("Elb.InitialHealthChecking"),
                "unhealthy" => Some("Target.ResponseCodeMismatch"),
                "draining" => Some("Target.DeregistrationInProgress"),
                _ => None,
            };
            out.push(TargetHealth {
                id: id.clone(),
                state: state.clone(),
                reason: reason.map(str::to_owned),
                description: (state == "unhealthy")
                    .then(|| "Health checks failed with these codes: [500]".to_owned()),
            });
        }
        for id in gone {
            targets.remove(&id);
        }
        // Serving capacity: healthy targets in groups with weight, once anything served.
        let weighted = |c: &Cloud, color: Color| {
            let w = match color {
                Color::Blue => c.weights.0,
                Color::Green => c.weights.1,
            };
            if w == 0 {
                return 0;
            }
            c.targets
                .get(&color)
                .map(|t| t.values().filter(|(s, _)| s == "healthy").count())
                .unwrap_or(0)
        };
        let serving = weighted(c, Color::Blue) + weighted(c, Color::Green);
        if let Some(min) = &mut c.min_serving {
            *min = (*min).min(serving);
        }
        Ok(out)
    }

    async fn weights(&self) -> Result<(u32, u32), AwsError> {
        Ok(self.cloud().weights)
    }

    async fn set_weights(&self, blue: u32, green: u32) -> Result<(), AwsError> {
        let mut c = self.cloud();
        if c.refuse_weights {
            return Err(AwsError::Api {
                service: "elbv2",
                operation: "ModifyListener",
                code: Some("AccessDenied".into()),
                message:
                    "AccessDenied: not authorized to perform elasticloadbalancing:ModifyListener"
                        .into(),
                retryable: false,
            });
        }
        c.weights = (blue, green);
        c.weight_changes.push((blue, green));
        Ok(())
    }
}

fn settings(strategy: Strategy) -> Settings {
    Settings {
        strategy,
        desired: 3,
        progress_deadline: Duration::from_secs(600),
        drain_timeout: Duration::from_secs(30),
        poll: Duration::from_secs(5),
        group: None,
    }
}

const ROLLING: Strategy = Strategy::Rolling(Rolling {
    max_surge: 1,
    max_unavailable: 0,
});

async fn deploy(
    fake: &Fake,
    store: &Store,
    strategy: Strategy,
    version: &str,
) -> cutover_aws::Outcome {
    deploy_with(fake, store, settings(strategy), version).await
}

async fn deploy_with(
    fake: &Fake,
    store: &Store,
    settings: Settings,
    version: &str,
) -> cutover_aws::Outcome {
    let rollout = Rollout::begin(fake, fake, store, settings, version, |_| {}).expect("begin");
    rollout.run().await.expect("the deploy runs to an outcome")
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.db")).expect("store");
    (dir, store)
}

/// v1 from nothing, then from then on the serving capacity is watched.
async fn with_v1(fake: &Fake, store: &Store) {
    let out = deploy(fake, store, ROLLING, "v1").await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(fake.versions(), ["v1", "v1", "v1"]);
    fake.cloud().min_serving = Some(usize::MAX);
    fake.cloud().peak_running = 3;
}

#[tokio::test(start_paused = true)]
async fn rolling_replaces_every_instance_within_surge_and_unavailable() {
    let (_dir, store) = store();
    let fake = Fake::new();
    fake.cloud().drain_polls = 3;
    with_v1(&fake, &store).await;
    let out = deploy(&fake, &store, ROLLING, "v2").await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(fake.versions(), ["v2", "v2", "v2"]);
    let c = fake.cloud();
    assert_eq!(
        c.min_serving,
        Some(3),
        "max_unavailable 0: never fewer than 3 serving"
    );
    assert_eq!(c.peak_running, 4, "max_surge 1: never more than 4 running");
    assert!(
        c.terminated_while_draining.is_empty(),
        "terminated mid-drain: {:?}",
        c.terminated_while_draining
    );
    assert_eq!(
        store.current_release().expect("current").as_deref(),
        Some("v2")
    );
    assert_eq!(
        c.targets[&Color::Blue].len(),
        3,
        "only the new instances stay registered"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_new_version_rolls_back_with_alb_reason() {
    let (_dir, store) = store();
    let fake = Fake::new();
    with_v1(&fake, &store).await;
    fake.cloud().unhealthy_versions.insert("v2".into());
    let out = deploy(&fake, &store, ROLLING, "v2").await;
    let Progress::RolledBack { reason } = &out.progress else {
        panic!("expected a rollback, got {out:?}");
    };
    assert!(reason.contains("Target.ResponseCodeMismatch"), "{reason}");
    assert_eq!(fake.versions(), ["v1", "v1", "v1"]);
    assert_eq!(fake.cloud().min_serving, Some(3));
    assert_eq!(
        store.current_release().expect("current").as_deref(),
        Some("v1")
    );
    let row = store.deployments().expect("rows").pop().expect("row");
    assert_eq!(row.progress["progress"], "rolled_back");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_names_the_instance_and_what_it_waited_for() {
    let (_dir, store) = store();
    let fake = Fake::new();
    with_v1(&fake, &store).await;
    fake.cloud().never_ready_versions.insert("v2".into());
    let mut s = settings(ROLLING);
    s.progress_deadline = Duration::from_secs(120);
    let out = deploy_with(&fake, &store, s, "v2").await;
    let Progress::RolledBack { reason } = &out.progress else {
        panic!("expected a rollback, got {out:?}");
    };
    assert!(reason.contains("progress deadline (2m)"), "{reason}");
    assert!(reason.contains("i-0004 waiting for pending"), "{reason}");
    assert_eq!(fake.versions(), ["v1", "v1", "v1"]);
}

#[tokio::test(start_paused = true)]
async fn blue_green_flips_in_one_listener_change_and_keeps_the_old_set_warm() {
    let (_dir, store) = store();
    let fake = Fake::new();
    with_v1(&fake, &store).await;
    fake.cloud().weight_changes.clear();
    let out = deploy(&fake, &store, Strategy::BlueGreen, "v2").await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(out.live, Color::Green);
    assert_eq!(
        store.meta(LIVE_KEY).expect("meta").as_deref(),
        Some("green")
    );
    {
        let c = fake.cloud();
        assert_eq!(c.weight_changes, [(0, 1)], "one flip, all at once");
        assert_eq!(c.min_serving, Some(3));
    }
    // The old set stays running, registered, at weight 0: a rollback is a flip.
    assert_eq!(fake.versions(), ["v1", "v1", "v1", "v2", "v2", "v2"]);

    // The next rolling deploy runs in green and retires the warm set.
    let out = deploy(&fake, &store, ROLLING, "v3").await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(fake.versions(), ["v3", "v3", "v3"]);
    assert!(fake.running().iter().all(|m| m.group == Color::Green));
}

#[tokio::test(start_paused = true)]
async fn replace_group_moves_traffic_once_the_whole_new_set_is_healthy() {
    let (_dir, store) = store();
    let fake = Fake::new();
    with_v1(&fake, &store).await;
    fake.cloud().weight_changes.clear();
    let out = deploy(&fake, &store, Strategy::ReplaceGroup, "v2").await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(fake.versions(), ["v2", "v2", "v2"]);
    assert!(fake.running().iter().all(|m| m.group == Color::Green));
    assert_eq!(fake.cloud().min_serving, Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_listener_that_refuses_the_flip_aborts_and_keeps_the_old_set() {
    let (_dir, store) = store();
    let fake = Fake::new();
    with_v1(&fake, &store).await;
    fake.cloud().refuse_weights = true;
    let rollout = Rollout::begin(
        &fake,
        &fake,
        &store,
        settings(Strategy::BlueGreen),
        "v2",
        |_| {},
    )
    .expect("begin");
    let result = rollout.run().await;
    match result {
        Ok(out) => {
            let Progress::RolledBack { reason } = &out.progress else {
                panic!("expected a rollback, got {out:?}");
            };
            assert!(reason.contains("ModifyListener"), "{reason}");
        }
        Err(e) => assert!(e.to_string().contains("ModifyListener"), "{e}"),
    }
    assert_eq!(fake.versions(), ["v1", "v1", "v1"]);
    assert_eq!(fake.cloud().weights, (1, 0), "traffic never left blue");
}

#[tokio::test(start_paused = true)]
async fn an_instance_terminated_from_outside_mid_deploy_rolls_back() {
    let (_dir, store) = store();
    let fake = Fake::new();
    with_v1(&fake, &store).await;
    fake.cloud().drain_polls = 2;
    let mut killed = false;
    let rollout = Rollout::begin(&fake, &fake, &store, settings(ROLLING), "v2", |e| {
        // The first new instance, as soon as it is registered: someone terminates it.
        if e.kind == "register" && !killed {
            killed = true;
            let id = e.detail.split(' ').next().unwrap_or_default().to_owned();
            let mut c = fake.cloud();
            if let Some(m) = c.machines.iter_mut().find(|m| m.id == id) {
                m.state = MachineState::Gone {
                    detail: "terminated".into(),
                };
            }
        }
    })
    .expect("begin");
    let out = rollout.run().await.expect("outcome");
    let Progress::RolledBack { reason } = &out.progress else {
        panic!("expected a rollback, got {out:?}");
    };
    assert!(reason.contains("terminated outside cutover"), "{reason}");
    assert_eq!(fake.versions(), ["v1", "v1", "v1"]);
}

#[tokio::test(start_paused = true)]
async fn rollback_after_blue_green_is_one_flip_onto_the_warm_set() {
    let (_dir, store) = store();
    let fake = Fake::new();
    with_v1(&fake, &store).await;
    let flip = cutover_aws::rollout::flip_back(&fake, &fake, &store, 3, |_| {})
        .await
        .expect("flip");
    assert!(flip.is_none(), "after a rolling deploy nothing is warm");
    assert!(deploy(&fake, &store, Strategy::BlueGreen, "v2")
        .await
        .succeeded());
    fake.cloud().weight_changes.clear();
    let out = cutover_aws::rollout::flip_back(&fake, &fake, &store, 3, |_| {})
        .await
        .expect("flip")
        .expect("a warm set to flip to");
    assert_eq!((out.to.as_str(), out.live), ("v1", Color::Blue));
    assert_eq!(fake.cloud().weight_changes, [(1, 0)]);
    assert_eq!(
        store.current_release().expect("current").as_deref(),
        Some("v1")
    );
    assert_eq!(store.meta(LIVE_KEY).expect("meta").as_deref(), Some("blue"));
    assert_eq!(fake.versions().len(), 6, "nothing launched or stopped");
}
