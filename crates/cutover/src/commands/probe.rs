//! `cutover probe URL`: the load client that proves a deploy dropped nothing.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use cutover_probe::{Load, ProbeConfig};

use super::{parse_duration, EXIT_INVALID};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// URL to send GET requests to (http://).
    pub url: String,
    /// Open loop: send this many requests per second on schedule, whatever the server does.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: this many clients, each sending its next request when the last one ends.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: most connections open at once; requests beyond wait, and the wait counts as latency.
    #[arg(long, default_value_t = 256)]
    pub connections: usize,
    /// How long to send load.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Upper bound on one request, counted from its intended send time.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Exit 0 when at most this many requests failed.
    #[arg(long, default_value_t = 0)]
    pub max_failed: u64,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Do not print a progress line each second.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Open-loop rate when neither --rate nor --concurrency is given.
const DEFAULT_RATE: f64 = 50.0;

pub fn run(args: Args) -> ExitCode {
    let load = match (args.rate, args.concurrency) {
        (_, Some(c)) => Load::Concurrency(c),
        (rate, None) => Load::Rate {
            per_second: rate.unwrap_or(DEFAULT_RATE),
            connections: args.connections,
        },
    };
    let config = ProbeConfig {
        url: args.url.clone(),
        load,
        duration: args.duration,
        timeout: args.timeout,
        stop: None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cutover probe: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let quiet = args.quiet;
    let result = runtime.block_on(cutover_probe::run(&config, |second| {
        if !quiet {
            let _ = writeln!(std::io::stderr(), "{}", second.line());
        }
    }));
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            eprintln!("cutover probe: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => {
                eprintln!("cutover probe: cannot write the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", report.summary());
    }
    if report.passed(args.max_failed) {
        ExitCode::SUCCESS
    } else if report.requests == 0 {
        eprintln!("cutover probe: no request was sent, so nothing was proven");
        ExitCode::FAILURE
    } else {
        if !args.json {
            eprintln!(
                "cutover probe: {} requests failed (allowed: {})",
                report.failed, args.max_failed
            );
        }
        ExitCode::FAILURE
    }
}
