//! The validated stack file that the rest of cutover runs from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spec {
    pub service: String,
    pub release: Release,
    pub health: HealthCheck,
    pub group: Group,
    pub listener: Listener,
    pub deploy: Deploy,
    pub admin: Admin,
    pub autoscale: Option<Autoscale>,
    /// Static targets cutover fronts but does not run.
    pub targets: Vec<String>,
    /// Run the stack on AWS instead of this host.
    pub aws: Option<Aws>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Release {
    /// The version `cutover up` starts with.
    pub version: String,
    /// Command template; `{port}`, `{version}` and `{instance}` are filled per instance.
    pub command: String,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub stop_signal: StopSignal,
    #[serde(with = "crate::duration::serde_str")]
    pub stop_timeout: Duration,
    pub artifact: Option<String>,
    pub sha256: Option<String>,
    /// Upper bound on fetching, verifying and unpacking one release, retries included.
    #[serde(with = "crate::duration::serde_str")]
    pub fetch_timeout: Duration,
    /// Upper bound on the bytes an artifact unpacks to.
    pub max_unpacked_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum StopSignal {
    #[serde(rename = "SIGTERM")]
    Term,
    #[serde(rename = "SIGINT")]
    Int,
    #[serde(rename = "SIGQUIT")]
    Quit,
    #[serde(rename = "SIGHUP")]
    Hup,
    #[serde(rename = "SIGUSR1")]
    Usr1,
    #[serde(rename = "SIGUSR2")]
    Usr2,
}

impl StopSignal {
    pub const ALL: [(StopSignal, &'static str); 6] = [
        (StopSignal::Term, "SIGTERM"),
        (StopSignal::Int, "SIGINT"),
        (StopSignal::Quit, "SIGQUIT"),
        (StopSignal::Hup, "SIGHUP"),
        (StopSignal::Usr1, "SIGUSR1"),
        (StopSignal::Usr2, "SIGUSR2"),
    ];

    pub fn parse(s: &str) -> Option<Self> {
        let upper = s.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Self::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(sig, _)| *sig)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(sig, _)| *sig == self)
            .map(|(_, n)| *n)
            .unwrap_or("SIGTERM")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthCheck {
    pub path: String,
    #[serde(with = "crate::duration::serde_str")]
    pub interval: Duration,
    #[serde(with = "crate::duration::serde_str")]
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub matcher: Matcher,
    /// When every target is unhealthy, send to all of them rather than to none.
    pub fail_open: bool,
}

/// Status codes a health check accepts, such as `200-299` or `200,301-302`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher(pub Vec<RangeInclusive<u16>>);

impl Matcher {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (lo, hi) = part.split_once('-').unwrap_or((part, part));
            let code = |c: &str| match c.trim().parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n),
                _ => Err(format!(
                    "`{c}` in `{s}` is not an HTTP status code (100-599)"
                )),
            };
            let (lo, hi) = (code(lo)?, code(hi)?);
            if lo > hi {
                return Err(format!("range `{part}` runs backwards"));
            }
            ranges.push(lo..=hi);
        }
        Ok(Self(ranges))
    }

    pub fn matches(&self, status: u16) -> bool {
        self.0.iter().any(|r| r.contains(&status))
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|r| {
                if r.start() == r.end() {
                    r.start().to_string()
                } else {
                    format!("{}-{}", r.start(), r.end())
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl Serialize for Matcher {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Group {
    pub min: u32,
    pub desired: u32,
    pub max: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Listener {
    pub bind: SocketAddr,
    pub tls: Option<Tls>,
    /// A plain listener that redirects to HTTPS.
    pub redirect_http: Option<SocketAddr>,
    /// A listener that reaches only the set a deploy is bringing up: for looking at a new
    /// version before it takes traffic, and for blue-green's pre-promotion check.
    pub preview: Option<SocketAddr>,
    pub request_headers: BTreeMap<String, String>,
    pub response_headers: BTreeMap<String, String>,
    pub add_request_headers: BTreeMap<String, String>,
    pub add_response_headers: BTreeMap<String, String>,
    pub remove_request_headers: Vec<String>,
    pub remove_response_headers: Vec<String>,
    pub balance: Balance,
    /// Worker threads serving each listener, each with its own event loop; `None`: one per CPU
    /// the process may use.
    pub workers: Option<u32>,
    /// Each worker thread bound to a CPU of its own, as nginx's `worker_cpu_affinity auto`: its
    /// cache stays warm and two workers never share a CPU, but where other processes keep the
    /// CPUs busy it takes away the scheduler's freedom to move a worker off a busy one.
    pub pin_workers: bool,
    /// Protocols a client may upgrade to; any other `Upgrade` is not passed on.
    pub upgrades: Vec<String>,
    /// A target that sends nothing of a response body for this long has it cut.
    #[serde(with = "crate::duration::serde_str")]
    pub body_timeout: Duration,
    /// How long one try of an idempotent bodiless request waits for a response head before it
    /// is sent to another target.
    pub try_timeout: TryTimeout,
    /// Retries after a try timeout in flight at once, as a share (percent) of requests in
    /// flight; at least three are always allowed unless it is 0.
    pub retry_budget: u32,
}

/// How long one try may wait for a target's response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TryTimeout {
    /// From the group's own latency: a multiple of its recent p99, with a floor.
    Auto,
    /// A fixed bound.
    After(#[serde(with = "crate::duration::serde_str")] Duration),
    /// One try waits as long as the whole request may.
    Off,
}

impl TryTimeout {
    /// As the stack file spells it.
    pub fn text(self) -> String {
        match self {
            TryTimeout::Auto => "auto".into(),
            TryTimeout::Off => "off".into(),
            TryTimeout::After(d) => humantime::format_duration(d).to_string(),
        }
    }
}

/// How a group spreads requests over its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    RoundRobin,
    LeastOutstanding,
    /// Power of two choices over each target's peak-EWMA latency times its requests in flight:
    /// a slow target gets less traffic the slower it is.
    PeakEwma,
}

impl Balance {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "round-robin" => Some(Balance::RoundRobin),
            "least-outstanding" => Some(Balance::LeastOutstanding),
            "peak-ewma" => Some(Balance::PeakEwma),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastOutstanding => "least-outstanding",
            Balance::PeakEwma => "peak-ewma",
        }
    }
}

/// The admin API (status, metrics, targets), token-protected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Admin {
    pub bind: SocketAddr,
    /// The stack file allows a bind address beyond loopback (the token then crosses the network
    /// in plain HTTP: every start warns).
    pub allow_remote: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    Rolling,
    ReplaceGroup,
    BlueGreen,
    Canary,
}

impl Strategy {
    pub const ALL: [(Strategy, &'static str); 4] = [
        (Strategy::Rolling, "rolling"),
        (Strategy::ReplaceGroup, "replace-group"),
        (Strategy::BlueGreen, "blue-green"),
        (Strategy::Canary, "canary"),
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(st, _)| *st)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(st, _)| *st == self)
            .map(|(_, n)| *n)
            .unwrap_or("rolling")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deploy {
    pub strategy: Strategy,
    pub max_surge: u32,
    pub max_unavailable: u32,
    #[serde(with = "crate::duration::serde_str")]
    pub drain_timeout: Duration,
    #[serde(with = "crate::duration::serde_str")]
    pub progress_deadline: Duration,
    pub auto_rollback: bool,
    #[serde(with = "crate::duration::serde_str")]
    pub rollback_window: Duration,
    pub steps: Vec<CanaryStep>,
    pub analysis: Analysis,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryStep {
    /// Start this many instances of the new version, each taking its natural share.
    pub instances: Option<u32>,
    /// Give the new version this weight out of 100.
    pub weight: Option<u32>,
    pub pause: Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pause {
    None,
    For(#[serde(with = "crate::duration::serde_str")] Duration),
    /// Wait for `cutover promote`.
    UntilPromoted,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// Requests the new version must serve in a step before any verdict.
    pub min_requests: u64,
    /// Absolute limit on the new version's error rate (0.0–1.0).
    pub max_error_rate: f64,
    /// Limit relative to the baseline's error rate.
    pub max_error_rate_ratio: f64,
    #[serde(with = "crate::duration::serde_str")]
    pub max_p99: Duration,
    /// Limit relative to the baseline's p99.
    pub max_p99_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Autoscale {
    #[serde(with = "crate::duration::serde_str")]
    pub scale_out_cooldown: Duration,
    #[serde(with = "crate::duration::serde_str")]
    pub scale_in_cooldown: Duration,
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub kind: PolicyKind,
    #[serde(with = "crate::duration::serde_str")]
    pub period: Duration,
    pub periods: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyKind {
    /// Thresholds on requests per target per minute.
    Step { steps: Vec<ScaleStep> },
    /// Hold requests per target per minute near `target`.
    TargetTracking { target: f64 },
    /// Percent of one core per instance.
    Cpu {
        scale_out_above: f64,
        scale_in_below: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Threshold {
    Above(f64),
    Below(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScaleStep {
    pub threshold: Threshold,
    pub change: i32,
}

/// Where and how the stack runs on AWS: EC2 instances behind an Application Load Balancer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aws {
    /// `None`: from the environment or profile, as every AWS tool does.
    pub region: Option<String>,
    /// `None`: the account's default VPC.
    pub vpc: Option<String>,
    /// Empty: every subnet of the VPC; instances spread across them.
    pub subnets: Vec<String>,
    pub instance_type: String,
    pub security_groups: Vec<String>,
    pub key_name: Option<String>,
    /// Name or ARN of the IAM instance profile: a role, rather than keys on the instance.
    pub instance_profile: Option<String>,
    pub user_data: Option<String>,
    pub port: u16,
    pub listener_port: u16,
    /// A listener that reaches only the new side, for blue-green's check before the flip.
    pub preview_port: Option<u16>,
    pub auto_scaling: bool,
    pub tags: BTreeMap<String, String>,
    pub images: BTreeMap<String, String>,
    pub adopt: AwsAdopt,
}

/// Existing resources `cutover aws init` uses instead of creating its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AwsAdopt {
    pub listener_arn: Option<String>,
    /// Two target groups: blue and green.
    pub target_group_arns: Vec<String>,
    /// A launch template ID (`lt-…`) or name.
    pub launch_template: Option<String>,
    /// An Auto Scaling group by name: deploys roll inside it, or replace it.
    pub auto_scaling_group: Option<String>,
}
