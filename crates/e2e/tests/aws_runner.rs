//! A deploy on AWS runs in one process, with nobody's daemon around it; other processes see who
//! runs it and ask it things through the record: pause a running canary (it stops at its step
//! and exits 3), abort one while it runs (it rolls back and exits 1), and read the history.
#![cfg(feature = "aws")]

use cutover_e2e::moto::Moto;
use cutover_e2e::{cutover, wait_for};

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
progress_deadline = "30s"
steps = [{ instances = 1, pause = "10m" }, { weight = 50 }]
[aws]
region = "us-west-2"
[aws.images]
v1 = "ami-00000000000000b1"
v2 = "ami-00000000000000b2"
v3 = "ami-00000000000000b3"
"#;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn a_running_canary_is_paused_and_aborted_from_other_processes() {
    let moto = Moto::start();
    moto.export_env("us-west-2");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cutover.toml");
    std::fs::write(&file, STACK).expect("write stack file");
    let f = file.to_str().expect("utf-8 path").to_owned();
    let run = |args: &[&str]| {
        let mut all = vec!["aws"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-f", &f]);
        cutover(&all)
    };
    // A process of its own, as an operator's terminal or a CI job would run it.
    let background = |args: &[&str]| {
        let mut all: Vec<String> = ["aws"].iter().chain(args).map(|s| s.to_string()).collect();
        all.extend(["-f".to_owned(), f.clone()]);
        std::thread::spawn(move || {
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            cutover(&all)
        })
    };
    // Until the deployment in progress says who runs it.
    let running = || {
        wait_for("a runner on the deployment in progress", || {
            let (_, out, _) = run(&["history", "--json"]);
            let h = json(&out);
            let last = h["deployments"].as_array()?.last()?.clone();
            (last["finished_at"].is_null() && last["runner"]["pid"].is_u64()).then_some(last)
        })
    };

    let (code, out, err) = cutover(&["aws", "init", "-f", &f]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(&["deploy", "v1", "--poll", "100ms"]);
    assert_eq!(code, 0, "{out}{err}");

    // A canary holding its first step for ten minutes, paused from here meanwhile.
    let deploy = background(&["deploy", "v2", "--strategy", "canary", "--poll", "100ms"]);
    let row = running();
    let (code, out, err) = run(&["pause"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("paused at step 1"), "{out}");
    let (code, out, err) = deploy.join().expect("deploy thread");
    assert_eq!(code, 3, "the running deploy stops at its step: {out}{err}");
    assert!(err.contains("pause, asked by another process"), "{err}");
    assert!(err.contains("paused by"), "{err}");
    let (code, out, _) = run(&["history"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("{:>4}  v1 → v2  canary", row["id"])),
        "{out}"
    );
    assert!(out.contains("paused at step 1"), "{out}");

    // Taken up again by another process; while it runs, `resume` is refused and `abort` is
    // a request to it.
    let resumed = background(&["resume", "--poll", "100ms"]);
    running();
    let (code, _, err) = run(&["resume"]);
    assert_eq!(code, 2, "one runner at a time: {err}");
    assert!(err.contains("is running (by pid"), "{err}");
    let (code, out, err) = run(&["abort"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("asked deployment"), "{out}");
    let (code, out, err) = resumed.join().expect("resume thread");
    assert_eq!(code, 1, "rolled back: {out}{err}");
    assert!(err.contains("aborted by the operator"), "{err}");
    let (_, out, _) = run(&["status", "--json"]);
    let status = json(&out);
    assert_eq!(status["current"], "v1");
    let (code, out, _) = run(&["history"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("rolled back: aborted by the operator"),
        "{out}"
    );

    let (code, out, err) = run(&["destroy"]);
    assert_eq!(code, 0, "{out}{err}");
}
