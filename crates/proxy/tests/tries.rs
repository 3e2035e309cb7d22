//! Hung, slow and resetting targets: per-try timeouts, ejection of a target that answers
//! nothing, the retry budget, latency-aware balancing, and answers broken off mid-body.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_proxy::headers::HeaderRules;
use cutover_proxy::tries::{RetryBudget, TryTimeout};
use cutover_proxy::{ListenerOptions, Proxy};
use support::{client, each_connection, wait_until, Backend, Stack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A target that answers every request head on kept-open connections, `/?slow` after 400 ms,
/// until `hung` is set: from then on it reads and never answers, as a stopped process (SIGSTOP)
/// or a deadlocked one whose kernel still accepts connections.
async fn hangable_target() -> (String, Arc<AtomicBool>) {
    let hung = Arc::new(AtomicBool::new(false));
    let flag = hung.clone();
    let addr = each_connection(move |mut s| {
        let hung = flag.clone();
        async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head: Vec<u8> = seen.drain(..end + 4).collect();
                    if hung.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    if head.starts_with(b"GET /?slow") {
                        tokio::time::sleep(Duration::from_millis(400)).await;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nx-app-version: hangs\r\n\r\nhangs\r\n";
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                }
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        }
    })
    .await;
    (addr.to_string(), hung)
}

async fn stack(configure: impl FnOnce(&mut Proxy)) -> Stack {
    let stack = Stack::start_with(
        HeaderRules::default(),
        ListenerOptions {
            workers: 2,
            ..ListenerOptions::default()
        },
        configure,
    )
    .await;
    stack.group("web", 100);
    stack
}

fn ejected(stack: &Stack, target: &str) -> bool {
    stack
        .registry
        .status()
        .into_iter()
        .flat_map(|g| g.targets)
        .any(|t| t.target == target && t.ejected)
}

