//! The data plane's control socket: what a controller asks of the `cutover dataplane` process
//! (routing changes, drains, its state) and what it answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use cutover_control::Side;
use cutover_proxy::metrics::MetricsSnapshot;
use cutover_proxy::{DrainReport, GroupStatus};
use serde::{Deserialize, Serialize};

use crate::endpoint::{Ack, Endpoint, Method};

/// Names this protocol in a data plane's fingerprint: a controller adopts only a data plane
/// that speaks the version it does. Bump on any change a peer of the other version would
/// misread.
pub const VERSION: u32 = 1;

/// Prometheus text for every group and target (`text/plain`, not JSON).
pub const METRICS: &str = "/metrics";

/// What a data-plane process reports of itself: where it listens, its groups, their totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlaneState {
    pub pid: u32,
    /// Names the listener settings it was started with; a controller whose stack file says
    /// otherwise replaces the process instead of adopting it.
    pub fingerprint: String,
    pub listener: Option<SocketAddr>,
    pub preview: Option<SocketAddr>,
    pub groups: Vec<GroupStatus>,
    pub metrics: BTreeMap<String, MetricsSnapshot>,
}

/// Reads the state.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct GetState {}

impl Endpoint for GetState {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/state";
    type Reply = PlaneState;
}

/// Sets several groups' weights in one routing change. Groups are named, not sided: a static
/// load balancer's group is neither blue nor green.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetWeights {
    pub weights: Vec<(String, u32)>,
}

impl Endpoint for SetWeights {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/weights";
    type Reply = PlaneState;
}

/// Registers a target in a group; it takes traffic once its checks pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    pub group: String,
    pub target: String,
}

impl Endpoint for Register {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/targets";
    type Reply = PlaneState;
}

/// Takes a target out of rotation at once and starts its drain (404 if it is not registered).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deregister {
    pub group: String,
    pub target: String,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainStarted {
    pub id: u64,
}

impl Endpoint for Deregister {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/drains";
    type Reply = DrainStarted;
}

/// Waits for a drain to end (a long poll: it answers when the drain does) and reads its
/// record. A client whose wait breaks asks again; the drain goes on regardless.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitDrain {
    #[serde(skip)]
    pub id: u64,
}

impl Endpoint for WaitDrain {
    const METHOD: Method = Method::Get;
    const ROUTE: &'static str = "/drains/{id}";
    type Reply = DrainReport;

    fn path(&self) -> String {
        format!("/drains/{}", self.id)
    }
}

/// Points the preview listener at one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPreview {
    pub group: Side,
}

impl Endpoint for SetPreview {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/preview";
    type Reply = Ack;
}

/// Closes the listeners, lets in-flight requests finish, and exits.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Shutdown {}

impl Endpoint for Shutdown {
    const METHOD: Method = Method::Post;
    const ROUTE: &'static str = "/shutdown";
    type Reply = Ack;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_back_as_the_server_reads_them() {
        let d = Deregister {
            group: "blue".into(),
            target: "127.0.0.1:9001".into(),
            timeout_ms: 5000,
        };
        let wire = serde_json::to_string(&d).expect("json");
        assert_eq!(serde_json::from_str::<Deregister>(&wire).expect("reads"), d);
        assert_eq!(WaitDrain { id: 7 }.path(), "/drains/7");
        let preview: SetPreview = serde_json::from_str(r#"{"group":"green"}"#).expect("reads");
        assert_eq!(preview.group, Side::Green);
        // A side that does not exist is refused where the request is read.
        assert!(serde_json::from_str::<SetPreview>(r#"{"group":"red"}"#).is_err());
        assert!(serde_json::from_str::<Register>(r#"{"group":"x","target":"y","z":1}"#).is_err());
    }

    #[test]
    fn an_empty_reply_is_an_ack() {
        let ack: Ack = serde_json::from_slice(Ack::body(b"")).expect("reads");
        assert_eq!(ack, Ack {});
        let ack: Ack = serde_json::from_slice(Ack::body(b"{}")).expect("reads");
        assert_eq!(ack, Ack {});
    }
}
