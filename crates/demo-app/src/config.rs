//! Command-line and environment settings of the demo service.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The demo service that cutover's examples, tests and benchmarks deploy.
#[derive(Parser, Debug, Clone)]
#[command(name = "demo-app", disable_version_flag = true)]
pub struct Config {
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// Version string reported in `x-app-version` and `/health`.
    #[arg(long = "version", env = "APP_VERSION", default_value = "v1")]
    pub app_version: String,

    /// Instance id reported in `/health` (set by cutover's fleet).
    #[arg(long, env = "INSTANCE_ID")]
    pub instance: Option<String>,

    /// User name for `POST /add_public_key`.
    #[arg(long, env = "ADMIN_USER", default_value = "admin")]
    pub admin_user: String,

    /// Password for `POST /add_public_key`; the endpoint is off without one.
    #[arg(long, env = "ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// File that `POST /add_public_key` appends to (default `~/.ssh/authorized_keys`).
    #[arg(long, env = "AUTHORIZED_KEYS")]
    pub authorized_keys: Option<PathBuf>,

    /// Upper bound on finishing in-flight requests after SIGTERM/SIGINT.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Fault: wait this long before opening the port.
    #[arg(long, value_parser = parse_duration)]
    pub startup_delay: Option<Duration>,

    /// Fault: answer 503 on `/health`.
    #[arg(long)]
    pub fail_health: bool,

    /// Fault: this fraction (0.0–1.0) of `GET /` answers 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub error_rate: f64,

    /// Fault: add this latency to every request but `/health`.
    #[arg(long, value_parser = parse_duration)]
    pub latency: Option<Duration>,

    /// Fault, switched at run time: SIGUSR1 turns on (and off again) this much extra latency
    /// on `GET /`, as an instance that became slow.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub slow_by: Duration,

    /// Fault: exit abruptly (code 70) this long after start.
    #[arg(long, value_parser = parse_duration)]
    pub crash_after: Option<Duration>,

    /// Fault: exit with code 1 at once, before opening the port.
    #[arg(long)]
    pub exit_on_start: bool,

    /// Load: keep this fraction (0.0–1.0) of one core busy, for testing CPU autoscaling.
    #[arg(long, default_value_t = 0.0, value_parser = parse_fraction)]
    pub cpu_burn: f64,
}

impl Config {
    /// The admin password, when one is set: an empty one (`ADMIN_PASSWORD=`) means off, never
    /// "anyone who sends an empty password".
    pub fn password(&self) -> Option<&str> {
        self.admin_password.as_deref().filter(|p| !p.is_empty())
    }

    /// The authorized-keys file the key endpoint writes, when it is enabled.
    pub fn authorized_keys_path(&self) -> Option<PathBuf> {
        self.password()?;
        self.authorized_keys.clone().or_else(|| {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".ssh/authorized_keys"))
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 2s or 500ms: {e}"))
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("`{s}` is not a fraction between 0.0 and 1.0")),
    }
}
