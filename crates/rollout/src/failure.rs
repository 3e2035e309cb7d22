//! What a provider's errors must say: whether the same call may succeed if made again.

/// A provider's error. The executor tries a retryable one again at its next observation and
/// aborts the deploy on any other; a store error (the record of the deploy) converts into it.
pub trait Failure: std::error::Error + From<cutover_store::StoreError> {
    fn retryable(&self) -> bool;
}
