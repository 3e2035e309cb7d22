//! s3: GetObject through the official SDK with the standard credential chain and region, streamed
//! to the sink chunk by chunk; throttling, 5xx and broken connections are transient.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::Client;
use url::Url;

use crate::sink::Sink;
use crate::FetchError;

/// A client from the usual places: environment, profile (`AWS_PROFILE`), instance role; the
/// region likewise; `AWS_ENDPOINT_URL` for emulators.
pub(crate) async fn client() -> Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .ok()
        .filter(|e| !e.is_empty());
    if let Some(e) = &endpoint {
        loader = loader.endpoint_url(e);
    }
    let shared = loader.load().await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        // Emulators and private endpoints seldom serve virtual-hosted bucket names.
        .force_path_style(endpoint.is_some())
        .build();
    Client::from_conf(config)
}

fn classify<E, R>(e: SdkError<E, R>) -> FetchError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let transient = matches!(
        e,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
    );
    let code = e.code().unwrap_or("").to_owned();
    let throttled = matches!(
        code.as_str(),
        "SlowDown"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
    );
    let message = match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        _ => format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
    };
    if matches!(code.as_str(), "NoSuchKey" | "NotFound") {
        return FetchError::NotFound(message);
    }
    FetchError::S3 {
        message,
        transient: transient || throttled,
    }
}

pub(crate) async fn get(
    client: &Client,
    url: &Url,
    sink: &mut Sink,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), FetchError> {
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| FetchError::BadUrl(url.to_string(), "no bucket".into()))?;
    let key = percent_encoding::percent_decode_str(url.path().trim_start_matches('/'))
        .decode_utf8_lossy()
        .into_owned();
    let out = client
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .map_err(classify)?;
    let mut body = out.body;
    while let Some(bytes) = body.try_next().await.map_err(|e| FetchError::S3 {
        message: format!("reading s3://{bucket}/{key}: {e}"),
        transient: true,
    })? {
        let n = bytes.len() as u64;
        sink.write(bytes).await?;
        progress(n);
    }
    Ok(())
}
