//! A target's health as a state machine: one pure transition function, ALB's states and reason codes.

use std::time::Instant;

/// The states and reasons are the shared vocabulary's: the data plane reports a target's
/// health in the same words ELBv2 does, and the executor reads both the same way. The data
/// plane itself only ever reaches initial, healthy, unhealthy and draining.
pub use cutover_control::{Reason, TargetState};

/// The outcome of one active health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckResult {
    Pass,
    /// No answer within the check timeout.
    Timeout,
    /// An answer whose status the matcher refused.
    Mismatch(u16),
    /// The connection failed or broke.
    Failed,
}

/// Something that can change a target's health.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    Check(CheckResult),
    /// The request path saw consecutive failures: keep it out until `until`, then an active check readmits it.
    Eject {
        until: Instant,
    },
    Deregister,
}

/// Consecutive results needed to change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

/// A target's health; changed only by [`Health::on`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Health {
    pub state: TargetState,
    pub reason: Option<Reason>,
    passes: u32,
    failures: u32,
    ejected_until: Option<Instant>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            state: TargetState::Initial,
            reason: Some(Reason::InitialHealthChecking),
            passes: 0,
            failures: 0,
            ejected_until: None,
        }
    }

    /// Whether passive health has the target out of rotation.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }

    /// Whether the target takes new requests in normal operation.
    pub fn is_routable(&self) -> bool {
        self.state == TargetState::Healthy && !self.is_ejected()
    }

    /// The one transition function. `now` is passed in so the function stays pure.
    pub fn on(self, event: Event, t: Thresholds, now: Instant) -> Health {
        let mut h = self;
        if h.state == TargetState::Draining {
            return h;
        }
        match event {
            Event::Deregister => {
                h.state = TargetState::Draining;
                h.reason = Some(Reason::DeregistrationInProgress);
            }
            Event::Eject { until } => h.ejected_until = Some(until),
            Event::Check(CheckResult::Pass) => {
                h.failures = 0;
                h.passes = h.passes.saturating_add(1);
                if h.ejected_until.is_some_and(|until| now >= until) {
                    h.ejected_until = None;
                }
                if h.state != TargetState::Healthy && h.passes >= t.healthy {
                    h.state = TargetState::Healthy;
                    h.reason = None;
                }
            }
            Event::Check(failure) => {
                h.passes = 0;
                h.failures = h.failures.saturating_add(1);
                let reason = match failure {
                    CheckResult::Timeout => Reason::Timeout,
                    CheckResult::Mismatch(_) => Reason::ResponseCodeMismatch,
                    CheckResult::Failed | CheckResult::Pass => Reason::FailedHealthChecks,
                };
                if h.failures >= t.unhealthy {
                    h.state = TargetState::Unhealthy;
                    h.reason = Some(reason);
                } else if h.state == TargetState::Unhealthy {
                    h.reason = Some(reason);
                }
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T: Thresholds = Thresholds {
        healthy: 2,
        unhealthy: 3,
    };

    fn run(events: &[Event]) -> Health {
        let now = Instant::now();
        events.iter().fold(Health::new(), |h, e| h.on(*e, T, now))
    }

    const PASS: Event = Event::Check(CheckResult::Pass);
    const TIMEOUT: Event = Event::Check(CheckResult::Timeout);
    const MISMATCH: Event = Event::Check(CheckResult::Mismatch(500));
    const FAILED: Event = Event::Check(CheckResult::Failed);

    #[test]
    fn starts_initial_checking() {
        let h = Health::new();
        assert_eq!(
            (h.state, h.reason),
            (TargetState::Initial, Some(Reason::InitialHealthChecking))
        );
        assert!(!h.is_routable());
    }

    #[test]
    fn healthy_after_threshold_passes_only() {
        assert_eq!(run(&[PASS]).state, TargetState::Initial);
        let h = run(&[PASS, PASS]);
        assert_eq!((h.state, h.reason), (TargetState::Healthy, None));
        assert!(h.is_routable());
        assert_eq!(
            run(&[PASS, FAILED, PASS]).state,
            TargetState::Initial,
            "passes must be consecutive"
        );
    }

    #[test]
    fn unhealthy_after_threshold_failures_with_the_last_reason() {
        let h = run(&[PASS, PASS, FAILED, FAILED]);
        assert_eq!(
            h.state,
            TargetState::Healthy,
            "two failures are below the threshold of three"
        );
        let h = run(&[PASS, PASS, FAILED, FAILED, TIMEOUT]);
        assert_eq!(
            (h.state, h.reason),
            (TargetState::Unhealthy, Some(Reason::Timeout))
        );
        let h = run(&[MISMATCH, MISMATCH, MISMATCH]);
        assert_eq!(
            (h.state, h.reason),
            (TargetState::Unhealthy, Some(Reason::ResponseCodeMismatch))
        );
        let h = run(&[TIMEOUT, TIMEOUT, FAILED]);
        assert_eq!(
            (h.state, h.reason),
            (TargetState::Unhealthy, Some(Reason::FailedHealthChecks))
        );
        let h = run(&[FAILED, FAILED]);
        assert_eq!(
            (h.state, h.reason),
            (TargetState::Initial, Some(Reason::InitialHealthChecking))
        );
    }

    #[test]
    fn recovers_after_threshold_passes() {
        let h = run(&[FAILED, FAILED, FAILED, PASS]);
        assert_eq!(h.state, TargetState::Unhealthy);
        let h = run(&[FAILED, FAILED, FAILED, PASS, PASS]);
        assert_eq!((h.state, h.reason), (TargetState::Healthy, None));
    }

    #[test]
    fn deregistration_is_final() {
        let h = run(&[PASS, PASS, Event::Deregister, PASS, PASS, FAILED]);
        assert_eq!(
            (h.state, h.reason),
            (
                TargetState::Draining,
                Some(Reason::DeregistrationInProgress)
            )
        );
        assert!(!h.is_routable());
    }

    #[test]
    fn ejection_lasts_until_a_check_after_the_back_off() {
        let t0 = Instant::now();
        let h = Health::new().on(PASS, T, t0).on(PASS, T, t0);
        let h = h.on(
            Event::Eject {
                until: t0 + Duration::from_secs(5),
            },
            T,
            t0,
        );
        assert!(h.is_ejected() && !h.is_routable());
        let h = h.on(PASS, T, t0 + Duration::from_secs(1));
        assert!(
            h.is_ejected(),
            "a check inside the back-off does not readmit"
        );
        let h = h.on(PASS, T, t0 + Duration::from_secs(6));
        assert!(
            h.is_routable(),
            "a passing check after the back-off readmits"
        );
    }
}
