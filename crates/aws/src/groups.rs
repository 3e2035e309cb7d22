//! Auto Scaling groups as fleets of the executor: replace-group as a new group per release (from
//! a new launch template version, on the other side's target group), and rolling inside a group.
//! Either way each new instance is launched beside the group and joins it once running, and
//! each old one leaves its group with the desired capacity decremented, so no group launches or
//! replaces anything behind the deploy's back.

use std::collections::BTreeSet;

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use cutover_spec::Spec;
use cutover_store::{ResourceRow, Store};

use crate::clients::Clients;
use cutover_control::Side;
use cutover_rollout::journal::{Event, Outcome};
use cutover_rollout::{Fleet, MachineState, Rollout, Settings};

use crate::asg::SERVICE;
pub use crate::asg::{delete_group, member_ids};
use crate::error::{api, field, AwsError};
use crate::stack::{kind, section, Stack};
use crate::tags;

/// The group's bounds from the stack file.
#[derive(Debug, Clone, Copy)]
pub struct GroupSize {
    pub min: u32,
    pub max: u32,
}

/// The Auto Scaling groups recorded for the stack, oldest first.
pub fn recorded(store: &Store) -> Result<Vec<ResourceRow>, AwsError> {
    Ok(store
        .resources()?
        .into_iter()
        .filter(|r| r.kind == kind::AUTO_SCALING_GROUP)
        .collect())
}

/// A launch template version that launches `image` (`$Default` when the release has none of
/// its own): the group launches exactly this release.
async fn release_version(
    clients: &Clients,
    launch_template: &str,
    image: Option<&str>,
    description: &str,
) -> Result<String, AwsError> {
    let Some(image) = image else {
        return Ok("$Default".to_owned());
    };
    let out = clients
        .ec2
        .create_launch_template_version()
        .launch_template_id(launch_template)
        .source_version("$Latest")
        .version_description(description)
        .launch_template_data(RequestLaunchTemplateData::builder().image_id(image).build())
        .send()
        .await
        .map_err(api("ec2", "CreateLaunchTemplateVersion"))?;
    let number = field(
        out.launch_template_version()
            .and_then(|v| v.version_number()),
        "ec2",
        "CreateLaunchTemplateVersion",
        "version number",
    )?;
    Ok(number.to_string())
}

