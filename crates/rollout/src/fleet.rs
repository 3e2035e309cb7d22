//! The fleet at the seam: the instances of a release, wherever they run.

use cutover_control::Side;
use serde::Serialize;

use crate::failure::Failure;

/// Where an instance is on its way to serving, as its fleet sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum MachineState {
    /// Starting (EC2: `pending`, or `running` with status checks not yet passed).
    Booting { detail: String },
    /// Up and ready to be registered (EC2: `running`, both status checks `ok`).
    Ready,
    /// Stopped, terminated or dead.
    Gone { detail: String },
}

/// One instance of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    pub id: String,
    pub version: String,
    /// The side it was launched for.
    pub side: Side,
    pub state: MachineState,
    pub image: String,
    pub zone: Option<String>,
    /// RFC 3339; orders instances oldest first.
    pub launched_at: String,
    /// The Auto Scaling group that owns it, if one does: that group replaces it, not the
    /// executor.
    pub auto_scaling_group: Option<String>,
}

/// What a deploy needs from the fleet.
#[allow(async_fn_in_trait)]
pub trait Fleet {
    type Error: Failure;
    /// Starts one instance of `version` for `side`, recorded as part of `deployment`; returns
    /// its ID.
    async fn launch(
        &self,
        version: &str,
        side: Side,
        deployment: u64,
    ) -> Result<String, Self::Error>;
    /// The stack's instances, including recently gone ones, oldest first.
    async fn machines(&self) -> Result<Vec<Machine>, Self::Error>;
    async fn terminate(&self, ids: &[String]) -> Result<(), Self::Error>;
}
