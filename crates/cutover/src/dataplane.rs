//! The data-plane process (`cutover dataplane`, started by `cutover up`): the listeners and the
//! registry, with a control API on a Unix socket; and how a controller starts one or adopts the
//! one a previous controller left running.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cutover_api::dataplane::{
    self as wire, Deregister, DrainStarted, GetState, Register, SetPreview, SetWeights, Shutdown,
    WaitDrain,
};
use cutover_api::{Ack, Endpoint, ErrorBody};
use cutover_control::Side;
use cutover_proxy::{DrainHandle, HealthConfig, Registry};
use cutover_spec::Spec;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::listeners;
use crate::plane::{self, PlaneState, PreviewGroup, Remote, SOCKET};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The stack file.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// The data dir; the control socket is created there.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Listen here instead of the stack file's `listener.bind`: a data plane that replaces one
    /// that died keeps its address even where the stack file says port 0.
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Likewise for `listener.preview`.
    #[arg(long)]
    pub preview: Option<std::net::SocketAddr>,
}

/// The store's key for the data-plane process a controller started.
const META_KEY: &str = "dataplane";
/// Upper bound on a data-plane process coming up, and on one going away after it was asked to.
const START_DEADLINE: Duration = Duration::from_secs(15);
const EXIT_DEADLINE: Duration = Duration::from_secs(40);
/// A data plane that runs but has not answered for this long is stuck, and is replaced.
const SILENCE_LIMIT: Duration = Duration::from_secs(5);
/// The data plane's log, in the data dir's `logs/`, beside the instances' logs.
const LOG_FILE: &str = "dataplane.log";
/// How often the data plane checks its log's size.
const LOG_ROTATION_CHECK: Duration = Duration::from_secs(5);

/// Names the settings a data-plane process serves with: a controller adopts a process only if
/// its stack file (and binary) would have started the same one.
pub fn fingerprint(spec: &Spec) -> String {
    let settings = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": wire::VERSION,
        "listener": spec.listener,
        "health": spec.health,
    });
    settings.to_string()
}

pub fn run(args: Args) -> ExitCode {
    let mut spec = match cutover_spec::load(&args.file) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(crate::exit::INVALID);
        }
    };
    // The fingerprint names the stack file's settings, so it is taken before the overrides.
    let fingerprint = fingerprint(&spec);
    if let Some(addr) = args.listen {
        spec.listener.bind = addr;
    }
    if let (Some(addr), Some(_)) = (args.preview, spec.listener.preview) {
        spec.listener.preview = Some(addr);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cutover dataplane: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(spec, fingerprint, args.data_dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cutover dataplane: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Server {
    registry: Arc<Registry>,
    preview: PreviewGroup,
    fingerprint: String,
    listener: std::net::SocketAddr,
    preview_addr: Option<std::net::SocketAddr>,
    drains: Mutex<HashMap<u64, DrainHandle>>,
    next_drain: AtomicU64,
    shutdown: CancellationToken,
}

impl Server {
    fn state(&self) -> PlaneState {
        let groups = self.registry.status();
        let metrics = groups
            .iter()
            .filter_map(|g| Some((g.name.clone(), self.registry.group_metrics(&g.name)?)))
            .collect();
        PlaneState {
            pid: std::process::id(),
            fingerprint: self.fingerprint.clone(),
            listener: Some(self.listener),
            preview: self.preview_addr,
            groups,
            metrics,
        }
    }
}

async fn serve(spec: Spec, fingerprint: String, data_dir: PathBuf) -> anyhow::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let registry = Registry::new();
    let health = HealthConfig::from(&spec.health);
    let [live, next] = Side::BOTH;
    registry.ensure_group(live.name(), 100, spec.listener.balance, health.clone())?;
    registry.ensure_group(next.name(), 0, spec.listener.balance, health)?;
    let preview = PreviewGroup::default();
    preview.set(next);
    let mut opened = listeners::open(&spec, &registry, Some(preview.clone())).await?;

    let socket_path = data_dir.join(SOCKET);
    // A socket file left by a process that is gone; the controller only starts a data plane after
    // making sure the recorded one is not running.
    let _ = std::fs::remove_file(&socket_path);
    let control = tokio::net::UnixListener::bind(&socket_path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", socket_path.display()))?;
    // Whoever can write to the socket steers the traffic: the owner only, like the admin token.
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))?;
    let server = Arc::new(Server {
        registry,
        preview,
        fingerprint,
        listener: opened.listener,
        preview_addr: opened.preview,
        drains: Mutex::new(HashMap::new()),
        next_drain: AtomicU64::new(1),
        shutdown: CancellationToken::new(),
    });
    let control_stop = CancellationToken::new();
    let control_task = tokio::spawn(
        axum::serve(control, router(server.clone()))
            .with_graceful_shutdown(control_stop.clone().cancelled_owned())
            .into_future(),
    );
    tracing::info!(listener = %opened.listener, socket = %socket_path.display(), "data plane up");
    // The data plane outlives controllers, so it keeps its own log in bounds.
    let rotation = tokio::spawn(rotate_log(data_dir.join("logs").join(LOG_FILE)));

    let failure = tokio::select! {
        _ = sigterm.recv() => None,
        _ = sigint.recv() => None,
        _ = server.shutdown.cancelled() => None,
        failed = opened.failed() => Some(failed),
    };
    tracing::info!("data plane shutting down: closing listeners, finishing requests in flight");
    opened.close().await;
    rotation.abort();
    control_stop.cancel();
    let _ = control_task.await;
    let _ = std::fs::remove_file(&socket_path);
    match failure {
        Some(f) => Err(anyhow::anyhow!(f)),
        None => Ok(()),
    }
}

