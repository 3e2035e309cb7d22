//! `cutover fetch`: release artifacts downloaded in parallel, a bar per file on a terminal, and a
//! status table (or one JSON object) at the end.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use cutover_fetch::{fetch_all, Options, Outcome, Progress, Quiet, Status};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A URL to fetch: http, https, s3 or file; `URL#sha256=HEX` verifies it. Repeat for more.
    #[arg(short = 'u', long = "url", required = true)]
    pub urls: Vec<String>,
    /// Directory to save into.
    #[arg(short = 'o', long = "output", default_value = ".")]
    pub dir: PathBuf,
    /// Downloads at once.
    #[arg(short = 'j', long = "jobs", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// A PEM file with a root certificate to trust beside the system's (a private CA).
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Print the outcome as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One bar per file and a total, on a terminal.
struct Bars {
    multi: indicatif::MultiProgress,
    bars: Mutex<Vec<Option<indicatif::ProgressBar>>>,
    total: indicatif::ProgressBar,
}

impl Bars {
    fn new(files: usize) -> Self {
        let multi = indicatif::MultiProgress::new();
        let total = multi.add(indicatif::ProgressBar::new(files as u64));
        total.set_style(
            indicatif::ProgressStyle::with_template("total {pos}/{len} files {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Self {
            multi,
            bars: Mutex::new(vec![None; files]),
            total,
        }
    }

    fn with_bar(&self, index: usize, f: impl FnOnce(&indicatif::ProgressBar)) {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(Some(bar)) = bars.get(index) {
            f(bar);
        }
    }
}

impl Progress for Bars {
    fn begin(&self, index: usize, name: &str, _total: Option<u64>) {
        let bar = self
            .multi
            .insert_before(&self.total, indicatif::ProgressBar::no_length());
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {prefix:30!} {bytes:>10} {bytes_per_sec:>12} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name.to_owned());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = bars.get_mut(index) {
            *slot = Some(bar);
        }
    }

    fn restart(&self, index: usize) {
        self.with_bar(index, |b| {
            b.set_position(0);
            b.set_message("retrying");
        });
    }

    fn advance(&self, index: usize, bytes: u64) {
        self.with_bar(index, |b| b.inc(bytes));
    }

    fn end(&self, index: usize, ok: bool) {
        self.with_bar(index, |b| {
            b.finish_with_message(if ok { "ok" } else { "failed" })
        });
        self.total.inc(1);
    }
}

fn table(outcomes: &[Outcome]) {
    println!(
        "{:<50} {:<28} {:>12} {:>9}  RESULT",
        "URL", "FILE", "BYTES", "TIME"
    );
    for o in outcomes {
        let file = o
            .file
            .as_ref()
            .map(|f| f.display().to_string())
            .unwrap_or_else(|| "-".into());
        let result = match &o.status {
            Status::Ok if o.attempts > 1 => format!("ok after {} attempts", o.attempts),
            Status::Ok => "ok".into(),
            Status::Superseded => "skipped: a later URL names the same file".into(),
            Status::Failed(reason) | Status::NotFound(reason) => format!("failed: {reason}"),
        };
        println!(
            "{:<50} {:<28} {:>12} {:>7.2}s  {result}",
            o.url,
            file,
            o.bytes,
            o.millis as f64 / 1000.0
        );
    }
}

pub fn run(args: Args) -> ExitCode {
    let options = Options {
        jobs: usize::from(args.jobs),
        ca_cert: args.ca_cert.clone(),
        ..Options::default()
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bars = (terminal && !args.json).then(|| Arc::new(Bars::new(args.urls.len())));
    let progress: Arc<dyn Progress> = match &bars {
        Some(b) => b.clone(),
        None => Arc::new(Quiet),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cutover fetch: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcomes = match runtime.block_on(fetch_all(&args.urls, &args.dir, &options, progress)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cutover fetch: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(b) = &bars {
        b.total.finish();
    }
    let ok = !outcomes
        .iter()
        .any(|o| matches!(o.status, Status::Failed(_) | Status::NotFound(_)));
    if args.json {
        println!("{}", serde_json::json!({ "ok": ok, "files": outcomes }));
    } else {
        table(&outcomes);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
