//! What every request handler of the demo service may read: its version, fault knobs and
//! long-lived connections, built once at start.

use std::time::Duration;

use axum::http::HeaderValue;

use crate::auth::Credentials;
use crate::config::Config;
use crate::keys::KeyFile;

/// Everything a request handler may read; built once at start.
#[derive(Debug)]
pub struct AppState {
    pub version: String,
    pub version_header: HeaderValue,
    pub instance: Option<String>,
    pub fail_health: bool,
    pub error_rate: f64,
    pub latency: Option<Duration>,
    pub admin: Option<(Credentials, KeyFile)>,
    /// Set once the service is stopping: long-lived connections close cleanly.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// WebSockets open now: a stopping service waits for their close frames to go out.
    pub sockets: std::sync::atomic::AtomicUsize,
    /// Run-time faults on `GET /`, switched by SIGUSR1 (slow by `slow_by`) and SIGUSR2 (every
    /// answer broken off in the middle of its body).
    pub slow: std::sync::atomic::AtomicBool,
    pub slow_by: Duration,
    pub breaks: std::sync::atomic::AtomicBool,
}

impl AppState {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let version_header = HeaderValue::from_str(&config.app_version).map_err(|_| {
            anyhow::anyhow!(
                "--version `{}` cannot be sent as a header value",
                config.app_version
            )
        })?;
        let admin = match (config.password(), config.authorized_keys_path()) {
            (Some(password), Some(path)) => Some((
                Credentials::new(config.admin_user.clone(), password),
                KeyFile::new(path),
            )),
            (Some(_), None) => {
                anyhow::bail!("--admin-password is set but no --authorized-keys file and no HOME")
            }
            _ => None,
        };
        Ok(Self {
            version: config.app_version.clone(),
            version_header,
            instance: config.instance.clone(),
            fail_health: config.fail_health,
            error_rate: config.error_rate,
            latency: config.latency,
            admin,
            closing: tokio::sync::watch::Sender::new(false),
            sockets: std::sync::atomic::AtomicUsize::new(0),
            slow: std::sync::atomic::AtomicBool::new(false),
            slow_by: config.slow_by,
            breaks: std::sync::atomic::AtomicBool::new(false),
        })
    }
}
