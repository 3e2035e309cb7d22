//! Releases: the stack's artifact for a version, fetched once, verified and unpacked into
//! `releases/<version>/` before any instance runs it; instances start from there. Old releases
//! are pruned, keeping those a rollback may need.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cutover_fetch::archive::{self, Limits};
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
    /// Fetching, verifying and unpacking took longer than `release.fetch_timeout`.
    #[error("release {version}: not ready within release.fetch_timeout ({})", humantime::format_duration(*.limit))]
    Deadline { version: String, limit: Duration },
    /// The deploy was aborted while its release was being prepared.
    #[error("release {version}: {reason}")]
    Cancelled { version: String, reason: String },
    /// Not a version: it would name something other than a directory of its own.
    #[error("{0}")]
    BadVersion(String),
}

pub struct Releases {
    dir: PathBuf,
    /// URL template: `{version}` is filled in.
    artifact: String,
    /// The stack file's checksum, which belongs to the stack file's version.
    sha256: Option<(String, String)>,
    /// Bound on fetching, verifying and unpacking one release.
    fetch_timeout: Duration,
    limits: Limits,
}

impl Releases {
    /// `None` when the stack has no artifact: instances run the command as it stands.
    pub fn new(data_dir: &Path, release: &cutover_spec::Release) -> Option<Self> {
        let artifact = release.artifact.clone()?;
        Some(Self {
            dir: data_dir.join("releases"),
            artifact,
            sha256: release.sha256.clone().map(|s| (release.version.clone(), s)),
            fetch_timeout: release.fetch_timeout,
            limits: Limits {
                max_bytes: release.max_unpacked_size,
                ..Limits::default()
            },
        })
    }

    /// Where `version` is unpacked; instances of it start in this directory.
    pub fn dir_of(&self, version: &str) -> PathBuf {
        self.dir.join(version)
    }

    /// Fetches, verifies and unpacks `version` unless it is there already. Nothing appears under
    /// `releases/<version>` unless all of that succeeded.
    pub async fn prepare(&self, version: &str) -> Result<PathBuf, ReleaseError> {
        self.prepare_until(version, std::future::pending()).await
    }

