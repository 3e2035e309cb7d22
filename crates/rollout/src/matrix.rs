//! The test matrix every provider runs: each strategy against each fault, with the outcome and
//! the reason it must end with written once here. The in-memory provider (`tests/matrix.rs`),
//! the emulator (`crates/aws/tests/moto.rs`) and local processes
//! (`crates/e2e/tests/strategies.rs`) each inject the faults they can and check their outcome
//! against [`expect`], so a provider that drifts fails its own matrix.

use std::fmt;

use cutover_control::Progress;

/// The strategies, by their stack-file names.
pub const STRATEGIES: [&str; 4] = ["rolling", "replace-group", "blue-green", "canary"];

/// What goes wrong during the deploy of the new release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: every step passes (a canary's numbers are as good as the baseline's).
    None,
    /// The new release fails its health checks (answers 500).
    NeverHealthy,
    /// The new release never comes up (never ready, never registered).
    NeverReady,
    /// Drains take several looks.
    SlowDrain,
    /// The listener refuses the weight change.
    RefusedFlip,
    /// Someone else terminates a new instance as soon as it runs.
    TerminatedOutside,
    /// The canary's error rate is far above the baseline's.
    CanaryErrors,
    /// The canary step has no numbers at all.
    CanaryNoNumbers,
    /// Requests through the preview listener fail, while the health checks pass.
    PreviewFails,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::None,
        Fault::NeverHealthy,
        Fault::NeverReady,
        Fault::SlowDrain,
        Fault::RefusedFlip,
        Fault::TerminatedOutside,
        Fault::CanaryErrors,
        Fault::CanaryNoNumbers,
        Fault::PreviewFails,
    ];
}

/// How the deploy must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Done,
    /// Rolled back, the reason containing this.
    RolledBack(&'static str),
    /// Paused at the first step, the reason containing this.
    Paused(&'static str),
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Done => f.write_str("done"),
            Expect::RolledBack(r) => write!(f, "rolled back for \"…{r}…\""),
            Expect::Paused(r) => write!(f, "paused for \"…{r}…\""),
        }
    }
}

impl Expect {
    /// `Err` says what was expected and what happened.
    pub fn check(&self, got: &Progress) -> Result<(), String> {
        let ok = match (self, got) {
            (Expect::Done, Progress::Done) => true,
            (Expect::RolledBack(want), Progress::RolledBack { reason }) => reason.contains(want),
            (Expect::Paused(want), Progress::Paused { step: 0, reason }) => reason.contains(want),
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {self}, got {got}"))
        }
    }
}

/// How `strategy` must end under `fault`; `None` where the fault has no meaning for it (canary
/// numbers for a strategy without steps, a refused flip for one that never changes weights).
pub fn expect(strategy: &str, fault: Fault) -> Option<Expect> {
    let canary = strategy == "canary";
    Some(match fault {
        Fault::None | Fault::SlowDrain | Fault::TerminatedOutside => Expect::Done,
        Fault::NeverHealthy => Expect::RolledBack("Target.ResponseCodeMismatch"),
        Fault::NeverReady => Expect::RolledBack("progress deadline"),
        // Rolling keeps all traffic on one side: there is no weight to change.
        Fault::RefusedFlip if strategy == "rolling" => return None,
        Fault::RefusedFlip => Expect::RolledBack("set weights"),
        Fault::CanaryErrors if canary => Expect::RolledBack("step 1 failed analysis: error rate"),
        Fault::CanaryNoNumbers if canary => Expect::Paused("inconclusive: 0 of"),
        Fault::CanaryErrors | Fault::CanaryNoNumbers => return None,
        // Only blue-green checks through the preview listener before its flip.
        Fault::PreviewFails if strategy == "blue-green" => {
            Expect::RolledBack("the pre-promotion check failed")
        }
        Fault::PreviewFails => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_has_one_answer_and_checks_tell_outcomes_apart() {
        let mut cases = 0;
        for s in STRATEGIES {
            for f in Fault::ALL {
                cases += usize::from(expect(s, f).is_some());
            }
        }
        // 4 strategies × 6 general faults, less rolling's flip, plus canary's two and
        // blue-green's preview.
        assert_eq!(cases, 4 * 6 - 1 + 2 + 1);
        let rolled = Progress::RolledBack {
            reason: "i-1 unhealthy: Target.ResponseCodeMismatch".into(),
        };
        let never = Expect::RolledBack("Target.ResponseCodeMismatch");
        assert_eq!(never.check(&rolled), Ok(()));
        assert!(Expect::Done.check(&rolled).is_err());
        assert!(Expect::RolledBack("progress deadline")
            .check(&rolled)
            .is_err());
        let paused = Progress::Paused {
            step: 1,
            reason: "inconclusive: 0 of 100".into(),
        };
        assert!(
            Expect::Paused("inconclusive").check(&paused).is_err(),
            "step 2 is not step 1"
        );
    }
}
