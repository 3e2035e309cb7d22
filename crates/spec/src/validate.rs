//! Raw stack file to runtime spec: defaults filled, every rule checked, every problem collected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::duration;
use crate::model::*;
use crate::raw::*;

mod aws;
use aws::aws;

/// One thing wrong with the stack file, by key path (`deploy.steps[1].pause`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Defaults suited to one host; `examples/cutover.toml` documents each.
pub mod defaults {
    pub const VERSION: &str = "v1";
    pub const STOP_TIMEOUT: &str = "10s";
    pub const HEALTH_PATH: &str = "/health";
    pub const HEALTH_INTERVAL: &str = "2s";
    pub const HEALTH_TIMEOUT: &str = "1s";
    pub const HEALTHY_THRESHOLD: u32 = 2;
    pub const UNHEALTHY_THRESHOLD: u32 = 2;
    pub const MATCHER: &str = "200-299";
    pub const MIN: u32 = 1;
    pub const DESIRED: u32 = 2;
    pub const MAX: u32 = 4;
    pub const BIND: &str = "127.0.0.1:8080";
    pub const ADMIN_BIND: &str = "127.0.0.1:8099";
    pub const MAX_SURGE: u32 = 1;
    pub const MAX_UNAVAILABLE: u32 = 0;
    pub const DRAIN_TIMEOUT: &str = "30s";
    pub const PROGRESS_DEADLINE: &str = "10m";
    pub const ROLLBACK_WINDOW: &str = "10m";
    pub const MIN_REQUESTS: u64 = 100;
    pub const MAX_ERROR_RATE: f64 = 0.01;
    pub const MAX_ERROR_RATE_RATIO: f64 = 2.0;
    pub const MAX_P99: &str = "1s";
    pub const MAX_P99_RATIO: f64 = 1.5;
    pub const COOLDOWN: &str = "5m";
    pub const FETCH_TIMEOUT: &str = "10m";
    pub const BODY_TIMEOUT: &str = "60s";
    pub const RETRY_BUDGET: u32 = 20;
    pub const MAX_UNPACKED_SIZE: &str = "2GiB";
    pub const POLICY_PERIOD: &str = "1m";
    pub const POLICY_PERIODS: u32 = 1;
    pub const INSTANCE_TYPE: &str = "t3.micro";
    pub const AWS_PORT: u16 = 8080;
    pub const AWS_LISTENER_PORT: u16 = 80;
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, value: &Option<String>, default: &str) -> Duration {
        let text = value.as_deref().unwrap_or(default);
        match duration::parse(text) {
            Ok(d) => d,
            Err(e) => {
                self.problem(path, e);
                duration::parse(default).unwrap_or_default()
            }
        }
    }

    fn positive_duration(&mut self, path: &str, value: &Option<String>, default: &str) -> Duration {
        let d = self.duration(path, value, default);
        if d.is_zero() {
            self.problem(path, "expected a duration above zero");
        }
        d
    }

    /// A size such as "512MiB" or "2GB", from 1 MiB to 1 TiB.
    fn size(&mut self, path: &str, value: &Option<String>, default: &str) -> u64 {
        const MIN: u64 = 1 << 20;
        const MAX: u64 = 1 << 40;
        let text = value.as_deref().unwrap_or(default);
        let fallback = || {
            default
                .parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .unwrap_or(MIN)
        };
        match text.trim().parse::<bytesize::ByteSize>() {
            Ok(b) if (MIN..=MAX).contains(&b.as_u64()) => b.as_u64(),
            Ok(_) => {
                self.problem(path, format!("`{text}` must be between 1MiB and 1TiB"));
                fallback()
            }
            Err(_) => {
                self.problem(
                    path,
                    format!("`{text}` is not a size such as \"512MiB\" or \"2GiB\""),
                );
                fallback()
            }
        }
    }

    fn addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    path,
                    format!("`{text}` is not an address such as \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }

    fn fraction(&mut self, path: &str, value: Option<f64>, default: f64) -> f64 {
        let v = value.unwrap_or(default);
        if !(0.0..=1.0).contains(&v) {
            self.problem(
                path,
                format!("expected a fraction between 0.0 and 1.0, found {v}"),
            );
        }
        v
    }

    fn ratio(&mut self, path: &str, value: Option<f64>, default: f64) -> f64 {
        let v = value.unwrap_or(default);
        if !(v.is_finite() && v >= 1.0) {
            self.problem(path, format!("expected a ratio of at least 1.0, found {v}"));
        }
        v
    }

    fn headers(
        &mut self,
        path: &str,
        headers: &Option<BTreeMap<String, String>>,
    ) -> BTreeMap<String, String> {
        let headers = headers.clone().unwrap_or_default();
        for (name, value) in &headers {
            if !is_header_name(name) {
                self.problem(
                    format!("{path}.{name}"),
                    format!("`{name}` is not a valid header name"),
                );
            }
            if value.chars().any(|c| c.is_control() || !c.is_ascii()) {
                self.problem(
                    format!("{path}.{name}"),
                    "header values must be printable ASCII",
                );
            }
        }
        headers
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn is_version(v: &str) -> bool {
    crate::version::check(v).is_ok()
}

const PLACEHOLDERS: [&str; 3] = ["port", "version", "instance"];

/// Checks a raw stack file and builds the runtime spec; relative TLS paths resolve against `base_dir`.
pub fn validate(raw: &RawSpec, base_dir: &Path) -> Result<Spec, Vec<Problem>> {
    let mut c = Checker {
        problems: Vec::new(),
    };

    let service = match raw.service.name.as_deref() {
        None => {
            c.problem(
                "service.name",
                "is required: the name of the service, such as \"web\"",
            );
            String::new()
        }
        Some(n)
            if n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            c.problem(
                "service.name",
                format!("`{n}` must be letters, digits, `-` or `_`"),
            );
            n.to_owned()
        }
        Some(n) => n.to_owned(),
    };

    let targets = raw.targets.clone().unwrap_or_default();
    for (i, t) in targets.iter().enumerate() {
        let ok = t.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !ok {
            c.problem(
                format!("targets[{i}]"),
                format!("`{t}` is not a target such as \"10.0.0.5:8080\""),
            );
        }
    }

    // On AWS the image holds the service: there is no command to run.
    let release = release(
        &mut c,
        &raw.release,
        targets.is_empty() && raw.aws.is_none(),
    );
    let health = health(&mut c, &raw.health);
    let group = group(&mut c, &raw.group);
    let listener = listener(&mut c, &raw.listener, base_dir);
    let deploy = deploy(&mut c, &raw.deploy, &group);
    let autoscale = raw.autoscale.as_ref().map(|a| autoscale(&mut c, a));
    let aws = raw
        .aws
        .as_ref()
        .map(|a| aws(&mut c, a, &health, &deploy, &release));
    let admin_bind = raw.admin.bind.as_deref().unwrap_or(defaults::ADMIN_BIND);
    let admin = Admin {
        bind: c
            .addr("admin.bind", admin_bind)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8099))),
        allow_remote: raw.admin.allow_remote.unwrap_or(false),
    };
    if !admin.bind.ip().is_loopback() && !admin.allow_remote {
        c.problem(
            "admin.bind",
            format!(
                "`{}` is not a loopback address: the admin API would take its bearer token over \
                 plain HTTP from the network; bind it to 127.0.0.1, or set admin.allow_remote = true \
                 to accept that",
                admin.bind
            ),
        );
    }
    if admin.bind == listener.bind && admin.bind.port() != 0 {
        c.problem("admin.bind", "must differ from listener.bind");
    }

    if c.problems.is_empty() {
        Ok(Spec {
            admin,
            service,
            release,
            health,
            group,
            listener,
            deploy,
            autoscale,
            targets,
            aws,
        })
    } else {
        Err(c.problems)
    }
}

