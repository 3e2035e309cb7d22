//! Replace-group with Auto Scaling: a new group per release, from a new launch template version,
//! attached to the live target group; once all its instances are healthy there, the old group
//! (or the plain instances it replaces) is detached, drained and deleted. A new group that never
//! turns healthy is deleted, and the old one was never touched.

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use cutover_deploy::Progress;
use cutover_spec::Spec;
use cutover_store::{ResourceRow, Store};
use tokio::time::Instant;

use crate::clients::Clients;
use cutover_control::{Side, TargetState};
use cutover_rollout::journal::{Event, Journal, Outcome};
use cutover_rollout::{Fleet, MachineState, TrafficPlane};

use crate::error::{api, field, AwsError};
use crate::stack::{kind, section, Stack};
use crate::tags;

const SERVICE: &str = "autoscaling";

#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub min: u32,
    pub desired: u32,
    pub max: u32,
    pub progress_deadline: Duration,
    pub drain_timeout: Duration,
    pub poll: Duration,
}

/// The Auto Scaling groups recorded for the stack, oldest first.
pub fn recorded(store: &Store) -> Result<Vec<ResourceRow>, AwsError> {
    Ok(store
        .resources()?
        .into_iter()
        .filter(|r| r.kind == kind::AUTO_SCALING_GROUP)
        .collect())
}

/// Deletes a group and its instances; a group already gone is fine.
pub async fn delete_group(clients: &Clients, name: &str) -> Result<(), AwsError> {
    match clients
        .asg
        .delete_auto_scaling_group()
        .auto_scaling_group_name(name)
        .force_delete(true)
        .send()
        .await
        .map_err(api(SERVICE, "DeleteAutoScalingGroup"))
    {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("not found") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The instance IDs of a group that are in service or on their way.
async fn members(clients: &Clients, name: &str) -> Result<Vec<(String, String)>, AwsError> {
    let out = clients
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(api(SERVICE, "DescribeAutoScalingGroups"))?;
    Ok(out
        .auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_owned(),
                i.lifecycle_state()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
            ))
        })
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

