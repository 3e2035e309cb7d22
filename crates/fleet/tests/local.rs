//! The local provider with real processes: environment, logs, graceful and forced stops, groups, crashes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cutover_fleet::{LaunchSpec, LocalFleet};
use nix::sys::signal::Signal;

const DEADLINE: Duration = Duration::from_secs(20);

fn spec(command: &str) -> LaunchSpec {
    LaunchSpec {
        command: command.into(),
        version: "v7".into(),
        env: BTreeMap::from([("GREETING".to_owned(), "hello".to_owned())]),
        user: None,
        workdir: None,
        stop_signal: Signal::SIGTERM,
        stop_timeout: Duration::from_secs(5),
    }
}

async fn wait_for_log(path: &std::path::Path, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "log {} never showed {needle:?}; it holds:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie still counts, so also read its state.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !state.is_empty()
        && !state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
}

/// Nothing of the test's (cutover's) own environment reaches an instance but the allow-list.
fn assert_clean_environment(pid: u32) {
    // Read while the script execs `sleep`, the file can be empty for a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let environ = loop {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        if !environ.is_empty() || std::time::Instant::now() > deadline {
            break environ;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let names: Vec<String> = environ
        .split(|b| *b == 0)
        .filter_map(|kv| kv.split(|b| *b == b'=').next())
        .filter(|k| !k.is_empty())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    // PWD, SHLVL and `_` are the test script's shell's own.
    const ALLOWED: [&str; 14] = [
        "PWD",
        "SHLVL",
        "_",
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "HOME",
        "USER",
        "LOGNAME",
        "GREETING",
        "PORT",
        "APP_VERSION",
        "INSTANCE_ID",
    ];
    for name in &names {
        assert!(
            ALLOWED.contains(&name.as_str()),
            "{name} leaked into the instance: {names:?}"
        );
    }
    assert!(names.iter().any(|n| n == "PATH"), "{names:?}");
}

#[tokio::test]
async fn launch_sets_port_version_and_id_and_captures_both_streams() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fleet, _exits) = LocalFleet::new(dir.path().join("logs"));
    let script = "echo port=$PORT arg={port} version=$APP_VERSION/{version} id=$INSTANCE_ID/{instance} $GREETING; echo oops >&2; exec sleep 30";
    let inst = fleet
        .launch(&spec(&format!("sh -c '{script}'")))
        .await
        .expect("launch");
    let text = wait_for_log(&inst.log, "oops").await;
    let expected = format!(
        "port={p} arg={p} version=v7/v7 id={id}/{id} hello",
        p = inst.port,
        id = inst.id
    );
    assert!(
        text.contains(&expected),
        "log:\n{text}\nexpected: {expected}"
    );
    assert!(inst.start_ticks.is_some());
    // The test's own environment (CARGO_*, RUST_*, whatever the shell had) stays behind.
    assert_clean_environment(inst.pid);
    assert_eq!(fleet.instances().len(), 1);
    fleet.stop(&inst.id).await.expect("stop");
    assert!(fleet.instances().is_empty());
}

#[tokio::test]
async fn stop_signal_then_exit_is_graceful() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fleet, mut exits) = LocalFleet::new(dir.path().to_owned());
    let inst = fleet
        .launch(&spec(
            "sh -c 'trap \"echo bye; exit 0\" TERM; echo ready; while true; do sleep 0.05; done'",
        ))
        .await
        .expect("launch");
    wait_for_log(&inst.log, "ready").await;
    let report = fleet.stop(&inst.id).await.expect("stop");
    assert!(report.graceful, "{report:?}");
    assert_eq!(report.code, Some(0));
    let exit = tokio::time::timeout(DEADLINE, exits.recv())
        .await
        .expect("exit event")
        .expect("channel");
    assert!(exit.requested, "a requested stop is not a crash");
    wait_for_log(&inst.log, "bye").await;
}

#[tokio::test]
async fn a_process_ignoring_the_stop_signal_is_killed_after_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fleet, _exits) = LocalFleet::new(dir.path().to_owned());
    let mut s = spec("sh -c 'trap \"\" TERM; echo ready; while true; do sleep 0.05; done'");
    s.stop_timeout = Duration::from_millis(300);
    let inst = fleet.launch(&s).await.expect("launch");
    wait_for_log(&inst.log, "ready").await;
    let report = fleet.stop(&inst.id).await.expect("stop");
    assert!(!report.graceful);
    assert_eq!(report.signal, Some(9));
    assert!(report.took_ms >= 300, "{report:?}");
}

/// Launches a shell that starts a child of its own; returns the instance and the child's pid.
async fn launch_with_child(fleet: &LocalFleet) -> (cutover_fleet::Instance, i32) {
    let inst = fleet
        .launch(&spec("sh -c 'sleep 300 & echo child=$!; wait'"))
        .await
        .expect("launch");
    let text = wait_for_log(&inst.log, "child=").await;
    let child = text
        .lines()
        .find_map(|l| l.strip_prefix("child="))
        .and_then(|p| p.trim().parse().ok())
        .expect("child pid");
    (inst, child)
}

