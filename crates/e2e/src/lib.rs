//! Helpers for end-to-end tests: find the built binaries, run them on port 0, wait on conditions with deadlines.

pub mod moto;
pub mod stack;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Generous upper bound for anything a test waits on; conditions normally hold in milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Path of a workspace binary. The binaries are rebuilt once per test process so a test never
/// runs a stale one, unless `CUTOVER_E2E_PREBUILT` says the caller (scripts/test) just built them.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = target_dir();
    let path = dir.join(name);
    if !path.exists() || std::env::var_os("CUTOVER_E2E_PREBUILT").is_none() {
        BUILT.get_or_init(|| {
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "--bins", "-p", "cutover", "-p", "demo-app"]);
            if cfg!(feature = "aws") {
                cmd.args(["--features", "cutover/aws"]);
            }
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            let status = cmd.status().expect("run cargo build");
            assert!(status.success(), "cargo build --bins failed");
        });
    }
    assert!(
        path.exists(),
        "{} is missing; run `cargo build --workspace --bins`",
        path.display()
    );
    path
}

/// `target/<profile>`, from this test executable's own path (`target/<profile>/deps/<test>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a directory");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// Polls `check` until it returns `Some`, or panics after `DEADLINE` naming `what`.
pub fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    wait_for_or(what, String::new, check)
}

/// `wait_for`, and on a timeout the panic also carries `describe()`: what the system under test
/// looked like, so a failure on a machine nobody watches can still be explained.
pub fn wait_for_or<T>(
    what: &str,
    describe: impl FnOnce() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() >= DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}\n{}",
                describe()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running demo-app process, stopped when dropped.
pub struct DemoApp {
    pub child: Child,
    pub addr: SocketAddr,
    stdout_lines: std::sync::mpsc::Receiver<String>,
}

impl DemoApp {
    /// Starts demo-app on a free port with extra arguments and waits until it listens.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Self::command(args, env).spawn().expect("spawn demo-app");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(DEADLINE)
            .expect("demo-app printed its address");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from demo-app: {line}"));
        Self {
            child,
            addr,
            stdout_lines: rx,
        }
    }

    /// The command line, for tests that need to watch start-up themselves.
    pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(bin("demo-app"));
        cmd.args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        cmd.env_remove("ADMIN_PASSWORD")
            .env_remove("APP_VERSION")
            .env_remove("PORT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Waits for the process to exit, failing the test after `DEADLINE`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = &mut self.child;
        wait_for("demo-app to exit", || child.try_wait().expect("try_wait"))
    }

    /// Lines printed after the address line.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.try_iter().collect()
    }
}

impl Drop for DemoApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client that never reuses connections across tests.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("client")
}

/// Upper bound on one `cutover` command in a test: a hung command fails the test, never the run.
const COMMAND_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `cutover` with arguments and returns (exit code, stdout, stderr).
pub fn cutover(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(bin("cutover"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cutover");
    // Read both pipes while waiting, so a chatty command never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            panic!(
                "`cutover {}` did not finish within {COMMAND_DEADLINE:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status.code().unwrap_or(-1),
        stdout.join().expect("stdout reader"),
        stderr.join().expect("stderr reader"),
    )
}

/// A port on 127.0.0.1 with nothing listening: bound, then released.
pub fn dead_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A `cutover up` process on a stack file of the test's own, in a temporary directory.
pub struct Up {
    pub child: Child,
    /// The load balancer's address.
    pub addr: String,
    /// The admin API's address.
    pub admin: String,
    pub dir: tempfile::TempDir,
}

impl Up {
    /// Writes `stack` as `cutover.toml`, starts `cutover up` on it and waits for its addresses.
    pub fn start(stack: &str) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), stack)
    }

    /// Like [`Up::start`], in a directory the test has already put files in.
    pub fn start_in(dir: tempfile::TempDir, stack: &str) -> Self {
        std::fs::write(dir.path().join("cutover.toml"), stack).expect("write the stack file");
        let (child, addr, admin) = Self::spawn(&dir);
        Self {
            child,
            addr,
            admin,
            dir,
        }
    }

    /// Kills the daemon with SIGKILL, as a crash would, and starts a new one on the same data dir.
    pub fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addr, admin) = Self::spawn(&self.dir);
        (self.child, self.addr, self.admin) = (child, addr, admin);
    }

    fn spawn(dir: &tempfile::TempDir) -> (Child, String, String) {
        // The daemon's log goes to a file of the test's own (appended across restarts), for
        // `diagnostics` to show when a test fails.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join(UP_LOG))
            .expect("open the daemon's log");
        let mut child = Command::new(bin("cutover"))
            .args(["up", "-f"])
            .arg(dir.path().join("cutover.toml"))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn cutover up");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut next = || {
            lines
                .next()
                .expect("a line from cutover up")
                .expect("utf-8")
        };
        let addr = next()
            .strip_prefix("listening on ")
            .expect("the listening line")
            .to_owned();
        let admin = next()
            .strip_prefix("admin on ")
            .expect("the admin line")
            .to_owned();
        (child, addr, admin)
    }

    pub fn file(&self) -> String {
        self.dir
            .path()
            .join("cutover.toml")
            .to_str()
            .expect("utf-8 path")
            .to_owned()
    }

    /// `cutover status --json` of this stack.
    pub fn status(&self) -> serde_json::Value {
        let (code, out, err) = cutover(&["status", "--json", "-f", &self.file()]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).expect("status JSON")
    }

    /// The stack as a failing test should report it: its status and the ends of the daemon's
    /// and the data plane's logs. Never panics: it runs while a test is already failing.
    pub fn diagnostics(&self) -> String {
        let (code, out, err) = cutover(&["status", "--json", "-f", &self.file()]);
        let mut text = format!("status (exit {code}):\n{out}{err}\n");
        for log in [
            self.dir.path().join(UP_LOG),
            self.dir.path().join(".cutover/logs/dataplane.log"),
        ] {
            let content = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL)..];
            text += &format!(
                "--- last lines of {}:\n{}\n",
                log.display(),
                tail.join("\n")
            );
        }
        text
    }
}

/// The daemon's log, in the test's directory.
const UP_LOG: &str = "up.log";

/// How many lines of each log `Up::diagnostics` shows.
const LOG_TAIL: usize = 60;

impl Drop for Up {
    /// SIGTERM first, so a test that fails midway still has the daemon stop its instances.
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let start = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && start.elapsed() < DEADLINE {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
