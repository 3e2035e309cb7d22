//! The stack file (`cutover.toml`): raw TOML → validation with every problem located → runtime [`Spec`].

pub mod duration;
pub mod error;
mod locate;
pub mod model;
pub mod raw;
mod render;
pub mod validate;
pub mod version;

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::Path;

pub use error::{Diagnostic, SpecError};
use locate::Locator;
pub use model::*;
use raw::RawSpec;

/// Most problems reported from one file; past this the file is likely not a stack file at all.
const MAX_PROBLEMS: usize = 100;

/// Reads and validates a stack file.
pub fn load(path: &Path) -> Result<Spec, SpecError> {
    load_on_host(path, |_| Vec::new())
}

/// Like [`load`], then holds the spec against what only the running host can tell (does
/// `release.user` exist here, say): `host` returns problems by key path, located in the file
/// like every other problem.
pub fn load_on_host(
    path: &Path,
    host: impl Fn(&Spec) -> Vec<validate::Problem>,
) -> Result<Spec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        file: path.to_owned(),
        source,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parse_on_host(&text, path, base, host)
}

/// Validates stack file text; `file` names it in errors, `base_dir` resolves relative paths.
pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<Spec, SpecError> {
    parse_on_host(text, file, base_dir, |_| Vec::new())
}

fn parse_on_host(
    text: &str,
    file: &Path,
    base_dir: &Path,
    host: impl Fn(&Spec) -> Vec<validate::Problem>,
) -> Result<Spec, SpecError> {
    let invalid = |problems| SpecError::Invalid {
        file: file.to_owned(),
        problems,
    };
    let Some(locator) = Locator::new(text) else {
        return Err(invalid(vec![syntax_error(text)]));
    };
    let mut problems = Vec::new();
    let mut dropped = BTreeSet::new();
    let raw = deserialize_all(text, &locator, &mut problems, &mut dropped);
    let validated = raw.as_ref().map(|raw| {
        validate::validate(raw, base_dir).and_then(|spec| {
            let found = host(&spec);
            if found.is_empty() {
                Ok(spec)
            } else {
                Err(found)
            }
        })
    });
    match validated {
        Some(Ok(spec)) if problems.is_empty() => return Ok(spec),
        Some(Ok(_)) | None => {}
        Some(Err(found)) => {
            for p in found {
                // A key dropped for a type error would come back as "missing": say it once.
                if dropped
                    .iter()
                    .any(|d| p.path == *d || p.path.starts_with(&format!("{d}.")))
                {
                    continue;
                }
                let offset = locator.anchor(&p.path).unwrap_or(0);
                let (line, column) = locator.line_col(text, offset);
                problems.push(Diagnostic {
                    line,
                    column,
                    key: p.path,
                    message: p.message,
                });
            }
        }
    }
    problems.sort_by_key(|p| (p.line, p.column));
    problems.truncate(MAX_PROBLEMS);
    Err(invalid(problems))
}

/// Deserializes into the raw struct; on each error, records it, blanks the offending key in a
/// copy of the text (same length, so offsets stay those of the file) and tries again, so one run
/// reports every unknown key and wrong type, not just the first.
fn deserialize_all(
    text: &str,
    locator: &Locator,
    problems: &mut Vec<Diagnostic>,
    dropped: &mut BTreeSet<String>,
) -> Option<RawSpec> {
    let mut work = text.as_bytes().to_vec();
    for _ in 0..MAX_PROBLEMS {
        let current = String::from_utf8(work.clone()).ok()?;
        let err = match toml::from_str::<RawSpec>(&current) {
            Ok(raw) => return Some(raw),
            Err(err) => err,
        };
        let offset = err.span().map(|s| s.start).unwrap_or(0);
        let (line, column) = locator.line_col(text, offset);
        let located = locator.at(offset);
        let key = located.as_ref().map(|(p, _)| p.clone()).unwrap_or_default();
        problems.push(Diagnostic {
            line,
            column,
            key: key.clone(),
            message: explain(err.message()),
        });
        let Some((path, Some(ranges))) = located else {
            return None;
        };
        if !dropped.insert(path.clone()) {
            return None;
        }
        for r in &ranges {
            blank(&mut work, r.clone());
        }
        if locator.is_inline(&path) {
            if let Some(r) = ranges.first() {
                blank_adjacent_comma(&mut work, r.clone());
            }
        }
    }
    None
}

fn blank(work: &mut [u8], range: Range<usize>) {
    for b in work.iter_mut().take(range.end).skip(range.start) {
        if *b != b'\n' && *b != b'\r' {
            *b = b' ';
        }
    }
}

/// An inline table entry leaves a stray comma behind: take the one after it, else the one before.
fn blank_adjacent_comma(work: &mut [u8], range: Range<usize>) {
    let after = work[range.end..]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| range.end + i);
    if let Some(i) = after.filter(|&i| work[i] == b',') {
        work[i] = b' ';
        return;
    }
    let before = work[..range.start]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace());
    if let Some(i) = before.filter(|&i| work[i] == b',') {
        work[i] = b' ';
    }
}

/// serde's wording names Rust types; say what the file should hold instead.
fn explain(message: &str) -> String {
    message
        .trim()
        .replace("u32", "a whole number")
        .replace("u64", "a whole number")
        .replace("i32", "a whole number")
        .replace("f64", "a number")
        .replace("a boolean", "true or false")
}

fn syntax_error(text: &str) -> Diagnostic {
    match toml::from_str::<toml::Table>(text) {
        Err(e) => {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let before = &text[..offset.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before
                .rsplit('\n')
                .next()
                .map(|l| l.chars().count())
                .unwrap_or(0)
                + 1;
            Diagnostic {
                line,
                column,
                key: String::new(),
                message: format!("not valid TOML: {}", e.message().trim()),
            }
        }
        Ok(_) => Diagnostic {
            line: 1,
            column: 1,
            key: String::new(),
            message: "not valid TOML".into(),
        },
    }
}
