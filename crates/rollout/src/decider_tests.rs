use std::time::Duration;

use cutover_deploy::{Canary, Rolling, Traffic};
use cutover_spec::{CanaryStep, Pause};

use super::*;

const LIMITS: Limits = Limits {
    min_requests: 10,
    max_error_rate: 0.05,
    max_error_rate_ratio: 2.0,
    max_p99: Duration::from_secs(1),
    max_p99_ratio: 1.5,
};

fn bounds() -> Bounds {
    Bounds {
        progress_deadline: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(30),
        analysis: LIMITS,
        status_command: "cutover status",
    }
}

fn rolling() -> Strategy {
    Strategy::Rolling(Rolling {
        max_surge: 1,
        max_unavailable: 0,
    })
}

fn view(id: &str, version: &str, set: Set, state: State) -> InstanceView {
    InstanceView {
        id: id.into(),
        version: version.into(),
        set,
        state,
        detail: None,
    }
}

fn look(desired: u32, instances: Vec<InstanceView>) -> Look {
    Look {
        desired,
        instances,
        ..Look::default()
    }
}

fn launches(d: &Decision) -> usize {
    d.plan
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Launch { .. }))
        .count()
}

#[tokio::test(start_paused = true)]
async fn the_deadline_bounds_each_new_instance_not_the_deploy() {
    let mut d = Decider::new(rolling(), "v1", "v2", bounds());
    let old = |id| view(id, "v1", Set::Live, State::Healthy);
    // A first new instance serves after 50 s; the second starts then and may take its own 60 s.
    let first = d.decide(look(2, vec![old("a"), old("b")]));
    assert_eq!(launches(&first), 1);
    d.launched("n1");
    tokio::time::advance(Duration::from_secs(50)).await;
    let p = d.decide(look(
        2,
        vec![
            old("a"),
            old("b"),
            view("n1", "v2", Set::Live, State::Healthy),
        ],
    ));
    assert_eq!(p.plan.progress, Progress::Rolling);
    d.launched("n2");
    tokio::time::advance(Duration::from_secs(50)).await;
    let p = d.decide(look(
        2,
        vec![
            view("b", "v1", Set::Live, State::Draining),
            view("n1", "v2", Set::Live, State::Healthy),
            view("n2", "v2", Set::Live, State::Starting),
        ],
    ));
    assert_eq!(p.plan.progress, Progress::Rolling, "100 s into the deploy");
    tokio::time::advance(Duration::from_secs(11)).await;
    let mut slow = view("n2", "v2", Set::Live, State::Starting);
    slow.detail = Some("waiting for status checks".into());
    let p = d.decide(look(
        2,
        vec![view("n1", "v2", Set::Live, State::Healthy), slow],
    ));
    let Progress::Aborting { reason } = &p.plan.progress else {
        panic!("{:?}", p.plan.progress)
    };
    assert!(reason.contains("progress deadline (1m)"), "{reason}");
    assert!(reason.contains("n2 waiting for status checks"), "{reason}");
    assert_eq!(d.aborted(), Some(reason.as_str()));
}

#[tokio::test(start_paused = true)]
async fn a_launch_never_seen_is_bounded_too() {
    let mut d = Decider::new(rolling(), "v1", "v2", bounds());
    let launching = vec![Launching {
        id: "n1".into(),
        version: "v2".into(),
        set: Set::Live,
    }];
    let mut l = look(1, vec![view("a", "v1", Set::Live, State::Healthy)]);
    l.launching = launching;
    assert_eq!(d.decide(l.clone()).plan.progress, Progress::Rolling);
    tokio::time::advance(Duration::from_secs(61)).await;
    let p = d.decide(l);
    assert!(
        matches!(&p.plan.progress, Progress::Aborting { reason } | Progress::RolledBack { reason } if reason.contains("n1 still being launched")),
        "{:?}",
        p.plan.progress
    );
}

#[tokio::test(start_paused = true)]
async fn an_abort_that_cannot_finish_ends_at_its_own_bound() {
    let mut d = Decider::new(rolling(), "v1", "v2", bounds());
    d.abort("aborted by the operator");
    // The old version cannot come back (it crash-loops, say): the abort waits, then gives up.
    let stuck = || look(2, vec![view("o1", "v1", Set::Live, State::Starting)]);
    assert!(matches!(
        d.decide(stuck()).plan.progress,
        Progress::Aborting { .. }
    ));
    tokio::time::advance(Duration::from_secs(89)).await;
    assert!(matches!(
        d.decide(stuck()).plan.progress,
        Progress::Aborting { .. }
    ));
    tokio::time::advance(Duration::from_secs(2)).await;
    let p = d.decide(stuck());
    let Progress::RolledBack { reason } = &p.plan.progress else {
        panic!("{:?}", p.plan.progress)
    };
    assert!(reason.starts_with("aborted by the operator; the rollback did not finish within 1m 30s: check `cutover status`"), "{reason}");
}

