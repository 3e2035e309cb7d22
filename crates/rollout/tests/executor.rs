//! The executor against the in-memory provider, which can fail in the ways the emulator cannot:
//! targets that turn unhealthy, drains that take a while, instances that never get ready, a
//! listener that refuses a change. Time is tokio's paused clock, so deadlines of minutes run in
//! milliseconds.

use std::time::Duration;

use cutover_deploy::{Progress, Rolling, Strategy};
use cutover_rollout::memory::Memory;
use cutover_rollout::{flip_back, Outcome, Rollout, Settings, Side};
use cutover_store::Store;

mod common;

use common::{answered, canary, settings, LIVE_KEY};

const ROLLING: Strategy = Strategy::Rolling(Rolling {
    max_surge: 1,
    max_unavailable: 0,
});

async fn deploy(fake: &Memory, store: &Store, strategy: Strategy, version: &str) -> Outcome {
    deploy_with(fake, store, settings(strategy), version).await
}

async fn deploy_with(fake: &Memory, store: &Store, settings: Settings, version: &str) -> Outcome {
    let rollout = Rollout::begin(fake, fake, store, settings, version, |_| {}).expect("begin");
    rollout.run().await.expect("the deploy runs to an outcome")
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.db")).expect("store");
    (dir, store)
}

/// v1 from nothing, then from then on the serving capacity is watched.
async fn with_v1(fake: &Memory, store: &Store) {
    let out = deploy(fake, store, ROLLING, "v1").await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(fake.versions(), ["v1", "v1", "v1"]);
    fake.cloud().min_serving = Some(usize::MAX);
    fake.cloud().peak_running = 3;
}

