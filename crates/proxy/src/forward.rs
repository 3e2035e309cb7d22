//! The request path: choose a target from the snapshot, forward, retry what is safe, answer errors itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, HOST};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

use crate::backend::{Backend, ConnectError, InFlight};
use crate::body::{self, BoxError, ProxyBody, Tracked};
use crate::headers::{self, Client, HeaderRules};
use crate::registry::Registry;
use crate::tries::{self, RetryBudget, Retrying, TryTimeout};
use crate::upgrade;
use crate::upstream::{self, ExchangeError, RawBody};

/// Upper bound on waiting for a target's response headers.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most attempts for one request, across targets and stale pooled connections.
const MAX_ATTEMPTS: usize = 5;

/// Why the proxy answered a request itself; the reason goes out in `x-cutover-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    NoHealthyTargets,
    ConnectFailed,
    TargetReset,
    TargetTimeout,
}

impl ProxyError {
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::NoHealthyTargets => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectFailed | ProxyError::TargetReset => StatusCode::BAD_GATEWAY,
            ProxyError::TargetTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            ProxyError::NoHealthyTargets => "no-healthy-targets",
            ProxyError::ConnectFailed => "connect-failed",
            ProxyError::TargetReset => "target-reset",
            ProxyError::TargetTimeout => "target-timeout",
        }
    }

    /// The short body of the proxy's own answer.
    pub fn text(self) -> String {
        let status = self.status();
        format!(
            "{} {} ({})\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.reason()
        )
    }

    pub fn response(self) -> Response<ProxyBody> {
        let status = self.status();
        let mut resp = Response::new(body::full(self.text()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert("x-cutover-error", HeaderValue::from_static(self.reason()));
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

/// A request the proxy refuses before any target sees it: what a target could read
/// differently from the proxy (request smuggling) or what would pass the proxy by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Two `Host` fields: which one a target reads is anyone's guess (RFC 9112 §3.2).
    DuplicateHost,
    /// `CONNECT` would turn the proxy into a tunnel to anywhere.
    Connect,
    /// A GET or HEAD with a chunked body: such a body has no meaning (RFC 9110 §9.3.1) and a
    /// target may read it as the next request.
    BodyWithoutMeaning,
    /// Both Content-Length and Transfer-Encoding: the classic smuggling pair (RFC 9112 §6.3
    /// allows rejecting it, as nginx does).
    TwoFramings,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::DuplicateHost | Refusal::BodyWithoutMeaning | Refusal::TwoFramings => {
                StatusCode::BAD_REQUEST
            }
            Refusal::Connect => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            Refusal::DuplicateHost => "400 Bad Request: more than one Host field\n",
            Refusal::Connect => "405 Method Not Allowed: CONNECT is not proxied\n",
            Refusal::BodyWithoutMeaning => {
                "400 Bad Request: a GET or HEAD request must not carry a chunked body\n"
            }
            Refusal::TwoFramings => "400 Bad Request: both Content-Length and Transfer-Encoding\n",
        }
    }

    pub fn response(self) -> Response<ProxyBody> {
        let mut resp = Response::new(body::full(self.text()));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self == Refusal::Connect {
            h.insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        // The connection may be out of step with the client after such a request.
        h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

/// What in a request head the proxy refuses outright.
fn screen<B>(req: &Request<B>) -> Option<Refusal> {
    if req.method() == Method::CONNECT {
        return Some(Refusal::Connect);
    }
    if req.headers().get_all(HOST).iter().count() > 1 {
        return Some(Refusal::DuplicateHost);
    }
    if matches!(*req.method(), Method::GET | Method::HEAD)
        && req.headers().contains_key(http::header::TRANSFER_ENCODING)
    {
        return Some(Refusal::BodyWithoutMeaning);
    }
    None
}

/// The proxy's shared state for one listener.
#[derive(Clone)]
pub struct Proxy {
    pub registry: Arc<Registry>,
    pub rules: HeaderRules,
    pub response_timeout: Duration,
    /// Upper bound on waiting for the next piece of a response body.
    pub body_timeout: Duration,
    /// Route only to the group this names, at any weight (a preview listener); `None`: by weight.
    pub only: Option<GroupFilter>,
    /// How long one try of an idempotent bodiless request waits before going elsewhere.
    pub try_timeout: TryTimeout,
    /// Bounds the retries after try timeouts in flight at once.
    pub budget: Arc<RetryBudget>,
}

/// Names the one group a preview listener reaches; asked per request, so it can follow a
/// controller whose groups trade places.
pub type GroupFilter = Arc<dyn Fn() -> &'static str + Send + Sync>;

impl Proxy {
    pub fn new(registry: Arc<Registry>, rules: HeaderRules) -> Self {
        Self {
            registry,
            rules,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            body_timeout: crate::stall::DEFAULT_BODY_TIMEOUT,
            only: None,
            try_timeout: TryTimeout::Auto,
            budget: RetryBudget::new(cutover_spec::validate::defaults::RETRY_BUDGET),
        }
    }

    /// Forwards one client request; never fails: errors become 502/503/504 with `x-cutover-error`.
    pub async fn handle(&self, mut req: Request<Incoming>, client: &Client) -> Response<ProxyBody> {
        if let Some(refusal) = screen(&req) {
            return refusal.response();
        }
        // Only the upgrades the stack file allows; any other `Upgrade` (h2c) is dropped and the
        // request goes on as an ordinary one.
        let upgrading = req.version() == Version::HTTP_11
            && headers::is_upgrade(req.headers())
            && headers::upgrade_allowed(req.headers(), &self.rules.upgrades);
        let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
        let websocket = upgrading && headers::is_websocket(req.headers());
        let (mut parts, incoming) = req.into_parts();
        // An absolute-form target's authority wins over Host (RFC 9112 §3.2.2).
        let host = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .or_else(|| parts.headers.get(HOST).cloned());
        headers::strip_hop_by_hop(&mut parts.headers, upgrading);
        headers::add_forwarded(&mut parts.headers, client, host.as_ref());
        if let Some(host) = host {
            parts.headers.insert(HOST, host);
        }
        headers::apply(&mut parts.headers, &self.rules.request);
        // Targets speak HTTP/1.1 and want origin-form, whatever the client spoke.
        parts.version = Version::HTTP_11;
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            parts.uri = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
        }
        if is_idempotent(&parts.method) && incoming.is_end_stream() && !upgrading {
            return self.forward_bodiless(parts).await;
        }
        let mut req = Request::from_parts(parts, incoming.map_err(BoxError::from).boxed());
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut client_upgrade = client_upgrade;

        for _ in 0..MAX_ATTEMPTS {
            let Some(backend) = self.pick(&tried, false) else {
                break;
            };
            let guard = backend.begin();
            let backend = guard.backend();
            backend.metrics.request();
            let started = Instant::now();
            let mut sender = match backend.checkout().await {
                Some(sender) => sender,
                None => match backend.connect().await {
                    Ok(sender) => sender,
                    Err(e) => {
                        self.connect_failed(backend, &e);
                        tried.push(backend.clone());
                        continue;
                    }
                },
            };
            let sent =
                tokio::time::timeout(self.response_timeout, sender.try_send_request(req)).await;
            let mut resp = match sent {
                Ok(Ok(resp)) => resp,
                Ok(Err(mut err)) => {
                    if let Some(unsent) = err.take_message() {
                        // The pooled connection closed before the request was written: send it again.
                        req = unsent;
                        continue;
                    }
                    // Written, then the exchange broke: the request has a body or is not
                    // idempotent, so it is not sent again.
                    backend.metrics.proxy_error(started.elapsed());
                    self.registry.passive(backend, false);
                    tracing::debug!(target = %backend.key, error = %err.error(), "target broke the exchange");
                    return ProxyError::TargetReset.response();
                }
                Err(_) => {
                    backend.metrics.proxy_error(started.elapsed());
                    self.registry.passive(backend, false);
                    return ProxyError::TargetTimeout.response();
                }
            };
            let status = resp.status();
            if status == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_none() {
                // A switch nobody asked for: passing it on would leave the client's
                // connection in a protocol neither side agreed on.
                backend.metrics.proxy_error(started.elapsed());
                self.registry.passive(backend, false);
                tracing::debug!(target = %backend.key, "target switched protocols unasked");
                return ProxyError::TargetReset.response();
            }
            let elapsed = started.elapsed();
            backend.metrics.response(status.as_u16(), elapsed);
            backend.latency.observe(elapsed, started + elapsed);
            self.registry.passive(backend, true);

            if status == StatusCode::SWITCHING_PROTOCOLS {
                if let Some(client_side) = client_upgrade.take() {
                    let target_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(upgrade::tunnel(
                        client_side,
                        target_side,
                        guard.into_upgraded(),
                        websocket,
                    ));
                    let (mut parts, _) = resp.into_parts();
                    headers::strip_hop_by_hop(&mut parts.headers, true);
                    parts.headers.remove(headers::PROXY_ERROR_FIELD);
                    return Response::from_parts(parts, body::empty());
                }
            }
            let (mut parts, incoming) = resp.into_parts();
            if parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
                // Chunks framed the body; a length beside them is false (RFC 9112 §6.3) and
                // would make the client's framing disagree with the body sent.
                parts.headers.remove(http::header::CONTENT_LENGTH);
            }
            headers::strip_hop_by_hop(&mut parts.headers, false);
            parts.headers.remove(headers::PROXY_ERROR_FIELD);
            headers::apply(&mut parts.headers, &self.rules.response);
            let stream = parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let body = Tracked::new(incoming, guard, sender, self.body_timeout, stream);
            return Response::from_parts(parts, body.boxed());
        }
        self.unavailable(&tried).response()
    }

    /// Forwards an idempotent request without a body that hyper read on the proxy's own
    /// target-side path ([`crate::upstream`]).
    async fn forward_bodiless(&self, parts: http::request::Parts) -> Response<ProxyBody> {
        let head = upstream::request_head(&parts);
        let (conn, answer, guard) = match self.exchange_bodiless(&head, &parts.method).await {
            Ok(exchanged) => exchanged,
            Err(e) => return e.response(),
        };
        let headers = match answer.headers() {
            Ok(headers) => headers,
            Err(e) => {
                tracing::debug!(target = %guard.backend().key, error = %e, "target's response head is malformed");
                return ProxyError::TargetReset.response();
            }
        };
        let mut resp = Response::new(RawBody::new(conn, &answer, guard, self.body_timeout).boxed());
        *resp.status_mut() = answer.status;
        *resp.headers_mut() = headers;
        headers::strip_hop_by_hop(resp.headers_mut(), false);
        resp.headers_mut().remove(headers::PROXY_ERROR_FIELD);
        headers::apply(resp.headers_mut(), &self.rules.response);
        resp
    }

    /// Sends an idempotent request without a body (its head as it goes to the target) and reads
    /// the response head, on a pooled connection of the proxy's own. Whatever breaks before a
    /// response head arrives costs the client nothing: the request is sent again, to another
    /// target when there is one. So does a try that waits past its try timeout, while the retry
    /// budget has room; a target that answered nothing at all during that try is hung and is
    /// ejected at once. The request counts as in flight until the guard drops, after its body
    /// has been read.
    pub(crate) async fn exchange_bodiless(
        &self,
        head: &[u8],
        method: &Method,
    ) -> Result<(upstream::Conn, upstream::Head, InFlight), ProxyError> {
        let mut tried: Vec<Arc<Backend>> = Vec::new();
        let mut replayed = false;
        // Picked when a try timed out, so a retry is only started where one can go.
        let mut next: Option<Arc<Backend>> = None;
        // Held until a response head arrives: retries after a try timeout count against the
        // budget while they wait.
        let mut retrying: Option<Retrying> = None;
        let first = Instant::now();
        let deadline = tokio::time::Instant::from_std(first) + self.response_timeout;
        for attempt in 1..=MAX_ATTEMPTS {
            let Some(backend) = next.take().or_else(|| self.pick(&tried, replayed)) else {
                break;
            };
            let guard = backend.begin();
            let backend = guard.backend();
            backend.metrics.request();
            let started = Instant::now();
            let (mut conn, pooled) = match backend.checkout_raw(started) {
                Some(conn) => (conn, true),
                None => match backend.connect_raw().await {
                    Ok(conn) => (conn, false),
                    Err(e) => {
                        self.connect_failed(backend, &e);
                        tried.push(backend.clone());
                        continue;
                    }
                },
            };
            let exchanged = {
                let exchange = upstream::exchange(&mut conn, head, method);
                tokio::pin!(exchange);
                let try_deadline = tries::limit(self.try_timeout, &backend.pace)
                    .map(|limit| tokio::time::Instant::from_std(started) + limit)
                    .filter(|at| *at < deadline);
                let mut exchanged = None;
                if let Some(at) = try_deadline {
                    match tokio::time::timeout_at(at, &mut exchange).await {
                        Ok(answer) => exchanged = Some(answer),
                        Err(_) => {
                            // Hung, or just slow? A target with requests waiting on it that
                            // answered nothing at all during the whole try is hung: ejected,
                            // and the try is dead, so moving it adds no load and needs no
                            // budget. A slow request on a target that answers others is retried
                            // once at most, within the budget.
                            let hung = backend.in_flight() >= tries::HUNG_MIN_IN_FLIGHT
                                && !backend.pace.answered_since(started);
                            if hung {
                                self.registry.stalled(backend);
                            }
                            tried.push(backend.clone());
                            let other = (attempt < MAX_ATTEMPTS)
                                .then(|| self.pick(&tried, false))
                                .flatten();
                            if let Some(other) = other {
                                let admitted = match (hung, &retrying) {
                                    (true, _) => Some(None),
                                    (false, None) => self.budget.admit(self.in_flight()).map(Some),
                                    (false, Some(_)) => None,
                                };
                                if let Some(admitted) = admitted {
                                    tracing::debug!(target = %backend.key, other = %other.key, hung, "try timed out; sending elsewhere");
                                    backend.metrics.gave_up();
                                    // At least this slow: its cost rises at once.
                                    let waited = started.elapsed();
                                    backend.latency.observe(waited, started + waited);
                                    if admitted.is_some() {
                                        retrying = admitted;
                                    }
                                    next = Some(other);
                                    continue;
                                }
                            }
                            // Nowhere else to go, or no budget: this try waits as long as the
                            // request may.
                            tried.pop();
                        }
                    }
                }
                match exchanged {
                    Some(answer) => Ok(answer),
                    None => tokio::time::timeout_at(deadline, &mut exchange).await,
                }
            };
            let answer = match exchanged {
                Ok(Ok(answer)) => answer,
                Ok(Err(ExchangeError::Closed(why))) if pooled => {
                    // Closed while idle in the pool, most likely with the rest of this
                    // worker's idle connections to it: not a sign of trouble with the target.
                    tracing::debug!(target = %backend.key, %why, "pooled connection was closed; sending again");
                    backend.clear_raw_pool();
                    continue;
                }
                Ok(Err(ExchangeError::Closed(why) | ExchangeError::BrokeOff(why))) if !replayed => {
                    // A fresh connection broke before the answer, or any broke in the middle
                    // of a small answer: the target closed or died.
                    tracing::debug!(target = %backend.key, %why, "target broke off before answering; sending again");
                    self.registry.passive(backend, false);
                    replayed = true;
                    tried.push(backend.clone());
                    continue;
                }
                Ok(Err(e)) => {
                    backend.metrics.proxy_error(started.elapsed());
                    self.registry.passive(backend, false);
                    tracing::debug!(target = %backend.key, error = %e, "target broke the exchange");
                    return Err(ProxyError::TargetReset);
                }
                Err(_) => {
                    backend.metrics.proxy_error(started.elapsed());
                    self.registry.passive(backend, false);
                    return Err(ProxyError::TargetTimeout);
                }
            };
            drop(retrying);
            let elapsed = started.elapsed();
            backend.metrics.response(answer.status.as_u16(), elapsed);
            backend.latency.observe(elapsed, started + elapsed);
            self.registry.passive(backend, true);
            // Idle from the head on: a long body only makes the connection look older in the
            // pool, so it is dropped sooner, never later. One clock read fewer per request.
            conn.idle_since = started + elapsed;
            return Ok((conn, answer, guard));
        }
        Err(self.unavailable(&tried))
    }

    /// Requests in flight to every target this listener can reach: what the retry budget is a
    /// share of. Read only when a try times out.
    fn in_flight(&self) -> usize {
        self.registry
            .table()
            .groups
            .iter()
            .flat_map(|g| g.targets.iter())
            .map(|b| b.in_flight())
            .sum()
    }

    /// The next target to try: by weight (or the preview group), never one already tried. After
    /// a replay, the target that broke is the last resort, not excluded: with a single target, a
    /// keep-alive race must still be retried there.
    fn pick(&self, tried: &[Arc<Backend>], replayed: bool) -> Option<Arc<Backend>> {
        let table = self.registry.table();
        let pick = |tried: &[Arc<Backend>]| match &self.only {
            Some(only) => table.pick_in(only(), tried),
            None => table.pick(tried),
        };
        pick(tried)
            .or_else(|| replayed.then(|| pick(&[])).flatten())
            .map(|(_, b)| b)
    }

    /// Nothing reached the target: safe to try another whatever the method.
    fn connect_failed(&self, backend: &Arc<Backend>, error: &ConnectError) {
        tracing::debug!(target = %backend.key, %error, "connect failed; trying another target");
        backend.metrics.connect_error();
        self.registry.passive(backend, false);
    }

    /// Why no attempt reached a target: none to try (503), or none answered (502).
    fn unavailable(&self, tried: &[Arc<Backend>]) -> ProxyError {
        let only = self.only.as_ref().map(|only| only());
        if tried.is_empty()
            && self.registry.table().groups.iter().all(|g| match only {
                Some(name) => &*g.name != name || g.targets.is_empty(),
                None => g.targets.is_empty() || g.weight == 0,
            })
        {
            ProxyError::NoHealthyTargets
        } else {
            ProxyError::ConnectFailed
        }
    }
}

pub(crate) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}
