//! `cutover up`: run the stack in the foreground: listeners, target groups, health checks, the
//! instances of the current release (or static targets), and the admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use cutover_fleet::LocalFleet;
use cutover_proxy::{HealthConfig, ListenerOptions, Proxy, Registry};
use cutover_spec::Spec;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::EXIT_INVALID;
use crate::admin::{self, AdminState};
use crate::controller::{self, Controller};
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
    let spec = match cutover_spec::load(&args.file) {
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
    match runtime.block_on(run_stack(spec, data_dir, None)) {
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

/// Runs the stack until SIGTERM/SIGINT, `POST /stop`, or `stop` given in `started`.
pub async fn run_stack(
    mut spec: Spec,
    data_dir: PathBuf,
    started: Option<tokio::sync::oneshot::Sender<Running>>,
) -> anyhow::Result<()> {
    // Handlers first: a signal that arrives once the addresses are printed must drain, not kill.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create the data dir {}: {e}", data_dir.display()))?;
    let token = token::load_or_create(&data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {}: {e}",
            token::token_path(&data_dir).display()
        )
    })?;

    let registry = Registry::new();
    let health = HealthConfig::from(&spec.health);
    let stop = CancellationToken::new();
    let mut background = tokio::task::JoinSet::new();
    let controller = if spec.targets.is_empty() {
        let [live, next] = controller::GROUPS;
        registry.ensure_group(live, 100, spec.listener.balance, health.clone())?;
        registry.ensure_group(next, 0, spec.listener.balance, health)?;
        prefer_sibling_binaries(&mut spec);
        let (fleet, exits) = LocalFleet::new(data_dir.join("logs"));
        let db = data_dir.join("state.db");
        let store = cutover_store::Store::open(&db)
            .map_err(|e| anyhow::anyhow!("{}: {e}", db.display()))?;
        let controller =
            Controller::start(spec.clone(), &data_dir, fleet, registry.clone(), store).await?;
        background.spawn(controller.clone().run(exits, stop.clone()));
        Some(controller)
    } else {
        registry.ensure_group(STATIC_GROUP, 100, spec.listener.balance, health)?;
        for target in &spec.targets {
            registry.register(STATIC_GROUP, target).await?;
        }
        None
    };

    let rules = cutover_proxy::headers::HeaderRules::from_listener(&spec.listener)?;
    let proxy = Arc::new(Proxy::new(registry.clone(), rules));
    let tls = match &spec.listener.tls {
        Some(t) => Some(cutover_proxy::tls::acceptor(&t.cert, &t.key)?),
        None => None,
    };
    let listener = bind(spec.listener.bind).await?;
    let admin_listener = bind(spec.admin.bind).await?;
    let local = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    std::fs::write(data_dir.join(token::ADDR_FILE), admin_addr.to_string())?;

    let listeners_stop = CancellationToken::new();
    let mut listeners = tokio::task::JoinSet::new();
    let options = ListenerOptions {
        tls,
        ..ListenerOptions::default()
    };
    listeners.spawn(cutover_proxy::serve(
        listener,
        proxy,
        options,
        listeners_stop.clone().cancelled_owned(),
    ));
    if let (Some(addr), Some(c)) = (spec.listener.preview, &controller) {
        let preview = bind(addr).await?;
        let local = preview.local_addr()?;
        c.set_preview(local);
        let follows = c.clone();
        let mut proxy = Proxy::new(
            registry.clone(),
            cutover_proxy::headers::HeaderRules::from_listener(&spec.listener)?,
        );
        proxy.only = Some(Arc::new(move || follows.next_group()));
        listeners.spawn(cutover_proxy::serve(
            preview,
            Arc::new(proxy),
            ListenerOptions::default(),
            listeners_stop.clone().cancelled_owned(),
        ));
    }
    if let Some(redirect) = spec.listener.redirect_http {
        let redirect_listener = bind(redirect).await?;
        println!(
            "redirecting http on {} to https",
            redirect_listener.local_addr()?
        );
        listeners.spawn(cutover_proxy::serve_redirect(
            redirect_listener,
            local.port(),
            listeners_stop.clone().cancelled_owned(),
        ));
    }
    let admin_state = Arc::new(AdminState {
        registry: registry.clone(),
        controller: controller.clone(),
        stop: stop.clone(),
        token,
        default_group: if controller.is_some() {
            controller::GROUPS[0]
        } else {
            STATIC_GROUP
        }
        .into(),
        drain_timeout: spec.deploy.drain_timeout,
    });
    let admin_stop = listeners_stop.clone();
    listeners.spawn(async move {
        axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(admin_stop.cancelled_owned())
            .await
    });
    tracing::info!(%local, %admin_addr, "stack up");
    match started {
        Some(tx) => {
            let _ = tx.send(Running {
                listener: local,
                admin: admin_addr,
                stop: stop.clone(),
            });
        }
        None => {
            // Tests and scripts read these lines to find ports chosen by the OS.
            println!("listening on {local}");
            println!("admin on {admin_addr}");
            if let Some(preview) = controller.as_ref().and_then(|c| c.preview()) {
                println!("preview on {preview}");
            }
        }
    }

    let failure = tokio::select! {
        _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); None }
        _ = sigint.recv() => { tracing::info!("SIGINT: shutting down"); None }
        _ = stop.cancelled() => { tracing::info!("stop requested: shutting down"); None }
        Some(ended) = listeners.join_next() => Some(format!("a listener stopped unexpectedly: {ended:?}")),
    };
    // New connections stop first; in-flight requests finish; then the instances drain and stop.
    listeners_stop.cancel();
    while let Some(ended) = listeners.join_next().await {
        if let Ok(Err(e)) = ended {
            tracing::warn!(error = %e, "listener ended with an error");
        }
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

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
