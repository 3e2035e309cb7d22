//! Deploys end to end: `cutover up` running demo-app instances, `cutover deploy` under probe load,
//! and not one infrastructure failure on any path.

use std::time::Duration;

use cutover_e2e::cutover;
use cutover_e2e::stack::{assert_no_infra_failures, running, stack_file, Stack, RELEASE};
use serde_json::Value;

#[test]
fn rolling_v1_to_v2_under_load_within_surge_and_availability() {
    let stack = Stack::start("max_surge = 1\nmax_unavailable = 0\ndrain_timeout = \"5s\"");
    let probe = stack.probe(8);
    std::thread::sleep(Duration::from_millis(500));
    // Watch the fleet while the deploy runs: never above desired + surge, never below desired healthy.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (flag, file) = (watching.clone(), stack.file());
    let watcher = std::thread::spawn(move || {
        let mut worst = (0usize, usize::MAX);
        while flag.load(std::sync::atomic::Ordering::Relaxed) {
            let (_, out, _) = cutover(&["status", "--json", "-f", &file]);
            if let Ok(s) = serde_json::from_str::<Value>(&out) {
                let all = s["instances"].as_array().cloned().unwrap_or_default();
                let healthy = all.iter().filter(|i| i["state"] == "healthy").count();
                worst = (worst.0.max(all.len()), worst.1.min(healthy));
            }
        }
        worst
    });
    let (code, out) = stack.deploy("v2", None);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(code, 0, "{out}");
    let (most, fewest_healthy) = watcher.join().expect("watcher");
    assert!(most <= 4, "max_surge 1 allows 4 processes, saw {most}");
    assert!(
        fewest_healthy >= 3,
        "max_unavailable 0 keeps 3 healthy, saw {fewest_healthy}"
    );
    let report = probe.join().expect("probe");
    assert_no_infra_failures(&report);
    assert_eq!(report["failed"], 0, "{report}");
    assert!(report["versions"]["v2"].as_u64().unwrap_or(0) > 0);
    let instances = stack.instances();
    assert_eq!(instances.len(), 3);
    assert!(
        instances
            .iter()
            .all(|i| i["version"] == "v2" && i["state"] == "healthy"),
        "{instances:?}"
    );
    stack.stop_and_check_no_orphans();
}

fn rolled_back(command: &str, deploy_settings: &str, reason: &str) {
    let stack = Stack::start(deploy_settings);
    let probe = stack.probe(6);
    std::thread::sleep(Duration::from_millis(500));
    let (code, out) = stack.deploy("v3", Some(command));
    assert_eq!(code, 1, "a failed deploy exits non-zero: {out}");
    assert!(out.contains("rolled_back") && out.contains(reason), "{out}");
    let report = probe.join().expect("probe");
    assert_no_infra_failures(&report);
    assert_eq!(
        report["versions"].get("v3"),
        None,
        "v3 never took traffic: {report}"
    );
    stack.wait("the fleet to settle on v1", || {
        let all = stack.instances();
        (all.len() == 3
            && all
                .iter()
                .all(|i| i["version"] == "v1" && i["state"] == "healthy"))
        .then_some(())
    });
    let history = cutover(&["history", "--json", "-f", &stack.file()]).1;
    assert!(history.contains("rolled_back"), "{history}");
    stack.stop_and_check_no_orphans();
}

#[test]
fn a_release_failing_its_health_checks_is_rolled_back() {
    rolled_back(
        "demo-app --port {port} --version {version} --fail-health",
        "",
        "failed",
    );
}

#[test]
fn a_release_exiting_at_start_is_rolled_back() {
    rolled_back(
        "demo-app --port {port} --version {version} --exit-on-start",
        "",
        "failed",
    );
}

#[test]
fn a_release_slower_than_the_progress_deadline_is_rolled_back() {
    rolled_back(
        "demo-app --port {port} --version {version} --startup-delay 60s",
        "progress_deadline = \"2s\"",
        "progress deadline",
    );
}

