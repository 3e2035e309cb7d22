//! A canary on AWS, through the binary against the emulator: each step judged on the target
//! groups' CloudWatch numbers (published here as ELBv2 would), passing one run and failing
//! another; a step with no numbers pauses (exit 3), a second deploy is refused meanwhile, and
//! other processes abort or promote it from the record.
#![cfg(feature = "aws")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_e2e::cutover;
use cutover_e2e::moto::Moto;

const STACK: &str = r#"
[service]
name = "web"
[release]
version = "v1"
[health]
interval = "5s"
timeout = "2s"
[group]
desired = 2
[deploy]
drain_timeout = "5s"
progress_deadline = "8s"
steps = [{ instances = 1 }, { weight = 25 }]
[deploy.analysis]
min_requests = 20
max_error_rate = 0.05
[aws]
region = "us-west-2"
[aws.images]
v1 = "ami-00000000000000a1"
v2 = "ami-00000000000000a2"
v3 = "ami-00000000000000a3"
v4 = "ami-00000000000000a4"
"#;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// What the publisher sends every 100 ms: both groups serve; the one named in `failing`
/// answers a third of its requests with 5xx.
struct Traffic {
    on: AtomicBool,
    failing: Mutex<Option<String>>,
    stop: AtomicBool,
}

#[test]
fn a_canary_is_judged_on_cloudwatch_paused_without_numbers_and_picked_up_by_other_processes() {
    let moto = Arc::new(Moto::start());
    moto.export_env("us-west-2");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cutover.toml");
    std::fs::write(&file, STACK).expect("write stack file");
    let f = file.to_str().expect("utf-8 path");
    let run = |args: &[&str]| {
        let mut all = vec!["aws"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-f", f]);
        cutover(&all)
    };
    let canary = |version: &str| {
        run(&[
            "deploy",
            version,
            "--strategy",
            "canary",
            "--metric-period",
            "1s",
            "--poll",
            "100ms",
        ])
    };

    let (code, out, err) = cutover(&["aws", "init", "--json", "-f", f]);
    assert_eq!(code, 0, "{out}{err}");
    let init = json(&out);
    let listener = init["listener"].as_str().expect("listener").to_owned();
    let lb = listener
        .split_once(":listener/")
        .and_then(|(_, rest)| rest.rsplit_once('/'))
        .map(|(lb, _)| lb.to_owned())
        .expect("load balancer in the listener ARN");
    let group = |side: &str| {
        let arn = init["target_groups"][side].as_str().expect("target group");
        arn[arn.rfind(":targetgroup/").expect("target group ARN") + 1..].to_owned()
    };
    let (blue, green) = (group("blue"), group("green"));

    let traffic = Arc::new(Traffic {
        on: AtomicBool::new(false),
        failing: Mutex::new(None),
        stop: AtomicBool::new(false),
    });
    let publisher = {
        let (moto, traffic, lb) = (moto.clone(), traffic.clone(), lb.clone());
        let groups = [blue.clone(), green.clone()];
        std::thread::spawn(move || {
            while !traffic.stop.load(Ordering::Relaxed) {
                if traffic.on.load(Ordering::Relaxed) {
                    let failing = traffic.failing.lock().expect("lock").clone();
                    for g in &groups {
                        moto.put_alb_metric(&lb, g, "RequestCount", 30.0);
                        let errors = if failing.as_deref() == Some(g) {
                            10.0
                        } else {
                            0.0
                        };
                        moto.put_alb_metric(&lb, g, "HTTPCode_Target_5XX_Count", errors);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let (code, out, err) = run(&["deploy", "v1", "--poll", "100ms", "--json"]);
    assert_eq!(code, 0, "{out}{err}");

    // Both steps pass on healthy numbers: v2 takes green, v1 stays warm in blue.
    traffic.on.store(true, Ordering::Relaxed);
    let (code, out, err) = canary("v2");
    assert_eq!(code, 0, "a passing canary: {out}{err}");
    assert!(err.contains("step 1 (1 instance): pass"), "{err}");
    assert!(err.contains("step 2 (weight 25%): pass"), "{err}");
    assert!(err.contains("blue 75, green 25"), "step 2's weights: {err}");
    let (_, out, _) = run(&["status", "--json"]);
    assert_eq!(json(&out)["live"], "green");
    assert_eq!(json(&out)["current"], "v2");

    // The new side (blue now) answers a third with 5xx: the first step fails and rolls back.
    *traffic.failing.lock().expect("lock") = Some(blue.clone());
    let (code, out, err) = canary("v3");
    assert_eq!(code, 1, "a failing canary: {out}{err}");
    assert!(
        err.contains("rolled back: step 1 failed analysis: error rate"),
        "{err}"
    );
    let (_, out, _) = run(&["status", "--json"]);
    let status = json(&out);
    assert_eq!(status["live"], "green");
    assert_eq!(status["current"], "v2");
    assert_eq!(status["weights"], serde_json::json!([0, 1]));

    // No numbers at all: the step is inconclusive and the deploy pauses, never passes.
    traffic.on.store(false, Ordering::Relaxed);
    *traffic.failing.lock().expect("lock") = None;
    let (code, out, err) = canary("v3");
    assert_eq!(code, 3, "paused: {out}{err}");
    assert!(
        err.contains("paused at step 1: inconclusive: 0 of 20 requests"),
        "{err}"
    );
    // Meanwhile another deploy is refused, with who holds the stack and how to end it.
    let (code, _, err) = run(&["deploy", "v4"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("v2 → v3, canary) is in progress, paused at step 1"),
        "{err}"
    );
    // Aborted from another process: the canary goes, green keeps everything.
    let (code, out, err) = run(&["abort", "--poll", "100ms"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("aborted by the operator"), "{err}");
    let (_, out, _) = run(&["status", "--json"]);
    let status = json(&out);
    assert_eq!(status["current"], "v2");
    assert_eq!(status["weights"], serde_json::json!([0, 1]));

    // Paused again, then promoted from another process once numbers come in: step 2 is
    // judged on them and the deploy ends.
    let (code, out, err) = canary("v3");
    assert_eq!(code, 3, "{out}{err}");
    traffic.on.store(true, Ordering::Relaxed);
    let (code, out, err) = run(&["promote", "--metric-period", "1s", "--poll", "100ms"]);
    assert_eq!(code, 0, "promoted: {out}{err}");
    assert!(err.contains("step 1 (1 instance): promoted"), "{err}");
    assert!(err.contains("step 2 (weight 25%): pass"), "{err}");
    let (_, out, _) = run(&["status", "--json"]);
    let status = json(&out);
    assert_eq!(status["current"], "v3");
    assert_eq!(status["live"], "blue");
    let (code, _, err) = run(&["promote"]);
    assert_eq!(code, 2, "nothing left to promote: {err}");

    traffic.stop.store(true, Ordering::Relaxed);
    publisher.join().expect("publisher");
    let (code, out, err) = run(&["destroy"]);
    assert_eq!(code, 0, "{out}{err}");
}