    /// Like [`Releases::prepare`], given up (and cleaned up) when `cancel` resolves with its
    /// reason, or when `release.fetch_timeout` has passed.
    pub async fn prepare_until(
        &self,
        version: &str,
        cancel: impl std::future::Future<Output = String>,
    ) -> Result<PathBuf, ReleaseError> {
        // A version names a directory here: one that is not a plain name never gets that far.
        cutover_spec::version::check(version).map_err(ReleaseError::BadVersion)?;
        let dest = self.dir_of(version);
        if dest.is_dir() {
            return Ok(dest);
        }
        let io = |e: std::io::Error| ReleaseError::Io(e, version.to_owned());
        let url = self.artifact.replace("{version}", version);
        let staging = self
            .dir
            .join(format!(".staging-{version}-{:08x}", fastrand::u32(..)));
        create_private_dir(&self.dir).map_err(io)?;
        tokio::fs::create_dir_all(&staging).await.map_err(io)?;
        let limit = self.fetch_timeout;
        let result = tokio::select! {
            r = tokio::time::timeout(limit, self.stage(version, &url, &staging)) => {
                r.unwrap_or(Err(ReleaseError::Deadline { version: version.to_owned(), limit }))
            }
            reason = cancel => Err(ReleaseError::Cancelled { version: version.to_owned(), reason }),
        };
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
        let options = Options {
            max_bytes: Some(self.limits.max_bytes),
            ..Options::default()
        };
        let outcome = fetch_all(&[target], &download, &options, Arc::new(Quiet))
            .await
            .map_err(|e| fetch_error(e.to_string()))?;
        let file = match outcome.into_iter().next() {
            Some(o) if o.status == Status::Ok => o.file,
            Some(o) => match o.status {
                Status::Failed(reason) | Status::NotFound(reason) => {
                    return Err(fetch_error(reason))
                }
                _ => None,
            },
            None => None,
        }
        .ok_or_else(|| fetch_error("nothing was downloaded".into()))?;
        let root = staging.join("root");
        let (v, f, r, limits) = (version.to_owned(), file.clone(), root.clone(), self.limits);
        tokio::task::spawn_blocking(move || archive::unpack(&f, &r, &limits))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
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
            max_bytes: Some(64 << 10),
            ..Options::default()
        };
        let failed = |reason: String| ReleaseError::Fetch {
            version: version.to_owned(),
            url: sum_url.clone(),
            reason,
        };
        let outcome = fetch_all(
            std::slice::from_ref(&sum_url),
            &dir,
            &options,
            Arc::new(Quiet),
        )
        .await
        .map_err(|e| failed(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| failed("nothing was downloaded".into()))?;
        let file = match (outcome.status, outcome.file) {
            (Status::Ok, Some(file)) => file,
            // Only a definite "no such file" means the artifact has no checksum beside it: any
            // other failure could be an attacker or an outage hiding a checksum that exists.
            (Status::NotFound(_), _) => return Ok(None),
            (Status::Failed(reason), _) => return Err(failed(reason)),
            (_, _) => return Err(failed("nothing was downloaded".into())),
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

/// Makes `dir` (and its parents) with mode 0711 whatever the umask: a service user may reach
/// its own release by name but list nothing.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn releases(dir: &Path, artifact: String, sha: Option<&str>) -> Releases {
        Releases {
            dir: dir.join("releases"),
            artifact,
            sha256: sha.map(|s| ("v1".to_owned(), s.to_owned())),
            fetch_timeout: Duration::from_secs(30),
            limits: Limits::default(),
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

    /// Answers by path: `/ok/NAME` the tarball, `/busy/NAME.sha256` a 503, `/slow/NAME` a body
    /// at a byte per 100 ms; anything else 404.
    async fn server(tarball: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tarball = tarball.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_string();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let ok = |len: usize| {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
                        )
                    };
                    let sum = path.ends_with(".sha256");
                    if path.starts_with("/busy/") && sum {
                        let _ = s
                            .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                    } else if path.starts_with("/slow/") && !sum {
                        let _ = s.write_all(ok(tarball.len()).as_bytes()).await;
                        for b in &tarball {
                            if s.write_all(&[*b]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    } else if !sum && !path.contains("missing") {
                        let _ = s.write_all(ok(tarball.len()).as_bytes()).await;
                        let _ = s.write_all(&tarball).await;
                    } else {
                        let _ = s
                            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn tarball_bytes(tmp: &Path) -> Vec<u8> {
        tarball(tmp, "app.tar.gz", "one");
        std::fs::read(tmp.join("app.tar.gz")).expect("tarball")
    }

    #[tokio::test]
    async fn only_a_definite_not_found_means_no_checksum() {
        let tmp = tempfile::tempdir().expect("tmp");
        let base = server(tarball_bytes(tmp.path())).await;
        // No .sha256 at all (404): used as fetched.
        let r = releases(
            tmp.path(),
            format!("{base}/ok/app-{{version}}.tar.gz"),
            None,
        );
        r.prepare("v1").await.expect("no checksum file is fine");
        // The .sha256 fails to fetch: the release fails, naming it.
        let r = releases(
            &tmp.path().join("b"),
            format!("{base}/busy/app-{{version}}.tar.gz"),
            None,
        );
        let e = r.prepare("v1").await.expect_err("checksum unavailable");
        assert!(e.to_string().contains(".sha256"), "{e}");
        assert!(e.to_string().contains("HTTP 503"), "{e}");
        assert!(!r.dir_of("v1").exists());
        // A directory where the .sha256 should be is no "not found" either.
        let src = tmp.path().join("src");
        std::fs::create_dir_all(src.join("app-v1.tar.gz.sha256")).expect("dir");
        std::fs::copy(tmp.path().join("app.tar.gz"), src.join("app-v1.tar.gz")).expect("copy");
        let r = releases(
            &tmp.path().join("c"),
            format!("file://{}/app-{{version}}.tar.gz", src.display()),
            None,
        );
        assert!(r.prepare("v1").await.is_err());
    }

    #[tokio::test]
    async fn a_trickled_artifact_is_bounded_by_fetch_timeout_and_abort_cancels_it() {
        let tmp = tempfile::tempdir().expect("tmp");
        let base = server(tarball_bytes(tmp.path())).await;
        let mut r = releases(
            tmp.path(),
            format!("{base}/slow/app-{{version}}.tar.gz"),
            None,
        );
        r.fetch_timeout = Duration::from_millis(800);
        let started = std::time::Instant::now();
        let e = r.prepare("v1").await.expect_err("deadline");
        assert!(matches!(e, ReleaseError::Deadline { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
        r.fetch_timeout = Duration::from_secs(600);
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "aborted".to_owned()
        };
        let e = r.prepare_until("v1", cancel).await.expect_err("cancelled");
        assert!(matches!(e, ReleaseError::Cancelled { .. }), "{e}");
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("releases"))
            .expect("dir")
            .flatten()
            .collect();
        assert!(left.is_empty(), "nothing left behind: {left:?}");
    }

    #[tokio::test]
    async fn a_version_that_is_not_a_plain_name_is_never_prepared() {
        let tmp = tempfile::tempdir().expect("tmp");
        let r = releases(tmp.path(), "file:///nonexistent/app-{version}".into(), None);
        for bad in [".", "..", "../x", &"v".repeat(300)] {
            assert!(matches!(
                r.prepare(bad).await,
                Err(ReleaseError::BadVersion(_))
            ));
        }
    }
}
