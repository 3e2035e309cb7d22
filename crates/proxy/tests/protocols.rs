//! Protocols through the proxy: TLS (rustls, ALPN), HTTP/2, WebSocket with drain, header rules, slow clients.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cutover_proxy::headers::{HeaderRules, Rules};
use cutover_proxy::ListenerOptions;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{client, Backend, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

async fn one_target(stack: &Stack, backend: &Backend) {
    stack.group("web", 100);
    stack.add_healthy("web", &backend.key()).await;
}

/// A TLS listener with a fresh self-signed certificate for `localhost`, and a client for it that
/// offers `alpn`.
struct Tls {
    stack: Stack,
    roots: rustls::RootCertStore,
    _dir: tempfile::TempDir,
}

impl Tls {
    async fn start() -> Self {
        let cert =
            rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
        std::fs::write(&key_path, cert.key_pair.serialize_pem()).expect("write key");
        let acceptor = cutover_proxy::tls::acceptor(&cert_path, &key_path).expect("acceptor");
        let stack = Stack::start(
            HeaderRules::default(),
            ListenerOptions {
                tls: Some(acceptor),
                workers: 1,
                ..ListenerOptions::default()
            },
        )
        .await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).expect("root");
        Self {
            stack,
            roots,
            _dir: dir,
        }
    }

    async fn connect(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.stack.addr).await.expect("connect");
        let server_name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
        connector
            .connect(server_name, tcp)
            .await
            .expect("TLS handshake")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_self_signed_certificate_and_alpn() {
    let tls_stack = Tls::start().await;
    let stack = &tls_stack.stack;
    let app = Backend::start(&["--version", "tls"]).await;
    one_target(stack, &app).await;

    for (alpn, expect_h2) in [(&b"h2"[..], true), (&b"http/1.1"[..], false)] {
        let tls = tls_stack.connect(alpn).await;
        let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        assert_eq!(negotiated_h2, expect_h2);
        let io = TokioIo::new(tls);
        let req = Request::get("https://localhost/health")
            .body(Empty::<Bytes>::new())
            .expect("request");
        let resp = if negotiated_h2 {
            let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            send.send_request(req).await.expect("h2 response")
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            let req = Request::get("/health")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .expect("req");
            send.send_request(req).await.expect("h1 response")
        };
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-app-version"], "tls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_over_tls_arrive_whole() {
    let tls = Tls::start().await;
    let target = support::big_body_target().await;
    tls.stack.group("web", 100);
    tls.stack.add_healthy("web", &target.to_string()).await;
    let io = TokioIo::new(tls.connect(b"http/1.1").await);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("h1 handshake");
    tokio::spawn(conn);
    for path in ["/length", "/chunked"] {
        let req = Request::get(path)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .expect("req");
        let resp = send.send_request(req).await.expect("response");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert!(
            body == support::pattern(support::BIG_BODY),
            "{path}: {} bytes, not the pattern",
            body.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_client_through_the_proxy() {
    let stack = Stack::plain().await;
    let app = Backend::start(&["--version", "h2"]).await;
    one_target(&stack, &app).await;
    let tcp = TcpStream::connect(stack.addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c");
    tokio::spawn(conn);
    let mut streams = Vec::new();
    for _ in 0..20 {
        let req = Request::get(format!("http://{}/", stack.addr))
            .body(Empty::<Bytes>::new())
            .expect("request");
        streams.push(send.send_request(req));
    }
    for stream in streams {
        let resp = stream.await.expect("response");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-app-version"], "h2");
        assert_eq!(
            resp.into_body().collect().await.expect("body").to_bytes(),
            "Hi"
        );
    }
}

/// A WebSocket echo server, standing in for a service with long-lived connections.
async fn echo_server() -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .route("/ws", axum::routing::get(ws_echo));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn ws_echo(req: Request<axum::body::Body>) -> axum::response::Response {
    let (parts, _) = req.into_parts();
    let key = parts.headers.get("sec-websocket-key").cloned();
    let Some(key) = key else {
        return axum::response::Response::new(axum::body::Body::from("not a websocket"));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut req = Request::from_parts(parts, axum::body::Body::empty());
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        let (mut tx, mut rx) = ws.split();
        while let Some(Ok(msg)) = rx.next().await {
            if msg.is_text() && tx.send(msg).await.is_err() {
                break;
            }
        }
    });
    axum::response::Response::builder()
        .status(101)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", accept)
        .body(axum::body::Body::empty())
        .expect("101")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_then_drained_with_a_close_frame() {
    let stack = Stack::plain().await;
    let echo = echo_server().await;
    stack.group("web", 100);
    stack.add_healthy("web", &echo.to_string()).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", stack.addr))
        .await
        .expect("websocket through proxy");
    assert_eq!(resp.status(), 101);
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(
        ws.next().await.expect("frame").expect("message"),
        Message::text("hello")
    );
    support::wait_until("the tunnel to count as upgraded", || {
        stack.registry.status()[0]
            .targets
            .iter()
            .any(|t| t.upgraded == 1 && t.in_flight == 0)
    })
    .await;

    let t = Instant::now();
    let drain = stack
        .registry
        .deregister("web", &echo.to_string(), Duration::from_millis(400))
        .expect("registered");
    // The client reads on, as clients do: it sees the close frame and answers it.
    let closing = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a frame before the deadline");
    let at = t.elapsed();
    match closing {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame with 1001, got {other:?}"),
    }
    // Half the drain for it to leave by itself, then closed within the spread before the deadline.
    assert!(
        at >= Duration::from_millis(200) && at < Duration::from_millis(400),
        "closed at {at:?}, within the spread before the 400 ms deadline"
    );
    let report = drain.wait().await;
    assert_eq!((report.closed, report.cut), (1, 0), "{report:?}");
}

/// Answers every request with its headers as JSON, to see what the proxy sent.
async fn header_echo_server() -> std::net::SocketAddr {
    async fn echo(headers: http::HeaderMap) -> impl axum::response::IntoResponse {
        let map: std::collections::BTreeMap<String, String> = headers
            .keys()
            .map(|k| {
                let values: Vec<&str> = headers
                    .get_all(k)
                    .iter()
                    .map(|v| v.to_str().unwrap_or(""))
                    .collect();
                (k.to_string(), values.join(", "))
            })
            .collect();
        ([("server", "echo/1.0")], axum::Json(map))
    }
    let app = axum::Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .fallback(echo);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_and_header_rules() {
    let name = |n: &'static str| HeaderName::from_static(n);
    let rules = HeaderRules {
        upgrades: vec!["websocket".into()],
        request: Rules {
            set: vec![(name("x-team"), HeaderValue::from_static("payments"))],
            add: vec![(name("x-tag"), HeaderValue::from_static("via-lb"))],
            remove: vec![name("x-internal-debug")],
        },
        response: Rules {
            set: vec![(name("x-marker"), HeaderValue::from_static("cutover"))],
            add: vec![(name("x-marker-2"), HeaderValue::from_static("added"))],
            remove: vec![name("server")],
        },
    };
    let stack = Stack::start(
        rules,
        ListenerOptions {
            workers: 1,
            ..ListenerOptions::default()
        },
    )
    .await;
    let echo = header_echo_server().await;
    stack.group("web", 100);
    stack.add_healthy("web", &echo.to_string()).await;

    // A GET goes the proxy's own way, a POST with a body through hyper: the same rules on both.
    for method in [http::Method::GET, http::Method::POST] {
        let resp = client()
            .request(method.clone(), stack.url("/anything"))
            .header("x-internal-debug", "1")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-tag", "from-client")
            .body(if method == http::Method::POST {
                "body"
            } else {
                ""
            })
            .send()
            .await
            .expect("request");
        assert_eq!(resp.headers()["x-marker"], "cutover", "{method}");
        assert_eq!(resp.headers()["x-marker-2"], "added", "{method}");
        assert!(
            resp.headers().get("server").is_none(),
            "server header removed ({method})"
        );
        let seen: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(seen["x-team"], "payments", "{method}");
        // Added beside the client's own value, not instead of it (the echo joins repeats with ", ").
        assert_eq!(seen["x-tag"], "from-client, via-lb", "{method}");
        assert!(seen.get("x-internal-debug").is_none(), "{method}");
        assert_eq!(
            seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1",
            "{method}"
        );
        assert_eq!(seen["x-forwarded-proto"], "http", "{method}");
        assert_eq!(seen["x-forwarded-host"], stack.addr.to_string(), "{method}");
        assert_eq!(
            seen["x-request-id"].as_str().map(str::len),
            Some(32),
            "{method}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_client_does_not_starve_others_and_is_cut_off() {
    let stack = Stack::start(
        HeaderRules::default(),
        ListenerOptions {
            header_read_timeout: Duration::from_millis(500),
            workers: 1,
            ..ListenerOptions::default()
        },
    )
    .await;
    let app = Backend::start(&["--version", "v1"]).await;
    one_target(&stack, &app).await;
    let mut loris = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(stack.addr).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("partial headers");
        loris.push(s);
    }
    // One worker thread, fifty stalled clients: others are still served at once.
    let t = Instant::now();
    for _ in 0..20 {
        assert_eq!(
            client()
                .get(stack.url("/"))
                .send()
                .await
                .expect("request")
                .status(),
            200
        );
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "others waited {:?}",
        t.elapsed()
    );
    // The stalled clients are cut off after the header read timeout.
    for mut s in loris {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow client was never cut off");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_listener_redirects_to_https() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(cutover_proxy::serve_redirect(
        listener,
        8443,
        stop.clone().cancelled_owned(),
    ));
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = no_follow
        .get(format!("http://{addr}/cart?id=7"))
        .header("host", "shop.example:80")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 308);
    assert_eq!(
        resp.headers()["location"],
        "https://shop.example:8443/cart?id=7"
    );
    stop.cancel();
}
