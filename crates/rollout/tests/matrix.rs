//! The matrix (`cutover_rollout::matrix`) against the in-memory provider: every strategy under
//! every fault it can inject, each ending as the matrix says, with the simulation's invariants
//! held throughout: never fewer than the desired serving, never more than the surge running, no
//! instance registered before it was ready, none terminated mid-drain, and the fleet left on
//! one release.

mod common;

use common::{answered, settings};
use cutover_deploy::{Rolling, Strategy};
use cutover_rollout::matrix::{self, Expect, Fault};
use cutover_rollout::memory::Memory;
use cutover_rollout::{Outcome, Rollout, Side};
use cutover_store::Store;

const DESIRED: u32 = 3;

fn strategy(name: &str) -> Strategy {
    match name {
        "rolling" => Strategy::Rolling(Rolling {
            max_surge: 1,
            max_unavailable: 0,
        }),
        "replace-group" => Strategy::ReplaceGroup,
        "blue-green" => Strategy::BlueGreen,
        "canary" => common::canary(),
        other => panic!("no strategy {other}"),
    }
}

/// v1 by a rolling deploy, the fault set, then v2 by `name`.
async fn run(name: &str, fault: Fault, store: &Store, fake: &Memory) -> Outcome {
    let first = Rollout::begin(
        fake,
        fake,
        store,
        settings(strategy("rolling")),
        "v1",
        |_| {},
    )
    .expect("begin v1");
    assert!(first.run().await.expect("v1").succeeded());
    {
        let mut c = fake.cloud();
        c.min_serving = Some(usize::MAX);
        c.peak_running = DESIRED as usize;
        // The baseline's numbers, and the canary's unless the fault says otherwise.
        c.metrics.insert(Side::Blue, answered(5_000, 5));
        c.metrics.insert(Side::Green, answered(1_000, 1));
        c.has_preview = true;
        match fault {
            Fault::None | Fault::TerminatedOutside | Fault::PreviewFails => {}
            Fault::NeverHealthy => {
                c.unhealthy_versions.insert("v2".into());
            }
            Fault::NeverReady => {
                c.never_ready_versions.insert("v2".into());
            }
            Fault::SlowDrain => c.drain_polls = 4,
            Fault::RefusedFlip => c.refuse_weights = true,
            Fault::CanaryErrors => {
                c.metrics.insert(Side::Green, answered(1_000, 200));
            }
            Fault::CanaryNoNumbers => {
                c.metrics.clear();
            }
        }
    }
    let mut killed = false;
    let rollout = Rollout::begin(fake, fake, store, settings(strategy(name)), "v2", |e| {
        if fault == Fault::TerminatedOutside && e.kind == "register" && !killed {
            killed = true;
            fake.kill(e.detail.split(' ').next().unwrap_or_default());
        }
    })
    .expect("begin v2")
    .with_preview_check(Box::new(move || {
        // The check runs with the preview on the new side and all traffic still on the old.
        let (weights, preview) = {
            let c = fake.cloud();
            (c.weights, c.preview)
        };
        Box::pin(async move {
            if weights != (1, 0) || preview != Some(Side::Green) {
                return Err(format!(
                    "checked at weights {weights:?}, preview on {preview:?}"
                ));
            }
            match fault {
                Fault::PreviewFails => Err(
                    "20 of 20 requests through the preview listener failed, first: HTTP 500".into(),
                ),
                _ => Ok(()),
            }
        })
    }));
    match rollout.run().await {
        Ok(out) => out,
        Err(e) => panic!("{name} under {fault:?} ended in an error, not an outcome: {e}"),
    }
}

#[tokio::test(start_paused = true)]
async fn every_strategy_under_every_fault_ends_as_the_matrix_says() {
    let mut failures = Vec::new();
    let mut ran = 0;
    for name in matrix::STRATEGIES {
        for fault in Fault::ALL {
            let Some(expect) = matrix::expect(name, fault) else {
                continue;
            };
            ran += 1;
            let dir = tempfile::tempdir().expect("tempdir");
            let store = Store::open(&dir.path().join("state.db")).expect("store");
            let fake = Memory::new();
            let out = run(name, fault, &store, &fake).await;
            let case = format!("{name} under {fault:?}");
            if let Err(e) = expect.check(&out.progress) {
                failures.push(format!("{case}: {e}"));
                continue;
            }
            let c = fake.cloud();
            let peak = if name == "rolling" {
                DESIRED + 1
            } else {
                2 * DESIRED
            };
            let mut broken = Vec::new();
            if c.min_serving.is_some_and(|m| m < DESIRED as usize) {
                broken.push(format!("only {:?} serving at one point", c.min_serving));
            }
            if c.peak_running > peak as usize {
                broken.push(format!(
                    "{} running at once (at most {peak})",
                    c.peak_running
                ));
            }
            if !c.misregistered.is_empty() {
                broken.push(format!("registered too soon: {:?}", c.misregistered));
            }
            if !c.terminated_while_draining.is_empty() {
                broken.push(format!(
                    "terminated mid-drain: {:?}",
                    c.terminated_while_draining
                ));
            }
            drop(c);
            let current = store.current_release().expect("current");
            let mut versions = fake.versions();
            versions.dedup();
            match expect {
                Expect::Done => {
                    if current.as_deref() != Some("v2") {
                        broken.push(format!("current release {current:?}"));
                    }
                    let serving: Vec<_> = fake
                        .running()
                        .into_iter()
                        .filter(|m| m.side == out.live)
                        .map(|m| m.version)
                        .collect();
                    if serving != ["v2"; DESIRED as usize] {
                        broken.push(format!("the live side runs {serving:?}"));
                    }
                    let preview = fake.cloud().preview;
                    if name == "blue-green" && preview != Some(out.live) {
                        broken.push(format!("the preview listener pointed at {preview:?}"));
                    }
                }
                Expect::RolledBack(_) => {
                    if current.as_deref() != Some("v1") || versions != ["v1"] {
                        broken.push(format!("left {versions:?}, current {current:?}"));
                    }
                }
                Expect::Paused(_) => {
                    let row = store.deployments().expect("rows").pop().expect("row");
                    if row.finished_at.is_some() || current.as_deref() != Some("v1") {
                        broken.push("a pause must leave the deploy open on v1".into());
                    }
                }
            }
            if !broken.is_empty() {
                failures.push(format!("{case}: {}", broken.join("; ")));
            }
        }
    }
    assert_eq!(ran, 26);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
