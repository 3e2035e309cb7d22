//! The stack's AWS resources: `init` creates what the stack file does not adopt (load balancer,
//! two target groups, listener, launch template), tags it and records it in the store before
//! anything depends on it; `destroy` deletes exactly what was recorded as created, and nothing
//! adopted; `status` reads it all back.

use std::time::Duration;

use aws_sdk_ec2::types::{
    Filter, LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType,
};
use aws_sdk_elasticloadbalancingv2::types::{
    LoadBalancerTypeEnum, Matcher, ProtocolEnum, Tag, TargetGroupAttribute, TargetTypeEnum,
};
use cutover_spec::Spec;
use cutover_store::{ResourceRow, Store};
use serde::Serialize;

use crate::clients::Clients;
use cutover_control::{Side, TargetHealth};
use cutover_rollout::{Fleet, Machine, MachineState, TrafficPlane};

use crate::compute::{Ec2, LaunchSpec};
use crate::error::{api, field, AwsError};
use crate::tags;
use crate::traffic::{forward, Elb};
use crate::LIVE_KEY;

pub mod kind {
    pub const LOAD_BALANCER: &str = "load-balancer";
    pub const LISTENER: &str = "listener";
    /// A second listener reaching only the side a deploy brings up (`aws.preview_port`).
    pub const PREVIEW_LISTENER: &str = "listener:preview";
    pub const BLUE: &str = "target-group:blue";
    pub const GREEN: &str = "target-group:green";
    pub const LAUNCH_TEMPLATE: &str = "launch-template";
    pub const AUTO_SCALING_GROUP: &str = "auto-scaling-group";
}

/// Store keys for what `init` resolved.
const URL_KEY: &str = "aws.url";
const SUBNETS_KEY: &str = "aws.subnets";
const PREVIEW_URL_KEY: &str = "aws.preview_url";

/// The stack's resources as recorded.
#[derive(Debug, Clone)]
pub struct Stack {
    pub service: String,
    pub listener_arn: String,
    pub blue_arn: String,
    pub green_arn: String,
    /// The preview listener and the URL that reaches the load balancer through it.
    pub preview: Option<(String, String)>,
    pub launch_template: Option<String>,
    pub subnets: Vec<String>,
    pub url: Option<String>,
    pub resources: Vec<ResourceRow>,
}

impl Stack {
    /// The resources `init` recorded, or why there are none.
    pub fn load(spec: &Spec, store: &Store) -> Result<Self, AwsError> {
        let resources = store.resources()?;
        let find = |kind: &str| {
            resources
                .iter()
                .find(|r| r.kind == kind)
                .map(|r| r.id.clone())
        };
        let missing = || {
            AwsError::NotInitialized(format!(
                "stack `{}` has no AWS resources recorded here: run `cutover aws init` first",
                spec.service
            ))
        };
        let subnets = store
            .meta(SUBNETS_KEY)?
            .map(|s| {
                s.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            service: spec.service.clone(),
            listener_arn: find(kind::LISTENER).ok_or_else(missing)?,
            blue_arn: find(kind::BLUE).ok_or_else(missing)?,
            green_arn: find(kind::GREEN).ok_or_else(missing)?,
            preview: find(kind::PREVIEW_LISTENER).zip(store.meta(PREVIEW_URL_KEY)?),
            launch_template: find(kind::LAUNCH_TEMPLATE),
            subnets,
            url: store.meta(URL_KEY)?,
            resources,
        })
    }

    pub fn elb(&self, clients: &Clients, spec: &Spec) -> Elb {
        Elb {
            client: clients.elb.clone(),
            listener_arn: self.listener_arn.clone(),
            blue_arn: self.blue_arn.clone(),
            green_arn: self.green_arn.clone(),
            preview_arn: self.preview.as_ref().map(|(arn, _)| arn.clone()),
            port: spec.aws.as_ref().map_or(8080, |a| a.port),
            metrics: crate::metrics::load_balancer_dimension(&self.listener_arn).map(|lb| {
                crate::metrics::Metrics {
                    client: clients.cw.clone(),
                    load_balancer: lb,
                    period: std::time::Duration::from_secs(60),
                }
            }),
        }
    }