/// `n` GETs at once; each one's status and how long it took.
async fn burst(stack: &Stack, n: usize) -> Vec<(u16, Duration)> {
    let client = client();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (client, url) = (client.clone(), stack.url("/"));
        tasks.spawn(async move {
            let started = Instant::now();
            let status = match client.get(&url).send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            (status, started.elapsed())
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_target_is_ejected_at_once_and_its_requests_are_answered_elsewhere() {
    let stack = stack(|_| {}).await;
    let up = Backend::start(&["--version", "up"]).await;
    let (hangs, hung) = hangable_target().await;
    stack.add_healthy("web", &up.key()).await;
    stack.add_healthy("web", &hangs).await;
    // Enough answers for the group's p99 to be known, so `auto` is at its floor.
    let warm = burst(&stack, 200).await;
    assert!(warm.iter().all(|(s, _)| *s == 200), "{warm:?}");
    wait_until("the group's p99 to be known", || {
        stack
            .registry
            .table()
            .groups
            .iter()
            .flat_map(|g| g.targets.iter())
            .all(|b| b.pace.group_p99().is_some())
    })
    .await;

    hung.store(true, Ordering::SeqCst);
    let since = Instant::now();
    let answers = burst(&stack, 40).await;
    let failed: Vec<_> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(failed.is_empty(), "every request answered: {failed:?}");
    let slowest = answers.iter().map(|(_, t)| *t).max().unwrap_or_default();
    assert!(
        slowest < Duration::from_millis(1500),
        "no request waits long for the hung target: {slowest:?}"
    );
    wait_until("the hung target to be ejected", || ejected(&stack, &hangs)).await;
    assert!(
        since.elapsed() < Duration::from_secs(2),
        "ejected within a try, not by active checks: {:?}",
        since.elapsed()
    );
    // Out of rotation now: new requests never wait for it.
    let after = burst(&stack, 20).await;
    assert!(
        after
            .iter()
            .all(|(s, t)| *s == 200 && *t < Duration::from_millis(250)),
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_with_nowhere_else_to_go_waits_and_its_target_stays() {
    let stack = stack(|p| p.try_timeout = TryTimeout::After(Duration::from_millis(150))).await;
    let (only, _) = hangable_target().await;
    stack.add_healthy("web", &only).await;
    let client = client();
    let started = Instant::now();
    let slow = client
        .get(stack.url("/?slow"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(slow.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(
        !ejected(&stack, &only),
        "the last target taking traffic is never ejected"
    );
    let fast = client.get(stack.url("/")).send().await.expect("an answer");
    assert_eq!(fast.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_on_a_target_that_keeps_answering_is_retried_without_ejecting_it() {
    slow_requests_on_a_busy_target(20, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_budget_a_slow_request_waits_where_it_is() {
    slow_requests_on_a_busy_target(0, false).await;
}

/// Slow requests on a target that answers fast ones meanwhile, with a retry budget of
/// `percent`; whether they should be sent elsewhere after their try.
async fn slow_requests_on_a_busy_target(percent: u32, retried: bool) {
    let stack = stack(|p| {
        p.try_timeout = TryTimeout::After(Duration::from_millis(200));
        p.budget = RetryBudget::new(percent);
    })
    .await;
    let (busy, _) = hangable_target().await;
    let up = Backend::start(&["--version", "up"]).await;
    stack.add_healthy("web", &busy).await;
    stack.add_healthy("web", &up.key()).await;
    // Fast requests keep the busy target answering while slow ones wait on it.
    let client = client();
    let done = Arc::new(AtomicBool::new(false));
    let keep_answering = {
        let (client, url, done) = (client.clone(), stack.url("/"), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::SeqCst) {
                let _ = client.get(&url).send().await;
            }
        })
    };
    // Until a slow request has met the busy target (round robin sends some to demo-app, which
    // answers /?slow at once): after its try with a budget, or after 400 ms without one.
    let gave_up = || {
        stack
            .registry
            .group_metrics("web")
            .map_or(0, |m| m.proxy_errors)
    };
    let mut met = false;
    while !met {
        let started = Instant::now();
        let r = client
            .get(stack.url("/?slow"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(r.status(), 200);
        let took = started.elapsed();
        let from_busy = r
            .headers()
            .get("x-app-version")
            .is_some_and(|v| v == "hangs");
        if retried {
            assert!(!from_busy, "the slow try was given up");
            assert!(
                took < Duration::from_millis(390),
                "sent elsewhere after its try: {took:?}"
            );
            met = gave_up() > 0;
        } else if from_busy {
            assert!(
                took >= Duration::from_millis(400),
                "waited for its answer: {took:?}"
            );
            assert_eq!(gave_up(), 0, "nothing given up without a budget");
            met = true;
        }
    }
    assert!(
        !ejected(&stack, &busy),
        "a target that answers other requests is slow, not hung"
    );
    done.store(true, Ordering::SeqCst);
    keep_answering.await.expect("task");
}

/// Requests answered by each version, sent `n` at a time for `total`.
async fn shares(
    stack: &Stack,
    total: usize,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let client = client();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..total / n {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (client, url) = (client.clone(), stack.url("/"));
            tasks.spawn(async move { client.get(&url).send().await });
        }
        while let Some(r) = tasks.join_next().await {
            let r = r.expect("task").expect("an answer");
            assert_eq!(r.status(), 200);
            let version = r
                .headers()
                .get("x-app-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_owned();
            *counts.entry(version).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_sends_a_slow_target_a_small_share_where_round_robin_sends_it_its_quarter() {
    let slow = Backend::start(&["--version", "slow", "--latency", "100ms"]).await;
    let fast: Vec<Backend> = fast_backends().await;
    let mut seen = Vec::new();
    for balance in [
        cutover_proxy::Balance::RoundRobin,
        cutover_proxy::Balance::PeakEwma,
    ] {
        let stack =
            Stack::start_with(HeaderRules::default(), ListenerOptions::default(), |_| {}).await;
        stack
            .registry
            .ensure_group("web", 100, balance, support::health())
            .expect("group");
        stack.add_healthy("web", &slow.key()).await;
        for f in &fast {
            stack.add_healthy("web", &f.key()).await;
        }
        let counts = shares(&stack, 400, 8).await;
        seen.push((balance, counts.get("slow").copied().unwrap_or(0)));
    }
    assert!(
        (80..=120).contains(&seen[0].1),
        "round robin: about a quarter each ({seen:?})"
    );
    assert!(
        seen[1].1 <= 20,
        "peak-ewma: at most 5% to the slow one ({seen:?})"
    );
}

async fn fast_backends() -> Vec<Backend> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(Backend::start(&["--version", "fast"]).await);
    }
    out
}

/// A target whose every answer breaks off in its body with a reset: head and half the body,
/// then SO_LINGER 0 and close. Its health checks pass.
async fn resetting_target() -> String {
    each_connection(|mut s| async move {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        if seen.starts_with(b"GET /health") {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
            return;
        }
        let _ = s
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\nx-app-version: resets\r\n\r\nhalf of it",
            )
            .await;
        let _ = s.flush().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = s.set_zero_linger();
    })
    .await
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_broken_off_mid_body_by_a_reset_is_sent_again_elsewhere() {
    let stack = stack(|_| {}).await;
    let up = Backend::start(&["--version", "up"]).await;
    let resets = resetting_target().await;
    stack.add_healthy("web", &up.key()).await;
    stack.add_healthy("web", &resets).await;
    let client = client();
    for _ in 0..40 {
        let r = client.get(stack.url("/")).send().await.expect("an answer");
        assert_eq!(r.status(), 200);
        let version = r
            .headers()
            .get("x-app-version")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = r.text().await.expect("a whole body");
        assert_eq!(version.as_deref(), Some("up"), "{body}");
    }
}