#[tokio::test(start_paused = true)]
async fn a_first_deploy_aborts_by_removing_what_it_launched() {
    let mut d = Decider::new(rolling(), "", "v1", bounds());
    let mut l = look(1, vec![view("n1", "v1", Set::Live, State::Failed)]);
    l.instances[0].detail = Some("exited with code 1".into());
    let p = d.decide(l);
    assert_eq!(
        p.plan.actions,
        vec![Action::Remove { id: "n1".into() }],
        "nothing old to launch"
    );
    assert!(
        matches!(&p.plan.progress, Progress::Aborting { reason } if reason.contains("exited with code 1"))
    );
    let p = d.decide(look(1, vec![]));
    assert!(matches!(p.plan.progress, Progress::RolledBack { .. }));
}

#[tokio::test(start_paused = true)]
async fn done_waits_for_the_drains() {
    let mut d = Decider::new(Strategy::ReplaceGroup, "v1", "v2", bounds());
    let new = |id| view(id, "v2", Set::Next, State::Healthy);
    let p = d.decide(look(
        1,
        vec![view("a", "v1", Set::Live, State::Draining), new("n1")],
    ));
    assert_eq!(p.plan.progress, Progress::Rolling);
    assert_eq!(
        d.decide(look(1, vec![new("n1")])).plan.progress,
        Progress::Done
    );
}

#[tokio::test(start_paused = true)]
async fn a_rolling_deploy_drains_a_warm_set_first() {
    let mut d = Decider::new(rolling(), "v2", "v3", bounds());
    let p = d.decide(look(
        1,
        vec![
            view("w", "v1", Set::Next, State::Healthy),
            view("a", "v2", Set::Live, State::Healthy),
        ],
    ));
    assert_eq!(
        p.plan.actions.first(),
        Some(&Action::Drain { id: "w".into() })
    );
    assert_eq!(launches(&p), 1);
}

#[tokio::test(start_paused = true)]
async fn a_launch_error_gives_up_with_its_message() {
    let mut d = Decider::new(rolling(), "v1", "v2", bounds());
    let mut l = look(1, vec![view("a", "v1", Set::Live, State::Healthy)]);
    l.launch_error = Some("no such file: /opt/app".into());
    let p = d.decide(l);
    assert!(
        matches!(&p.plan.progress, Progress::RolledBack { reason } if reason == "v2 could not be started: no such file: /opt/app"),
        "{:?}",
        p.plan.progress
    );
}

#[tokio::test(start_paused = true)]
async fn losses_after_serving_are_counted_across_looks() {
    let mut d = Decider::new(rolling(), "v1", "v2", bounds());
    // Desired 1 tolerates 2 losses of the new version; the third aborts, even though each look
    // shows only one.
    for (i, id) in ["n1", "n2", "n3"].iter().enumerate() {
        let p = d.decide(look(1, vec![view(id, "v2", Set::Live, State::Lost)]));
        let aborting = matches!(p.plan.progress, Progress::Aborting { .. });
        assert_eq!(
            aborting,
            i == 2,
            "after {} losses: {:?}",
            i + 1,
            p.plan.progress
        );
    }
}

fn canary() -> Strategy {
    Strategy::Canary(Canary {
        steps: vec![
            CanaryStep {
                instances: Some(1),
                weight: None,
                pause: Pause::None,
            },
            CanaryStep {
                instances: None,
                weight: Some(50),
                pause: Pause::UntilPromoted,
            },
        ],
        window: Duration::from_secs(30),
    })
}

fn sample(requests: u64, errors: u64) -> Option<Sample> {
    Some(Sample {
        requests,
        errors,
        p99: Some(Duration::from_millis(5)),
    })
}

