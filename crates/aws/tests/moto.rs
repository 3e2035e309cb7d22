//! The AWS provider against the emulator (moto server): the same SDK calls that run against AWS.
//! The emulator runs no health checks (a registered running instance is healthy at once), so
//! unhealthy targets are covered by the fake cloud in `rollout.rs`; here the failure path is an
//! instance terminated from outside mid-deploy.

use std::path::Path;
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, InstanceStateName};
use cutover_aws::groups::{self, GroupSize};
use cutover_aws::{stack, Clients, Rollout, Settings, Side, Stack, TrafficPlane};
use cutover_deploy::{Rolling, Strategy};
use cutover_e2e::moto::Moto;
use cutover_rollout::matrix::{self, Fault};
use cutover_spec::Spec;
use cutover_store::Store;

const REGION: &str = "us-west-2";

fn spec(auto_scaling: bool) -> Spec {
    let text = format!(
        r#"
[service]
name = "shop"
[release]
version = "v1"
[health]
interval = "5s"
timeout = "2s"
[group]
min = 1
desired = 3
max = 6
[deploy]
drain_timeout = "5s"
progress_deadline = "2m"
[aws]
region = "{REGION}"
auto_scaling = {auto_scaling}
tags = {{ team = "storefront" }}
[aws.images]
v1 = "ami-0000000000000001"
v2 = "ami-0000000000000002"
v3 = "ami-0000000000000003"
v4 = "ami-0000000000000004"
v5 = "ami-0000000000000005"
v6 = "ami-0000000000000006"
v7 = "ami-0000000000000007"
"#
    );
    cutover_spec::parse(&text, Path::new("cutover.toml"), Path::new("."))
        .unwrap_or_else(|e| panic!("test stack file: {e}"))
}

fn settings(strategy: Strategy) -> Settings {
    Settings {
        strategy,
        desired: 3,
        progress_deadline: Duration::from_secs(120),
        drain_timeout: Duration::from_secs(5),
        poll: Duration::from_millis(100),
        groups: Vec::new(),
        live_key: cutover_aws::LIVE_KEY,
        analysis: cutover_spec::Analysis {
            min_requests: 100,
            max_error_rate: 0.05,
            max_error_rate_ratio: 2.0,
            max_p99: Duration::from_secs(1),
            max_p99_ratio: 2.0,
        },
    }
}

const ROLLING: Strategy = Strategy::Rolling(Rolling {
    max_surge: 1,
    max_unavailable: 0,
});

struct World {
    _moto: Moto,
    _dir: tempfile::TempDir,
    clients: Clients,
    store: Store,
}

async fn world() -> World {
    let moto = Moto::start();
    moto.export_env(REGION);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("state.db")).expect("store");
    let clients = Clients::connect(Some(REGION), Some(&moto.endpoint)).await;
    World {
        _moto: moto,
        _dir: dir,
        clients,
        store,
    }
}

/// Running instances as (id, image, cutover:version tag).
async fn running(clients: &Clients) -> Vec<(String, String, String)> {
    let out = clients
        .ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .expect("describe instances");
    let mut v: Vec<_> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .map(|i| {
            let version = i
                .tags()
                .iter()
                .find(|t| t.key() == Some("cutover:version"))
                .and_then(|t| t.value())
                .unwrap_or_default();
            (
                i.instance_id().unwrap_or_default().to_owned(),
                i.image_id().unwrap_or_default().to_owned(),
                version.to_owned(),
            )
        })
        .collect();
    v.sort_by(|a, b| a.2.cmp(&b.2).then(a.0.cmp(&b.0)));
    v
}

async fn registered(w: &World, spec: &Spec, color: Side) -> Vec<String> {
    let stack = Stack::load(spec, &w.store).expect("stack");
    let mut ids: Vec<String> = stack
        .elb(&w.clients, spec)
        .health(color)
        .await
        .expect("health")
        .into_iter()
        .filter(|t| t.state == cutover_aws::TargetState::Healthy)
        .map(|t| t.id)
        .collect();
    ids.sort();
    ids
}

async fn deploy(w: &World, spec: &Spec, strategy: Strategy, version: &str) -> cutover_aws::Outcome {
    let stack = Stack::load(spec, &w.store).expect("stack");
    let ec2 = stack.ec2(&w.clients, spec, &[]).expect("ec2");
    let elb = stack.elb(&w.clients, spec);
    let rollout = Rollout::begin(&ec2, &elb, &w.store, settings(strategy), version, |e| {
        eprintln!("  {:<9} {}", e.kind, e.detail)
    })
    .expect("begin");
    rollout.run().await.expect("deploy runs to an outcome")
}

