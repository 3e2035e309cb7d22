//! `cutover deploy VERSION`, `cutover history` and `cutover stop`: deployments through the admin API.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use super::status::{block_on, finish, Admin, Stack};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The version to roll out.
    pub version: String,
    /// Deploy strategy.
    #[arg(long, default_value = "rolling")]
    pub strategy: String,
    /// This release's own command template (default: the stack file's release.command).
    #[arg(long)]
    pub command: Option<String>,
    /// Return once the deployment has started.
    #[arg(long)]
    pub no_wait: bool,
    /// Print the final deployment as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: Stack,
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: Stack,
}

/// How often the CLI looks at a running deployment.
const POLL: Duration = Duration::from_millis(250);

pub fn run(args: Args) -> ExitCode {
    let mut rolled_back = false;
    let result = block_on(async {
        let admin = Admin::for_stack(&args.stack)?;
        let body =
            json!({ "version": args.version, "strategy": args.strategy, "command": args.command });
        let started = admin.post("/deploy", &body).await?;
        let id = started["id"]
            .as_u64()
            .ok_or("the admin API did not say which deployment started")?;
        if !args.json {
            eprintln!(
                "deployment {id}: {} -> {}",
                started["from"].as_str().unwrap_or("?"),
                args.version
            );
        }
        if args.no_wait {
            if args.json {
                println!("{started}");
            }
            return Ok(());
        }
        let mut last = String::new();
        let deployment = loop {
            tokio::time::sleep(POLL).await;
            let d = admin.get(&format!("/deployments/{id}")).await?;
            let status = admin.get("/status").await?;
            let line = progress_line(&d, &status);
            if !args.json && line != last {
                eprintln!("{line}");
                last = line;
            }
            if d["finished_at"].is_string() {
                break d;
            }
        };
        if args.json {
            println!("{deployment}");
        }
        match deployment["progress"]["progress"].as_str() {
            Some("done") => {
                if !args.json {
                    eprintln!(
                        "deployed {} in {} ms",
                        args.version, deployment["duration_ms"]
                    );
                }
                Ok(())
            }
            _ => {
                rolled_back = true;
                Err(format!(
                    "deployment {id} rolled back: {}",
                    deployment["progress"]["reason"]
                        .as_str()
                        .unwrap_or("no reason given")
                ))
            }
        }
    });
    let code = finish(result);
    if rolled_back {
        ExitCode::from(1)
    } else {
        code
    }
}

fn progress_line(d: &Value, status: &Value) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for i in status["instances"].as_array().into_iter().flatten() {
        let key = format!(
            "{}:{}",
            i["version"].as_str().unwrap_or("?"),
            i["state"].as_str().unwrap_or("?")
        );
        *counts.entry(key).or_default() += 1;
    }
    let instances: Vec<String> = counts.iter().map(|(k, n)| format!("{n}×{k}")).collect();
    let progress = d["progress"]["progress"].as_str().unwrap_or("?");
    match d["progress"]["reason"].as_str() {
        Some(reason) => format!("  {progress} ({reason}) | {}", instances.join(" ")),
        None => format!("  {progress} | {}", instances.join(" ")),
    }
}

pub fn history(args: HistoryArgs) -> ExitCode {
    finish(block_on(async {
        let admin = Admin::for_stack(&args.stack)?;
        let h = admin.get("/history").await?;
        if args.json {
            println!("{h}");
            return Ok(());
        }
        for d in h["deployments"].as_array().into_iter().flatten() {
            println!(
                "#{:<3} {} {:>8} -> {:<8} {:<8} {:<12} {:>7} ms  {}",
                d["id"],
                d["started_at"].as_str().unwrap_or("?"),
                d["from"].as_str().unwrap_or("?"),
                d["to"].as_str().unwrap_or("?"),
                d["strategy"].as_str().unwrap_or("?"),
                d["progress"]["progress"].as_str().unwrap_or("?"),
                d["duration_ms"],
                d["progress"]["reason"].as_str().unwrap_or("")
            );
        }
        Ok(())
    }))
}

pub fn stop(stack: Stack) -> ExitCode {
    finish(block_on(async {
        let admin = Admin::for_stack(&stack)?;
        admin.post("/stop", &json!({})).await?;
        eprintln!("stopping: listeners close, instances drain and stop");
        Ok(())
    }))
}