    /// EC2 launching as the stack file says, `extra` images over the file's.
    pub fn ec2(
        &self,
        clients: &Clients,
        spec: &Spec,
        extra: &[(String, String)],
    ) -> Result<Ec2, AwsError> {
        let aws = section(spec)?;
        let mut images = aws.images.clone();
        images.extend(extra.iter().cloned());
        Ok(Ec2::new(
            clients.ec2.clone(),
            LaunchSpec {
                stack: spec.service.clone(),
                images,
                instance_type: aws.instance_type.clone(),
                subnets: self.subnets.clone(),
                security_groups: aws.security_groups.clone(),
                key_name: aws.key_name.clone(),
                instance_profile: aws.instance_profile.clone(),
                user_data: aws.user_data.clone(),
                launch_template: aws.adopt.launch_template.clone(),
                tags: aws.tags.clone(),
            },
        ))
    }
}

/// The `[aws]` section, or a clear error when the stack file has none.
pub fn section(spec: &Spec) -> Result<&cutover_spec::Aws, AwsError> {
    spec.aws.as_ref().ok_or_else(|| {
        AwsError::Invalid(format!(
            "stack `{}` has no [aws] section: see examples/aws.toml",
            spec.service
        ))
    })
}

/// ELBv2 names: at most 32 letters, digits and hyphens, not starting or ending with a hyphen.
fn elb_name(service: &str, suffix: &str) -> String {
    let room = 32 - suffix.len() - 1;
    let base: String = service
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(room)
        .collect();
    format!("{}-{suffix}", base.trim_matches('-'))
}

fn record(store: &Store, kind: &str, id: &str, name: &str, created: bool) -> Result<(), AwsError> {
    store.record_resource(&ResourceRow {
        kind: kind.into(),
        id: id.into(),
        name: name.into(),
        created,
    })?;
    Ok(())
}

