//! The traffic plane at the seam: two target groups behind one listener, weighted between them.

use std::time::SystemTime;

use cutover_control::{Side, TargetHealth};
use cutover_deploy::Sample;

use crate::failure::Failure;

/// What a deploy needs from the load balancer. A deregistered target shows `Draining` until
/// its in-flight requests are done, then `Unused` or nothing: that is the drain's confirmation.
#[allow(async_fn_in_trait)]
pub trait TrafficPlane {
    type Error: Failure;
    async fn register(&self, side: Side, ids: &[String]) -> Result<(), Self::Error>;
    /// Starts draining: new requests stop at once; in-flight ones have the drain timeout.
    async fn deregister(&self, side: Side, ids: &[String]) -> Result<(), Self::Error>;
    async fn health(&self, side: Side) -> Result<Vec<TargetHealth>, Self::Error>;
    /// Blue's and green's weights, now.
    async fn weights(&self) -> Result<(u32, u32), Self::Error>;
    /// Sets both in one change.
    async fn set_weights(&self, blue: u32, green: u32) -> Result<(), Self::Error>;
    /// What one side's target group answered since `since`, from the load balancer's own
    /// numbers; `None` when the plane has none for that window. A canary step judged on `None`
    /// is inconclusive and pauses: a plane without numbers never passes one.
    async fn sample(&self, side: Side, since: SystemTime) -> Result<Option<Sample>, Self::Error> {
        let _ = (side, since);
        Ok(None)
    }

    /// Points the preview listener (one that reaches a single side, for blue-green's check of
    /// the new set before the flip) at `side` alone; `false` when the plane has none.
    async fn point_preview(&self, side: Side) -> Result<bool, Self::Error> {
        let _ = side;
        Ok(false)
    }
}