#[test]
fn a_killed_instance_is_replaced_without_failed_requests() {
    let stack = Stack::start("");
    let probe = stack.probe(6);
    std::thread::sleep(Duration::from_millis(500));
    let victim = stack.instances()[0].clone();
    let pid = i32::try_from(victim["pid"].as_i64().expect("pid")).expect("pid fits");
    // SAFETY: killing a process this test's stack started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    stack.wait("a replacement to turn healthy", || {
        let all = stack.instances();
        let replaced = all.iter().all(|i| i["id"] != victim["id"]);
        (replaced && all.len() == 3 && all.iter().all(|i| i["state"] == "healthy")).then_some(())
    });
    let report = probe.join().expect("probe");
    assert_no_infra_failures(&report);
    stack.stop_and_check_no_orphans();
}

#[test]
fn rollback_redeploys_the_previous_release_and_logs_are_kept() {
    let stack = Stack::start("");
    let probe = stack.probe(8);
    let (code, out) = stack.deploy("v2", None);
    assert_eq!(code, 0, "{out}");
    let (code, out, err) = cutover(&["rollback", "-f", &stack.file(), "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let d: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (d["from"].as_str(), d["to"].as_str()),
        (Some("v2"), Some("v1"))
    );
    let all = stack.instances();
    assert!(
        all.len() == 3 && all.iter().all(|i| i["version"] == "v1"),
        "{all:?}"
    );
    assert_no_infra_failures(&probe.join().expect("probe"));

    let (code, out, _) = cutover(&["rollback", "--to", "v9", "-f", &stack.file()]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    let (code, logs, err) = cutover(&["logs", "--version", "v2", "--file", &stack.file()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("listening on 127.0.0.1:"))
            .count(),
        3,
        "{logs}"
    );
    stack.stop_and_check_no_orphans();
}

#[test]
fn a_daemon_killed_mid_deploy_comes_back_to_one_version_with_no_orphans() {
    let mut stack = Stack::start("max_surge = 1\nprogress_deadline = \"30s\"");
    let file = stack.file();
    let plane = stack.dataplane_pid();
    // Clients never notice: the data plane keeps serving while no controller runs.
    let probe = stack.probe(10);
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, err) = cutover(&["deploy", "v2", "--no-wait", "-f", &file]);
    assert_eq!(code, 0, "{out}{err}");
    stack.wait("a v2 instance to exist mid-deploy", || {
        stack
            .instances()
            .iter()
            .any(|i| i["version"] == "v2")
            .then_some(())
    });
    let before: Vec<i64> = stack
        .instances()
        .iter()
        .filter_map(|i| i["pid"].as_i64())
        .collect();
    stack.0.crash_and_restart();

    stack.wait("the fleet to settle on one version", || {
        let all = stack.instances();
        let one_version = all.iter().all(|i| i["version"] == all[0]["version"]);
        let settled = all.len() == 3 && one_version && all.iter().all(|i| i["state"] == "healthy");
        let finished = stack.status()["deployment"]["finished_at"].is_string();
        (settled && finished).then_some(())
    });
    assert_eq!(
        stack.dataplane_pid(),
        plane,
        "the restarted daemon adopts the data plane instead of starting another"
    );
    let report = probe.join().expect("probe");
    assert_no_infra_failures(&report);
    assert_eq!(report["failed"], 0, "{report}");
    let now: Vec<i64> = stack
        .instances()
        .iter()
        .filter_map(|i| i["pid"].as_i64())
        .collect();
    for pid in before {
        let alive = running(pid);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            !alive || now.contains(&pid),
            "instance pid {pid} of the old daemon is neither adopted nor gone: {stat}\nnow: {now:?}"
        );
    }
    let (code, history, err) = cutover(&["history", "--json", "-f", &file]);
    assert_eq!(code, 0, "{err}");
    let h: Value = serde_json::from_str(&history).expect("json");
    let first = &h["deployments"][0];
    assert_eq!(
        (first["id"].as_u64(), first["to"].as_str()),
        (Some(1), Some("v2")),
        "{h}"
    );
    assert!(first["finished_at"].is_string(), "{h}");
    stack.stop_and_check_no_orphans();
}

