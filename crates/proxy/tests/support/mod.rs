//! Test harness: the proxy on port 0, in-process demo-app backends, and waits with deadlines.

#![allow(dead_code)]

pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use cutover_proxy::headers::HeaderRules;
use cutover_proxy::target::{TargetState, Thresholds};
use cutover_proxy::{HealthConfig, ListenerOptions, Proxy, Registry};
use cutover_spec::Matcher;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it is true, failing the test after `DEADLINE`.
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn health() -> HealthConfig {
    HealthConfig {
        path: "/health".into(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        thresholds: Thresholds {
            healthy: 2,
            unhealthy: 2,
        },
        matcher: Matcher(vec![200..=299]),
        fail_open: false,
    }
}

/// A running proxy.
pub struct Stack {
    pub registry: Arc<Registry>,
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Stack {
    pub async fn start(rules: HeaderRules, options: ListenerOptions) -> Self {
        Self::start_with(rules, options, |_| {}).await
    }

    /// Like [`Stack::start`], with the proxy's settings changed by `configure` first.
    pub async fn start_with(
        rules: HeaderRules,
        options: ListenerOptions,
        configure: impl FnOnce(&mut Proxy),
    ) -> Self {
        let registry = Registry::new();
        let mut proxy = Proxy::new(registry.clone(), rules);
        configure(&mut proxy);
        let proxy = Arc::new(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        tokio::spawn(cutover_proxy::serve(
            listener,
            proxy,
            options,
            stop.clone().cancelled_owned(),
        ));
        Self {
            registry,
            addr,
            stop,
        }
    }

    /// One worker: every request on the same worker's target pool, so reuse is predictable.
    pub async fn one_worker() -> Self {
        Self::start(
            HeaderRules::default(),
            ListenerOptions {
                workers: 1,
                ..ListenerOptions::default()
            },
        )
        .await
    }

    pub async fn plain() -> Self {
        Self::start(
            HeaderRules::default(),
            ListenerOptions {
                workers: 2,
                ..ListenerOptions::default()
            },
        )
        .await
    }

    /// Stops the listeners: open connections finish the request they are on.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn state(&self, group: &str, target: &str) -> Option<(TargetState, Option<&'static str>)> {
        self.registry
            .status()
            .into_iter()
            .find(|g| g.name == group)?
            .targets
            .into_iter()
            .find(|t| t.target == target)
            .map(|t| (t.state, t.reason.map(|r| r.as_str())))
    }

    pub async fn wait_state(&self, group: &str, target: &str, state: TargetState) {
        wait_until(&format!("{target} in {group} to be {state:?}"), || {
            self.state(group, target).is_some_and(|(s, _)| s == state)
        })
        .await;
    }

    /// A round-robin group with the tests' fast health checks.
    pub fn group(&self, name: &str, weight: u32) {
        self.registry
            .ensure_group(name, weight, cutover_proxy::Balance::RoundRobin, health())
            .expect("group");
    }

    /// Registers a target and waits until it is healthy.
    pub async fn add_healthy(&self, group: &str, target: &str) {
        self.registry
            .register(group, target)
            .await
            .expect("register");
        self.wait_state(group, target, TargetState::Healthy).await;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// An in-process demo-app.
pub struct Backend {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Backend {
    pub async fn start(args: &[&str]) -> Self {
        let mut argv = vec!["demo-app"];
        argv.extend_from_slice(args);
        let config = demo_app::Config::parse_from(argv);
        let state = Arc::new(demo_app::AppState::from_config(&config).expect("state"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        tokio::spawn(demo_app::serve(
            listener,
            state,
            stop.clone().cancelled_owned(),
            Duration::from_secs(30),
        ));
        Self { addr, stop }
    }

    pub fn key(&self) -> String {
        self.addr.to_string()
    }

    /// Stops accepting at once; in-flight requests finish.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(DEADLINE)
        .build()
        .expect("client")
}

/// A target speaking HTTP/1.1 by hand: every request head it reads (its health checks' too) is
/// answered with the bytes `answer` makes of it, on connections kept open.
pub async fn answering_target(answer: fn(&[u8]) -> Vec<u8>) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    each_connection(move |mut s| async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = seen.drain(..end + 4).collect();
                if s.write_all(&answer(&head)).await.is_err() {
                    return;
                }
            }
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
}

/// A target on 127.0.0.1, port 0, that serves each connection it accepts with `serve`, in a task
/// of its own.
pub async fn each_connection<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// The size of [`big_body_target`]'s answers.
pub const BIG_BODY: usize = 3 << 20;

/// A target whose every answer is [`BIG_BODY`] bytes of [`pattern`]: framed by its length, or
/// chunked in pieces for paths starting with `/chunked`.
pub async fn big_body_target() -> SocketAddr {
    answering_target(|head| {
        let body = pattern(BIG_BODY);
        let mut answer = Vec::with_capacity(BIG_BODY + 1024);
        if head.starts_with(b"GET /chunked") {
            answer.extend_from_slice(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n");
            for piece in body.chunks(7919) {
                answer.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                answer.extend_from_slice(piece);
                answer.extend_from_slice(b"\r\n");
            }
            answer.extend_from_slice(b"0\r\n\r\n");
        } else {
            answer.extend_from_slice(
                format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG_BODY}\r\n\r\n").as_bytes(),
            );
            answer.extend_from_slice(&body);
        }
        answer
    })
    .await
}

/// `len` bytes that are not all alike, so a lost or repeated piece shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}
