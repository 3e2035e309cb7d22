//! One target's runtime side: its connection pool, in-flight accounting and metrics.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::body::ProxyBody;
use crate::cost::PeakEwma;
use crate::metrics::TargetMetrics;
use crate::tries::Pace;
use crate::upstream;
use crate::worker::{shard, Counter, SHARDS};

/// Idle connections older than this are dropped before reuse: below the keep-alive timeout of
/// common servers (Node 5 s, nginx 75 s), so the target never closes one just as we reuse it.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Most idle connections kept per target.
const POOL_MAX_IDLE: usize = 256;

/// Upper bound on opening a connection to a target.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A pooled HTTP/1.1 connection to the target.
pub struct Pooled {
    pub sender: SendRequest<ProxyBody>,
    idle_since: Instant,
}

/// A target as the request path sees it. Shared by every routing snapshot that includes it.
pub struct Backend {
    pub addr: SocketAddr,
    /// `host:port` as registered.
    pub key: String,
    /// The group it was registered in (a target in two groups is two backends).
    pub group: Arc<str>,
    pub metrics: TargetMetrics,
    /// Its progress and its group's latency, for per-try timeouts.
    pub pace: Pace,
    /// Its recent response times, for latency-aware balancing.
    pub latency: PeakEwma,
    /// Consecutive proxy-visible failures, for passive health.
    pub failures: AtomicU32,
    /// Requests counted at the last once-a-second sample, and the rate it gave.
    sampled: AtomicU64,
    rate: AtomicU64,
    in_flight: AtomicUsize,
    upgraded: AtomicUsize,
    finished: Counter,
    /// Drains waiting on [`Backend::changed`]; without one, finishing a request notifies nobody
    /// (a notification takes a lock that both workers would share).
    watchers: AtomicUsize,
    /// Idle connections, one pool per worker thread: a connection's driver task runs on the
    /// worker that opened it, so reusing it from another worker would cost a cross-thread wake.
    idle: Vec<Mutex<Vec<Pooled>>>,
    /// Idle connections of the bodiless-request path ([`crate::upstream`]), per worker too.
    raw: Vec<Mutex<Vec<upstream::Conn>>>,
    changed: Notify,
    /// Cancelled at the drain deadline: upgraded tunnels close with a close frame.
    pub cut: CancellationToken,
    /// Cancelled when a drain starts closing long-lived connections (WebSockets, event
    /// streams): each then closes cleanly at a random moment within [`Backend::spread`].
    pub winding: CancellationToken,
    spread_ms: AtomicU64,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("key", &self.key)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// Why a connection to a target could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} failed: {1}")]
    Io(SocketAddr, std::io::Error),
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(SocketAddr, hyper::Error),
}

impl Backend {
    pub fn new(group: Arc<str>, key: String, addr: SocketAddr) -> Arc<Self> {
        Arc::new(Self {
            addr,
            key,
            group,
            metrics: TargetMetrics::default(),
            pace: Pace::default(),
            latency: PeakEwma::default(),
            failures: AtomicU32::new(0),
            sampled: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            upgraded: AtomicUsize::new(0),
            finished: Counter::default(),
            watchers: AtomicUsize::new(0),
            idle: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            raw: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            changed: Notify::new(),
            cut: CancellationToken::new(),
            winding: CancellationToken::new(),
            spread_ms: AtomicU64::new(0),
        })
    }

    /// Called once a second by the registry: the requests since the last call become the rate.
    pub fn sample_rate(&self) {
        let now = self.metrics.requests();
        let before = self.sampled.swap(now, Ordering::Relaxed);
        self.rate
            .store(now.saturating_sub(before), Ordering::Relaxed);
    }

