//! A target group's own numbers from CloudWatch (`AWS/ApplicationELB`): requests, 5xx from the
//! targets and from the load balancer, and the p99 of the targets' response time, summed over a
//! canary step's window.

use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Datapoint, Dimension, Statistic};
use aws_sdk_cloudwatch::Client;
use aws_smithy_types::DateTime;
use cutover_deploy::Sample;

use crate::error::{api, AwsError};

const SERVICE: &str = "cloudwatch";
const NAMESPACE: &str = "AWS/ApplicationELB";

#[derive(Debug, Clone)]
pub struct Metrics {
    pub client: Client,
    /// The `LoadBalancer` dimension: `app/NAME/ID`.
    pub load_balancer: String,
    /// The statistics' period. ALB metrics are per minute. CloudWatch counts whole periods
    /// (and sends timestamps in whole seconds), so a window starts at the first period boundary
    /// after the step's traffic was in place: nothing served before the step is counted in it.
    pub period: Duration,
}

/// The `LoadBalancer` dimension from a listener's ARN (`…:listener/app/NAME/ID/LISTENER`).
pub fn load_balancer_dimension(listener_arn: &str) -> Option<String> {
    let rest = listener_arn.split_once(":listener/")?.1;
    let mut parts = rest.rsplitn(2, '/');
    parts.next()?;
    parts.next().map(str::to_owned)
}

/// The `TargetGroup` dimension from a target group's ARN (`…:targetgroup/NAME/ID`).
pub fn target_group_dimension(arn: &str) -> Option<String> {
    arn.rfind(":targetgroup/").map(|i| arn[i + 1..].to_owned())
}

impl Metrics {
    /// What the target group `arn` answered since `since`; `None` when CloudWatch has no request
    /// count for it in that window (no traffic, metrics not published yet, or none at all).
    pub async fn sample(&self, arn: &str, since: SystemTime) -> Result<Option<Sample>, AwsError> {
        let Some(group) = target_group_dimension(arn) else {
            return Err(AwsError::Invalid(format!(
                "{arn} is not a target group ARN: no CloudWatch dimension for it"
            )));
        };
        // Whole periods that have ended, and only those: a period still being counted would
        // be judged on part of its numbers (its requests, say, before its errors).
        let since = align_up(since, self.period);
        let now = align_down(SystemTime::now(), self.period);
        if since >= now {
            return Ok(None);
        }
        let sum = |points: &[Datapoint]| points.iter().filter_map(Datapoint::sum).sum::<f64>();
        let requests = self
            .points("RequestCount", &group, since, now, None)
            .await?;
        if requests.is_empty() {
            return Ok(None);
        }
        let target_5xx = self
            .points("HTTPCode_Target_5XX_Count", &group, since, now, None)
            .await?;
        let elb_5xx = self
            .points("HTTPCode_ELB_5XX_Count", &group, since, now, None)
            .await?;
        let latency = self
            .points("TargetResponseTime", &group, since, now, Some("p99"))
            .await?;
        // The worst minute's p99 stands for the window: a mean of percentiles would hide it.
        let p99 = latency
            .iter()
            .filter_map(|d| d.extended_statistics().and_then(|e| e.get("p99")).copied())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .fold(None, |worst: Option<f64>, s| {
                Some(worst.map_or(s, |w| w.max(s)))
            })
            .map(Duration::from_secs_f64);
        let count = |x: f64| {
            if x.is_finite() && x > 0.0 {
                x as u64
            } else {
                0
            }
        };
        Ok(Some(Sample {
            requests: count(sum(&requests)),
            errors: count(sum(&target_5xx) + sum(&elb_5xx)),
            p99,
        }))
    }

    async fn points(
        &self,
        metric: &str,
        group: &str,
        since: SystemTime,
        until: SystemTime,
        percentile: Option<&str>,
    ) -> Result<Vec<Datapoint>, AwsError> {
        let dim = |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
        let period = i32::try_from(self.period.as_secs().max(1)).unwrap_or(60);
        let mut call = self
            .client
            .get_metric_statistics()
            .namespace(NAMESPACE)
            .metric_name(metric)
            .dimensions(dim("LoadBalancer", &self.load_balancer))
            .dimensions(dim("TargetGroup", group))
            .start_time(DateTime::from(since))
            .end_time(DateTime::from(until))
            .period(period);
        call = match percentile {
            Some(p) => call.extended_statistics(p),
            None => call.statistics(Statistic::Sum),
        };
        let out = call
            .send()
            .await
            .map_err(api(SERVICE, "GetMetricStatistics"))?;
        Ok(out.datapoints().to_vec())
    }
}

/// `at` rounded up to a whole multiple of `period` since the epoch.
fn align_up(at: SystemTime, period: Duration) -> SystemTime {
    let period = period.as_secs().max(1);
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs.div_ceil(period) * period)
}

/// `at` rounded down to a whole multiple of `period` since the epoch.
fn align_down(at: SystemTime, period: Duration) -> SystemTime {
    let period = period.as_secs().max(1);
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs / period * period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_starts_at_the_next_whole_period() {
        let at = |s: u64, ms: u64| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(s) + Duration::from_millis(ms)
        };
        let minute = Duration::from_secs(60);
        assert_eq!(align_up(at(120, 0), minute), at(120, 0));
        assert_eq!(align_up(at(120, 1), minute), at(180, 0));
        assert_eq!(align_up(at(179, 999), minute), at(180, 0));
        assert_eq!(align_up(at(7, 400), Duration::from_secs(1)), at(8, 0));
        assert_eq!(align_down(at(179, 999), minute), at(120, 0));
        assert_eq!(align_down(at(180, 0), minute), at(180, 0));
    }

    #[test]
    fn dimensions_come_from_the_arns() {
        assert_eq!(
            load_balancer_dimension(
                "arn:aws:elasticloadbalancing:us-west-2:123456789012:listener/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2"
            )
            .as_deref(),
            Some("app/web/50dc6c495c0c9188")
        );
        assert_eq!(
            target_group_dimension(
                "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/web-blue/73e2d6bc24d8a067"
            )
            .as_deref(),
            Some("targetgroup/web-blue/73e2d6bc24d8a067")
        );
        assert_eq!(load_balancer_dimension("arn:aws:ec2:…:instance/i-1"), None);
        assert_eq!(target_group_dimension("not an arn"), None);
    }
}