#[tokio::test]
async fn stop_reaches_every_process_in_the_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fleet, _exits) = LocalFleet::new(dir.path().to_owned());
    let (inst, child) = launch_with_child(&fleet).await;
    assert!(alive(child));
    fleet.stop(&inst.id).await.expect("stop");
    let start = Instant::now();
    while alive(child) {
        assert!(
            start.elapsed() < DEADLINE,
            "the instance's child {child} outlived the stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_crash_is_reported_with_its_exit_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fleet, mut exits) = LocalFleet::new(dir.path().to_owned());
    let inst = fleet
        .launch(&spec("sh -c 'sleep 0.1; exit 3'"))
        .await
        .expect("launch");
    let exit = tokio::time::timeout(DEADLINE, exits.recv())
        .await
        .expect("exit event")
        .expect("channel");
    assert_eq!(exit.id, inst.id);
    assert_eq!(exit.code, Some(3));
    assert!(!exit.requested);
    assert!(exit.ran_for_ms >= 100);
}

#[tokio::test]
async fn a_missing_program_or_user_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fleet, _exits) = LocalFleet::new(dir.path().to_owned());
    let err = fleet
        .launch(&spec("/nonexistent/app --port {port}"))
        .await
        .expect_err("missing program");
    assert!(
        err.to_string().contains("cannot start `/nonexistent/app`"),
        "{err}"
    );
    let mut s = spec("sleep 1");
    s.user = Some("no-such-user-here".into());
    let err = fleet.launch(&s).await.expect_err("missing user");
    assert!(
        err.to_string()
            .contains("`no-such-user-here` does not exist"),
        "{err}"
    );
}

#[tokio::test]
async fn runs_as_an_unprivileged_user_when_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    let (fleet, _exits) = LocalFleet::new(logs.clone());
    let mut s = spec("sh -c 'echo uid=$(id -u) groups=$(id -G); exec sleep 30'");
    s.user = Some("nobody".into());
    match fleet.launch(&s).await {
        Ok(inst) => {
            assert!(nix::unistd::geteuid().is_root());
            let text = wait_for_log(&inst.log, "uid=").await;
            let nobody = nix::unistd::User::from_name("nobody")
                .expect("lookup")
                .expect("nobody exists");
            assert!(text.contains(&format!("uid={}", nobody.uid)), "{text}");
            assert!(
                !text.contains("groups=0"),
                "root's group must be dropped: {text}"
            );
            // The supplementary groups are the user's own (initgroups), not none at all.
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", inst.pid)).expect("status");
            let groups = status
                .lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .expect("a Groups line")
                .split_whitespace()
                .map(|g| g.parse::<u32>().expect("a gid"))
                .collect::<Vec<_>>();
            let name = std::ffi::CString::new("nobody").expect("name");
            let mut expected: Vec<u32> = nix::unistd::getgrouplist(&name, nobody.gid)
                .expect("grouplist")
                .into_iter()
                .map(|g| g.as_raw())
                .collect();
            expected.sort_unstable();
            expected.dedup();
            assert_eq!(groups, expected, "supplementary groups of nobody");
            assert_clean_environment(inst.pid);
            fleet.stop(&inst.id).await.expect("stop");
        }
        Err(e) => {
            assert!(!nix::unistd::geteuid().is_root(), "failed as root: {e}");
            assert!(
                e.to_string().contains("needs cutover to run as root"),
                "{e}"
            );
        }
    }
}

#[tokio::test]
async fn an_adopted_instance_is_watched_and_stopped_by_its_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, _exits) = LocalFleet::new(dir.path().to_owned());
    let (inst, child) = launch_with_child(&first).await;
    // A second fleet (a restarted daemon) takes it over.
    let (second, mut exits) = LocalFleet::new(dir.path().to_owned());
    assert!(cutover_fleet::instance::is_same_process(
        inst.pid,
        inst.start_ticks.expect("ticks")
    ));
    assert!(!cutover_fleet::instance::is_same_process(
        inst.pid,
        inst.start_ticks.expect("ticks") + 1
    ));
    second.adopt(inst.clone(), Signal::SIGTERM, Duration::from_secs(2));
    let report = second.stop(&inst.id).await.expect("stop");
    assert!(report.graceful, "{report:?}");
    let start = Instant::now();
    while alive(child) {
        assert!(
            start.elapsed() < DEADLINE,
            "the adopted instance's child outlived the stop"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let exit = tokio::time::timeout(DEADLINE, exits.recv())
        .await
        .expect("exit event")
        .expect("channel");
    assert!(exit.requested);
}

#[tokio::test]
async fn an_instance_whose_port_was_taken_says_so_and_one_that_just_dies_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (fleet, mut exits) = LocalFleet::new(dir.path().to_owned());
    let taken = dir.path().join("taken");
    // Another process (in a session of its own, so it outlives the instance's group) takes the
    // port just before the instance would bind it; the instance then fails as a server does.
    let script = dir.path().join("steal.sh");
    std::fs::write(
        &script,
        "setsid python3 -c \"import socket,sys,time,pathlib; s=socket.socket(); \
         s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(); pathlib.Path(sys.argv[2]).touch(); \
         time.sleep(5)\" \"$1\" \"$2\" &\n\
         while ! [ -e \"$2\" ]; do sleep 0.01; done\n\
         echo 'address in use'; exit 1\n",
    )
    .expect("script");
    let command = format!("sh {} {{port}} {}", script.display(), taken.display());
    fleet.launch(&spec(&command)).await.expect("launch");
    let exit = tokio::time::timeout(DEADLINE, exits.recv())
        .await
        .expect("exit event")
        .expect("channel");
    assert!(!exit.requested);
    assert!(exit.port_taken, "{exit:?}");

    fleet.launch(&spec("sh -c 'exit 1'")).await.expect("launch");
    let exit = tokio::time::timeout(DEADLINE, exits.recv())
        .await
        .expect("exit event")
        .expect("channel");
    assert!(!exit.port_taken, "a plain crash is a crash: {exit:?}");
}