fn ids_of(instances: &[(String, String, String)]) -> Vec<String> {
    let mut ids: Vec<String> = instances.iter().map(|i| i.0.clone()).collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_rolling_blue_green_replace_group_then_destroy_leaves_nothing() {
    let w = world().await;
    let spec = spec(false);
    let stack = stack::init(&w.clients, &spec, &w.store, |l| eprintln!("{l}"))
        .await
        .expect("init");
    assert!(stack
        .url
        .as_deref()
        .is_some_and(|u| u.starts_with("http://")));
    assert_eq!(stack.subnets.len(), 4, "the default VPC's four subnets");

    // v1 onto an empty stack.
    let out = deploy(&w, &spec, ROLLING, "v1").await;
    assert!(out.succeeded(), "{out:?}");
    let v1 = running(&w.clients).await;
    assert_eq!(v1.len(), 3);
    assert!(v1
        .iter()
        .all(|i| i.1 == "ami-0000000000000001" && i.2 == "v1"));
    assert_eq!(registered(&w, &spec, Side::Blue).await, ids_of(&v1));

    // Rolling to v2: every instance replaced, the old ones terminated, the target group holds
    // only the new ones.
    let out = deploy(&w, &spec, ROLLING, "v2").await;
    assert!(out.succeeded(), "{out:?}");
    let v2 = running(&w.clients).await;
    assert_eq!(v2.len(), 3, "old instances terminated: {v2:?}");
    assert!(v2
        .iter()
        .all(|i| i.1 == "ami-0000000000000002" && i.2 == "v2"));
    assert_eq!(registered(&w, &spec, Side::Blue).await, ids_of(&v2));
    let zones: std::collections::BTreeSet<_> = stack::status(&w.clients, &spec, &w.store)
        .await
        .expect("status")
        .instances
        .into_iter()
        .filter_map(|m| m.zone)
        .collect();
    assert!(zones.len() >= 2, "spread across zones: {zones:?}");

    // Blue-green to v3 through the listener's weights: green takes everything, blue stays warm.
    let out = deploy(&w, &spec, Strategy::BlueGreen, "v3").await;
    assert!(out.succeeded(), "{out:?}");
    assert_eq!(out.live, Side::Green);
    let status = stack::status(&w.clients, &spec, &w.store)
        .await
        .expect("status");
    assert_eq!(status.weights, (0, 1));
    assert_eq!(status.current.as_deref(), Some("v3"));
    let check = &status.groups[0].check;
    assert_eq!(
        (check.path.as_deref(), check.interval_s, check.timeout_s),
        (Some("/health"), Some(5), Some(2)),
        "the stack file's health check, read back"
    );
    assert_eq!(check.matcher.as_deref(), Some("200-299"));
    assert_eq!(check.deregistration_delay_s, Some(5));
    let v3: Vec<_> = running(&w.clients)
        .await
        .into_iter()
        .filter(|i| i.2 == "v3")
        .collect();
    assert_eq!(registered(&w, &spec, Side::Green).await, ids_of(&v3));
    assert_eq!(registered(&w, &spec, Side::Blue).await, ids_of(&v2), "warm");

    // The stack moves into an Auto Scaling group: replace-group to v4.
    let spec = spec_with_group();
    let stack = Stack::load(&spec, &w.store).expect("stack");
    let out = groups::replace(
        &w.clients,
        &spec,
        &stack,
        &w.store,
        "v4",
        &[],
        settings(Strategy::ReplaceGroup),
        GroupSize { min: 1, max: 6 },
        |e| eprintln!("  {:<9} {}", e.kind, e.detail),
    )
    .await
    .expect("replace-group");
    assert!(out.succeeded(), "{out:?}");
    let stack = Stack::load(&spec, &w.store).expect("stack");
    let v4 = running(&w.clients).await;
    assert_eq!(
        v4.len(),
        3,
        "everything before the group terminated: {v4:?}"
    );
    assert!(v4
        .iter()
        .all(|i| i.1 == "ami-0000000000000004" && i.2 == "v4"));
    // The new group came up on the other side, which is the live one now.
    assert_eq!(registered(&w, &spec, Side::Blue).await, ids_of(&v4));
    assert!(registered(&w, &spec, Side::Green).await.is_empty());
    let asgs = w
        .clients
        .asg
        .describe_auto_scaling_groups()
        .send()
        .await
        .expect("groups");
    assert_eq!(asgs.auto_scaling_groups().len(), 1);
    // The group owns the instances: no second set beside them.
    assert!(groups::check_strategy(&w.store, true, "blue-green").is_err());

    // Rolling inside the group to v5: each new instance joins the group, each old one leaves
    // it with the desired capacity decremented; at the end the group launches v5 too.
    groups::check_strategy(&w.store, true, "rolling").expect("rolling inside a group");
    let name = groups::recorded(&w.store).expect("groups")[0].id.clone();
    let ec2 = stack.ec2(&w.clients, &spec, &[]).expect("ec2");
    let in_group = groups::InGroup::new(&ec2, &w.clients, &name);
    in_group.allow(7).await.expect("room for the surge");
    let mut s = settings(ROLLING);
    s.groups = vec![name.clone()];
    let elb = stack.elb(&w.clients, &spec);
    let rollout = Rollout::begin(&in_group, &elb, &w.store, s, "v5", |e| {
        eprintln!("  {:<9} {}", e.kind, e.detail)
    })
    .expect("begin");
    let out = rollout.run().await.expect("rolling in the group");
    assert!(out.succeeded(), "{out:?}");
    let lt = stack.launch_template.clone().expect("launch template");
    in_group
        .adopt_release(&lt, Some("ami-0000000000000005"), "v5", 6)
        .await
        .expect("the group moves to v5");
    let v5 = running(&w.clients).await;
    assert_eq!(v5.len(), 3, "{v5:?}");
    assert!(v5
        .iter()
        .all(|i| i.1 == "ami-0000000000000005" && i.2 == "v5"));
    assert_eq!(registered(&w, &spec, Side::Blue).await, ids_of(&v5));
    let asgs = w
        .clients
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&name)
        .send()
        .await
        .expect("group");
    let g = &asgs.auto_scaling_groups()[0];
    let mut members: Vec<String> = g
        .instances()
        .iter()
        .filter_map(|i| i.instance_id().map(str::to_owned))
        .collect();
    members.sort();
    assert_eq!(
        members,
        ids_of(&v5),
        "the group holds exactly the new instances"
    );
    assert_eq!(g.desired_capacity(), Some(3));
    let lt_version = g
        .launch_template()
        .and_then(|t| t.version())
        .unwrap_or_default()
        .to_owned();
    let versions = w
        .clients
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&lt)
        .versions(&lt_version)
        .send()
        .await
        .expect("launch template versions");
    let image = versions.launch_template_versions()[0]
        .launch_template_data()
        .and_then(|d| d.image_id())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(image, "ami-0000000000000005");

    stack::destroy(&w.clients, &spec, &w.store, |l| eprintln!("{l}"))
        .await
        .expect("destroy");
    assert!(running(&w.clients).await.is_empty());
    let elb = &w.clients.elb;
    let lbs = elb.describe_load_balancers().send().await.expect("lbs");
    assert!(lbs.load_balancers().is_empty());
    let tgs = elb.describe_target_groups().send().await.expect("tgs");
    assert!(tgs.target_groups().is_empty());
    let asgs = w
        .clients
        .asg
        .describe_auto_scaling_groups()
        .send()
        .await
        .expect("groups");
    assert!(asgs.auto_scaling_groups().is_empty());
    let lts = w
        .clients
        .ec2
        .describe_launch_templates()
        .send()
        .await
        .expect("launch templates");
    assert!(lts.launch_templates().is_empty());
    assert!(w.store.resources().expect("resources").is_empty());
}

