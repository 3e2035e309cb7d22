//! The traffic plane over ELBv2: two target groups behind one listener, weighted forwarding
//! between them, registration, target health with ALB's states and reasons, and draining.

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetDescription, TargetGroupTuple,
};
use aws_sdk_elasticloadbalancingv2::Client;
use serde::Serialize;

use cutover_control::{Reason, Side, TargetHealth, TargetState};
use cutover_rollout::TrafficPlane;

use crate::error::{api, AwsError};
use crate::metrics::Metrics;

const SERVICE: &str = "elbv2";

/// The stack's listener and target groups.
#[derive(Debug, Clone)]
pub struct Elb {
    pub client: Client,
    pub listener_arn: String,
    pub blue_arn: String,
    pub green_arn: String,
    /// The listener that reaches only the side a deploy brings up, if the stack has one.
    pub preview_arn: Option<String>,
    /// The port targets are registered on.
    pub port: u16,
    /// Each target group's numbers, for a canary's analysis.
    pub metrics: Option<Metrics>,
}

/// A target group's health check and deregistration delay, as ELBv2 has them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckSettings {
    pub path: Option<String>,
    pub interval_s: Option<i32>,
    pub timeout_s: Option<i32>,
    pub healthy_threshold: Option<i32>,
    pub unhealthy_threshold: Option<i32>,
    pub matcher: Option<String>,
    pub deregistration_delay_s: Option<u64>,
}

impl Elb {
    /// Reads back what `init` set (or what an adopted group has).
    pub async fn check_settings(&self, group: Side) -> Result<CheckSettings, AwsError> {
        let out = self
            .client
            .describe_target_groups()
            .target_group_arns(self.arn(group))
            .send()
            .await
            .map_err(api(SERVICE, "DescribeTargetGroups"))?;
        let mut s = CheckSettings::default();
        if let Some(tg) = out.target_groups().first() {
            s.path = tg.health_check_path().map(str::to_owned);
            s.interval_s = tg.health_check_interval_seconds();
            s.timeout_s = tg.health_check_timeout_seconds();
            s.healthy_threshold = tg.healthy_threshold_count();
            s.unhealthy_threshold = tg.unhealthy_threshold_count();
            s.matcher = tg.matcher().and_then(|m| m.http_code()).map(str::to_owned);
        }
        let attrs = self
            .client
            .describe_target_group_attributes()
            .target_group_arn(self.arn(group))
            .send()
            .await
            .map_err(api(SERVICE, "DescribeTargetGroupAttributes"))?;
        s.deregistration_delay_s = attrs
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .and_then(|v| v.parse().ok());
        Ok(s)
    }

    pub fn arn(&self, group: Side) -> &str {
        match group {
            Side::Blue => &self.blue_arn,
            Side::Green => &self.green_arn,
        }
    }

    fn targets(&self, ids: &[String]) -> Vec<TargetDescription> {
        ids.iter()
            .map(|id| {
                TargetDescription::builder()
                    .id(id)
                    .port(i32::from(self.port))
                    .build()
            })
            .collect()
    }
}

/// The listener's default action: forward to both groups with these weights.
pub(crate) fn forward(blue: (&str, u32), green: (&str, u32)) -> Action {
    let tuple = |(arn, weight): (&str, u32)| {
        TargetGroupTuple::builder()
            .target_group_arn(arn)
            .weight(weight.min(999) as i32)
            .build()
    };
    Action::builder()
        .r#type(ActionTypeEnum::Forward)
        .forward_config(
            ForwardActionConfig::builder()
                .target_groups(tuple(blue))
                .target_groups(tuple(green))
                .build(),
        )
        .build()
}

impl TrafficPlane for Elb {
    type Error = AwsError;

    async fn sample(
        &self,
        group: Side,
        since: std::time::SystemTime,
    ) -> Result<Option<cutover_deploy::Sample>, AwsError> {
        match &self.metrics {
            Some(m) => m.sample(self.arn(group), since).await,
            None => Ok(None),
        }
    }

    async fn register(&self, group: Side, ids: &[String]) -> Result<(), AwsError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client
            .register_targets()
            .target_group_arn(self.arn(group))
            .set_targets(Some(self.targets(ids)))
            .send()
            .await
            .map_err(api(SERVICE, "RegisterTargets"))?;
        Ok(())
    }

    async fn deregister(&self, group: Side, ids: &[String]) -> Result<(), AwsError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client
            .deregister_targets()
            .target_group_arn(self.arn(group))
            .set_targets(Some(self.targets(ids)))
            .send()
            .await
            .map_err(api(SERVICE, "DeregisterTargets"))?;
        Ok(())
    }

    async fn health(&self, group: Side) -> Result<Vec<TargetHealth>, AwsError> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(self.arn(group))
            .send()
            .await
            .map_err(api(SERVICE, "DescribeTargetHealth"))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let id = d.target()?.id()?.to_owned();
                let h = d.target_health();
                Some(TargetHealth {
                    id,
                    state: h
                        .and_then(|h| h.state())
                        .map_or(TargetState::Unavailable, |s| TargetState::parse(s.as_str())),
                    reason: h
                        .and_then(|h| h.reason())
                        .and_then(|r| Reason::parse(r.as_str())),
                    description: h.and_then(|h| h.description()).map(str::to_owned),
                })
            })
            .collect())
    }

    async fn weights(&self) -> Result<(u32, u32), AwsError> {
        let out = self
            .client
            .describe_listeners()
            .listener_arns(&self.listener_arn)
            .send()
            .await
            .map_err(api(SERVICE, "DescribeListeners"))?;
        let mut weights = (0, 0);
        let tuples = out
            .listeners()
            .iter()
            .flat_map(|l| l.default_actions())
            .filter_map(|a| a.forward_config())
            .flat_map(|f| f.target_groups());
        for t in tuples {
            let w = t.weight().unwrap_or(1).max(0) as u32;
            if t.target_group_arn() == Some(self.blue_arn.as_str()) {
                weights.0 = w;
            } else if t.target_group_arn() == Some(self.green_arn.as_str()) {
                weights.1 = w;
            }
        }
        Ok(weights)
    }

    async fn set_weights(&self, blue: u32, green: u32) -> Result<(), AwsError> {
        self.client
            .modify_listener()
            .listener_arn(&self.listener_arn)
            .default_actions(forward((&self.blue_arn, blue), (&self.green_arn, green)))
            .send()
            .await
            .map_err(api(SERVICE, "ModifyListener"))?;
        Ok(())
    }

    async fn point_preview(&self, side: Side) -> Result<bool, AwsError> {
        let Some(preview) = &self.preview_arn else {
            return Ok(false);
        };
        let (blue, green) = side.blue_green(1, 0);
        self.client
            .modify_listener()
            .listener_arn(preview)
            .default_actions(forward((&self.blue_arn, blue), (&self.green_arn, green)))
            .send()
            .await
            .map_err(api(SERVICE, "ModifyListener"))?;
        Ok(true)
    }
}