    /// Requests in the last sampled second.
    pub fn rps(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn upgraded(&self) -> usize {
        self.upgraded.load(Ordering::Acquire)
    }

    pub fn finished(&self) -> u64 {
        self.finished.get()
    }

    /// Counts a request as in flight until the guard drops (after its response body is sent).
    pub fn begin(self: Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight {
            backend: self,
            upgraded: false,
        }
    }

    /// Asks long-lived connections to close cleanly, spread over `spread`.
    pub fn wind_down(&self, spread: Duration) {
        let ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
        self.spread_ms.store(ms, Ordering::SeqCst);
        self.winding.cancel();
    }

    /// Resolves at this connection's moment to close once the drain winds long-lived
    /// connections down: a random point within the spread, so that clients told to go do not all
    /// reconnect at once.
    pub async fn wound_down(self: Arc<Self>) {
        self.winding.cancelled().await;
        let spread = self.spread_ms.load(Ordering::SeqCst);
        if spread > 0 {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(..spread))).await;
        }
    }

    /// Resolves when in-flight or upgraded counts change; `enable` it before reading the counts,
    /// with a [`Watch`] held for as long as it waits.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Asks for [`Backend::changed`] to be notified until the watch drops.
    pub fn watch(self: &Arc<Self>) -> Watch {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        Watch(self.clone())
    }

    fn notify(&self) {
        // SeqCst with the counts: a watcher that registered before reading them is told of any
        // change made after its read.
        if self.watchers.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    /// A live idle connection, most recently used first.
    pub async fn checkout(&self) -> Option<SendRequest<ProxyBody>> {
        loop {
            let pooled = self.idle[shard()].lock().ok()?.pop()?;
            if pooled.idle_since.elapsed() >= POOL_IDLE_TIMEOUT || pooled.sender.is_closed() {
                continue;
            }
            let mut sender = pooled.sender;
            // Just checked in, the connection may still be finishing the last response.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    pub fn checkin(&self, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() || self.cut.is_cancelled() {
            return;
        }
        if let Ok(mut idle) = self.idle[shard()].lock() {
            if idle.len() < POOL_MAX_IDLE {
                idle.push(Pooled {
                    sender,
                    idle_since: Instant::now(),
                });
            }
        }
    }

    /// Drops every idle connection (the target is leaving).
    pub fn clear_pool(&self) {
        for pool in &self.idle {
            if let Ok(mut idle) = pool.lock() {
                idle.clear();
            }
        }
        for pool in &self.raw {
            if let Ok(mut idle) = pool.lock() {
                idle.clear();
            }
        }
    }

    /// An idle connection for a bodiless request, most recently used first, that nothing arrived
    /// on while it was idle. One the target closes just as it is taken is found out by using it:
    /// the caller drops this worker's idle connections then ([`Backend::clear_raw_pool`]) and
    /// sends the request again.
    pub fn checkout_raw(&self, now: Instant) -> Option<upstream::Conn> {
        let mut idle = self.raw[shard()].lock().ok()?;
        while let Some(conn) = idle.pop() {
            if now.saturating_duration_since(conn.idle_since) < POOL_IDLE_TIMEOUT && conn.is_quiet()
            {
                return Some(conn);
            }
        }
        None
    }

    /// Pools a connection whose response was read to its end; it has been idle since its
    /// response head arrived (`Conn::idle_since`).
    pub fn checkin_raw(&self, conn: upstream::Conn) {
        if self.cut.is_cancelled() {
            return;
        }
        if let Ok(mut idle) = self.raw[shard()].lock() {
            if idle.len() < POOL_MAX_IDLE {
                idle.push(conn);
            }
        }
    }

    /// Drops this worker's idle bodiless-path connections: one was found closed, and the target
    /// (restarted, or past its keep-alive timeout) has most likely closed the others too.
    pub fn clear_raw_pool(&self) {
        if let Ok(mut idle) = self.raw[shard()].lock() {
            idle.clear();
        }
    }

    pub async fn connect_raw(&self) -> Result<upstream::Conn, ConnectError> {
        Ok(upstream::Conn::new(self.open().await?))
    }

    async fn open(&self) -> Result<TcpStream, ConnectError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ConnectError::Timeout(self.addr))?
            .map_err(|e| ConnectError::Io(self.addr, e))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    pub async fn connect(&self) -> Result<SendRequest<ProxyBody>, ConnectError> {
        let stream = self.open().await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Handshake(self.addr, e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "target connection ended");
            }
        });
        Ok(sender)
    }
}

/// An in-flight request (or, after [`InFlight::into_upgraded`], an upgraded connection).
pub struct InFlight {
    backend: Arc<Backend>,
    upgraded: bool,
}

impl InFlight {
    /// The request became a tunnel: it stops counting as a request and counts as an upgraded connection.
    pub fn into_upgraded(mut self) -> InFlight {
        if !self.upgraded {
            self.backend.upgraded.fetch_add(1, Ordering::SeqCst);
            self.backend.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.upgraded = true;
            self.backend.notify();
        }
        self
    }

    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // Counted as finished before it leaves the in-flight count, so a drain that sees zero
        // in flight also sees it finished.
        self.backend.finished.add(1);
        if self.upgraded {
            self.backend.upgraded.fetch_sub(1, Ordering::SeqCst);
        } else {
            self.backend.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        self.backend.notify();
    }
}

/// Keeps a backend's count changes notified (see [`Backend::watch`]).
pub struct Watch(Arc<Backend>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::SeqCst);
    }
}
