//! Releases: the stack's artifact for a version, fetched once, verified and unpacked into
//! `releases/<version>/` before any instance runs it; instances start from there. Old releases
//! are pruned, keeping those a rollback may need.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cutover_fetch::{fetch_all, Options, Quiet, Status};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Fetching failed; retried already where that could help.
    #[error("release {version}: cannot fetch {url}: {reason}")]
    Fetch {
        version: String,
        url: String,
        reason: String,
    },
    #[error("release {version}: {url}.sha256 does not hold a sha256 (64 hex digits first)")]
    ChecksumFile { version: String, url: String },
    #[error("release {version}: cannot unpack {file}: {reason}")]
    Unpack {
        version: String,
        file: String,
        reason: String,
    },
    #[error("release {version}: {0}", version = .1)]
    Io(std::io::Error, String),
}

pub struct Releases {
    dir: PathBuf,
    /// URL template: `{version}` is filled in.
    artifact: String,
    /// The stack file's checksum, which belongs to the stack file's version.
    sha256: Option<(String, String)>,
}

impl Releases {
    /// `None` when the stack has no artifact: instances run the command as it stands.
    pub fn new(data_dir: &Path, release: &cutover_spec::Release) -> Option<Self> {
        let artifact = release.artifact.clone()?;
        Some(Self {
            dir: data_dir.join("releases"),
            artifact,
            sha256: release.sha256.clone().map(|s| (release.version.clone(), s)),
        })
    }

    /// Where `version` is unpacked; instances of it start in this directory.
    pub fn dir_of(&self, version: &str) -> PathBuf {
        self.dir.join(version)
    }

    /// Fetches, verifies and unpacks `version` unless it is there already. Nothing appears under
    /// `releases/<version>` unless all of that succeeded.
    pub async fn prepare(&self, version: &str) -> Result<PathBuf, ReleaseError> {
        let dest = self.dir_of(version);
        if dest.is_dir() {
            return Ok(dest);
        }
        let io = |e: std::io::Error| ReleaseError::Io(e, version.to_owned());
        let url = self.artifact.replace("{version}", version);
        let staging = self
            .dir
            .join(format!(".staging-{version}-{:08x}", fastrand::u32(..)));
        tokio::fs::create_dir_all(&staging).await.map_err(io)?;
        let result = self.stage(version, &url, &staging).await;
        let result = match result {
            Ok(root) => tokio::fs::rename(&root, &dest)
                .await
                .map(|_| dest.clone())
                .map_err(io),
            Err(e) => Err(e),
        };
        let _ = tokio::fs::remove_dir_all(&staging).await;
        result
    }

    async fn stage(
        &self,
        version: &str,
        url: &str,
        staging: &Path,
    ) -> Result<PathBuf, ReleaseError> {
        let fetch_error = |reason: String| ReleaseError::Fetch {
            version: version.to_owned(),
            url: url.to_owned(),
            reason,
        };
        let checksum = match &self.sha256 {
            Some((v, sum)) if v == version => Some(sum.clone()),
            _ => self.checksum_beside(version, url, staging).await?,
        };
        let download = staging.join("download");
        let target = match &checksum {
            Some(sum) => format!("{url}#sha256={sum}"),
            None => url.to_owned(),
        };
        let outcome = fetch_all(&[target], &download, &Options::default(), Arc::new(Quiet))
            .await
            .map_err(|e| fetch_error(e.to_string()))?;
        let file = match outcome.into_iter().next() {
            Some(o) if o.status == Status::Ok => o.file,
            Some(o) => match o.status {
                Status::Failed(reason) => return Err(fetch_error(reason)),
                _ => None,
            },
            None => None,
        }
        .ok_or_else(|| fetch_error("nothing was downloaded".into()))?;
        let root = staging.join("root");
        let (v, f, r) = (version.to_owned(), file.clone(), root.clone());
        tokio::task::spawn_blocking(move || unpack(&f, &r))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .map_err(|reason| ReleaseError::Unpack {
                version: v,
                file: file.display().to_string(),
                reason,
            })?;
        Ok(root)
    }

    /// The checksum from `<artifact>.sha256` if the artifact has one beside it.
    async fn checksum_beside(
        &self,
        version: &str,
        url: &str,
        staging: &Path,
    ) -> Result<Option<String>, ReleaseError> {
        let sum_url = format!("{url}.sha256");
        let dir = staging.join("checksum");
        let options = Options {
            attempts: 2,
            ..Options::default()
        };
        let outcome = fetch_all(
            std::slice::from_ref(&sum_url),
            &dir,
            &options,
            Arc::new(Quiet),
        )
        .await
        .ok()
        .and_then(|o| o.into_iter().next());
        let Some(file) = outcome
            .filter(|o| o.status == Status::Ok)
            .and_then(|o| o.file)
        else {
            // No checksum file: the artifact is used as fetched.
            return Ok(None);
        };
        let text = tokio::fs::read_to_string(&file).await.unwrap_or_default();
        let sum = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        if cutover_fetch::source::parse_hex(&sum).is_none() {
            return Err(ReleaseError::ChecksumFile {
                version: version.to_owned(),
                url: url.to_owned(),
            });
        }
        Ok(Some(sum))
    }