fn release(c: &mut Checker, r: &RawRelease, needs_command: bool) -> Release {
    let version = r
        .version
        .clone()
        .unwrap_or_else(|| defaults::VERSION.into());
    if let Err(e) = crate::version::check(&version) {
        c.problem("release.version", e);
    }
    let command = r.command.clone().unwrap_or_default();
    if command.trim().is_empty() {
        if needs_command {
            c.problem(
                "release.command",
                "is required: the command that starts one instance, such as \"demo-app --port {port}\"",
            );
        }
    } else {
        // Split here as the fleet will split it, so a template that cannot be run fails now.
        if let Err(e) = shell_words::split(&command) {
            c.problem(
                "release.command",
                format!("cannot be split into words ({e}): close the quote or escape it"),
            );
        }
        for placeholder in placeholders(&command) {
            if !PLACEHOLDERS.contains(&placeholder.as_str()) {
                c.problem(
                    "release.command",
                    format!("unknown placeholder `{{{placeholder}}}`; expected {{port}}, {{version}} or {{instance}}"),
                );
            }
        }
    }
    let env = r.env.clone().unwrap_or_default();
    for name in env.keys() {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            c.problem(
                format!("release.env.{name}"),
                "is not a valid environment variable name",
            );
        }
    }
    if r.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
        c.problem("release.user", "must name a user when given");
    }
    let stop_signal = match r.stop_signal.as_deref() {
        None => StopSignal::Term,
        Some(s) => StopSignal::parse(s).unwrap_or_else(|| {
            let names: Vec<&str> = StopSignal::ALL.iter().map(|(_, n)| *n).collect();
            c.problem(
                "release.stop_signal",
                format!("`{s}` is not one of {}", names.join(", ")),
            );
            StopSignal::Term
        }),
    };
    let stop_timeout = c.positive_duration(
        "release.stop_timeout",
        &r.stop_timeout,
        defaults::STOP_TIMEOUT,
    );
    if let Some(artifact) = &r.artifact {
        let scheme = artifact.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("http" | "https" | "s3" | "file")) {
            c.problem(
                "release.artifact",
                format!("`{artifact}` must be an http://, https://, s3:// or file:// URL"),
            );
        }
    }
    if let Some(sha) = &r.sha256 {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            c.problem("release.sha256", "expected 64 hexadecimal digits");
        }
        if r.artifact.is_none() {
            c.problem("release.sha256", "is given without release.artifact");
        }
    }
    let fetch_timeout = c.positive_duration(
        "release.fetch_timeout",
        &r.fetch_timeout,
        defaults::FETCH_TIMEOUT,
    );
    let max_unpacked_size = c.size(
        "release.max_unpacked_size",
        &r.max_unpacked_size,
        defaults::MAX_UNPACKED_SIZE,
    );
    Release {
        version,
        command,
        env,
        user: r.user.clone(),
        stop_signal,
        stop_timeout,
        artifact: r.artifact.clone(),
        sha256: r.sha256.as_ref().map(|s| s.to_ascii_lowercase()),
        fetch_timeout,
        max_unpacked_size,
    }
}

