//! `cutover up` with static targets: the load balancer as a process, driven through the admin API and CLI.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

use cutover_e2e::{bin, client, cutover, wait_for, DemoApp};

struct Up {
    child: Child,
    addr: String,
    admin: String,
    dir: tempfile::TempDir,
}

impl Up {
    fn start(targets: &[String]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let stack = format!(
            "targets = [{}]\n[service]\nname = \"lb\"\n[listener]\nbind = \"127.0.0.1:0\"\n[admin]\nbind = \"127.0.0.1:0\"\n[health]\ninterval = \"200ms\"\ntimeout = \"100ms\"\n",
            list.join(", ")
        );
        std::fs::write(dir.path().join("cutover.toml"), stack).expect("write stack");
        let mut child = Command::new(bin("cutover"))
            .args(["up", "-f"])
            .arg(dir.path().join("cutover.toml"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn cutover up");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut next = || lines.next().expect("a line").expect("utf-8");
        let addr = next()
            .strip_prefix("listening on ")
            .expect("listening line")
            .to_owned();
        let admin = next()
            .strip_prefix("admin on ")
            .expect("admin line")
            .to_owned();
        Self {
            child,
            addr,
            admin,
            dir,
        }
    }

    fn file(&self) -> String {
        self.dir
            .path()
            .join("cutover.toml")
            .to_str()
            .expect("utf-8")
            .to_owned()
    }

    fn status(&self) -> serde_json::Value {
        let (code, out, err) = cutover(&["status", "--json", "-f", &self.file()]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).expect("json")
    }

    fn healthy(&self) -> usize {
        self.status()["groups"][0]["targets"]
            .as_array()
            .map(|t| t.iter().filter(|t| t["state"] == "healthy").count())
            .unwrap_or(0)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn static_targets_behind_cutover_up_with_zero_failed_requests_while_one_is_drained() {
    let a = DemoApp::start(&["--version", "a"]);
    let b = DemoApp::start(&["--version", "b"]);
    let up = Up::start(&[a.addr.to_string(), b.addr.to_string()]);
    wait_for("both targets healthy", || (up.healthy() == 2).then_some(()));

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
        (up.healthy() == 2).then_some(())
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
    let mut up = Up::start(&[a.addr.to_string()]);
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
