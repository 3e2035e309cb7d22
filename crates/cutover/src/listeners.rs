//! The stack's listeners over one registry: the main listener (plain or TLS), the preview
//! listener that reaches only the group not live, and the plain listener that redirects to HTTPS.

use std::net::SocketAddr;
use std::sync::Arc;

use cutover_proxy::{ListenerOptions, Proxy, Registry};
use cutover_spec::Spec;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::plane::PreviewGroup;

/// Listeners that are open and serving.
pub struct Listeners {
    pub listener: SocketAddr,
    pub preview: Option<SocketAddr>,
    tasks: JoinSet<std::io::Result<()>>,
    stop: CancellationToken,
}

/// Opens the stack file's listeners. `preview` is given when there are instances to preview
/// (not for static targets).
pub async fn open(
    spec: &Spec,
    registry: &Arc<Registry>,
    preview: Option<PreviewGroup>,
) -> anyhow::Result<Listeners> {
    let rules = cutover_proxy::headers::HeaderRules::from_listener(&spec.listener)?;
    let tls = match &spec.listener.tls {
        Some(t) => Some(cutover_proxy::tls::acceptor(&t.cert, &t.key)?),
        None => None,
    };
    // What every listener of the stack shares: its workers.
    let workers = ListenerOptions {
        workers: spec.listener.workers.map_or(0, |n| n as usize),
        pin_workers: spec.listener.pin_workers,
        ..ListenerOptions::default()
    };
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let main = bind(spec.listener.bind).await?;
    let listener = main.local_addr()?;
    // One budget for the listener and its preview: both send to the same targets.
    let budget = cutover_proxy::tries::RetryBudget::new(spec.listener.retry_budget);
    let proxy = |rules| {
        let mut proxy = Proxy::new(registry.clone(), rules);
        proxy.body_timeout = spec.listener.body_timeout;
        proxy.try_timeout = spec.listener.try_timeout;
        proxy.budget = budget.clone();
        proxy
    };
    tasks.spawn(cutover_proxy::serve(
        main,
        Arc::new(proxy(rules.clone())),
        ListenerOptions {
            tls,
            ..workers.clone()
        },
        stop.clone().cancelled_owned(),
    ));
    let mut preview_addr = None;
    if let (Some(addr), Some(group)) = (spec.listener.preview, preview) {
        let socket = bind(addr).await?;
        preview_addr = Some(socket.local_addr()?);
        let mut proxy = proxy(rules);
        proxy.only = Some(Arc::new(move || group.get().name()));
        tasks.spawn(cutover_proxy::serve(
            socket,
            Arc::new(proxy),
            workers,
            stop.clone().cancelled_owned(),
        ));
    }
    if let Some(redirect) = spec.listener.redirect_http {
        let socket = bind(redirect).await?;
        tracing::info!(from = %socket.local_addr()?, "redirecting http to https");
        tasks.spawn(cutover_proxy::serve_redirect(
            socket,
            listener.port(),
            stop.clone().cancelled_owned(),
        ));
    }
    Ok(Listeners {
        listener,
        preview: preview_addr,
        tasks,
        stop,
    })
}

impl Listeners {
    /// Resolves if a listener stops by itself, saying how; never while all serve.
    pub async fn failed(&mut self) -> String {
        match self.tasks.join_next().await {
            Some(ended) => format!("a listener stopped unexpectedly: {ended:?}"),
            None => std::future::pending().await,
        }
    }

    /// Stops accepting, then waits for open connections to finish their requests.
    pub async fn close(mut self) {
        self.stop.cancel();
        while let Some(ended) = self.tasks.join_next().await {
            if let Ok(Err(e)) = ended {
                tracing::warn!(error = %e, "listener ended with an error");
            }
        }
    }
}

pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
