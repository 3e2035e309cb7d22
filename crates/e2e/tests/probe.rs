//! `cutover probe` against real demo-app processes: counting, classification, and honest latency.

use std::io::{Read, Write};
use std::net::TcpListener;

use cutover_e2e::{cutover, dead_port, DemoApp};
use serde_json::Value;

fn probe(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["probe", "--json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = cutover(&all);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}\n{stderr}"));
    (code, report, stderr)
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn a_healthy_service_passes_and_versions_are_counted() {
    let app = DemoApp::start(&["--version", "v9"]);
    let (code, r, stderr) = probe(&[&app.url("/"), "--rate", "200", "--duration", "2s"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(n(&r["failed"]), 0);
    assert!(
        (380..=400).contains(&n(&r["requests"])),
        "requests {}",
        r["requests"]
    );
    assert_eq!(r["ok"], r["requests"]);
    assert_eq!(r["versions"]["v9"], r["requests"]);
    assert_eq!(r["statuses"]["200"], r["requests"]);
    for key in ["p50", "p90", "p99", "max"] {
        assert!(
            r["latency_ms"][key].as_f64().is_some_and(|v| v > 0.0),
            "latency_ms.{key}: {}",
            r["latency_ms"]
        );
    }
    let timeline = r["timeline"].as_array().expect("timeline");
    assert!(timeline.len() >= 2, "{timeline:?}");
    assert_eq!(timeline[0]["t"], 0);
    assert!(
        n(&timeline[0]["ok"]) > 100 && n(&timeline[0]["versions"]["v9"]) > 100,
        "{}",
        timeline[0]
    );
    assert!(
        stderr.lines().filter(|l| l.starts_with("t=")).count() >= 1,
        "no progress lines: {stderr}"
    );
}

#[test]
fn app_errors_are_counted_as_app_failures() {
    let app = DemoApp::start(&["--error-rate", "0.2"]);
    let (code, r, _) = probe(&[&app.url("/"), "--concurrency", "4", "--duration", "2s"]);
    assert_eq!(code, 1);
    let (requests, failed_app) = (n(&r["requests"]), n(&r["failed_app"]));
    let share = failed_app as f64 / requests as f64;
    assert!(requests > 500, "too few requests: {requests}");
    assert!(
        (0.15..=0.25).contains(&share),
        "{failed_app} of {requests} failed"
    );
    assert_eq!(n(&r["failed_infra"]), 0);
    assert_eq!(r["errors"]["app_error"], r["failed_app"]);
    let (code, _, _) = probe(&[
        &app.url("/"),
        "--concurrency",
        "2",
        "--duration",
        "1s",
        "--max-failed",
        "1000000",
    ]);
    assert_eq!(code, 0, "--max-failed allows that many failures");
}

#[test]
fn nothing_listening_is_an_infra_failure() {
    let url = format!("http://127.0.0.1:{}/", dead_port());
    let (code, r, _) = probe(&[&url, "--rate", "50", "--duration", "1s"]);
    assert_eq!(code, 1);
    assert!(n(&r["requests"]) >= 45);
    assert_eq!(r["failed_infra"], r["requests"]);
    assert_eq!(r["errors"]["connect"], r["requests"]);
    assert_eq!(n(&r["ok"]), 0);
}

#[test]
fn a_5xx_marked_by_the_proxy_is_an_infra_failure() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(read) = stream.read(&mut buf) {
                    if read == 0 {
                        break;
                    }
                    let resp = "HTTP/1.1 502 Bad Gateway\r\nx-cutover-error: connect\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(resp.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let (code, r, _) = probe(&[
        &format!("http://{addr}/"),
        "--concurrency",
        "1",
        "--duration",
        "500ms",
    ]);
    assert_eq!(code, 1);
    assert!(n(&r["requests"]) > 0);
    assert_eq!(r["errors"]["proxy_error"], r["requests"]);
    assert_eq!(r["failed_infra"], r["requests"]);
    assert_eq!(n(&r["failed_app"]), 0);
}

#[test]
fn a_stall_shows_in_p99_without_coordinated_omission() {
    // One connection to a 200 ms service serves 5 requests/s; 20/s are scheduled, so
    // requests queue and each one's latency counts from when it should have been sent.
    let app = DemoApp::start(&["--latency", "200ms"]);
    let (code, open, _) = probe(&[
        &app.url("/"),
        "--rate",
        "20",
        "--connections",
        "1",
        "--duration",
        "2s",
        "--timeout",
        "30s",
    ]);
    assert_eq!(code, 0, "slow is not failed: {open}");
    let p99 = open["latency_ms"]["p99"].as_f64().expect("p99");
    let p50 = open["latency_ms"]["p50"].as_f64().expect("p50");
    assert!(p99 > 4000.0, "open-loop p99 {p99} ms hides the stall");
    assert!(p50 > 1000.0, "open-loop p50 {p50} ms hides the queue");
    // A closed-loop client waits politely and reports only the service time: the omission.
    let (_, closed, _) = probe(&[&app.url("/"), "--concurrency", "1", "--duration", "1s"]);
    let closed_p99 = closed["latency_ms"]["p99"].as_f64().expect("p99");
    assert!(closed_p99 < 1000.0, "closed-loop p99 {closed_p99}");
}

#[test]
fn timeouts_are_infra_failures() {
    let app = DemoApp::start(&["--latency", "2s"]);
    let (code, r, _) = probe(&[
        &app.url("/"),
        "--rate",
        "10",
        "--duration",
        "1s",
        "--timeout",
        "300ms",
    ]);
    assert_eq!(code, 1);
    assert_eq!(r["errors"]["timeout"], r["requests"]);
    assert_eq!(r["failed_infra"], r["requests"]);
}

#[test]
fn bad_arguments_are_refused() {
    let (code, _, stderr) = cutover(&["probe", "ftp://127.0.0.1/"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("scheme `ftp` is not supported"), "{stderr}");
    let (code, _, stderr) = cutover(&["probe", "http://127.0.0.1:1/", "--rate", "0"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("rate must be above 0"), "{stderr}");
    let (code, _, stderr) = cutover(&["probe", "http://127.0.0.1:1/", "--duration", "soon"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a duration"), "{stderr}");
    // Values no clock can add are refused before anything is sent, not panicked on.
    let (code, _, stderr) = cutover(&[
        "probe",
        "http://127.0.0.1:1/",
        "--timeout",
        "18446744073709551615s",
    ]);
    assert_eq!(code, 2, "{stderr}");
    let (code, _, stderr) = cutover(&["probe", "http://127.0.0.1:1/", "--rate", "1e12"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("at most 200000 per second"), "{stderr}");
}

#[test]
fn a_run_that_sent_nothing_never_passes() {
    let app = DemoApp::start(&[]);
    let (code, _, stderr) = cutover(&["probe", &app.url("/"), "--duration", "0s", "--quiet"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no request was sent"), "{stderr}");
}
