//! Long-lived connections end cleanly, whatever ends them: a WebSocket gets a close frame
//! (1001) and an event stream a clean end when its target dies or its drain winds it down.

mod support;

use std::time::Duration;

use cutover_proxy::TargetStatus;
use futures_util::StreamExt;
use support::{each_connection, Backend, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Reads one request head off `s`; its bytes.
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    Some(seen)
}

/// Answers a health check on `s`, if `head` is one; whether it was.
async fn answered_health(s: &mut tokio::net::TcpStream, head: &[u8]) -> bool {
    if !head.starts_with(b"GET /health") {
        return false;
    }
    let _ = s
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        .await;
    true
}

/// Waits until some target of the first group matches `what`.
async fn wait_for_target(stack: &Stack, what: &str, check: impl Fn(&TargetStatus) -> bool) {
    support::wait_until(what, || {
        stack.registry.status()[0].targets.iter().any(&check)
    })
    .await;
}

fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    std::str::from_utf8(head).ok()?.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A target that dies the moment it has said one thing: on `/ws` it accepts the WebSocket,
/// sends one text frame and is gone; on `/events` it starts an event stream, sends one event and
/// is gone. Health checks pass.
async fn dying_target() -> String {
    each_connection(|mut s| async move {
        let Some(head) = read_head(&mut s).await else {
            return;
        };
        if answered_health(&mut s, &head).await {
            return;
        }
        if head.starts_with(b"GET /ws") {
            let key = header(&head, "sec-websocket-key").unwrap_or("");
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
            );
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.write_all(&[0x81, 0x02, b'h', b'i']).await;
        } else {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let event = b"id: 1\ndata: hi\n\n";
            let _ = s
                .write_all(format!("{:x}\r\n", event.len()).as_bytes())
                .await;
            let _ = s.write_all(event).await;
            let _ = s.write_all(b"\r\n").await;
        }
        let _ = s.flush().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Dies: the kernel resets what it still had.
        let _ = s.set_zero_linger();
    })
    .await
    .to_string()
}

async fn stack_with(target: &str) -> Stack {
    let stack = Stack::plain().await;
    stack.group("web", 100);
    stack.add_healthy("web", target).await;
    stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_whose_target_dies_gets_a_close_frame_not_a_reset() {
    let target = dying_target().await;
    let stack = stack_with(&target).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", stack.addr))
        .await
        .expect("websocket through the proxy");
    let first = ws.next().await.expect("a frame").expect("a message");
    assert_eq!(first, Message::text("hi"));
    let next = tokio::time::timeout(support::DEADLINE, ws.next())
        .await
        .expect("the proxy ends it");
    match next {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame with 1001, got {other:?}"),
    }
    let closed = stack.registry.group_metrics("web").map(|m| m.long_closed);
    assert_eq!(closed, Some(1));
}

/// Reads a whole response body off a raw connection to `addr`; whether it ended cleanly (with
/// the last chunk) and what it held.
async fn read_stream(addr: std::net::SocketAddr, path: &str) -> (bool, String) {
    read_answer(addr, format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")).await
}

async fn read_answer(addr: std::net::SocketAddr, request: String) -> (bool, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(support::DEADLINE, s.read_to_end(&mut got))
        .await
        .expect("the proxy ends the stream");
    let text = String::from_utf8_lossy(&got).into_owned();
    (text.ends_with("0\r\n\r\n"), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_whose_target_dies_ends_cleanly() {
    let target = dying_target().await;
    let stack = stack_with(&target).await;
    let (clean, text) = read_stream(stack.addr, "/events").await;
    assert!(text.contains("data: hi"), "{text}");
    assert!(clean, "ends with the last chunk: {text:?}");
    let m = stack.registry.group_metrics("web").expect("metrics");
    assert_eq!((m.long_closed, m.proxy_errors), (1, 0), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_asked_for_with_a_body_ends_cleanly_too() {
    // A request with a body takes hyper's client path, not the bodiless one.
    let target = dying_target().await;
    let stack = stack_with(&target).await;
    let request =
        "POST /events HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
            .to_owned();
    let (clean, text) = read_answer(stack.addr, request).await;
    assert!(text.contains("data: hi"), "{text}");
    assert!(clean, "ends with the last chunk: {text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ends_event_streams_cleanly_within_the_spread() {
    let app = Backend::start(&["--version", "v1"]).await;
    let stack = stack_with(&app.key()).await;
    let streams: Vec<_> = (0..4)
        .map(|_| tokio::spawn(read_stream(stack.addr, "/events?every=50ms")))
        .collect();
    wait_for_target(&stack, "the streams to be in flight", |t| t.in_flight == 4).await;
    let drain = stack
        .registry
        .deregister("web", &app.key(), Duration::from_millis(1000))
        .expect("registered");
    let report = drain.wait().await;
    assert_eq!((report.closed, report.cut), (4, 0), "{report:?}");
    for s in streams {
        let (clean, text) = s.await.expect("task");
        assert!(clean, "ends with the last chunk: {text:?}");
        assert!(text.contains("event: tick"), "{text}");
    }
    assert!(
        report.took_ms >= 500,
        "streams had half the drain to leave by themselves: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_stuck_inside_a_frame_is_still_closed_after_its_drain() {
    // The target accepts, sends the start of a frame and nothing more.
    let target = each_connection(|mut s| async move {
        let Some(head) = read_head(&mut s).await else {
            return;
        };
        if answered_health(&mut s, &head).await {
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n\x81\x05h")
            .await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    })
    .await
    .to_string();
    let stack = stack_with(&target).await;
    let mut client = tokio::net::TcpStream::connect(stack.addr)
        .await
        .expect("connect");
    client
        .write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .expect("write");
    wait_for_target(&stack, "the tunnel to count as upgraded", |t| {
        t.upgraded == 1
    })
    .await;
    let report = stack
        .registry
        .deregister("web", &target, Duration::from_millis(300))
        .expect("registered")
        .wait()
        .await;
    assert_eq!(
        report.closed, 0,
        "no clean close inside a frame: {report:?}"
    );
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut got))
        .await
        .expect("the proxy closes the connection after the frame grace")
        .expect("read");
    let broken = stack.registry.group_metrics("web").map(|m| m.long_broken);
    assert_eq!(broken, Some(1));
}