/// Replaces the stack's group (or plain instances) with a new group running `version`, through
/// the executor: the new group starts empty on the other side's target group, launching exactly
/// this release; each new instance is launched beside it and joins it once running; when the
/// whole new set is healthy the traffic moves to it, and the old instances drain and leave
/// their groups, which are then deleted. A new set that never turns healthy is removed with its
/// group, and the old groups are as they were.
#[allow(clippy::too_many_arguments)]
pub async fn replace(
    clients: &Clients,
    spec: &Spec,
    stack: &Stack,
    store: &Store,
    version: &str,
    extra_images: &[(String, String)],
    mut settings: Settings,
    size: GroupSize,
    mut on_event: impl FnMut(&Event),
) -> Result<Outcome, AwsError> {
    let aws = section(spec)?;
    let lt = stack.launch_template.clone().ok_or_else(|| {
        AwsError::NotInitialized(
            "an Auto Scaling group needs the stack's launch template: run `cutover aws init`"
                .into(),
        )
    })?;
    let ec2 = stack.ec2(clients, spec, extra_images)?;
    let image = ec2.image(version)?.map(str::to_owned);
    let elb = stack.elb(clients, spec);
    let next = cutover_rollout::live(store, crate::LIVE_KEY)?.other();
    let old_groups: Vec<String> = recorded(store)?.into_iter().map(|g| g.id).collect();
    let deployment = store.deployments()?.last().map_or(1, |d| d.id + 1);
    let name = format!("{}-{version}-{deployment}", spec.service);
    settings.groups = old_groups.iter().cloned().chain([name.clone()]).collect();
    let fleet = InGroup::new(&ec2, clients, &name).replacing(&old_groups);
    let desired = settings.desired;
    let mut rollout = Rollout::begin(&fleet, &elb, store, settings, version, &mut on_event)?;

    // A launch template version per release: the group launches exactly this image.
    let lt_version = release_version(
        clients,
        &lt,
        image.as_deref(),
        &format!("{} {version}", spec.service),
    )
    .await?;
    let tag = |k: &str, v: &str| {
        Tag::builder()
            .key(k)
            .value(v)
            .propagate_at_launch(true)
            .build()
    };
    // Empty at first: the executor launches each instance and attaches it, so the group never
    // launches behind the deploy's back.
    let mut req = clients
        .asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(&lt)
                .version(&lt_version)
                .build(),
        )
        .min_size(0)
        .max_size(size.max.max(desired) as i32)
        .desired_capacity(0)
        .vpc_zone_identifier(stack.subnets.join(","))
        .target_group_arns(elb.arn(next))
        // The load balancer's checks decide: an instance it finds unhealthy is replaced.
        .health_check_type("ELB")
        .health_check_grace_period(300)
        .tags(tag(tags::STACK, &spec.service))
        .tags(tag(tags::VERSION, version))
        .tags(tag(tags::GROUP, next.name()))
        .tags(tag(tags::DEPLOYMENT, &rollout.id().to_string()));
    for (k, v) in &aws.tags {
        req = req.tags(tag(k, v));
    }
    rollout.note(
        "group",
        format!("creating {name} for {version} (launch template version {lt_version}) in {next}"),
    );
    req.send()
        .await
        .map_err(api(SERVICE, "CreateAutoScalingGroup"))?;
    store.record_resource(&ResourceRow {
        kind: kind::AUTO_SCALING_GROUP.into(),
        id: name.clone(),
        name: name.clone(),
        created: true,
    })?;
    // The old groups shrink as their instances leave: nothing may hold them at a minimum.
    for g in &old_groups {
        resize(clients, g, Some(0), None).await?;
    }
    let outcome = rollout.run().await?;
    let mut say = |detail: String| {
        let json = serde_json::json!({ "detail": detail });
        if let Err(e) = store.event(Some(outcome.deployment), "group", &json) {
            tracing::warn!("recording event: {e}");
        }
        on_event(&Event {
            kind: "group",
            detail,
        });
    };
    if outcome.succeeded() {
        for g in &old_groups {
            delete_group(clients, g).await?;
            store.resource_deleted(kind::AUTO_SCALING_GROUP, g)?;
            say(format!("deleted {g}"));
        }
        resize(clients, &name, Some(size.min.min(desired)), None).await?;
    } else {
        // The new group goes; the old ones keep their instances and get their floor back.
        delete_group(clients, &name).await?;
        store.resource_deleted(kind::AUTO_SCALING_GROUP, &name)?;
        say(format!("deleted {name}"));
        for g in &old_groups {
            resize(clients, g, Some(size.min.min(desired)), None).await?;
        }
    }
    Ok(outcome)
}

/// Sets a group's minimum and maximum size, where given.
async fn resize(
    clients: &Clients,
    name: &str,
    min: Option<u32>,
    max: Option<u32>,
) -> Result<(), AwsError> {
    clients
        .asg
        .update_auto_scaling_group()
        .auto_scaling_group_name(name)
        .set_min_size(min.map(|n| n as i32))
        .set_max_size(max.map(|n| n as i32))
        .send()
        .await
        .map_err(api(SERVICE, "UpdateAutoScalingGroup"))?;
    Ok(())
}

/// Whether a deploy with `strategy` can run on this stack as it stands: a stack run by an Auto
/// Scaling group replaces the group, or rolls inside it; its instances are the group's, so
/// strategies that stand a second set beside them are not offered.
pub fn check_strategy(store: &Store, auto_scaling: bool, strategy: &str) -> Result<(), AwsError> {
    let groups = recorded(store)?;
    if (auto_scaling || !groups.is_empty()) && !matches!(strategy, "replace-group" | "rolling") {
        return Err(AwsError::Invalid(format!(
            "{strategy} is not available on a stack run by an Auto Scaling group: deploys \
             replace the group (`--strategy replace-group`) or roll inside it (`rolling`)"
        )));
    }
    if groups.len() > 1 && strategy == "rolling" {
        return Err(AwsError::Invalid(format!(
            "the stack has {} Auto Scaling groups (an interrupted replace-group?): \
             `--strategy replace-group` leaves one",
            groups.len()
        )));
    }
    Ok(())
}

