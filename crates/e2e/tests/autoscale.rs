//! Autoscaling end to end: the probe drives load, the stack scales out step by step after its
//! evaluation periods and cooldowns, and back in when the load stops, dropping nothing.

use cutover_e2e::stack::{stack_file, Stack};
use serde_json::Value;

const COOLDOWN_S: f64 = 2.0;
const PERIODS: f64 = 2.0;

fn stack(command: &str, max: u32, policy: &str) -> Stack {
    let file = stack_file(
        &format!("command = \"{command}\""),
        &format!("min = 1\ndesired = 1\nmax = {max}"),
        "",
        &format!(
            "[deploy]\ndrain_timeout = \"5s\"\n\
             [autoscale]\nscale_out_cooldown = \"{COOLDOWN_S}s\"\nscale_in_cooldown = \"{COOLDOWN_S}s\"\n\
             [[autoscale.policies]]\n{policy}"
        ),
    );
    Stack::start_from(&file, 1)
}

/// 25 requests/s is 1,500 a minute: above 600 per target on one or two instances, not on three.
const REQUESTS: &str = r#"kind = "step"
period = "1s"
periods = 2
steps = [{ above = 600, change = 1 }, { below = 120, change = -1 }]"#;

const DEMO: &str = "demo-app --port {port} --version {version}";

fn nothing_failed(report: &Value, at_least: u64) {
    assert_eq!(report["failed"], 0, "{report}");
    assert!(
        report["requests"].as_u64().unwrap_or(0) >= at_least,
        "too little load: {report}"
    );
}

fn desired(stack: &Stack) -> u64 {
    stack.status()["desired"].as_u64().unwrap_or(0)
}

fn scaling(stack: &Stack) -> Vec<Value> {
    let (code, out) = stack.run(&["history", "--scaling", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.lines().next().unwrap_or("")).unwrap_or_default();
    v["scaling"].as_array().cloned().unwrap_or_default()
}

fn seconds(at: &Value) -> f64 {
    let t = humantime::parse_rfc3339(at.as_str().unwrap_or("")).expect("an RFC 3339 time");
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[test]
fn scales_out_step_by_step_to_max_then_in_to_min_dropping_nothing() {
    let stack = stack(DEMO, 3, REQUESTS);
    let load = stack.probe_at(25, 14);
    stack.wait("a scale-out to 3", || (desired(&stack) == 3).then_some(()));
    let report = load.join().expect("probe");
    nothing_failed(&report, 300);
    // A trickle keeps the requests flowing through every scale-in drain.
    let trickle = stack.probe_at(1, 12);
    let history = stack.wait("a scale-in to 1", || {
        let h = scaling(&stack);
        (h.last().is_some_and(|a| a["to"] == 1)).then_some(h)
    });
    nothing_failed(&trickle.join().expect("probe"), 10);
    stack.wait("one instance left", || {
        (stack.fleet() == vec![("v1".to_owned(), "healthy".to_owned())]).then_some(())
    });
    let steps: Vec<(u64, u64)> = history
        .iter()
        .map(|a| {
            (
                a["from"].as_u64().unwrap_or(0),
                a["to"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(steps, vec![(1, 2), (2, 3), (3, 2), (2, 1)], "{history:?}");
    for pair in history.windows(2) {
        let gap = seconds(&pair[1]["at"]) - seconds(&pair[0]["at"]);
        // Each action waits out the cooldown and then two fresh evaluation periods.
        assert!(
            gap >= COOLDOWN_S.max(PERIODS) - 0.05,
            "{gap:.2}s between actions: {history:?}"
        );
    }
    assert!(
        history[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("above 600")),
        "{history:?}"
    );
    assert_eq!(
        history[0]["metrics"][0]["values"].as_array().map(Vec::len),
        Some(2)
    );
    stack.stop_and_check_no_orphans();
}

#[test]
fn a_cpu_policy_scales_out_on_busy_instances() {
    let stack = stack(
        // Busy enough to read well above the threshold even when a loaded machine gives the
        // burning thread only part of the core it asks for.
        "demo-app --port {port} --version {version} --cpu-burn 0.9",
        2,
        "kind = \"cpu\"\nperiod = \"1s\"\nperiods = 2\nscale_out_above = 20\nscale_in_below = 5",
    );
    stack.wait("a scale-out to 2", || (desired(&stack) == 2).then_some(()));
    let history = scaling(&stack);
    assert!(
        history[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cpu percent per instance above 20")),
        "{history:?}"
    );
    let burned = history[0]["metrics"][0]["values"][0]
        .as_f64()
        .unwrap_or(0.0);
    assert!((20.0..=120.0).contains(&burned), "{burned}% of a core");
    stack.wait("two healthy instances", || {
        (stack.healthy("v1") == 2).then_some(())
    });
    stack.stop_and_check_no_orphans();
}

#[test]
fn a_deploy_during_scale_out_ends_at_the_right_size_on_the_new_version() {
    let stack = stack(DEMO, 3, REQUESTS);
    let load = stack.probe_at(25, 16);
    stack.wait("the first scale-out", || {
        (desired(&stack) >= 2).then_some(())
    });
    let (code, out) = stack.deploy("v2", None);
    assert_eq!(code, 0, "{out}");
    stack.wait("three healthy v2 instances and nothing else", || {
        (desired(&stack) == 3 && stack.fleet() == vec![("v2".to_owned(), "healthy".to_owned()); 3])
            .then_some(())
    });
    let report = load.join().expect("probe");
    nothing_failed(&report, 300);
    stack.stop_and_check_no_orphans();
}

#[test]
fn scale_by_hand_stays_within_min_and_max() {
    let stack = stack(DEMO, 3, REQUESTS);
    let (code, out) = stack.run(&["scale", "4"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("outside the group's min 1 and max 3"), "{out}");
    let (code, out) = stack.run(&["scale", "2"]);
    assert_eq!(code, 0, "{out}");
    stack.wait("two healthy instances", || {
        (stack.healthy("v1") == 2).then_some(())
    });
    let status = stack.status();
    assert_eq!(status["desired"], 2);
    assert_eq!(status["scaling"]["reason"], "set by `cutover scale`");
    // Without load the policy scales back in, after the cooldown that the manual change started.
    let h = stack.wait("a scale-in to 1", || {
        let h = scaling(&stack);
        (h.last().is_some_and(|a| a["to"] == 1)).then_some(h)
    });
    assert!(seconds(&h[1]["at"]) - seconds(&h[0]["at"]) >= COOLDOWN_S - 0.05);
    stack.stop_and_check_no_orphans();
}
