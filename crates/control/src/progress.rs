//! Where a deployment stands: the one state every planner, executor, store and CLI speaks of.

use serde::{Deserialize, Serialize};

/// Where the deploy stands after a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "progress", rename_all = "snake_case")]
pub enum Progress {
    /// Fetching, verifying and unpacking the release; nothing has changed yet.
    Preparing,
    /// Working towards the target version.
    Rolling,
    /// Holding at a step: waiting for `cutover promote` (or `resume`), with why.
    Paused { step: usize, reason: String },
    /// Every instance runs the target version and is healthy.
    Done,
    /// Giving up: removing new instances, restoring the previous version.
    Aborting { reason: String },
    /// Aborted, and the previous version is back at full size.
    RolledBack { reason: String },
}

impl Progress {
    /// Done or rolled back: nothing more will happen to this deployment.
    pub fn is_finished(&self) -> bool {
        matches!(self, Progress::Done | Progress::RolledBack { .. })
    }

    /// Its name as the store and the JSON output spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Progress::Preparing => "preparing",
            Progress::Rolling => "rolling",
            Progress::Paused { .. } => "paused",
            Progress::Done => "done",
            Progress::Aborting { .. } => "aborting",
            Progress::RolledBack { .. } => "rolled_back",
        }
    }

    /// The reason it paused, is rolling back or rolled back.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Progress::Paused { reason, .. }
            | Progress::Aborting { reason }
            | Progress::RolledBack { reason } => Some(reason),
            _ => None,
        }
    }
}

/// How a person reads it: "done", "paused at step 2: …", "rolled back: …".
impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Preparing => f.write_str("preparing the release"),
            Progress::Rolling => f.write_str("in progress"),
            Progress::Paused { step, reason } => write!(f, "paused at step {}: {reason}", step + 1),
            Progress::Done => f.write_str("done"),
            Progress::Aborting { reason } => write!(f, "rolling back: {reason}"),
            Progress::RolledBack { reason } => write!(f, "rolled back: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_spelling_is_the_name_and_reads_back() {
        for p in [
            Progress::Preparing,
            Progress::Rolling,
            Progress::Paused {
                step: 1,
                reason: "waiting".into(),
            },
            Progress::Done,
            Progress::Aborting { reason: "x".into() },
            Progress::RolledBack { reason: "y".into() },
        ] {
            let v = serde_json::to_value(&p).expect("serialises");
            assert_eq!(v["progress"], p.name());
            assert_eq!(
                serde_json::from_value::<Progress>(v).expect("reads back"),
                p
            );
        }
        assert_eq!(
            Progress::Paused {
                step: 1,
                reason: "waiting".into()
            }
            .to_string(),
            "paused at step 2: waiting"
        );
    }
}
