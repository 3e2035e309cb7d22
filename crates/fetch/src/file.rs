//! file: a local copy through the same sink, so it is verified and atomic like any download.

use tokio::io::AsyncReadExt;
use url::Url;

use crate::sink::Sink;
use crate::FetchError;

pub(crate) async fn copy(
    url: &Url,
    sink: &mut Sink,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), FetchError> {
    let path = url
        .to_file_path()
        .map_err(|_| FetchError::BadUrl(url.to_string(), "not a local path".into()))?;
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FetchError::NotFound(path.display().to_string()),
            _ => FetchError::Io(e),
        })?;
    loop {
        let mut buf = bytes::BytesMut::with_capacity(256 * 1024);
        let n = file.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        sink.write(buf.freeze()).await?;
        progress(n as u64);
    }
}
