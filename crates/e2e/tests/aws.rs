//! `cutover aws` end to end: the binary against the emulator, as a user would run it.
#![cfg(feature = "aws")]

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
progress_deadline = "1m"
[aws]
region = "us-west-2"
[aws.images]
v1 = "ami-00000000000000a1"
v2 = "ami-00000000000000a2"
"#;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn init_deploy_blue_green_rollback_and_destroy_through_the_cli() {
    let moto = Moto::start();
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

    let (code, out, err) = run(&["status"]);
    assert_eq!(code, 2, "status before init: {out}{err}");
    assert!(err.contains("cutover aws init"), "{err}");

    let (code, out, err) = run(&["init", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(json(&out)["url"]
        .as_str()
        .is_some_and(|u| u.contains("web-lb")));

    let (code, out, err) = run(&["deploy", "v1", "--poll", "100ms", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(json(&out)["outcome"]["progress"]["progress"], "done");

    // A release with no image is refused before anything changes.
    let (code, _, err) = run(&["deploy", "v9", "--poll", "100ms"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no image for release v9"), "{err}");

    let (code, out, err) = run(&[
        "deploy",
        "v2",
        "--strategy",
        "blue-green",
        "--poll",
        "100ms",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = run(&["status", "--json"]);
    assert_eq!(code, 0);
    let status = json(&out);
    assert_eq!(status["current"], "v2");
    assert_eq!(status["live"], "green");
    assert_eq!(status["weights"], serde_json::json!([0, 1]));
    assert_eq!(
        status["groups"][1]["targets"].as_array().map(Vec::len),
        Some(2)
    );

    // `cutover status` and `cutover rollback` are the same commands on AWS.
    let (code, same, _) = cutover(&["status", "-f", f, "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&same)["live"], "green");

    // The v1 set is warm in blue: rollback is one listener change.
    let (code, out, err) = cutover(&["rollback", "-f", f, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = run(&["status", "--json"]);
    let status = json(&out);
    assert_eq!(status["current"], "v1");
    assert_eq!(status["live"], "blue");
    assert_eq!(status["weights"], serde_json::json!([1, 0]));

    let (code, out, err) = run(&["destroy"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("deleted load-balancer web-lb"), "{err}");
    let (code, _, _) = run(&["status"]);
    assert_eq!(code, 2, "nothing recorded after destroy");
}
