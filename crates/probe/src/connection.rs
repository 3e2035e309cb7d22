//! One keep-alive HTTP/1.1 connection that sends requests and reads whole responses.

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::outcome::{FailureKind, Outcome};
use crate::target::Target;

/// A worker's connection, opened on first use and again after it breaks.
pub struct Connection {
    target: Target,
    host: HeaderValue,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Connection {
    pub fn new(target: Target) -> Self {
        let host = HeaderValue::from_str(target.authority.as_str())
            .unwrap_or(HeaderValue::from_static("localhost"));
        Self {
            target,
            host,
            sender: None,
        }
    }

    /// Sends one GET and reads the whole body, giving up at `deadline`.
    pub async fn request(&mut self, deadline: Instant) -> Outcome {
        match tokio::time::timeout_at(deadline, self.exchange()).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // The connection's state is unknown after a timeout: start afresh.
                self.sender = None;
                Outcome::failed(FailureKind::Timeout)
            }
        }
    }

    async fn exchange(&mut self) -> Outcome {
        let request = Request::get(self.target.path.as_str())
            .header(http::header::HOST, self.host.clone())
            .body(Empty::<Bytes>::new());
        let Ok(request) = request else {
            return Outcome::failed(FailureKind::Connect);
        };
        let sender = match self.ready_sender().await {
            Ok(sender) => sender,
            Err(kind) => return Outcome::failed(kind),
        };
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(_) => {
                self.sender = None;
                return Outcome::failed(FailureKind::Reset);
            }
        };
        let (parts, body) = response.into_parts();
        let body = match body.collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => {
                self.sender = None;
                return Outcome::failed(FailureKind::Reset);
            }
        };
        let version = parts
            .headers
            .get("x-app-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| version_from_json(&body));
        let proxy_marked = parts.headers.contains_key("x-cutover-error");
        Outcome::response(parts.status.as_u16(), version, proxy_marked)
    }

    async fn ready_sender(&mut self) -> Result<&mut SendRequest<Empty<Bytes>>, FailureKind> {
        if let Some(sender) = &mut self.sender {
            if sender.ready().await.is_err() {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(&self.target.connect_to)
                .await
                .map_err(|_| FailureKind::Connect)?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|_| FailureKind::Connect)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or(FailureKind::Connect)
    }
}

/// Services that do not send `x-app-version` may still say their version in a JSON body.
fn version_from_json(body: &[u8]) -> Option<String> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: Option<serde_json::Value>,
    }
    let v: Versioned = serde_json::from_slice(body).ok()?;
    match v.version? {
        serde_json::Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_json_bodies() {
        assert_eq!(
            version_from_json(br#"{"version":"v2","x":1}"#),
            Some("v2".into())
        );
        assert_eq!(version_from_json(br#" {"version": 3}"#), Some("3".into()));
        assert_eq!(version_from_json(b"Hi"), None);
        assert_eq!(version_from_json(br#"{"other":1}"#), None);
    }
}
