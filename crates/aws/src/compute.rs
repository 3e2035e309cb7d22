//! Instances over EC2: launch a release's image with the stack's tags, spread over subnets; see
//! them through `running` and both status checks; terminate.

use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_ec2::types::{
    Filter, IamInstanceProfileSpecification, InstanceStateName, InstanceType,
    LaunchTemplateSpecification, ResourceType, SummaryStatus, Tag, TagSpecification,
};
use aws_sdk_ec2::Client;
use base64::Engine;

use crate::error::{api, field, AwsError};
use crate::tags;
use cutover_control::Side;
use cutover_rollout::{Fleet, Machine, MachineState};

const SERVICE: &str = "ec2";

/// How to launch an instance of a release.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub stack: String,
    /// Release version to image ID.
    pub images: std::collections::BTreeMap<String, String>,
    pub instance_type: String,
    pub subnets: Vec<String>,
    pub security_groups: Vec<String>,
    pub key_name: Option<String>,
    pub instance_profile: Option<String>,
    pub user_data: Option<String>,
    /// An adopted launch template (ID `lt-…` or name): its `$Default` version, with the
    /// release's image over it when the stack file names one.
    pub launch_template: Option<String>,
    pub tags: std::collections::BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct Ec2 {
    pub client: Client,
    pub spec: LaunchSpec,
    next_subnet: AtomicUsize,
}

impl Ec2 {
    pub fn new(client: Client, spec: LaunchSpec) -> Self {
        Self {
            client,
            spec,
            next_subnet: AtomicUsize::new(0),
        }
    }

    fn tag(key: &str, value: &str) -> Tag {
        Tag::builder().key(key).value(value).build()
    }

    /// The image a version runs from, or why there is none.
    pub fn image(&self, version: &str) -> Result<Option<&str>, AwsError> {
        match self.spec.images.get(version) {
            Some(image) => Ok(Some(image)),
            None if self.spec.launch_template.is_some() => Ok(None),
            None => Err(AwsError::Invalid(format!(
                "no image for release {version}: add `{version} = \"ami-…\"` under [aws.images] \
                 in the stack file, or pass --image"
            ))),
        }
    }
}

impl Fleet for Ec2 {
    type Error = AwsError;

    async fn launch(
        &self,
        version: &str,
        group: Side,
        deployment: u64,
    ) -> Result<String, AwsError> {
        let s = &self.spec;
        let mut req = self.client.run_instances().min_count(1).max_count(1);
        if let Some(image) = self.image(version)? {
            req = req.image_id(image);
        }
        match &s.launch_template {
            Some(lt) => {
                let spec = LaunchTemplateSpecification::builder().version("$Default");
                let spec = if lt.starts_with("lt-") {
                    spec.launch_template_id(lt)
                } else {
                    spec.launch_template_name(lt)
                };
                req = req.launch_template(spec.build());
            }
            None => {
                req = req.instance_type(InstanceType::from(s.instance_type.as_str()));
                for sg in &s.security_groups {
                    req = req.security_group_ids(sg);
                }
                if let Some(key) = &s.key_name {
                    req = req.key_name(key);
                }
                if let Some(profile) = &s.instance_profile {
                    let p = IamInstanceProfileSpecification::builder();
                    let p = if profile.starts_with("arn:") {
                        p.arn(profile)
                    } else {
                        p.name(profile)
                    };
                    req = req.iam_instance_profile(p.build());
                }
                if let Some(data) = &s.user_data {
                    req = req.user_data(base64::engine::general_purpose::STANDARD.encode(data));
                }
            }
        }
        if !s.subnets.is_empty() {
            // Round robin over the subnets, which sit in different zones: a zone's outage takes
            // a share of the fleet, not all of it.
            let n = self.next_subnet.fetch_add(1, Ordering::Relaxed);
            req = req.subnet_id(&s.subnets[n % s.subnets.len()]);
        }
        let mut tags = TagSpecification::builder().resource_type(ResourceType::Instance);
        for (k, v) in &s.tags {
            tags = tags.tags(Self::tag(k, v));
        }
        tags = tags
            .tags(Self::tag("Name", &format!("{}-{version}", s.stack)))
            .tags(Self::tag(tags::STACK, &s.stack))
            .tags(Self::tag(tags::VERSION, version))
            .tags(Self::tag(tags::GROUP, group.name()))
            .tags(Self::tag(tags::DEPLOYMENT, &deployment.to_string()));
        let out = req
            .tag_specifications(tags.build())
            .send()
            .await
            .map_err(api(SERVICE, "RunInstances"))?;
        let instance = field(out.instances().first(), SERVICE, "RunInstances", "instance")?;
        Ok(field(
            instance.instance_id(),
            SERVICE,
            "RunInstances",
            "instance ID",
        )?
        .to_owned())
    }

