//! Release artifacts: downloads http, https, s3 and file URLs in parallel into a directory, each
//! verified against its checksum and written under a temporary name, fsynced, then renamed.

pub mod archive;
mod file;
mod http;
#[cfg(feature = "s3")]
mod s3;
mod sink;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

pub use source::Source;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unsupported scheme `{0}`: expected http, https, s3 or file")]
    Unsupported(String),
    #[error("s3 support is not built into this binary: build cutover with `--features s3`")]
    S3NotBuilt,
    #[error("`{0}` is not a URL: {1}")]
    BadUrl(String, String),
    #[error("`{0}` names no file to save")]
    NoFileName(String),
    #[error("bad checksum in `{0}`: expected #sha256= and 64 hex digits")]
    BadChecksum(String),
    /// The server answered with an error status; 5xx, 408 and 429 are worth another try.
    #[error("HTTP {0}")]
    Status(u16),
    /// The connection failed or broke mid-body: worth another try.
    #[error("{0}")]
    Transport(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// Writing the file here failed: retrying will not help.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("checksum mismatch: expected sha256 {expected}, got {actual}")]
    Mismatch { expected: String, actual: String },
    #[error("s3: {message}")]
    S3 { message: String, transient: bool },
    #[error("bad --ca-cert {0}: {1}")]
    CaCert(PathBuf, String),
    #[error("did not finish within {}", humantime::format_duration(*.0))]
    Deadline(Duration),
    #[error("larger than the {0} bytes allowed")]
    TooLarge(u64),
    #[error("refused redirect: {0}")]
    Redirect(String),
}

impl FetchError {
    /// Whether another attempt may succeed.
    pub fn transient(&self) -> bool {
        match self {
            FetchError::Status(code) => *code >= 500 || *code == 408 || *code == 429,
            FetchError::Transport(_) => true,
            FetchError::S3 { transient, .. } => *transient,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Downloads at once.
    pub jobs: usize,
    /// Extra root certificate (PEM) for https, beside the system's.
    pub ca_cert: Option<PathBuf>,
    /// Tries per file, the first included.
    pub attempts: u32,
    /// Back-off before the second try; doubled each time after.
    pub backoff: Duration,
    /// Upper bound on each file, every attempt and back-off included, so that a server that
    /// trickles its answer cannot hold a download for ever.
    pub deadline: Option<Duration>,
    /// Most bytes one file may have.
    pub max_bytes: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            jobs: 8,
            ca_cert: None,
            attempts: 5,
            backoff: Duration::from_millis(200),
            deadline: None,
            max_bytes: None,
        }
    }
}

