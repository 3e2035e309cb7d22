//! `cutover status` and `cutover target add|remove`: the CLI side of the admin API.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

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

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.call(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.call(self.client.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, String> {
        self.call(self.client.delete(format!("{}{path}", self.base)))
            .await
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, String> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| format!("admin API at {}: {e}", self.base))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| format!("admin API answered something unreadable: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(body["error"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("admin API answered {status}")))
        }
    }
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
        let status = admin.get("/status").await?;
        if args.json {
            println!("{status}");
            return Ok(());
        }
        if let Some(release) = status["release"].as_str() {
            println!("release {release}, desired {}", status["desired"]);
            if let Some(a) = status["scaling"].as_object() {
                println!(
                    "last scaling {} -> {} at {}: {}",
                    a["from"],
                    a["to"],
                    a["at"].as_str().unwrap_or("?"),
                    a["reason"].as_str().unwrap_or("")
                );
            }
            for i in status["instances"].as_array().into_iter().flatten() {
                println!(
                    "  {:<18} {:<8} {:<6} pid {:<7} port {:<5} {:<9} in-flight {:<3} {:>6} req/s  {}",
                    i["id"].as_str().unwrap_or("?"),
                    i["version"].as_str().unwrap_or("?"),
                    i["group"].as_str().unwrap_or("?"),
                    i["pid"],
                    i["port"],
                    i["state"].as_str().unwrap_or("?"),
                    i["in_flight"],
                    i["rps"],
                    i["reason"].as_str().unwrap_or("")
                );
            }
            if let Some(error) = status["state_writes"]["error"].as_str() {
                println!(
                    "STATE NOT SAVED: {} write(s) to the state database failed over {} s ({error}); traffic is served as before",
                    status["state_writes"]["failed_writes"], status["state_writes"]["for_s"]
                );
            }
            if let Some(looping) = status["restarts"]["crash_loop"].as_str() {
                println!("CRASH LOOP: {looping}");
            }
            for h in status["restarts"]["backing_off"]
                .as_array()
                .into_iter()
                .flatten()
            {
                println!(
                    "  a slot of {} waits {} ms before its next launch: {} instances in a row died young",
                    h["version"].as_str().unwrap_or("?"),
                    h["for_ms"],
                    h["died_young"]
                );
            }
            if let Some(w) = status["warm"].as_object() {
                println!(
                    "warm: {} for {} s more; `cutover rollback` flips traffic back to it",
                    w["version"].as_str().unwrap_or("?"),
                    w["for_s"]
                );
            }
            if let Some(d) = status["deployment"].as_object() {
                println!(
                    "deployment {}: {} -> {}, {}",
                    d["id"],
                    d["from"].as_str().unwrap_or("?"),
                    d["to"].as_str().unwrap_or("?"),
                    d["progress"]["progress"].as_str().unwrap_or("?")
                );
            }
        }
        for group in status["groups"].as_array().into_iter().flatten() {
            println!(
                "group {} (weight {})",
                group["name"].as_str().unwrap_or("?"),
                group["weight"]
            );
            for t in group["targets"].as_array().into_iter().flatten() {
                println!(
                    "  {:<24} {:<10} {:<32} in-flight {}",
                    t["target"].as_str().unwrap_or("?"),
                    t["state"].as_str().unwrap_or("?"),
                    t["reason"].as_str().unwrap_or(if t["ejected"] == true {
                        "ejected"
                    } else {
                        "-"
                    }),
                    t["in_flight"]
                );
            }
        }
        Ok(())
    }))
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
                let body = serde_json::json!({ "target": target, "group": group });
                admin
                    .call(
                        admin
                            .client
                            .post(format!("{}/targets", admin.base))
                            .json(&body),
                    )
                    .await?;
                println!("registered {target} in {group}; it takes traffic once healthy");
            }
            TargetCommand::Remove {
                target,
                group,
                timeout,
                stack,
            } => {
                let admin = Admin::connect(&stack)?;
                let mut url = format!("/targets/{target}?group={group}");
                if let Some(t) = timeout {
                    url.push_str(&format!("&timeout={t}"));
                }
                let out = admin.delete(&url).await?;
                let d = &out["drain"];
                println!(
                    "drained {target}: {} completed, {} cut, {} ms",
                    d["completed"], d["cut"], d["took_ms"]
                );
                if d["cut"].as_u64().unwrap_or(0) > 0 {
                    return Err(format!(
                        "{} requests were cut at the drain deadline",
                        d["cut"]
                    ));
                }
            }
        }
        Ok(())
    }))
}