/// Creates (or adopts) what the stack needs; safe to run again after a failure part way.
pub async fn init(
    clients: &Clients,
    spec: &Spec,
    store: &Store,
    mut say: impl FnMut(String),
) -> Result<Stack, AwsError> {
    let aws = section(spec)?;
    let recorded = store.resources()?;
    let has = |kind: &str| {
        recorded
            .iter()
            .find(|r| r.kind == kind)
            .map(|r| r.id.clone())
    };
    let stack_tags = |extra: &[(&str, &str)]| {
        let mut t: Vec<Tag> = aws
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        t.push(Tag::builder().key(tags::STACK).value(&spec.service).build());
        for (k, v) in extra {
            t.push(Tag::builder().key(*k).value(*v).build());
        }
        t
    };

    let vpc = match &aws.vpc {
        Some(v) => v.clone(),
        None => {
            let out = clients
                .ec2
                .describe_vpcs()
                .filters(Filter::builder().name("is-default").values("true").build())
                .send()
                .await
                .map_err(api("ec2", "DescribeVpcs"))?;
            let vpc = out.vpcs().first().and_then(|v| v.vpc_id()).ok_or_else(|| {
                AwsError::Invalid(
                    "this region has no default VPC: name one in aws.vpc, with aws.subnets".into(),
                )
            })?;
            vpc.to_owned()
        }
    };
    let subnets = if aws.subnets.is_empty() {
        let out = clients
            .ec2
            .describe_subnets()
            .filters(Filter::builder().name("vpc-id").values(&vpc).build())
            .send()
            .await
            .map_err(api("ec2", "DescribeSubnets"))?;
        let mut found: Vec<(String, String)> = out
            .subnets()
            .iter()
            .filter_map(|s| Some((s.availability_zone()?.to_owned(), s.subnet_id()?.to_owned())))
            .collect();
        found.sort();
        found.into_iter().map(|(_, id)| id).collect()
    } else {
        aws.subnets.clone()
    };
    if subnets.is_empty() {
        return Err(AwsError::Invalid(format!(
            "VPC {vpc} has no subnets: name them in aws.subnets"
        )));
    }
    store.set_meta(SUBNETS_KEY, &subnets.join(","))?;
    say(format!("VPC {vpc}, {} subnets", subnets.len()));

    let tg_arns = match aws.adopt.listener_arn.as_ref() {
        Some(listener) => {
            if has(kind::LISTENER).is_none() {
                record(store, kind::LISTENER, listener, "adopted listener", false)?;
            }
            let [blue, green] =
                match aws.adopt.target_group_arns.as_slice() {
                    [b, g] => [b.clone(), g.clone()],
                    _ => return Err(AwsError::Invalid(
                        "aws.adopt.listener_arn needs aws.adopt.target_group_arns: blue and green"
                            .into(),
                    )),
                };
            record(store, kind::BLUE, &blue, "adopted target group", false)?;
            record(store, kind::GREEN, &green, "adopted target group", false)?;
            say(format!("adopted listener {listener}"));
            [blue, green]
        }
        None => {
            let lb = match has(kind::LOAD_BALANCER) {
                Some(arn) => arn,
                None => {
                    let name = elb_name(&spec.service, "lb");
                    let mut req = clients
                        .elb
                        .create_load_balancer()
                        .name(&name)
                        .r#type(LoadBalancerTypeEnum::Application)
                        .set_subnets(Some(subnets.clone()))
                        .set_tags(Some(stack_tags(&[])));
                    for sg in &aws.security_groups {
                        req = req.security_groups(sg);
                    }
                    let out = req
                        .send()
                        .await
                        .map_err(api("elbv2", "CreateLoadBalancer"))?;
                    let lb = field(
                        out.load_balancers().first(),
                        "elbv2",
                        "CreateLoadBalancer",
                        "load balancer",
                    )?;
                    let arn = field(lb.load_balancer_arn(), "elbv2", "CreateLoadBalancer", "ARN")?
                        .to_owned();
                    record(store, kind::LOAD_BALANCER, &arn, &name, true)?;
                    let dns = lb.dns_name().unwrap_or_default();
                    let url = match aws.listener_port {
                        80 => format!("http://{dns}/"),
                        port => format!("http://{dns}:{port}/"),
                    };
                    store.set_meta(URL_KEY, &url)?;
                    say(format!("created load balancer {name}"));
                    arn
                }
            };
            let mut arns = Vec::new();
            for (kind, color) in [(kind::BLUE, Side::Blue), (kind::GREEN, Side::Green)] {
                let arn = match has(kind) {
                    Some(arn) => arn,
                    None => {
                        let name = elb_name(&spec.service, color.name());
                        let out = clients
                            .elb
                            .create_target_group()
                            .name(&name)
                            .protocol(ProtocolEnum::Http)
                            .port(i32::from(aws.port))
                            .vpc_id(&vpc)
                            .target_type(TargetTypeEnum::Instance)
                            .set_tags(Some(stack_tags(&[(tags::GROUP, color.name())])))
                            .send()
                            .await
                            .map_err(api("elbv2", "CreateTargetGroup"))?;
                        let arn = field(
                            out.target_groups()
                                .first()
                                .and_then(|t| t.target_group_arn()),
                            "elbv2",
                            "CreateTargetGroup",
                            "ARN",
                        )?
                        .to_owned();
                        record(store, kind, &arn, &name, true)?;
                        say(format!("created target group {name}"));
                        arn
                    }
                };
                arns.push(arn);
            }
            let [blue, green] = [arns[0].clone(), arns[1].clone()];
            if has(kind::LISTENER).is_none() {
                let arn = listener(
                    clients,
                    &lb,
                    aws.listener_port,
                    (&blue, 1),
                    (&green, 0),
                    stack_tags(&[]),
                )
                .await?;
                record(store, kind::LISTENER, &arn, "listener", true)?;
                say(format!(
                    "created listener on port {}: blue 1, green 0",
                    aws.listener_port
                ));
            }
            if let (Some(port), None) = (aws.preview_port, has(kind::PREVIEW_LISTENER)) {
                let arn =
                    listener(clients, &lb, port, (&blue, 0), (&green, 1), stack_tags(&[])).await?;
                record(
                    store,
                    kind::PREVIEW_LISTENER,
                    &arn,
                    "preview listener",
                    true,
                )?;
                let lbs = clients
                    .elb
                    .describe_load_balancers()
                    .load_balancer_arns(&lb)
                    .send()
                    .await
                    .map_err(api("elbv2", "DescribeLoadBalancers"))?;
                let dns = field(
                    lbs.load_balancers().first().and_then(|l| l.dns_name()),
                    "elbv2",
                    "DescribeLoadBalancers",
                    "DNS name",
                )?;
                store.set_meta(PREVIEW_URL_KEY, &format!("http://{dns}:{port}/"))?;
                say(format!(
                    "created preview listener on port {port}: it reaches the side a deploy brings up"
                ));
            }
            [blue, green]
        }
    };

    // The health check and drain time are the stack file's, on adopted groups too.
    let h = &spec.health;
    for arn in &tg_arns {
        clients
            .elb
            .modify_target_group()
            .target_group_arn(arn)
            .health_check_protocol(ProtocolEnum::Http)
            .health_check_path(&h.path)
            .health_check_interval_seconds(h.interval.as_secs() as i32)
            .health_check_timeout_seconds(h.timeout.as_secs() as i32)
            .healthy_threshold_count(h.healthy_threshold as i32)
            .unhealthy_threshold_count(h.unhealthy_threshold as i32)
            .matcher(Matcher::builder().http_code(h.matcher.to_string()).build())
            .send()
            .await
            .map_err(api("elbv2", "ModifyTargetGroup"))?;
        clients
            .elb
            .modify_target_group_attributes()
            .target_group_arn(arn)
            .attributes(
                TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(spec.deploy.drain_timeout.as_secs().to_string())
                    .build(),
            )
            .send()
            .await
            .map_err(api("elbv2", "ModifyTargetGroupAttributes"))?;
    }
    say(format!(
        "health check {} every {}s; deregistration delay {}s",
        h.path,
        h.interval.as_secs(),
        spec.deploy.drain_timeout.as_secs()
    ));

    match &aws.adopt.launch_template {
        Some(lt) if has(kind::LAUNCH_TEMPLATE).is_none() => {
            record(
                store,
                kind::LAUNCH_TEMPLATE,
                lt,
                "adopted launch template",
                false,
            )?;
        }
        Some(_) => {}
        None if has(kind::LAUNCH_TEMPLATE).is_none() => {
            let name = format!("cutover-{}", spec.service);
            let mut data = RequestLaunchTemplateData::builder()
                .instance_type(aws.instance_type.as_str().into())
                .set_security_group_ids(
                    (!aws.security_groups.is_empty()).then(|| aws.security_groups.clone()),
                )
                .set_key_name(aws.key_name.clone())
                .tag_specifications(
                    LaunchTemplateTagSpecificationRequest::builder()
                        .resource_type(ResourceType::Instance)
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key(tags::STACK)
                                .value(&spec.service)
                                .build(),
                        )
                        .build(),
                );
            if let Some(image) = aws.images.get(&spec.release.version) {
                data = data.image_id(image);
            }
            if let Some(profile) = &aws.instance_profile {
                let p = aws_sdk_ec2::types::LaunchTemplateIamInstanceProfileSpecificationRequest::builder();
                let p = if profile.starts_with("arn:") {
                    p.arn(profile)
                } else {
                    p.name(profile)
                };
                data = data.iam_instance_profile(p.build());
            }
            if let Some(u) = &aws.user_data {
                use base64::Engine;
                data = data.user_data(base64::engine::general_purpose::STANDARD.encode(u));
            }
            let out = clients
                .ec2
                .create_launch_template()
                .launch_template_name(&name)
                .launch_template_data(data.build())
                // Tagged like the rest, so a policy can scope its deletion to the stack.
                .tag_specifications(
                    aws_sdk_ec2::types::TagSpecification::builder()
                        .resource_type(ResourceType::LaunchTemplate)
                        .tags(
                            aws_sdk_ec2::types::Tag::builder()
                                .key(tags::STACK)
                                .value(&spec.service)
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .map_err(api("ec2", "CreateLaunchTemplate"))?;
            let id = field(
                out.launch_template().and_then(|t| t.launch_template_id()),
                "ec2",
                "CreateLaunchTemplate",
                "ID",
            )?;
            record(store, kind::LAUNCH_TEMPLATE, id, &name, true)?;
            say(format!("created launch template {name}"));
        }
        None => {}
    }
    if let Some(name) = &aws.adopt.auto_scaling_group {
        if !store
            .resources()?
            .iter()
            .any(|r| r.kind == kind::AUTO_SCALING_GROUP)
        {
            adopt_group(clients, spec, store, name, &tg_arns).await?;
            record(store, kind::AUTO_SCALING_GROUP, name, name, false)?;
            say(format!(
                "adopted auto scaling group {name}: its instances run {}",
                spec.release.version
            ));
        }
    }
    if store.meta(LIVE_KEY)?.is_none() {
        store.set_meta(LIVE_KEY, Side::Blue.name())?;
    }
    Stack::load(spec, store)
}

/// Brings an existing group under the stack: the group and its instances are tagged as the
/// stack's, running the stack file's release in the live group, and the group is attached to the
/// live target group (which registers its instances).
async fn adopt_group(
    clients: &Clients,
    spec: &Spec,
    store: &Store,
    name: &str,
    tg_arns: &[String; 2],
) -> Result<(), AwsError> {
    let live = crate::live(store)?;
    let tags = [
        (tags::STACK, spec.service.as_str()),
        (tags::VERSION, spec.release.version.as_str()),
        (tags::GROUP, live.name()),
    ];
    let mut req = clients.asg.create_or_update_tags();
    for (k, v) in tags {
        req = req.tags(
            aws_sdk_autoscaling::types::Tag::builder()
                .resource_id(name)
                .resource_type("auto-scaling-group")
                .key(k)
                .value(v)
                .propagate_at_launch(true)
                .build(),
        );
    }
    req.send()
        .await
        .map_err(api("autoscaling", "CreateOrUpdateTags"))?;
    let members = crate::asg::member_ids(clients, name).await?;
    if !members.is_empty() {
        let mut req = clients.ec2.create_tags().set_resources(Some(members));
        for (k, v) in tags {
            req = req.tags(aws_sdk_ec2::types::Tag::builder().key(k).value(v).build());
        }
        req.send().await.map_err(api("ec2", "CreateTags"))?;
    }
    let tg = match live {
        Side::Blue => &tg_arns[0],
        Side::Green => &tg_arns[1],
    };
    clients
        .asg
        .attach_load_balancer_target_groups()
        .auto_scaling_group_name(name)
        .target_group_arns(tg)
        .send()
        .await
        .map_err(api("autoscaling", "AttachLoadBalancerTargetGroups"))?;
    if store.current_release()?.is_none() {
        store.set_current_release(&spec.release.version)?;
    }
    Ok(())
}

/// How the stack stands on AWS.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub service: String,
    pub url: Option<String>,
    pub current: Option<String>,
    pub live: Side,
    pub weights: (u32, u32),
    pub groups: Vec<GroupStatus>,
    pub instances: Vec<Machine>,
    pub resources: Vec<ResourceRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub color: Side,
    pub arn: String,
    pub check: crate::traffic::CheckSettings,
    pub targets: Vec<TargetHealth>,
}

