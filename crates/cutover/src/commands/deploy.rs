//! `cutover deploy VERSION` and the commands that steer, list and stop deployments through the admin API.

use std::process::ExitCode;
use std::time::Duration;

use cutover_api::admin::{
    self as api, Deployment, GetDeployment, GetHistory, GetScaling, GetStatus, Status,
};
use cutover_api::Endpoint;
use cutover_control::Progress;
use cutover_deploy::State;

use super::status::{block_on, finish, print_json, Admin, Stack};
use super::up::LeftBehind;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The version to roll out.
    #[arg(value_parser = super::parse_version)]
    pub version: String,
    /// Deploy strategy: rolling, replace-group, blue-green or canary (default: the stack file's).
    #[arg(long)]
    pub strategy: Option<String>,
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
    /// List scaling actions instead of deployments.
    #[arg(long)]
    pub scaling: bool,
    #[command(flatten)]
    pub stack: Stack,
}

#[derive(clap::Args, Debug)]
pub struct SteerArgs {
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: Stack,
}

#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    /// Skip the remaining steps: scale the new version to full size and give it all traffic.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub steer: SteerArgs,
}

/// How often the CLI looks at a running deployment.
const POLL: Duration = Duration::from_millis(250);

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// Roll back to this release instead of the one before the current.
    #[arg(long, value_parser = super::parse_version)]
    pub to: Option<String>,
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: Stack,
}

pub fn run(args: Args) -> ExitCode {
    #[cfg(feature = "aws")]
    if let Some(common) = super::aws_stack(&args.stack, args.json) {
        return super::aws::run(super::aws::Command::Deploy(super::aws::DeployArgs {
            version: args.version,
            common,
            strategy: args.strategy,
            image: None,
            poll: std::time::Duration::from_secs(5),
            metric_period: std::time::Duration::from_secs(60),
        }));
    }
    #[cfg(not(feature = "aws"))]
    if let Some(code) = super::needs_aws(&args.stack) {
        return code;
    }
    let request = api::Deploy {
        version: args.version,
        strategy: args.strategy,
        command: args.command,
    };
    drive(&args.stack, &request, args.json, args.no_wait)
}

pub fn rollback(args: RollbackArgs) -> ExitCode {
    #[cfg(feature = "aws")]
    if let Some(common) = super::aws_stack(&args.stack, args.json) {
        return super::aws::run(super::aws::Command::Rollback(common));
    }
    #[cfg(not(feature = "aws"))]
    if let Some(code) = super::needs_aws(&args.stack) {
        return code;
    }
    drive(
        &args.stack,
        &api::Rollback { to: args.to },
        args.json,
        args.no_wait,
    )
}

