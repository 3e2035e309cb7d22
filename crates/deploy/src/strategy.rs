//! The strategy a deploy runs: which planner, and what it keeps between deploys.

use crate::canary::Canary;
use crate::observed::{Observed, Plan};
use crate::rolling::Rolling;
use crate::{blue_green, canary, replace_group, rolling};

#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Replace instances in place, a batch at a time.
    Rolling(Rolling),
    /// A whole new set beside the old; when all are healthy, traffic moves and the old set stops.
    ReplaceGroup,
    /// A whole new set at weight 0, one atomic flip, the old set kept warm.
    BlueGreen,
    /// Steps of instances or weight, each judged by analysis.
    Canary(Canary),
}

impl Strategy {
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Rolling(_) => "rolling",
            Strategy::ReplaceGroup => "replace-group",
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary(_) => "canary",
        }
    }

    /// The new version comes up in the next set, and the sets trade places when it is done.
    pub fn uses_next_set(&self) -> bool {
        !matches!(self, Strategy::Rolling(_))
    }

    /// The previous version stays running, at weight 0, once the deploy is done.
    pub fn keeps_previous_warm(&self) -> bool {
        matches!(self, Strategy::BlueGreen | Strategy::Canary(_))
    }

    /// The next actions. Idempotent: the same observation gives the same plan.
    pub fn plan(&self, o: &Observed) -> Plan {
        match self {
            Strategy::Rolling(s) => rolling::plan(*s, o),
            Strategy::ReplaceGroup => replace_group::plan(o),
            Strategy::BlueGreen => blue_green::plan(o),
            Strategy::Canary(c) => canary::plan(c, o),
        }
    }
}
