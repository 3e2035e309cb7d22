//! `cutover aws init|status|deploy|destroy`: the stack file's `[aws]` section run on EC2, ELBv2
//! and Auto Scaling. The state (what was created, releases, deployments) is in the data dir's
//! store, as on one host.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use cutover_aws::groups::{self, GroupSize};
use cutover_aws::Ask;
use cutover_aws::Event;
use cutover_aws::{lease, Request};
use cutover_aws::{stack, AwsError, Clients, Rollout, Settings, Stack};
use cutover_deploy::{Progress, Promote, Rolling, Strategy};
use cutover_spec::Spec;
use cutover_store::Store;
use serde_json::json;

use super::up::data_dir;
use super::{parse_duration, EXIT_INVALID};

/// A deploy that stopped at a paused canary step: in progress, awaiting a human.

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Create the stack's load balancer, listener, target groups and launch template (or adopt
    /// existing ones named in [aws.adopt]); prints the load balancer's URL.
    Init(Common),
    /// The load balancer, both target groups with each target's health and reason, instances.
    Status(Common),
    /// Deploy VERSION on AWS with the stack file's strategy (or --strategy); exits 0 only when
    /// every instance runs it and is healthy, 1 with the reason when it rolled back, 3 when a
    /// canary step paused it (inconclusive, or waiting to be promoted).
    Deploy(DeployArgs),
    /// Back to the previous release: a listener flip while blue-green keeps it warm, else a
    /// rolling deploy of it.
    Rollback(Common),
    /// Move a paused canary on to its next step (or, with --full, past every step), and run it
    /// from there: exits as `deploy` does.
    Promote(PromoteArgs),
    /// Roll the deployment in progress back: what it launched goes, the old version keeps or
    /// regains all traffic.
    Abort(PickUp),
    /// Run the deployment in progress on from where its record says it is (after the process
    /// running it stopped, or after `pause`); a step waiting for `promote` waits again.
    Resume(PickUp),
    /// Ask the canary in progress to hold at its current step: the process running it stops
    /// there (and exits 3); `promote` goes on from it.
    Pause(PickUp),
    /// The stack's deployments, oldest first, with each canary step's verdict.
    History(Common),
    /// Delete everything `init` and deploys created, and nothing adopted.
    Destroy(Common),
}

#[derive(clap::Args, Debug)]
pub struct Common {
    /// The stack file.
    #[arg(short = 'f', long = "file", default_value = "cutover.toml")]
    pub file: PathBuf,
    /// Where the stack's state is kept (default: `.cutover/` beside the stack file).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Talk to this endpoint instead of AWS's (an emulator); also `AWS_ENDPOINT_URL`.
    #[arg(long)]
    pub endpoint_url: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    #[arg(value_parser = super::parse_version)]
    pub version: String,
    #[command(flatten)]
    pub common: Common,
    /// rolling, replace-group or blue-green (default: the stack file's).
    #[arg(long)]
    pub strategy: Option<String>,
    /// The image for VERSION, over the stack file's [aws.images].
    #[arg(long)]
    pub image: Option<String>,
    /// How often to ask AWS how the deploy stands.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub poll: Duration,
    /// The period of the CloudWatch statistics a canary step is judged on (ALB metrics are
    /// per minute).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub metric_period: Duration,
}

/// The deployment in progress, picked up from the store by another process.
#[derive(clap::Args, Debug)]
pub struct PickUp {
    #[command(flatten)]
    pub common: Common,
    /// How often to ask AWS how the deploy stands.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub poll: Duration,
    /// The period of the CloudWatch statistics a canary step is judged on.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub metric_period: Duration,
}

#[derive(clap::Args, Debug)]
pub struct PromoteArgs {
    #[command(flatten)]
    pub pick_up: PickUp,
    /// Skip every remaining step: the new version takes the whole fleet.
    #[arg(long)]
    pub full: bool,
}

/// A failure: the message, and whether it was the input's fault (exit 2) or not (exit 1).
struct Failure(String, bool);

impl From<AwsError> for Failure {
    fn from(e: AwsError) -> Self {
        let invalid = matches!(e, AwsError::Invalid(_) | AwsError::NotInitialized(_));
        Failure(e.to_string(), invalid)
    }
}

impl From<cutover_store::StoreError> for Failure {
    fn from(e: cutover_store::StoreError) -> Self {
        Failure(e.to_string(), false)
    }
}

