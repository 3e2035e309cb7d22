//! Long-lived endpoints: a WebSocket echo and a Server-Sent Events stream, for tests, examples
//! and benchmarks of what deploys do to open connections. When the service stops, each WebSocket
//! gets a close frame (1001, going away) and each event stream a clean end.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// Status code of the close frame a stopping service sends.
pub const GOING_AWAY: u16 = 1001;
/// Bounds on `GET /events?every=`.
const EVERY_MIN: Duration = Duration::from_millis(10);
const EVERY_MAX: Duration = Duration::from_secs(60);

/// `GET /ws`: every text or binary message comes back as it was sent.
pub async fn echo(State(state): State<Arc<AppState>>, upgrade: WebSocketUpgrade) -> Response {
    let closing = state.closing.subscribe();
    upgrade.on_upgrade(move |socket| async move {
        state.sockets.fetch_add(1, Ordering::SeqCst);
        serve_echo(socket, closing).await;
        state.sockets.fetch_sub(1, Ordering::SeqCst);
    })
}

async fn serve_echo(mut socket: WebSocket, mut closing: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Text(t))) => {
                    if socket.send(Message::Text(t)).await.is_err() { return; }
                }
                Some(Ok(Message::Binary(b))) => {
                    if socket.send(Message::Binary(b)).await.is_err() { return; }
                }
                // Pings are answered by the library; a close is answered by it too.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            _ = stopping(&mut closing) => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: GOING_AWAY,
                        reason: "the service is stopping".into(),
                    })))
                    .await;
                // The peer's answering close ends the connection.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(m)) = socket.recv().await {
                        if matches!(m, Message::Close(_)) { break; }
                    }
                })
                .await;
                return;
            }
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// How often an event is sent, e.g. `250ms` (default 1 s).
    every: Option<String>,
}

/// `GET /events[?every=250ms]`: an event stream of numbered `tick` events carrying the version,
/// until the client leaves or the service stops.
pub async fn events(
    State(state): State<Arc<AppState>>,
    Query(query): Query<EventsQuery>,
) -> Response {
    let every = match query.every.as_deref().map(humantime::parse_duration) {
        None => Duration::from_secs(1),
        Some(Ok(d)) if (EVERY_MIN..=EVERY_MAX).contains(&d) => d,
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                "every: expected a duration from 10ms to 60s, such as \"250ms\"\n",
            )
                .into_response()
        }
    };
    let version = state.version.clone();
    let closing = state.closing.subscribe();
    let stream = futures_util::stream::unfold(
        (0u64, tokio::time::interval(every), closing),
        move |(n, mut tick, mut closing)| {
            let version = version.clone();
            async move {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopping(&mut closing) => return None,
                }
                let event = Event::default()
                    .event("tick")
                    .id(n.to_string())
                    .data(version);
                Some((Ok::<_, Infallible>(event), (n + 1, tick, closing)))
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Resolves once the service is stopping (or whatever said so is gone).
async fn stopping(closing: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before anything else awaits.
    let _ = closing.wait_for(|c| *c).await;
}
