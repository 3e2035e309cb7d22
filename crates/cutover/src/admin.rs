//! The admin API: status, Prometheus metrics, and adding and draining targets, behind a bearer token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use crate::controller::{Controller, DeployError};
use crate::plane::Plane;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

pub struct AdminState {
    pub plane: Plane,
    /// Present when cutover runs the instances itself (not static targets).
    pub controller: Option<Arc<Controller>>,
    /// Cancelled by `POST /stop`.
    pub stop: tokio_util::sync::CancellationToken,
    pub token: String,
    /// The group that targets added through the API join.
    pub default_group: String,
    pub drain_timeout: Duration,
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/targets", post(add_target))
        .route("/targets/{target}", delete(remove_target))
        .route("/deploy", post(deploy))
        .route("/deployments/{id}", get(deployment))
        .route("/history", get(history))
        .route("/rollback", post(rollback))
        .route("/promote", post(promote))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/abort", post(abort))
        .route("/scale", post(scale))
        .route("/scaling", get(scaling))
        .route("/stop", post(stop))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

async fn authorize(State(state): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(state.token.as_bytes())) {
        return next.run(req).await;
    }
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "a bearer token from the data dir's admin.token is required",
    );
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

async fn status(State(state): State<Arc<AdminState>>) -> Response {
    let mut body = json!({ "groups": state.plane.status() });
    if let Some(pid) = state.plane.process_id() {
        body["dataplane"] = json!({ "pid": pid });
    }
    if let Some(c) = &state.controller {
        body["release"] = json!(c.current());
        body["desired"] = json!(c.desired());
        body["instances"] = json!(c.instances());
        body["deployment"] = json!(c.deployment(None));
        body["scaling"] = json!(c.last_scaling());
        body["preview"] = json!(c.preview());
        body["restarts"] = c.restarts();
        body["state_writes"] = c.writes();
        if let Some((version, left)) = c.warm() {
            body["warm"] = json!({ "version": version, "for_s": left.as_secs() });
        }
    }
    Json(body).into_response()
}

fn managed(state: &AdminState) -> Result<&Arc<Controller>, Box<Response>> {
    state.controller.as_ref().ok_or_else(|| {
        Box::new(error(
            StatusCode::CONFLICT,
            "this stack fronts static targets; there is nothing to deploy",
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    version: String,
    strategy: Option<String>,
    command: Option<String>,
}

type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// The controller and the parsed body of a request that starts a deployment, or the error answer.
fn deployment_request<'a, T>(
    state: &'a AdminState,
    body: JsonBody<T>,
    shape: &str,
) -> Result<(&'a Arc<Controller>, T), Box<Response>> {
    let c = managed(state)?;
    let Json(req) = body.map_err(|e| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("body must be {shape}: {e}"),
        ))
    })?;
    Ok((c, req))
}

