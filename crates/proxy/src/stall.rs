//! Bounds on a response body in progress: a target that stops sending mid-body is given up
//! after the body timeout, and a drain deadline cuts the body for real. Without them a target
//! could hold a client, a connection and an in-flight count (so a drain, and a shutdown) for
//! as long as it liked.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use std::sync::Arc;

use crate::backend::{Backend, InFlight};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// Upper bound on waiting for the next piece of a response body (nginx's
/// `proxy_read_timeout` has the same default).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a body was given up.
pub(crate) fn stalled(period: Duration) -> String {
    format!(
        "the target sent no body data for {}",
        humantime::format_duration(period)
    )
}

pub(crate) const CUT: &str = "the target's drain deadline passed";
pub(crate) const WOUND_DOWN: &str = "the target's drain closes its event streams";

type Wind = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Watches one body; made only once the body first has to wait, so that bodies that arrive
/// whole cost no timer.
pub(crate) struct Watch {
    period: Duration,
    idle: Pin<Box<Sleep>>,
    cut: Pin<Box<WaitForCancellationFutureOwned>>,
    /// For an event stream: its moment to end cleanly once a drain winds streams down.
    wind: Option<Wind>,
}

impl Watch {
    pub fn new(period: Duration, cut: &CancellationToken) -> Self {
        Self {
            period,
            idle: Box::pin(tokio::time::sleep(period)),
            cut: Box::pin(cut.clone().cancelled_owned()),
            wind: None,
        }
    }

    /// For an event stream from `backend`: it also ends when the drain winds it down.
    pub fn for_stream(period: Duration, backend: &Arc<Backend>) -> Self {
        let mut watch = Self::new(period, &backend.cut);
        watch.wind = Some(Box::pin(backend.clone().wound_down()));
        watch
    }

    /// Data arrived: the idle period starts again.
    pub fn progressed(&mut self) {
        let next = Instant::now() + self.period;
        self.idle.as_mut().reset(next);
    }

    /// While the body waits: why it must end now, if it must.
    pub fn poll_stop(&mut self, cx: &mut Context<'_>) -> Poll<String> {
        if self.cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(CUT.to_owned());
        }
        if let Some(wind) = &mut self.wind {
            if wind.as_mut().poll(cx).is_ready() {
                return Poll::Ready(WOUND_DOWN.to_owned());
            }
        }
        if self.idle.as_mut().poll(cx).is_ready() {
            return Poll::Ready(stalled(self.period));
        }
        Poll::Pending
    }
}

/// For a body that has to wait: makes its watch on first use, and says why the body must end
/// now, if it must (charging the target with it, unless it is an event stream, which then
/// ends cleanly). Pending too when nothing is in flight any more, so nothing is left to watch.
pub(crate) fn poll_stop(
    watch: &mut Option<Watch>,
    guard: Option<&InFlight>,
    period: Duration,
    stream: bool,
    cx: &mut Context<'_>,
) -> Poll<String> {
    let watch = match (watch, guard) {
        (Some(watch), _) => watch,
        (watch, Some(guard)) if stream => watch.insert(Watch::for_stream(period, guard.backend())),
        (watch, Some(guard)) => watch.insert(Watch::new(period, &guard.backend().cut)),
        (_, None) => return Poll::Pending,
    };
    let why = std::task::ready!(watch.poll_stop(cx));
    if let (Some(guard), false) = (guard, stream) {
        guard.backend().metrics.broken_body();
    }
    Poll::Ready(why)
}
