//! `cutover up` with static targets: the load balancer as a process, driven through the admin API and CLI.

use std::os::unix::fs::PermissionsExt;

use cutover_e2e::{client, cutover, wait_for, DemoApp, Up};

fn start(targets: &[String]) -> Up {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    Up::start(&format!(
        "targets = [{}]\n[service]\nname = \"lb\"\n[listener]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n[health]\ninterval = \"200ms\"\ntimeout = \"100ms\"\n",
        list.join(", ")
    ))
}

fn healthy(up: &Up) -> usize {
    up.status()["groups"][0]["targets"]
        .as_array()
        .map(|t| t.iter().filter(|t| t["state"] == "healthy").count())
        .unwrap_or(0)
}

#[test]
fn static_targets_behind_cutover_up_with_zero_failed_requests_while_one_is_drained() {
    let a = DemoApp::start(&["--version", "a"]);
    let b = DemoApp::start(&["--version", "b"]);
    let up = start(&[a.addr.to_string(), b.addr.to_string()]);
    wait_for("both targets healthy", || (healthy(&up) == 2).then_some(()));

    let token = up.dir.path().join(".cutover/admin.token");
    let mode = std::fs::metadata(&token)
        .expect("token file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let denied = client()
        .get(format!("http://{}/status", up.admin))
        .send()
        .expect("admin");
    assert_eq!(denied.status(), 401, "the admin API wants the token");

    let url = format!("http://{}/", up.addr);
    let probe = std::thread::spawn(move || {
        cutover(&[
            "probe",
            &url,
            "--rate",
            "300",
            "--duration",
            "3s",
            "--json",
            "-q",
        ])
    });
    std::thread::sleep(std::time::Duration::from_millis(800));
    let (code, out, err) = cutover(&["target", "remove", &a.addr.to_string(), "-f", &up.file()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 cut"), "{out}");
    let (code, probe_out, _) = probe.join().expect("probe thread");
    let report: serde_json::Value = serde_json::from_str(&probe_out).expect("probe json");
    assert_eq!(
        code, 0,
        "requests failed while a target was drained: {report}"
    );
    assert_eq!(report["failed"], 0);
    assert!(
        report["versions"]["b"].as_u64().unwrap_or(0)
            > report["versions"]["a"].as_u64().unwrap_or(0)
    );

    let (code, _, err) = cutover(&["target", "add", &a.addr.to_string(), "-f", &up.file()]);
    assert_eq!(code, 0, "{err}");
    wait_for("the re-added target to turn healthy", || {
        (healthy(&up) == 2).then_some(())
    });

    let metrics = client()
        .get(format!("http://{}/metrics", up.admin))
        .bearer_auth(std::fs::read_to_string(&token).expect("token"))
        .send()
        .expect("metrics");
    assert!(metrics
        .text()
        .expect("text")
        .contains("cutover_requests_total{group=\"static\""));
}

#[test]
fn sigterm_stops_the_stack_cleanly() {
    let a = DemoApp::start(&[]);
    let mut up = start(&[a.addr.to_string()]);
    let pid = i32::try_from(up.child.id()).expect("pid");
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let child = &mut up.child;
    let status = wait_for("cutover up to exit", || child.try_wait().expect("try_wait"));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_stack_without_targets_or_a_bad_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cutover.toml");
    std::fs::write(
        &file,
        "[service]\nname = \"x\"\n[listener]\nbind = \"0.0.0.0:http\"\n",
    )
    .expect("write");
    let (code, _, err) = cutover(&["up", "-f", file.to_str().expect("utf-8")]);
    assert_eq!(code, 2);
    assert!(err.contains("listener.bind"), "{err}");
}
