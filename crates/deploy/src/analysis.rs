//! Canary analysis: the new version's error rate and p99 against absolute limits and the baseline's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Limits from the stack file's `[deploy.analysis]`.
pub use cutover_spec::Analysis as Limits;

/// What one set did during an analysis window, from the load balancer's own counts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Sample {
    /// Requests answered: by the target, or by the proxy on its behalf.
    pub requests: u64,
    /// 5xx from the target plus errors the proxy answered for it.
    pub errors: u64,
    pub p99: Option<Duration>,
}

impl Sample {
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail {
        reason: String,
    },
    /// Too few requests to say.
    Inconclusive {
        requests: u64,
        needed: u64,
    },
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict::Inconclusive {
            requests: 0,
            needed: 0,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::Fail { reason } => write!(f, "fail: {reason}"),
            Verdict::Inconclusive { requests, needed } => {
                write!(f, "inconclusive: {requests} of {needed} requests")
            }
        }
    }
}

/// An error rate the baseline may have without making every ratio meaningless: a baseline with no
/// errors at all would otherwise fail a canary over a single 5xx.
const ERROR_RATE_FLOOR: f64 = 0.001;
/// Likewise for latency: below this a p99 ratio is noise.
const P99_FLOOR: Duration = Duration::from_millis(5);

/// The verdict on `canary` against `baseline`. A failure can be called as soon as the minimum
/// number of requests has been seen; so can a pass, but the strategy decides when to act on it.
pub fn judge(limits: &Limits, canary: &Sample, baseline: &Sample) -> Verdict {
    if canary.requests < limits.min_requests.max(1) {
        return Verdict::Inconclusive {
            requests: canary.requests,
            needed: limits.min_requests.max(1),
        };
    }
    let rate = canary.error_rate();
    if rate > limits.max_error_rate {
        return Verdict::Fail {
            reason: format!(
                "error rate {:.1}% over {} requests is above the limit of {:.1}%",
                rate * 100.0,
                canary.requests,
                limits.max_error_rate * 100.0
            ),
        };
    }
    let base_rate = baseline.error_rate().max(ERROR_RATE_FLOOR);
    if baseline.requests >= limits.min_requests && rate > base_rate * limits.max_error_rate_ratio {
        return Verdict::Fail {
            reason: format!(
                "error rate {:.2}% is above {}× the baseline's {:.2}%",
                rate * 100.0,
                limits.max_error_rate_ratio,
                baseline.error_rate() * 100.0
            ),
        };
    }
    if let Some(p99) = canary.p99 {
        if p99 > limits.max_p99 {
            return Verdict::Fail {
                reason: format!(
                    "p99 latency {} ms is above the limit of {} ms",
                    p99.as_millis(),
                    limits.max_p99.as_millis()
                ),
            };
        }
        if let Some(base) = baseline
            .p99
            .filter(|_| baseline.requests >= limits.min_requests)
        {
            let allowed = base.max(P99_FLOOR).mul_f64(limits.max_p99_ratio);
            if p99 > allowed {
                return Verdict::Fail {
                    reason: format!(
                        "p99 latency {} ms is above {}× the baseline's {} ms",
                        p99.as_millis(),
                        limits.max_p99_ratio,
                        base.as_millis()
                    ),
                };
            }
        }
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        min_requests: 100,
        max_error_rate: 0.05,
        max_error_rate_ratio: 2.0,
        max_p99: Duration::from_secs(1),
        max_p99_ratio: 1.5,
    };

    fn sample(requests: u64, errors: u64, p99_ms: u64) -> Sample {
        Sample {
            requests,
            errors,
            p99: Some(Duration::from_millis(p99_ms)),
        }
    }

    #[test]
    fn too_few_requests_say_nothing_even_when_all_failed() {
        assert_eq!(
            judge(&LIMITS, &sample(99, 99, 10), &sample(1000, 0, 10)),
            Verdict::Inconclusive {
                requests: 99,
                needed: 100
            }
        );
    }

    #[test]
    fn each_limit_fails_on_its_own() {
        let base = sample(1000, 10, 20);
        assert_eq!(judge(&LIMITS, &sample(100, 1, 20), &base), Verdict::Pass);
        let absolute = judge(&LIMITS, &sample(100, 6, 20), &base);
        assert!(matches!(absolute, Verdict::Fail { reason: ref r } if r.contains("limit of 5.0%")));
        let relative = judge(&LIMITS, &sample(100, 3, 20), &base);
        assert!(
            matches!(relative, Verdict::Fail { reason: ref r } if r.contains("2× the baseline"))
        );
        let slow = judge(&LIMITS, &sample(100, 0, 1500), &base);
        assert!(matches!(slow, Verdict::Fail { reason: ref r } if r.contains("limit of 1000 ms")));
        let slower = judge(&LIMITS, &sample(100, 0, 40), &base);
        assert!(
            matches!(slower, Verdict::Fail { reason: ref r } if r.contains("1.5× the baseline"))
        );
    }

    #[test]
    fn a_quiet_baseline_does_not_make_ratios_hair_triggers() {
        // No baseline errors and a 1 ms p99: one error in 1,000 and a 6 ms p99 still pass.
        assert_eq!(
            judge(&LIMITS, &sample(1000, 1, 6), &sample(5000, 0, 1)),
            Verdict::Pass
        );
        // A baseline too small to judge by is not compared against.
        assert_eq!(
            judge(&LIMITS, &sample(100, 2, 20), &sample(10, 0, 1)),
            Verdict::Pass
        );
    }
}
