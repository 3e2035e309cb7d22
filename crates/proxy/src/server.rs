//! Listeners: accept connections (plain or TLS), serve HTTP/1.1 and HTTP/2 with upgrades, shut down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use crate::downstream::{self, Closing, Outcome, Prefixed};
use crate::forward::Proxy;
use crate::headers::Client;
use crate::worker::Padded;

/// A client must send its request headers within this; a slow-loris client is cut off.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on open connections finishing after shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Settings of one listener.
#[derive(Clone)]
pub struct ListenerOptions {
    pub tls: Option<TlsAcceptor>,
    pub header_read_timeout: Duration,
    /// Worker threads accepting on this listener; 0 means one per core.
    pub workers: usize,
    /// Bind worker `i` to the `i`-th CPU the process may run on.
    pub pin_workers: bool,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self {
            tls: None,
            header_read_timeout: HEADER_READ_TIMEOUT,
            workers: 0,
            pin_workers: false,
        }
    }
}

/// Serves `listener` until `shutdown` resolves, then lets open connections finish their requests.
///
/// Like nginx's worker processes, each worker thread runs its own single-threaded runtime and
/// accepts on the shared socket; a connection, its requests and the target connections they use
/// stay on one thread, so a request costs no cross-thread wake-ups. Whichever worker accepts a
/// connection, the one with the fewest open serves it ([`Workers`]).
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let workers = match options.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let listener = listener.into_std()?;
    let stop = tokio_util::sync::CancellationToken::new();
    // Dropping this future (its runtime shutting down, say) stops the workers too.
    let _stop_on_drop = stop.clone().drop_guard();
    let mut done = Vec::with_capacity(workers);
    let (spread, mut inboxes) = Workers::new(workers);
    for index in 0..workers {
        let listener = listener.try_clone()?;
        let (spread, inbox) = (spread.clone(), inboxes.remove(0));
        // A copy per worker: requests clone the `Arc` they run under, and a count shared by all
        // workers would bounce between their cores on every request.
        let proxy = Arc::new(Proxy::clone(&proxy));
        let (options, stop) = (options.clone(), stop.clone());
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(format!("cutover-worker-{index}"))
            .spawn(move || {
                crate::worker::set_worker(index);
                if options.pin_workers {
                    // Unbound, it still serves; only its latency suffers.
                    match crate::worker::pin(index) {
                        Ok(cpu) => tracing::debug!(worker = index, cpu, "worker bound to CPU"),
                        Err(e) => tracing::warn!(worker = index, error = %e, "cannot bind worker to a CPU"),
                    }
                }
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        runtime.block_on(async {
                            let listener = TcpListener::from_std(listener)?;
                            let me = Worker {
                                index,
                                spread,
                                inbox,
                            };
                            accept_loop(
                                listener,
                                me,
                                proxy,
                                options,
                                stop.clone().cancelled_owned(),
                            )
                            .await
                        })
                    });
                // A worker that fails takes the listener down with it.
                stop.cancel();
                let _ = tx.send(result);
            })?;
        done.push(rx);
    }
    drop(listener);
    tokio::select! {
        _ = shutdown => stop.cancel(),
        _ = stop.cancelled() => {}
    }
    let mut result = Ok(());
    for rx in done {
        match rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(_) => result = Err(std::io::Error::other("a worker thread panicked")),
        }
    }
    result
}

/// A connection handed from the worker that accepted it to the one that serves it.
type Handed = (std::net::TcpStream, SocketAddr, Open);

/// The workers of one listener and how many connections each has open.
///
/// Accepting on a shared socket spreads connections badly: a worker woken for a burst of
/// connects accepts them all before the others wake (measured: all 64 of a benchmark's
/// connections on one of two workers, two runs in three). So whichever worker accepts, the
/// connection goes to the worker with the fewest open, over that worker's inbox.
struct Workers {
    open: Vec<Padded<AtomicUsize>>,
    inboxes: Vec<mpsc::UnboundedSender<Handed>>,
}

