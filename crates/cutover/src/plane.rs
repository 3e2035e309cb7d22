//! The traffic plane the controller drives: the registry in this process, or a data-plane process
//! of its own that keeps serving when the controller dies.
//!
//! `cutover up` runs its listeners in a separate `cutover dataplane` process, so that a controller
//! killed at any point (or restarted to pick up a new binary) costs the clients nothing: the data
//! plane keeps routing on its last snapshot and keeps checking health, and the next controller
//! adopts it (pid and start time must match) instead of starting another. The controller talks
//! to it over a Unix socket in the data dir (mode 0600). Writes go through one queue, so routing
//! changes reach the data plane in the order the controller made them; reads come from a mirror
//! refreshed every [`POLL`], so the controller's planning never waits on I/O.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use cutover_api::dataplane::{
    self as wire, Deregister, GetState, Register, SetPreview, SetWeights, Shutdown, WaitDrain,
};
use cutover_api::{Ack, Endpoint, Method};
use cutover_control::Side;
use cutover_proxy::metrics::MetricsSnapshot;
use cutover_proxy::{DrainHandle, DrainReport, GroupStatus, Registry};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};

pub use cutover_api::dataplane::PlaneState;

/// How often the controller's mirror of a data-plane process is refreshed.
pub const POLL: Duration = Duration::from_millis(50);
/// The control socket's file name in the data dir.
pub const SOCKET: &str = "dataplane.sock";
/// Upper bound on one control request; the data plane answers in microseconds.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// The data plane did not answer (not started, exited, or stuck); retryable.
    #[error("the data plane at {0} did not answer: {1}")]
    Unreachable(PathBuf, String),
    /// The data plane refused the request; not retryable as it is.
    #[error("the data plane refused {0}: {1}")]
    Refused(&'static str, String),
    /// It answered something this controller cannot read: another protocol version.
    #[error("the data plane answered {0} with something unreadable: {1}")]
    Unreadable(&'static str, String),
    #[error(transparent)]
    Registry(#[from] cutover_proxy::registry::RegistryError),
}

/// Which group a preview listener reaches; follows the controller as the groups trade places.
#[derive(Debug, Clone, Default)]
pub struct PreviewGroup(Arc<AtomicUsize>);

impl PreviewGroup {
    pub fn get(&self) -> Side {
        Side::BOTH[self.0.load(Ordering::Relaxed).min(1)]
    }

    pub fn set(&self, group: Side) {
        let index = usize::from(group == Side::Green);
        self.0.store(index, Ordering::Relaxed);
    }
}

/// The traffic plane: target groups, weights, health and drains, wherever they run.
#[derive(Clone)]
pub enum Plane {
    Local {
        registry: Arc<Registry>,
        preview: PreviewGroup,
    },
    Remote(Arc<Remote>),
}

/// A drain in progress; [`Drain::wait`] resolves with the data plane's confirmation.
pub enum Drain {
    Local(DrainHandle),
    Remote { socket: PathBuf, id: u64 },
}

/// What is known of a drain the data plane cannot report on: nothing.
fn unknown_drain() -> DrainReport {
    DrainReport {
        target: String::new(),
        completed: 0,
        cut: 0,
        closed: 0,
        took_ms: 0,
    }
}

impl Drain {
    pub async fn wait(self) -> DrainReport {
        match self {
            Drain::Local(handle) => handle.wait().await,
            Drain::Remote { socket, id } => loop {
                // The data plane answers when the drain ends; a broken wait is asked again, since
                // the drain goes on there whatever happens to this request.
                match call(&socket, &WaitDrain { id }).await {
                    Ok(report) => return report,
                    Err(PlaneError::Unreadable(what, why)) => {
                        tracing::warn!(%what, %why, "unreadable drain report");
                        return unknown_drain();
                    }
                    Err(PlaneError::Refused(_, why)) => {
                        tracing::warn!(drain = id, %why, "the data plane forgot a drain");
                        return unknown_drain();
                    }
                    Err(e) => {
                        tracing::warn!(drain = id, error = %e, "waiting for a drain again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            },
        }
    }
}

impl Plane {
    pub fn local(registry: Arc<Registry>, preview: PreviewGroup) -> Self {
        Plane::Local { registry, preview }
    }

    /// The data-plane process's pid, when the listeners run in one.
    pub fn process_id(&self) -> Option<u32> {
        match self {
            Plane::Local { .. } => None,
            Plane::Remote(r) => Some(r.mirror.load().pid),
        }
    }

    /// Every group with its targets' health (a mirror read for a data-plane process).
    pub fn status(&self) -> Vec<GroupStatus> {
        match self {
            Plane::Local { registry, .. } => registry.status(),
            Plane::Remote(r) => r.mirror.load().groups.clone(),
        }
    }

    pub fn group_metrics(&self, group: &str) -> Option<MetricsSnapshot> {
        match self {
            Plane::Local { registry, .. } => registry.group_metrics(group),
            Plane::Remote(r) => r.mirror.load().metrics.get(group).cloned(),
        }
    }

    /// Sets several groups' weights in one routing change; a data-plane process gets it in order
    /// with every other change ([`Plane::flush`] waits until it has).
    pub fn set_weights(&self, weights: &[(&str, u32)]) -> Result<(), PlaneError> {
        match self {
            Plane::Local { registry, .. } => Ok(registry.set_weights(weights)?),
            Plane::Remote(r) => {
                let weights = weights.iter().map(|(g, w)| ((*g).to_owned(), *w)).collect();
                r.send(Write::Weights(weights));
                Ok(())
            }
        }
    }

    /// Points the preview listener at `group`.
    pub fn set_preview(&self, group: Side) {
        match self {
            Plane::Local { preview, .. } => preview.set(group),
            Plane::Remote(r) => r.send(Write::Preview(group)),
        }
    }

    pub async fn register(&self, group: &str, target: &str) -> Result<(), PlaneError> {
        match self {
            Plane::Local { registry, .. } => registry.register(group, target).await.map(|_| ())?,
            Plane::Remote(r) => {
                let (tx, rx) = oneshot::channel();
                r.send(Write::Register {
                    group: group.to_owned(),
                    target: target.to_owned(),
                    reply: tx,
                });
                r.reply(rx).await?
            }
        }
        Ok(())
    }

    /// Takes a target out of rotation at once and starts its drain; `None` if it is not
    /// registered (or the data plane cannot be reached, in which case it serves nothing).
    pub async fn deregister(&self, group: &str, target: &str, timeout: Duration) -> Option<Drain> {
        match self {
            Plane::Local { registry, .. } => registry
                .deregister(group, target, timeout)
                .map(Drain::Local),
            Plane::Remote(r) => {
                let (tx, rx) = oneshot::channel();
                r.send(Write::Deregister {
                    group: group.to_owned(),
                    target: target.to_owned(),
                    timeout,
                    reply: tx,
                });
                match r.reply(rx).await {
                    Ok(Some(id)) => Some(Drain::Remote {
                        socket: r.socket.clone(),
                        id,
                    }),
                    Ok(None) => None,
                    Err(e) => {
                        tracing::warn!(%group, %target, error = %e, "cannot deregister");
                        None
                    }
                }
            }
        }
    }

    /// Waits until every change made so far has reached the data plane.
    pub async fn flush(&self) {
        if let Plane::Remote(r) = self {
            r.flush().await;
        }
    }

    /// Prometheus text for every group and target.
    pub async fn metrics_text(&self) -> Result<String, PlaneError> {
        match self {
            Plane::Local { registry, .. } => Ok(registry.metrics_text()),
            Plane::Remote(r) => {
                let body = request(&r.socket, Method::Get, wire::METRICS, None, "metrics").await?;
                Ok(String::from_utf8_lossy(&body).into_owned())
            }
        }
    }
}

/// A routing change for a data-plane process, carried out in the order it was made.
enum Write {
    Weights(Vec<(String, u32)>),
    Preview(Side),
    Register {
        group: String,
        target: String,
        reply: oneshot::Sender<Result<(), PlaneError>>,
    },
    Deregister {
        group: String,
        target: String,
        timeout: Duration,
        reply: oneshot::Sender<Result<Option<u64>, PlaneError>>,
    },
    Flush(oneshot::Sender<()>),
}

/// The controller's side of a data-plane process.
pub struct Remote {
    pub socket: PathBuf,
    mirror: ArcSwap<PlaneState>,
    writes: mpsc::UnboundedSender<Write>,
    /// Set once the data plane was asked to stop: what is left to do here is quietly skipped.
    closed: AtomicBool,
    /// When the data plane last answered a state read.
    answered: std::sync::Mutex<std::time::Instant>,
}

impl Remote {
    /// Connects to the data plane at `socket`, reads its state once, and starts the writer and
    /// the mirror's refresh, which end when the returned value is dropped.
    pub async fn connect(socket: PathBuf) -> Result<Arc<Self>, PlaneError> {
        let state = fetch_state(&socket).await?;
        let (tx, rx) = mpsc::unbounded_channel();
        let remote = Arc::new(Self {
            socket,
            mirror: ArcSwap::from_pointee(state),
            writes: tx,
            closed: AtomicBool::new(false),
            answered: std::sync::Mutex::new(std::time::Instant::now()),
        });
        tokio::spawn(write_loop(Arc::downgrade(&remote), rx));
        tokio::spawn(poll_loop(Arc::downgrade(&remote)));
        Ok(remote)
    }

    pub fn state(&self) -> Arc<PlaneState> {
        self.mirror.load_full()
    }

    fn send(&self, write: Write) {
        // The writer lives as long as this value does.
        let _ = self.writes.send(write);
    }

    async fn reply<T>(
        &self,
        rx: oneshot::Receiver<Result<T, PlaneError>>,
    ) -> Result<T, PlaneError> {
        rx.await.unwrap_or_else(|_| {
            Err(PlaneError::Unreachable(
                self.socket.clone(),
                "the writer stopped".into(),
            ))
        })
    }

    /// Asks the data plane to close its listeners, let in-flight requests finish, and exit.
    pub async fn shutdown(&self) -> Result<(), PlaneError> {
        self.flush().await;
        self.closed.store(true, Ordering::Relaxed);
        shutdown(&self.socket).await
    }

    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Write::Flush(tx));
        let _ = rx.await;
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// How long the data plane has not answered a state read.
    pub fn silent_for(&self) -> Duration {
        self.answered
            .lock()
            .map(|at| at.elapsed())
            .unwrap_or_default()
    }

    /// Notes that the data plane answered just now.
    pub fn heard(&self) {
        if let Ok(mut at) = self.answered.lock() {
            *at = std::time::Instant::now();
        }
    }
}

/// Asks the data plane at `socket` to close its listeners, finish what is in flight, and exit.
pub async fn shutdown(socket: &Path) -> Result<(), PlaneError> {
    call(socket, &Shutdown {}).await.map(|Ack {}| ())
}

async fn write_loop(remote: std::sync::Weak<Remote>, mut rx: mpsc::UnboundedReceiver<Write>) {
    while let Some(write) = rx.recv().await {
        let Some(r) = remote.upgrade() else { return };
        let socket = r.socket.clone();
        if r.is_closed() {
            // The data plane is stopping with its listeners; nothing routes any more.
            match write {
                Write::Register { reply, .. } => {
                    let _ = reply.send(Err(PlaneError::Unreachable(socket, "stopped".into())));
                }
                Write::Deregister { reply, .. } => {
                    let _ = reply.send(Ok(None));
                }
                Write::Flush(reply) => {
                    let _ = reply.send(());
                }
                Write::Weights(_) | Write::Preview(_) => {}
            }
            continue;
        }
        match write {
            Write::Weights(weights) => {
                if let Ok(state) = call(&socket, &SetWeights { weights }).await {
                    r.mirror.store(Arc::new(state));
                }
            }
            Write::Preview(group) => {
                if let Err(e) = call(&socket, &SetPreview { group }).await {
                    tracing::error!(error = %e, "cannot point the preview listener");
                }
            }
            Write::Register {
                group,
                target,
                reply,
            } => {
                let result = call(&socket, &Register { group, target })
                    .await
                    .map(|state| r.mirror.store(Arc::new(state)));
                let _ = reply.send(result);
            }
            Write::Deregister {
                group,
                target,
                timeout,
                reply,
            } => {
                let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
                let request = Deregister {
                    group,
                    target,
                    timeout_ms,
                };
                let result = match call(&socket, &request).await {
                    Ok(started) => Ok(Some(started.id)),
                    Err(PlaneError::Refused(..)) => Ok(None),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Write::Flush(reply) => {
                let _ = reply.send(());
            }
        }
    }
}

async fn poll_loop(remote: std::sync::Weak<Remote>) {
    let mut failing = 0u32;
    loop {
        tokio::time::sleep(POLL).await;
        let Some(r) = remote.upgrade() else { return };
        if r.is_closed() {
            return;
        }
        match fetch_state(&r.socket).await {
            Ok(state) => {
                if failing > 0 {
                    tracing::info!("the data plane answers again");
                }
                failing = 0;
                r.heard();
                r.mirror.store(Arc::new(state));
            }
            Err(e) => {
                failing += 1;
                // Once a second is enough to say so.
                if failing % 20 == 1 {
                    tracing::error!(error = %e, "the data plane does not answer");
                }
            }
        }
    }
}

pub async fn fetch_state(socket: &Path) -> Result<PlaneState, PlaneError> {
    call(socket, &GetState {}).await
}

/// One typed request to the data plane at `socket`.
async fn call<E: Endpoint>(socket: &Path, req: &E) -> Result<E::Reply, PlaneError> {
    let what = E::ROUTE;
    let body = match E::METHOD {
        Method::Post => Some(
            serde_json::to_string(req).map_err(|e| PlaneError::Unreadable(what, e.to_string()))?,
        ),
        Method::Get | Method::Delete => None,
    };
    let bytes = request(socket, E::METHOD, &req.path(), body, what).await?;
    serde_json::from_slice(Ack::body(&bytes))
        .map_err(|e| PlaneError::Unreadable(what, e.to_string()))
}

/// One HTTP/1.1 exchange over the control socket, on a connection of its own.
async fn request(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<String>,
    what: &'static str,
) -> Result<Bytes, PlaneError> {
    let unreachable = |e: String| PlaneError::Unreachable(socket.to_path_buf(), e);
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .method(method.as_str())
            .uri(path)
            .header(http::header::HOST, "dataplane")
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| unreachable(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(PlaneError::Refused(
                what,
                format!("{status}: {}", String::from_utf8_lossy(&bytes).trim()),
            ))
        }
    };
    // A drain may take as long as its deadline; everything else answers at once.
    if what == WaitDrain::ROUTE {
        return exchange.await;
    }
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(unreachable("no answer in time".into())))
}
