//! `cutover up`: run the stack in the foreground: listeners, target groups, health checks, the
//! instances of the current release (or static targets), and the admin API.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use cutover_fleet::LocalFleet;
use cutover_proxy::{HealthConfig, Registry};
use cutover_spec::Spec;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::EXIT_INVALID;
use crate::admin::{self, AdminState};
use crate::controller::Controller;
use crate::plane::{Plane, PreviewGroup};
use crate::token;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The stack file.
    #[arg(short = 'f', long = "file", default_value = "cutover.toml")]
    pub file: PathBuf,
    /// State, logs and the admin token (default: `.cutover/` beside the stack file).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// How often the controller checks that its data-plane process still runs.
const REVIVE_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// The group static targets join.
pub const STATIC_GROUP: &str = "static";

pub fn data_dir(file: &Path, given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        let base = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        base.join(".cutover")
    })
}

pub fn run(args: Args) -> ExitCode {
    // A user that cannot be become fails here, before anything starts, not as a crash loop.
    let spec = match cutover_spec::load_on_host(&args.file, |spec| {
        cutover_fleet::user::host_problems(spec, true)
    }) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let data_dir = data_dir(&args.file, args.data_dir);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cutover up: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let serving = Serving::Process { file: args.file };
    match runtime.block_on(run_stack(spec, data_dir, serving, None)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cutover up: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Addresses of a running stack, for callers that start it in-process (`cutover demo`).
#[derive(Debug, Clone)]
pub struct Running {
    pub listener: SocketAddr,
    pub admin: SocketAddr,
    pub stop: CancellationToken,
}

/// Where a stack's listeners run.
#[derive(Debug, Clone)]
pub enum Serving {
    /// In this process: static targets, and callers that own the whole story (`cutover demo`).
    InProcess,
    /// In a `cutover dataplane` process started (or adopted) for this stack file, which outlives
    /// a controller that crashes or restarts.
    Process { file: PathBuf },
}

/// The listeners a stack runs, here or in a data-plane process, to be closed in order.
enum Opened {
    InProcess(crate::listeners::Listeners),
    Process(crate::dataplane::Process),
}

/// Runs the stack until SIGTERM/SIGINT, `POST /stop`, or `stop` given in `started`.
pub async fn run_stack(
    mut spec: Spec,
    data_dir: PathBuf,
    serving: Serving,
    started: Option<tokio::sync::oneshot::Sender<Running>>,
) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives once the addresses are printed must drain, not kill.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    crate::private::restrict_umask();
    crate::private::data_dir(&data_dir, spec.release.user.is_some())
        .map_err(|e| anyhow::anyhow!("cannot create the data dir {}: {e}", data_dir.display()))?;
    if !spec.admin.bind.ip().is_loopback() {
        tracing::warn!(
            bind = %spec.admin.bind,
            "the admin API listens beyond loopback (admin.allow_remote): its token crosses the \
             network in plain HTTP"
        );
        eprintln!(
            "warning: the admin API listens on {} (admin.allow_remote = true): its bearer token \
             crosses the network in plain HTTP",
            spec.admin.bind
        );
    }
    let token = token::load_or_create(&data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {}: {e}",
            token::token_path(&data_dir).display()
        )
    })?;

    // One controller per data dir: two would fight over the same instances and data plane. The
    // lock goes with the process, however it ends.
    let _controller_lock = lock_data_dir(&data_dir)?;
    let health = HealthConfig::from(&spec.health);
    let stop = CancellationToken::new();
    let mut background = tokio::task::JoinSet::new();
    let managed = spec.targets.is_empty();
    let store = if managed {
        let db = data_dir.join("state.db");
        Some(
            cutover_store::Store::open(&db)
                .map_err(|e| anyhow::anyhow!("{}: {e}", db.display()))?,
        )
    } else {
        None
    };
    let (plane, mut running, listener, preview) = match (&serving, &store) {
        (Serving::Process { file }, Some(store)) => {
            let process =
                crate::dataplane::Process::start_or_adopt(file, &data_dir, &spec, store).await?;
            let state = process.remote.state();
            let listener = state
                .listener
                .ok_or_else(|| anyhow::anyhow!("the data plane reported no listener"))?;
            let plane = Plane::Remote(process.remote.clone());
            (plane, Opened::Process(process), listener, state.preview)
        }
        _ => {
            let registry = Registry::new();
            let preview_group = PreviewGroup::default();
            if managed {
                let [live, next] = cutover_control::Side::BOTH;
                registry.ensure_group(live.name(), 100, spec.listener.balance, health.clone())?;
                registry.ensure_group(next.name(), 0, spec.listener.balance, health)?;
            } else {
                registry.ensure_group(STATIC_GROUP, 100, spec.listener.balance, health)?;
                for target in &spec.targets {
                    registry.register(STATIC_GROUP, target).await?;
                }
            }
            let opened =
                crate::listeners::open(&spec, &registry, managed.then(|| preview_group.clone()))
                    .await?;
            let (listener, preview) = (opened.listener, opened.preview);
            let plane = Plane::local(registry, preview_group);
            (plane, Opened::InProcess(opened), listener, preview)
        }
    };
    let controller = match store {
        Some(store) => {
            prefer_sibling_binaries(&mut spec);
            let (fleet, exits) = LocalFleet::new(data_dir.join("logs"));
            // Instances write into a relay of their own, so a full disk never fails their
            // writes; without our own path (it is gone from disk) they write into the file.
            let fleet = match std::env::current_exe() {
                Ok(exe) => fleet.with_log_relay(exe, vec!["log-relay".into()]),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot find cutover's own program: instances write their logs themselves");
                    fleet
                }
            };
            let controller =
                Controller::start(spec.clone(), &data_dir, fleet, plane.clone(), store).await?;
            if let Some(addr) = preview {
                controller.set_preview(addr);
            }
            background.spawn(controller.clone().run(exits, stop.clone()));
            Some(controller)
        }
        None => None,
    };

    let admin_listener = crate::listeners::bind(spec.admin.bind).await?;
    let admin_addr = admin_listener.local_addr()?;
    std::fs::write(data_dir.join(token::ADDR_FILE), admin_addr.to_string())?;
    let admin_state = Arc::new(AdminState {
        plane: plane.clone(),
        controller: controller.clone(),
        stop: stop.clone(),
        token,
        default_group: if controller.is_some() {
            cutover_control::Side::Blue.name()
        } else {
            STATIC_GROUP
        }
        .into(),
        drain_timeout: spec.deploy.drain_timeout,
    });
    let admin_stop = CancellationToken::new();
    let admin = tokio::spawn(
        axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(admin_stop.clone().cancelled_owned())
            .into_future(),
    );
    tracing::info!(%listener, %admin_addr, "stack up");
    match started {
        Some(tx) => {
            let _ = tx.send(Running {
                listener,
                admin: admin_addr,
                stop: stop.clone(),
            });
        }
        None => {
            // Tests and scripts read these lines to find ports chosen by the OS. One write, and
            // its failure ignored: a reader that closes the pipe must not take the daemon down.
            let mut lines = format!("listening on {listener}\nadmin on {admin_addr}\n");
            if let Some(preview) = preview {
                lines.push_str(&format!("preview on {preview}\n"));
            }
            let mut stdout = std::io::stdout().lock();
            let _ = std::io::Write::write_all(&mut stdout, lines.as_bytes())
                .and_then(|()| std::io::Write::flush(&mut stdout));
        }
    }

    // Listeners in this process end the stack if they fail; a data-plane process that dies is
    // replaced and given the fleet's targets again.
    let listener_failed = async {
        match &mut running {
            Opened::InProcess(l) => Some(l.failed().await),
            Opened::Process(p) => loop {
                tokio::time::sleep(REVIVE_CHECK).await;
                match p.revive().await {
                    Ok(false) => {}
                    Ok(true) => {
                        if let Some(c) = &controller {
                            c.resync().await;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start another data plane"),
                }
            },
        }
    };
    let failure = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); None }
        _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); None }
        _ = stop.cancelled() => { tracing::info!("stop requested: shutting down"); None }
        failed = listener_failed => failed,
    };
    // New connections stop first; in-flight requests finish; then the instances drain and stop.
    admin_stop.cancel();
    let _ = admin.await;
    match running {
        Opened::InProcess(l) => l.close().await,
        Opened::Process(p) => p.stop().await,
    }
    stop.cancel();
    while background.join_next().await.is_some() {}
    if let Some(c) = controller {
        c.shutdown().await;
    }
    let _ = std::fs::remove_file(data_dir.join(token::ADDR_FILE));
    match failure {
        Some(f) => Err(anyhow::anyhow!(f)),
        None => Ok(()),
    }
}