impl Workers {
    fn new(n: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handed>>) {
        let (inboxes, receivers) = (0..n).map(|_| mpsc::unbounded_channel()).unzip();
        let workers = Self {
            open: (0..n).map(|_| Padded::default()).collect(),
            inboxes,
        };
        (Arc::new(workers), receivers)
    }

    /// Counts a new connection against the worker with the fewest open (`me` on a tie).
    fn assign(self: &Arc<Self>, me: usize) -> Open {
        let mut best = me;
        let mut least = self.open[me].0.load(Ordering::Relaxed);
        for (index, open) in self.open.iter().enumerate() {
            let open = open.0.load(Ordering::Relaxed);
            if open < least {
                (best, least) = (index, open);
            }
        }
        self.open[best].0.fetch_add(1, Ordering::Relaxed);
        Open {
            workers: self.clone(),
            index: best,
        }
    }
}

/// One open connection counted against a worker, until it drops.
struct Open {
    workers: Arc<Workers>,
    index: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.workers.open[self.index]
            .0
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker's side of [`Workers`].
struct Worker {
    index: usize,
    spread: Arc<Workers>,
    inbox: mpsc::UnboundedReceiver<Handed>,
}

impl Worker {
    /// The next connection this worker serves: one it accepted and keeps, or one handed to it.
    /// `None` after a failed accept (usually EMFILE), having backed off briefly rather than spin.
    async fn next(&mut self, listener: &TcpListener) -> Option<(TcpStream, SocketAddr, Open)> {
        tokio::select! {
            accepted = accept(listener) => {
                let (stream, peer) = accepted?;
                let open = self.spread.assign(self.index);
                if open.index == self.index {
                    return Some((stream, peer, open));
                }
                let to = open.index;
                let handed = match stream.into_std() {
                    Ok(std) => (std, peer, open),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "could not hand a connection over");
                        return None;
                    }
                };
                match self.spread.inboxes[to].send(handed) {
                    Ok(()) => None,
                    // That worker has stopped: serve it here.
                    Err(mpsc::error::SendError((std, peer, open))) => {
                        TcpStream::from_std(std).ok().map(|s| (s, peer, open))
                    }
                }
            }
            Some((std, peer, open)) = self.inbox.recv() => {
                TcpStream::from_std(std).ok().map(|s| (s, peer, open))
            }
        }
    }
}

/// HTTP/1.1 and HTTP/2 on one connection builder, with the slow-loris header read timeout.
fn http_builder(header_read_timeout: Duration) -> Arc<auto::Builder<TokioExecutor>> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        // One request-head limit on both paths: hyper answers 431 past it.
        .max_buf_size(crate::downstream::MAX_HEAD)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    Arc::new(builder)
}

/// The next connection, or `None` after a failed accept (usually EMFILE), having backed off
/// briefly rather than spin.
async fn accept(listener: &TcpListener) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(pair) => Some(pair),
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(20)).await;
            None
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    mut me: Worker,
    proxy: Arc<Proxy>,
    options: ListenerOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let builder = http_builder(options.header_read_timeout);
    let connections = TaskTracker::new();
    let closing = Closing::default();
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, open) = tokio::select! {
            next = me.next(&listener) => match next {
                Some(next) => next,
                None => continue,
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            _open: open,
            proxy: proxy.clone(),
            client: Arc::new(Client::new(peer.ip(), scheme)),
            builder: builder.clone(),
            header_read_timeout: options.header_read_timeout,
            closing: closing.clone(),
        };
        match options.tls.clone() {
            None => {
                connections.spawn(conn.serve(stream, true));
            }
            Some(acceptor) => {
                connections.spawn(async move {
                    let tls =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(e)) => {
                                return tracing::debug!(%peer, error = %e, "TLS handshake failed")
                            }
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        };
                    // HTTP/2 agreed in the handshake goes straight to hyper.
                    let h1 = tls.get_ref().1.alpn_protocol() != Some(b"h2");
                    conn.serve(tls, h1).await
                });
            }
        }
    }
    drop(listener);
    closing.close();
    connections.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the shutdown grace period");
    }
    Ok(())
}

