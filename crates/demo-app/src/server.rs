//! Serving on a given listener until a shutdown future resolves, then draining in-flight requests.

use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tokio::net::TcpListener;

use crate::app::router;
use crate::state::AppState;

/// How a graceful shutdown ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Every in-flight request finished.
    Drained,
    /// The timeout passed with this many requests still running.
    TimedOut { cut: usize },
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish for at most `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> std::io::Result<Shutdown> {
    let closing = state.closing.clone();
    let sockets = state.clone();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let counter = in_flight.clone();
    let app = router(state).layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let counter = counter.clone();
            async move { count(counter, req, next).await }
        },
    ));
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        // WebSockets and event streams end cleanly instead of holding the shutdown up.
        closing.send_replace(true);
        let _ = stopping_tx.send(());
    });
    let server = server.into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => { result?; return Ok(Shutdown::Drained); }
        signalled = stopping_rx => { if signalled.is_err() { return Ok(Shutdown::Drained); } }
    }
    let drained = async {
        server.await?;
        // Upgraded connections are not the server's to wait for: their close frames are.
        while sockets.sockets.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(drain_timeout, drained).await {
        Ok(result) => result.map(|()| Shutdown::Drained),
        Err(_) => Ok(Shutdown::TimedOut {
            cut: in_flight.load(Ordering::SeqCst),
        }),
    }
}

async fn count(counter: Arc<AtomicUsize>, req: Request, next: Next) -> Response {
    struct Guard(Arc<AtomicUsize>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    counter.fetch_add(1, Ordering::SeqCst);
    let _guard = Guard(counter);
    next.run(req).await
}