/// Rotates the log this process writes to (its stdout and stderr, opened for append by whoever
/// started it) when it grows past the size instance logs are rotated at.
async fn rotate_log(path: PathBuf) {
    let mut tick = tokio::time::interval(LOG_ROTATION_CHECK);
    loop {
        tick.tick().await;
        if let Err(e) =
            cutover_fleet::logs::rotate_if_larger(&path, cutover_fleet::logs::DEFAULT_MAX_BYTES)
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot rotate the data plane's log");
        }
    }
}

fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route(GetState::ROUTE, get(state))
        .route(wire::METRICS, get(metrics))
        .route(SetWeights::ROUTE, post(weights))
        .route(Register::ROUTE, post(register))
        .route(Deregister::ROUTE, post(deregister))
        .route(WaitDrain::ROUTE, get(drain))
        .route(SetPreview::ROUTE, post(set_preview))
        .route(Shutdown::ROUTE, post(shutdown))
        .with_state(server)
}

fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = ErrorBody {
        error: message.to_string(),
    };
    (status, Json(body)).into_response()
}

async fn state(State(s): State<Arc<Server>>) -> Response {
    Json(s.state()).into_response()
}

async fn metrics(State(s): State<Arc<Server>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.registry.metrics_text(),
    )
        .into_response()
}

async fn weights(State(s): State<Arc<Server>>, Json(w): Json<SetWeights>) -> Response {
    let pairs: Vec<(&str, u32)> = w.weights.iter().map(|(g, w)| (g.as_str(), *w)).collect();
    match s.registry.set_weights(&pairs) {
        Ok(()) => Json(s.state()).into_response(),
        Err(e) => refuse(StatusCode::BAD_REQUEST, e),
    }
}

async fn register(State(s): State<Arc<Server>>, Json(t): Json<Register>) -> Response {
    match s.registry.register(&t.group, &t.target).await {
        Ok(_) => Json(s.state()).into_response(),
        Err(e) => refuse(StatusCode::BAD_REQUEST, e),
    }
}

async fn deregister(State(s): State<Arc<Server>>, Json(d): Json<Deregister>) -> Response {
    let timeout = Duration::from_millis(d.timeout_ms);
    if timeout > cutover_spec::duration::MAX {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "timeout_ms {} is longer than the longest drain allowed ({} ms)",
                d.timeout_ms,
                cutover_spec::duration::MAX.as_millis()
            ),
        );
    }
    match s.registry.deregister(&d.group, &d.target, timeout) {
        Some(handle) => {
            let id = s.next_drain.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut drains) = s.drains.lock() {
                drains.insert(id, handle);
            }
            Json(DrainStarted { id }).into_response()
        }
        None => refuse(
            StatusCode::NOT_FOUND,
            format!("no target `{}` in group `{}`", d.target, d.group),
        ),
    }
}

