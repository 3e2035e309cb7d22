//! Draining a deregistered target: the confirmation the controller waits for before stopping an instance.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::Backend;

/// How a drain ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainReport {
    pub target: String,
    /// Requests and upgraded connections that finished while draining.
    pub completed: u64,
    /// Requests and upgraded connections still open at the deadline.
    pub cut: usize,
    /// Long-lived connections (WebSockets, event streams) the drain closed cleanly, each at
    /// its moment within the spread before the deadline.
    #[serde(default)]
    pub closed: u64,
    pub took_ms: u64,
}

impl DrainReport {
    pub fn clean(&self) -> bool {
        self.cut == 0
    }
}

/// Resolves when the target has nothing in flight, or at the drain deadline.
#[derive(Debug, Clone)]
pub struct DrainHandle {
    rx: watch::Receiver<Option<DrainReport>>,
}

impl DrainHandle {
    pub(crate) fn new(rx: watch::Receiver<Option<DrainReport>>) -> Self {
        Self { rx }
    }

    pub async fn wait(mut self) -> DrainReport {
        loop {
            if let Some(report) = self.rx.borrow_and_update().clone() {
                return report;
            }
            if self.rx.changed().await.is_err() {
                let last = self.rx.borrow().clone();
                return last.unwrap_or(DrainReport {
                    target: String::new(),
                    completed: 0,
                    cut: 0,
                    closed: 0,
                    took_ms: 0,
                });
            }
        }
    }
}

/// Upper bound on waiting for cut tunnels to finish their close frames.
const CUT_GRACE: Duration = Duration::from_secs(1);
/// Longest spread of the clean closes of long-lived connections before the deadline.
const MAX_SPREAD: Duration = Duration::from_secs(5);

/// How long before the deadline long-lived connections start to be closed, spread out: half
/// the drain at most, so they have the first half to leave by themselves.
pub fn spread(timeout: Duration) -> Duration {
    (timeout / 2).min(MAX_SPREAD)
}

/// Waits for in-flight requests and upgraded connections to reach zero; at `deadline`, cuts what remains.
pub async fn drain(backend: Arc<Backend>, deadline: Instant) -> DrainReport {
    let start = Instant::now();
    let _watch = backend.watch();
    let finished_before = backend.finished();
    let closed_before = backend.metrics.long_closed();
    let spread = spread(deadline.saturating_duration_since(start));
    let wind_at = deadline.checked_sub(spread).unwrap_or(deadline);
    let mut wound = false;
    let mut cut = 0;
    let mut finished_at_cut = None;
    loop {
        let changed = backend.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if backend.in_flight() == 0 && backend.upgraded() == 0 {
            break;
        }
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep_until(wind_at), if !wound => {
                wound = true;
                backend.wind_down(spread);
            }
            _ = tokio::time::sleep_until(deadline) => {
                cut = backend.in_flight() + backend.upgraded();
                finished_at_cut = Some(backend.finished());
                backend.cut.cancel();
                let grace = Instant::now() + CUT_GRACE;
                while backend.upgraded() > 0 && Instant::now() < grace {
                    let changed = backend.changed();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if backend.upgraded() == 0 {
                        break;
                    }
                    let _ = tokio::time::timeout_at(grace, changed).await;
                }
                break;
            }
        }
    }
    backend.clear_pool();
    let completed = finished_at_cut
        .unwrap_or_else(|| backend.finished())
        .saturating_sub(finished_before);
    DrainReport {
        target: backend.key.clone(),
        completed,
        cut,
        closed: backend.metrics.long_closed().saturating_sub(closed_before),
        took_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}
