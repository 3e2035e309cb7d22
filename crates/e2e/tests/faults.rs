//! Faults on one host: instances killed one after another, releases that crash-loop. The group
//! never empties, and what dies young backs off alone.

use std::time::{Duration, Instant};

use cutover_e2e::stack::{assert_no_infra_failures, stack_file, Stack, RELEASE};
use serde_json::Value;

/// Instances that count towards the group's size: running, or starting.
fn alive(stack: &Stack) -> Vec<Value> {
    stack
        .instances()
        .into_iter()
        .filter(|i| i["state"] == "healthy" || i["state"] == "starting")
        .collect()
}

#[test]
fn instances_killed_one_after_another_are_each_replaced_at_once() {
    let file = stack_file(RELEASE, "desired = 4", "", "");
    let stack = Stack::start_from(&file, 4);
    let probe = stack.probe_at(300, 20);
    std::thread::sleep(Duration::from_millis(300));
    let mut slowest = Duration::ZERO;
    // Eight kills, each as soon as the last victim's replacement is healthy and has served a
    // moment (well under the 60 s a single crash counter once called "stable").
    for kill in 0..8 {
        let victim = stack.wait("a healthy instance that has served a while", || {
            std::thread::sleep(Duration::from_millis(100));
            let all = stack.instances();
            (all.len() == 4 && all.iter().all(|i| i["state"] == "healthy"))
                .then(|| all[kill % all.len()].clone())
        });
        std::thread::sleep(Duration::from_millis(2_200));
        let pid = i32::try_from(victim["pid"].as_i64().expect("pid")).expect("pid fits");
        // SAFETY: killing a process this test's stack started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let killed = Instant::now();
        stack.wait("a replacement to be launched", || {
            let all = alive(&stack);
            (all.len() == 4 && all.iter().all(|i| i["id"] != victim["id"])).then_some(())
        });
        slowest = slowest.max(killed.elapsed());
    }
    // Before: the fifth death of an instance younger than 60 s held every launch for 8 s.
    assert!(
        slowest < Duration::from_secs(3),
        "a replacement took {slowest:?} to be launched"
    );
    let report = probe.join().expect("probe");
    assert_no_infra_failures(&report);
    assert_eq!(report["failed"], 0, "{report}");
    stack.stop_and_check_no_orphans();
}

/// Whether the data plane has `target` out of rotation by passive health.
fn ejected(stack: &Stack, target: &str) -> bool {
    stack.status()["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["targets"].as_array().cloned().unwrap_or_default())
        .any(|t| t["target"] == target && t["ejected"] == true)
}

#[test]
fn a_hung_instance_costs_no_request_and_is_ejected_within_a_second() {
    let file = stack_file(RELEASE, "desired = 4", "", "");
    let stack = Stack::start_from(&file, 4);
    let probe = stack.probe_at(500, 8);
    // Long enough for the group's latency to be known, so tries are bounded.
    std::thread::sleep(Duration::from_secs(2));
    let victim = stack
        .instances()
        .into_iter()
        .find(|i| i["state"] == "healthy")
        .expect("a healthy instance");
    let pid = i32::try_from(victim["pid"].as_i64().expect("pid")).expect("pid fits");
    let target = format!("127.0.0.1:{}", victim["port"].as_u64().expect("port"));
    // SAFETY: stopping a process this test's stack started; it is resumed below.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let stopped = Instant::now();
    stack.wait("the hung instance to be ejected", || {
        std::thread::sleep(Duration::from_millis(20));
        ejected(&stack, &target).then_some(())
    });
    let took = stopped.elapsed();
    eprintln!("hung instance ejected after {took:?}");
    let report = probe.join().expect("probe");
    // SAFETY: as above; the stack stops it (or has replaced it) from here.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    // Before: every request sent to it waited for the probe's 2 s timeout until active checks
    // took it out, and those in flight waited for the proxy's 60 s.
    assert_eq!(report["failed"], 0, "{report}");
    assert!(took < Duration::from_secs(1), "ejected after {took:?}");
    stack.stop_and_check_no_orphans();
}

#[test]
fn a_release_that_dies_young_backs_off_per_slot_and_says_it_crash_loops() {
    // Healthy after two checks (~0.4 s), dead at 1 s: inside the settle window, every time.
    let release = "command = \"demo-app --port {port} --version {version} --crash-after 1s\"";
    let file = stack_file(release, "desired = 2", "", "");
    let stack = Stack::start_from(&file, 0);
    let status = stack.wait("the stack to report a crash loop", || {
        let s = stack.status();
        s["restarts"]["crash_loop"].is_string().then_some(s)
    });
    let said = status["restarts"]["crash_loop"].as_str().unwrap_or("");
    assert!(said.contains("v1 is crash-looping"), "{said}");
    // Its slots wait, ever longer: a launch is held back while the loop goes on.
    let held = stack.wait("a slot backing off", || {
        let s = stack.status();
        let held = s["restarts"]["backing_off"].as_array().cloned()?;
        (!held.is_empty()).then_some(held)
    });
    assert!(
        held.iter()
            .all(|h| h["died_young"].as_u64().unwrap_or(0) >= 1),
        "{held:?}"
    );
    let (code, out) = stack.run(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("CRASH LOOP") || out.contains("waits"),
        "status says so: {out}"
    );
    stack.stop_and_check_no_orphans();
}

#[test]
fn a_new_instance_killed_from_outside_while_it_starts_does_not_abort_the_deploy() {
    let file = stack_file(RELEASE, "desired = 2", "", "[deploy]\nmax_surge = 1");
    let stack = Stack::start_from(&file, 2);
    let probe = stack.probe_at(200, 12);
    // v2 takes 1.5 s to open its port: long enough to be killed while it starts.
    let slow_start = "demo-app --port {port} --version {version} --startup-delay 1500ms";
    let (code, out) = stack.run(&["deploy", "v2", "--no-wait", "--command", slow_start]);
    assert_eq!(code, 0, "{out}");
    let victim = stack.wait("a v2 instance starting", || {
        stack
            .instances()
            .into_iter()
            .find(|i| i["version"] == "v2" && i["state"] == "starting" && i["pid"].is_i64())
    });
    let pid = i32::try_from(victim["pid"].as_i64().expect("pid")).expect("pid fits");
    // SAFETY: killing a process this test's stack started. SIGKILL is what the OOM killer or
    // an operator sends; before, any death of a starting instance aborted the deploy.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deployment = stack.wait("the deploy to finish", || {
        let d = stack.status()["deployment"].clone();
        d["finished_at"].is_string().then_some(d)
    });
    assert_eq!(deployment["progress"]["progress"], "done", "{deployment}");
    let all = stack.instances();
    assert!(
        all.len() == 2 && all.iter().all(|i| i["version"] == "v2"),
        "{all:?}"
    );
    let report = probe.join().expect("probe");
    assert_no_infra_failures(&report);
    assert_eq!(report["failed"], 0, "{report}");
    stack.stop_and_check_no_orphans();
}

