//! `cutover demo`: the whole story on this machine, with proof: three demo-app instances behind
//! the load balancer, steady load from the probe, a rolling deploy to v2 that succeeds, a v3 that
//! fails its health checks and is rolled back by itself, a canary v4 that answers errors and is
//! stopped by analysis, a blue-green v5, and a rollback that flips traffic back to the warm v2.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_api::admin as api;
use cutover_probe::{Load, ProbeConfig, Report};
use serde_json::{json, Value};

use super::status::Admin;
use super::up::{run_stack, Running, Serving};
use crate::token;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the final report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Requests per second the probe sends throughout.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
}

/// The built-in stack: nothing to configure, free ports only, everything on 127.0.0.1.
const STACK: &str = r#"
[service]
name = "demo"
[release]
version = "v1"
command = "demo-app --port {port} --version {version}"
stop_timeout = "5s"
[group]
desired = 3
[health]
interval = "500ms"
timeout = "250ms"
healthy_threshold = 2
unhealthy_threshold = 2
[listener]
bind = "127.0.0.1:0"
[admin]
bind = "127.0.0.1:0"
[deploy]
max_surge = 1
max_unavailable = 0
drain_timeout = "10s"
progress_deadline = "30s"
rollback_window = "10m"
steps = [{ weight = 10, pause = "20s" }]
[deploy.analysis]
min_requests = 40
max_error_rate = 0.05
max_p99 = "5s"
max_p99_ratio = 100.0
"#;

/// The canary chapter's share and the requests its analysis needs: together they bound the
/// failed answers clients may see from it (every request it took until the verdict, plus a
/// second of its share while the abort takes effect).
const CANARY_WEIGHT: f64 = 0.10;
const CANARY_MIN_REQUESTS: f64 = 40.0;

/// One chapter of the story, and what it must end as.
struct Chapter {
    version: &'static str,
    strategy: &'static str,
    command: Option<&'static str>,
    /// What makes this chapter's build special, for the narration.
    about: &'static str,
    expect: &'static str,
}

const CHAPTERS: [Chapter; 4] = [
    Chapter {
        version: "v2",
        strategy: "rolling",
        command: None,
        about: "",
        expect: "done",
    },
    Chapter {
        version: "v3",
        strategy: "rolling",
        command: Some("demo-app --port {port} --version {version} --fail-health"),
        about: ", a build whose health check fails",
        expect: "rolled_back",
    },
    Chapter {
        version: "v4",
        strategy: "canary",
        command: Some("demo-app --port {port} --version {version} --error-rate 0.2"),
        about: " at 10% of traffic, a build that answers 20% errors",
        expect: "rolled_back",
    },
    Chapter {
        version: "v5",
        strategy: "blue-green",
        command: None,
        about: "",
        expect: "done",
    },
];

