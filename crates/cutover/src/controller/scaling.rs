//! The group's size: `cutover scale` and the autoscaling policies, each change recorded.

use super::*;

impl Controller {
    pub fn desired(&self) -> u32 {
        self.lock().desired
    }

    /// The last scaling action, by a policy or by hand.
    pub fn last_scaling(&self) -> Option<ScalingRow> {
        self.lock().last_scaling.clone()
    }

    pub fn scaling_history(&self) -> Vec<ScalingRow> {
        self.store.scaling().unwrap_or_default()
    }

    /// Sets the desired size by hand, within min and max (`cutover scale N`).
    pub fn scale(&self, to: u32) -> Result<u32, DeployError> {
        let g = &self.spec.group;
        if to < g.min || to > g.max {
            return Err(DeployError::OutOfBounds(to, g.min, g.max));
        }
        let mut inner = self.lock();
        let from = inner.desired;
        if let Some(scaler) = inner.scaler.as_mut() {
            scaler.manual(from, to, Instant::now());
        }
        self.record_scaling(
            &mut inner,
            from,
            to,
            "set by `cutover scale`".into(),
            serde_json::Value::Null,
        );
        drop(inner);
        self.wake.notify_one();
        Ok(from)
    }

    pub(super) fn record_scaling(
        &self,
        inner: &mut Inner,
        from: u32,
        to: u32,
        reason: String,
        metrics: serde_json::Value,
    ) {
        tracing::info!(from, to, %reason, "desired size changed");
        inner.desired = to;
        self.persist("scaling", self.store.scaled(from, to, &reason, &metrics));
        inner.last_scaling = Some(ScalingRow {
            at: now_rfc3339(),
            from,
            to,
            reason,
            metrics,
        });
    }

    /// Ends each policy's evaluation period when it is due: measures its metric, and lets the
    /// autoscaler decide on the periods so far.
    pub(super) fn autoscale(&self) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(scaler) = inner.scaler.as_mut() else {
            return;
        };
        let now = Instant::now();
        let policies = scaler.spec().policies.clone();
        let requests: u64 = Side::BOTH
            .iter()
            .filter_map(|g| self.plane.group_metrics(g.name()))
            .map(|m| m.requests)
            .sum();
        // Only groups that take traffic count: a warm set at weight 0 serves nothing.
        let serving: Vec<Side> = [
            (inner.live, inner.weights.0),
            (inner.live.other(), inner.weights.1),
        ]
        .into_iter()
        .filter(|(_, w)| *w > 0)
        .map(|(g, _)| g)
        .collect();
        let healthy = self
            .plane
            .status()
            .iter()
            .filter(|g| serving.iter().any(|s| s.name() == g.name))
            .flat_map(|g| &g.targets)
            .filter(|t| t.state == TargetState::Healthy)
            .count()
            .max(1) as f64;
        for (i, policy) in policies.iter().enumerate() {
            let Some(sampling) = inner.sampling.get_mut(i) else {
                continue;
            };
            let elapsed = now.saturating_duration_since(sampling.at);
            if elapsed < policy.period {
                continue;
            }
            let value = match policy.kind {
                cutover_spec::PolicyKind::Cpu { .. } => {
                    let mut cpu = BTreeMap::new();
                    let mut percents = Vec::new();
                    for (id, t) in &inner.instances {
                        if inner.draining.contains(id) || !serving.contains(&t.group) {
                            continue;
                        }
                        let Some(used) = cutover_fleet::cpu::group_cpu_time(t.instance.pid) else {
                            continue;
                        };
                        if let Some(before) = sampling.cpu.get(id) {
                            let busy = used.saturating_sub(*before).as_secs_f64();
                            percents.push(100.0 * busy / elapsed.as_secs_f64());
                        }
                        cpu.insert(id.clone(), used);
                    }
                    sampling.cpu = cpu;
                    (!percents.is_empty())
                        .then(|| percents.iter().sum::<f64>() / percents.len() as f64)
                }
                _ => {
                    let per_minute = requests.saturating_sub(sampling.requests) as f64
                        / (elapsed.as_secs_f64() / 60.0);
                    Some(per_minute / healthy)
                }
            };
            sampling.at = now;
            sampling.requests = requests;
            if let Some(v) = value {
                scaler.record(i, v);
            }
        }
        // Capacity still starting is not capacity yet: no decision until it is healthy.
        let pending = inner
            .instances
            .iter()
            .any(|(id, t)| t.healthy_at.is_none() && !inner.draining.contains(id))
            || !inner.launching.is_empty();
        let current = inner.desired;
        if let Some(d) = scaler.decide(current, now, pending) {
            let metrics = serde_json::to_value(&d.metrics).unwrap_or_default();
            self.record_scaling(inner, d.from, d.to, d.reason, metrics);
            drop(guard);
            self.wake.notify_one();
        }
    }
}
