//! What can go wrong talking to AWS, and whether trying again may help.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// An API call failed; `retryable` for throttling, a 5xx, a timeout or a broken connection.
    #[error("{service} {operation}: {message}")]
    Api {
        service: &'static str,
        operation: &'static str,
        code: Option<String>,
        message: String,
        retryable: bool,
    },
    /// A response lacked something the call always returns.
    #[error("{service} {operation}: the response has no {field}")]
    Incomplete {
        service: &'static str,
        operation: &'static str,
        field: &'static str,
    },
    /// The stack file or the command line asks for something that cannot be done as written.
    #[error("{0}")]
    Invalid(String),
    /// The stack has no AWS resources recorded: `cutover aws init` has not run, or `destroy` has.
    #[error("{0}")]
    NotInitialized(String),
    #[error(transparent)]
    Store(#[from] cutover_store::StoreError),
}

impl AwsError {
    /// Whether the same call may succeed if made again.
    pub fn retryable(&self) -> bool {
        match self {
            AwsError::Api { retryable, .. } => *retryable,
            AwsError::Store(_) => true,
            AwsError::Incomplete { .. } | AwsError::Invalid(_) | AwsError::NotInitialized(_) => {
                false
            }
        }
    }

    /// The AWS error code, such as `InvalidInstanceID.NotFound`.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

impl cutover_rollout::Failure for AwsError {
    fn retryable(&self) -> bool {
        AwsError::retryable(self)
    }
}

/// Turns an SDK error into one that names the service and operation.
pub(crate) fn api<E, R>(
    service: &'static str,
    operation: &'static str,
) -> impl FnOnce(SdkError<E, R>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |e| {
        let transport = matches!(
            e,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_)
        );
        let code = e.code().map(str::to_owned);
        let throttled = code.as_deref().is_some_and(|c| {
            c.contains("Throttl")
                || matches!(
                    c,
                    "RequestLimitExceeded" | "InternalError" | "ServiceUnavailable" | "Unavailable"
                )
        });
        let message = match (e.code(), e.message()) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.to_owned(),
            _ => format!(
                "{}",
                aws_smithy_types::error::display::DisplayErrorContext(&e)
            ),
        };
        AwsError::Api {
            service,
            operation,
            code,
            message,
            retryable: transport || throttled,
        }
    }
}

/// A field every successful response carries.
pub(crate) fn field<T>(
    value: Option<T>,
    service: &'static str,
    operation: &'static str,
    field: &'static str,
) -> Result<T, AwsError> {
    value.ok_or(AwsError::Incomplete {
        service,
        operation,
        field,
    })
}