/// Starts a deployment with `request` and follows it to its end. Exit 0 only when it is done.
fn drive<E>(stack: &Stack, request: &E, json_out: bool, no_wait: bool) -> ExitCode
where
    E: Endpoint<Reply = Deployment>,
{
    let mut rolled_back = false;
    let result = block_on(async {
        let admin = Admin::for_stack(stack)?;
        let started = admin.call(request).await?;
        let id = started.id;
        let to = started.to.clone();
        if !json_out {
            eprintln!("deployment {id}: {} -> {to}", started.from);
        }
        if no_wait || started.finished_at.is_some() {
            if json_out {
                print_json(&started);
            }
            return Ok(());
        }
        let mut last = String::new();
        // On a terminal, one live bar: the new version's healthy instances out of desired.
        let bar = (!json_out && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{bar:20}] {pos}/{len} {prefix} healthy {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(to.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let deployment = loop {
            tokio::time::sleep(POLL).await;
            let d = admin.call(&GetDeployment { id }).await?;
            let status = admin.call(&GetStatus {}).await?;
            let line = progress_line(&d, &status);
            match &bar {
                Some(bar) => {
                    let healthy = status
                        .instances
                        .iter()
                        .filter(|i| i.version == to && i.state == State::Healthy)
                        .count();
                    bar.set_length(u64::from(status.desired.unwrap_or(0)));
                    bar.set_position(healthy as u64);
                    bar.set_message(line.trim().to_owned());
                }
                None if !json_out && line != last => {
                    eprintln!("{line}");
                    last = line;
                }
                None => {}
            }
            if d.finished_at.is_some() {
                if let Some(bar) = &bar {
                    bar.finish();
                }
                break d;
            }
        };
        if json_out {
            print_json(&deployment);
        }
        match &deployment.progress {
            Progress::Done => {
                if json_out {
                } else if let Some(us) = deployment.flip_us {
                    eprintln!(
                        "traffic flipped back to the warm {to} in {:.2} ms",
                        us as f64 / 1000.0
                    );
                } else {
                    eprintln!(
                        "deployed {to} in {} ms",
                        deployment.duration_ms.unwrap_or(0)
                    );
                    if let Some(line) = deployment.drains.describe() {
                        eprintln!("{line}");
                    }
                }
                Ok(())
            }
            other => {
                rolled_back = true;
                Err(format!(
                    "deployment {id} rolled back: {}",
                    other.reason().unwrap_or("no reason given")
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

fn progress_line(d: &Deployment, status: &Status) -> String {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for i in &status.instances {
        *counts
            .entry(format!("{}:{}", i.version, i.state.as_str()))
            .or_default() += 1;
    }
    let instances: Vec<String> = counts.iter().map(|(k, n)| format!("{n}×{k}")).collect();
    let progress = d.progress.name();
    match d.progress.reason() {
        Some(reason) => format!("  {progress} ({reason}) | {}", instances.join(" ")),
        None => format!("  {progress} | {}", instances.join(" ")),
    }
}

pub fn history(args: HistoryArgs) -> ExitCode {
    finish(block_on(async {
        let admin = Admin::for_stack(&args.stack)?;
        if args.scaling {
            let h = admin.call(&GetScaling {}).await?;
            if args.json {
                print_json(&h);
                return Ok(());
            }
            for a in &h.scaling {
                println!("{} {} -> {}  {}", a.at, a.from, a.to, a.reason);
            }
            return Ok(());
        }
        let h = admin.call(&GetHistory {}).await?;
        if args.json {
            print_json(&h);
            return Ok(());
        }
        for d in &h.deployments {
            println!(
                "#{:<3} {} {:>8} -> {:<8} {:<8} {:<12} {:>7} ms  {}",
                d.id,
                d.started_at,
                d.from,
                d.to,
                d.strategy,
                d.progress.name(),
                d.duration_ms.map_or("-".to_owned(), |ms| ms.to_string()),
                d.progress.reason().unwrap_or("")
            );
            for step in &d.steps {
                println!(
                    "       step {} ({}): {}",
                    step.step, step.what, step.verdict
                );
            }
            if let Some(line) = d.drains.describe() {
                println!("       {line}");
            }
        }
        Ok(())
    }))
}

/// `cutover promote|pause|resume|abort`: steers the deployment in progress and says where it is.
pub fn steer<E>(request: E, args: SteerArgs) -> ExitCode
where
    E: Endpoint<Reply = Deployment>,
{
    finish(block_on(async {
        let admin = Admin::for_stack(&args.stack)?;
        let d = admin.call(&request).await?;
        if args.json {
            print_json(&d);
        } else {
            let progress = d.progress.name();
            match d.progress.reason() {
                Some(reason) => eprintln!("deployment {}: {progress} ({reason})", d.id),
                None => eprintln!("deployment {}: {progress}", d.id),
            }
        }
        Ok(())
    }))
}

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// The desired number of instances, within the group's min and max.
    pub desired: u32,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: Stack,
}

pub fn scale(args: ScaleArgs) -> ExitCode {
    finish(block_on(async {
        let admin = Admin::for_stack(&args.stack)?;
        let r = admin
            .call(&api::Scale {
                desired: args.desired,
            })
            .await?;
        if args.json {
            print_json(&r);
        } else {
            eprintln!("desired size {} -> {}", r.from, r.desired);
        }
        Ok(())
    }))
}

pub fn stop(stack: Stack) -> ExitCode {
    finish(block_on(async {
        let asked = match Admin::for_stack(&stack) {
            Ok(admin) => admin.call(&api::Stop {}).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let Err(unanswered) = asked else {
            eprintln!("stopping: listeners close, instances drain and stop");
            return Ok(());
        };
        // No controller answered. One that died (kill -9, OOM) leaves the data plane serving and
        // the instances running: stop them the way it would have.
        let dir = super::up::data_dir(&stack.file, stack.data_dir.clone());
        match super::up::left_behind(&stack.file, &dir)? {
            LeftBehind::ControllerRunning => Err(unanswered),
            LeftBehind::Nothing => {
                // The address a controller that died left behind names nothing any more.
                let stale = dir.join(crate::token::ADDR_FILE);
                if std::fs::remove_file(&stale).is_ok() {
                    Err(format!(
                        "nothing is running on {} (the last `cutover up` ended without stopping)",
                        dir.display()
                    ))
                } else {
                    Err(unanswered)
                }
            }
            LeftBehind::Something => {
                eprintln!(
                    "no controller is running: stopping the data plane and instances it left"
                );
                super::up::stop_left_behind(&stack.file, &dir).await?;
                eprintln!("stopped: listeners closed, instances drained and stopped");
                Ok(())
            }
        }
    }))
}