/// The `{name}` placeholders of a command template.
fn placeholders(command: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = command;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                out.push(after[..close].to_owned());
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    out
}

fn health(c: &mut Checker, h: &RawHealth) -> HealthCheck {
    let path = h
        .path
        .clone()
        .unwrap_or_else(|| defaults::HEALTH_PATH.into());
    if !path.starts_with('/') || path.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        c.problem(
            "health.path",
            format!("`{path}` must start with `/` and hold no spaces"),
        );
    }
    let interval = c.positive_duration("health.interval", &h.interval, defaults::HEALTH_INTERVAL);
    let timeout = c.positive_duration("health.timeout", &h.timeout, defaults::HEALTH_TIMEOUT);
    if timeout >= interval && !timeout.is_zero() {
        c.problem("health.timeout", "must be shorter than health.interval");
    }
    if !interval.is_zero() && interval < MIN_HEALTH_INTERVAL {
        c.problem(
            "health.interval",
            format!("must be at least {}", duration::format(MIN_HEALTH_INTERVAL)),
        );
    }
    let healthy_threshold = h.healthy_threshold.unwrap_or(defaults::HEALTHY_THRESHOLD);
    if !(1..=MAX_THRESHOLD).contains(&healthy_threshold) {
        c.problem(
            "health.healthy_threshold",
            format!("expected 1 to {MAX_THRESHOLD}, found {healthy_threshold}"),
        );
    }
    let unhealthy_threshold = h
        .unhealthy_threshold
        .unwrap_or(defaults::UNHEALTHY_THRESHOLD);
    if !(1..=MAX_THRESHOLD).contains(&unhealthy_threshold) {
        c.problem(
            "health.unhealthy_threshold",
            format!("expected 1 to {MAX_THRESHOLD}, found {unhealthy_threshold}"),
        );
    }
    let matcher =
        Matcher::parse(h.matcher.as_deref().unwrap_or(defaults::MATCHER)).unwrap_or_else(|e| {
            c.problem(
                "health.matcher",
                format!("{e}; expected codes or ranges such as \"200-299\" or \"200,302\""),
            );
            Matcher(vec![200..=299])
        });
    HealthCheck {
        path,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
        matcher,
        fail_open: h.fail_open.unwrap_or(true),
    }
}

