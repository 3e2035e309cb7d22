//! HTTP/1.x on the wire between a client and the proxy: pipelining, a connection handed from the
//! proxy's own path to hyper mid-way, HTTP/1.0 clients, absolute-form targets, shutdown.

mod support;

use std::time::{Duration, Instant};

use support::wire::{answers, exchange};
use support::{Backend, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn demo_stack() -> (Stack, Backend) {
    let stack = Stack::one_worker().await;
    let app = Backend::start(&["--version", "v1"]).await;
    stack.group("web", 100);
    stack.add_healthy("web", &app.key()).await;
    (stack, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_then_a_body_then_more_on_one_connection() {
    let (stack, _app) = demo_stack().await;
    // Two GETs in one write, a POST with a body (which hyper takes over), a GET after it.
    let answers = exchange(
        &stack,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /add_public_key HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n\r\nnot-key\
          GET /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        &[1],
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses.len(), 4, "{answers:?}");
    assert_eq!(statuses[0], 200, "{answers:?}");
    assert_eq!(statuses[1], 200, "{answers:?}");
    assert!(
        statuses[2] >= 400 && statuses[2] < 500,
        "the app judged the posted body: {answers:?}"
    );
    assert_eq!(statuses[3], 200, "{answers:?}");
    assert_eq!(answers[0].body, b"Hi");
    assert_eq!(answers[0].header("x-app-version"), Some("v1"));
    assert!(answers[1].body.is_empty(), "a HEAD answer has no body");
    assert_eq!(
        answers[1].header("content-length"),
        answers[0].header("content-length"),
        "HEAD keeps the length of the GET"
    );
    assert_eq!(answers[3].header("connection"), Some("close"));
    for a in &answers {
        assert!(a.header("date").is_some(), "every answer is dated: {a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_clients_get_no_chunks_and_keep_alive_only_when_asked() {
    // A target that answers chunked, so the proxy must re-frame the body for an HTTP/1.0 client.
    let target = support::answering_target(|_| {
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"
            .to_vec()
    })
    .await;
    let stack = Stack::one_worker().await;
    stack.group("web", 100);
    stack.add_healthy("web", &target.to_string()).await;
    let answers = exchange(&stack, b"GET /x HTTP/1.0\r\n\r\n", &[]).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].body, b"onetwo");
    assert_eq!(answers[0].header("transfer-encoding"), None);
    assert_eq!(answers[0].header("connection"), Some("close"));

    // HTTP/1.1 keeps the chunks; HTTP/1.0 with keep-alive gets a length-framed answer only
    // when there is one, so here the connection ends after it.
    let answers = exchange(
        &stack,
        b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].header("transfer-encoding"), Some("chunked"));
    assert_eq!(answers[0].body, b"onetwo");
    assert_eq!(answers[1].body, b"onetwo");
    assert_eq!(answers[1].header("connection"), Some("close"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_keep_alive_client_keeps_its_connection() {
    let (stack, _app) = demo_stack().await;
    let answers = exchange(
        &stack,
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /health HTTP/1.0\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].header("connection"), Some("keep-alive"));
    assert_eq!(answers[1].header("connection"), Some("close"));
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_and_malformed_requests_are_answered_properly() {
    let (stack, _app) = demo_stack().await;
    let answers = exchange(
        &stack,
        b"GET http://example.test/health HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
        &[],
    )
    .await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, 200, "{answers:?}");
    // After a good request, garbage: the good one is answered, then a 400.
    let answers = exchange(
        &stack,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNOT HTTP AT ALL\r\n\r\n",
        &[],
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 400], "{answers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight_and_closes_idle_connections() {
    let stack = Stack::one_worker().await;
    let app = Backend::start(&["--version", "slow", "--latency", "1s"]).await;
    stack.group("web", 100);
    stack.add_healthy("web", &app.key()).await;
    let mut idle = TcpStream::connect(stack.addr).await.expect("connect");
    let mut busy = TcpStream::connect(stack.addr).await.expect("connect");
    busy.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    support::wait_until("the request to be in flight", || {
        stack.registry.status()[0]
            .targets
            .iter()
            .any(|t| t.in_flight == 1)
    })
    .await;
    let started = Instant::now();
    stack.shutdown();
    let mut wire = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut wire))
        .await
        .expect("the idle connection is closed")
        .expect("read");
    assert!(wire.is_empty(), "nothing was asked on it");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "closed at once, not after the busy one: {:?}",
        started.elapsed()
    );
    let mut wire = Vec::new();
    tokio::time::timeout(support::DEADLINE, busy.read_to_end(&mut wire))
        .await
        .expect("the busy connection ends after its answer")
        .expect("read");
    let answers = answers(&wire, &[]);
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].header("connection"), Some("close"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_arrive_whole_by_length_and_by_chunks() {
    let stack = Stack::one_worker().await;
    let target = support::big_body_target().await;
    stack.group("web", 100);
    stack.add_healthy("web", &target.to_string()).await;
    for path in ["/length", "/chunked", "/length"] {
        let resp = support::client()
            .get(stack.url(path))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
        let body = resp.bytes().await.expect("body");
        assert!(
            body == support::pattern(support::BIG_BODY),
            "{path}: {} bytes, not the pattern",
            body.len()
        );
    }
}