    /// Removes unpacked releases other than those in `keep`.
    pub fn prune(&self, keep: &[&str]) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || keep.contains(&name.as_str()) {
                continue;
            }
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::info!(release = %name, "pruned"),
                Err(e) => tracing::warn!(release = %name, error = %e, "cannot prune"),
            }
        }
    }
}

/// Unpacks by name: `.tar.gz`/`.tgz`, `.tar`, `.zip`; anything else is a single executable.
fn unpack(file: &Path, root: &Path) -> Result<(), String> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    std::fs::create_dir_all(root).map_err(|e| e.to_string())?;
    let open = || std::fs::File::open(file).map_err(|e| e.to_string());
    let untar = |reader: Box<dyn Read>| {
        // `unpack` refuses entries that would land outside `root`.
        tar::Archive::new(reader)
            .unpack(root)
            .map_err(|e| e.to_string())
    };
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        untar(Box::new(flate2::read::GzDecoder::new(open()?)))
    } else if name.ends_with(".tar") {
        untar(Box::new(open()?))
    } else if name.ends_with(".zip") {
        let mut zip = zip::ZipArchive::new(open()?).map_err(|e| e.to_string())?;
        zip.extract(root).map_err(|e| e.to_string())
    } else {
        use std::os::unix::fs::PermissionsExt;
        let dest = root.join(file.file_name().unwrap_or_default());
        std::fs::copy(file, &dest).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn releases(dir: &Path, artifact: String, sha: Option<&str>) -> Releases {
        Releases {
            dir: dir.join("releases"),
            artifact,
            sha256: sha.map(|s| ("v1".to_owned(), s.to_owned())),
        }
    }

    fn tarball(src: &Path, name: &str, content: &str) {
        let work = src.join(format!("{name}.d"));
        std::fs::create_dir_all(&work).expect("dir");
        std::fs::write(work.join("VERSION"), content).expect("write");
        let status = std::process::Command::new("tar")
            .arg("czf")
            .arg(src.join(name))
            .arg("-C")
            .arg(&work)
            .arg("VERSION")
            .status()
            .expect("tar");
        assert!(status.success());
    }

    #[tokio::test]
    async fn fetched_verified_unpacked_and_pruned() {
        let tmp = tempfile::tempdir().expect("tmp");
        let src = tmp.path().join("src");
        std::fs::create_dir_all(&src).expect("src");
        tarball(&src, "app-v1.tar.gz", "one");
        tarball(&src, "app-v2.tar.gz", "two");
        tarball(&src, "app-v3.tar.gz", "three");
        // v3 has a checksum file beside it that does not match.
        std::fs::write(
            src.join("app-v3.tar.gz.sha256"),
            format!("{}  app-v3.tar.gz\n", "0".repeat(64)),
        )
        .expect("sum");
        let r = releases(
            tmp.path(),
            format!("file://{}/app-{{version}}.tar.gz", src.display()),
            None,
        );
        let v1 = r.prepare("v1").await.expect("v1");
        assert_eq!(
            std::fs::read_to_string(v1.join("VERSION")).expect("unpacked"),
            "one"
        );
        r.prepare("v2").await.expect("v2");
        let err = r.prepare("v3").await.expect_err("checksum mismatch");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        let err = r.prepare("v4").await.expect_err("missing");
        assert!(err.to_string().contains("not found"), "{err}");
        assert!(!r.dir_of("v3").exists() && !r.dir_of("v4").exists());
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("releases"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "no staging left behind: {left:?}");
        r.prune(&["v2"]);
        assert!(!r.dir_of("v1").exists() && r.dir_of("v2").exists());
    }

    #[tokio::test]
    async fn a_single_executable_is_made_runnable() {
        let tmp = tempfile::tempdir().expect("tmp");
        std::fs::write(tmp.path().join("app-v1"), "#!/bin/sh\necho hi\n").expect("write");
        let sum = {
            use sha2::Digest;
            let d = sha2::Sha256::digest(b"#!/bin/sh\necho hi\n");
            cutover_fetch::source::to_hex(&d)
        };
        let r = releases(
            tmp.path(),
            format!("file://{}/app-{{version}}", tmp.path().display()),
            Some(&sum),
        );
        let dir = r.prepare("v1").await.expect("v1");
        let out = std::process::Command::new(dir.join("app-v1"))
            .output()
            .expect("runs");
        assert_eq!(out.stdout, b"hi\n");
        // The stack file's checksum belongs to its own version: a wrong one fails.
        let r = releases(
            tmp.path().join("other").as_path(),
            format!("file://{}/app-{{version}}", tmp.path().display()),
            Some(&"1".repeat(64)),
        );
        assert!(r.prepare("v1").await.is_err());
    }
}
