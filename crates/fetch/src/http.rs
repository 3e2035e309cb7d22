//! http and https: a GET streamed to the sink; connection failures, cut bodies and 5xx are
//! transient, other statuses are not.

use url::Url;

use crate::sink::Sink;
use crate::FetchError;

fn transport(e: reqwest::Error) -> FetchError {
    FetchError::Transport(match e.url() {
        Some(_) => e.without_url().to_string(),
        None => e.to_string(),
    })
}

pub(crate) async fn get(
    client: &reqwest::Client,
    url: &Url,
    sink: &mut Sink,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), FetchError> {
    let mut resp = client.get(url.clone()).send().await.map_err(|e| {
        if e.is_redirect() {
            FetchError::Redirect(redirect_reason(&e))
        } else {
            transport(e)
        }
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Err(FetchError::NotFound(format!(
            "{url} (HTTP {})",
            status.as_u16()
        )));
    }
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        let n = chunk.len() as u64;
        sink.write(chunk).await?;
        progress(n);
    }
    Ok(())
}

/// The policy's own words, without reqwest's wrapping.
fn redirect_reason(e: &reqwest::Error) -> String {
    let mut source = std::error::Error::source(e);
    let mut last = e.to_string();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}
