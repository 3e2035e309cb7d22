//! The traffic plane at the seam: two target groups behind one listener, weighted between them.

use cutover_control::{Side, TargetHealth};

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
}
