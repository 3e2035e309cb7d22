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

#[test]
fn what_up_could_never_run_fails_in_check_with_its_place() {
    // A user missing on this host, and a command that cannot be split into words.
    let (_dir, path) = write(
        "[service]\nname = \"web\"\n[release]\ncommand = \"app --name 'unclosed\"\nuser = \"no-such-user-cutover\"\n",
    );
    let (code, _, stderr) = cutover(&["check", &path]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:4:1: release.command: cannot be split into words"
        )),
        "{stderr}"
    );
    let (_dir, path) = write(
        "[service]\nname = \"web\"\n[release]\ncommand = \"app\"\nuser = \"no-such-user-cutover\"\n",
    );
    let (code, _, stderr) = cutover(&["check", &path]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{path}:5:1: release.user: user `no-such-user-cutover` does not exist on this host"
        )),
        "{stderr}"
    );
    // `up` refuses the same file at once, before anything starts.
    let data = tempfile::tempdir().expect("data dir");
    let data = data.path().to_str().expect("utf-8").to_owned();
    let (code, _, stderr) = cutover(&["up", "-f", &path, "--data-dir", &data]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("does not exist on this host"), "{stderr}");
}

#[test]
fn limits_are_bounded_at_parse_time() {
    for (text, key, needle) in [
        (
            "[deploy]\ndrain_timeout = \"18446744073709551615s\"\n",
            "deploy.drain_timeout",
            "",
        ),
        (
            "[deploy]\nprogress_deadline = \"400days\"\n",
            "deploy.progress_deadline",
            "longest duration allowed",
        ),
        (
            "[release]\nversion = \"..\"\ncommand = \"app\"\n",
            "release.version",
            "must start with a letter or a digit",
        ),
        (
            "[release]\ncommand = \"app\"\nmax_unpacked_size = \"10TiB\"\n",
            "release.max_unpacked_size",
            "between 1MiB and 1TiB",
        ),
        (
            "[admin]\nbind = \"0.0.0.0:8099\"\n",
            "admin.bind",
            "admin.allow_remote",
        ),
    ] {
        let mut file = format!("[service]\nname = \"web\"\n{text}");
        if !text.contains("[release]") {
            file.push_str("[release]\ncommand = \"app\"\n");
        }
        let (_dir, path) = write(&file);
        let (code, _, stderr) = cutover(&["check", &path]);
        assert_eq!(code, 2, "{text}: {stderr}");
        assert!(stderr.contains(&format!(": {key}: ")), "{text}: {stderr}");
        assert!(stderr.contains(needle), "{text}: {stderr}");
    }
    // Allowed explicitly, a remote admin address passes.
    let (_dir, path) = write(
        "[service]\nname = \"web\"\n[release]\ncommand = \"app\"\n[admin]\nbind = \"0.0.0.0:8099\"\nallow_remote = true\n",
    );
    let (code, _, stderr) = cutover(&["check", &path]);
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn a_version_that_is_not_a_plain_name_is_refused_on_the_command_line() {
    for bad in ["..", ".", &"v".repeat(300), "a/b"] {
        let (code, _, stderr) = cutover(&["deploy", bad, "-f", "/nonexistent/cutover.toml"]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stderr.contains("version"), "{bad}: {stderr}");
        let (code, _, stderr) =
            cutover(&["rollback", "--to", bad, "-f", "/nonexistent/cutover.toml"]);
        assert_eq!(code, 2, "{bad}: {stderr}");
    }
}
