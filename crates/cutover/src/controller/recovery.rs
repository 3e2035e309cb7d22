//! Recovery at start: the current release, the history, the instances still running (re-adopted
//! after checking pid and start time), the warm set, and a deploy that was in progress.

use super::*;

impl Controller {
    /// A controller that first takes up where the last daemon on this data dir left off: the
    /// current release, the history, the instances still running (re-adopted after checking pid
    /// and start time), and a deploy that was in progress (rolled back).
    pub async fn start(
        spec: Spec,
        data_dir: &std::path::Path,
        fleet: LocalFleet,
        plane: Plane,
        store: Store,
    ) -> anyhow::Result<Arc<Self>> {
        let current = match store.current_release()? {
            Some(v) => v,
            None => {
                store.set_current_release(&spec.release.version)?;
                spec.release.version.clone()
            }
        };
        let releases = crate::release::Releases::new(data_dir, &spec.release);
        if let Some(r) = &releases {
            // Nothing can start until the serving release is on disk.
            r.prepare(&current).await?;
        }
        let commands: BTreeMap<String, String> = store.release_commands()?.into_iter().collect();
        let rows = store.deployments()?;
        let next_id = rows.iter().map(|d| d.id).max().unwrap_or(0) + 1;
        let mut history = Vec::new();
        let mut deployment = None;
        for row in rows {
            let progress = row.progress.clone();
            let d = Deployment {
                id: row.id,
                from: row.from_version,
                to: row.to_version,
                strategy: row.strategy,
                started_at: row.started_at,
                finished_at: row.finished_at,
                duration_ms: row.duration_ms,
                progress,
                steps: serde_json::from_value(row.steps.clone()).unwrap_or_default(),
                flip_us: None,
                drains: Drains::from_events(
                    store
                        .events(row.id)
                        .unwrap_or_default()
                        .iter()
                        .map(|(_, kind, detail)| (kind.as_str(), detail)),
                ),
            };
            if d.finished() {
                history.push(d);
            } else {
                // The daemon stopped mid-deploy: finish it by rolling back to what was serving.
                let reason = match &d.progress {
                    Progress::Aborting { reason } => reason.clone(),
                    _ => "the daemon restarted during the deployment".to_owned(),
                };
                tracing::warn!(deployment = d.id, %reason, "resuming an interrupted deployment as a rollback");
                deployment = Some((
                    Deployment {
                        progress: Progress::Aborting { reason },
                        ..d
                    },
                    Instant::now(),
                ));
            }
        }
        let mut instances = BTreeMap::new();
        let mut restarts = Restarts::default();
        let release = &spec.release;
        // A warm set whose window is still open survives the restart; one whose window closed
        // meanwhile is drained like any other old version.
        let now_unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let warm = store
            .warm()?
            .filter(|(v, until)| *until > now_unix && *v != current && deployment.is_none())
            .map(|(version, until)| Warm {
                version,
                until: Instant::now() + Duration::from_secs(until - now_unix),
            });
        // A data plane that kept serving while no controller ran still has the targets where the
        // last controller put them, and its weights: take them as they are. A fresh one has
        // nothing: the live group is the first again.
        let groups = plane.status();
        let weight_of = |group: &str| {
            groups
                .iter()
                .find(|g| g.name == group)
                .map_or(0, |g| g.weight)
        };
        let serving: BTreeMap<String, Side> = groups
            .iter()
            .cloned()
            .filter_map(|g| Some((Side::parse(&g.name)?, g.targets)))
            .flat_map(|(group, targets)| {
                targets
                    .into_iter()
                    .filter(|t| t.state != TargetState::Draining)
                    .map(move |t| (t.target, group))
            })
            .collect();
        let live = match store.meta(LIVE_KEY)?.as_deref().and_then(Side::parse) {
            Some(Side::Green) if !serving.is_empty() => Side::Green,
            _ => Side::Blue,
        };
        let weights = (weight_of(live.name()), weight_of(live.other().name()));
        store.set_meta(LIVE_KEY, live.name())?;
        plane.set_preview(live.other());
        for row in store.live_instances()? {
            if row.pid == 0 {
                // Launched, or about to be, when the last daemon died: find and stop what ran.
                for pid in cutover_fleet::instance::kill_unrecorded(&row.id) {
                    tracing::warn!(instance = %row.id, pid, "stopped an instance that was never recorded as started");
                }
                store.instance_stopped(&row.id)?;
                continue;
            }
            let ours = row
                .start_ticks
                .is_some_and(|t| cutover_fleet::instance::is_same_process(row.pid, t));
            if !ours {
                store.instance_stopped(&row.id)?;
                continue;
            }
            let instance = Instance {
                id: InstanceId(row.id.clone()),
                version: row.version.clone(),
                pid: row.pid,
                port: row.port,
                start_ticks: row.start_ticks,
                log: row.log.clone().into(),
            };
            fleet.adopt(
                instance.clone(),
                signal_of(release.stop_signal),
                release.stop_timeout,
            );
            // Where the data plane has it, it stays. Otherwise (the load balancer restarted with
            // the daemon) survivors of the warm release go back to the other group at weight 0;
            // the rest join the live group, where the steady state keeps the current release and
            // drains any other.
            let group = match serving.get(&instance.target()) {
                Some(group) => *group,
                None => {
                    let group = if warm.as_ref().is_some_and(|w| w.version == instance.version) {
                        live.other()
                    } else {
                        live
                    };
                    plane.register(group.name(), &instance.target()).await?;
                    group
                }
            };
            restarts.adopt(&instance.version, &instance.id.0);
            instances.insert(instance.id.clone(), Tracked::new(instance, group));
        }
        if !instances.is_empty() {
            tracing::info!(adopted = instances.len(), "re-adopted running instances");
        }
        // Targets of instances that are gone: out of rotation, drained by the data plane.
        let known: BTreeSet<String> = instances
            .values()
            .map(|t: &Tracked| t.instance.target())
            .collect();
        for (target, group) in &serving {
            if !known.contains(target) {
                tracing::warn!(%target, %group, "deregistering a target no instance accounts for");
                drop(
                    plane
                        .deregister(group.name(), target, spec.deploy.drain_timeout)
                        .await,
                );
            }
        }
        let group = &spec.group;
        let desired = store
            .desired()?
            .map_or(group.desired, |d| d.clamp(group.min, group.max));
        let last_scaling = store.scaling()?.pop();
        let scaler = spec
            .autoscale
            .clone()
            .map(|a| Autoscaler::new(a, group.min, group.max));
        let sampling = spec
            .autoscale
            .iter()
            .flat_map(|a| &a.policies)
            .map(|_| Sampling {
                at: Instant::now(),
                requests: 0,
                cpu: BTreeMap::new(),
            })
            .collect();
        Ok(Arc::new(Self {
            preview: std::sync::OnceLock::new(),
            spec,
            releases,
            fleet,
            plane,
            store,
            inner: Mutex::new(Inner {
                current,
                instances,
                exited: BTreeMap::new(),
                draining: BTreeSet::new(),
                launching: Vec::new(),
                live,
                weights,
                warm,
                run: None,
                desired,
                scaler,
                sampling,
                last_scaling,
                launch_error: None,
                restarts,
                crash_loop: None,
                deployment,
                commands,
                history,
                next_id,
            }),
            wake: tokio::sync::Notify::new(),
            writes: Default::default(),
        }))
    }
}