/// Most instances in one group.
const MAX_GROUP: u32 = 10_000;
/// The shortest health-check interval: below it the checks themselves become the load.
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(50);
/// Most consecutive checks a threshold may ask for.
const MAX_THRESHOLD: u32 = 100;

fn group(c: &mut Checker, g: &RawGroup) -> Group {
    let min = g.min.unwrap_or(defaults::MIN);
    let desired = g.desired.unwrap_or(defaults::DESIRED.max(min));
    let max = g.max.unwrap_or(defaults::MAX.max(desired));
    if max == 0 {
        c.problem("group.max", "expected at least 1");
    }
    if max > MAX_GROUP {
        // A typo here would start that many processes (or instances on AWS).
        c.problem(
            "group.max",
            format!("{max} is more than the {MAX_GROUP} instances a group may have"),
        );
    }
    if min > max {
        c.problem("group.min", format!("min ({min}) is above max ({max})"));
    }
    if desired < min || desired > max {
        c.problem(
            "group.desired",
            format!("desired ({desired}) must lie between min ({min}) and max ({max})"),
        );
    }
    Group { min, desired, max }
}

/// The upgrade protocols a listener passes on: tokens as RFC 9110 §7.8 has them, never h2c
/// (an h2c connection would carry requests past the proxy's header handling).
fn upgrades(c: &mut Checker, given: &Option<Vec<String>>) -> Vec<String> {
    let Some(given) = given else {
        return vec!["websocket".to_owned()];
    };
    let mut out = Vec::new();
    for (i, u) in given.iter().enumerate() {
        let path = format!("listener.upgrades[{i}]");
        if !is_header_name(u) {
            c.problem(
                path,
                format!("`{u}` is not a protocol name such as \"websocket\""),
            );
        } else if u.eq_ignore_ascii_case("h2c") {
            c.problem(
                path,
                "h2c cannot be passed on: its requests would bypass the proxy's header handling",
            );
        } else {
            out.push(u.to_ascii_lowercase());
        }
    }
    out
}

/// Far above any machine's cores: a typo such as 10000 is caught rather than spawning threads.
const MAX_WORKERS: u32 = 1024;

