//! Autoscaling: policies turn each evaluation period's metric into a vote, and the votes into a
//! desired size within min, max and the cooldowns. No I/O here: the controller measures and
//! passes the clock in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cutover_spec::{Autoscale, PolicyKind, Threshold};
use serde::Serialize;

/// A change of the desired size, with why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub from: u32,
    pub to: u32,
    pub reason: String,
    /// Each policy's values over its evaluation periods, oldest first.
    pub metrics: Vec<PolicyReading>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyReading {
    pub policy: String,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq)]
enum Vote {
    Out(u32, String),
    In(u32, String),
    Hold,
}

pub struct Autoscaler {
    spec: Autoscale,
    min: u32,
    max: u32,
    /// The last `periods` values of each policy's metric.
    windows: Vec<VecDeque<f64>>,
    last_out: Option<Instant>,
    last_in: Option<Instant>,
}

/// A policy's name as history shows it.
fn name(kind: &PolicyKind) -> &'static str {
    match kind {
        PolicyKind::Step { .. } => "requests per target per minute (step)",
        PolicyKind::TargetTracking { .. } => "requests per target per minute (target tracking)",
        PolicyKind::Cpu { .. } => "cpu percent per instance",
    }
}

fn list(values: &VecDeque<f64>) -> String {
    let parts: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
    parts.join(", ")
}

impl Autoscaler {
    pub fn new(spec: Autoscale, min: u32, max: u32) -> Self {
        let windows = spec.policies.iter().map(|_| VecDeque::new()).collect();
        Self {
            spec,
            min,
            max,
            windows,
            last_out: None,
            last_in: None,
        }
    }

    pub fn spec(&self) -> &Autoscale {
        &self.spec
    }

    /// The metric of policy `index` over its period that just ended.
    pub fn record(&mut self, index: usize, value: f64) {
        let (Some(window), Some(policy)) =
            (self.windows.get_mut(index), self.spec.policies.get(index))
        else {
            return;
        };
        window.push_back(value);
        while window.len() > policy.periods as usize {
            window.pop_front();
        }
    }

