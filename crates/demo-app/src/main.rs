//! Entry point of the `demo-app` binary: parse settings, apply start-up faults, serve, drain on signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use demo_app::{serve, AppState, Config, Shutdown};
use tokio::signal::unix::{signal, SignalKind};

/// Exit code of an injected crash, distinct from a start-up error.
const CRASH_EXIT_CODE: i32 = 70;

fn main() -> std::process::ExitCode {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if config.exit_on_start {
        eprintln!("demo-app: exiting at start as asked by --exit-on-start");
        return std::process::ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo-app: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config)) {
        Ok(Shutdown::Drained) => std::process::ExitCode::SUCCESS,
        Ok(Shutdown::TimedOut { cut }) => {
            eprintln!("demo-app: shutdown timeout passed with {cut} requests still running");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("demo-app: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

async fn run(config: Config) -> anyhow::Result<Shutdown> {
    let state = Arc::new(AppState::from_config(&config)?);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    if let Some(delay) = config.startup_delay {
        tracing::info!(?delay, "delaying start-up as asked by --startup-delay");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = sigterm.recv() => return Ok(Shutdown::Drained),
            _ = sigint.recv() => return Ok(Shutdown::Drained),
        }
    }
    let addr = SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, version = %config.app_version, "listening");
    // Tests and the fleet read the bound port from this line when they ask for port 0.
    println!("listening on {local}");
    if config.cpu_burn > 0.0 {
        let fraction = config.cpu_burn;
        std::thread::spawn(move || burn(fraction));
    }
    for (kind, name) in [
        (SignalKind::user_defined1(), "slow"),
        (SignalKind::user_defined2(), "breaks"),
    ] {
        let mut switch = signal(kind)?;
        let state = state.clone();
        tokio::spawn(async move {
            while switch.recv().await.is_some() {
                let flag = match name {
                    "slow" => &state.slow,
                    _ => &state.breaks,
                };
                let on = !flag.fetch_xor(true, std::sync::atomic::Ordering::Relaxed);
                eprintln!("demo-app: fault {name} {}", if on { "on" } else { "off" });
            }
        });
    }
    if let Some(after) = config.crash_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            eprintln!("demo-app: crashing as asked by --crash-after");
            std::process::exit(CRASH_EXIT_CODE);
        });
    }
    let shutdown = async move {
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM: draining"),
            _ = sigint.recv() => tracing::info!("SIGINT: draining"),
        }
    };
    Ok(serve(listener, state, shutdown, config.shutdown_timeout).await?)
}

/// Spins for `fraction` of every 10 ms slice, forever: a steady share of one core.
fn burn(fraction: f64) {
    const SLICE: Duration = Duration::from_millis(10);
    let busy = SLICE.mul_f64(fraction.clamp(0.0, 1.0));
    loop {
        let start = std::time::Instant::now();
        while start.elapsed() < busy {
            std::hint::spin_loop();
        }
        std::thread::sleep(SLICE.saturating_sub(start.elapsed()));
    }
}
