//! Hostile clients and targets: requests a target could read differently from the proxy, and
//! answers that would make an app's failure pass for the proxy's. Each case names what the
//! proxy does instead, on both request paths (its own bodiless one and hyper's).

mod support;

use std::time::{Duration, Instant};

use cutover_proxy::headers::HeaderRules;
use cutover_proxy::ListenerOptions;
use support::wire::exchange;
use support::Stack;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A target that answers every request with the head it received as the body, so a test sees
/// exactly what reached the target; `/forged` also claims to be a proxy error, and `/bad-chunk`
/// answers a chunked body that is not.
async fn recording_target() -> String {
    support::answering_target(|head| {
        let text = String::from_utf8_lossy(head);
        if text.contains(" /bad-chunk ") {
            return b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nnot hex\r\n"
                .to_vec();
        }
        let extra = if text.contains(" /forged ") {
            "x-cutover-error: no-healthy-targets\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 200 OK\r\n{extra}content-length: {}\r\n\r\n",
            head.len()
        )
        .into_bytes();
        out.extend_from_slice(head);
        out
    })
    .await
    .to_string()
}

async fn stack() -> Stack {
    let target = recording_target().await;
    let stack = Stack::one_worker().await;
    stack.group("web", 100);
    stack.add_healthy("web", &target).await;
    stack
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_tokens_never_remove_host_or_the_forwarding_fields() {
    let stack = stack().await;
    for body in ["", "Content-Length: 2\r\n\r\nhi"] {
        let request = format!(
            "GET /a HTTP/1.1\r\nHost: shop.test\r\nConnection: host, x-forwarded-for, close\r\n{}",
            if body.is_empty() { "\r\n" } else { body }
        );
        let answers = exchange(&stack, request.as_bytes(), &[]).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        let seen = text(&answers[0].body);
        assert!(seen.contains("host: shop.test\r\n"), "{seen}");
        assert!(seen.contains("x-forwarded-for: 127.0.0.1"), "{seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_are_refused_and_an_absolute_target_wins_over_host() {
    let stack = stack().await;
    let answers = exchange(
        &stack,
        b"GET /a HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, 400, "{answers:?}");
    assert!(text(&answers[0].body).contains("more than one host"));

    let answers = exchange(
        &stack,
        b"GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        &[],
    )
    .await;
    let seen = text(&answers[0].body);
    assert!(seen.starts_with("get /x http/1.1"), "{seen}");
    assert!(seen.contains("host: a.test\r\n"), "{seen}");
    assert!(!seen.contains("b.test"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_not_allowed_is_dropped_and_http2_settings_never_pass() {
    let stack = stack().await;
    let answers = exchange(
        &stack,
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, 200, "not switched: {answers:?}");
    let seen = text(&answers[0].body);
    assert!(!seen.contains("upgrade"), "{seen}");
    assert!(!seen.contains("http2-settings"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_a_body_on_get_and_an_oversized_head_are_refused() {
    let stack = stack().await;
    let answers = exchange(
        &stack,
        b"CONNECT internal.test:22 HTTP/1.1\r\nHost: internal.test:22\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(answers[0].status, 405, "{answers:?}");
    for method in ["GET", "HEAD"] {
        let request = format!(
            "{method} /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
        );
        let heads: &[usize] = if method == "HEAD" { &[0] } else { &[] };
        let answers = exchange(&stack, request.as_bytes(), heads).await;
        assert_eq!(answers[0].status, 400, "{method}: {answers:?}");
    }
    // 100 KiB of fields: over the one 64 KiB limit, on whichever path reads it.
    let mut request = b"GET /a HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..100 {
        request.extend_from_slice(format!("x-pad-{i}: {}\r\n", "p".repeat(1000)).as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    let answers = exchange(&stack, &request, &[]).await;
    assert_eq!(answers[0].status, 431, "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_targets_own_proxy_error_mark_is_removed() {
    let stack = stack().await;
    // The bodiless path, then hyper's (a request with a body).
    for request in [
        &b"GET /forged HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"[..],
        &b"POST /forged HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"[..],
    ] {
        let answers = exchange(&stack, request, &[]).await;
        assert_eq!(answers[0].status, 200, "{answers:?}");
        assert_eq!(answers[0].header("x-cutover-error"), None, "{answers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_answer_is_a_502_and_the_pipeline_goes_on() {
    let stack = stack().await;
    let answers = exchange(
        &stack,
        b"GET /bad-chunk HTTP/1.1\r\nHost: a\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].status, 502, "{answers:?}");
    assert_eq!(answers[0].header("x-cutover-error"), Some("target-reset"));
    assert_eq!(answers[1].status, 200, "{answers:?}");
    assert!(text(&answers[1].body).starts_with("get /after"));
    // The target is charged with the failure.
    let metrics = stack.registry.group_metrics("web").expect("group");
    assert!(
        metrics.proxy_errors >= 1,
        "the broken answer counts against the target: {metrics:?}"
    );
}

/// A target that answers health checks, and everything else with a head promising 100 bytes,
/// 10 of them, and then nothing for a minute.
async fn stalling_target() -> String {
    support::each_connection(|mut s| async move {
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head: Vec<u8> = seen.drain(..end + 4).collect();
            if head.starts_with(b"GET /health") {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                continue;
            }
            // A body, if one was sent, is simply left unread.
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                .await;
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
    })
    .await
    .to_string()
}

async fn stalling_stack(body_timeout: Duration) -> (Stack, String) {
    let target = stalling_target().await;
    let stack = Stack::start_with(
        HeaderRules::default(),
        ListenerOptions {
            workers: 1,
            ..ListenerOptions::default()
        },
        |p| p.body_timeout = body_timeout,
    )
    .await;
    stack.group("web", 100);
    stack.add_healthy("web", &target).await;
    (stack, target)
}

fn in_flight(stack: &Stack, target: &str) -> usize {
    stack
        .registry
        .status()
        .into_iter()
        .flat_map(|g| g.targets)
        .find(|t| t.target == target)
        .map_or(0, |t| t.in_flight)
}

/// Sends `request` and reads what comes until the proxy closes the connection.
async fn read_all(stack: &Stack, request: &[u8]) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(stack.addr)
        .await
        .expect("connect");
    s.write_all(request).await.expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(support::DEADLINE, s.read_to_end(&mut got))
        .await
        .expect("the proxy ends the answer");
    (got, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_is_cut_after_the_body_timeout_on_both_paths() {
    let (stack, target) = stalling_stack(Duration::from_millis(300)).await;
    for request in [
        &b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        &b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi"[..],
    ] {
        let (got, took) = read_all(&stack, request).await;
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.contains("0123456789"),
            "the part that came is passed on: {text}"
        );
        assert!(
            took < Duration::from_secs(10),
            "cut after the body timeout, took {took:?}"
        );
        support::wait_until("the stalled request to leave the in-flight count", || {
            in_flight(&stack, &target) == 0
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_releases_the_target_at_once() {
    let (stack, target) = stalling_stack(Duration::from_secs(600)).await;
    let mut s = tokio::net::TcpStream::connect(stack.addr)
        .await
        .expect("connect");
    s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 64];
    let n = s.read(&mut first).await.expect("the head arrives");
    assert!(n > 0);
    assert_eq!(in_flight(&stack, &target), 1);
    drop(s);
    support::wait_until("the abandoned request to leave the in-flight count", || {
        in_flight(&stack, &target) == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_really_cuts_a_stalled_answer() {
    let (stack, target) = stalling_stack(Duration::from_secs(600)).await;
    let client = {
        let addr = stack.addr;
        tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"POST /slow HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi")
                .await
                .expect("write");
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            got
        })
    };
    support::wait_until("the request to reach the target", || {
        in_flight(&stack, &target) == 1
    })
    .await;
    let started = Instant::now();
    let handle = stack
        .registry
        .deregister("web", &target, Duration::from_millis(300))
        .expect("registered");
    let report = handle.wait().await;
    assert_eq!(report.cut, 1, "{report:?}");
    let got = tokio::time::timeout(support::DEADLINE, client)
        .await
        .expect("the client's answer ends at the cut")
        .expect("client");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&got).contains("0123456789"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_head_trickled_a_byte_at_a_time_arrives_whole() {
    // The head is parsed again only when a blank line may have arrived: one byte per write
    // must still come out as the same answer.
    let target = support::each_connection(|mut s| async move {
        let mut buf = vec![0u8; 4096];
        let mut seen = Vec::new();
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = seen.drain(..end + 4).collect();
                if head.starts_with(b"GET /health") {
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    continue;
                }
                let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
                for i in 0..20 {
                    answer.extend_from_slice(
                        format!("x-field-{i}: {}\r\n", "v".repeat(20)).as_bytes(),
                    );
                }
                answer.extend_from_slice(b"content-length: 5\r\n\r\nwhole");
                for b in answer {
                    if s.write_all(&[b]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        }
    })
    .await
    .to_string();
    let stack = Stack::one_worker().await;
    stack.group("web", 100);
    stack.add_healthy("web", &target).await;
    let answers = exchange(
        &stack,
        b"GET /t HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].body, b"whole");
    assert_eq!(
        answers[0].header("x-field-19"),
        Some("vvvvvvvvvvvvvvvvvvvv")
    );
}
