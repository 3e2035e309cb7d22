//! The load balancer end to end: real sockets on 127.0.0.1, in-process demo-app targets.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cutover_proxy::target::TargetState;
use cutover_proxy::Balance;
use support::{client, health, wait_until, Backend, Stack};

async fn versions(stack: &Stack, n: usize) -> BTreeMap<String, usize> {
    let c = client();
    let mut counts = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (c, url) = (c.clone(), stack.url("/"));
        tasks.spawn(async move {
            let mut mine = Vec::new();
            for _ in (worker..n).step_by(8) {
                let resp = c.get(&url).send().await.expect("request through the proxy");
                assert_eq!(resp.status(), 200, "{:?}", resp.headers());
                mine.push(
                    resp.headers()["x-app-version"]
                        .to_str()
                        .expect("ascii")
                        .to_owned(),
                );
            }
            mine
        });
    }
    while let Some(done) = tasks.join_next().await {
        for v in done.expect("join") {
            *counts.entry(v).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_groups_split_traffic_within_three_percent() {
    let stack = Stack::plain().await;
    let blue = Backend::start(&["--version", "blue"]).await;
    let green = Backend::start(&["--version", "green"]).await;
    stack.group("blue", 70);
    stack.group("green", 30);
    stack.add_healthy("blue", &blue.key()).await;
    stack.add_healthy("green", &green.key()).await;
    let counts = versions(&stack, 10_000).await;
    let green_share = counts["green"] as f64 / 10_000.0;
    assert!(
        (green_share - 0.30).abs() <= 0.03,
        "green took {green_share:.3} of traffic: {counts:?}"
    );

    stack
        .registry
        .set_weights(&[("blue", 0), ("green", 100)])
        .expect("flip");
    let counts = versions(&stack, 200).await;
    assert_eq!(
        counts.get("green"),
        Some(&200),
        "one routing change moves all new traffic: {counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_with_nothing_healthy_loses_its_share_instead_of_failing_open() {
    let stack = Stack::plain().await;
    let blue = Backend::start(&["--version", "blue"]).await;
    let mut open = health();
    open.fail_open = true;
    for (name, weight) in [("blue", 90), ("green", 10)] {
        stack
            .registry
            .ensure_group(name, weight, Balance::RoundRobin, open.clone())
            .expect("group");
    }
    stack.add_healthy("blue", &blue.key()).await;
    // green's only target refuses connections and never passes a check: it would fail open.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    stack
        .registry
        .register("green", &dead.to_string())
        .await
        .expect("register");
    let table = stack.registry.table();
    let green = table
        .groups
        .iter()
        .find(|g| &*g.name == "green")
        .expect("green");
    assert!(
        green.targets.is_empty(),
        "another group is healthy, so green does not fail open"
    );
    drop(table);
    let counts = versions(&stack, 500).await;
    assert_eq!(counts.get("blue"), Some(&500), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_refuses_connections_costs_the_client_nothing() {
    let stack = Stack::plain().await;
    let up = Backend::start(&["--version", "up"]).await;
    let doomed = Backend::start(&["--version", "doomed"]).await;
    stack.group("web", 100);
    stack.add_healthy("web", &up.key()).await;
    stack.add_healthy("web", &doomed.key()).await;
    // Still healthy in the table, but nothing listens any more: every pick of it must be retried.
    doomed.stop();
    wait_until("the stopped target to refuse connections", || {
        std::net::TcpStream::connect(doomed.addr).is_err()
    })
    .await;
    let counts = versions(&stack, 400).await;
    assert_eq!(counts.get("up"), Some(&400), "{counts:?}");
    let m = stack.registry.group_metrics("web").expect("metrics");
    assert!(
        m.connect_errors >= 1,
        "the refused connections were retried, not avoided by luck"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deregistering_drains_the_request_in_flight_and_moves_new_ones_at_once() {
    let stack = Stack::plain().await;
    let slow = Backend::start(&["--version", "slow", "--latency", "2s"]).await;
    let fast = Backend::start(&["--version", "fast"]).await;
    stack.group("web", 100);
    stack.add_healthy("web", &slow.key()).await;
    let url = stack.url("/");
    let started = Instant::now();
    let in_flight =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    wait_until("the slow request to be in flight", || {
        stack.registry.status()[0]
            .targets
            .iter()
            .any(|t| t.in_flight == 1)
    })
    .await;
    stack.add_healthy("web", &fast.key()).await;

    let drain = stack
        .registry
        .deregister("web", &slow.key(), Duration::from_secs(10))
        .expect("registered");
    assert_eq!(
        stack.state("web", &slow.key()),
        Some((
            TargetState::Draining,
            Some("Target.DeregistrationInProgress")
        ))
    );
    let counts = versions(&stack, 50).await;
    assert_eq!(
        counts.get("fast"),
        Some(&50),
        "new requests avoid the draining target at once: {counts:?}"
    );

    let report = drain.wait().await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the drain resolved before the request finished"
    );
    assert_eq!((report.completed, report.cut), (1, 0), "{report:?}");
    assert_eq!(in_flight.await.expect("join").expect("slow request"), 200);
    assert_eq!(
        stack.state("web", &slow.key()),
        None,
        "a drained target leaves the group"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_deadline_cuts_and_reports() {
    let stack = Stack::plain().await;
    let slow = Backend::start(&["--version", "slow", "--latency", "5s"]).await;
    stack.group("web", 100);
    stack.add_healthy("web", &slow.key()).await;
    let url = stack.url("/");
    let _in_flight =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    wait_until("the request to be in flight", || {
        stack.registry.status()[0]
            .targets
            .iter()
            .any(|t| t.in_flight == 1)
    })
    .await;
    let t = Instant::now();
    let report = stack
        .registry
        .deregister("web", &slow.key(), Duration::from_millis(300))
        .expect("registered")
        .wait()
        .await;
    assert_eq!(report.cut, 1, "{report:?}");
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the deadline bounds the drain: {:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_carry_their_reason() {
    let stack = Stack::plain().await;
    stack.group("web", 100);
    let resp = client().get(stack.url("/")).send().await.expect("request");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-cutover-error"], "no-healthy-targets");
    assert!(resp
        .text()
        .await
        .expect("body")
        .contains("no-healthy-targets"));

    // Fail open: every target unhealthy, so all are tried, and none answers.
    let mut open = health();
    open.fail_open = true;
    stack
        .registry
        .ensure_group("web", 100, Balance::RoundRobin, open)
        .expect("group");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    stack
        .registry
        .register("web", &dead.to_string())
        .await
        .expect("register");
    let resp = client().get(stack.url("/")).send().await.expect("request");
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-cutover-error"], "connect-failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_report_every_reason() {
    let stack = Stack::plain().await;
    let mut h = health();
    h.timeout = Duration::from_millis(200);
    stack
        .registry
        .ensure_group("web", 100, Balance::RoundRobin, h)
        .expect("group");
    let failing = Backend::start(&["--fail-health"]).await;
    let slow = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let slow_addr = slow.local_addr().expect("addr").to_string();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .to_string();
    let fine = Backend::start(&[]).await;

    stack
        .registry
        .register("web", &fine.key())
        .await
        .expect("register");
    assert_eq!(
        stack.state("web", &fine.key()),
        Some((TargetState::Initial, Some("Elb.InitialHealthChecking")))
    );
    stack
        .wait_state("web", &fine.key(), TargetState::Healthy)
        .await;
    assert_eq!(
        stack.state("web", &fine.key()),
        Some((TargetState::Healthy, None))
    );

    for target in [failing.key(), slow_addr.clone(), dead.clone()] {
        stack
            .registry
            .register("web", &target)
            .await
            .expect("register");
    }
    for (target, reason) in [
        (failing.key(), "Target.ResponseCodeMismatch"),
        (slow_addr, "Target.Timeout"),
        (dead, "Target.FailedHealthChecks"),
    ] {
        stack
            .wait_state("web", &target, TargetState::Unhealthy)
            .await;
        assert_eq!(
            stack.state("web", &target),
            Some((TargetState::Unhealthy, Some(reason)))
        );
    }
    let counts = versions(&stack, 30).await;
    assert_eq!(
        counts.values().sum::<usize>(),
        30,
        "unhealthy targets get no traffic"
    );
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_per_target_and_render_as_prometheus() {
    let stack = Stack::plain().await;
    let app = Backend::start(&["--error-rate", "1.0"]).await;
    stack
        .registry
        .ensure_group("web", 100, Balance::LeastOutstanding, health())
        .expect("group");
    stack.add_healthy("web", &app.key()).await;
    for _ in 0..20 {
        assert_eq!(
            client()
                .get(stack.url("/"))
                .send()
                .await
                .expect("request")
                .status(),
            500
        );
    }
    let m = stack.registry.group_metrics("web").expect("metrics");
    assert_eq!(m.requests, 20);
    assert_eq!(m.responses[4], 20);
    assert!((m.error_rate() - 1.0).abs() < f64::EPSILON);
    assert!(m.quantile(0.99).is_some());
    let text = stack.registry.metrics_text();
    assert!(
        text.contains(&format!(
            "cutover_responses_total{{group=\"web\",target=\"{}\",class=\"5xx\"}} 20",
            app.key()
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_eject_a_target_before_active_checks_notice() {
    let stack = Stack::plain().await;
    let mut slow_checks = health();
    // One pass admits; the next check is a minute away, so only passive health can act.
    slow_checks.thresholds.healthy = 1;
    slow_checks.interval = Duration::from_secs(60);
    stack
        .registry
        .ensure_group("web", 100, Balance::RoundRobin, slow_checks)
        .expect("group");
    let up = Backend::start(&["--version", "up"]).await;
    let doomed = Backend::start(&["--version", "doomed"]).await;
    stack.add_healthy("web", &up.key()).await;
    stack.add_healthy("web", &doomed.key()).await;
    doomed.stop();
    wait_until("the stopped target to refuse connections", || {
        std::net::TcpStream::connect(doomed.addr).is_err()
    })
    .await;
    let counts = versions(&stack, 100).await;
    assert_eq!(counts.get("up"), Some(&100));
    wait_until("the refusing target to be ejected", || {
        stack.registry.status()[0]
            .targets
            .iter()
            .any(|t| t.target == doomed.key() && t.ejected)
    })
    .await;
    let before = stack
        .registry
        .group_metrics("web")
        .expect("metrics")
        .connect_errors;
    let _ = versions(&stack, 100).await;
    let after = stack
        .registry
        .group_metrics("web")
        .expect("metrics")
        .connect_errors;
    assert_eq!(after, before, "an ejected target is not tried at all");
}

/// What a [`one_answer_per_connection`] target does after its one answer.
#[derive(Clone, Copy)]
enum AfterAnswer {
    /// Reads the next request, then drops the connection unanswered: a keep-alive close racing
    /// the proxy's reuse of the connection.
    DropTheNext,
    /// Writes a 408 unasked 100 ms later and closes, as some servers do when a kept-alive
    /// connection times out.
    Write408,
}

/// A target that answers the first request on each connection, then does `after`.
async fn one_answer_per_connection(after: AfterAnswer) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    support::each_connection(move |mut s| async move {
        let mut buf = vec![0u8; 8192];
        let mut seen = Vec::new();
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-app-version: once\r\n\r\nok";
        if s.write_all(ok.as_bytes()).await.is_err() {
            return;
        }
        match after {
            AfterAnswer::DropTheNext => {
                let _ = s.read(&mut buf).await;
            }
            AfterAnswer::Write408 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let timeout =
                    "HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
                let _ = s.write_all(timeout.as_bytes()).await;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_is_sent_again_when_a_reused_connection_closes_under_it() {
    let stack = Stack::one_worker().await;
    let target = one_answer_per_connection(AfterAnswer::DropTheNext).await;
    stack.group("web", 100);
    stack.add_healthy("web", &target.to_string()).await;
    let c = client();
    assert_eq!(
        c.get(stack.url("/")).send().await.expect("first").status(),
        200
    );
    // Idle long enough to count as at risk, then reused: the target drops it; GET goes again.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        c.get(stack.url("/")).send().await.expect("second").status(),
        200
    );
    // A POST's bytes reached the target: it is never sent twice, whatever happens. (Requests
    // with a body have connections of their own: the first POST opens one, the second reuses it.)
    let first = c
        .post(stack.url("/"))
        .body("pay 5")
        .send()
        .await
        .expect("post");
    assert_eq!(first.status(), 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let resp = c
        .post(stack.url("/"))
        .body("pay 10")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-cutover-error"], "target-reset");
}

/// A target speaking HTTP/1.x by hand, each path a framing the proxy must get right: chunked in
/// pieces with a trailer, close-delimited, interim 103 first, HEAD with a length, garbage. It
/// records which paths each connection carried, to show which connections were reused.
async fn scripted_target() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Vec<String>>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let connections = log.clone();
    let addr = support::each_connection(move |mut s| {
        let index = {
            let mut all = connections.lock().expect("lock");
            all.push(Vec::new());
            all.len() - 1
        };
        let connections = connections.clone();
        async move {
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 8192];
            loop {
                let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                    continue;
                };
                let head = String::from_utf8_lossy(&seen[..end]).to_string();
                seen.drain(..end + 4);
                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                connections.lock().expect("lock")[index].push(path.clone());
                let pieces: Vec<&[u8]> = match path.as_str() {
                    "/chunked" => vec![
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nwi",
                        b"ki\r\n5;note=x\r\npedia\r\n",
                        b"0\r\nx-trailer: t\r\n\r\n",
                    ],
                    "/close" => vec![b"HTTP/1.0 200 OK\r\n\r\nuntil", b" the close"],
                    "/hints" => vec![
                        b"HTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n",
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
                    ],
                    "/head" => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n"],
                    "/garbage" => vec![b"SPDY/9 what\r\n\r\n"],
                    _ => vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
                };
                for piece in pieces {
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                    let _ = s.flush().await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if path == "/close" || path == "/garbage" {
                    return;
                }
            }
        }
    })
    .await;
    (addr, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_requests_get_every_framing_right_and_reuse_connections() {
    let stack = Stack::one_worker().await;
    let (target, connections) = scripted_target().await;
    stack.group("web", 100);
    stack.add_healthy("web", &target.to_string()).await;
    let c = client();
    for _ in 0..2 {
        let resp = c.get(stack.url("/chunked")).send().await.expect("chunked");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.expect("body"), "wikipedia");
    }
    let resp = c.get(stack.url("/close")).send().await.expect("close");
    assert_eq!(resp.text().await.expect("body"), "until the close");
    let resp = c.get(stack.url("/hints")).send().await.expect("hints");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "final");
    let resp = c.head(stack.url("/head")).send().await.expect("head");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-length"], "9");
    let resp = c.get(stack.url("/after-head")).send().await.expect("after");
    assert_eq!(resp.text().await.expect("body"), "ok");
    let resp = c.get(stack.url("/garbage")).send().await.expect("garbage");
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-cutover-error"], "target-reset");

    let log = connections.lock().expect("lock").clone();
    let carried = |path: &str| log.iter().position(|c| c.iter().any(|p| p == path));
    // Both chunked answers came on one connection; the HEAD's connection carried the next
    // request too; a close-delimited answer's connection carried nothing after it.
    let chunked = log
        .iter()
        .find(|c| c.iter().filter(|p| *p == "/chunked").count() == 2);
    assert!(chunked.is_some(), "{log:?}");
    assert_eq!(carried("/head"), carried("/after-head"), "{log:?}");
    assert_ne!(carried("/close"), carried("/hints"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_target_writes_on_an_idle_connection_is_never_taken_for_an_answer() {
    let target = one_answer_per_connection(AfterAnswer::Write408).await;
    let stack = Stack::one_worker().await;
    stack.group("web", 100);
    stack.add_healthy("web", &target.to_string()).await;
    let c = client();
    for _ in 0..3 {
        let resp = c.get(stack.url("/")).send().await.expect("get");
        assert_eq!(resp.status(), 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
