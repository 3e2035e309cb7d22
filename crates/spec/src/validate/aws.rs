//! The `[aws]` section of the stack file: its own rules, and the limits an Application Load
//! Balancer puts on what the rest of the file sets.

use super::{defaults, is_version, Checker};
use crate::model::*;
use crate::raw::*;

/// The `[aws]` section, and the rules an Application Load Balancer puts on the health check and
/// draining that the rest of the file sets.
pub(super) fn aws(
    c: &mut Checker,
    a: &RawAws,
    health: &HealthCheck,
    deploy: &Deploy,
    release: &Release,
) -> Aws {
    let id = |c: &mut Checker, path: String, value: &str, prefix: &str| {
        let ok = value.strip_prefix(prefix).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
        });
        if !ok {
            c.problem(
                path,
                format!("`{value}` is not an ID such as \"{prefix}0123abcd\""),
            );
        }
    };
    if let Some(vpc) = &a.vpc {
        id(c, "aws.vpc".into(), vpc, "vpc-");
    }
    let subnets = a.subnets.clone().unwrap_or_default();
    for (i, s) in subnets.iter().enumerate() {
        id(c, format!("aws.subnets[{i}]"), s, "subnet-");
    }
    let security_groups = a.security_groups.clone().unwrap_or_default();
    for (i, s) in security_groups.iter().enumerate() {
        id(c, format!("aws.security_groups[{i}]"), s, "sg-");
    }
    let images = a.images.clone().unwrap_or_default();
    for (version, image) in &images {
        if !is_version(version) {
            c.problem(
                format!("aws.images.{version}"),
                format!("`{version}` is not a version: letters, digits, `.`, `_`, `-`, `+`"),
            );
        }
        id(c, format!("aws.images.{version}"), image, "ami-");
    }
    let adopt = a.adopt.clone().unwrap_or_default();
    let target_group_arns = adopt.target_group_arns.unwrap_or_default();
    if !target_group_arns.is_empty() && target_group_arns.len() != 2 {
        c.problem(
            "aws.adopt.target_group_arns",
            "expected two target groups (blue and green), which deploys shift traffic between",
        );
    }
    if !target_group_arns.is_empty() && adopt.listener_arn.is_none() {
        c.problem(
            "aws.adopt.listener_arn",
            "is required with aws.adopt.target_group_arns: the listener that forwards to them",
        );
    }
    for (i, arn) in target_group_arns.iter().enumerate() {
        if !arn.starts_with("arn:") {
            c.problem(
                format!("aws.adopt.target_group_arns[{i}]"),
                format!("`{arn}` is not an ARN"),
            );
        }
    }
    if let Some(arn) = &adopt.listener_arn {
        if !arn.starts_with("arn:") {
            c.problem("aws.adopt.listener_arn", format!("`{arn}` is not an ARN"));
        }
    }
    if let Some(name) = &adopt.auto_scaling_group {
        if name.is_empty() || name.len() > 255 {
            c.problem(
                "aws.adopt.auto_scaling_group",
                "expected the name of an Auto Scaling group (1 to 255 characters)",
            );
        }
        if a.auto_scaling == Some(false) {
            c.problem(
                "aws.adopt.auto_scaling_group",
                "adopting a group runs the stack in it: remove `auto_scaling = false`",
            );
        }
    }
    let instance_type = a
        .instance_type
        .clone()
        .unwrap_or_else(|| defaults::INSTANCE_TYPE.into());
    if instance_type.split('.').count() != 2 || instance_type.contains(char::is_whitespace) {
        c.problem(
            "aws.instance_type",
            format!("`{instance_type}` is not an instance type such as \"t3.micro\""),
        );
    }
    let port = a.port.unwrap_or(defaults::AWS_PORT);
    let listener_port = a.listener_port.unwrap_or(defaults::AWS_LISTENER_PORT);
    for (path, p) in [
        ("aws.port", Some(port)),
        ("aws.listener_port", Some(listener_port)),
        ("aws.preview_port", a.preview_port),
    ] {
        if p == Some(0) {
            c.problem(path, "expected a port from 1 to 65535");
        }
    }
    if a.preview_port == Some(listener_port) {
        c.problem(
            "aws.preview_port",
            format!("{listener_port} is the listener's own port: give the preview another"),
        );
    }
    if images.is_empty() && adopt.launch_template.is_none() {
        c.problem(
            "aws.images",
            format!(
                "name an image for each release, such as `{} = \"ami-0123abcd\"`, or a launch \
                 template in aws.adopt.launch_template",
                release.version
            ),
        );
    }

    // The target group's health check is the stack file's, within what ELBv2 accepts.
    let secs = |d: std::time::Duration| d.as_secs_f64();
    if !(5.0..=300.0).contains(&secs(health.interval)) || health.interval.subsec_nanos() != 0 {
        c.problem(
            "health.interval",
            "on AWS must be whole seconds from 5s to 300s",
        );
    }
    if !(2.0..=120.0).contains(&secs(health.timeout)) || health.timeout.subsec_nanos() != 0 {
        c.problem(
            "health.timeout",
            "on AWS must be whole seconds from 2s to 120s",
        );
    }
    for (path, n) in [
        ("health.healthy_threshold", health.healthy_threshold),
        ("health.unhealthy_threshold", health.unhealthy_threshold),
    ] {
        if !(2..=10).contains(&n) {
            c.problem(path, "on AWS must be from 2 to 10");
        }
    }
    if secs(deploy.drain_timeout) > 3600.0 || deploy.drain_timeout.subsec_nanos() != 0 {
        c.problem(
            "deploy.drain_timeout",
            "on AWS becomes the target group's deregistration delay: whole seconds up to 3600s",
        );
    }

    Aws {
        region: a.region.clone(),
        vpc: a.vpc.clone(),
        subnets,
        instance_type,
        security_groups,
        key_name: a.key_name.clone(),
        instance_profile: a.instance_profile.clone(),
        user_data: a.user_data.clone(),
        port,
        listener_port,
        preview_port: a.preview_port,
        auto_scaling: a.auto_scaling.unwrap_or(false) || adopt.auto_scaling_group.is_some(),
        tags: a.tags.clone().unwrap_or_default(),
        images,
        adopt: AwsAdopt {
            listener_arn: adopt.listener_arn,
            target_group_arns,
            launch_template: adopt.launch_template,
            auto_scaling_group: adopt.auto_scaling_group,
        },
    }
}