    fn vote(&self, index: usize, current: u32) -> Vote {
        let (Some(window), Some(policy)) = (self.windows.get(index), self.spec.policies.get(index))
        else {
            return Vote::Hold;
        };
        if window.len() < policy.periods as usize || window.is_empty() {
            return Vote::Hold;
        }
        let all = |f: &dyn Fn(f64) -> bool| window.iter().all(|v| f(*v));
        let periods = policy.periods;
        let over = |threshold: f64| {
            format!(
                "{} above {threshold} for {periods} period(s): {}",
                name(&policy.kind),
                list(window)
            )
        };
        let under = |threshold: f64| {
            format!(
                "{} below {threshold} for {periods} period(s): {}",
                name(&policy.kind),
                list(window)
            )
        };
        let moved = |change: i32| (i64::from(current) + i64::from(change)).max(0) as u32;
        match &policy.kind {
            PolicyKind::Step { steps } => {
                // The highest threshold breached upwards wins; else the lowest breached downwards.
                let up = steps
                    .iter()
                    .filter_map(|s| match s.threshold {
                        Threshold::Above(t) if all(&|v| v > t) => Some((t, s.change)),
                        _ => None,
                    })
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                if let Some((t, change)) = up {
                    return Vote::Out(moved(change), over(t));
                }
                let down = steps
                    .iter()
                    .filter_map(|s| match s.threshold {
                        Threshold::Below(t) if all(&|v| v < t) => Some((t, s.change)),
                        _ => None,
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                match down {
                    Some((t, change)) => Vote::In(moved(change), under(t)),
                    None => Vote::Hold,
                }
            }
            PolicyKind::TargetTracking { target } => {
                // The size that would bring each period's value to the target.
                let want = |v: f64| ((f64::from(current) * v / target).ceil().max(1.0)) as u32;
                if all(&|v| want(v) > current) {
                    let to = window.iter().map(|v| want(*v)).min().unwrap_or(current);
                    Vote::Out(to, over(*target))
                } else if all(&|v| want(v) < current) {
                    let to = window.iter().map(|v| want(*v)).max().unwrap_or(current);
                    Vote::In(to, under(*target))
                } else {
                    Vote::Hold
                }
            }
            PolicyKind::Cpu {
                scale_out_above,
                scale_in_below,
            } => {
                if all(&|v| v > *scale_out_above) {
                    Vote::Out(current + 1, over(*scale_out_above))
                } else if all(&|v| v < *scale_in_below) {
                    Vote::In(current.saturating_sub(1), under(*scale_in_below))
                } else {
                    Vote::Hold
                }
            }
        }
    }

    /// What to do now with `current` instances. Out if any policy says out (the largest ask);
    /// in only if every policy says in (the smallest step). Scale-out waits out the scale-out
    /// cooldown; scale-in waits out both, so a group never shrinks right after growing. `pending`
    /// (instances still starting) holds everything: they are not capacity until healthy.
    pub fn decide(&mut self, current: u32, now: Instant, pending: bool) -> Option<Decision> {
        if pending {
            return None;
        }
        let votes: Vec<Vote> = (0..self.spec.policies.len())
            .map(|i| self.vote(i, current))
            .collect();
        let cooled = |last: Option<Instant>, cooldown: Duration| {
            last.is_none_or(|t| now.saturating_duration_since(t) >= cooldown)
        };
        let out = votes
            .iter()
            .filter_map(|v| match v {
                Vote::Out(to, why) => Some((*to, why.clone())),
                _ => None,
            })
            .max_by_key(|(to, _)| *to);
        let all_in = !votes.is_empty() && votes.iter().all(|v| matches!(v, Vote::In(..)));
        let (to, reason) = match out {
            Some((to, why)) if to.min(self.max) > current => {
                if !cooled(self.last_out, self.spec.scale_out_cooldown) {
                    return None;
                }
                (to.min(self.max), why)
            }
            Some(_) => return None,
            None if all_in => {
                let (to, why) = votes
                    .iter()
                    .filter_map(|v| match v {
                        Vote::In(to, why) => Some((*to, why.clone())),
                        _ => None,
                    })
                    .max_by_key(|(to, _)| *to)?;
                let to = to.max(self.min);
                if to >= current
                    || !cooled(self.last_in, self.spec.scale_in_cooldown)
                    || !cooled(self.last_out, self.spec.scale_out_cooldown)
                {
                    return None;
                }
                (to, why)
            }
            None => return None,
        };
        let metrics = self
            .spec
            .policies
            .iter()
            .zip(&self.windows)
            .map(|(p, w)| PolicyReading {
                policy: name(&p.kind).to_owned(),
                values: w.iter().copied().collect(),
            })
            .collect();
        if to > current {
            self.last_out = Some(now);
        } else {
            self.last_in = Some(now);
        }
        // Every decision is made on periods measured after the last change.
        for w in &mut self.windows {
            w.clear();
        }
        Some(Decision {
            from: current,
            to,
            reason,
            metrics,
        })
    }

    /// A change made by hand (`cutover scale`) counts as a scaling action for the cooldowns.
    pub fn manual(&mut self, from: u32, to: u32, now: Instant) {
        if to > from {
            self.last_out = Some(now);
        } else if to < from {
            self.last_in = Some(now);
        }
        for w in &mut self.windows {
            w.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_spec::{Policy, ScaleStep};

    const S: Duration = Duration::from_secs(1);

    fn scaler(kind: PolicyKind, periods: u32) -> Autoscaler {
        Autoscaler::new(
            Autoscale {
                scale_out_cooldown: 10 * S,
                scale_in_cooldown: 20 * S,
                policies: vec![Policy {
                    kind,
                    period: S,
                    periods,
                }],
            },
            1,
            5,
        )
    }

    fn steps() -> PolicyKind {
        PolicyKind::Step {
            steps: vec![
                ScaleStep {
                    threshold: Threshold::Above(40.0),
                    change: 1,
                },
                ScaleStep {
                    threshold: Threshold::Above(100.0),
                    change: 2,
                },
                ScaleStep {
                    threshold: Threshold::Below(20.0),
                    change: -1,
                },
            ],
        }
    }

    #[test]
    fn a_step_policy_scales_after_its_periods_and_respects_cooldowns() {
        let t0 = Instant::now();
        let mut a = scaler(steps(), 2);
        a.record(0, 50.0);
        assert_eq!(a.decide(1, t0, false), None, "one period of two");
        a.record(0, 45.0);
        let d = a.decide(1, t0, false).expect("out");
        assert_eq!((d.from, d.to), (1, 2));
        assert!(d.reason.contains("above 40"), "{}", d.reason);
        assert_eq!(d.metrics[0].values, vec![50.0, 45.0]);
        // Fresh periods, but inside the cooldown: nothing.
        a.record(0, 150.0);
        a.record(0, 150.0);
        assert_eq!(a.decide(2, t0 + 5 * S, false), None);
        // After it: the higher step wins, and max caps it.
        let d = a.decide(2, t0 + 10 * S, false).expect("out");
        assert_eq!(d.to, 4);
        a.record(0, 500.0);
        a.record(0, 500.0);
        assert_eq!(a.decide(4, t0 + 20 * S, false).map(|d| d.to), Some(5));
        // Scale-in waits for both cooldowns, and stops at min.
        a.record(0, 1.0);
        a.record(0, 1.0);
        assert_eq!(a.decide(5, t0 + 25 * S, false), None);
        assert_eq!(a.decide(5, t0 + 30 * S, false).map(|d| d.to), Some(4));
    }

    #[test]
    fn instances_still_starting_hold_every_decision() {
        let mut a = scaler(steps(), 1);
        a.record(0, 500.0);
        assert_eq!(a.decide(1, Instant::now(), true), None);
        assert!(a.decide(1, Instant::now(), false).is_some());
    }

    #[test]
    fn target_tracking_sizes_to_the_target() {
        let mut a = scaler(PolicyKind::TargetTracking { target: 30.0 }, 1);
        a.record(0, 90.0);
        assert_eq!(a.decide(2, Instant::now(), false).map(|d| d.to), Some(5));
        let mut a = scaler(PolicyKind::TargetTracking { target: 30.0 }, 1);
        a.record(0, 10.0);
        assert_eq!(a.decide(3, Instant::now(), false).map(|d| d.to), Some(1));
    }

    #[test]
    fn out_if_any_policy_says_out_in_only_if_all_say_in() {
        let both = |cpu: f64, rate: f64| {
            let mut a = Autoscaler::new(
                Autoscale {
                    scale_out_cooldown: S,
                    scale_in_cooldown: S,
                    policies: vec![
                        Policy {
                            kind: steps(),
                            period: S,
                            periods: 1,
                        },
                        Policy {
                            kind: PolicyKind::Cpu {
                                scale_out_above: 90.0,
                                scale_in_below: 70.0,
                            },
                            period: S,
                            periods: 1,
                        },
                    ],
                },
                1,
                5,
            );
            a.record(0, rate);
            a.record(1, cpu);
            a.decide(3, Instant::now(), false).map(|d| d.to)
        };
        assert_eq!(both(95.0, 30.0), Some(4), "cpu says out");
        assert_eq!(both(50.0, 30.0), None, "cpu says in, rate holds");
        assert_eq!(both(50.0, 10.0), Some(2), "both say in");
    }
}
