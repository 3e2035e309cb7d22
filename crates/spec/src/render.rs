//! A runtime spec written back as a stack file, with every default spelled out.

use crate::duration::format;
use crate::model::*;
use crate::raw::*;

impl Spec {
    /// The stack file that parses back to this spec.
    pub fn to_raw(&self) -> RawSpec {
        let r = &self.release;
        let h = &self.health;
        let l = &self.listener;
        let d = &self.deploy;
        RawSpec {
            service: RawService {
                name: Some(self.service.clone()),
            },
            release: RawRelease {
                version: Some(r.version.clone()),
                command: Some(r.command.clone()),
                env: Some(r.env.clone()),
                user: r.user.clone(),
                stop_signal: Some(r.stop_signal.name().into()),
                stop_timeout: Some(format(r.stop_timeout)),
                artifact: r.artifact.clone(),
                sha256: r.sha256.clone(),
                fetch_timeout: Some(format(r.fetch_timeout)),
                max_unpacked_size: Some(size(r.max_unpacked_size)),
            },
            health: RawHealth {
                path: Some(h.path.clone()),
                interval: Some(format(h.interval)),
                timeout: Some(format(h.timeout)),
                healthy_threshold: Some(h.healthy_threshold),
                unhealthy_threshold: Some(h.unhealthy_threshold),
                matcher: Some(h.matcher.to_string()),
                fail_open: Some(h.fail_open),
            },
            group: RawGroup {
                min: Some(self.group.min),
                desired: Some(self.group.desired),
                max: Some(self.group.max),
            },
            listener: RawListener {
                bind: Some(l.bind.to_string()),
                tls: l.tls.as_ref().map(|t| RawTls {
                    cert: Some(t.cert.display().to_string()),
                    key: Some(t.key.display().to_string()),
                }),
                redirect_http: l.redirect_http.map(|a| a.to_string()),
                preview: l.preview.map(|a| a.to_string()),
                request_headers: Some(l.request_headers.clone()),
                response_headers: Some(l.response_headers.clone()),
                add_request_headers: Some(l.add_request_headers.clone()),
                add_response_headers: Some(l.add_response_headers.clone()),
                remove_request_headers: Some(l.remove_request_headers.clone()),
                remove_response_headers: Some(l.remove_response_headers.clone()),
                balance: Some(l.balance.name().into()),
                workers: l.workers,
                pin_workers: Some(l.pin_workers),
                upgrades: Some(l.upgrades.clone()),
                body_timeout: Some(format(l.body_timeout)),
                try_timeout: Some(l.try_timeout.text()),
                retry_budget: Some(l.retry_budget),
            },
            deploy: RawDeploy {
                strategy: Some(d.strategy.name().into()),
                max_surge: Some(d.max_surge),
                max_unavailable: Some(d.max_unavailable),
                drain_timeout: Some(format(d.drain_timeout)),
                progress_deadline: Some(format(d.progress_deadline)),
                auto_rollback: Some(d.auto_rollback),
                rollback_window: Some(format(d.rollback_window)),
                steps: Some(d.steps.iter().map(raw_step).collect()),
                analysis: Some(RawAnalysis {
                    min_requests: Some(d.analysis.min_requests),
                    max_error_rate: Some(d.analysis.max_error_rate),
                    max_error_rate_ratio: Some(d.analysis.max_error_rate_ratio),
                    max_p99: Some(format(d.analysis.max_p99)),
                    max_p99_ratio: Some(d.analysis.max_p99_ratio),
                }),
            },
            admin: RawAdmin {
                bind: Some(self.admin.bind.to_string()),
                allow_remote: self.admin.allow_remote.then_some(true),
            },
            autoscale: self.autoscale.as_ref().map(|a| RawAutoscale {
                scale_out_cooldown: Some(format(a.scale_out_cooldown)),
                scale_in_cooldown: Some(format(a.scale_in_cooldown)),
                policies: Some(a.policies.iter().map(raw_policy).collect()),
            }),
            targets: (!self.targets.is_empty()).then(|| self.targets.clone()),
            aws: self.aws.as_ref().map(raw_aws),
        }
    }

    /// The normalized stack file, as `cutover check` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.to_raw())
            .unwrap_or_else(|e| format!("# cannot render the spec: {e}\n"))
    }
}

fn raw_step(s: &CanaryStep) -> RawStep {
    RawStep {
        instances: s.instances,
        weight: s.weight,
        pause: match s.pause {
            Pause::None => None,
            Pause::For(d) => Some(toml::Value::String(format(d))),
            Pause::UntilPromoted => Some(toml::Value::Table(toml::Table::new())),
        },
    }
}

fn raw_policy(p: &Policy) -> RawPolicy {
    let mut raw = RawPolicy {
        period: Some(format(p.period)),
        periods: Some(p.periods),
        ..RawPolicy::default()
    };
    match &p.kind {
        PolicyKind::Step { steps } => {
            raw.kind = Some("step".into());
            raw.steps = Some(
                steps
                    .iter()
                    .map(|s| match s.threshold {
                        Threshold::Above(v) => RawScaleStep {
                            above: Some(v),
                            below: None,
                            change: Some(s.change),
                        },
                        Threshold::Below(v) => RawScaleStep {
                            above: None,
                            below: Some(v),
                            change: Some(s.change),
                        },
                    })
                    .collect(),
            );
        }
        PolicyKind::TargetTracking { target } => {
            raw.kind = Some("target-tracking".into());
            raw.target = Some(*target);
        }
        PolicyKind::Cpu {
            scale_out_above,
            scale_in_below,
        } => {
            raw.kind = Some("cpu".into());
            raw.scale_out_above = Some(*scale_out_above);
            raw.scale_in_below = Some(*scale_in_below);
        }
    }
    raw
}

fn raw_aws(a: &Aws) -> RawAws {
    RawAws {
        region: a.region.clone(),
        vpc: a.vpc.clone(),
        subnets: Some(a.subnets.clone()),
        instance_type: Some(a.instance_type.clone()),
        security_groups: Some(a.security_groups.clone()),
        key_name: a.key_name.clone(),
        instance_profile: a.instance_profile.clone(),
        user_data: a.user_data.clone(),
        port: Some(a.port),
        listener_port: Some(a.listener_port),
        preview_port: a.preview_port,
        auto_scaling: Some(a.auto_scaling),
        tags: Some(a.tags.clone()),
        images: Some(a.images.clone()),
        adopt: Some(RawAwsAdopt {
            listener_arn: a.adopt.listener_arn.clone(),
            target_group_arns: Some(a.adopt.target_group_arns.clone()),
            launch_template: a.adopt.launch_template.clone(),
            auto_scaling_group: a.adopt.auto_scaling_group.clone(),
        }),
    }
}

/// A byte count in the largest binary unit that holds it exactly.
fn size(bytes: u64) -> String {
    for (unit, shift) in [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}
