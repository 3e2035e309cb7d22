//! Where a download is written: a temporary file beside the destination, fsynced and renamed
//! into place only when complete and verified; removed otherwise. Hashing and writing run on a
//! thread of their own, fed through a bounded channel, so they overlap with receiving: throughput
//! is the slower of the two, not their sum, and memory stays at the channel's few chunks.

use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::source::to_hex;
use crate::FetchError;

/// Chunks in flight between the network and the writer. The HTTP client's chunks can reach a
/// MiB or more on a fast link, so a short queue is what keeps memory flat.
const QUEUE: usize = 4;

type Written = std::io::Result<(Option<[u8; 32]>, u64, std::fs::File)>;

pub(crate) struct Sink {
    tmp: PathBuf,
    /// Bytes written so far, and the most allowed.
    bytes: u64,
    max_bytes: Option<u64>,
    tx: Option<mpsc::Sender<Bytes>>,
    writer: Option<tokio::task::JoinHandle<Written>>,
}

impl Sink {
    /// A sink in `dir` for `name`; `hash` when a checksum will be asked for (hashing is most of
    /// the CPU a download costs, so it is not done for nothing).
    pub async fn create(
        dir: &Path,
        name: &str,
        hash: bool,
        max_bytes: Option<u64>,
    ) -> Result<Self, FetchError> {
        let tmp = dir.join(format!(".{name}.partial-{:08x}", fastrand::u32(..)));
        let file = tokio::fs::File::create(&tmp).await?.into_std().await;
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let writer = tokio::task::spawn_blocking(move || -> Written {
            let mut file = file;
            let mut hasher = hash.then(Sha256::new);
            let mut bytes = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                if let Some(h) = hasher.as_mut() {
                    h.update(&chunk);
                }
                bytes += chunk.len() as u64;
                file.write_all(&chunk)?;
            }
            Ok((hasher.map(|h| h.finalize().into()), bytes, file))
        });
        Ok(Self {
            tmp,
            bytes: 0,
            max_bytes,
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    pub async fn write(&mut self, chunk: Bytes) -> Result<(), FetchError> {
        self.bytes = self.bytes.saturating_add(chunk.len() as u64);
        if let Some(max) = self.max_bytes.filter(|max| self.bytes > *max) {
            return Err(FetchError::TooLarge(max));
        }
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The writer stopped early: its error says why.
        Err(self
            .written()
            .await
            .err()
            .unwrap_or_else(|| FetchError::Io(std::io::Error::other("the writer stopped"))))
    }

    async fn written(&mut self) -> Result<(Option<[u8; 32]>, u64, std::fs::File), FetchError> {
        self.tx = None;
        let writer = self
            .writer
            .take()
            .ok_or_else(|| FetchError::Io(std::io::Error::other("the writer is gone")))?;
        writer
            .await
            .map_err(|e| FetchError::Io(std::io::Error::other(e.to_string())))?
            .map_err(FetchError::Io)
    }

    /// Checks the checksum, makes the bytes durable, and renames the file into place.
    pub async fn finish(
        mut self,
        sha256: Option<&[u8; 32]>,
        dest: &Path,
    ) -> Result<u64, FetchError> {
        let (actual, bytes, file) = self.written().await?;
        if let (Some(expected), Some(actual)) = (sha256, actual) {
            if *expected != actual {
                return Err(FetchError::Mismatch {
                    expected: to_hex(expected),
                    actual: to_hex(&actual),
                });
            }
        }
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(|e| FetchError::Io(std::io::Error::other(e.to_string())))??;
        tokio::fs::rename(&self.tmp, dest).await?;
        if let Some(dir) = dest.parent() {
            // The rename itself is durable only once the directory is.
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        self.tmp = PathBuf::new();
        Ok(bytes)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