fn listener(c: &mut Checker, l: &RawListener, base_dir: &Path) -> Listener {
    let fallback = SocketAddr::from(([127, 0, 0, 1], 8080));
    let bind = c
        .addr("listener.bind", l.bind.as_deref().unwrap_or(defaults::BIND))
        .unwrap_or(fallback);
    let tls = l.tls.as_ref().and_then(|t| {
        let mut file = |key: &str, value: &Option<String>| match value {
            Some(p) if !p.is_empty() => Some(base_dir.join(p)),
            _ => {
                c.problem(
                    format!("listener.tls.{key}"),
                    "is required with listener.tls: a PEM file path",
                );
                None
            }
        };
        let cert = file("cert", &t.cert);
        let key = file("key", &t.key);
        Some(Tls {
            cert: cert?,
            key: key?,
        })
    });
    let redirect_http = l
        .redirect_http
        .as_deref()
        .and_then(|a| c.addr("listener.redirect_http", a));
    if redirect_http.is_some() && l.tls.is_none() {
        c.problem(
            "listener.redirect_http",
            "redirects to HTTPS, so it needs listener.tls",
        );
    }
    if redirect_http == Some(bind) {
        c.problem("listener.redirect_http", "must differ from listener.bind");
    }
    let preview = l
        .preview
        .as_deref()
        .and_then(|a| c.addr("listener.preview", a));
    if preview.is_some_and(|p| p == bind || Some(p) == redirect_http) && bind.port() != 0 {
        c.problem(
            "listener.preview",
            "must differ from listener.bind and listener.redirect_http",
        );
    }
    let mut names = |key: &str, list: &Option<Vec<String>>| {
        let list = list.clone().unwrap_or_default();
        for (i, name) in list.iter().enumerate() {
            if !is_header_name(name) {
                c.problem(
                    format!("listener.{key}[{i}]"),
                    format!("`{name}` is not a valid header name"),
                );
            }
        }
        list
    };
    let remove_request_headers = names("remove_request_headers", &l.remove_request_headers);
    let remove_response_headers = names("remove_response_headers", &l.remove_response_headers);
    let balance = match l.balance.as_deref() {
        None => Balance::RoundRobin,
        Some(b) => Balance::parse(b).unwrap_or_else(|| {
            c.problem(
                "listener.balance",
                format!("`{b}` is not one of round-robin, least-outstanding, peak-ewma"),
            );
            Balance::RoundRobin
        }),
    };
    let workers = l.workers;
    if let Some(n) = workers {
        if !(1..=MAX_WORKERS).contains(&n) {
            c.problem(
                "listener.workers",
                format!("expected 1 to {MAX_WORKERS}, got {n}"),
            );
        }
    }
    Listener {
        bind,
        tls,
        redirect_http,
        preview,
        request_headers: c.headers("listener.request_headers", &l.request_headers),
        response_headers: c.headers("listener.response_headers", &l.response_headers),
        add_request_headers: c.headers("listener.add_request_headers", &l.add_request_headers),
        add_response_headers: c.headers("listener.add_response_headers", &l.add_response_headers),
        remove_request_headers,
        remove_response_headers,
        balance,
        workers,
        pin_workers: l.pin_workers.unwrap_or(false),
        upgrades: upgrades(c, &l.upgrades),
        body_timeout: c.positive_duration(
            "listener.body_timeout",
            &l.body_timeout,
            defaults::BODY_TIMEOUT,
        ),
        try_timeout: try_timeout(c, &l.try_timeout),
        retry_budget: match l.retry_budget {
            None => defaults::RETRY_BUDGET,
            Some(p) if p <= 100 => p,
            Some(p) => {
                c.problem(
                    "listener.retry_budget",
                    format!("expected a percentage from 0 to 100, got {p}"),
                );
                defaults::RETRY_BUDGET
            }
        },
    }
}

fn try_timeout(c: &mut Checker, value: &Option<String>) -> TryTimeout {
    match value.as_deref().map(str::trim) {
        None | Some("auto") => TryTimeout::Auto,
        Some("off") => TryTimeout::Off,
        Some(text) => match duration::parse(text) {
            Ok(d) if !d.is_zero() => TryTimeout::After(d),
            Ok(_) => {
                c.problem(
                    "listener.try_timeout",
                    "expected a duration above zero (or \"auto\", or \"off\")",
                );
                TryTimeout::Auto
            }
            Err(e) => {
                c.problem(
                    "listener.try_timeout",
                    format!("expected \"auto\", \"off\" or a duration: {e}"),
                );
                TryTimeout::Auto
            }
        },
    }
}

