//! Per-instance log files. An instance writes its stdout and stderr into a pipe read by a log
//! relay (`cutover log-relay`, a small process of its own per instance, as conmon is for
//! containers): the relay outlives the daemon, so the instance's output never depends on the
//! daemon staying alive, and a log that cannot be written (a full disk) costs lines, never the
//! instance, which would otherwise see its writes fail and, like most programs, die of it. The
//! relay appends; the daemon rotates by size with copy-and-truncate, which an appending writer
//! follows without reopening.

use std::io::{Read, Seek, SeekFrom, Write};
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

/// Copies `input` into the log at `path` until `input` ends; returns the bytes it could not
/// write. A write that fails (a full disk, a log dir gone) drops what it held and goes on
/// reading, so the writer at the other end never blocks or fails; once a write succeeds again, a
/// line says how much was lost.
pub fn relay(mut input: impl Read, path: &Path) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut file = open(path).ok();
    let mut dropped: u64 = 0;
    let mut lost_total: u64 = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(lost_total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if file.is_none() {
            file = open(path).ok();
        }
        let written = file.as_mut().is_some_and(|f| {
            if dropped > 0 {
                let note = format!(
                    "[cutover: {dropped} bytes of this instance's output were dropped: its log could not be written]\n"
                );
                if f.write_all(note.as_bytes()).is_err() {
                    return false;
                }
                dropped = 0;
            }
            f.write_all(&buf[..n]).is_ok()
        });
        if !written {
            dropped += n as u64;
            lost_total += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

#[cfg(test)]
mod relay_tests {
    use super::*;

    #[test]
    fn a_log_that_cannot_be_written_drops_output_and_never_fails_the_writer() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let input: Vec<u8> = b"line\n".repeat(50_000);
        let lost = relay(&input[..], Path::new("/dev/full")).expect("relay");
        assert_eq!(lost, input.len() as u64);
    }

    #[test]
    fn once_the_log_can_be_written_again_a_line_says_what_was_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        let path = logs.join("i.log");
        // The first chunk finds no log dir (a write that fails); the dir is made before the next.
        struct Chunks<'a>(Vec<&'a [u8]>, &'a Path);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.len() == 1 {
                    std::fs::create_dir_all(self.1)?;
                }
                match self.0.pop() {
                    Some(c) => {
                        buf[..c.len()].copy_from_slice(c);
                        Ok(c.len())
                    }
                    None => Ok(0),
                }
            }
        }
        let lost = relay(Chunks(vec![b"after\n", b"before\n"], &logs), &path).expect("relay");
        assert_eq!(lost, 7);
        let log = std::fs::read_to_string(&path).expect("log");
        assert_eq!(
            log,
            "[cutover: 7 bytes of this instance's output were dropped: its log could not be written]\nafter\n"
        );
    }
}
