//! `cutover check [FILE]`: validate a stack file and print it normalized, or every problem in it.

use std::path::PathBuf;
use std::process::ExitCode;

use cutover_spec::SpecError;
use serde_json::json;

use super::EXIT_INVALID;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The stack file.
    #[arg(default_value = "cutover.toml")]
    pub file: PathBuf,
    /// Print one JSON object: the normalized spec, or the problems.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> ExitCode {
    match cutover_spec::load_on_host(&args.file, |spec| {
        cutover_fleet::user::host_problems(spec, false)
    }) {
        Ok(spec) => {
            if args.json {
                println!("{}", json!({ "ok": true, "file": args.file, "spec": spec }));
            } else {
                print!("{}", spec.to_toml());
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            if args.json {
                let problems: Vec<_> = match &err {
                    SpecError::Read { .. } => {
                        vec![
                            json!({ "line": 0, "column": 0, "key": "", "message": err.to_string() }),
                        ]
                    }
                    SpecError::Invalid { problems, .. } => {
                        problems.iter().map(|p| json!(p)).collect()
                    }
                };
                println!(
                    "{}",
                    json!({ "ok": false, "file": args.file, "problems": problems })
                );
            } else {
                eprintln!("{err}");
                if let SpecError::Invalid { problems, .. } = &err {
                    eprintln!(
                        "{} problem{} in {}",
                        problems.len(),
                        if problems.len() == 1 { "" } else { "s" },
                        args.file.display()
                    );
                }
            }
            ExitCode::from(EXIT_INVALID)
        }
    }
}