/// A small tmpfs mounted over a directory for as long as the test runs.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` where this machine does not let the test mount one (not root, no privilege).
    fn mount(dir: &std::path::Path, size: &str) -> Option<Self> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Writes zeroes into `path` until the file system says it is full.
fn fill(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

#[test]
fn a_full_disk_under_the_data_dir_costs_no_request_and_no_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(_tmpfs) = Tmpfs::mount(dir.path(), "16m") else {
        eprintln!("skipped: this machine does not let the test mount a tmpfs (needs root)");
        return;
    };
    let file = stack_file(RELEASE, "desired = 3", "", "");
    let stack = Stack::start_in(dir, &file, 3);
    let probe = stack.probe_at(200, 14);
    // Logs, the state database and the data plane's log all live on the full file system.
    let filler = std::path::Path::new(&stack.file()).with_file_name("filler");
    fill(&filler);
    // Served for more than the settle window, so that the kill is a loss, not an early death.
    std::thread::sleep(Duration::from_millis(2_500));
    for round in 0..2 {
        let victim = stack.wait("a healthy instance", || {
            stack
                .instances()
                .into_iter()
                .find(|i| i["state"] == "healthy" && i["pid"].is_i64())
        });
        let pid = i32::try_from(victim["pid"].as_i64().expect("pid")).expect("pid fits");
        // SAFETY: killing a process this test's stack started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        // Before, a replacement's first line of output failed with ENOSPC and killed it: the
        // slot crash-looped. Now its output goes to a relay that drops what it cannot write.
        stack.wait(
            "the replacement healthy, and three instances healthy",
            || {
                let all = stack.instances();
                let healthy = all.iter().filter(|i| i["state"] == "healthy").count();
                (healthy == 3 && all.iter().all(|i| i["id"] != victim["id"])).then_some(())
            },
        );
        if round == 0 {
            let status = stack.status();
            assert!(
                status["state_writes"]["error"].is_string(),
                "status says state is not saved: {}",
                status["state_writes"]
            );
            assert!(status["restarts"]["crash_loop"].is_null(), "{status}");
            // Room again: the next writes succeed and status says nothing more.
            std::fs::remove_file(&filler).expect("remove the filler");
        }
    }
    // Held for a while: no replacement dies of its output.
    std::thread::sleep(Duration::from_millis(1_500));
    let all = stack.instances();
    assert_eq!(
        all.iter().filter(|i| i["state"] == "healthy").count(),
        3,
        "{all:?}"
    );
    assert!(
        stack.status()["state_writes"].is_null(),
        "{}",
        stack.status()
    );
    let report = probe.join().expect("probe");
    assert_no_infra_failures(&report);
    assert_eq!(report["failed"], 0, "{report}");
    stack.stop_and_check_no_orphans();
}

#[test]
fn an_instance_breaking_its_answers_off_mid_body_costs_no_request() {
    let file = stack_file(RELEASE, "desired = 3", "", "");
    let stack = Stack::start_from(&file, 3);
    let victim = stack.instances()[0].clone();
    let pid = i32::try_from(victim["pid"].as_i64().expect("pid")).expect("pid fits");
    // SAFETY: signalling a process this test's stack started. SIGUSR2 makes demo-app send every
    // answer's head and half its body, then break the connection off.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR2) }, 0);
    let report = stack.probe_at(200, 8).join().expect("probe");
    assert_no_infra_failures(&report);
    assert_eq!(report["failed"], 0, "{report}");
    stack.stop_and_check_no_orphans();
}
