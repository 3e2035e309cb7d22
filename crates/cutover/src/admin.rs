//! The admin API: status, Prometheus metrics, and adding and draining targets, behind a bearer token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use cutover_api::admin::{
    self as api, Abort, AddTarget, Added, DataPlane, Deploy, GetDeployment, GetHistory, GetScaling,
    GetStatus, History, Pause, Promote, RemoveQuery, RemoveTarget, Removed, Resume, Rollback,
    Scale, Scaled, ScalingHistory, Status, Stop, Stopping, Warm,
};
use cutover_api::{Endpoint, ErrorBody};
use subtle::ConstantTimeEq;

use crate::controller::{Controller, DeployError};
use crate::plane::Plane;

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
        .route(GetStatus::ROUTE, get(status))
        .route(api::METRICS, get(metrics))
        .route(AddTarget::ROUTE, post(add_target))
        .route(RemoveTarget::ROUTE, delete(remove_target))
        .route(Deploy::ROUTE, post(deploy))
        .route(GetDeployment::ROUTE, get(deployment))
        .route(GetHistory::ROUTE, get(history))
        .route(Rollback::ROUTE, post(rollback))
        .route(Promote::ROUTE, post(promote))
        .route(Pause::ROUTE, post(pause))
        .route(Resume::ROUTE, post(resume))
        .route(Abort::ROUTE, post(abort))
        .route(Scale::ROUTE, post(scale))
        .route(GetScaling::ROUTE, get(scaling))
        .route(Stop::ROUTE, post(stop))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = ErrorBody {
        error: message.to_string(),
    };
    (status, Json(body)).into_response()
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
    let mut body = Status {
        groups: state.plane.status(),
        dataplane: state.plane.process_id().map(|pid| DataPlane { pid }),
        ..Status::default()
    };
    if let Some(c) = &state.controller {
        body.release = Some(c.current());
        body.desired = Some(c.desired());
        body.instances = c.instances();
        body.deployment = c.deployment(None);
        body.scaling = c.last_scaling();
        body.preview = c.preview();
        body.restarts = c.restarts();
        body.state_writes = c.writes();
        body.warm = c.warm().map(|(version, left)| Warm {
            version,
            for_s: left.as_secs(),
        });
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
        Ok(d) => (StatusCode::ACCEPTED, Json(d)).into_response(),
        Err(e @ DeployError::InProgress(..)) => error(StatusCode::CONFLICT, e),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn deploy(State(state): State<Arc<AdminState>>, body: JsonBody<Deploy>) -> Response {
    let (c, req) = match deployment_request(&state, body, "{\"version\": \"v2\"}") {
        Ok(ok) => ok,
        Err(resp) => return *resp,
    };
    started(c.start_deploy(&req.version, req.command, req.strategy.as_deref()))
}

async fn rollback(State(state): State<Arc<AdminState>>, body: JsonBody<Rollback>) -> Response {
    let (c, req) = match deployment_request(&state, body, "{} or {\"to\": \"v1\"}") {
        Ok(ok) => ok,
        Err(resp) => return *resp,
    };
    started(c.rollback(req.to.as_deref()).await)
}

/// 200 with the deployment as it now stands, 409 if there is none to steer.
fn steered(result: Result<crate::controller::Deployment, DeployError>) -> Response {
    match result {
        Ok(d) => Json(d).into_response(),
        Err(e) => error(StatusCode::CONFLICT, e),
    }
}

async fn promote(State(state): State<Arc<AdminState>>, body: JsonBody<Promote>) -> Response {
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

async fn scale(State(state): State<Arc<AdminState>>, body: JsonBody<Scale>) -> Response {
    let (c, req) = match deployment_request(&state, body, "{\"desired\": 3}") {
        Ok(ok) => ok,
        Err(resp) => return *resp,
    };
    match c.scale(req.desired) {
        Ok(from) => Json(Scaled {
            from,
            desired: req.desired,
        })
        .into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn scaling(State(state): State<Arc<AdminState>>) -> Response {
    match managed(&state) {
        Ok(c) => Json(ScalingHistory {
            scaling: c.scaling_history(),
        })
        .into_response(),
        Err(resp) => *resp,
    }
}

async fn deployment(State(state): State<Arc<AdminState>>, Path(id): Path<u64>) -> Response {
    match managed(&state) {
        Ok(c) => match c.deployment(Some(id)) {
            Some(d) => Json(d).into_response(),
            None => error(StatusCode::NOT_FOUND, format!("no deployment {id}")),
        },
        Err(resp) => *resp,
    }
}

async fn history(State(state): State<Arc<AdminState>>) -> Response {
    match managed(&state) {
        Ok(c) => Json(History {
            deployments: c.history(),
        })
        .into_response(),
        Err(resp) => *resp,
    }
}

async fn stop(State(state): State<Arc<AdminState>>) -> Response {
    state.stop.cancel();
    (StatusCode::ACCEPTED, Json(Stopping { stopping: true })).into_response()
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    match state.plane.metrics_text().await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
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
            Json(Added {
                group,
                target: add.target,
            }),
        )
            .into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
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
            let drain = handle.wait().await;
            Json(Removed { group, drain }).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            format!("no target `{target}` in group `{group}`"),
        ),
    }
}
