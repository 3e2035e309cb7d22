//! A target's health as a load balancer reports it: ELBv2's states and reason codes, which the
//! local data plane reports in the same words.

use serde::{Deserialize, Serialize};

/// Where a registered target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    /// Registered, not yet through its first healthy_threshold checks.
    Initial,
    Healthy,
    Unhealthy,
    /// Not registered, or registered in a group no listener uses.
    Unused,
    /// Deregistered: no new requests; in-flight ones finish.
    Draining,
    /// Health checks are off, or the load balancer cannot say.
    Unavailable,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Initial => "initial",
            TargetState::Healthy => "healthy",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Unused => "unused",
            TargetState::Draining => "draining",
            TargetState::Unavailable => "unavailable",
        }
    }

    /// ELBv2's name for the state; `unhealthy.draining` counts as draining. Anything else a
    /// future API version adds is `Unavailable`: nothing to act on.
    pub fn parse(s: &str) -> Self {
        match s {
            "initial" => TargetState::Initial,
            "healthy" => TargetState::Healthy,
            "unhealthy" => TargetState::Unhealthy,
            "unused" => TargetState::Unused,
            "draining" | "unhealthy.draining" => TargetState::Draining,
            _ => TargetState::Unavailable,
        }
    }
}

/// Why a target is not healthy, in ALB's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    #[serde(rename = "Elb.RegistrationInProgress")]
    RegistrationInProgress,
    #[serde(rename = "Elb.InitialHealthChecking")]
    InitialHealthChecking,
    #[serde(rename = "Target.ResponseCodeMismatch")]
    ResponseCodeMismatch,
    #[serde(rename = "Target.Timeout")]
    Timeout,
    #[serde(rename = "Target.FailedHealthChecks")]
    FailedHealthChecks,
    #[serde(rename = "Target.NotRegistered")]
    NotRegistered,
    #[serde(rename = "Target.NotInUse")]
    NotInUse,
    #[serde(rename = "Target.DeregistrationInProgress")]
    DeregistrationInProgress,
    #[serde(rename = "Target.InvalidState")]
    InvalidState,
    #[serde(rename = "Target.IpUnusable")]
    IpUnusable,
    #[serde(rename = "Target.HealthCheckDisabled")]
    HealthCheckDisabled,
    #[serde(rename = "Elb.InternalError")]
    InternalError,
}

impl Reason {
    const ALL: [Reason; 12] = [
        Reason::RegistrationInProgress,
        Reason::InitialHealthChecking,
        Reason::ResponseCodeMismatch,
        Reason::Timeout,
        Reason::FailedHealthChecks,
        Reason::NotRegistered,
        Reason::NotInUse,
        Reason::DeregistrationInProgress,
        Reason::InvalidState,
        Reason::IpUnusable,
        Reason::HealthCheckDisabled,
        Reason::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::RegistrationInProgress => "Elb.RegistrationInProgress",
            Reason::InitialHealthChecking => "Elb.InitialHealthChecking",
            Reason::ResponseCodeMismatch => "Target.ResponseCodeMismatch",
            Reason::Timeout => "Target.Timeout",
            Reason::FailedHealthChecks => "Target.FailedHealthChecks",
            Reason::NotRegistered => "Target.NotRegistered",
            Reason::NotInUse => "Target.NotInUse",
            Reason::DeregistrationInProgress => "Target.DeregistrationInProgress",
            Reason::InvalidState => "Target.InvalidState",
            Reason::IpUnusable => "Target.IpUnusable",
            Reason::HealthCheckDisabled => "Target.HealthCheckDisabled",
            Reason::InternalError => "Elb.InternalError",
        }
    }

    /// ELBv2's reason code; `None` for one this version does not know.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The target answers, and what it answers says it is not well (as opposed to not
    /// answering at all, which a starting instance also does).
    pub fn answered(self) -> bool {
        self == Reason::ResponseCodeMismatch
    }
}

/// One target's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetHealth {
    /// The instance ID (AWS) or the instance's `host:port` (local).
    pub id: String,
    pub state: TargetState,
    pub reason: Option<Reason>,
    /// The load balancer's own words, when it gives any.
    pub description: Option<String>,
}

impl TargetHealth {
    /// One line for a human: the reason and description, or the state.
    pub fn describe(&self) -> String {
        match (self.reason, &self.description) {
            (Some(r), Some(d)) => format!("{}: {d}", r.as_str()),
            (Some(r), None) => r.as_str().to_owned(),
            (None, Some(d)) => d.clone(),
            (None, None) => self.state.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_code_and_serde() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(r));
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        assert_eq!(Reason::parse("Target.Exploded"), None);
    }

    #[test]
    fn states_parse_as_elbv2_names_them() {
        for s in [
            "initial",
            "healthy",
            "unhealthy",
            "unused",
            "draining",
            "unavailable",
        ] {
            assert_eq!(TargetState::parse(s).as_str(), s);
        }
        assert_eq!(
            TargetState::parse("unhealthy.draining"),
            TargetState::Draining
        );
        assert_eq!(TargetState::parse("sideways"), TargetState::Unavailable);
    }

    #[test]
    fn a_description_says_why_before_what() {
        let t = TargetHealth {
            id: "i-1".into(),
            state: TargetState::Unhealthy,
            reason: Some(Reason::ResponseCodeMismatch),
            description: Some("Health checks failed with these codes: [503]".into()),
        };
        assert_eq!(
            t.describe(),
            "Target.ResponseCodeMismatch: Health checks failed with these codes: [503]"
        );
    }
}