/// The instance IDs of a group.
pub async fn member_ids(clients: &Clients, name: &str) -> Result<Vec<String>, AwsError> {
    Ok(members(clients, name)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}

/// Replaces the stack's group (or plain instances) with a new group running `version`.
#[allow(clippy::too_many_arguments)]
pub async fn replace(
    clients: &Clients,
    spec: &Spec,
    stack: &Stack,
    store: &Store,
    version: &str,
    extra_images: &[(String, String)],
    settings: GroupSettings,
    on_event: impl FnMut(&Event),
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
    let mut journal = Journal::begin(store, version, "replace-group", crate::LIVE_KEY, on_event)?;
    let live = journal.live()?;
    let tg = elb.arn(live).to_owned();
    let old_groups = recorded(store)?;
    // Plain instances (from deploys before the stack had a group) go too, from either group.
    let old_plain: Vec<(String, Side)> = ec2
        .machines()
        .await?
        .into_iter()
        .filter(|m| m.auto_scaling_group.is_none() && !matches!(m.state, MachineState::Gone { .. }))
        .map(|m| (m.id, m.side))
        .collect();

    // A launch template version per release: the group launches exactly this image.
    let lt_version = release_version(
        clients,
        &lt,
        image.as_deref(),
        &format!("{} {version}", spec.service),
    )
    .await?;
    let name = format!("{}-{version}-{}", spec.service, journal.id());
    let tag = |k: &str, v: &str| {
        Tag::builder()
            .key(k)
            .value(v)
            .propagate_at_launch(true)
            .build()
    };
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
        .min_size(settings.min.min(settings.desired) as i32)
        .max_size(settings.max.max(settings.desired) as i32)
        .desired_capacity(settings.desired as i32)
        .vpc_zone_identifier(stack.subnets.join(","))
        .target_group_arns(&tg)
        // The load balancer's checks decide: an instance it finds unhealthy is replaced.
        .health_check_type("ELB")
        .health_check_grace_period(300)
        .tags(tag(tags::STACK, &spec.service))
        .tags(tag(tags::VERSION, version))
        .tags(tag(tags::GROUP, live.name()))
        .tags(tag(tags::DEPLOYMENT, &journal.id().to_string()));
    for (k, v) in &aws.tags {
        req = req.tags(tag(k, v));
    }
    journal.event(
        "group",
        format!(
            "creating {name}: {} instances of {version} (launch template version {lt_version}) in {}",
            settings.desired,
            live.name()
        ),
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

    // Wait until every instance of the new group is healthy in the target group.
    let mut last = usize::MAX;
    let failure = loop {
        let ids = members(clients, &name).await?;
        let health = elb.health(live).await?;
        let of = |id: &str| health.iter().find(|t| t.id == id);
        let healthy = ids
            .iter()
            .filter(|(id, _)| of(id).is_some_and(|t| t.state == TargetState::Healthy))
            .count();
        if healthy != last {
            journal.event(
                "healthy",
                format!("{healthy} of {} in {name}", settings.desired),
            );
            last = healthy;
        }
        if healthy >= settings.desired as usize {
            break None;
        }
        if let Some((id, t)) = ids.iter().find_map(|(id, _)| {
            of(id)
                .filter(|t| t.state == TargetState::Unhealthy)
                .map(|t| (id, t))
        }) {
            break Some(format!(
                "instance {id} of {version} failed: unhealthy: {}",
                t.reason.map_or("failed health checks", |r| r.as_str())
            ));
        }
        if journal.started.elapsed() > settings.progress_deadline {
            let waiting: Vec<String> = ids
                .iter()
                .filter(|(id, _)| of(id).is_none_or(|t| t.state != TargetState::Healthy))
                .map(|(id, state)| match of(id) {
                    Some(t) => format!(
                        "{id} waiting to turn healthy ({})",
                        t.reason.map_or(t.state.as_str(), |r| r.as_str())
                    ),
                    None => format!("{id} waiting for {state}"),
                })
                .collect();
            break Some(format!(
                "{name} did not turn healthy within the progress deadline ({}): {}",
                humantime::format_duration(settings.progress_deadline),
                if waiting.is_empty() {
                    format!("{} of {} instances launched", ids.len(), settings.desired)
                } else {
                    waiting.join("; ")
                }
            ));
        }
        tokio::time::sleep(settings.poll).await;
    };

    if let Some(reason) = failure {
        // The new group goes; the old one was never touched.
        journal.event("group", format!("deleting {name}: {reason}"));
        let ids: Vec<String> = members(clients, &name)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if let Err(e) = elb.deregister(live, &ids).await {
            tracing::debug!("deregistering {name}'s instances: {e}");
        }
        delete_group(clients, &name).await?;
        ec2.terminate(&ids).await?;
        store.resource_deleted(kind::AUTO_SCALING_GROUP, &name)?;
        return Ok(journal.finish(Progress::RolledBack { reason }, live)?);
    }

    // The old group and any plain instances: out of the target groups, drained, deleted.
    let mut old_ids: BTreeSet<String> = BTreeSet::new();
    for (id, group) in &old_plain {
        old_ids.insert(id.clone());
        deregister_one(&elb, *group, id).await?;
    }
    for g in &old_groups {
        let detached = clients
            .asg
            .detach_load_balancer_target_groups()
            .auto_scaling_group_name(&g.id)
            .target_group_arns(&tg)
            .send()
            .await
            .map_err(api(SERVICE, "DetachLoadBalancerTargetGroups"));
        match detached {
            // Its instances were out of the target group already: detached all the same.
            Err(e) if e.code() != Some("InvalidTarget") => return Err(e),
            _ => {}
        }
        journal.event("group", format!("detached {} from {}", g.id, live.name()));
        // Detaching deregisters the group's instances; said again for emulators that do not.
        for (id, _) in members(clients, &g.id).await? {
            deregister_one(&elb, live, &id).await?;
            old_ids.insert(id);
        }
    }
    let old_ids: Vec<String> = old_ids.into_iter().collect();
    journal.event("drain", format!("{} old instances", old_ids.len()));
    let drain_until = Instant::now() + settings.drain_timeout + Duration::from_secs(60);
    loop {
        let health = elb.health(live).await?;
        let still = old_ids
            .iter()
            .filter(|id| {
                health
                    .iter()
                    .any(|t| &t.id == *id && t.state == TargetState::Draining)
            })
            .count();
        if still == 0 {
            break;
        }
        if Instant::now() > drain_until {
            journal.event(
                "drain",
                format!("{still} still draining at the deadline: cut"),
            );
            break;
        }
        tokio::time::sleep(settings.poll).await;
    }
    for g in &old_groups {
        delete_group(clients, &g.id).await?;
        store.resource_deleted(kind::AUTO_SCALING_GROUP, &g.id)?;
        journal.event("group", format!("deleted {}", g.id));
    }
    ec2.terminate(&old_ids).await?;
    Ok(journal.finish(Progress::Done, live)?)
}

/// Deregisters one target; one that is not registered (any more) is what was wanted.
async fn deregister_one(elb: &crate::traffic::Elb, group: Side, id: &str) -> Result<(), AwsError> {
    match elb.deregister(group, &[id.to_owned()]).await {
        Err(e) if e.code() == Some("InvalidTarget") => Ok(()),
        other => other,
    }
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
    /// Launched, not yet attached.
    pending: std::sync::Mutex<BTreeSet<String>>,
}

impl<'a> InGroup<'a> {
    pub fn new(ec2: &'a crate::compute::Ec2, clients: &'a Clients, name: &str) -> Self {
        Self {
            ec2,
            clients,
            name: name.to_owned(),
            pending: std::sync::Mutex::new(BTreeSet::new()),
        }
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
        let members: BTreeSet<String> = members(self.clients, &self.name)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
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