/// 202 with the deployment that started, 409 if one is under way, 400 for anything else.
fn started(result: Result<crate::controller::Deployment, DeployError>) -> Response {
    match result {
        Ok(d) => (StatusCode::ACCEPTED, Json(json!(d))).into_response(),
        Err(e @ DeployError::InProgress(..)) => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn deploy(State(state): State<Arc<AdminState>>, body: JsonBody<DeployRequest>) -> Response {
    let (c, req) = match deployment_request(&state, body, "{\"version\": \"v2\"}") {
        Ok(ok) => ok,
        Err(resp) => return *resp,
    };
    started(c.start_deploy(&req.version, req.command, req.strategy.as_deref()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    to: Option<String>,
}

async fn rollback(
    State(state): State<Arc<AdminState>>,
    body: JsonBody<RollbackRequest>,
) -> Response {
    let (c, req) = match deployment_request(&state, body, "{} or {\"to\": \"v1\"}") {
        Ok(ok) => ok,
        Err(resp) => return *resp,
    };
    started(c.rollback(req.to.as_deref()).await)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PromoteRequest {
    #[serde(default)]
    full: bool,
}

/// 200 with the deployment as it now stands, 409 if there is none to steer.
fn steered(result: Result<crate::controller::Deployment, DeployError>) -> Response {
    match result {
        Ok(d) => Json(json!(d)).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn promote(State(state): State<Arc<AdminState>>, body: JsonBody<PromoteRequest>) -> Response {
    match deployment_request(&state, body, "{} or {\"full\": true}") {
        Ok((c, req)) => steered(c.promote(req.full)),
        Err(resp) => *resp,
    }
}

async fn pause(State(state): State<Arc<AdminState>>) -> Response {
    match managed(&state) {
        Ok(c) => steered(c.pause()),
        Err(resp) => *resp,
    }
}

async fn resume(State(state): State<Arc<AdminState>>) -> Response {
    match managed(&state) {
        Ok(c) => steered(c.resume()),
        Err(resp) => *resp,
    }
}

async fn abort(State(state): State<Arc<AdminState>>) -> Response {
    match managed(&state) {
        Ok(c) => steered(c.abort()),
        Err(resp) => *resp,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleRequest {
    desired: u32,
}

async fn scale(State(state): State<Arc<AdminState>>, body: JsonBody<ScaleRequest>) -> Response {
    let (c, req) = match deployment_request(&state, body, "{\"desired\": 3}") {
        Ok(ok) => ok,
        Err(resp) => return *resp,
    };
    match c.scale(req.desired) {
        Ok(from) => Json(json!({ "from": from, "desired": req.desired })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn scaling(State(state): State<Arc<AdminState>>) -> Response {
    match managed(&state) {
        Ok(c) => Json(json!({ "scaling": c.scaling_history() })).into_response(),
        Err(resp) => *resp,
    }
}

async fn deployment(State(state): State<Arc<AdminState>>, Path(id): Path<u64>) -> Response {
    match managed(&state) {
        Ok(c) => match c.deployment(Some(id)) {
            Some(d) => Json(json!(d)).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("no deployment {id}")),
        },
        Err(resp) => *resp,
    }
}

async fn history(State(state): State<Arc<AdminState>>) -> Response {
    match managed(&state) {
        Ok(c) => Json(json!({ "deployments": c.history() })).into_response(),
        Err(resp) => *resp,
    }
}

async fn stop(State(state): State<Arc<AdminState>>) -> Response {
    state.stop.cancel();
    (StatusCode::ACCEPTED, Json(json!({ "stopping": true }))).into_response()
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    match state.plane.metrics_text().await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddTarget {
    target: String,
    group: Option<String>,
}

async fn add_target(
    State(state): State<Arc<AdminState>>,
    body: Result<Json<AddTarget>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(add) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"target\": \"host:port\"}}: {e}"),
            )
        }
    };
    let group = add.group.unwrap_or_else(|| state.default_group.clone());
    if !add
        .target
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "`{}` is not a target such as \"127.0.0.1:9001\"",
                add.target
            ),
        );
    }
    match state.plane.register(&group, &add.target).await {
        Ok(()) => (
            StatusCode::CREATED,
            Json(json!({ "group": group, "target": add.target })),
        )
            .into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

#[derive(Deserialize)]
struct RemoveQuery {
    group: Option<String>,
    timeout: Option<String>,
}

/// Deregisters and answers once the drain is confirmed, with how many requests completed or were cut.
async fn remove_target(
    State(state): State<Arc<AdminState>>,
    Path(target): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> Response {
    let group = q.group.unwrap_or_else(|| state.default_group.clone());
    let timeout = match q.timeout.as_deref().map(cutover_spec::duration::parse) {
        None => state.drain_timeout,
        Some(Ok(t)) => t,
        Some(Err(e)) => return error(StatusCode::BAD_REQUEST, format!("timeout: {e}")),
    };
    match state.plane.deregister(&group, &target, timeout).await {
        Some(handle) => {
            Json(json!({ "group": group, "drain": handle.wait().await })).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("no target `{target}` in group `{group}`"),
        ),
    }
}
