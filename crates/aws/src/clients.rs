//! One SDK configuration for EC2, ELBv2, Auto Scaling and CloudWatch: the standard credential chain, the
//! region from the stack file or the usual places, an endpoint override for emulators.

use aws_config::{BehaviorVersion, Region};

#[derive(Clone, Debug)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub asg: aws_sdk_autoscaling::Client,
    pub cw: aws_sdk_cloudwatch::Client,
}

impl Clients {
    /// Credentials come from the environment, the profile (`AWS_PROFILE`), SSO or the instance
    /// role, as with every AWS tool; `endpoint` (or `AWS_ENDPOINT_URL`) points at an emulator.
    pub async fn connect(region: Option<&str>, endpoint: Option<&str>) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = region {
            loader = loader.region(Region::new(region.to_owned()));
        }
        let endpoint = endpoint
            .map(str::to_owned)
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|e| !e.is_empty());
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        let shared = loader.load().await;
        Self {
            ec2: aws_sdk_ec2::Client::new(&shared),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&shared),
            asg: aws_sdk_autoscaling::Client::new(&shared),
            cw: aws_sdk_cloudwatch::Client::new(&shared),
        }
    }
}