pub async fn status(clients: &Clients, spec: &Spec, store: &Store) -> Result<Status, AwsError> {
    let stack = Stack::load(spec, store)?;
    let elb = stack.elb(clients, spec);
    let ec2 = stack.ec2(clients, spec, &[])?;
    let mut groups = Vec::new();
    for color in [Side::Blue, Side::Green] {
        groups.push(GroupStatus {
            color,
            arn: elb.arn(color).to_owned(),
            check: elb.check_settings(color).await?,
            targets: elb.health(color).await?,
        });
    }
    let instances = ec2
        .machines()
        .await?
        .into_iter()
        .filter(|m| !matches!(m.state, MachineState::Gone { .. }))
        .collect();
    Ok(Status {
        service: spec.service.clone(),
        url: stack.url.clone(),
        current: store.current_release()?,
        live: crate::live(store)?,
        weights: elb.weights().await?,
        groups,
        instances,
        resources: stack.resources,
    })
}

/// Deletes what `init` and deploys created, newest first, and nothing that was adopted. The
/// instances cutover launched go too: they carry the stack's tag.
pub async fn destroy(
    clients: &Clients,
    spec: &Spec,
    store: &Store,
    mut say: impl FnMut(String),
) -> Result<(), AwsError> {
    let recorded = store.resources()?;
    for r in recorded
        .iter()
        .filter(|r| r.kind == kind::AUTO_SCALING_GROUP)
    {
        if r.created {
            crate::asg::delete_group(clients, &r.id).await?;
            say(format!("deleted auto scaling group {}", r.name));
        } else {
            say(format!("left adopted auto scaling group {}", r.name));
        }
        store.resource_deleted(&r.kind, &r.id)?;
    }
    if let Ok(stack) = Stack::load(spec, store) {
        let ec2 = stack.ec2(clients, spec, &[])?;
        // An adopted group keeps its instances: it would only launch new ones.
        let adopted: Vec<&str> = recorded
            .iter()
            .filter(|r| r.kind == kind::AUTO_SCALING_GROUP && !r.created)
            .map(|r| r.id.as_str())
            .collect();
        let ids: Vec<String> = ec2
            .machines()
            .await?
            .into_iter()
            .filter(|m| !matches!(m.state, MachineState::Gone { .. }))
            .filter(|m| {
                m.auto_scaling_group
                    .as_deref()
                    .is_none_or(|g| !adopted.contains(&g))
            })
            .map(|m| m.id)
            .collect();
        if !ids.is_empty() {
            ec2.terminate(&ids).await?;
            say(format!("terminated {} instances", ids.len()));
        }
    }
    let order = [
        kind::PREVIEW_LISTENER,
        kind::LISTENER,
        kind::LOAD_BALANCER,
        kind::BLUE,
        kind::GREEN,
        kind::LAUNCH_TEMPLATE,
    ];
    for k in order {
        for r in recorded.iter().filter(|r| r.kind == k) {
            if r.created {
                delete(clients, r).await?;
                say(format!("deleted {} {}", r.kind, r.name));
            } else {
                say(format!("left adopted {} {}", r.kind, r.id));
            }
            store.resource_deleted(&r.kind, &r.id)?;
        }
    }
    store.clear_meta(LIVE_KEY)?;
    store.clear_meta(URL_KEY)?;
    store.clear_meta(PREVIEW_URL_KEY)?;
    store.clear_meta(SUBNETS_KEY)?;
    store.clear_current_release()?;
    Ok(())
}