pub fn run(cmd: Command) -> ExitCode {
    let json = match &cmd {
        Command::Init(c)
        | Command::Status(c)
        | Command::Destroy(c)
        | Command::Rollback(c)
        | Command::History(c) => c.json,
        Command::Deploy(d) => d.common.json,
        Command::Promote(p) => p.pick_up.common.json,
        Command::Abort(p) | Command::Resume(p) | Command::Pause(p) => p.common.json,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cmd)) {
        Ok(code) => code,
        Err(Failure(message, invalid)) => {
            if json {
                println!("{}", json!({ "ok": false, "error": message }));
            } else {
                eprintln!("error: {message}");
            }
            if invalid {
                ExitCode::from(EXIT_INVALID)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The stack file (which must have `[aws]`), its store, and clients for its region.
async fn open(c: &Common) -> Result<(Spec, Store, Clients), Failure> {
    let spec = cutover_spec::load(&c.file).map_err(|e| Failure(e.to_string(), true))?;
    let aws = stack::section(&spec)?;
    let dir = data_dir(&c.file, c.data_dir.clone());
    std::fs::create_dir_all(&dir).map_err(|e| Failure(format!("{}: {e}", dir.display()), false))?;
    let store = Store::open(&dir.join("state.db"))?;
    let clients = Clients::connect(aws.region.as_deref(), c.endpoint_url.as_deref()).await;
    Ok((spec, store, clients))
}

async fn dispatch(cmd: Command) -> Result<ExitCode, Failure> {
    match cmd {
        Command::Init(c) => {
            let (spec, store, clients) = open(&c).await?;
            let quiet = c.json;
            let stack = stack::init(&clients, &spec, &store, |line| {
                if !quiet {
                    eprintln!("  {line}");
                }
            })
            .await?;
            if c.json {
                println!(
                    "{}",
                    json!({ "ok": true, "url": stack.url, "listener": stack.listener_arn,
                            "target_groups": { "blue": stack.blue_arn, "green": stack.green_arn },
                            "resources": stack.resources })
                );
            } else {
                println!(
                    "stack `{}` is ready{}",
                    spec.service,
                    stack
                        .url
                        .as_deref()
                        .map(|u| format!(" at {u}"))
                        .unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(c) => {
            let (spec, store, clients) = open(&c).await?;
            let status = stack::status(&clients, &spec, &store).await?;
            if c.json {
                println!("{}", json!(status));
            } else {
                print_status(&status);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Destroy(c) => {
            let (spec, store, clients) = open(&c).await?;
            let quiet = c.json;
            stack::destroy(&clients, &spec, &store, |line| {
                if !quiet {
                    eprintln!("  {line}");
                }
            })
            .await?;
            if c.json {
                println!("{}", json!({ "ok": true }));
            } else {
                println!("stack `{}` destroyed", spec.service);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Deploy(d) => deploy(d).await,
        Command::Rollback(c) => rollback(c).await,
        Command::Promote(p) => {
            let promote = if p.full { Promote::Full } else { Promote::Next };
            pick_up(p.pick_up, Ask::Promote(promote)).await
        }
        Command::Abort(p) => pick_up(p, Ask::Abort).await,
        Command::Resume(p) => pick_up(p, Ask::Continue).await,
        Command::Pause(p) => pause(p).await,
        Command::History(c) => history(c).await,
    }
}

fn strategy(spec: &Spec, name: Option<&str>) -> Result<Strategy, Failure> {
    use cutover_spec::Strategy as Named;
    let named = match name {
        None => spec.deploy.strategy,
        Some(n) => Named::parse(n).ok_or_else(|| {
            Failure(
                format!(
                    "unknown strategy `{n}`: expected rolling, replace-group, blue-green or canary"
                ),
                true,
            )
        })?,
    };
    Ok(match named {
        Named::Rolling => Strategy::Rolling(Rolling {
            max_surge: spec.deploy.max_surge,
            max_unavailable: spec.deploy.max_unavailable,
        }),
        Named::ReplaceGroup => Strategy::ReplaceGroup,
        Named::BlueGreen => Strategy::BlueGreen,
        Named::Canary if spec.deploy.steps.is_empty() => {
            return Err(Failure(
                "a canary needs steps: deploy.steps in the stack file is empty".into(),
                true,
            ))
        }
        // Each step is judged on the target groups' CloudWatch numbers; a step without a pause
        // of its own waits up to the progress deadline for a verdict.
        Named::Canary => Strategy::Canary(cutover_deploy::Canary {
            steps: spec.deploy.steps.clone(),
            window: spec.deploy.progress_deadline,
        }),
    })
}

/// Store key of the image a release was deployed with when `--image` named it, so that a
/// deployment picked up by another process launches the same one.
fn image_key(version: &str) -> String {
    format!("aws.image.{version}")
}

/// Whether the stack's deploys run on plain EC2 instances (the ones a process can pick up).
fn plain_ec2(store: &Store, aws: &cutover_spec::Aws) -> Result<bool, Failure> {
    Ok(!aws.auto_scaling && groups::recorded(store)?.is_empty())
}

/// The release a deployment started from, as messages name it.
fn from_name(row: &cutover_store::DeploymentRow) -> &str {
    if row.from_version.is_empty() {
        "nothing"
    } else {
        &row.from_version
    }
}

/// Why a new deploy must wait: the one in progress, who runs it, and how to end it.
fn busy(store: &Store, row: &cutover_store::DeploymentRow) -> Failure {
    let runner = match lease::holder(store, row.id) {
        Ok(Some(l)) => format!(" (run by {})", l.describe()),
        _ => String::new(),
    };
    let state = match &row.progress {
        p @ Progress::Paused { .. } => p.to_string(),
        Progress::Aborting { reason } => format!("rolling back{runner}: {reason}"),
        _ if !runner.is_empty() => format!("started {}{runner}", row.started_at),
        _ => format!(
            "started {} and not ended (its process stopped mid-way)",
            row.started_at
        ),
    };
    Failure(
        format!(
            "deployment {} ({} → {}, {}) is in progress, {state}; `cutover aws promote`, \
             `cutover aws abort` or `cutover aws resume` ends it first",
            row.id,
            from_name(row),
            row.to_version,
            row.strategy
        ),
        true,
    )
}

async fn pick_up(p: PickUp, ask: Ask) -> Result<ExitCode, Failure> {
    let (spec, store, clients) = open(&p.common).await?;
    let aws = stack::section(&spec)?;
    let Some(row) = cutover_aws::in_progress(&store)? else {
        return Err(Failure(
            "no deployment is in progress: nothing to promote, abort or resume".into(),
            true,
        ));
    };
    if !plain_ec2(&store, aws)? {
        return Err(Failure(
            format!(
                "deployment {} runs in an Auto Scaling group, which `promote`, `abort` and \
                 `resume` do not pick up: `cutover aws deploy --strategy replace-group` again",
                row.id
            ),
            true,
        ));
    }
    if matches!(ask, Ask::Promote(_)) && row.strategy != "canary" {
        return Err(Failure(
            format!(
                "deployment {} uses the {} strategy; only a canary has steps to promote",
                row.id, row.strategy
            ),
            true,
        ));
    }
    // Running in another process: it is asked, and acts on its next look.
    if let Some(runner) = lease::holder(&store, row.id)?.filter(|l| !l.is_ours()) {
        let (request, what) = match ask {
            Ask::Continue => {
                return Err(Failure(
                    format!(
                        "deployment {} is running (by {}): nothing to resume",
                        row.id,
                        runner.describe()
                    ),
                    true,
                ))
            }
            Ask::Promote(p) => (
                Request::Promote {
                    full: p == Promote::Full,
                },
                "promote",
            ),
            Ask::Abort => (Request::Abort, "abort"),
        };
        lease::ask(&store, row.id, request)?;
        if p.common.json {
            println!(
                "{}",
                json!({ "ok": true, "deployment": row.id, "asked": request, "runner": runner })
            );
        } else {
            println!(
                "asked deployment {} ({}) to {what}; the process running it acts on its next look",
                row.id,
                runner.describe()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let strategy = strategy(&spec, Some(&row.strategy))?;
    let stack = Stack::load(&spec, &store)?;
    let extra: Vec<(String, String)> = store
        .meta(&image_key(&row.to_version))?
        .map(|image| (row.to_version.clone(), image))
        .into_iter()
        .collect();
    let json = p.common.json;
    let print = |e: &Event| {
        if !json {
            eprintln!("  {:<9} {}", e.kind, e.detail);
        }
    };
    let ec2 = stack.ec2(&clients, &spec, &extra)?;
    let mut elb = stack.elb(&clients, &spec);
    if let Some(m) = elb.metrics.as_mut() {
        m.period = p.metric_period;
    }
    let settings = Settings {
        strategy,
        desired: store.desired()?.unwrap_or(spec.group.desired),
        progress_deadline: spec.deploy.progress_deadline,
        drain_timeout: spec.deploy.drain_timeout,
        poll: p.poll,
        groups: Vec::new(),
        live_key: cutover_aws::LIVE_KEY,
        analysis: spec.deploy.analysis.clone(),
    };
    let rollout = Rollout::resume(&ec2, &elb, &store, settings, ask, print)?
        .ok_or_else(|| Failure("the deployment ended meanwhile".into(), true))?;
    let rollout = match &stack.preview {
        Some((_, url)) => rollout.with_preview_check(crate::preview::at(url.clone())),
        None => rollout,
    };
    let outcome = rollout.run().await?;
    Ok(report(&outcome, json))
}

async fn deploy(d: DeployArgs) -> Result<ExitCode, Failure> {
    let (spec, store, clients) = open(&d.common).await?;
    let aws = stack::section(&spec)?;
    if plain_ec2(&store, aws)? {
        if let Some(row) = cutover_aws::in_progress(&store)? {
            return Err(busy(&store, &row));
        }
    }
    let strategy = strategy(&spec, d.strategy.as_deref())?;
    groups::check_strategy(&store, aws.auto_scaling, strategy.name())?;
    let stack = Stack::load(&spec, &store)?;
    let extra: Vec<(String, String)> = d
        .image
        .iter()
        .map(|i| (d.version.clone(), i.clone()))
        .collect();
    let json = d.common.json;
    let print = |e: &Event| {
        if !json {
            eprintln!("  {:<9} {}", e.kind, e.detail);
        }
    };
    let ec2 = stack.ec2(&clients, &spec, &extra)?;
    // Refused before anything changes: a version with no image to run.
    let image = ec2.image(&d.version)?.map(str::to_owned);
    if let Some(image) = &d.image {
        store.set_meta(&image_key(&d.version), image)?;
    }
    let mut elb = stack.elb(&clients, &spec);
    if let Some(m) = elb.metrics.as_mut() {
        m.period = d.metric_period;
    }
    let group = groups::recorded(&store)?.pop();
    let settings = Settings {
        strategy: strategy.clone(),
        desired: store.desired()?.unwrap_or(spec.group.desired),
        progress_deadline: spec.deploy.progress_deadline,
        drain_timeout: spec.deploy.drain_timeout,
        poll: d.poll,
        groups: group.iter().map(|g| g.id.clone()).collect(),
        live_key: cutover_aws::LIVE_KEY,
        analysis: spec.deploy.analysis.clone(),
    };
    let outcome = match (&group, strategy) {
        // A group stack's first deploy creates its group; so does every replace-group.
        (_, Strategy::ReplaceGroup) | (None, _) if aws.auto_scaling => {
            let size = GroupSize {
                min: spec.group.min,
                max: spec.group.max,
            };
            let settings = Settings {
                strategy: Strategy::ReplaceGroup,
                ..settings
            };
            groups::replace(
                &clients, &spec, &stack, &store, &d.version, &extra, settings, size, print,
            )
            .await?
        }
        (Some(g), Strategy::Rolling(r)) => {
            let in_group = groups::InGroup::new(&ec2, &clients, &g.id);
            let max = spec.group.max.max(settings.desired);
            in_group.allow(max + r.max_surge).await?;
            let rollout = Rollout::begin(&in_group, &elb, &store, settings, &d.version, print)?;
            let outcome = rollout.run().await?;
            let lt = stack.launch_template.as_deref().unwrap_or_default();
            if outcome.succeeded() {
                in_group
                    .adopt_release(lt, image.as_deref(), &d.version, max)
                    .await?;
            } else {
                in_group.allow(max).await?;
            }
            outcome
        }
        _ => {
            let rollout = Rollout::begin(&ec2, &elb, &store, settings, &d.version, print)?;
            let rollout = match &stack.preview {
                Some((_, url)) => rollout.with_preview_check(crate::preview::at(url.clone())),
                None => rollout,
            };
            rollout.run().await?
        }
    };
    Ok(report(&outcome, json))
}

/// Prints how a deploy ended; exit 0 only if it succeeded.
fn report(outcome: &cutover_aws::Outcome, json: bool) -> ExitCode {
    if json {
        println!(
            "{}",
            json!({ "ok": outcome.succeeded(), "outcome": outcome })
        );
    } else {
        match &outcome.progress {
            Progress::Done => println!(
                "deployed {} ({}, {:.1}s); live group {}",
                outcome.to,
                outcome.strategy,
                outcome.duration_ms as f64 / 1000.0,
                outcome.live.name()
            ),
            Progress::RolledBack { reason } => {
                eprintln!(
                    "deploy of {} failed and was rolled back: {reason}",
                    outcome.to
                )
            }
            Progress::Paused { step, reason } => eprintln!(
                "deploy of {} paused at step {}: {reason}",
                outcome.to,
                step + 1
            ),
            other => eprintln!("deploy of {} ended {other:?}", outcome.to),
        }
    }
    match outcome.progress {
        Progress::Done => ExitCode::SUCCESS,
        // Paused: still in progress, awaiting a human.
        Progress::Paused { .. } => ExitCode::from(crate::exit::PAUSED),
        _ => ExitCode::FAILURE,
    }
}

async fn rollback(c: Common) -> Result<ExitCode, Failure> {
    let (spec, store, clients) = open(&c).await?;
    let aws = stack::section(&spec)?;
    let stack = Stack::load(&spec, &store)?;
    if !aws.auto_scaling && groups::recorded(&store)?.is_empty() {
        let ec2 = stack.ec2(&clients, &spec, &[])?;
        let elb = stack.elb(&clients, &spec);
        let desired = store.desired()?.unwrap_or(spec.group.desired);
        let json = c.json;
        let flipped =
            cutover_aws::flip_back(&ec2, &elb, &store, cutover_aws::LIVE_KEY, desired, |e| {
                if !json {
                    eprintln!("  {:<9} {}", e.kind, e.detail);
                }
            })
            .await?;
        if let Some(outcome) = flipped {
            return Ok(report(&outcome, json));
        }
    }
    // No warm set: deploy the release the current one replaced.
    let current = store.current_release()?.unwrap_or_default();
    let rows = store.deployments()?;
    let history: Vec<cutover_rollout::Past<'_>> = rows
        .iter()
        .map(|d| cutover_rollout::Past {
            from: &d.from_version,
            to: &d.to_version,
            progress: &d.progress,
        })
        .collect();
    let previous = cutover_rollout::rollback::target(&history, &current, None, None)
        .map_err(|e| Failure(e.to_string(), true))?;
    let strategy = if aws.auto_scaling {
        "replace-group"
    } else {
        "rolling"
    };
    deploy(DeployArgs {
        version: previous,
        common: c,
        strategy: Some(strategy.into()),
        image: None,
        poll: Duration::from_secs(5),
        metric_period: Duration::from_secs(60),
    })
    .await
}

async fn pause(p: PickUp) -> Result<ExitCode, Failure> {
    let (_spec, store, _clients) = open(&p.common).await?;
    let Some(row) = cutover_aws::in_progress(&store)? else {
        return Err(Failure(
            "no deployment is in progress: nothing to pause".into(),
            true,
        ));
    };
    if row.strategy != "canary" {
        return Err(Failure(
            format!(
                "deployment {} uses the {} strategy; only a canary has steps to pause at",
                row.id, row.strategy
            ),
            true,
        ));
    }
    let paused = |row: &cutover_store::DeploymentRow| match &row.progress {
        Progress::Paused { step, reason } => Some((*step, reason.clone())),
        _ => None,
    };
    let say = |message: String, row: &cutover_store::DeploymentRow| {
        if p.common.json {
            println!(
                "{}",
                json!({ "ok": true, "deployment": row.id, "progress": row.progress })
            );
        } else {
            println!("{message}");
        }
    };
    if let Some((step, reason)) = paused(&row) {
        say(
            format!(
                "deployment {} is paused already, at step {}: {reason}",
                row.id,
                step + 1
            ),
            &row,
        );
        return Ok(ExitCode::SUCCESS);
    }
    lease::ask(&store, row.id, Request::Pause)?;
    let Some(runner) = lease::holder(&store, row.id)? else {
        say(
            format!(
                "deployment {} is not running: it pauses where it is when `cutover aws resume`                  picks it up",
                row.id
            ),
            &row,
        );
        return Ok(ExitCode::SUCCESS);
    };
    // Its runner takes the request at its next look; a few looks is long enough to wait.
    let wait = Duration::from_millis(runner.every_ms.saturating_mul(4)) + Duration::from_secs(10);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let now = store.deployments()?.into_iter().find(|d| d.id == row.id);
        match now {
            Some(d) if paused(&d).is_some() => {
                let (step, reason) = paused(&d).unwrap_or_default();
                say(
                    format!("deployment {} paused at step {}: {reason}", d.id, step + 1),
                    &d,
                );
                return Ok(ExitCode::SUCCESS);
            }
            Some(d) if d.finished_at.is_some() => {
                return Err(Failure(
                    format!("deployment {} ended before it could pause", d.id),
                    false,
                ))
            }
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Failure(
                format!(
                    "asked deployment {} to pause, but {} has not within {}: it pauses when it \
                     next looks",
                    row.id,
                    runner.describe(),
                    humantime::format_duration(wait)
                ),
                false,
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn history(c: Common) -> Result<ExitCode, Failure> {
    let (_spec, store, _clients) = open(&c).await?;
    let rows = store.deployments()?;
    let runner = |id: u64| lease::holder(&store, id).ok().flatten();
    if c.json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|d| {
                let mut v = json!(d);
                if let (Some(l), Some(o)) = (runner(d.id), v.as_object_mut()) {
                    o.insert("runner".into(), json!(l));
                }
                v
            })
            .collect();
        println!("{}", json!({ "ok": true, "deployments": rows }));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no deployments yet");
    }
    for d in &rows {
        let progress = match &d.progress {
            Progress::Rolling | Progress::Preparing => match runner(d.id) {
                Some(l) => format!("in progress, run by {}", l.describe()),
                None => "in progress, nobody running it: `cutover aws resume`".to_owned(),
            },
            other => other.to_string(),
        };
        let took = d
            .duration_ms
            .map(|ms| format!(" in {:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default();
        println!(
            "{:>4}  {} → {}  {}  {}{took}  {progress}",
            d.id,
            from_name(d),
            d.to_version,
            d.strategy,
            d.started_at
        );
        let steps: Vec<cutover_aws::StepRecord> =
            serde_json::from_value(d.steps.clone()).unwrap_or_default();
        for s in steps {
            println!("        step {} ({}): {}", s.step, s.what, s.verdict);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_status(s: &stack::Status) {
    println!(
        "stack {}  release {}  live {}  weights blue {} / green {}",
        s.service,
        s.current.as_deref().unwrap_or("(none)"),
        s.live.name(),
        s.weights.0,
        s.weights.1
    );
    if let Some(url) = &s.url {
        println!("url   {url}");
    }
    for g in &s.groups {
        let c = &g.check;
        println!(
            "{} target group ({} targets): check {} every {}s, timeout {}s, {}/{} to turn, \
             matcher {}, deregistration delay {}s",
            g.color.name(),
            g.targets.len(),
            c.path.as_deref().unwrap_or("?"),
            c.interval_s.unwrap_or_default(),
            c.timeout_s.unwrap_or_default(),
            c.healthy_threshold.unwrap_or_default(),
            c.unhealthy_threshold.unwrap_or_default(),
            c.matcher.as_deref().unwrap_or("?"),
            c.deregistration_delay_s.unwrap_or_default()
        );
        for t in &g.targets {
            println!(
                "  {:<20} {:<10} {}",
                t.id,
                t.state.as_str(),
                t.reason.map(cutover_aws::Reason::as_str).unwrap_or("")
            );
        }
    }
    println!("instances");
    for m in &s.instances {
        let state = match &m.state {
            cutover_aws::MachineState::Ready => "running".to_owned(),
            cutover_aws::MachineState::Booting { detail } => detail.clone(),
            cutover_aws::MachineState::Gone { detail } => detail.clone(),
        };
        println!(
            "  {:<20} {:<10} {:<6} {:<22} {:<12} {}",
            m.id,
            m.version,
            m.side.name(),
            m.image,
            m.zone.as_deref().unwrap_or("-"),
            state
        );
    }
}