/// Progress of each download, for a terminal's bars; every method has a silent default.
pub trait Progress: Send + Sync {
    fn begin(&self, _index: usize, _name: &str, _total: Option<u64>) {}
    /// A new attempt starts over from zero.
    fn restart(&self, _index: usize) {}
    fn advance(&self, _index: usize, _bytes: u64) {}
    fn end(&self, _index: usize, _ok: bool) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result", content = "reason")]
pub enum Status {
    Ok,
    Failed(String),
    /// The source says definitely that there is no such file (HTTP 404 or 410, S3 NoSuchKey, a
    /// missing local file); any other failure is [`Status::Failed`].
    NotFound(String),
    /// A later URL names the same file; only the last one is downloaded.
    Superseded,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub url: String,
    pub file: Option<PathBuf>,
    pub bytes: u64,
    pub millis: u64,
    pub attempts: u32,
    #[serde(flatten)]
    pub status: Status,
}

/// One download's context: the shared client and where to write.
struct Job {
    client: reqwest::Client,
    dir: PathBuf,
    options: Options,
    progress: Arc<dyn Progress>,
    #[cfg(feature = "s3")]
    s3: Arc<tokio::sync::OnceCell<aws_sdk_s3::Client>>,
}

/// Most redirects followed for one request.
pub const MAX_REDIRECTS: usize = 5;

/// Follows at most [`MAX_REDIRECTS`] redirects, and none from https down to plain http: the
/// artifact (and any credentials in the URL) would then cross the network unprotected.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.previous().iter().any(|u| u.scheme() == "https")
            && attempt.url().scheme() != "https";
        if downgrade {
            let to = attempt.url().to_string();
            attempt.error(format!("from https to {to}, which is not https"))
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

pub fn client(options: &Options) -> Result<reqwest::Client, FetchError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .redirect(redirect_policy())
        .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &options.ca_cert {
        let pem =
            std::fs::read(path).map_err(|e| FetchError::CaCert(path.clone(), e.to_string()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| FetchError::CaCert(path.clone(), e.to_string()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| FetchError::Transport(e.to_string()))
}

/// Downloads every URL into `dir`, `options.jobs` at a time; an outcome per URL, in order.
pub async fn fetch_all(
    urls: &[String],
    dir: &Path,
    options: &Options,
    progress: Arc<dyn Progress>,
) -> Result<Vec<Outcome>, FetchError> {
    tokio::fs::create_dir_all(dir).await?;
    let job = Arc::new(Job {
        client: client(options)?,
        dir: dir.to_path_buf(),
        options: options.clone(),
        progress,
        #[cfg(feature = "s3")]
        s3: Arc::new(tokio::sync::OnceCell::new()),
    });
    let sources: Vec<Result<Source, FetchError>> = urls.iter().map(|u| Source::parse(u)).collect();
    // When two URLs name the same file, the last one wins.
    let mut last = std::collections::HashMap::new();
    for (i, s) in sources.iter().enumerate() {
        if let Ok(s) = s {
            last.insert(s.name.clone(), i);
        }
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; urls.len()];
    let jobs = Arc::new(Semaphore::new(options.jobs.max(1)));
    let mut running = tokio::task::JoinSet::new();
    for (i, parsed) in sources.into_iter().enumerate() {
        let failed = |reason: String| Outcome {
            url: urls[i].clone(),
            file: None,
            bytes: 0,
            millis: 0,
            attempts: 0,
            status: Status::Failed(reason),
        };
        let source = match parsed {
            Ok(s) => s,
            Err(e) => {
                outcomes[i] = Some(failed(e.to_string()));
                continue;
            }
        };
        if last.get(&source.name) != Some(&i) {
            outcomes[i] = Some(Outcome {
                status: Status::Superseded,
                file: Some(dir.join(&source.name)),
                ..failed(String::new())
            });
            continue;
        }
        let (job, jobs) = (job.clone(), jobs.clone());
        running.spawn(async move {
            let _slot = jobs.acquire_owned().await;
            (i, job.fetch(i, source).await)
        });
    }
    while let Some(done) = running.join_next().await {
        if let Ok((i, outcome)) = done {
            outcomes[i] = Some(outcome);
        }
    }
    Ok(outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.unwrap_or_else(|| Outcome {
                url: urls[i].clone(),
                file: None,
                bytes: 0,
                millis: 0,
                attempts: 0,
                status: Status::Failed("the download task panicked".into()),
            })
        })
        .collect())
}

impl Job {
    /// One file, retried with back-off while the failure is transient.
    async fn fetch(&self, index: usize, source: Source) -> Outcome {
        let started = Instant::now();
        let dest = self.dir.join(&source.name);
        self.progress.begin(index, &source.name, None);
        let mut attempts = 0;
        let mut delay = self.options.backoff;
        let tries = async {
            loop {
                attempts += 1;
                if attempts > 1 {
                    self.progress.restart(index);
                }
                match self.attempt(index, &source, &dest).await {
                    Ok(bytes) => break Ok(bytes),
                    Err(e) if e.transient() && attempts < self.options.attempts => {
                        tracing::warn!(url = %source.raw, attempt = attempts, error = %e, "retrying");
                        let jitter = delay.mul_f64(fastrand::f64() * 0.5);
                        tokio::time::sleep(delay + jitter).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => break Err(e),
                }
            }
        };
        let result = match self.options.deadline {
            Some(limit) => tokio::time::timeout(limit, tries)
                .await
                .unwrap_or(Err(FetchError::Deadline(limit))),
            None => tries.await,
        };
        self.progress.end(index, result.is_ok());
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match result {
            Ok(bytes) => Outcome {
                url: source.raw,
                file: Some(dest),
                bytes,
                millis,
                attempts,
                status: Status::Ok,
            },
            Err(e) => Outcome {
                url: source.raw,
                file: None,
                bytes: 0,
                millis,
                attempts,
                status: match e {
                    FetchError::NotFound(_) => Status::NotFound(e.to_string()),
                    e => Status::Failed(e.to_string()),
                },
            },
        }
    }

    async fn attempt(&self, index: usize, source: &Source, dest: &Path) -> Result<u64, FetchError> {
        let mut sink = sink::Sink::create(
            &self.dir,
            &source.name,
            source.sha256.is_some(),
            self.options.max_bytes,
        )
        .await?;
        let progress = |n: u64| self.progress.advance(index, n);
        match source.url.scheme() {
            "http" | "https" => http::get(&self.client, &source.url, &mut sink, &progress).await?,
            "file" => file::copy(&source.url, &mut sink, &progress).await?,
            #[cfg(feature = "s3")]
            "s3" => {
                let client = self.s3.get_or_init(s3::client).await;
                s3::get(client, &source.url, &mut sink, &progress).await?
            }
            #[cfg(not(feature = "s3"))]
            "s3" => return Err(FetchError::S3NotBuilt),
            other => return Err(FetchError::Unsupported(other.to_owned())),
        }
        sink.finish(source.sha256.as_ref(), dest).await
    }
}