/// Creates an HTTP listener on `port` of load balancer `lb`, forwarding to the two target
/// groups with these weights, tagged `tags`; its ARN.
async fn listener(
    clients: &Clients,
    lb: &str,
    port: u16,
    blue: (&str, u32),
    green: (&str, u32),
    tags: Vec<Tag>,
) -> Result<String, AwsError> {
    let out = clients
        .elb
        .create_listener()
        .load_balancer_arn(lb)
        .protocol(ProtocolEnum::Http)
        .port(i32::from(port))
        .default_actions(forward(blue, green))
        .set_tags(Some(tags))
        .send()
        .await
        .map_err(api("elbv2", "CreateListener"))?;
    Ok(field(
        out.listeners().first().and_then(|l| l.listener_arn()),
        "elbv2",
        "CreateListener",
        "ARN",
    )?
    .to_owned())
}

async fn delete(clients: &Clients, r: &ResourceRow) -> Result<(), AwsError> {
    let gone = |e: &AwsError| {
        e.code()
            .is_some_and(|c| c.contains("NotFound") || c.contains("NotExist"))
    };
    // A target group stays in use for a moment after its load balancer goes: try for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let result = match r.kind.as_str() {
            kind::LISTENER | kind::PREVIEW_LISTENER => clients
                .elb
                .delete_listener()
                .listener_arn(&r.id)
                .send()
                .await
                .map(drop)
                .map_err(api("elbv2", "DeleteListener")),
            kind::LOAD_BALANCER => clients
                .elb
                .delete_load_balancer()
                .load_balancer_arn(&r.id)
                .send()
                .await
                .map(drop)
                .map_err(api("elbv2", "DeleteLoadBalancer")),
            kind::BLUE | kind::GREEN => clients
                .elb
                .delete_target_group()
                .target_group_arn(&r.id)
                .send()
                .await
                .map(drop)
                .map_err(api("elbv2", "DeleteTargetGroup")),
            kind::LAUNCH_TEMPLATE => clients
                .ec2
                .delete_launch_template()
                .launch_template_id(&r.id)
                .send()
                .await
                .map(drop)
                .map_err(api("ec2", "DeleteLaunchTemplate")),
            _ => Ok(()),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if gone(&e) => return Ok(()),
            Err(e)
                if e.code() == Some("ResourceInUse") && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
