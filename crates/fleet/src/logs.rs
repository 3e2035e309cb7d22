//! Per-instance log files fed from the process's stdout and stderr, rotated by size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Default size at which a log file is rotated to `NAME.1`.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// A log file that moves itself aside to `NAME.1` when it grows past `max_bytes`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    file: std::fs::File,
    written: u64,
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            max_bytes,
            file,
            written,
        })
    }

    pub fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.written > 0 && self.written + line.len() as u64 + 1 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.file.write_all(b"\n")?;
        self.written += line.len() as u64 + 1;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .truncate(false)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// Copies lines from a pipe into the shared log file until the pipe closes.
pub fn pump(pipe: impl AsyncRead + Unpin + Send + 'static, log: Arc<Mutex<RotatingFile>>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).split(b'\n');
        while let Ok(Some(line)) = lines.next_segment().await {
            let Ok(mut file) = log.lock() else { return };
            if let Err(e) = file.write_line(&line) {
                tracing::warn!(path = %file.path.display(), error = %e, "cannot write an instance log");
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_limit_keeping_one_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("i.log");
        let mut f = RotatingFile::open(&path, 100).expect("open");
        for i in 0..30 {
            f.write_line(format!("line {i:02}").as_bytes())
                .expect("write");
        }
        let current = std::fs::read_to_string(&path).expect("current");
        let old = std::fs::read_to_string(dir.path().join("i.log.1")).expect("rotated");
        assert!(current.len() <= 100 && old.len() <= 100);
        assert!(current.ends_with("line 29\n"));
        assert!(!old.contains("line 29"));
    }
}