fn deploy(c: &mut Checker, d: &RawDeploy, group: &Group) -> Deploy {
    let strategy = match d.strategy.as_deref() {
        None => Strategy::Rolling,
        Some(s) => Strategy::parse(s).unwrap_or_else(|| {
            let names: Vec<&str> = Strategy::ALL.iter().map(|(_, n)| *n).collect();
            c.problem(
                "deploy.strategy",
                format!("`{s}` is not one of {}", names.join(", ")),
            );
            Strategy::Rolling
        }),
    };
    let max_surge = d.max_surge.unwrap_or(defaults::MAX_SURGE);
    let max_unavailable = d.max_unavailable.unwrap_or(defaults::MAX_UNAVAILABLE);
    if max_surge == 0 && max_unavailable == 0 {
        c.problem(
            "deploy.max_surge",
            "max_surge and max_unavailable cannot both be 0: the deploy could never move",
        );
    }
    if max_unavailable > group.desired {
        c.problem(
            "deploy.max_unavailable",
            format!("is above group.desired ({})", group.desired),
        );
    }
    let steps = match &d.steps {
        Some(steps) => steps
            .iter()
            .enumerate()
            .map(|(i, s)| step(c, i, s, group))
            .collect(),
        // Defaults even when the file's strategy is another: `--strategy canary` may ask for it.
        None => vec![
            CanaryStep {
                instances: Some(1),
                weight: None,
                pause: Pause::For(Duration::from_secs(60)),
            },
            CanaryStep {
                instances: None,
                weight: Some(50),
                pause: Pause::For(Duration::from_secs(60)),
            },
        ],
    };
    if d.steps.as_ref().is_some_and(Vec::is_empty) && strategy == Strategy::Canary {
        c.problem("deploy.steps", "a canary needs at least one step");
    }
    let a = d.analysis.clone().unwrap_or_default();
    let analysis = Analysis {
        min_requests: a.min_requests.unwrap_or(defaults::MIN_REQUESTS),
        max_error_rate: c.fraction(
            "deploy.analysis.max_error_rate",
            a.max_error_rate,
            defaults::MAX_ERROR_RATE,
        ),
        max_error_rate_ratio: c.ratio(
            "deploy.analysis.max_error_rate_ratio",
            a.max_error_rate_ratio,
            defaults::MAX_ERROR_RATE_RATIO,
        ),
        max_p99: c.positive_duration("deploy.analysis.max_p99", &a.max_p99, defaults::MAX_P99),
        max_p99_ratio: c.ratio(
            "deploy.analysis.max_p99_ratio",
            a.max_p99_ratio,
            defaults::MAX_P99_RATIO,
        ),
    };
    Deploy {
        strategy,
        max_surge,
        max_unavailable,
        drain_timeout: c.positive_duration(
            "deploy.drain_timeout",
            &d.drain_timeout,
            defaults::DRAIN_TIMEOUT,
        ),
        progress_deadline: c.positive_duration(
            "deploy.progress_deadline",
            &d.progress_deadline,
            defaults::PROGRESS_DEADLINE,
        ),
        auto_rollback: d.auto_rollback.unwrap_or(true),
        rollback_window: c.duration(
            "deploy.rollback_window",
            &d.rollback_window,
            defaults::ROLLBACK_WINDOW,
        ),
        steps,
        analysis,
    }
}

fn step(c: &mut Checker, i: usize, s: &RawStep, group: &Group) -> CanaryStep {
    let path = format!("deploy.steps[{i}]");
    if let Some(n) = s.instances {
        if n == 0 || n > group.max {
            c.problem(
                format!("{path}.instances"),
                format!("expected 1 to group.max ({}), found {n}", group.max),
            );
        }
    }
    if let Some(w) = s.weight {
        if w > 100 {
            c.problem(
                format!("{path}.weight"),
                format!("expected a percentage 0-100, found {w}"),
            );
        }
    }
    let pause = match &s.pause {
        None => Pause::None,
        Some(toml::Value::String(text)) => match duration::parse(text) {
            Ok(d) => Pause::For(d),
            Err(e) => {
                c.problem(format!("{path}.pause"), e);
                Pause::None
            }
        },
        Some(toml::Value::Table(t)) if t.is_empty() => Pause::UntilPromoted,
        Some(_) => {
            c.problem(
                format!("{path}.pause"),
                "expected a duration such as \"1m\", or {} to wait for `cutover promote`",
            );
            Pause::None
        }
    };
    if s.instances.is_none() && s.weight.is_none() && s.pause.is_none() {
        c.problem(path, "a step needs instances, weight or pause");
    }
    CanaryStep {
        instances: s.instances,
        weight: s.weight,
        pause,
    }
}

fn autoscale(c: &mut Checker, a: &RawAutoscale) -> Autoscale {
    let policies = a.policies.clone().unwrap_or_default();
    if policies.is_empty() {
        c.problem("autoscale.policies", "autoscale needs at least one policy");
    }
    Autoscale {
        scale_out_cooldown: c.duration(
            "autoscale.scale_out_cooldown",
            &a.scale_out_cooldown,
            defaults::COOLDOWN,
        ),
        scale_in_cooldown: c.duration(
            "autoscale.scale_in_cooldown",
            &a.scale_in_cooldown,
            defaults::COOLDOWN,
        ),
        policies: policies
            .iter()
            .enumerate()
            .map(|(i, p)| policy(c, i, p))
            .collect(),
    }
}