#[tokio::test(start_paused = true)]
async fn a_canary_step_is_judged_on_its_window_and_recorded() {
    let mut d = Decider::new(canary(), "v1", "v2", bounds());
    let fleet = || {
        look(
            2,
            vec![
                view("a", "v1", Set::Live, State::Healthy),
                view("b", "v1", Set::Live, State::Healthy),
                view("n1", "v2", Set::Next, State::Healthy),
            ],
        )
    };
    // The step's capacity is in place: its window starts, and there is nothing to judge yet.
    assert!(d.window_since().is_none());
    let p = d.decide(fleet());
    assert!(p.plan.reached && p.steps.is_empty());
    assert!(d.window_since().is_some());
    // Numbers that pass move the deploy to step 2, with the record of step 1.
    let mut l = fleet();
    l.window = Some((sample(50, 0), sample(100, 0)));
    let p = d.decide(l);
    assert_eq!(p.plan.step, 1);
    assert_eq!(p.steps.len(), 1);
    assert_eq!((p.steps[0].step, p.steps[0].verdict.as_str()), (1, "pass"));
    assert_eq!(d.step_index(), 1);
    // Step 2 waits for a human; `promote` moves it on and is what its record says.
    let mut p = d.decide(fleet());
    for _ in 0..3 {
        if matches!(p.plan.progress, Progress::Paused { .. }) {
            break;
        }
        p = d.decide(fleet());
    }
    assert!(
        matches!(p.plan.progress, Progress::Paused { step: 1, .. }),
        "{:?}",
        p.plan.progress
    );
    d.promote(Promote::Next);
    let p = d.decide(fleet());
    assert_eq!(p.steps.len(), 1);
    assert_eq!(p.steps[0].verdict, "promoted");
}

#[tokio::test(start_paused = true)]
async fn a_failing_canary_is_recorded_once_and_loses_its_traffic() {
    let mut d = Decider::new(canary(), "v1", "v2", bounds());
    let fleet = || {
        look(
            2,
            vec![
                view("a", "v1", Set::Live, State::Healthy),
                view("b", "v1", Set::Live, State::Healthy),
                view("n1", "v2", Set::Next, State::Healthy),
            ],
        )
    };
    d.decide(fleet());
    let mut l = fleet();
    l.window = Some((sample(100, 40), sample(100, 0)));
    let p = d.decide(l.clone());
    assert!(matches!(p.plan.progress, Progress::Aborting { .. }));
    assert_eq!(p.plan.traffic, Traffic::Next(0));
    assert_eq!(p.steps.len(), 1);
    assert!(
        p.steps[0].verdict.contains("error"),
        "{}",
        p.steps[0].verdict
    );
    let p = d.decide(l);
    assert!(p.steps.is_empty(), "recorded once");
}

#[tokio::test(start_paused = true)]
async fn no_numbers_is_no_pass() {
    let mut d = Decider::new(canary(), "v1", "v2", bounds());
    let mut l = look(
        1,
        vec![
            view("a", "v1", Set::Live, State::Healthy),
            view("n1", "v2", Set::Next, State::Healthy),
        ],
    );
    d.decide(l.clone());
    l.window = Some((None, None));
    tokio::time::advance(Duration::from_secs(31)).await;
    let p = d.decide(l);
    assert!(
        matches!(&p.plan.progress, Progress::Paused { step: 0, reason } if reason.contains("promote")),
        "{:?}",
        p.plan.progress
    );
}

#[tokio::test(start_paused = true)]
async fn a_resumed_pause_waits_for_promote() {
    let d = Decider::new(canary(), "v1", "v2", bounds());
    let mut d = d.resumed(
        Progress::Paused {
            step: 1,
            reason: "waiting for `cutover promote`".into(),
        },
        1,
    );
    assert_eq!(d.step_index(), 1);
    d.hold(true);
    let p = d.decide(look(
        2,
        vec![
            view("a", "v1", Set::Live, State::Healthy),
            view("b", "v1", Set::Live, State::Healthy),
            view("n1", "v2", Set::Next, State::Healthy),
            view("n2", "v2", Set::Next, State::Healthy),
        ],
    ));
    assert!(
        matches!(&p.plan.progress, Progress::Paused { step: 1, reason } if reason.contains("pause")),
        "{:?}",
        p.plan.progress
    );
}

#[tokio::test(start_paused = true)]
async fn a_warm_set_of_another_version_never_takes_a_share() {
    let mut d = Decider::new(canary(), "v2", "v3", bounds());
    let p = d.decide(look(
        2,
        vec![
            view("w1", "v1", Set::Next, State::Healthy),
            view("w2", "v1", Set::Next, State::Healthy),
            view("a", "v2", Set::Live, State::Healthy),
            view("b", "v2", Set::Live, State::Healthy),
        ],
    ));
    assert_eq!(p.weights.1, 0, "{p:?}");
    assert!(p.plan.actions.contains(&Action::Drain { id: "w1".into() }));
}