#[tokio::test(start_paused = true)]
async fn rolling_replaces_every_instance_within_surge_and_unavailable() {
    let (_dir, store) = store();
    let fake = Memory::new();
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
    assert!(c.misregistered.is_empty(), "{:?}", c.misregistered);
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
        c.targets[&Side::Blue].len(),
        3,
        "only the new instances stay registered"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unhealthy_new_version_rolls_back_with_alb_reason() {
    let (_dir, store) = store();
    let fake = Memory::new();
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
    assert_eq!(row.progress.name(), "rolled_back");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_names_the_instance_and_what_it_waited_for() {
    let (_dir, store) = store();
    let fake = Memory::new();
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
    let fake = Memory::new();
    with_v1(&fake, &store).await;
    fake.cloud().weight_changes.clear();
    let out = deploy(&fake, &store, Strategy::BlueGreen, "v2").await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(out.live, Side::Green);
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
    assert!(fake.running().iter().all(|m| m.side == Side::Green));
}

#[tokio::test(start_paused = true)]
async fn replace_group_moves_traffic_once_the_whole_new_set_is_healthy() {
    let (_dir, store) = store();
    let fake = Memory::new();
    with_v1(&fake, &store).await;
    fake.cloud().weight_changes.clear();
    let out = deploy(&fake, &store, Strategy::ReplaceGroup, "v2").await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(fake.versions(), ["v2", "v2", "v2"]);
    assert!(fake.running().iter().all(|m| m.side == Side::Green));
    assert_eq!(fake.cloud().min_serving, Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_listener_that_refuses_the_flip_aborts_and_keeps_the_old_set() {
    let (_dir, store) = store();
    let fake = Memory::new();
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
            assert!(reason.contains("set weights"), "{reason}");
        }
        Err(e) => assert!(e.to_string().contains("set weights"), "{e}"),
    }
    assert_eq!(fake.versions(), ["v1", "v1", "v1"]);
    assert_eq!(fake.cloud().weights, (1, 0), "traffic never left blue");
}

/// A new instance terminated by someone else says nothing about the release (as a SIGKILL on
/// one host): it is replaced and the deploy goes on.
#[tokio::test(start_paused = true)]
async fn an_instance_terminated_from_outside_mid_deploy_is_replaced_and_the_deploy_goes_on() {
    let (_dir, store) = store();
    let fake = Memory::new();
    with_v1(&fake, &store).await;
    fake.cloud().drain_polls = 2;
    let mut killed = None;
    let rollout = Rollout::begin(&fake, &fake, &store, settings(ROLLING), "v2", |e| {
        // The first new instance, as soon as it is registered: someone terminates it.
        if e.kind == "register" && killed.is_none() {
            let id = e.detail.split(' ').next().unwrap_or_default().to_owned();
            fake.kill(&id);
            killed = Some(id);
        }
    })
    .expect("begin");
    let out = rollout.run().await.expect("outcome");
    assert!(out.succeeded(), "{out:?}");
    let killed = killed.expect("a new instance was registered");
    assert!(fake.cloud().misregistered.is_empty());
    assert_eq!(fake.versions(), ["v2", "v2", "v2"]);
    assert!(fake.running().iter().all(|m| m.id != killed));
}

/// Losses are bounded: a release whose instances keep being taken away does not stay up.
#[tokio::test(start_paused = true)]
async fn instances_terminated_again_and_again_abort_past_the_loss_bound() {
    let (_dir, store) = store();
    let fake = Memory::new();
    with_v1(&fake, &store).await;
    let rollout = Rollout::begin(&fake, &fake, &store, settings(ROLLING), "v2", |e| {
        if e.kind == "register" {
            let id = e.detail.split(' ').next().unwrap_or_default().to_owned();
            fake.kill(&id);
        }
    })
    .expect("begin");
    let out = rollout.run().await.expect("outcome");
    let Progress::RolledBack { reason } = &out.progress else {
        panic!("expected a rollback, got {out:?}");
    };
    assert!(reason.contains("it does not stay up"), "{reason}");
    assert_eq!(fake.versions(), ["v1", "v1", "v1"]);
}

#[tokio::test(start_paused = true)]
async fn rollback_after_blue_green_is_one_flip_onto_the_warm_set() {
    let (_dir, store) = store();
    let fake = Memory::new();
    with_v1(&fake, &store).await;
    let flip = flip_back(&fake, &fake, &store, LIVE_KEY, 3, |_| {})
        .await
        .expect("flip");
    assert!(flip.is_none(), "after a rolling deploy nothing is warm");
    assert!(deploy(&fake, &store, Strategy::BlueGreen, "v2")
        .await
        .succeeded());
    fake.cloud().weight_changes.clear();
    let out = flip_back(&fake, &fake, &store, LIVE_KEY, 3, |_| {})
        .await
        .expect("flip")
        .expect("a warm set to flip to");
    assert_eq!((out.to.as_str(), out.live), ("v1", Side::Blue));
    assert_eq!(fake.cloud().weight_changes, [(1, 0)]);
    assert_eq!(
        store.current_release().expect("current").as_deref(),
        Some("v1")
    );
    assert_eq!(store.meta(LIVE_KEY).expect("meta").as_deref(), Some("blue"));
    assert_eq!(fake.versions().len(), 6, "nothing launched or stopped");
}

#[tokio::test(start_paused = true)]
async fn a_canary_whose_steps_pass_their_analysis_goes_on_to_the_whole_fleet() {
    let (_dir, store) = store();
    let fake = Memory::new();
    with_v1(&fake, &store).await;
    fake.cloud().metrics.insert(Side::Blue, answered(5_000, 5));
    fake.cloud().metrics.insert(Side::Green, answered(1_000, 1));
    let out = deploy(&fake, &store, canary(), "v2").await;
    assert!(out.succeeded(), "{out:?}");
    // Green takes everything; blue's v1 stays warm at weight 0 for an instant rollback.
    assert_eq!(out.live, Side::Green);
    assert_eq!(fake.cloud().weights, (0, 1));
    assert_eq!(fake.versions(), ["v1", "v1", "v1", "v2", "v2", "v2"]);
    let row = store.deployments().expect("rows").pop().expect("row");
    let steps: Vec<cutover_rollout::StepRecord> = serde_json::from_value(row.steps).expect("steps");
    let verdicts: Vec<(usize, &str)> = steps.iter().map(|s| (s.step, s.verdict.as_str())).collect();
    assert_eq!(verdicts, [(1, "pass"), (2, "pass")]);
    // Step 2 held green at a quarter of the traffic before the rest.
    assert!(
        fake.cloud().weight_changes.contains(&(75, 25)),
        "{:?}",
        fake.cloud().weight_changes
    );
    // Each window was asked of both sides, new and old.
    let sampled = fake.cloud().sampled.clone();
    assert!(sampled.iter().any(|(s, _)| *s == Side::Green));
    assert!(sampled.iter().any(|(s, _)| *s == Side::Blue));
}

#[tokio::test(start_paused = true)]
async fn a_canary_failing_its_analysis_rolls_back_with_the_numbers() {
    let (_dir, store) = store();
    let fake = Memory::new();
    with_v1(&fake, &store).await;
    fake.cloud().metrics.insert(Side::Blue, answered(5_000, 5));
    fake.cloud()
        .metrics
        .insert(Side::Green, answered(1_000, 200));
    let out = deploy(&fake, &store, canary(), "v2").await;
    let Progress::RolledBack { reason } = &out.progress else {
        panic!("expected a rollback: {out:?}");
    };
    assert!(
        reason.contains("step 1 failed analysis") && reason.contains("20.0%"),
        "{reason}"
    );
    assert_eq!(fake.versions(), ["v1", "v1", "v1"]);
    assert_eq!(fake.cloud().weights, (1, 0), "all traffic back on blue");
    let row = store.deployments().expect("rows").pop().expect("row");
    let steps: Vec<cutover_rollout::StepRecord> = serde_json::from_value(row.steps).expect("steps");
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert!(steps[0].verdict.starts_with("fail"), "{steps:?}");
}

#[tokio::test(start_paused = true)]
async fn a_canary_step_without_numbers_pauses_and_never_passes() {
    let (_dir, store) = store();
    let fake = Memory::new();
    with_v1(&fake, &store).await;
    let out = deploy(&fake, &store, canary(), "v2").await;
    let Progress::Paused { step, reason } = &out.progress else {
        panic!("expected a pause: {out:?}");
    };
    assert_eq!(*step, 0);
    assert!(
        reason.contains("inconclusive: 0 of 100 requests"),
        "{reason}"
    );
    // The canary instance stays, with its natural share, for a human to look at.
    let mut versions = fake.versions();
    versions.sort();
    assert_eq!(versions, ["v1", "v1", "v1", "v2"]);
    let row = store.deployments().expect("rows").pop().expect("row");
    assert!(
        row.finished_at.is_none(),
        "a paused deploy is still in progress"
    );
    // Too few requests is no better than none.
    let (_dir2, store2) = self::store();
    let fake2 = Memory::new();
    with_v1(&fake2, &store2).await;
    fake2.cloud().metrics.insert(Side::Blue, answered(5_000, 0));
    fake2.cloud().metrics.insert(Side::Green, answered(40, 0));
    let out = deploy(&fake2, &store2, canary(), "v2").await;
    assert!(
        matches!(&out.progress, Progress::Paused { reason, .. } if reason.contains("40 of 100")),
        "{out:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_paused_canary_is_promoted_or_aborted_from_its_record() {
    async fn resume(fake: &Memory, store: &Store, ask: cutover_rollout::Ask) -> Outcome {
        let rollout = Rollout::resume(fake, fake, store, settings(canary()), ask, |_| {})
            .expect("resume")
            .expect("a deployment in progress");
        rollout.run().await.expect("an outcome")
    }
    use cutover_deploy::Promote;
    use cutover_rollout::Ask;
    for (ask, ends) in [
        (Ask::Promote(Promote::Next), "done"),
        (Ask::Abort, "rolled back"),
    ] {
        let (_dir, store) = store();
        let fake = Memory::new();
        with_v1(&fake, &store).await;
        let out = deploy(&fake, &store, canary(), "v2").await;
        assert!(
            matches!(out.progress, Progress::Paused { step: 0, .. }),
            "{out:?}"
        );
        // Picked up as it stands, it pauses again: only a promote ends a pause.
        let again = resume(&fake, &store, Ask::Continue).await;
        assert!(
            matches!(again.progress, Progress::Paused { step: 0, .. }),
            "{again:?}"
        );
        // Numbers turn up for the next step; the operator decides on this one.
        fake.cloud().metrics.insert(Side::Blue, answered(5_000, 5));
        fake.cloud().metrics.insert(Side::Green, answered(1_000, 1));
        let out = resume(&fake, &store, ask).await;
        match ends {
            "done" => {
                assert!(out.succeeded(), "{out:?}");
                let row = store.deployments().expect("rows").pop().expect("row");
                let steps: Vec<cutover_rollout::StepRecord> =
                    serde_json::from_value(row.steps).expect("steps");
                let verdicts: Vec<&str> = steps.iter().map(|s| s.verdict.as_str()).collect();
                assert_eq!(verdicts, ["promoted", "pass"]);
            }
            _ => {
                assert!(
                    matches!(&out.progress, Progress::RolledBack { reason } if reason.contains("aborted by the operator")),
                    "{out:?}"
                );
                assert_eq!(fake.versions(), ["v1", "v1", "v1"]);
                assert_eq!(fake.cloud().weights, (1, 0));
            }
        }
        assert!(
            cutover_rollout::in_progress(&store)
                .expect("read")
                .is_none(),
            "the deployment has ended"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_running_canary_takes_requests_left_in_the_store() {
    use cutover_rollout::lease::{self, Request};
    for (request, ends) in [
        (Request::Pause, "paused"),
        (Request::Promote { full: true }, "done"),
        (Request::Abort, "rolled back"),
    ] {
        let (_dir, store) = store();
        let fake = Memory::new();
        with_v1(&fake, &store).await;
        // Numbers that would hold step 1 for its whole 60 s window without a verdict.
        fake.cloud().metrics.insert(Side::Blue, answered(5_000, 5));
        fake.cloud().metrics.insert(Side::Green, answered(10, 0));
        let rollout =
            Rollout::begin(&fake, &fake, &store, settings(canary()), "v2", |_| {}).expect("begin");
        let id = rollout.id();
        // Another process sees it running, and asks.
        let asker = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while lease::holder(&store, id).expect("holder").is_none() {
                assert!(tokio::time::Instant::now() < deadline, "never ran");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            lease::ask(&store, id, request).expect("ask");
        };
        let (out, ()) = tokio::join!(rollout.run(), asker);
        let out = out.expect("an outcome");
        match ends {
            "paused" => {
                assert!(
                    matches!(&out.progress, Progress::Paused { step: 0, reason } if reason.contains("paused by")),
                    "{out:?}"
                );
                // Resumed, the operator's pause is lifted: the step runs its window on.
                let again = Rollout::resume(
                    &fake,
                    &fake,
                    &store,
                    settings(canary()),
                    cutover_rollout::Ask::Continue,
                    |_| {},
                )
                .expect("resume")
                .expect("in progress")
                .run()
                .await
                .expect("an outcome");
                assert!(
                    matches!(&again.progress, Progress::Paused { step: 0, reason } if reason.contains("inconclusive: 10 of 100")),
                    "{again:?}"
                );
            }
            "done" => assert!(out.succeeded(), "{out:?}"),
            _ => assert!(
                matches!(&out.progress, Progress::RolledBack { reason } if reason.contains("aborted by the operator")),
                "{out:?}"
            ),
        }
        assert_eq!(lease::holder(&store, id).expect("holder"), None, "released");
    }
}
