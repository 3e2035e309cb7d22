//! Rollback as a traffic flip: back to the warm set on the other side, when there is one.

use std::collections::HashSet;

use cutover_control::{Side, TargetState};
use cutover_deploy::Progress;
use cutover_store::{Store, StoreError};

use crate::fleet::{Fleet, Machine, MachineState};
use crate::journal::{Event, Journal, Outcome};
use crate::traffic::TrafficPlane;

/// The side that takes the traffic between deploys, as the store names it under `key` (blue
/// until a deploy swaps them).
pub fn live(store: &Store, key: &str) -> Result<Side, StoreError> {
    Ok(store
        .meta(key)?
        .and_then(|c| Side::parse(&c))
        .unwrap_or(Side::Blue))
}

/// Rolls back by flipping the listener to the other side, when it holds a healthy set of the
/// previous release (kept warm by blue-green or canary): one weight change, nothing launched.
/// `None` when there is no such set; the caller then deploys the previous release instead.
pub async fn flip_back<C, T>(
    fleet: &C,
    traffic: &T,
    store: &Store,
    live_key: &'static str,
    desired: u32,
    on_event: impl FnMut(&Event),
) -> Result<Option<Outcome>, C::Error>
where
    C: Fleet,
    T: TrafficPlane<Error = C::Error>,
{
    let Some(current) = store.current_release()? else {
        return Ok(None);
    };
    let warm_side = live(store, live_key)?.other();
    let healthy: HashSet<String> = traffic
        .health(warm_side)
        .await?
        .into_iter()
        .filter(|t| t.state == TargetState::Healthy)
        .map(|t| t.id)
        .collect();
    let warm: Vec<Machine> = fleet
        .machines()
        .await?
        .into_iter()
        .filter(|m| {
            m.side == warm_side && m.state == MachineState::Ready && healthy.contains(&m.id)
        })
        .collect();
    let versions: HashSet<&str> = warm.iter().map(|m| m.version.as_str()).collect();
    let previous = match versions.into_iter().collect::<Vec<_>>().as_slice() {
        [v] if *v != current && warm.len() as u32 >= desired => (*v).to_owned(),
        _ => return Ok(None),
    };
    let mut journal = Journal::begin(store, &previous, "rollback", live_key, on_event)?;
    journal.event(
        "traffic",
        format!(
            "flip to {warm_side} ({} healthy instances of {previous})",
            warm.len()
        ),
    );
    let (blue, green) = warm_side.blue_green(1, 0);
    traffic.set_weights(blue, green).await?;
    Ok(journal.finish(Progress::Done, warm_side).map(Some)?)
}
