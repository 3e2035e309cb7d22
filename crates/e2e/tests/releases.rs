//! Releases from artifacts: fetched, verified and unpacked before a deploy touches any instance;
//! a missing or corrupt artifact fails the deploy while the old fleet serves on, untouched.

use std::path::Path;
use std::time::Duration;

use cutover_e2e::stack::{assert_no_infra_failures, stack_file, Stack};

/// A tarball `app-VERSION.tar.gz` in `dir` whose VERSION file says `says`.
fn tarball(dir: &Path, version: &str, says: &str) {
    let work = dir.join(format!("{version}.d"));
    std::fs::create_dir_all(&work).expect("dir");
    std::fs::write(work.join("VERSION"), says).expect("write");
    let status = std::process::Command::new("tar")
        .arg("czf")
        .arg(dir.join(format!("app-{version}.tar.gz")))
        .arg("-C")
        .arg(&work)
        .arg("VERSION")
        .status()
        .expect("tar");
    assert!(status.success());
}

fn pids(stack: &Stack) -> Vec<i64> {
    let mut p: Vec<i64> = stack
        .instances()
        .iter()
        .filter_map(|i| i["pid"].as_i64())
        .collect();
    p.sort();
    p
}

#[test]
fn a_missing_or_corrupt_artifact_fails_before_any_instance_changes() {
    let src = tempfile::tempdir().expect("src");
    tarball(src.path(), "v1", "v1");
    // The instance reports what its unpacked release says: proof it runs from there.
    tarball(src.path(), "v2", "v2-from-artifact");
    tarball(src.path(), "v4", "v4");
    std::fs::write(
        src.path().join("app-v4.tar.gz.sha256"),
        format!("{}  app-v4.tar.gz\n", "0".repeat(64)),
    )
    .expect("checksum file");
    let release = format!(
        "command = \"sh -c 'exec demo-app --port {{port}} --version $(cat VERSION)'\"\n\
         artifact = \"file://{}/app-{{version}}.tar.gz\"",
        src.path().display()
    );
    let file = stack_file(
        &release,
        "desired = 3",
        "",
        "[deploy]\ndrain_timeout = \"5s\"",
    );
    let stack = Stack::start_from(&file, 3);
    let before = pids(&stack);
    let probe = stack.probe(8);
    std::thread::sleep(Duration::from_millis(300));

    let (code, out) = stack.deploy("v3", None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("cannot fetch") && out.contains("not found"),
        "{out}"
    );
    assert_eq!(pids(&stack), before, "no instance changed");

    let (code, out) = stack.deploy("v4", None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("checksum mismatch"), "{out}");
    assert_eq!(pids(&stack), before, "no instance changed");

    let (code, out) = stack.deploy("v2", None);
    assert_eq!(code, 0, "{out}");
    let report = probe.join().expect("probe");
    assert_no_infra_failures(&report);
    assert_eq!(report["failed"], 0, "{report}");
    assert!(
        report["versions"]["v2-from-artifact"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    let data = Path::new(&stack.file())
        .parent()
        .expect("dir")
        .join(".cutover/releases");
    assert!(data.join("v2/VERSION").is_file());
    assert!(!data.join("v3").exists() && !data.join("v4").exists());
    stack.stop_and_check_no_orphans();
}