/// What a controller that died without stopping left running on a data dir.
pub enum LeftBehind {
    /// A controller holds the data dir: it is the one to ask.
    ControllerRunning,
    /// No data plane and no instance recorded as running.
    Nothing,
    /// A data plane or instances to stop.
    Something,
}

/// Looks for what `cutover stop` must stop itself because no controller is there to do it.
pub fn left_behind(file: &Path, data_dir: &Path) -> Result<LeftBehind, String> {
    if !data_dir.join("state.db").exists() {
        return Ok(LeftBehind::Nothing);
    }
    match lock_data_dir(data_dir) {
        Ok(_released_on_return) => {}
        Err(_) => return Ok(LeftBehind::ControllerRunning),
    }
    let spec = cutover_spec::load(file).map_err(|e| e.to_string())?;
    if !spec.targets.is_empty() {
        // A static stack runs everything in its controller: nothing outlives it.
        return Ok(LeftBehind::Nothing);
    }
    let db = data_dir.join("state.db");
    let store = cutover_store::Store::open(&db).map_err(|e| format!("{}: {e}", db.display()))?;
    let plane = crate::dataplane::recorded(&store).map_err(|e| format!("{}: {e}", db.display()))?;
    // Rows whose processes are gone do not count; one launched but never recorded (pid 0) does:
    // its process may run, and only a controller's start finds it.
    let instances = store
        .live_instances()
        .map_err(|e| format!("{}: {e}", db.display()))?
        .into_iter()
        .any(|r| {
            r.pid == 0
                || r.start_ticks
                    .is_some_and(|t| cutover_fleet::instance::is_same_process(r.pid, t))
        });
    Ok(if plane || instances {
        LeftBehind::Something
    } else {
        LeftBehind::Nothing
    })
}

/// Stops what a dead controller left running, as that controller would have: it adopts the data
/// plane and the instances, then closes the listeners, drains and stops every instance.
pub async fn stop_left_behind(file: &Path, data_dir: &Path) -> Result<(), String> {
    let spec = cutover_spec::load(file).map_err(|e| e.to_string())?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let serving = Serving::Process {
        file: file.to_path_buf(),
    };
    let run = run_stack(spec, data_dir.to_path_buf(), serving, Some(tx));
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => return result.map_err(|e| format!("{e:#}")),
        running = rx => {
            if let Ok(running) = running {
                running.stop.cancel();
            }
        }
    }
    run.await.map_err(|e| format!("{e:#}"))
}

fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("controller.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "another `cutover up` is running on the data dir {}; stop it first (`cutover stop`)",
            data_dir.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(anyhow::anyhow!("cannot lock {}: {e}", path.display()))
        }
    }
}

/// Lets a release command name `demo-app` (or any binary shipped beside cutover) without a path.
fn prefer_sibling_binaries(spec: &mut Spec) {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    else {
        return;
    };
    let path = std::env::var("PATH").unwrap_or_default();
    spec.release
        .env
        .entry("PATH".into())
        .or_insert_with(|| format!("{}:{path}", dir.display()));
}
