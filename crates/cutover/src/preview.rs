//! Blue-green's check of the new set before the flip: requests through the preview listener,
//! which reaches only the new side (the data plane's second listener on one host, a second
//! ALB listener on AWS).

use std::time::Duration;

/// Requests the check sends; every one must be answered below 500 by the new set.
const REQUESTS: usize = 20;

/// Sends [`REQUESTS`] requests for `url` (the preview listener's `/`): `Err` says how many
/// failed and how the first did.
pub async fn check(url: &str) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    for _ in 0..REQUESTS {
        match client.get(url).send().await {
            Ok(r) if r.status().as_u16() < 500 => {}
            Ok(r) => failures.push(format!("HTTP {}", r.status().as_u16())),
            Err(e) => failures.push(e.without_url().to_string()),
        }
    }
    match failures.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} of {REQUESTS} requests through the preview listener failed, first: {first}",
            failures.len()
        )),
    }
}

/// [`check`] of `url`, as the executor takes it.
#[cfg(feature = "aws")]
pub fn at<'a>(url: String) -> cutover_rollout::PreviewCheck<'a> {
    Box::new(move || {
        let url = url.clone();
        Box::pin(async move { check(&url).await })
    })
}
