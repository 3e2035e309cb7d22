//! One planner step at 10,000 instances, for every strategy, mid-deploy: half the fleet
//! replaced, some instances starting, some draining. Goal: under 5 ms a step.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use cutover_deploy::{
    Canary, InstanceView, Observed, Rolling, Set, State, StepObserved, Strategy, Verdict,
};
use cutover_spec::{CanaryStep, Pause};

const DESIRED: u32 = 10_000;

fn fleet(new_set: Set) -> Vec<InstanceView> {
    (0..DESIRED * 3 / 2)
        .map(|i| {
            let new = i >= DESIRED / 2;
            InstanceView {
                id: format!("i-{i:08}"),
                version: if new { "v2" } else { "v1" }.into(),
                set: if new { new_set } else { Set::Live },
                state: match i % 10 {
                    0 => State::Starting,
                    1 => State::Draining,
                    _ => State::Healthy,
                },
                detail: None,
            }
        })
        .collect()
}

fn observed(new_set: Set) -> Observed {
    Observed {
        target: "v2".into(),
        previous: "v1".into(),
        desired: DESIRED,
        instances: fleet(new_set),
        deadline_passed: false,
        launches_in_flight: vec![("v2".into(), new_set); 100],
        aborted: None,
        step: StepObserved {
            index: 1,
            held_for: Some(Duration::from_secs(30)),
            verdict: Verdict::Pass,
            ..StepObserved::default()
        },
        promotion: Default::default(),
        lost: 0,
    }
}

fn plan_step(c: &mut Criterion) {
    let canary = Strategy::Canary(Canary {
        steps: vec![
            CanaryStep {
                instances: Some(1),
                weight: None,
                pause: Pause::None,
            },
            CanaryStep {
                instances: None,
                weight: Some(50),
                pause: Pause::For(Duration::from_secs(60)),
            },
        ],
        window: Duration::from_secs(600),
    });
    let strategies = [
        (
            Strategy::Rolling(Rolling {
                max_surge: 500,
                max_unavailable: 0,
            }),
            Set::Live,
        ),
        (Strategy::ReplaceGroup, Set::Next),
        (Strategy::BlueGreen, Set::Next),
        (canary, Set::Next),
    ];
    for (strategy, set) in strategies {
        let o = observed(set);
        c.bench_function(
            &format!("{} step at 10,000 instances", strategy.name()),
            |b| b.iter(|| black_box(strategy.plan(black_box(&o)))),
        );
        let mut aborting = o.clone();
        aborting.aborted = Some("bench".into());
        c.bench_function(
            &format!("{} abort at 10,000 instances", strategy.name()),
            |b| b.iter(|| black_box(strategy.plan(black_box(&aborting)))),
        );
    }
}

criterion_group!(benches, plan_step);
criterion_main!(benches);
