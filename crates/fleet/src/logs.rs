//! Per-instance log files. The instance writes its stdout and stderr straight into the file
//! (opened for append), so its output never depends on the daemon staying alive; the daemon
//! rotates by size with copy-and-truncate, which an appending writer follows without reopening.

use std::io::{Seek, SeekFrom};
use std::path::Path;

/// Default size at which a log file is rotated to `NAME.1`.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// Opens `path` for appending, creating it; one handle serves as both stdout and stderr.
pub fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// If `path` has grown past `max_bytes`, copies it to `NAME.1` (replacing the old one) and
/// truncates it. Lines written between the copy and the truncation are lost; that window is
/// one copy long, and it is the price of never making a running instance reopen its output.
pub fn rotate_if_larger(path: &Path, max_bytes: u64) -> std::io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max_bytes {
        return Ok(false);
    }
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    std::fs::copy(path, &old)?;
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(0)?;
    let mut file = file;
    file.seek(SeekFrom::Start(0))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn an_appending_writer_continues_in_the_rotated_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.log");
        let mut writer = open(&path).expect("open");
        for i in 0..20 {
            writeln!(writer, "line {i:02}").expect("write");
        }
        assert!(
            !rotate_if_larger(&path, 1000).expect("check"),
            "small files stay"
        );
        assert!(rotate_if_larger(&path, 100).expect("rotate"));
        writeln!(writer, "after").expect("write");
        let old = std::fs::read_to_string(dir.path().join("i.log.1")).expect("rotated");
        assert!(old.starts_with("line 00\n") && old.ends_with("line 19\n"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("current"),
            "after\n",
            "appends land at the new end"
        );
    }
}
