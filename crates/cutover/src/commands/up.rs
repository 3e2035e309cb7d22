//! `cutover up`: run the stack in the foreground: listeners, target groups, health checks, admin API.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use cutover_proxy::{HealthConfig, ListenerOptions, Proxy, Registry};
use cutover_spec::Spec;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::EXIT_INVALID;
use crate::admin::{self, AdminState};
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
    if spec.targets.is_empty() {
        eprintln!(
            "{}: this build runs static targets only (`targets = [...]`); running release.command instances is not built yet",
            args.file.display()
        );
        return ExitCode::from(EXIT_INVALID);
    }
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
    match runtime.block_on(run_stack(spec, data_dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cutover up: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_stack(spec: Spec, data_dir: PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| anyhow::anyhow!("cannot create the data dir {}: {e}", data_dir.display()))?;
    let token = token::load_or_create(&data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot write {}: {e}",
            token::token_path(&data_dir).display()
        )
    })?;

    let registry = Registry::new();
    registry.ensure_group(
        STATIC_GROUP,
        100,
        spec.listener.balance,
        HealthConfig::from(&spec.health),
    )?;
    for target in &spec.targets {
        registry.register(STATIC_GROUP, target).await?;
    }
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

    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let options = ListenerOptions {
        tls,
        ..ListenerOptions::default()
    };
    tasks.spawn(cutover_proxy::serve(
        listener,
        proxy,
        options,
        shutdown.clone().cancelled_owned(),
    ));
    if let Some(redirect) = spec.listener.redirect_http {
        let redirect_listener = bind(redirect).await?;
        println!(
            "redirecting http on {} to https",
            redirect_listener.local_addr()?
        );
        tasks.spawn(cutover_proxy::serve_redirect(
            redirect_listener,
            local.port(),
            shutdown.clone().cancelled_owned(),
        ));
    }
    let admin_state = Arc::new(AdminState {
        registry: registry.clone(),
        token,
        default_group: STATIC_GROUP.into(),
        drain_timeout: spec.deploy.drain_timeout,
    });
    let admin_shutdown = shutdown.clone().cancelled_owned();
    tasks.spawn(async move {
        axum::serve(admin_listener, admin::router(admin_state))
            .with_graceful_shutdown(admin_shutdown)
            .await
    });
    // Tests and scripts read these lines to find ports chosen by the OS.
    println!("listening on {local}");
    println!("admin on {admin_addr}");
    tracing::info!(%local, %admin_addr, targets = spec.targets.len(), "stack up");

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT: shutting down"),
        Some(ended) = tasks.join_next() => {
            return Err(anyhow::anyhow!("a listener stopped unexpectedly: {ended:?}"));
        }
    }
    shutdown.cancel();
    while let Some(ended) = tasks.join_next().await {
        if let Ok(Err(e)) = ended {
            tracing::warn!(error = %e, "listener ended with an error");
        }
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
