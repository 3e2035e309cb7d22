//! `cutover fetch` as users run it: exit codes, the status table and the JSON report.

use cutover_e2e::{cutover, DemoApp};
use serde_json::Value;

#[test]
fn one_bad_url_fails_the_command_and_the_rest_are_saved() {
    let app = DemoApp::start(&[]);
    let src = tempfile::tempdir().expect("src");
    let out = tempfile::tempdir().expect("out");
    std::fs::write(src.path().join("a.txt"), b"alpha").expect("write");
    std::fs::write(src.path().join("b.txt"), b"beta").expect("write");
    let file = |n: &str| format!("file://{}", src.path().join(n).display());
    let dir = out.path().display().to_string();
    let (a, b, missing) = (file("a.txt"), file("b.txt"), app.url("/nope.bin"));
    let (code, stdout, stderr) = cutover(&[
        "fetch",
        "-u",
        &a,
        "-u",
        "ftp://example/x.bin",
        "-u",
        &missing,
        "-u",
        &b,
        "-o",
        &dir,
        "--json",
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("one JSON object");
    assert_eq!(report["ok"], false);
    let results: Vec<&str> = report["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["result"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(results, vec!["ok", "failed", "not_found", "ok"], "{report}");
    assert!(report["files"][1]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("unsupported scheme `ftp`")));
    assert!(report["files"][2]["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("not found: ") && r.ends_with("(HTTP 404)")));
    assert_eq!(
        std::fs::read(out.path().join("a.txt")).expect("a"),
        b"alpha"
    );
    assert_eq!(std::fs::read(out.path().join("b.txt")).expect("b"), b"beta");
    assert!(!out.path().join("nope.bin").exists());
}

#[test]
fn all_good_exits_zero_with_a_status_table() {
    let src = tempfile::tempdir().expect("src");
    std::fs::write(src.path().join("c.txt"), b"gamma").expect("write");
    let url = format!("file://{}", src.path().join("c.txt").display());
    let out = tempfile::tempdir().expect("out");
    let (code, stdout, stderr) = cutover(&[
        "fetch",
        "-u",
        &url,
        "-o",
        &out.path().display().to_string(),
        "-j",
        "2",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("URL"), "{stdout}");
    assert!(
        stdout.contains("c.txt") && stdout.contains(" ok"),
        "{stdout}"
    );
    let (code, _, stderr) = cutover(&["fetch", "-u", &url, "-j", "0"]);
    assert_eq!(code, 2, "bad arguments: {stderr}");
}
