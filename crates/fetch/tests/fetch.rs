//! Downloads against real local servers: http, https with a private CA, file; retries of cut
//! bodies and 5xx; checksums; duplicates; 50 files at once.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cutover_fetch::{fetch_all, Options, Quiet, Status};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A small HTTP/1.1 server with faults on demand:
/// `/f/NAME` serves a file; `/cut/NAME` sends half the body and closes on the first request;
/// `/busy/NAME` answers 503 twice first; anything else is 404.
struct Server {
    addr: String,
    hits: Arc<AtomicUsize>,
}

fn body_for(name: &str) -> Vec<u8> {
    // Distinct, incompressible-ish content per name, about 300 KiB.
    let mut out = Vec::with_capacity(300 * 1024);
    let mut x: u64 = name.bytes().fold(1469598103934665603, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(1099511628211)
    });
    while out.len() < 300 * 1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    seen: Arc<std::sync::Mutex<HashMap<String, usize>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let count = {
        let mut seen = seen.lock().expect("lock");
        let c = seen.entry(path.clone()).or_insert(0);
        *c += 1;
        *c
    };
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
    let (kind, name) = (parts[0], parts.get(1).copied().unwrap_or(""));
    let body = body_for(name);
    let ok = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    match kind {
        // To plain http on a port where nothing listens: followed, it would fail differently.
        "down" => {
            let to = format!(
                "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/f/{name}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = s.write_all(to.as_bytes()).await;
        }
        "loop" => {
            let to = format!(
                "HTTP/1.1 302 Found\r\nlocation: /loop/{name}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
            let _ = s.write_all(to.as_bytes()).await;
        }
        // A byte every 100 ms: never idle long enough for a read timeout.
        "trickle" => {
            let _ = s.write_all(ok.as_bytes()).await;
            for b in body.iter().take(600) {
                if s.write_all(&[*b]).await.is_err() || s.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        "f" => {
            let _ = s.write_all(ok.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
        "cut" if count == 1 => {
            let _ = s.write_all(ok.as_bytes()).await;
            let _ = s.write_all(&body[..body.len() / 2]).await;
            // Dropped here: the client sees the body end early.
        }
        "cut" => {
            let _ = s.write_all(ok.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
        "busy" if count <= 2 => {
            let _ = s
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
        "busy" => {
            let _ = s.write_all(ok.as_bytes()).await;
            let _ = s.write_all(&body).await;
        }
        _ => {
            let _ = s
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    }
    let _ = s.shutdown().await;
}

impl Server {
    async fn start(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let (h, scheme) = (hits.clone(), if tls.is_some() { "https" } else { "http" });
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                h.fetch_add(1, Ordering::Relaxed);
                let (seen, tls) = (seen.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(stream).await {
                                handle(s, seen).await;
                            }
                        }
                        None => handle(stream, seen).await,
                    }
                });
            }
        });
        let host = if scheme == "https" {
            "localhost"
        } else {
            "127.0.0.1"
        };
        Self {
            addr: format!("{scheme}://{host}:{port}"),
            hits,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }
}

fn options() -> Options {
    Options {
        backoff: std::time::Duration::from_millis(20),
        ..Options::default()
    }
}

async fn fetch(urls: &[String], dir: &Path, options: &Options) -> Vec<cutover_fetch::Outcome> {
    fetch_all(urls, dir, options, Arc::new(Quiet))
        .await
        .expect("fetch")
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[tokio::test]
async fn http_files_arrive_whole_and_a_404_fails_only_itself() {
    let server = Server::start(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let urls = vec![
        server.url("/f/a.bin"),
        server.url("/missing/x.bin"),
        server.url("/f/b.bin"),
    ];
    let out = fetch(&urls, dir.path(), &options()).await;
    assert_eq!(out[0].status, Status::Ok);
    assert!(
        matches!(&out[1].status, Status::NotFound(r) if r.contains("HTTP 404")),
        "{out:?}"
    );
    assert_eq!(out[1].attempts, 1, "a 4xx is not retried");
    assert_eq!(out[2].status, Status::Ok);
    assert_eq!(
        std::fs::read(dir.path().join("a.bin")).expect("a"),
        body_for("a.bin")
    );
    assert_eq!(
        std::fs::read(dir.path().join("b.bin")).expect("b"),
        body_for("b.bin")
    );
    assert!(!dir.path().join("x.bin").exists());
    assert!(leftovers(dir.path()).is_empty());
}

#[tokio::test]
async fn a_body_cut_mid_way_and_a_busy_server_are_retried_to_a_correct_file() {
    let server = Server::start(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cut = format!(
        "{}#sha256={}",
        server.url("/cut/c.bin"),
        sha(&body_for("c.bin"))
    );
    let out = fetch(&[cut, server.url("/busy/d.bin")], dir.path(), &options()).await;
    assert_eq!(out[0].status, Status::Ok, "{out:?}");
    assert_eq!(out[0].attempts, 2);
    assert_eq!(out[1].status, Status::Ok, "{out:?}");
    assert_eq!(out[1].attempts, 3);
    assert_eq!(
        std::fs::read(dir.path().join("c.bin")).expect("c"),
        body_for("c.bin")
    );
    assert_eq!(
        std::fs::read(dir.path().join("d.bin")).expect("d"),
        body_for("d.bin")
    );
}

#[tokio::test]
async fn a_checksum_mismatch_leaves_no_file() {
    let server = Server::start(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = format!("{}#sha256={}", server.url("/f/e.bin"), "0".repeat(64));
    let out = fetch(&[wrong], dir.path(), &options()).await;
    assert!(
        matches!(&out[0].status, Status::Failed(r) if r.contains("checksum mismatch")),
        "{out:?}"
    );
    assert!(!dir.path().join("e.bin").exists());
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

#[tokio::test]
async fn duplicate_names_download_only_the_last_and_schemes_are_checked() {
    let server = Server::start(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = tempfile::tempdir().expect("src");
    std::fs::write(src.path().join("same.bin"), b"from a file").expect("write");
    let file_url = format!("file://{}", src.path().join("same.bin").display());
    let urls = vec![
        server.url("/f/same.bin"),
        "ftp://example/x.bin".to_owned(),
        file_url,
    ];
    let out = fetch(&urls, dir.path(), &options()).await;
    assert_eq!(out[0].status, Status::Superseded);
    assert!(matches!(&out[1].status, Status::Failed(r) if r.contains("unsupported scheme `ftp`")));
    assert_eq!(out[2].status, Status::Ok);
    assert_eq!(
        std::fs::read(dir.path().join("same.bin")).expect("same"),
        b"from a file"
    );
    assert_eq!(
        server.hits.load(Ordering::Relaxed),
        0,
        "the superseded URL was never fetched"
    );
}

#[tokio::test]
async fn fifty_files_in_parallel() {
    let server = Server::start(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let urls: Vec<String> = (0..50)
        .map(|i| server.url(&format!("/f/{i}.bin")))
        .collect();
    let out = fetch(&urls, dir.path(), &options()).await;
    assert!(out.iter().all(|o| o.status == Status::Ok), "{out:?}");
    for i in 0..50 {
        let name = format!("{i}.bin");
        assert_eq!(
            std::fs::read(dir.path().join(&name)).expect("file"),
            body_for(&name)
        );
    }
}

/// The test server over TLS with a certificate for `localhost` that no system root knows.
async fn tls_server() -> (Server, rcgen::CertifiedKey) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let der = cert.cert.der().clone();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(cert.key_pair.serialize_der()).expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .expect("tls config");
    let server = Server::start(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await;
    (server, cert)
}

#[tokio::test]
async fn https_with_a_private_ca_given_by_ca_cert() {
    let (server, cert) = tls_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let urls = vec![server.url("/f/s.bin")];
    // Without the CA: the system roots do not know it, and that is not retried.
    let out = fetch(
        &urls,
        dir.path(),
        &Options {
            attempts: 1,
            ..options()
        },
    )
    .await;
    assert!(matches!(&out[0].status, Status::Failed(_)), "{out:?}");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).expect("ca");
    let out = fetch(
        &urls,
        dir.path(),
        &Options {
            ca_cert: Some(ca),
            ..options()
        },
    )
    .await;
    assert_eq!(out[0].status, Status::Ok, "{out:?}");
    assert_eq!(
        std::fs::read(dir.path().join("s.bin")).expect("s"),
        body_for("s.bin")
    );
}

#[tokio::test]
async fn redirects_never_drop_from_https_to_http_and_are_bounded() {
    let (server, cert) = tls_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert.cert.pem()).expect("ca");
    let out = fetch(
        &[server.url("/down/x.bin")],
        dir.path(),
        &Options {
            ca_cert: Some(ca),
            ..options()
        },
    )
    .await;
    assert!(
        matches!(&out[0].status, Status::Failed(r) if r.contains("refused redirect: from https to http://127.0.0.1:1/")),
        "{out:?}"
    );
    assert_eq!(out[0].attempts, 1, "a refused redirect is not retried");

    let plain = Server::start(None).await;
    let out = fetch(&[plain.url("/loop/y.bin")], dir.path(), &options()).await;
    assert!(
        matches!(&out[0].status, Status::Failed(r) if r.contains("more than 5 redirects")),
        "{out:?}"
    );
    assert!(leftovers(dir.path()).is_empty());
}

#[tokio::test]
async fn a_trickled_body_is_cut_by_the_deadline_and_a_large_one_by_the_size_bound() {
    let server = Server::start(None).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let started = std::time::Instant::now();
    let out = fetch(
        &[server.url("/trickle/t.bin")],
        dir.path(),
        &Options {
            deadline: Some(std::time::Duration::from_secs(1)),
            ..options()
        },
    )
    .await;
    assert!(
        matches!(&out[0].status, Status::Failed(r) if r.contains("did not finish within 1s")),
        "{out:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    let out = fetch(
        &[server.url("/f/big.bin")],
        dir.path(),
        &Options {
            max_bytes: Some(1000),
            ..options()
        },
    )
    .await;
    assert!(
        matches!(&out[0].status, Status::Failed(r) if r.contains("larger than the 1000 bytes")),
        "{out:?}"
    );
    assert!(!dir.path().join("big.bin").exists());
    assert!(leftovers(dir.path()).is_empty());
}