/// Answers when the drain ends; its record goes with the answer.
async fn drain(State(s): State<Arc<Server>>, UrlPath(id): UrlPath<u64>) -> Response {
    let handle = s.drains.lock().ok().and_then(|d| d.get(&id).cloned());
    let Some(handle) = handle else {
        return refuse(StatusCode::NOT_FOUND, format!("no drain {id}"));
    };
    let report = handle.wait().await;
    if let Ok(mut drains) = s.drains.lock() {
        drains.remove(&id);
    }
    Json(report).into_response()
}

/// A side that does not exist is refused as the body is read (422).
async fn set_preview(State(s): State<Arc<Server>>, Json(p): Json<SetPreview>) -> Response {
    s.preview.set(p.group);
    Json(Ack {}).into_response()
}

async fn shutdown(State(s): State<Arc<Server>>) -> Response {
    s.shutdown.cancel();
    (StatusCode::ACCEPTED, Json(Ack {})).into_response()
}

/// The data-plane process a controller runs with, started by it or adopted.
pub struct Process {
    pub remote: Arc<Remote>,
    pid: u32,
    start_ticks: u64,
    /// Present when this controller started the process (it reaps it).
    child: Option<tokio::process::Child>,
    /// What it was started with, to start another like it.
    file: PathBuf,
    data_dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Record {
    pid: u32,
    start_ticks: u64,
}

/// A data-plane process that answers on its socket.
struct Launched {
    child: tokio::process::Child,
    pid: u32,
    start_ticks: u64,
}

impl Process {
    /// Adopts the data plane the last controller on this data dir started, if it still runs with
    /// the same settings; otherwise (stopping one whose settings changed) starts a new one.
    pub async fn start_or_adopt(
        file: &Path,
        data_dir: &Path,
        spec: &Spec,
        store: &cutover_store::Store,
    ) -> anyhow::Result<Self> {
        let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        let data_dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let socket = data_dir.join(SOCKET);
        let wanted = fingerprint(spec);
        let recorded = store
            .meta(META_KEY)?
            .and_then(|v| serde_json::from_str::<Record>(&v).ok())
            .filter(|r| cutover_fleet::instance::is_same_process(r.pid, r.start_ticks));
        if let Some(r) = recorded {
            match plane::fetch_state(&socket).await {
                Ok(state) if state.pid == r.pid && state.fingerprint == wanted => {
                    let remote = Remote::connect(socket).await?;
                    tracing::info!(pid = r.pid, "adopted the running data plane");
                    return Ok(Self {
                        remote,
                        pid: r.pid,
                        start_ticks: r.start_ticks,
                        child: None,
                        file,
                        data_dir,
                    });
                }
                Ok(_) => {
                    tracing::warn!(pid = r.pid, "the stack file's listener or health settings changed: replacing the data plane (clients see the restart)");
                    let _ = plane::shutdown(&socket).await;
                    wait_gone(r.pid, r.start_ticks, EXIT_DEADLINE).await;
                }
                Err(e) => {
                    tracing::warn!(pid = r.pid, error = %e, "the recorded data plane does not answer: stopping it")
                }
            }
            kill_group(r.pid, r.start_ticks);
        }
        let launched = launch(&file, &data_dir, None, store).await?;
        Ok(Self {
            remote: Remote::connect(socket).await?,
            pid: launched.pid,
            start_ticks: launched.start_ticks,
            child: Some(launched.child),
            file,
            data_dir,
        })
    }

    /// Starts another data plane if this one has exited; `true` if it did, and the caller must
    /// give the new one its targets and weights.
    pub async fn revive(&mut self) -> anyhow::Result<bool> {
        let alive = match self.child.as_mut() {
            Some(child) => child.try_wait()?.is_none(),
            None => cutover_fleet::instance::is_same_process(self.pid, self.start_ticks),
        };
        let silent = self.remote.silent_for();
        if alive && silent < SILENCE_LIMIT {
            return Ok(false);
        }
        if alive {
            tracing::error!(
                pid = self.pid,
                ?silent,
                "the data plane stopped answering: replacing it"
            );
            match self.child.as_mut() {
                Some(child) => {
                    let _ = child.kill().await;
                }
                None => {
                    kill_group(self.pid, self.start_ticks);
                    wait_gone(self.pid, self.start_ticks, EXIT_DEADLINE).await;
                }
            }
        } else {
            tracing::error!(pid = self.pid, "the data plane exited: starting another");
        }
        let store = cutover_store::Store::open(&self.data_dir.join("state.db"))?;
        let last = self.remote.state();
        let launched = launch(&self.file, &self.data_dir, Some(&last), &store).await?;
        (self.pid, self.start_ticks) = (launched.pid, launched.start_ticks);
        self.child = Some(launched.child);
        self.remote.heard();
        Ok(true)
    }

