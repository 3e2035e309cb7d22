//! The answer of the plain listener beside a TLS one: a permanent redirect to HTTPS.

use http::header::{HeaderValue, HOST, LOCATION};
use http::{Request, Response, StatusCode};

use crate::body::{self, ProxyBody};

pub fn to_https<B>(req: &Request<B>, https_port: u16) -> Response<ProxyBody> {
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    };
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}
