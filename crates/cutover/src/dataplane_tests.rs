//! The data plane's control protocol against hostile bodies: decoders fuzzed with arbitrary and
//! mutated messages, and limits a well-formed message could still break.

use std::sync::OnceLock;

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// One control server for every case, on 127.0.0.1 port 0, with the two groups a data plane has.
fn control() -> &'static (tokio::runtime::Runtime, std::net::SocketAddr) {
    static CONTROL: OnceLock<(tokio::runtime::Runtime, std::net::SocketAddr)> = OnceLock::new();
    CONTROL.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let addr = rt.block_on(async {
            let registry = Registry::new();
            for (group, weight) in Side::BOTH.iter().map(|s| s.name()).zip([100, 0]) {
                registry
                    .ensure_group(
                        group,
                        weight,
                        cutover_proxy::Balance::RoundRobin,
                        HealthConfig::from(
                            &cutover_spec::parse(
                                "[service]\nname = \"w\"\n[release]\ncommand = \"a\"\n",
                                std::path::Path::new("t.toml"),
                                std::path::Path::new("."),
                            )
                            .expect("spec")
                            .health,
                        ),
                    )
                    .expect("group");
            }
            let server = Arc::new(Server {
                registry,
                preview: PreviewGroup::default(),
                fingerprint: String::new(),
                listener: "127.0.0.1:1".parse().expect("addr"),
                preview_addr: None,
                drains: Mutex::new(HashMap::new()),
                next_drain: AtomicU64::new(1),
                shutdown: CancellationToken::new(),
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            tokio::spawn(axum::serve(listener, router(server)).into_future());
            addr
        });
        (rt, addr)
    })
}

/// Sends one request and returns the status the control server answered.
fn post(path: &str, body: &[u8]) -> u16 {
    let (rt, addr) = control();
    rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.expect("write");
        s.write_all(body).await.expect("write");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.expect("read");
        let text = String::from_utf8_lossy(&answer);
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    })
}

const SEEDS: [(&str, &str); 4] = [
    ("/weights", r#"{"weights": [["blue", 100], ["green", 0]]}"#),
    ("/targets", r#"{"group": "blue", "target": "127.0.0.1:9"}"#),
    (
        "/drains",
        r#"{"group": "blue", "target": "127.0.0.1:9", "timeout_ms": 10}"#,
    ),
    ("/preview", r#"{"group": "green"}"#),
];

#[test]
fn a_drain_longer_than_any_clock_is_refused_not_panicked_on() {
    assert_eq!(
        post("/targets", br#"{"group": "blue", "target": "127.0.0.1:9"}"#),
        200
    );
    let status = post(
        "/drains",
        br#"{"group": "blue", "target": "127.0.0.1:9", "timeout_ms": 18446744073709551615}"#,
    );
    assert_eq!(status, 400);
    // The server is still there.
    assert_eq!(post("/preview", br#"{"group": "green"}"#), 200);
}

proptest! {
    // Each case is two requests: fewer than the default unless scripts/fuzz asks for more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    /// Whatever a message holds, the control server answers it, and answers the next one.
    #[test]
    fn control_messages(
        which in 0usize..SEEDS.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        arbitrary in proptest::option::weighted(0.2, proptest::collection::vec(any::<u8>(), 0..64)),
    ) {
        let (path, seed) = SEEDS[which];
        let mut body = arbitrary.unwrap_or_else(|| seed.as_bytes().to_vec());
        for (at, byte) in edits {
            if !body.is_empty() {
                let i = at.index(body.len());
                body[i] = byte;
            }
        }
        let status = post(path, &body);
        prop_assert!((200..500).contains(&status), "{path} answered {status} to {:?}", String::from_utf8_lossy(&body));
        prop_assert_eq!(post("/preview", br#"{"group": "green"}"#), 200);
    }
}
