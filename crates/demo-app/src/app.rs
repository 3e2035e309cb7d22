//! The demo service's routes: health, hello, the key endpoint and the long-lived ones, with the
//! fault knobs applied.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::keys::{self, Appended};
pub use crate::state::AppState;

/// Largest body `POST /add_public_key` reads.
pub const MAX_KEY_BODY: usize = 16 * 1024;

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(hello))
        .route("/health", get(health))
        .route("/add_public_key", post(add_public_key))
        .route("/ws", get(crate::live::echo))
        .route("/events", get(crate::live::events))
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            stamp_version,
        ))
        .with_state(state)
}

/// Every response says which version produced it; the probe counts versions by it.
async fn stamp_version(State(state): State<Arc<AppState>>, mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("x-app-version", state.version_header.clone());
    response
}

async fn hello(State(state): State<Arc<AppState>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(latency) = state.latency {
        tokio::time::sleep(latency).await;
    }
    if state.slow.load(Relaxed) {
        tokio::time::sleep(state.slow_by).await;
    }
    if state.breaks.load(Relaxed) {
        // The head and half the body go out, then the connection ends abruptly: the client sees
        // a broken answer. The pause lets the server flush the first half; without it the
        // error would come before anything was written, an empty reply instead of a broken one.
        use futures_util::StreamExt;
        let first = futures_util::stream::iter([Ok::<_, std::io::Error>("H")]);
        let then = futures_util::stream::once(async {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            Err(std::io::Error::other("broken off as asked by SIGUSR2"))
        });
        let mut resp = Response::new(Body::from_stream(first.chain(then)));
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        return resp;
    }
    if state.error_rate > 0.0 && fastrand::f64() < state.error_rate {
        return (StatusCode::INTERNAL_SERVER_ERROR, "injected error\n").into_response();
    }
    "Hi".into_response()
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let status = if state.fail_health {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "version": state.version,
        "instance": state.instance,
        "status": if state.fail_health { "failing" } else { "ok" },
        "time": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
    });
    (status, Json(body)).into_response()
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddKey {
    ssh_public_key: String,
}

async fn add_public_key(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let Some((credentials, file)) = &state.admin else {
        return error(
            StatusCode::NOT_FOUND,
            "add_public_key is disabled: no admin password is configured",
        );
    };
    if let Some(latency) = state.latency {
        tokio::time::sleep(latency).await;
    }
    // A browser sends a cross-site form (text/plain, form-urlencoded) with the user's cached
    // Basic credentials and no preflight; it cannot send application/json without one.
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be sent as Content-Type: application/json",
        );
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if !credentials.admits(authorization) {
        let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"demo-app\", charset=\"UTF-8\""),
        );
        return response;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_KEY_BODY as u64) {
        return too_large();
    }
    let body = match axum::body::to_bytes(Body::new(request.into_body()), MAX_KEY_BODY).await {
        Ok(body) => body,
        Err(_) => return too_large(),
    };
    let input: AddKey = match serde_json::from_slice(&body) {
        Ok(input) => input,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be JSON {{\"ssh_public_key\": \"<base64>\"}}: {e}"),
            )
        }
    };
    let key = match keys::validate(&input.ssh_public_key) {
        Ok(key) => key,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match file.append(&key).await {
        Ok(Appended::Saved) => {
            tracing::info!(file = %file.path().display(), "saved a public key");
            (
                StatusCode::CREATED,
                format!("Key successfully saved:\n{}", key.line),
            )
                .into_response()
        }
        Ok(Appended::AlreadyPresent) => (
            StatusCode::OK,
            format!("Key already present:\n{}", key.line),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(file = %file.path().display(), error = %e, "could not save a public key");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not write the authorized keys file",
            )
        }
    }
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body is larger than {MAX_KEY_BODY} bytes"),
    )
}
