//! Active health checks: one task per target that probes it and reports each result to the observer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cutover_spec::Matcher;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::report::Report;
use crate::target::{CheckResult, Event, Thresholds};

/// How a group checks its targets.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub thresholds: Thresholds,
    pub matcher: Matcher,
    /// When no target is healthy, route to all registered targets instead of none.
    pub fail_open: bool,
}

impl From<&cutover_spec::HealthCheck> for HealthConfig {
    fn from(h: &cutover_spec::HealthCheck) -> Self {
        Self {
            path: h.path.clone(),
            interval: h.interval,
            timeout: h.timeout,
            thresholds: Thresholds {
                healthy: h.healthy_threshold,
                unhealthy: h.unhealthy_threshold,
            },
            matcher: h.matcher.clone(),
            fail_open: h.fail_open,
        }
    }
}

/// Checks `backend` every interval until `stop`, sending each result to `reports`.
pub fn spawn(
    group: String,
    backend: Arc<Backend>,
    config: Arc<HealthConfig>,
    reports: mpsc::UnboundedSender<Report>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = check(&backend, &config) => r,
            };
            let report = Report {
                group: group.clone(),
                backend: backend.clone(),
                event: Event::Check(result),
                why: "health check",
            };
            if reports.send(report).is_err() {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(config.interval) => {}
            }
        }
    });
}

/// One check: a fresh connection, `GET path`, the matcher applied to the status.
pub async fn check(backend: &Backend, config: &HealthConfig) -> CheckResult {
    match tokio::time::timeout(config.timeout, request(backend, &config.path)).await {
        Err(_) => CheckResult::Timeout,
        Ok(Err(())) => CheckResult::Failed,
        Ok(Ok(status)) if config.matcher.matches(status) => CheckResult::Pass,
        Ok(Ok(status)) => CheckResult::Mismatch(status),
    }
}

async fn request(backend: &Backend, path: &str) -> Result<u16, ()> {
    let stream = TcpStream::connect(backend.addr).await.map_err(|_| ())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| ())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(path)
        .header(http::header::HOST, backend.key.as_str())
        .header(http::header::USER_AGENT, "cutover-health-check")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| ())?;
    let resp = sender.send_request(req).await.map_err(|_| ())?;
    let status = resp.status().as_u16();
    // Read the body so a target that breaks mid-answer fails the check.
    resp.into_body().collect().await.map_err(|_| ())?;
    Ok(status)
}
