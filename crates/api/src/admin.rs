//! The admin API (behind the data dir's bearer token): what the CLI asks of a running stack and
//! what it answers. `cutover status`, `deploy`, `history`, `promote` … are its client.

use std::net::SocketAddr;

use cutover_control::{Progress, Reason, Side, TargetState};
use cutover_deploy::State;
use cutover_proxy::{DrainReport, GroupStatus};
use cutover_rollout::StepRecord;
use cutover_store::ScalingRow;
use serde::{Deserialize, Serialize};

use crate::drains::Drains;
use crate::endpoint::{Endpoint, Method};

/// A deployment as the controller keeps it and the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: u64,
    pub from: String,
    pub to: String,
    pub strategy: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub progress: Progress,
    /// The steps a canary went through, with their verdicts.
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// For a rollback to a warm set: microseconds from the command to the traffic flip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flip_us: Option<u64>,
    /// What draining its old instances came to.
    #[serde(default)]
    pub drains: Drains,
}

impl Deployment {
    pub fn finished(&self) -> bool {
        self.progress.is_finished()
    }
}

/// An instance as `cutover status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub id: String,
    pub version: String,
    /// The target group it serves from.
    pub group: Side,
    pub pid: u32,
    pub port: u16,
    pub state: State,
    pub health: Option<TargetState>,
    pub reason: Option<Reason>,
    pub in_flight: usize,
    pub rps: u64,
}

/// A slot waiting out its back-off after instances in it died young.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackingOff {
    pub version: String,
    pub died_young: u32,
    pub for_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restarts {
    pub backing_off: Vec<BackingOff>,
    /// Set while a release dies young in most slots.
    pub crash_loop: Option<String>,
}

/// Writes to the state database have been failing; traffic is served as before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateWrites {
    pub error: String,
    pub failed_writes: u64,
    pub for_s: u64,
}

/// The previous release kept warm on the other side for an instant rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warm {
    pub version: String,
    pub for_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlane {
    pub pid: u32,
}

/// Everything `cutover status` shows. A stack of static targets has groups only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub groups: Vec<GroupStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane: Option<DataPlane>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<u32>,
    #[serde(default)]
    pub instances: Vec<InstanceStatus>,
    #[serde(default)]
    pub deployment: Option<Deployment>,
    #[serde(default)]
    pub scaling: Option<ScalingRow>,
    #[serde(default)]
    pub preview: Option<SocketAddr>,
    #[serde(default)]
    pub restarts: Restarts,
    /// `None` while writes succeed.
    #[serde(default)]
    pub state_writes: Option<StateWrites>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm: Option<Warm>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct GetStatus {}

impl Endpoint for GetStatus {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/status";
    type Reply = Status;
}

/// Prometheus text for every group and target (`text/plain`, not JSON).
pub const METRICS: &str = "/metrics";

/// Starts a deployment (202 with it; 409 while another is in progress).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    pub version: String,
    #[serde(default)]
    pub strategy: Option<String>,
    #[serde(default)]
    pub command: Option<String>,
}

impl Endpoint for Deploy {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/deploy";
    type Reply = Deployment;
}

/// Rolls back: a traffic flip to a warm set, or a deploy of `to` (default: what the current
/// release replaced).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    #[serde(default)]
    pub to: Option<String>,
}

impl Endpoint for Rollback {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/rollback";
    type Reply = Deployment;
}

/// Moves a paused canary on one step, or (`full`) all the way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    #[serde(default)]
    pub full: bool,
}

impl Endpoint for Promote {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/promote";
    type Reply = Deployment;
}

macro_rules! steer {
    ($name:ident, $route:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct $name {}

        impl Endpoint for $name {
            const METHOD: Method = Method::Post;
            const ROUTE: &'static str = $route;
            type Reply = Deployment;
        }
    };
}

steer!(
    Pause,
    "/pause",
    "Holds a canary at its step until `resume` or `promote`."
);
steer!(Resume, "/resume", "Lifts an operator's pause.");
steer!(
    Abort,
    "/abort",
    "Gives the deployment up and restores the previous release."
);

/// One deployment by id (404 if there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetDeployment {
    #[serde(skip)]
    pub id: u64,
}

impl Endpoint for GetDeployment {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/deployments/{id}";
    type Reply = Deployment;

    fn path(&self) -> String {
        format!("/deployments/{}", self.id)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub deployments: Vec<Deployment>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct GetHistory {}

impl Endpoint for GetHistory {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/history";
    type Reply = History;
}

/// Sets the desired size by hand, within the group's min and max.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    pub desired: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scaled {
    pub from: u32,
    pub desired: u32,
}

impl Endpoint for Scale {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/scale";
    type Reply = Scaled;
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScalingHistory {
    pub scaling: Vec<ScalingRow>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct GetScaling {}

impl Endpoint for GetScaling {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/scaling";
    type Reply = ScalingHistory;
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Stop {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stopping {
    pub stopping: bool,
}

impl Endpoint for Stop {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/stop";
    type Reply = Stopping;
}

/// Registers a static target (201); it takes traffic once its checks pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddTarget {
    pub target: String,
    #[serde(default)]
    pub group: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Added {
    pub group: String,
    pub target: String,
}

impl Endpoint for AddTarget {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/targets";
    type Reply = Added;
}

/// Deregisters a target and answers once its drain is confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveTarget {
    #[serde(skip)]
    pub target: String,
    #[serde(skip)]
    pub group: Option<String>,
    /// A duration such as `30s`; default: the stack's drain timeout.
    #[serde(skip)]
    pub timeout: Option<String>,
}

/// The query a [`RemoveTarget`] carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveQuery {
    pub group: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub group: String,
    pub drain: DrainReport,
}

impl Endpoint for RemoveTarget {
    const METHOD: Method = Method::Delete;
    const ROUTE: &'static str = "/targets/{target}";
    type Reply = Removed;

    fn path(&self) -> String {
        let mut path = format!("/targets/{}", encode(&self.target));
        let mut sep = '?';
        for (key, value) in [("group", &self.group), ("timeout", &self.timeout)] {
            if let Some(value) = value {
                path.push_str(&format!("{sep}{key}={}", encode(value)));
                sep = '&';
            }
        }
        path
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters and `:` (a target is
/// `host:port`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removal_path_carries_its_query_encoded() {
        let r = RemoveTarget {
            target: "127.0.0.1:9001".into(),
            group: Some("my group&x".into()),
            timeout: Some("5s".into()),
        };
        assert_eq!(
            r.path(),
            "/targets/127.0.0.1:9001?group=my%20group%26x&timeout=5s"
        );
        let bare = RemoveTarget {
            target: "h:1".into(),
            group: None,
            timeout: None,
        };
        assert_eq!(bare.path(), "/targets/h:1");
    }

    #[test]
    fn a_static_stack_status_reads_with_defaults() {
        let s: Status = serde_json::from_str(r#"{"groups": []}"#).expect("reads");
        assert_eq!(s, Status::default());
        let wire = serde_json::to_value(&s).expect("json");
        assert!(wire.get("release").is_none(), "{wire}");
    }

    #[test]
    fn requests_refuse_fields_they_do_not_know() {
        assert!(serde_json::from_str::<Deploy>(r#"{"version":"v2","bogus":1}"#).is_err());
        let p: Promote = serde_json::from_str("{}").expect("reads");
        assert!(!p.full);
    }
}