/// One accepted client connection and what serving it needs.
struct Connection {
    _open: Open,
    proxy: Arc<Proxy>,
    client: Arc<Client>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    header_read_timeout: Duration,
    /// Cancelled when the listener shuts down: connections finish the request they are on.
    closing: Closing,
}

impl Connection {
    /// Serves HTTP/1.1 requests without a body on the proxy's own path ([`downstream`]) while
    /// `h1`, and the rest of the connection, from the first request that needs more, with hyper.
    async fn serve<IO>(self, mut io: IO, h1: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let peer = self.client.ip;
        let prefix = if h1 {
            let served = downstream::serve(
                &mut io,
                &self.proxy,
                &self.client,
                self.header_read_timeout,
                &self.closing,
            )
            .await;
            match served {
                Ok(Outcome::Closed) => return,
                Ok(Outcome::Handoff(prefix)) => prefix,
                Err(e) => {
                    return tracing::debug!(%peer, error = %e, "connection ended with an error")
                }
            }
        } else {
            Bytes::new()
        };
        let (proxy, client) = (self.proxy, self.client);
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(proxy.handle(req, &client).await) }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(Prefixed::new(prefix, io)), service);
        tokio::pin!(conn);
        let served = tokio::select! {
            served = conn.as_mut() => served,
            _ = self.closing.closed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = served {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// A plain listener that redirects every request to the same host and path over HTTPS.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let builder = http_builder(HEADER_READ_TIMEOUT);
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer): (_, SocketAddr) = tokio::select! {
            accepted = accept(&listener) => match accepted { Some(p) => p, None => continue },
            _ = &mut shutdown => return Ok(()),
        };
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| async move {
                    Ok::<_, Infallible>(crate::redirect::to_https(&req, https_port))
                },
            );
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_go_to_the_worker_with_the_fewest_open() {
        let (workers, _inboxes) = Workers::new(3);
        // Whoever accepts, the connections spread 0, 1, 2, then the acceptor again on a tie.
        let held: Vec<Open> = [0, 0, 2, 1].iter().map(|&me| workers.assign(me)).collect();
        let served: Vec<usize> = held.iter().map(|o| o.index).collect();
        assert_eq!(served, [0, 1, 2, 1]);
        // A connection that ends frees its place.
        drop(held);
        let open: Vec<usize> = workers
            .open
            .iter()
            .map(|o| o.0.load(Ordering::Relaxed))
            .collect();
        assert_eq!(open, [0, 0, 0]);
        let again = workers.assign(2);
        assert_eq!(again.index, 2);
    }

    /// The CPU each of this process's worker threads is bound to, if bound to one.
    #[cfg(target_os = "linux")]
    fn bound_workers() -> Vec<usize> {
        let mut cpus = Vec::new();
        for task in std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !comm.starts_with("cutover-worker") {
                continue;
            }
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let list = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap_or_default();
            if let Ok(cpu) = list.trim().parse() {
                cpus.push(cpu);
            }
        }
        cpus.sort_unstable();
        cpus
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_listener_with_pinned_workers_binds_each_to_a_cpu() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let registry = crate::Registry::new();
        let proxy = Arc::new(Proxy::new(registry, crate::headers::HeaderRules::default()));
        let options = ListenerOptions {
            workers: 2,
            pin_workers: true,
            ..ListenerOptions::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, proxy, options, async {
            let _ = stopped.await;
        }));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while bound_workers().len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "workers never bound"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let bound = bound_workers();
        if cpus >= 2 {
            assert!(
                bound.windows(2).any(|w| w[0] != w[1]),
                "two workers share one CPU: {bound:?}"
            );
        }
        let _ = stop.send(());
        served.await.expect("join").expect("serve");
    }
}