    /// Asks the data plane to close its listeners and finish what is in flight, and waits for it
    /// to exit (killing it if it does not within the deadline).
    pub async fn stop(mut self) {
        if let Err(e) = self.remote.shutdown().await {
            tracing::warn!(error = %e, "cannot ask the data plane to stop");
        }
        match self.child.as_mut() {
            Some(child) => {
                if tokio::time::timeout(EXIT_DEADLINE, child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        pid = self.pid,
                        "the data plane did not exit in time: killing it"
                    );
                    let _ = child.kill().await;
                }
            }
            None => {
                if !wait_gone(self.pid, self.start_ticks, EXIT_DEADLINE).await {
                    kill_group(self.pid, self.start_ticks);
                }
            }
        }
        let forgotten = cutover_store::Store::open(&self.data_dir.join("state.db"))
            .and_then(|s| s.clear_meta(META_KEY));
        if let Err(e) = forgotten {
            tracing::warn!(error = %e, "cannot record that the data plane stopped");
        }
    }
}

/// Whether the store records a data plane that still runs (one a dead controller left serving).
pub fn recorded(store: &cutover_store::Store) -> Result<bool, cutover_store::StoreError> {
    Ok(store
        .meta(META_KEY)?
        .and_then(|v| serde_json::from_str::<Record>(&v).ok())
        .is_some_and(|r| cutover_fleet::instance::is_same_process(r.pid, r.start_ticks)))
}

/// Starts a data-plane process on the stack file, records it, and waits until it answers.
async fn launch(
    file: &Path,
    data_dir: &Path,
    replacing: Option<&PlaneState>,
    store: &cutover_store::Store,
) -> anyhow::Result<Launched> {
    let socket = data_dir.join(SOCKET);
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command
        .arg("dataplane")
        .arg("-f")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir);
    if let Some(last) = replacing {
        if let Some(addr) = last.listener {
            command.arg("--listen").arg(addr.to_string());
        }
        if let Some(addr) = last.preview {
            command.arg("--preview").arg(addr.to_string());
        }
    }
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a terminal's Ctrl-C reaches the controller, which stops the
        // data plane in order, and a controller that dies leaves it serving.
        .process_group(0)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start the data plane: {e}"))?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow::anyhow!("the data plane exited at once"))?;
    let started = Instant::now();
    let start_ticks = loop {
        if let Some(t) = cutover_fleet::instance::start_ticks(pid) {
            break t;
        }
        if started.elapsed() > START_DEADLINE {
            anyhow::bail!("cannot read the data plane's start time from /proc/{pid}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    store.set_meta(META_KEY, &json!(Record { pid, start_ticks }).to_string())?;
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read(&log_path)
                .ok()
                .and_then(|b| b.get(log_start as usize..).map(<[u8]>::to_vec))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            anyhow::bail!("the data plane exited ({status}): {}", tail.trim());
        }
        match plane::fetch_state(&socket).await {
            Ok(state) if state.pid == pid => {
                return Ok(Launched {
                    child,
                    pid,
                    start_ticks,
                })
            }
            _ if started.elapsed() > START_DEADLINE => {
                let _ = child.start_kill();
                anyhow::bail!(
                    "the data plane did not answer on {} within {START_DEADLINE:?}",
                    socket.display()
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Whether the process went away within `deadline`.
async fn wait_gone(pid: u32, ticks: u64, deadline: Duration) -> bool {
    let started = Instant::now();
    while cutover_fleet::instance::is_same_process(pid, ticks) {
        if started.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

fn kill_group(pid: u32, ticks: u64) {
    if !cutover_fleet::instance::is_same_process(pid, ticks) {
        return;
    }
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(test)]
#[path = "dataplane_tests.rs"]
mod tests;
