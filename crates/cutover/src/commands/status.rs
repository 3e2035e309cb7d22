//! `cutover status` and `cutover target add|remove`: the CLI side of the admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use cutover_api::admin::{AddTarget, GetStatus, RemoveTarget, Status};
use cutover_api::{Endpoint, ErrorBody, Method};

use super::up::{data_dir, STATIC_GROUP};
use crate::token;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub stack: Stack,
    /// Print the admin API's JSON.
    #[arg(long)]
    pub json: bool,
}

/// Which running stack to talk to.
#[derive(clap::Args, Debug, Clone)]
pub struct Stack {
    /// The stack file of the running stack.
    #[arg(short = 'f', long = "file", default_value = "cutover.toml")]
    pub file: PathBuf,
    /// Its data dir (default: `.cutover/` beside the stack file).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum TargetCommand {
    /// Register a target; it takes traffic once its health checks pass.
    Add {
        target: String,
        #[arg(long, default_value = STATIC_GROUP)]
        group: String,
        #[command(flatten)]
        stack: Stack,
    },
    /// Deregister a target and wait until it is drained.
    Remove {
        target: String,
        #[arg(long, default_value = STATIC_GROUP)]
        group: String,
        /// Drain deadline (default: the stack's deploy.drain_timeout).
        #[arg(long)]
        timeout: Option<String>,
        #[command(flatten)]
        stack: Stack,
    },
}

pub struct Admin {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl Admin {
    fn connect(stack: &Stack) -> Result<Self, String> {
        let dir = data_dir(&stack.file, stack.data_dir.clone());
        let addr = std::fs::read_to_string(dir.join(token::ADDR_FILE)).map_err(|e| {
            format!(
                "{}: no running stack found ({e}); start one with `cutover up`",
                dir.display()
            )
        })?;
        let token = token::read(&dir)
            .map_err(|e| format!("{}: cannot read the admin token: {e}", dir.display()))?;
        Ok(Self {
            base: format!("http://{}", addr.trim()),
            token,
            client: reqwest::Client::new(),
        })
    }

    /// A client for an admin API at `addr` (an in-process stack).
    pub fn new(addr: std::net::SocketAddr, token: String) -> Self {
        Self {
            base: format!("http://{addr}"),
            token,
            client: reqwest::Client::new(),
        }
    }

    pub fn for_stack(stack: &Stack) -> Result<Self, String> {
        Self::connect(stack)
    }

    /// One typed request; a 4xx or 5xx answer becomes its error message.
    pub async fn call<E: Endpoint>(&self, req: &E) -> Result<E::Reply, String> {
        let url = format!("{}{}", self.base, req.path());
        let builder = match E::METHOD {
            Method::Get => self.client.get(url),
            Method::Post => self.client.post(url).json(req),
            Method::Delete => self.client.delete(url),
        };
        let resp = builder
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("admin API at {}: {e}", self.base))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("admin API at {}: {e}", self.base))?;
        if status.is_success() {
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("admin API answered something unreadable: {e}"))
        } else {
            Err(serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| format!("admin API answered {status}")))
        }
    }
}

/// Prints a reply as the admin API sent it.
pub fn print_json(value: &impl serde::Serialize) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

pub fn block_on<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?
        .block_on(f)
}

pub fn finish(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cutover: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(args: Args) -> ExitCode {
    #[cfg(feature = "aws")]
    if let Some(common) = super::aws_stack(&args.stack, args.json) {
        return super::aws::run(super::aws::Command::Status(common));
    }
    #[cfg(not(feature = "aws"))]
    if let Some(code) = super::needs_aws(&args.stack) {
        return code;
    }
    finish(block_on(async {
        let admin = Admin::connect(&args.stack)?;
        let status = admin.call(&GetStatus {}).await?;
        if args.json {
            print_json(&status);
            return Ok(());
        }
        print_status(&status);
        Ok(())
    }))
}

fn print_status(status: &Status) {
    if let Some(release) = &status.release {
        println!("release {release}, desired {}", status.desired.unwrap_or(0));
        if let Some(a) = &status.scaling {
            println!(
                "last scaling {} -> {} at {}: {}",
                a.from, a.to, a.at, a.reason
            );
        }
        for i in &status.instances {
            println!(
                "  {:<18} {:<8} {:<6} pid {:<7} port {:<5} {:<9} in-flight {:<3} {:>6} req/s  {}",
                i.id,
                i.version,
                i.group.name(),
                i.pid,
                i.port,
                i.state.as_str(),
                i.in_flight,
                i.rps,
                i.reason.map(|r| r.as_str()).unwrap_or("")
            );
        }
        if let Some(w) = &status.state_writes {
            println!(
                "STATE NOT SAVED: {} write(s) to the state database failed over {} s ({}); traffic is served as before",
                w.failed_writes, w.for_s, w.error
            );
        }
        if let Some(looping) = &status.restarts.crash_loop {
            println!("CRASH LOOP: {looping}");
        }
        for h in &status.restarts.backing_off {
            println!(
                "  a slot of {} waits {} ms before its next launch: {} instances in a row died young",
                h.version, h.for_ms, h.died_young
            );
        }
        if let Some(w) = &status.warm {
            println!(
                "warm: {} for {} s more; `cutover rollback` flips traffic back to it",
                w.version, w.for_s
            );
        }
        if let Some(d) = &status.deployment {
            println!(
                "deployment {}: {} -> {}, {}",
                d.id,
                d.from,
                d.to,
                d.progress.name()
            );
        }
    }
    for group in &status.groups {
        println!("group {} (weight {})", group.name, group.weight);
        for t in &group.targets {
            let reason = match t.reason {
                Some(r) => r.as_str(),
                None if t.ejected => "ejected",
                None => "-",
            };
            println!(
                "  {:<24} {:<10} {:<32} in-flight {}",
                t.target,
                t.state.as_str(),
                reason,
                t.in_flight
            );
        }
    }
}

pub fn run_target(cmd: TargetCommand) -> ExitCode {
    finish(block_on(async {
        match cmd {
            TargetCommand::Add {
                target,
                group,
                stack,
            } => {
                let admin = Admin::connect(&stack)?;
                let added = admin
                    .call(&AddTarget {
                        target,
                        group: Some(group),
                    })
                    .await?;
                println!(
                    "registered {} in {}; it takes traffic once healthy",
                    added.target, added.group
                );
            }
            TargetCommand::Remove {
                target,
                group,
                timeout,
                stack,
            } => {
                let admin = Admin::connect(&stack)?;
                let out = admin
                    .call(&RemoveTarget {
                        target: target.clone(),
                        group: Some(group),
                        timeout,
                    })
                    .await?;
                let d = &out.drain;
                println!(
                    "drained {target}: {} completed, {} cut, {} ms",
                    d.completed, d.cut, d.took_ms
                );
                if d.cut > 0 {
                    return Err(format!("{} requests were cut at the drain deadline", d.cut));
                }
            }
        }
        Ok(())
    }))
}