/// Rolling inside an Auto Scaling group: each new instance is launched beside the group and, once
/// running, attached to it (the group's desired capacity grows by one); each old one is
/// terminated through the group with its desired capacity decremented, so the group never
/// launches a replacement behind the deploy's back. The group's launch template moves to the new
/// release only when the deploy is done.
pub struct InGroup<'a> {
    pub ec2: &'a crate::compute::Ec2,
    pub clients: &'a Clients,
    pub name: String,
    /// Groups whose instances this deploy replaces: they leave through their group.
    others: Vec<String>,
    /// Launched, not yet attached.
    pending: std::sync::Mutex<BTreeSet<String>>,
}

impl<'a> InGroup<'a> {
    pub fn new(ec2: &'a crate::compute::Ec2, clients: &'a Clients, name: &str) -> Self {
        Self {
            ec2,
            clients,
            name: name.to_owned(),
            others: Vec::new(),
            pending: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    /// New instances join this group; those of `groups` leave theirs as they go.
    pub fn replacing(mut self, groups: &[String]) -> Self {
        self.others = groups.to_vec();
        self
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for the surge, before the deploy starts.
    pub async fn allow(&self, max: u32) -> Result<(), AwsError> {
        self.clients
            .asg
            .update_auto_scaling_group()
            .auto_scaling_group_name(&self.name)
            .max_size(max as i32)
            .send()
            .await
            .map_err(api(SERVICE, "UpdateAutoScalingGroup"))?;
        Ok(())
    }

    /// Points the group at `version`'s image (a new launch template version) once the deploy is
    /// done, so instances it launches later run the new release too.
    pub async fn adopt_release(
        &self,
        launch_template: &str,
        image: Option<&str>,
        version: &str,
        max: u32,
    ) -> Result<(), AwsError> {
        let lt_version = release_version(self.clients, launch_template, image, version).await?;
        self.clients
            .asg
            .update_auto_scaling_group()
            .auto_scaling_group_name(&self.name)
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(launch_template)
                    .version(lt_version)
                    .build(),
            )
            .max_size(max as i32)
            .send()
            .await
            .map_err(api(SERVICE, "UpdateAutoScalingGroup"))?;
        Ok(())
    }
}

impl Fleet for InGroup<'_> {
    type Error = AwsError;

    async fn launch(
        &self,
        version: &str,
        group: Side,
        deployment: u64,
    ) -> Result<String, AwsError> {
        let id = self.ec2.launch(version, group, deployment).await?;
        self.pending().insert(id.clone());
        Ok(id)
    }

    async fn machines(&self) -> Result<Vec<cutover_rollout::Machine>, AwsError> {
        let mut machines = self.ec2.machines().await?;
        let ready: Vec<String> = {
            let pending = self.pending();
            machines
                .iter()
                .filter(|m| pending.contains(&m.id) && m.state == MachineState::Ready)
                .map(|m| m.id.clone())
                .collect()
        };
        if !ready.is_empty() {
            // Only a running instance can join a group.
            self.clients
                .asg
                .attach_instances()
                .auto_scaling_group_name(&self.name)
                .set_instance_ids(Some(ready.clone()))
                .send()
                .await
                .map_err(api(SERVICE, "AttachInstances"))?;
            let mut pending = self.pending();
            for id in &ready {
                pending.remove(id);
            }
        }
        let pending = self.pending();
        for m in &mut machines {
            if ready.contains(&m.id) {
                m.auto_scaling_group = Some(self.name.clone());
            }
            // Until it joins, it counts as starting: it must not be registered before the group
            // holds it, or the group could be asked to replace what it does not know.
            if pending.contains(&m.id) && m.state == MachineState::Ready {
                m.state = MachineState::Booting {
                    detail: format!("joining {}", self.name),
                };
            }
        }
        Ok(machines)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        let mut members: BTreeSet<String> = BTreeSet::new();
        for g in std::iter::once(&self.name).chain(&self.others) {
            members.extend(member_ids(self.clients, g).await?);
        }
        let mut plain = Vec::new();
        for id in ids {
            if members.contains(id) {
                self.clients
                    .asg
                    .terminate_instance_in_auto_scaling_group()
                    .instance_id(id)
                    .should_decrement_desired_capacity(true)
                    .send()
                    .await
                    .map_err(api(SERVICE, "TerminateInstanceInAutoScalingGroup"))?;
            } else {
                plain.push(id.clone());
            }
        }
        self.pending().retain(|id| !ids.contains(id));
        self.ec2.terminate(&plain).await
    }
}
