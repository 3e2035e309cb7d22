//! What the executor's tests share: settings, a two-step canary, a window's numbers.

#![allow(dead_code)]

use std::time::Duration;

use cutover_deploy::{Sample, Strategy};
use cutover_rollout::Settings;

pub const LIVE_KEY: &str = "test.live";

pub fn settings(strategy: Strategy) -> Settings {
    Settings {
        strategy,
        desired: 3,
        progress_deadline: Duration::from_secs(600),
        drain_timeout: Duration::from_secs(30),
        poll: Duration::from_secs(5),
        groups: Vec::new(),
        live_key: LIVE_KEY,
        analysis: cutover_spec::Analysis {
            min_requests: 100,
            max_error_rate: 0.05,
            max_error_rate_ratio: 2.0,
            max_p99: Duration::from_secs(1),
            max_p99_ratio: 2.0,
        },
    }
}

/// One instance, then a quarter of the traffic, each judged on a minute's window.
pub fn canary() -> Strategy {
    use cutover_spec::{CanaryStep, Pause};
    Strategy::Canary(cutover_deploy::Canary {
        steps: vec![
            CanaryStep {
                instances: Some(1),
                weight: None,
                pause: Pause::None,
            },
            CanaryStep {
                instances: None,
                weight: Some(25),
                pause: Pause::None,
            },
        ],
        window: Duration::from_secs(60),
    })
}

pub fn answered(requests: u64, errors: u64) -> Sample {
    Sample {
        requests,
        errors,
        p99: Some(Duration::from_millis(20)),
    }
}
