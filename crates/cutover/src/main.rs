//! The `cutover` command line: one binary for the load balancer, the fleet and the deploy controller.

mod admin;
mod commands;
mod controller;
mod dataplane;
mod exit;
mod listeners;
mod plane;
mod preview;
mod private;
mod release;
mod token;
mod writes;

use std::process::ExitCode;

/// The proxy allocates per request from two worker threads; glibc's arenas contend on that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use cutover_api::admin as api;

#[derive(Parser, Debug)]
#[command(
    name = "cutover",
    version,
    about = "Ship new versions of a web service with zero failed requests"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log as JSON lines on stderr (for log shippers).
    #[arg(long, global = true)]
    json_logs: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send load to a URL and count every outcome; exit 0 only if nothing failed.
    Probe(commands::probe::Args),
    /// Download release artifacts in parallel: http, https, s3, file; `URL#sha256=HEX` verifies.
    Fetch(commands::fetch::Args),
    /// Validate a stack file and print it normalized.
    Check(commands::check::Args),
    /// Run the stack in the foreground: listeners, target groups, health checks, admin API.
    Up(commands::up::Args),
    /// Show target groups, targets, health and traffic of a running stack.
    Status(commands::status::Args),
    /// The whole story on this machine: three instances under load, a deploy that succeeds, one
    /// that fails and rolls back; exits 0 only if no request failed.
    Demo(commands::demo::Args),
    /// Roll the running stack to a new version; exits 0 only when every instance runs it.
    Deploy(commands::deploy::Args),
    /// Roll back: a traffic flip while the previous version is warm, else a rolling deploy of
    /// the previous release (or `--to` any release that has run).
    Rollback(commands::deploy::RollbackArgs),
    /// Move a canary on to its next step now (`--full`: straight to full size).
    Promote(commands::deploy::PromoteArgs),
    /// Hold a canary at its current step.
    Pause(commands::deploy::SteerArgs),
    /// Let a paused canary go on.
    Resume(commands::deploy::SteerArgs),
    /// Give up on the deployment in progress: traffic back to the old version, the new one stopped.
    Abort(commands::deploy::SteerArgs),
    /// Instance logs: all of them, one instance, or one version's; `-f` follows.
    Logs(commands::logs::Args),
    /// Every deployment with its outcome, steps and reason (`--scaling`: every scaling action).
    History(commands::deploy::HistoryArgs),
    /// Set the desired number of instances by hand, within the group's min and max.
    Scale(commands::deploy::ScaleArgs),
    /// Stop a running stack: close listeners, drain and stop instances.
    Stop(commands::status::Stack),
    /// Add a target to, or drain and remove one from, a running stack.
    #[command(subcommand)]
    Target(commands::status::TargetCommand),
    /// The data plane of `cutover up` (started by it): listeners and target groups, steered over
    /// a Unix socket in the data dir.
    #[command(hide = true)]
    Dataplane(dataplane::Args),
    /// Carries one instance's output from its stdin into the log file (started by `cutover up`
    /// for each instance; it ends when the instance's output does).
    #[command(hide = true)]
    LogRelay(LogRelayArgs),
    /// Run the stack on AWS: EC2 instances behind an Application Load Balancer.
    #[cfg(feature = "aws")]
    #[command(subcommand)]
    Aws(commands::aws::Command),
}

#[derive(clap::Args, Debug)]
struct LogRelayArgs {
    /// The instance's log file, appended to.
    log: std::path::PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::LogRelay(args) = &cli.command {
        // Nothing else: no logging of its own, no runtime. What it costs is the binary's own
        // relocated data, about 7 MB private per instance (measured on a release build).
        return match cutover_fleet::logs::relay(std::io::stdin().lock(), &args.log) {
            Ok(_) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    }
    // The daemon logs what it does; the demo tells its own story and logs only trouble.
    let default_filter = if matches!(cli.command, Command::Up(_) | Command::Dataplane(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.json_logs {
        logs.json().init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    match cli.command {
        Command::Probe(args) => commands::probe::run(args),
        Command::Check(args) => commands::check::run(args),
        Command::Fetch(args) => commands::fetch::run(args),
        Command::Up(args) => commands::up::run(args),
        Command::Dataplane(args) => dataplane::run(args),
        Command::LogRelay(_) => ExitCode::SUCCESS,
        Command::Status(args) => commands::status::run(args),
        Command::Target(cmd) => commands::status::run_target(cmd),
        Command::Deploy(args) => commands::deploy::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Rollback(args) => commands::deploy::rollback(args),
        Command::Promote(args) => {
            commands::deploy::steer(api::Promote { full: args.full }, args.steer)
        }
        Command::Pause(args) => commands::deploy::steer(api::Pause {}, args),
        Command::Resume(args) => commands::deploy::steer(api::Resume {}, args),
        Command::Abort(args) => commands::deploy::steer(api::Abort {}, args),
        Command::Logs(args) => commands::logs::run(args),
        Command::History(args) => commands::deploy::history(args),
        Command::Scale(args) => commands::deploy::scale(args),
        Command::Stop(stack) => commands::deploy::stop(stack),
        #[cfg(feature = "aws")]
        Command::Aws(cmd) => commands::aws::run(cmd),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