#[test]
fn a_killed_data_plane_is_replaced_on_the_same_address_with_every_target() {
    let stack = Stack::start("");
    let plane = stack.signal_dataplane(libc::SIGKILL);
    // The stack file says port 0; the replacement must listen where the dead one did.
    let url = format!("http://{}/", stack.0.addr);
    let client = cutover_e2e::client();
    stack.wait("the load balancer's address to answer again", || {
        client
            .get(&url)
            .send()
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    });
    let replaced = stack.dataplane_pid();
    assert_ne!(replaced, plane, "a new data plane");
    assert!(!running(plane));
    stack.wait("all three targets healthy in the new data plane", || {
        let groups = stack.status()["groups"].clone();
        let healthy = groups
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["targets"].as_array().cloned().unwrap_or_default())
            .filter(|t| t["state"] == "healthy")
            .count();
        (healthy == 3).then_some(())
    });
    // And it is steered as before: a deploy under load goes through it without a failure.
    let probe = stack.probe(4);
    let (code, out) = stack.deploy("v2", None);
    assert_eq!(code, 0, "{out}");
    let report = probe.join().expect("probe");
    assert_no_infra_failures(&report);
    stack.stop_and_check_no_orphans();
}

#[test]
fn a_data_plane_that_stops_answering_is_replaced() {
    let stack = Stack::start("");
    // A stopped process is alive but answers nothing: only its silence gives it away.
    let plane = stack.signal_dataplane(libc::SIGSTOP);
    let url = format!("http://{}/", stack.0.addr);
    let client = cutover_e2e::client();
    stack.wait("a new data plane answering on the same address", || {
        let answered = client
            .get(&url)
            .timeout(Duration::from_millis(500))
            .send()
            .is_ok_and(|r| r.status().is_success());
        (answered && stack.dataplane_pid() != plane).then_some(())
    });
    assert!(!running(plane), "the stuck data plane was killed");
    stack.stop_and_check_no_orphans();
}

#[test]
fn the_data_plane_keeps_its_own_log_in_bounds() {
    // A log already past the limit (10 MiB), as months of running would leave it.
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join(".cutover/logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let log = logs.join("dataplane.log");
    std::fs::write(&log, "an old line\n".repeat(1_000_000)).expect("a big log");
    let file = stack_file(RELEASE, "desired = 1", "", "");
    let stack = Stack::start_in(dir, &file, 1);
    stack.wait("the data plane's log to be rotated", || {
        let rotated = logs.join("dataplane.log.1");
        let small = std::fs::metadata(&log).is_ok_and(|m| m.len() < 1_000_000);
        (rotated.exists() && small).then_some(())
    });
    stack.stop_and_check_no_orphans();
}

#[test]
fn stop_after_the_controller_died_stops_what_it_left_running() {
    let mut stack = Stack::start("");
    let pids = stack.processes();
    // The data plane keeps serving, the instances keep running.
    stack.kill_daemon();
    assert!(pids.iter().all(|&p| running(p)), "{pids:?}");

    let (code, out) = stack.run(&["stop"]);
    assert_eq!(code, 0, "{out}");
    for pid in &pids {
        assert!(!running(*pid), "pid {pid} outlived `cutover stop`: {out}");
    }
    // Nothing is left to stop, and saying so is an error.
    let (code, out) = stack.run(&["stop"]);
    assert_eq!(code, 1, "{out}");
}

#[test]
fn stop_when_everything_died_says_nothing_is_running() {
    let mut stack = Stack::start_from(&stack_file(RELEASE, "desired = 1", "", ""), 1);
    let pids = stack.processes();
    stack.kill_daemon();
    for &pid in &pids {
        let pid = i32::try_from(pid).expect("pid fits");
        // SAFETY: signalling processes this test's stack started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    stack.wait("the data plane and the instance to be gone", || {
        pids.iter().all(|&p| !running(p)).then_some(())
    });
    let (code, out) = stack.run(&["stop"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("nothing is running"), "{out}");
    assert!(!stack.0.dir.path().join(".cutover/admin.addr").exists());
}
