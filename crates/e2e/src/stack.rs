//! A managed stack for end-to-end deploy tests: `cutover up` running demo-app instances, the
//! probe against it, and the checks every deploy path shares.

use std::thread::JoinHandle;

use serde_json::Value;

use crate::{cutover, wait_for, wait_for_or, Up};

/// A managed stack: `cutover up` running demo-app instances.
pub struct Stack(pub Up);

/// The demo-app release every deploy test starts from.
pub const RELEASE: &str = "command = \"demo-app --port {port} --version {version}\"";

/// A stack file for tests: v1 of `release` (its `command`, and any more `[release]` keys),
/// `group`, health checks fast enough for tests, listeners on port 0 (plus `listener` keys),
/// then `rest` (`[deploy]`, `[autoscale]`, ...).
pub fn stack_file(release: &str, group: &str, listener: &str, rest: &str) -> String {
    format!(
        "[service]\nname = \"web\"\n\
         [release]\nversion = \"v1\"\nstop_timeout = \"5s\"\n{release}\n\
         [group]\n{group}\n\
         [health]\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\
         [listener]\nbind = \"127.0.0.1:0\"\n{listener}\n\
         [admin]\nbind = \"127.0.0.1:0\"\n\
         {rest}\n"
    )
}

impl Stack {
    /// Three demo-app v1 instances with these `[deploy]` settings.
    pub fn start(deploy: &str) -> Self {
        let file = stack_file(RELEASE, "desired = 3", "", &format!("[deploy]\n{deploy}"));
        Self::start_from(&file, 3)
    }

    /// A stack from a whole stack file, once `healthy` v1 instances are up.
    pub fn start_from(file: &str, healthy: usize) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), file, healthy)
    }

    /// [`Stack::start_from`] in a directory the test has already put files in.
    pub fn start_in(dir: tempfile::TempDir, file: &str, healthy: usize) -> Self {
        let stack = Self(Up::start_in(dir, file));
        stack.wait(&format!("{healthy} healthy v1 instances"), || {
            (stack.healthy("v1") == healthy).then_some(())
        });
        stack
    }

    /// `wait_for`, reporting this stack's status and logs if the wait times out.
    pub fn wait<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        wait_for_or(what, || self.0.diagnostics(), check)
    }

    pub fn file(&self) -> String {
        self.0.file()
    }

    pub fn status(&self) -> Value {
        self.0.status()
    }

    pub fn instances(&self) -> Vec<Value> {
        self.status()["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn healthy(&self, version: &str) -> usize {
        self.instances()
            .iter()
            .filter(|i| i["version"] == version && i["state"] == "healthy")
            .count()
    }

    /// The probe at 250 requests/s for `secs` seconds, in the background.
    pub fn probe(&self, secs: u32) -> JoinHandle<Value> {
        self.probe_at(250, secs)
    }

    /// The probe at `rate` requests/s for `secs` seconds, in the background.
    pub fn probe_at(&self, rate: u32, secs: u32) -> JoinHandle<Value> {
        let url = format!("http://{}/", self.0.addr);
        std::thread::spawn(move || {
            let (_, out, err) = cutover(&[
                "probe",
                &url,
                "--rate",
                &rate.to_string(),
                "--duration",
                &format!("{secs}s"),
                "--json",
                "-q",
            ]);
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("probe output ({e}): {out}{err}"))
        })
    }

    pub fn deploy(&self, version: &str, command: Option<&str>) -> (i32, String) {
        match command {
            Some(c) => self.run(&["deploy", version, "--json", "--command", c]),
            None => self.run(&["deploy", version, "--json"]),
        }
    }

    /// `cutover ARGS -f <this stack>`: exit code and everything it printed.
    pub fn run(&self, args: &[&str]) -> (i32, String) {
        let file = self.file();
        let mut all = args.to_vec();
        all.extend(["-f", &file]);
        let (code, out, err) = cutover(&all);
        (code, format!("{out}{err}"))
    }

    /// The deployment in progress or last finished, as `cutover status` shows it.
    pub fn deployment(&self) -> Value {
        self.status()["deployment"].clone()
    }

    /// Waits until the deployment's progress is `progress` (e.g. `paused`), and returns it.
    pub fn wait_progress(&self, progress: &str) -> Value {
        self.wait(&format!("the deployment to be {progress}"), || {
            let d = self.deployment();
            let now = &d["progress"]["progress"];
            let finished = d["finished_at"].is_string();
            assert!(
                now == progress || !finished,
                "waiting for {progress}, the deployment ended: {d}"
            );
            (now == progress).then_some(d)
        })
    }

    /// Versions and states of the instances, as (version, state) pairs, sorted.
    pub fn fleet(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .instances()
            .iter()
            .map(|i| {
                (
                    i["version"].as_str().unwrap_or("?").to_owned(),
                    i["state"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// The pid of the data-plane process that holds the listeners.
    pub fn dataplane_pid(&self) -> i64 {
        let status = self.status();
        status["dataplane"]["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("no data-plane pid in {status}"))
    }

    /// Sends `signal` to the data-plane process and returns its pid.
    pub fn signal_dataplane(&self, signal: i32) -> i64 {
        let pid = self.dataplane_pid();
        // SAFETY: signalling a process this test's stack started.
        let rc = unsafe { libc::kill(i32::try_from(pid).expect("pid fits"), signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
        pid
    }

    /// Every process the stack runs besides the daemon: its instances and its data plane.
    pub fn processes(&self) -> Vec<i64> {
        let mut pids: Vec<i64> = self
            .instances()
            .iter()
            .filter_map(|i| i["pid"].as_i64())
            .collect();
        pids.push(self.dataplane_pid());
        pids
    }

    /// Kills the daemon with SIGKILL, as an OOM kill would, and does not start another.
    pub fn kill_daemon(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }

    /// Stops the stack; every instance and the data plane must be gone with it.
    pub fn stop_and_check_no_orphans(mut self) {
        let pids = self.processes();
        let (code, _, err) = cutover(&["stop", "-f", &self.file()]);
        assert_eq!(code, 0, "{err}");
        let child = &mut self.0.child;
        let status = wait_for("cutover up to exit", || child.try_wait().expect("try_wait"));
        assert_eq!(status.code(), Some(0));
        for pid in pids {
            assert!(!running(pid), "pid {pid} outlived the stack");
        }
    }
}

/// Whether a process runs. A zombie does not: where PID 1 does not reap (as in some containers),
/// an exited orphan stays in the process table as one.
pub fn running(pid: i64) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
}

pub fn assert_no_infra_failures(report: &Value) {
    assert_eq!(
        report["failed_infra"], 0,
        "infrastructure failures: {report}"
    );
    assert!(
        report["requests"].as_u64().unwrap_or(0) > 500,
        "too little load: {report}"
    );
}
