//! `cutover check`: a valid stack file prints normalized; an invalid one lists every problem and exits 2.

use cutover_e2e::cutover;

fn write(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, text).expect("write");
    let path = path.to_str().expect("utf-8").to_owned();
    (dir, path)
}

#[test]
fn valid_file_prints_a_normalized_file_that_checks_again() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/cutover.toml");
    let (code, stdout, stderr) = cutover(&["check", example]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("healthy_threshold = 2"), "{stdout}");
    let (_dir, path) = write(&stdout);
    let (code, again, stderr) = cutover(&["check", &path]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(again, stdout);
}

#[test]
fn invalid_file_lists_every_problem_and_exits_2() {
    let (_dir, path) = write("[service]\nname = \"web\"\nport = 80\n[release]\ncommand = \"app\"\n[group]\nmax = \"four\"\n[deploy]\ndrain_timeout = \"forever\"\n");
    let (code, stdout, stderr) = cutover(&["check", &path]);
    assert_eq!(code, 2);
    assert!(stdout.is_empty());
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{path}:3:1: service.port: unknown field `port`")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!("{path}:7:7: group.max: invalid type")),
        "{stderr}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "{path}:9:1: deploy.drain_timeout: `forever` is not a duration"
        )),
        "{stderr}"
    );
    assert_eq!(lines[3], format!("3 problems in {path}"));

    let (code, stdout, _) = cutover(&["check", &path, "--json"]);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v["ok"], false);
    let problems = v["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 3);
    assert_eq!(problems[1]["key"], "group.max");
    assert_eq!(problems[1]["line"], 7);
}

#[test]
fn a_missing_file_is_named() {
    let (code, _, stderr) = cutover(&["check", "/nonexistent/cutover.toml"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/cutover.toml: cannot read the stack file"),
        "{stderr}"
    );
}
