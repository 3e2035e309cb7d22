//! Stack file tests: defaults, round trips, and located, complete error reports.

use std::path::Path;
use std::time::Duration;

use cutover_spec::{parse, Pause, PolicyKind, SpecError, Strategy, Threshold, TryTimeout};

fn ok(text: &str) -> cutover_spec::Spec {
    match parse(text, Path::new("cutover.toml"), Path::new("/srv")) {
        Ok(spec) => spec,
        Err(e) => panic!("expected a valid file, got:\n{e}"),
    }
}

fn problems(text: &str) -> Vec<String> {
    match parse(text, Path::new("cutover.toml"), Path::new("/srv")) {
        Ok(spec) => panic!("expected errors, got {spec:?}"),
        Err(e @ SpecError::Invalid { .. }) => e.to_string().lines().map(str::to_owned).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

const MINIMAL: &str =
    "[service]\nname = \"web\"\n[release]\ncommand = \"demo-app --port {port}\"\n";

const FULL: &str = r#"
[service]
name = "shop"
[release]
version = "2.1.0"
command = "/opt/shop/bin/shop --port {port} --id {instance} --v {version}"
env = { RUST_LOG = "debug", MODE = "prod" }
user = "shop"
stop_signal = "SIGINT"
stop_timeout = "20s"
artifact = "s3://releases/shop-{version}.tar.gz"
sha256 = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
[health]
path = "/healthz"
interval = "5s"
timeout = "2s"
healthy_threshold = 3
unhealthy_threshold = 4
matcher = "200,301-302"
fail_open = false
[group]
min = 2
desired = 3
max = 6
[listener]
bind = "0.0.0.0:8443"
tls = { cert = "certs/cert.pem", key = "/etc/key.pem" }
redirect_http = "0.0.0.0:8080"
preview = "127.0.0.1:8444"
request_headers = { "x-forwarded-proto" = "https" }
response_headers = { "strict-transport-security" = "max-age=63072000" }
add_request_headers = { "x-trace" = "lb" }
add_response_headers = { "via" = "cutover" }
remove_response_headers = ["server"]
workers = 4
try_timeout = "300ms"
retry_budget = 10
pin_workers = true
[deploy]
strategy = "canary"
max_surge = 2
max_unavailable = 1
drain_timeout = "45s"
progress_deadline = "3m"
auto_rollback = false
rollback_window = "15m"
steps = [{ instances = 1 }, { weight = 10, pause = "1m" }, { weight = 50, pause = "90s" }, { pause = {} }]
[deploy.analysis]
min_requests = 500
max_error_rate = 0.02
max_error_rate_ratio = 3.0
max_p99 = "750ms"
max_p99_ratio = 2.0
[autoscale]
scale_out_cooldown = "30s"
scale_in_cooldown = "2m"
[[autoscale.policies]]
kind = "step"
period = "1m"
periods = 2
steps = [{ above = 40, change = 1 }, { below = 20, change = -1 }]
[[autoscale.policies]]
kind = "target-tracking"
target = 30.5
[[autoscale.policies]]
kind = "cpu"
scale_out_above = 90
scale_in_below = 70
periods = 5
"#;

const AWS: &str = r##"
[service]
name = "web"
[release]
version = "v1"
[health]
interval = "10s"
timeout = "5s"
[deploy]
drain_timeout = "20s"
[aws]
region = "us-west-2"
vpc = "vpc-0abc"
subnets = ["subnet-01", "subnet-02"]
instance_type = "c7g.large"
security_groups = ["sg-0f"]
key_name = "ops"
instance_profile = "web-role"
user_data = "#!/bin/sh\nstart web\n"
port = 9000
listener_port = 8080
preview_port = 8081
auto_scaling = true
tags = { team = "storefront" }
images = { v1 = "ami-0001", "2.0" = "ami-0002" }
[aws.adopt]
listener_arn = "arn:aws:elasticloadbalancing:us-west-2:1:listener/app/web/1/2"
target_group_arns = ["arn:aws:tg/blue", "arn:aws:tg/green"]
auto_scaling_group = "web-asg"
"##;

#[test]
fn minimal_file_gets_one_host_defaults() {
    let spec = ok(MINIMAL);
    assert_eq!(spec.service, "web");
    assert_eq!(spec.release.version, "v1");
    assert_eq!(spec.health.path, "/health");
    assert_eq!(spec.health.interval, Duration::from_secs(2));
    assert_eq!(spec.health.timeout, Duration::from_secs(1));
    assert_eq!(
        (
            spec.health.healthy_threshold,
            spec.health.unhealthy_threshold
        ),
        (2, 2)
    );
    assert!(
        spec.health.matcher.matches(200)
            && spec.health.matcher.matches(299)
            && !spec.health.matcher.matches(300)
    );
    assert_eq!(
        (spec.group.min, spec.group.desired, spec.group.max),
        (1, 2, 4)
    );
    assert_eq!(spec.listener.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(spec.listener.workers, None, "one worker per CPU");
    assert_eq!(spec.listener.try_timeout, TryTimeout::Auto);
    assert_eq!(spec.listener.retry_budget, 20);
    assert!(!spec.listener.pin_workers);
    assert_eq!(spec.deploy.strategy, Strategy::Rolling);
    assert_eq!((spec.deploy.max_surge, spec.deploy.max_unavailable), (1, 0));
    assert!(spec.deploy.auto_rollback);
    assert!(spec.autoscale.is_none());
}

#[test]
fn every_field_is_read() {
    let spec = ok(FULL);
    assert_eq!(spec.release.env["MODE"], "prod");
    assert_eq!(spec.release.user.as_deref(), Some("shop"));
    assert_eq!(spec.release.stop_signal.name(), "SIGINT");
    assert_eq!(
        spec.release
            .sha256
            .as_deref()
            .map(|s| s.starts_with("abcdef")),
        Some(true)
    );
    assert!(spec.health.matcher.matches(301) && !spec.health.matcher.matches(200 + 1));
    assert!(!spec.health.fail_open);
    assert_eq!(
        spec.listener.try_timeout,
        TryTimeout::After(Duration::from_millis(300))
    );
    assert_eq!(spec.listener.retry_budget, 10);
    let tls = spec.listener.tls.as_ref().expect("tls");
    assert_eq!(tls.cert, Path::new("/srv/certs/cert.pem"));
    assert_eq!(tls.key, Path::new("/etc/key.pem"));
    assert_eq!(spec.listener.remove_response_headers, vec!["server"]);
    assert_eq!(spec.listener.workers, Some(4));
    assert!(spec.listener.pin_workers);
    assert_eq!(spec.deploy.strategy, Strategy::Canary);
    assert_eq!(spec.deploy.steps.len(), 4);
    assert_eq!(spec.deploy.steps[0].instances, Some(1));
    assert_eq!(
        spec.deploy.steps[2].pause,
        Pause::For(Duration::from_secs(90))
    );
    assert_eq!(spec.deploy.steps[3].pause, Pause::UntilPromoted);
    assert_eq!(spec.deploy.analysis.max_p99, Duration::from_millis(750));
    let autoscale = spec.autoscale.as_ref().expect("autoscale");
    assert_eq!(autoscale.policies.len(), 3);
    match &autoscale.policies[0].kind {
        PolicyKind::Step { steps } => assert_eq!(steps[1].threshold, Threshold::Below(20.0)),
        other => panic!("expected a step policy, got {other:?}"),
    }
    assert_eq!(autoscale.policies[2].periods, 5);
}

#[test]
fn every_field_round_trips() {
    for text in [MINIMAL, FULL, AWS] {
        let spec = ok(text);
        let rendered = spec.to_toml();
        let again = ok(&rendered);
        assert_eq!(
            spec, again,
            "round trip changed the spec; rendered:\n{rendered}"
        );
    }
}

#[test]
fn an_aws_stack_needs_no_command_and_reads_every_field() {
    let spec = ok(AWS);
    assert!(spec.release.command.is_empty());
    let aws = spec.aws.expect("aws");
    assert_eq!(aws.region.as_deref(), Some("us-west-2"));
    assert_eq!(aws.subnets, ["subnet-01", "subnet-02"]);
    assert_eq!(aws.instance_type, "c7g.large");
    assert_eq!((aws.port, aws.listener_port), (9000, 8080));
    assert_eq!(aws.preview_port, Some(8081));
    assert!(aws.auto_scaling);
    assert_eq!(aws.images["2.0"], "ami-0002");
    assert_eq!(aws.adopt.target_group_arns.len(), 2);
    assert_eq!(aws.instance_profile.as_deref(), Some("web-role"));
    assert_eq!(aws.adopt.auto_scaling_group.as_deref(), Some("web-asg"));
}

#[test]
fn aws_rules_name_the_key() {
    let found = problems(
        r#"
[service]
name = "web"
[health]
interval = "2s"
[aws]
subnets = ["net-1"]
images = { v1 = "image-1" }
preview_port = 80
[aws.adopt]
target_group_arns = ["arn:aws:tg/blue"]
"#,
    );
    let text = found.join("\n");
    for needle in [
        "health.interval: on AWS must be whole seconds from 5s to 300s",
        "health.timeout: on AWS must be whole seconds from 2s to 120s",
        "aws.subnets[0]: `net-1` is not an ID",
        "aws.images.v1: `image-1` is not an ID",
        "aws.adopt.target_group_arns: expected two target groups",
        "aws.adopt.listener_arn: is required",
        "aws.preview_port: 80 is the listener's own port",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    assert!(
        !text.contains("release.command"),
        "an AWS stack needs no command:\n{text}"
    );
}

#[test]
fn the_aws_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/aws.toml");
    let spec = cutover_spec::load(&path).expect("examples/aws.toml is valid");
    assert_eq!(spec.aws.expect("aws").images.len(), 2);
}

#[test]
fn the_documented_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/cutover.toml");
    let spec = cutover_spec::load(&path).expect("examples/cutover.toml is valid");
    assert_eq!(spec.service, "web");
}

#[test]
fn three_mistakes_are_all_reported_with_line_and_column() {
    let text = "[service]\nname = \"web\"\n[release]\ncommand = \"app {port}\"\n[group]\nmin = 1\ndesired = \"two\"\n[health]\ninterval = \"2 parsecs\"\n[deploy]\nstrategy = \"yolo\"\n";
    let found = problems(text);
    assert_eq!(found.len(), 3, "{found:#?}");
    // A wrong type points at the value; a rule broken points at the key.
    assert_eq!(
        found[0],
        "cutover.toml:7:11: group.desired: invalid type: string \"two\", expected a whole number"
    );
    assert!(
        found[1].starts_with(
            "cutover.toml:9:1: health.interval: `2 parsecs` is not a duration such as \"2s\""
        ),
        "{}",
        found[1]
    );
    assert_eq!(found[2], "cutover.toml:11:1: deploy.strategy: `yolo` is not one of rolling, replace-group, blue-green, canary");
}

#[test]
fn unknown_keys_are_refused_by_name_everywhere() {
    let text = "[service]\nname = \"web\"\ncolour = \"blue\"\n[release]\ncommand = \"app\"\n[listener]\nbind = \"127.0.0.1:80\"\nbacklog = 5\n[deploy]\nsteps = [{ weight = 10, wait = \"1m\" }]\n[extra]\nx = 1\n";
    let found = problems(text);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(
        found[0].starts_with("cutover.toml:3:1: service.colour: unknown field `colour`"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("cutover.toml:8:1: listener.backlog: unknown field `backlog`"),
        "{}",
        found[1]
    );
    assert!(
        found[2].starts_with("cutover.toml:10:25: deploy.steps[0].wait: unknown field `wait`"),
        "{}",
        found[2]
    );
    assert!(
        found[3].starts_with("cutover.toml:11:2: extra: unknown field `extra`"),
        "{}",
        found[3]
    );
}

#[test]
fn semantic_rules_name_the_key() {
    let text = "[service]\nname = \"web\"\n[release]\ncommand = \"app --p {prot}\"\n[group]\nmin = 3\ndesired = 2\nmax = 1\n[health]\ninterval = \"1s\"\ntimeout = \"1s\"\nmatcher = \"200-1000\"\n[deploy]\nmax_surge = 0\nsteps = [{ weight = 150 }, {}]\n[listener]\nworkers = 0\ntry_timeout = \"soon\"\nretry_budget = 120\n";
    let found = problems(text).join("\n");
    for expected in [
        "cutover.toml:4:1: release.command: unknown placeholder `{prot}`",
        "cutover.toml:6:1: group.min: min (3) is above max (1)",
        "cutover.toml:7:1: group.desired: desired (2) must lie between min (3) and max (1)",
        "cutover.toml:11:1: health.timeout: must be shorter than health.interval",
        "cutover.toml:12:1: health.matcher:",
        "cutover.toml:14:1: deploy.max_surge: max_surge and max_unavailable cannot both be 0",
        "deploy.steps[0].weight: expected a percentage 0-100, found 150",
        "deploy.steps[1]: a step needs instances, weight or pause",
        "cutover.toml:17:1: listener.workers: expected 1 to 1024, got 0",
        "cutover.toml:18:1: listener.try_timeout: expected \"auto\", \"off\" or a duration",
        "cutover.toml:19:1: listener.retry_budget: expected a percentage from 0 to 100, got 120",
    ] {
        assert!(
            found.contains(expected),
            "missing {expected:?} in:\n{found}"
        );
    }
}

#[test]
fn missing_required_fields_point_at_their_section() {
    let found = problems("[service]\n[release]\nversion = \"v2\"\n");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("cutover.toml:1:1: service.name: is required"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with("cutover.toml:2:1: release.command: is required"),
        "{}",
        found[1]
    );
}

#[test]
fn syntax_errors_are_located() {
    let found = problems("[service]\nname = \"web\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("cutover.toml:2:"), "{}", found[0]);
    assert!(found[0].contains("not valid TOML"), "{}", found[0]);
}

#[test]
fn a_type_error_is_not_reported_twice() {
    let found = problems("[service]\nname = 5\n[release]\ncommand = \"app\"\n");
    assert_eq!(
        found,
        vec!["cutover.toml:2:8: service.name: invalid type: integer `5`, expected a string"]
    );
}

#[test]
fn static_targets_make_the_command_optional() {
    let spec =
        ok("targets = [\"127.0.0.1:9001\", \"db.internal:80\"]\n[service]\nname = \"legacy\"\n");
    assert_eq!(spec.targets.len(), 2);
    let found = problems("targets = [\"127.0.0.1\"]\n[service]\nname = \"legacy\"\n");
    assert!(
        found[0].contains("targets[0]: `127.0.0.1` is not a target"),
        "{}",
        found[0]
    );
}