fn spec_with_group() -> Spec {
    spec(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_leaves_adopted_resources_alone() {
    let w = world().await;
    // Someone else's load balancer, listener and target groups.
    let elb = &w.clients.elb;
    let vpc = w
        .clients
        .ec2
        .describe_vpcs()
        .send()
        .await
        .expect("vpcs")
        .vpcs()[0]
        .vpc_id()
        .unwrap_or_default()
        .to_owned();
    let subnets: Vec<String> = w
        .clients
        .ec2
        .describe_subnets()
        .send()
        .await
        .expect("subnets")
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_id().map(str::to_owned))
        .collect();
    let lb = elb
        .create_load_balancer()
        .name("theirs")
        .set_subnets(Some(subnets))
        .send()
        .await
        .expect("lb");
    let lb_arn = lb.load_balancers()[0]
        .load_balancer_arn()
        .unwrap_or_default()
        .to_owned();
    let mut tgs = Vec::new();
    for name in ["theirs-a", "theirs-b"] {
        let tg = elb
            .create_target_group()
            .name(name)
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(8080)
            .vpc_id(&vpc)
            .send()
            .await
            .expect("tg");
        tgs.push(
            tg.target_groups()[0]
                .target_group_arn()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    let listener = elb
        .create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
        .port(80)
        .default_actions(
            aws_sdk_elasticloadbalancingv2::types::Action::builder()
                .r#type(aws_sdk_elasticloadbalancingv2::types::ActionTypeEnum::Forward)
                .target_group_arn(&tgs[0])
                .build(),
        )
        .send()
        .await
        .expect("listener");
    let listener_arn = listener.listeners()[0]
        .listener_arn()
        .unwrap_or_default()
        .to_owned();

    let mut spec = spec(false);
    if let Some(aws) = spec.aws.as_mut() {
        aws.adopt.listener_arn = Some(listener_arn.clone());
        aws.adopt.target_group_arns = tgs.clone();
    }
    stack::init(&w.clients, &spec, &w.store, |l| eprintln!("{l}"))
        .await
        .expect("init");
    let out = deploy(&w, &spec, ROLLING, "v1").await;
    assert!(out.succeeded(), "{out:?}");
    let status = stack::status(&w.clients, &spec, &w.store)
        .await
        .expect("status");
    assert_eq!(status.weights, (1, 0), "forwarding to both, blue weighted");
    assert_eq!(status.groups[0].targets.len(), 3);

    stack::destroy(&w.clients, &spec, &w.store, |l| eprintln!("{l}"))
        .await
        .expect("destroy");
    assert!(running(&w.clients).await.is_empty(), "our instances go");
    let lbs = elb.describe_load_balancers().send().await.expect("lbs");
    assert_eq!(lbs.load_balancers().len(), 1, "their load balancer stays");
    let left = elb.describe_target_groups().send().await.expect("tgs");
    assert_eq!(left.target_groups().len(), 2, "their target groups stay");
    let l = elb
        .describe_listeners()
        .listener_arns(&listener_arn)
        .send()
        .await
        .expect("their listener stays");
    assert_eq!(l.listeners().len(), 1);
}

/// Terminates the first instance of `version` that runs, from outside cutover, as an operator
/// or a spot reclaim would; its id, if one ran within a minute.
fn terminate_first_running(
    clients: &Clients,
    version: &'static str,
) -> tokio::task::JoinHandle<Option<String>> {
    let ec2 = clients.ec2.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while tokio::time::Instant::now() < deadline {
            let out = ec2
                .describe_instances()
                .filters(
                    Filter::builder()
                        .name("tag:cutover:version")
                        .values(version)
                        .build(),
                )
                .send()
                .await
                .expect("describe");
            let victim = out
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .find(|i| i.state().and_then(|s| s.name()) == Some(&InstanceStateName::Running))
                .and_then(|i| i.instance_id().map(str::to_owned));
            if let Some(id) = victim {
                ec2.terminate_instances()
                    .instance_ids(&id)
                    .send()
                    .await
                    .expect("terminate");
                return Some(id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    })
}

fn strategy_named(name: &str) -> Strategy {
    match name {
        "rolling" => ROLLING,
        "replace-group" => Strategy::ReplaceGroup,
        "blue-green" => Strategy::BlueGreen,
        other => panic!("no strategy {other} here"),
    }
}

/// The matrix's cases the emulator can stage (it runs no health checks and, here, no metrics:
/// canary's cases run through the CLI in `crates/e2e/tests/aws_canary.rs`), each ending as the
/// matrix says, as it does on the in-memory provider and on local processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_matrix_cases_the_emulator_can_stage_end_as_on_every_provider() {
    let w = world().await;
    let spec = spec(false);
    stack::init(&w.clients, &spec, &w.store, |_| {})
        .await
        .expect("init");
    assert!(deploy(&w, &spec, ROLLING, "v1").await.succeeded());
    let mut versions = ["v2", "v3", "v4", "v5", "v6", "v7"].into_iter();
    let mut failures = Vec::new();
    for name in ["rolling", "replace-group", "blue-green"] {
        for fault in [Fault::None, Fault::TerminatedOutside] {
            let expect = matrix::expect(name, fault).expect("a case of the matrix");
            let version = versions.next().expect("an image per case");
            let saboteur = (fault == Fault::TerminatedOutside)
                .then(|| terminate_first_running(&w.clients, version));
            let out = deploy(&w, &spec, strategy_named(name), version).await;
            if let Some(s) = saboteur {
                assert!(
                    s.await.expect("saboteur").is_some(),
                    "a {version} instance ran"
                );
            }
            if let Err(e) = expect.check(&out.progress) {
                failures.push(format!("{name} under {fault:?}: {e}"));
                continue;
            }
            let live = running(&w.clients).await;
            let serving: Vec<_> = live.iter().filter(|i| i.2 == version).collect();
            if serving.len() != 3 {
                failures.push(format!("{name} under {fault:?}: {live:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Where a listener forwards: (blue, green) weights by target group.
async fn forwards(w: &World, listener: &str, stack: &Stack) -> (i32, i32) {
    let out = w
        .clients
        .elb
        .describe_listeners()
        .listener_arns(listener)
        .send()
        .await
        .expect("describe listeners");
    let mut weights = (0, 0);
    for a in out.listeners().iter().flat_map(|l| l.default_actions()) {
        for t in a
            .forward_config()
            .map(|f| f.target_groups())
            .unwrap_or_default()
        {
            let weight = t.weight().unwrap_or(0);
            match t.target_group_arn() {
                Some(arn) if arn == stack.blue_arn => weights.0 = weight,
                Some(arn) if arn == stack.green_arn => weights.1 = weight,
                _ => {}
            }
        }
    }
    weights
}

/// Blue-green with a preview listener on AWS: `init` creates it, the deploy points it at the new
/// side alone once that is healthy and runs the check with all traffic still on the old side;
/// the flip waits for the check, and a failed check rolls back as the matrix says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_checks_the_new_side_through_a_preview_listener_before_the_flip() {
    let w = world().await;
    let mut spec = spec(false);
    if let Some(aws) = spec.aws.as_mut() {
        aws.preview_port = Some(8081);
    }
    stack::init(&w.clients, &spec, &w.store, |_| {})
        .await
        .expect("init");
    assert!(deploy(&w, &spec, ROLLING, "v1").await.succeeded());
    let stack = Stack::load(&spec, &w.store).expect("stack");
    let (preview, url) = stack
        .preview
        .clone()
        .expect("a preview listener was created");
    assert!(url.ends_with(":8081/"), "{url}");

    for (version, fault) in [("v2", Fault::None), ("v3", Fault::PreviewFails)] {
        let expect = matrix::expect("blue-green", fault).expect("a case of the matrix");
        let stack = Stack::load(&spec, &w.store).expect("stack");
        let ec2 = stack.ec2(&w.clients, &spec, &[]).expect("ec2");
        let elb = stack.elb(&w.clients, &spec);
        let live = cutover_rollout::live(&w.store, cutover_aws::LIVE_KEY).expect("live");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let (w2, stack2, preview2, seen2) = (&w, stack.clone(), preview.clone(), seen.clone());
        let rollout = Rollout::begin(
            &ec2,
            &elb,
            &w.store,
            settings(Strategy::BlueGreen),
            version,
            |e| eprintln!("  {:<9} {}", e.kind, e.detail),
        )
        .expect("begin")
        .with_preview_check(Box::new(move || {
            let (stack, preview, seen) = (stack2.clone(), preview2.clone(), seen2.clone());
            Box::pin(async move {
                let main = forwards(w2, &stack.listener_arn, &stack).await;
                let through = forwards(w2, &preview, &stack).await;
                *seen.lock().expect("lock") = Some((main, through));
                match fault {
                    Fault::PreviewFails => Err(
                        "20 of 20 requests through the preview listener failed, first: HTTP 503"
                            .into(),
                    ),
                    _ => Ok(()),
                }
            })
        }));
        let out = rollout.run().await.expect("an outcome");
        if let Err(e) = expect.check(&out.progress) {
            panic!("blue-green under {fault:?}: {e}");
        }
        let (main, through) = seen.lock().expect("lock").expect("the check ran");
        let old = live.blue_green(1, 0);
        let new = live.other().blue_green(1, 0);
        assert_eq!(main, old, "all traffic on the old side while checking");
        assert_eq!(through, new, "the preview reaches the new side alone");
    }
    // The failed check left the traffic on v2, the release before it.
    assert_eq!(
        w.store.current_release().expect("current").as_deref(),
        Some("v2")
    );
    stack::destroy(&w.clients, &spec, &w.store, |_| {})
        .await
        .expect("destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_terminated_from_outside_mid_deploy_is_replaced_and_the_deploy_goes_on() {
    let w = world().await;
    let spec = spec(false);
    stack::init(&w.clients, &spec, &w.store, |_| {})
        .await
        .expect("init");
    assert!(deploy(&w, &spec, ROLLING, "v1").await.succeeded());
    let v1 = ids_of(&running(&w.clients).await);

    // Someone terminates the first v2 instance as soon as it runs.
    let saboteur = terminate_first_running(&w.clients, "v2");
    let out = deploy(&w, &spec, ROLLING, "v2").await;
    let victim = saboteur
        .await
        .expect("saboteur")
        .expect("a v2 instance ran");
    // Someone else's doing says nothing about the release: replaced, and the deploy goes on.
    assert!(out.succeeded(), "{out:?}");
    let after = running(&w.clients).await;
    assert!(after.iter().all(|i| i.2 == "v2"), "only v2 left: {after:?}");
    assert_eq!(after.len(), 3);
    assert!(!ids_of(&after).contains(&victim), "{victim} is gone");
    assert!(ids_of(&after).iter().all(|id| !v1.contains(id)));
    assert_eq!(registered(&w, &spec, Side::Blue).await, ids_of(&after));
    assert_eq!(
        w.store.current_release().expect("current").as_deref(),
        Some("v2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_group_is_rolled_inside_and_kept_by_destroy() {
    let w = world().await;
    // Someone's group of two, from their own launch template.
    let lt = w
        .clients
        .ec2
        .create_launch_template()
        .launch_template_name("legacy")
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id("ami-0000000000000001")
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
                .build(),
        )
        .send()
        .await
        .expect("launch template");
    let lt_id = lt
        .launch_template()
        .and_then(|t| t.launch_template_id())
        .unwrap_or_default()
        .to_owned();
    w.clients
        .asg
        .create_auto_scaling_group()
        .auto_scaling_group_name("legacy")
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_id(&lt_id)
                .version("$Latest")
                .build(),
        )
        .min_size(1)
        .max_size(4)
        .desired_capacity(2)
        .availability_zones("us-west-2a")
        .send()
        .await
        .expect("their group");
    let theirs = groups::member_ids(&w.clients, "legacy")
        .await
        .expect("members");
    assert_eq!(theirs.len(), 2);

    let mut spec = spec(false);
    if let Some(aws) = spec.aws.as_mut() {
        aws.adopt.auto_scaling_group = Some("legacy".into());
        aws.auto_scaling = true;
    }
    spec.group.desired = 2;
    stack::init(&w.clients, &spec, &w.store, |l| eprintln!("{l}"))
        .await
        .expect("init");
    let mut ids = theirs.clone();
    ids.sort();
    assert_eq!(
        registered(&w, &spec, Side::Blue).await,
        ids,
        "attached to blue"
    );
    assert_eq!(
        w.store.current_release().expect("current").as_deref(),
        Some("v1")
    );

    let stack = Stack::load(&spec, &w.store).expect("stack");
    let ec2 = stack.ec2(&w.clients, &spec, &[]).expect("ec2");
    let in_group = groups::InGroup::new(&ec2, &w.clients, "legacy");
    in_group.allow(5).await.expect("room");
    let mut s = settings(ROLLING);
    s.desired = 2;
    s.groups = vec!["legacy".into()];
    let elb = stack.elb(&w.clients, &spec);
    let rollout = Rollout::begin(&in_group, &elb, &w.store, s, "v2", |e| {
        eprintln!("  {:<9} {}", e.kind, e.detail)
    })
    .expect("begin");
    let out = rollout.run().await.expect("rolling in their group");
    assert!(out.succeeded(), "{out:?}");
    let v2 = running(&w.clients).await;
    assert_eq!(v2.len(), 2, "{v2:?}");
    assert!(v2.iter().all(|i| i.2 == "v2"));
    let mut members = groups::member_ids(&w.clients, "legacy")
        .await
        .expect("members");
    members.sort();
    assert_eq!(members, ids_of(&v2));

    stack::destroy(&w.clients, &spec, &w.store, |l| eprintln!("{l}"))
        .await
        .expect("destroy");
    let after = groups::member_ids(&w.clients, "legacy")
        .await
        .expect("members");
    assert_eq!(after.len(), 2, "their group and its instances stay");
    assert_eq!(running(&w.clients).await.len(), 2);
}
