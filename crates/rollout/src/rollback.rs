//! Rollback as a traffic flip: back to the warm set on the other side, when there is one.

use std::collections::HashSet;

use cutover_control::TargetState;
use cutover_deploy::Progress;
use cutover_store::Store;

use crate::fleet::{Fleet, Machine, MachineState};
use crate::journal::{live, Event, Journal, Outcome};
use crate::traffic::TrafficPlane;

/// A finished or unfinished deployment, as the choice of a rollback target sees it.
#[derive(Debug, Clone, Copy)]
pub struct Past<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub progress: &'a Progress,
}

/// Why there is no release to roll back to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoTarget {
    #[error("no earlier release to roll back to")]
    Nothing,
    #[error("no release {0} has run here; `history` lists those that have")]
    Unknown(String),
}

/// The release a rollback deploys when no warm set can take the traffic back: `asked`, if it
/// ran here before (the `first` release, or the target of a deploy that finished), or else the
/// release the last finished deploy to `current` replaced. `history` is oldest first.
pub fn target(
    history: &[Past<'_>],
    current: &str,
    first: Option<&str>,
    asked: Option<&str>,
) -> Result<String, NoTarget> {
    let done = || history.iter().filter(|d| *d.progress == Progress::Done);
    if let Some(asked) = asked {
        let known = first == Some(asked) || done().any(|d| d.to == asked);
        return if known {
            Ok(asked.to_owned())
        } else {
            Err(NoTarget::Unknown(asked.to_owned()))
        };
    }
    done()
        .rev()
        .find(|d| d.to == current && !d.from.is_empty() && d.from != current)
        .map(|d| d.from.to_owned())
        .ok_or(NoTarget::Nothing)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn past<'a>(from: &'a str, to: &'a str, progress: &'a Progress) -> Past<'a> {
        Past { from, to, progress }
    }

    #[test]
    fn a_rollback_goes_to_what_the_current_release_replaced() {
        let done = Progress::Done;
        let failed = Progress::RolledBack {
            reason: "bad".into(),
        };
        let history = [
            past("", "v1", &done),
            past("v1", "v2", &done),
            past("v2", "v3", &failed),
            past("v2", "v3", &done),
        ];
        assert_eq!(target(&history, "v3", Some("v1"), None), Ok("v2".into()));
        assert_eq!(target(&history, "v2", Some("v1"), None), Ok("v1".into()));
        // The first release replaced nothing.
        assert_eq!(
            target(&history, "v1", Some("v1"), None),
            Err(NoTarget::Nothing)
        );
        assert_eq!(target(&[], "v1", None, None), Err(NoTarget::Nothing));
    }

    #[test]
    fn an_asked_release_must_have_run_here() {
        let done = Progress::Done;
        let failed = Progress::RolledBack {
            reason: "bad".into(),
        };
        let history = [past("v1", "v2", &done), past("v2", "v9", &failed)];
        assert_eq!(
            target(&history, "v2", Some("v1"), Some("v1")),
            Ok("v1".into())
        );
        assert_eq!(
            target(&history, "v2", Some("v1"), Some("v2")),
            Ok("v2".into())
        );
        assert_eq!(
            target(&history, "v2", Some("v1"), Some("v9")),
            Err(NoTarget::Unknown("v9".into()))
        );
    }
}
