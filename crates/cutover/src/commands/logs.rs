//! `cutover logs [INSTANCE | --version V] [-f]`: instance output from the data dir's `logs/`.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::up::data_dir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// One instance's id (as `cutover status` shows it).
    pub instance: Option<String>,
    /// Every instance of this version.
    #[arg(long, conflicts_with = "instance")]
    pub version: Option<String>,
    /// Keep printing what is appended.
    #[arg(short, long)]
    pub follow: bool,
    /// The stack file of the running stack (`-f` is follow here).
    #[arg(long = "file", default_value = "cutover.toml")]
    pub file: PathBuf,
    /// Its data dir (default: `.cutover/` beside the stack file).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// How often `-f` looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub fn run(args: Args) -> ExitCode {
    let dir = data_dir(&args.file, args.data_dir.clone()).join("logs");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cutover: {}: no instance logs ({e})", dir.display());
            return ExitCode::FAILURE;
        }
    };
    let mut files: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".log")?.to_owned();
            Some((name, e.path()))
        })
        .filter(|(id, _)| match (&args.instance, &args.version) {
            (Some(want), _) => id == want,
            // Ids are `i-<version>-<6 hex digits>`.
            (None, Some(v)) => id
                .strip_prefix("i-")
                .and_then(|r| r.rsplit_once('-'))
                .is_some_and(|(ver, _)| ver == v),
            (None, None) => true,
        })
        .collect();
    files.sort();
    if files.is_empty() {
        eprintln!("cutover: no logs match in {}", dir.display());
        return ExitCode::FAILURE;
    }
    let prefix = files.len() > 1;
    let terminal = std::io::stdout().is_terminal();
    let mut offsets = vec![0u64; files.len()];
    loop {
        for (i, (id, path)) in files.iter().enumerate() {
            let Ok(mut f) = std::fs::File::open(path) else {
                continue;
            };
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len < offsets[i] {
                offsets[i] = 0; // rotated
            }
            if f.seek(SeekFrom::Start(offsets[i])).is_err() {
                continue;
            }
            let mut bytes = Vec::new();
            if f.read_to_end(&mut bytes).is_err() {
                continue;
            }
            offsets[i] += bytes.len() as u64;
            // An instance writes what it likes: bytes that are not UTF-8 are shown replaced, and
            // on a terminal control characters are shown escaped, so a hostile service cannot
            // drive the operator's terminal with escape sequences.
            let text = String::from_utf8_lossy(&bytes);
            let mut out = std::io::stdout().lock();
            for line in text.lines() {
                let line = if terminal {
                    std::borrow::Cow::Owned(defang(line))
                } else {
                    std::borrow::Cow::Borrowed(line)
                };
                let _ = if prefix {
                    writeln!(out, "{id} | {line}")
                } else {
                    writeln!(out, "{line}")
                };
            }
        }
        if !args.follow {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// Control characters other than tab, escaped (`\u{1b}`), in one line of output.
fn defang(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        assert_eq!(
            super::defang("ok\u{1b}]0;owned\u{7}\tend\r"),
            "ok\\u{1b}]0;owned\\u{7}\tend\\u{d}"
        );
    }
}