fn policy(c: &mut Checker, i: usize, p: &RawPolicy) -> Policy {
    let path = format!("autoscale.policies[{i}]");
    let period = c.positive_duration(
        &format!("{path}.period"),
        &p.period,
        defaults::POLICY_PERIOD,
    );
    let periods = p.periods.unwrap_or(defaults::POLICY_PERIODS);
    if periods == 0 {
        c.problem(format!("{path}.periods"), "expected at least 1");
    }
    let stray = |c: &mut Checker, field: &str, given: bool, kind: &str| {
        if given {
            c.problem(
                format!("{path}.{field}"),
                format!("applies only to kind = \"{kind}\""),
            );
        }
    };
    let kind = match p.kind.as_deref() {
        Some("step") => {
            stray(c, "target", p.target.is_some(), "target-tracking");
            stray(c, "scale_out_above", p.scale_out_above.is_some(), "cpu");
            stray(c, "scale_in_below", p.scale_in_below.is_some(), "cpu");
            let raw_steps = p.steps.clone().unwrap_or_default();
            if raw_steps.is_empty() {
                c.problem(
                    format!("{path}.steps"),
                    "a step policy needs at least one step",
                );
            }
            let steps = raw_steps
                .iter()
                .enumerate()
                .filter_map(|(j, s)| {
                    let at = format!("{path}.steps[{j}]");
                    let change = s.change.unwrap_or(0);
                    if change == 0 {
                        c.problem(
                            format!("{at}.change"),
                            "expected a non-zero change in instances, such as 1 or -1",
                        );
                    }
                    let threshold = match (s.above, s.below) {
                        (Some(v), None) => Threshold::Above(v),
                        (None, Some(v)) => Threshold::Below(v),
                        _ => {
                            c.problem(at, "expected exactly one of `above` or `below`");
                            return None;
                        }
                    };
                    Some(ScaleStep { threshold, change })
                })
                .collect();
            PolicyKind::Step { steps }
        }
        Some("target-tracking") => {
            stray(c, "steps", p.steps.is_some(), "step");
            stray(c, "scale_out_above", p.scale_out_above.is_some(), "cpu");
            stray(c, "scale_in_below", p.scale_in_below.is_some(), "cpu");
            let target = p.target.unwrap_or(0.0);
            if !(target.is_finite() && target > 0.0) {
                c.problem(
                    format!("{path}.target"),
                    "expected requests per target per minute above 0",
                );
            }
            PolicyKind::TargetTracking { target }
        }
        Some("cpu") => {
            stray(c, "steps", p.steps.is_some(), "step");
            stray(c, "target", p.target.is_some(), "target-tracking");
            let out = p.scale_out_above.unwrap_or(0.0);
            let r#in = p.scale_in_below.unwrap_or(0.0);
            if !(out > 0.0 && out.is_finite()) {
                c.problem(
                    format!("{path}.scale_out_above"),
                    "expected a CPU percent above 0",
                );
            }
            if !(r#in >= 0.0 && r#in < out) {
                c.problem(
                    format!("{path}.scale_in_below"),
                    "expected a CPU percent below scale_out_above",
                );
            }
            PolicyKind::Cpu {
                scale_out_above: out,
                scale_in_below: r#in,
            }
        }
        other => {
            c.problem(
                format!("{path}.kind"),
                match other {
                    None => "is required: \"step\", \"target-tracking\" or \"cpu\"".to_owned(),
                    Some(k) => format!("`{k}` is not one of step, target-tracking, cpu"),
                },
            );
            PolicyKind::TargetTracking { target: 1.0 }
        }
    };
    Policy {
        kind,
        period,
        periods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        let raw: RawSpec = toml::from_str(text).expect("toml");
        validate(&raw, Path::new(".")).err().unwrap_or_default()
    }

    #[test]
    fn sizes_and_check_rates_that_would_overrun_the_host_are_refused() {
        let base = "[service]\nname = \"w\"\n[release]\ncommand = \"a\"\n";
        for (extra, key) in [
            ("[group]\nmax = 4000000\n", "group.max"),
            (
                "[health]\ninterval = \"1ms\"\ntimeout = \"500us\"\n",
                "health.interval",
            ),
            (
                "[health]\nhealthy_threshold = 4000000000\n",
                "health.healthy_threshold",
            ),
            (
                "[health]\nunhealthy_threshold = 0\n",
                "health.unhealthy_threshold",
            ),
        ] {
            let found = problems(&format!("{base}{extra}"));
            assert!(found.iter().any(|p| p.path == key), "{extra}: {found:?}");
        }
        assert!(problems(base).is_empty());
    }

    #[test]
    fn finds_placeholders() {
        assert_eq!(
            placeholders("app --port {port} -v {version} {x"),
            vec!["port", "version"]
        );
    }
}
