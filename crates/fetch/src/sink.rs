//! Where a download is written: a temporary file beside the destination, hashed as it is written,
//! fsynced and renamed into place only when complete and verified; removed otherwise.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::source::to_hex;
use crate::FetchError;

pub(crate) struct Sink {
    tmp: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    bytes: u64,
}

impl Sink {
    pub async fn create(dir: &Path, name: &str) -> Result<Self, FetchError> {
        let tmp = dir.join(format!(".{name}.partial-{:08x}", fastrand::u32(..)));
        let file = tokio::fs::File::create(&tmp).await?;
        Ok(Self {
            tmp,
            file: Some(file),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        match self.file.as_mut() {
            Some(f) => Ok(f.write_all(chunk).await?),
            None => Err(FetchError::Io(std::io::Error::other("write after finish"))),
        }
    }

    /// Checks the checksum, makes the bytes durable, and renames the file into place.
    pub async fn finish(
        mut self,
        sha256: Option<&[u8; 32]>,
        dest: &Path,
    ) -> Result<u64, FetchError> {
        let actual: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        if let Some(expected) = sha256 {
            if *expected != actual {
                return Err(FetchError::Mismatch {
                    expected: to_hex(expected),
                    actual: to_hex(&actual),
                });
            }
        }
        if let Some(mut f) = self.file.take() {
            f.flush().await?;
            f.sync_all().await?;
        }
        tokio::fs::rename(&self.tmp, dest).await?;
        if let Some(dir) = dest.parent() {
            // The rename itself is durable only once the directory is.
            if let Ok(d) = tokio::fs::File::open(dir).await {
                let _ = d.sync_all().await;
            }
        }
        self.tmp = PathBuf::new();
        Ok(self.bytes)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
