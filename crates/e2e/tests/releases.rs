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

/// An artifact server on 127.0.0.1: `app-v1.tar.gz` whole, any other artifact a byte every
/// 200 ms (it would take hours), checksum files not found.
fn trickling_server(v1: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let v1 = v1.clone();
            std::thread::spawn(move || {
                let mut s = stream;
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                if path.ends_with(".sha256") {
                    let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
                } else if path.ends_with("/app-v1.tar.gz") {
                    let _ = s.write_all(
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", v1.len())
                            .as_bytes(),
                    );
                    let _ = s.write_all(&v1);
                } else {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n");
                    for _ in 0..100_000 {
                        if s.write_all(b"x").is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

#[test]
fn abort_cancels_a_release_being_fetched_and_the_data_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let src = tempfile::tempdir().expect("src");
    tarball(src.path(), "v1", "v1");
    let v1 = std::fs::read(src.path().join("app-v1.tar.gz")).expect("v1");
    let base = trickling_server(v1);
    let release = format!(
        "command = \"sh -c 'exec demo-app --port {{port}} --version $(cat VERSION)'\"\n\
         artifact = \"{base}/app-{{version}}.tar.gz\""
    );
    let file = stack_file(
        &release,
        "desired = 2",
        "",
        "[deploy]\ndrain_timeout = \"5s\"",
    );
    let stack = Stack::start_from(&file, 2);
    let before = pids(&stack);

    // Whatever the test's umask, what cutover keeps is its own.
    let data = Path::new(&stack.file())
        .parent()
        .expect("dir")
        .join(".cutover");
    let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for private in ["state.db", "admin.token", "logs", "dataplane.sock"] {
        let m = mode(&data.join(private));
        assert_eq!(m & 0o077, 0, "{private} is {m:o}");
    }

    // A version that is not a plain name is refused by the admin API too.
    let token = std::fs::read_to_string(data.join("admin.token")).expect("token");
    let refused = cutover_e2e::client()
        .post(format!("http://{}/deploy", stack.0.admin))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({ "version": ".." }))
        .send()
        .expect("post");
    assert_eq!(refused.status().as_u16(), 400);
    assert!(refused.text().expect("body").contains("letter or a digit"));

    let (code, out) = stack.run(&["deploy", "v2", "--no-wait", "--json"]);
    assert_eq!(code, 0, "{out}");
    stack.wait_progress("preparing");
    let started = std::time::Instant::now();
    let (code, out) = stack.run(&["abort", "--json"]);
    assert_eq!(code, 0, "{out}");
    let ended = stack.wait("the aborted deploy to end", || {
        let d = stack.deployment();
        (d["progress"]["progress"] == "rolled_back").then_some(d)
    });
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "abort took {:?}",
        started.elapsed()
    );
    assert!(
        ended["progress"]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("aborted"),
        "{ended}"
    );
    assert_eq!(pids(&stack), before, "no instance changed");
    let left: Vec<_> = std::fs::read_dir(data.join("releases"))
        .expect("releases")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 1, "only v1, no staging left: {left:?}");
    stack.stop_and_check_no_orphans();
}