pub fn run(args: Args) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cutover demo: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(story(&args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("cutover demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(json: bool, line: String) {
    if !json {
        eprintln!("{line}");
    }
}

async fn story(args: &Args) -> Result<bool, String> {
    let spec = cutover_spec::parse(
        STACK,
        std::path::Path::new("<built-in demo stack>"),
        std::path::Path::new("."),
    )
    .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a data dir: {e}"))?;
    let data_dir = dir.path().to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel::<Running>();
    let stack = tokio::spawn(run_stack(
        spec,
        data_dir.clone(),
        Serving::InProcess,
        Some(tx),
    ));
    let running = rx.await.map_err(|_| "the stack did not start".to_owned())?;
    let admin = Admin::new(
        running.admin,
        token::read(&data_dir).map_err(|e| e.to_string())?,
    );
    let t0 = Instant::now();
    let clock = move || format!("{:>5.1}s", t0.elapsed().as_secs_f64());
    say(
        args.json,
        format!(
            "{} stack up: load balancer on {}, starting 3 × demo-app v1",
            clock(),
            running.listener
        ),
    );
    wait_for_healthy(&admin, "v1", 3).await?;
    say(
        args.json,
        format!(
            "{} 3 × v1 healthy; probe starts at {} requests/s",
            clock(),
            args.rate
        ),
    );

    let stop_probe = Arc::new(AtomicBool::new(false));
    let config = ProbeConfig {
        url: format!("http://{}/", running.listener),
        load: Load::Rate {
            per_second: args.rate,
            connections: 64,
        },
        duration: Duration::from_secs(600),
        timeout: Duration::from_secs(2),
        stop: Some(stop_probe.clone()),
    };
    let json = args.json;
    let probe = tokio::spawn(async move {
        cutover_probe::run(&config, |s| {
            if !json {
                eprintln!("        probe {}", s.line());
            }
        })
        .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut deployments = Vec::new();
    let mut as_expected = true;
    for chapter in &CHAPTERS {
        say(
            args.json,
            format!(
                "{} deploy {} ({}){} (expected: {})",
                clock(),
                chapter.version,
                chapter.strategy,
                chapter.about,
                chapter.expect
            ),
        );
        let request = api::Deploy {
            version: chapter.version.to_owned(),
            strategy: Some(chapter.strategy.to_owned()),
            command: chapter.command.map(str::to_owned),
        };
        let d = deploy(&admin, &request).await?;
        let outcome = d.progress.name().to_owned();
        say(
            args.json,
            format!(
                "{} deployment {} to {}: {} in {} ms{}",
                clock(),
                d.id,
                chapter.version,
                outcome,
                d.duration_ms.unwrap_or(0),
                d.progress
                    .reason()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        );
        as_expected &= outcome == chapter.expect;
        deployments.push(json!({
            "version": chapter.version,
            "strategy": chapter.strategy,
            "expected": chapter.expect,
            "outcome": outcome,
            "reason": d.progress.reason(),
            "duration_ms": d.duration_ms,
        }));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // v2 is still warm beside v5: rolling back is one routing change.
    say(
        args.json,
        format!(
            "{} rollback (expected: a traffic flip back to the warm v2)",
            clock()
        ),
    );
    let d = deploy(&admin, &api::Rollback::default()).await?;
    let outcome = d.progress.name().to_owned();
    let flip_ms = d.flip_us.map(|us| us as f64 / 1000.0);
    say(
        args.json,
        format!(
            "{} rollback to {}: {} by a traffic flip in {}",
            clock(),
            d.to,
            outcome,
            flip_ms.map_or("?".to_owned(), |ms| format!("{ms:.2} ms"))
        ),
    );
    as_expected &= outcome == "done" && flip_ms.is_some();
    deployments.push(json!({
        "version": d.to,
        "strategy": "rollback",
        "expected": "done",
        "outcome": outcome,
        "reason": flip_ms.map(|ms| format!("traffic flip in {ms:.2} ms")),
        "duration_ms": d.duration_ms,
    }));
    tokio::time::sleep(Duration::from_secs(2)).await;

    stop_probe.store(true, Ordering::Relaxed);
    let report: Report = probe
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let status = admin.call(&api::GetStatus {}).await?;
    running.stop.cancel();
    let _ = stack.await;

    let release = status.release.unwrap_or_default();
    as_expected &= release == "v2";
    // The only failures clients may see are the bad canary's, and only within its share.
    let canary_bound = (CANARY_MIN_REQUESTS + CANARY_WEIGHT * args.rate).ceil() as u64;
    let passed = report.failed_infra == 0 && report.failed_app <= canary_bound && as_expected;
    let summary = json!({
        "passed": passed,
        "requests": report.requests,
        "ok": report.ok,
        "failed": report.failed,
        "failed_infra": report.failed_infra,
        "failed_app": report.failed_app,
        "versions": report.versions,
        "latency_ms": report.latency_ms,
        "release_at_end": release,
        "app_failures_allowed": canary_bound,
        "deployments": deployments,
        "timeline": report.timeline,
    });
    if args.json {
        println!("{summary}");
    } else {
        print_report(&report, &deployments, &release, canary_bound, passed);
    }
    Ok(passed)
}

fn print_report(
    report: &Report,
    deployments: &[Value],
    release: &str,
    canary_bound: u64,
    passed: bool,
) {
    println!();
    println!(
        "requests   {} ({} ok, {} failed: {} infra, {} app)",
        report.requests, report.ok, report.failed, report.failed_infra, report.failed_app
    );
    let versions: Vec<String> = report
        .versions
        .iter()
        .map(|(v, n)| format!("{v}:{n}"))
        .collect();
    println!("versions   {}", versions.join(" "));
    let l = &report.latency_ms;
    println!(
        "latency    p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.p50, l.p99, l.max
    );
    println!("over time  (second: share of answers by version)");
    for s in &report.timeline {
        let total: u64 = s.versions.values().sum();
        let mix: Vec<String> = s
            .versions
            .iter()
            .map(|(v, n)| format!("{v} {:>3.0}%", *n as f64 * 100.0 / total.max(1) as f64))
            .collect();
        println!(
            "  {:>3}s  {}{}",
            s.t,
            mix.join("  "),
            if s.failed > 0 {
                format!("  FAILED {}", s.failed)
            } else {
                String::new()
            }
        );
    }
    for d in deployments {
        println!(
            "deploy {:<3} {:<10} {:<12} (expected {:<11}) {:>6} ms  {}",
            d["version"].as_str().unwrap_or("?"),
            d["strategy"].as_str().unwrap_or("?"),
            d["outcome"].as_str().unwrap_or("?"),
            d["expected"].as_str().unwrap_or("?"),
            d["duration_ms"],
            d["reason"].as_str().unwrap_or("")
        );
    }
    println!("release    {release} serves all traffic");
    if passed {
        println!(
            "PASS: zero infrastructure failures, every outcome as expected; {} app errors, all \
             from the bad canary's 10% (at most {canary_bound} allowed)",
            report.failed_app
        );
    } else {
        println!("FAIL");
    }
}

async fn wait_for_healthy(admin: &Admin, version: &str, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = admin.call(&api::GetStatus {}).await?;
        let healthy = status
            .instances
            .iter()
            .filter(|i| i.version == version && i.state == cutover_deploy::State::Healthy)
            .count();
        if healthy >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{version} never had {n} healthy instances; is demo-app built beside cutover?"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a deployment with `request` and waits for its end.
async fn deploy<E>(admin: &Admin, request: &E) -> Result<api::Deployment, String>
where
    E: cutover_api::Endpoint<Reply = api::Deployment>,
{
    let id = admin.call(request).await?.id;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let d = admin.call(&api::GetDeployment { id }).await?;
        if d.finished_at.is_some() {
            return Ok(d);
        }
    }
}
