//! Body types of the proxy, and a response body that keeps its request in flight until fully sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use crate::backend::InFlight;
pub use crate::upstream::BoxError;

pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A target's response body; the request stays in flight (and drain waits) until it ends.
pub struct Tracked {
    inner: Incoming,
    guard: Option<InFlight>,
    /// The connection the body arrives on, back to the pool once the body has been read to its end.
    connection: Option<SendRequest<ProxyBody>>,
    body_timeout: std::time::Duration,
    watch: Option<crate::stall::Watch>,
    /// An event stream: whatever ends it, it ends cleanly.
    stream: bool,
}

impl Tracked {
    pub fn new(
        inner: Incoming,
        guard: InFlight,
        connection: SendRequest<ProxyBody>,
        body_timeout: std::time::Duration,
        stream: bool,
    ) -> Self {
        Self {
            inner,
            guard: Some(guard),
            connection: Some(connection),
            body_timeout,
            watch: None,
            stream,
        }
    }

    /// The body broke off or must end: an event stream ends cleanly (its client reconnects),
    /// anything else with the error.
    fn broken(&mut self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Dropping the connection ends the exchange with the target.
        self.connection = None;
        let guard = self.guard.take();
        if self.stream {
            if let Some(guard) = guard {
                guard.backend().metrics.long_ended(true);
            }
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Err(error)))
    }
}

impl Tracked {
    /// The body was read to its end: the connection can carry another request.
    fn finish(&mut self) {
        if let (Some(guard), Some(connection)) = (self.guard.take(), self.connection.take()) {
            guard.backend().checkin(connection);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // An empty body (204, HEAD, content-length 0) may never be polled at all.
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() {
            let this = &mut *self;
            let period = this.body_timeout;
            let why = std::task::ready!(crate::stall::poll_stop(
                &mut this.watch,
                this.guard.as_ref(),
                period,
                this.stream,
                cx
            ));
            return this.broken(why.into());
        }
        if let Some(watch) = &mut self.watch {
            watch.progressed();
        }
        match &polled {
            // Servers stop polling once `is_end_stream` says the last frame went out, so finish
            // here rather than waiting for a `None` that may never be asked for.
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Err(_))) => {
                if let Poll::Ready(Some(Err(e))) = polled {
                    return self.broken(BoxError::from(e));
                }
            }
            _ => {}
        }
        polled.map(|f| f.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
