//! The stack file exactly as written: every field optional, unknown keys refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    #[serde(default)]
    pub service: RawService,
    #[serde(default)]
    pub release: RawRelease,
    #[serde(default)]
    pub health: RawHealth,
    #[serde(default)]
    pub group: RawGroup,
    #[serde(default)]
    pub listener: RawListener,
    #[serde(default)]
    pub deploy: RawDeploy,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<RawAutoscale>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<RawAws>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelease {
    pub version: Option<String>,
    pub command: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub user: Option<String>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<String>,
    pub artifact: Option<String>,
    pub sha256: Option<String>,
    pub fetch_timeout: Option<String>,
    pub max_unpacked_size: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub matcher: Option<String>,
    pub fail_open: Option<bool>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub min: Option<u32>,
    pub desired: Option<u32>,
    pub max: Option<u32>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub bind: Option<String>,
    pub tls: Option<RawTls>,
    pub redirect_http: Option<String>,
    pub preview: Option<String>,
    pub request_headers: Option<BTreeMap<String, String>>,
    pub response_headers: Option<BTreeMap<String, String>>,
    /// Appended beside any value already there (set replaces; add keeps both).
    pub add_request_headers: Option<BTreeMap<String, String>>,
    pub add_response_headers: Option<BTreeMap<String, String>>,
    pub remove_request_headers: Option<Vec<String>>,
    pub remove_response_headers: Option<Vec<String>>,
    /// `round-robin`, `least-outstanding` or `peak-ewma`.
    pub balance: Option<String>,
    /// Worker threads serving the listener (default: one per CPU).
    pub workers: Option<u32>,
    /// Bind each worker thread to a CPU of its own.
    pub pin_workers: Option<bool>,
    /// Protocols clients may upgrade to (`Upgrade` tokens); default `["websocket"]`.
    pub upgrades: Option<Vec<String>>,
    /// Upper bound on waiting for the next piece of a target's response body.
    pub body_timeout: Option<String>,
    /// `auto` (from the group's latency), `off`, or a duration such as "500ms".
    pub try_timeout: Option<String>,
    /// Percent of in-flight requests that may be retries after a try timeout at once.
    pub retry_budget: Option<u32>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub bind: Option<String>,
    pub allow_remote: Option<bool>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeploy {
    pub strategy: Option<String>,
    pub max_surge: Option<u32>,
    pub max_unavailable: Option<u32>,
    pub drain_timeout: Option<String>,
    pub progress_deadline: Option<String>,
    pub auto_rollback: Option<bool>,
    pub rollback_window: Option<String>,
    pub steps: Option<Vec<RawStep>>,
    pub analysis: Option<RawAnalysis>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub instances: Option<u32>,
    pub weight: Option<u32>,
    /// A duration, or an empty table for "wait for `cutover promote`".
    pub pause: Option<toml::Value>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    pub min_requests: Option<u64>,
    pub max_error_rate: Option<f64>,
    pub max_error_rate_ratio: Option<f64>,
    pub max_p99: Option<String>,
    pub max_p99_ratio: Option<f64>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoscale {
    pub scale_out_cooldown: Option<String>,
    pub scale_in_cooldown: Option<String>,
    pub policies: Option<Vec<RawPolicy>>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// `step`, `target-tracking` or `cpu`.
    pub kind: Option<String>,
    pub period: Option<String>,
    pub periods: Option<u32>,
    /// `step`: thresholds on requests per target per minute.
    pub steps: Option<Vec<RawScaleStep>>,
    /// `target-tracking`: requests per target per minute to hold.
    pub target: Option<f64>,
    /// `cpu`: percent of one core per instance.
    pub scale_out_above: Option<f64>,
    pub scale_in_below: Option<f64>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaleStep {
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub change: Option<i32>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub region: Option<String>,
    pub vpc: Option<String>,
    pub subnets: Option<Vec<String>>,
    pub instance_type: Option<String>,
    pub security_groups: Option<Vec<String>>,
    pub key_name: Option<String>,
    pub instance_profile: Option<String>,
    pub user_data: Option<String>,
    /// The port the service listens on inside each instance.
    pub port: Option<u16>,
    /// The load balancer listener's port.
    pub listener_port: Option<u16>,
    /// A second listener on this port reaches only the side a deploy brings up: blue-green
    /// checks the new set through it before the flip.
    pub preview_port: Option<u16>,
    /// Run the instances in an Auto Scaling group.
    pub auto_scaling: Option<bool>,
    pub tags: Option<BTreeMap<String, String>>,
    /// Release version → image ID.
    pub images: Option<BTreeMap<String, String>>,
    /// Existing resources to use instead of creating them.
    pub adopt: Option<RawAwsAdopt>,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsAdopt {
    pub listener_arn: Option<String>,
    pub target_group_arns: Option<Vec<String>>,
    pub launch_template: Option<String>,
    pub auto_scaling_group: Option<String>,
}