    async fn machines(&self) -> Result<Vec<Machine>, AwsError> {
        let mut machines = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name(format!("tag:{}", tags::STACK))
                        .values(&self.spec.stack)
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(api(SERVICE, "DescribeInstances"))?;
            for i in out.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = i.instance_id() else { continue };
                let tag = |key: &str| {
                    i.tags()
                        .iter()
                        .find(|t| t.key() == Some(key))
                        .and_then(|t| t.value())
                        .unwrap_or_default()
                        .to_owned()
                };
                // Instances without cutover's group tag are not cutover's to move.
                let Some(side) = Side::parse(&tag(tags::GROUP)) else {
                    continue;
                };
                let name = i.state().and_then(|s| s.name());
                let state = match name {
                    Some(InstanceStateName::Pending) => MachineState::Booting {
                        detail: "pending".into(),
                    },
                    Some(InstanceStateName::Running) => MachineState::Booting {
                        detail: "status checks".into(),
                    },
                    other => MachineState::Gone {
                        detail: other.map(|s| s.as_str()).unwrap_or("unknown").to_owned(),
                    },
                };
                machines.push(Machine {
                    id: id.to_owned(),
                    version: tag(tags::VERSION),
                    side,
                    state,
                    image: i.image_id().unwrap_or_default().to_owned(),
                    zone: i
                        .placement()
                        .and_then(|p| p.availability_zone())
                        .map(str::to_owned),
                    launched_at: i.launch_time().map(|t| t.to_string()).unwrap_or_default(),
                    auto_scaling_group: Some(tag("aws:autoscaling:groupName"))
                        .filter(|g| !g.is_empty()),
                });
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        let running: Vec<String> = machines
            .iter()
            .filter(|m| matches!(m.state, MachineState::Booting { .. }))
            .map(|m| m.id.clone())
            .collect();
        // Both checks `ok`: the hypervisor and the instance's own network answer.
        for chunk in running.chunks(100) {
            let out = self
                .client
                .describe_instance_status()
                .set_instance_ids(Some(chunk.to_vec()))
                .include_all_instances(true)
                .send()
                .await
                .map_err(api(SERVICE, "DescribeInstanceStatus"))?;
            for st in out.instance_statuses() {
                let running =
                    st.instance_state().and_then(|s| s.name()) == Some(&InstanceStateName::Running);
                let ok = |s: Option<&SummaryStatus>| s == Some(&SummaryStatus::Ok);
                let instance = ok(st.instance_status().and_then(|s| s.status()));
                let system = ok(st.system_status().and_then(|s| s.status()));
                if let Some(m) = machines
                    .iter_mut()
                    .find(|m| Some(m.id.as_str()) == st.instance_id())
                {
                    if running && instance && system {
                        m.state = MachineState::Ready;
                    } else if running {
                        m.state = MachineState::Booting {
                            detail: format!(
                                "status checks (instance {}, system {})",
                                if instance { "ok" } else { "pending" },
                                if system { "ok" } else { "pending" }
                            ),
                        };
                    }
                }
            }
        }
        machines.sort_by(|a, b| a.launched_at.cmp(&b.launched_at).then(a.id.cmp(&b.id)));
        Ok(machines)
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), AwsError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(api(SERVICE, "TerminateInstances"))?;
        Ok(())
    }
}
