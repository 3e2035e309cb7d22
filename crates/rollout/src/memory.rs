//! The in-memory provider: a fleet and a traffic plane that live in a mutex, for tests of the
//! executor and of anything above it. Time is the caller's (tokio's paused clock runs deadlines
//! of minutes in milliseconds); states move on when they are observed, a poll at a time. It can
//! fail in the ways a real provider does: targets that turn unhealthy, instances that never get
//! ready, drains that take a while, a listener that refuses a change, an instance gone from
//! outside.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use cutover_deploy::Sample;

use cutover_control::{Reason, Side, TargetHealth, TargetState};
use cutover_store::StoreError;

use crate::failure::Failure;
use crate::fleet::{Fleet, Machine, MachineState};
use crate::traffic::TrafficPlane;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A call the provider refuses, as an API would (not retryable).
    #[error("{operation}: {message}")]
    Refused {
        operation: &'static str,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Failure for MemoryError {
    fn retryable(&self) -> bool {
        matches!(self, MemoryError::Store(_))
    }
}

/// Everything the provider holds, open to a test: its faults to set, what it saw to check.
#[derive(Debug, Default)]
pub struct Cloud {
    next_id: u32,
    pub machines: Vec<Machine>,
    /// Observations left before a new instance is ready.
    boot_polls: BTreeMap<String, u32>,
    /// Registered targets per side: id → (state, observations left in it).
    pub targets: BTreeMap<Side, BTreeMap<String, (TargetState, u32)>>,
    pub weights: (u32, u32),
    pub weight_changes: Vec<(u32, u32)>,
    // Faults.
    /// Versions whose targets fail their health checks (answering 500).
    pub unhealthy_versions: HashSet<String>,
    /// Versions whose instances never get ready.
    pub never_ready_versions: HashSet<String>,
    /// Observations a drain takes.
    pub drain_polls: u32,
    /// The listener refuses weight changes.
    pub refuse_weights: bool,
    /// There is a preview listener; where it points once a deploy pointed it.
    pub has_preview: bool,
    pub preview: Option<Side>,
    /// What each side's target group answers in any window; a side absent has no numbers.
    pub metrics: BTreeMap<Side, Sample>,
    /// Windows asked for, per side: (side, since).
    pub sampled: Vec<(Side, SystemTime)>,
    // What it saw.
    /// Most instances running at once.
    pub peak_running: usize,
    /// Fewest healthy targets on weighted sides, once set to `Some` (after a first deploy).
    pub min_serving: Option<usize>,
    /// Instances that had served, terminated while their drain was still going (one that never
    /// turned healthy took no traffic, and may be removed at once).
    pub terminated_while_draining: Vec<String>,
    /// Targets that were healthy at some point: they took traffic.
    served: HashSet<String>,
    /// Instances registered before they were ready, or on the other side.
    pub misregistered: Vec<String>,
}

/// The in-memory fleet and traffic plane (one value is both).
pub struct Memory(Mutex<Cloud>);

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

impl Memory {
    /// An empty cloud whose listener sends everything to blue.
    pub fn new() -> Self {
        Memory(Mutex::new(Cloud {
            weights: (1, 0),
            ..Cloud::default()
        }))
    }

    pub fn cloud(&self) -> MutexGuard<'_, Cloud> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Instances not gone.
    pub fn running(&self) -> Vec<Machine> {
        self.cloud()
            .machines
            .iter()
            .filter(|m| !matches!(m.state, MachineState::Gone { .. }))
            .cloned()
            .collect()
    }

    /// The versions of the instances running, sorted.
    pub fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self.running().into_iter().map(|m| m.version).collect();
        v.sort();
        v
    }

    /// Takes an instance away, as an operator or the provider would.
    pub fn kill(&self, id: &str) {
        if let Some(m) = self.cloud().machines.iter_mut().find(|m| m.id == id) {
            m.state = MachineState::Gone {
                detail: "terminated".into(),
            };
        }
    }
}

impl Fleet for Memory {
    type Error = MemoryError;

    async fn launch(&self, version: &str, side: Side, _: u64) -> Result<String, MemoryError> {
        let mut c = self.cloud();
        c.next_id += 1;
        let id = format!("i-{:04}", c.next_id);
        let launched_at = format!("{:08}", c.next_id);
        let polls = if c.never_ready_versions.contains(version) {
            u32::MAX
        } else {
            2
        };
        c.boot_polls.insert(id.clone(), polls);
        c.machines.push(Machine {
            id: id.clone(),
            version: version.into(),
            side,
            state: MachineState::Booting {
                detail: "pending".into(),
            },
            image: format!("image-{version}"),
            zone: None,
            launched_at,
            auto_scaling_group: None,
        });
        let running = c
            .machines
            .iter()
            .filter(|m| !matches!(m.state, MachineState::Gone { .. }))
            .count();
        c.peak_running = c.peak_running.max(running);
        Ok(id)
    }

    async fn machines(&self) -> Result<Vec<Machine>, MemoryError> {
        let mut c = self.cloud();
        let c = &mut *c;
        for m in &mut c.machines {
            let Some(left) = c.boot_polls.get_mut(&m.id) else {
                continue;
            };
            if *left == 0 {
                if matches!(m.state, MachineState::Booting { .. }) {
                    m.state = MachineState::Ready;
                }
            } else if *left != u32::MAX {
                *left -= 1;
            }
        }
        Ok(c.machines.clone())
    }

    async fn terminate(&self, ids: &[String]) -> Result<(), MemoryError> {
        let mut c = self.cloud();
        for id in ids {
            let draining = c
                .targets
                .values()
                .any(|t| t.get(id).is_some_and(|(s, _)| *s == TargetState::Draining));
            if draining && c.served.contains(id) {
                c.terminated_while_draining.push(id.clone());
            }
            for t in c.targets.values_mut() {
                t.remove(id);
            }
            if let Some(m) = c.machines.iter_mut().find(|m| &m.id == id) {
                m.state = MachineState::Gone {
                    detail: "terminated".into(),
                };
            }
        }
        Ok(())
    }
}

impl TrafficPlane for Memory {
    type Error = MemoryError;

    async fn register(&self, side: Side, ids: &[String]) -> Result<(), MemoryError> {
        let mut c = self.cloud();
        for id in ids {
            let Some(m) = c.machines.iter().find(|m| &m.id == id).cloned() else {
                continue;
            };
            if matches!(m.state, MachineState::Gone { .. }) {
                return Err(MemoryError::Refused {
                    operation: "register",
                    message: format!("InvalidTarget: {id} is not in a valid state"),
                });
            }
            if m.state != MachineState::Ready || m.side != side {
                c.misregistered.push(id.clone());
            }
            let state = if c.unhealthy_versions.contains(&m.version) {
                TargetState::Unhealthy
            } else {
                TargetState::Initial
            };
            c.targets
                .entry(side)
                .or_default()
                .insert(id.clone(), (state, 1));
        }
        Ok(())
    }

    async fn deregister(&self, side: Side, ids: &[String]) -> Result<(), MemoryError> {
        let mut c = self.cloud();
        let polls = c.drain_polls;
        for id in ids {
            if let Some(t) = c.targets.entry(side).or_default().get_mut(id) {
                *t = (TargetState::Draining, polls);
            }
        }
        Ok(())
    }

    async fn health(&self, side: Side) -> Result<Vec<TargetHealth>, MemoryError> {
        let mut c = self.cloud();
        let c = &mut *c;
        let targets = c.targets.entry(side).or_default();
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (id, (state, left)) in targets.iter_mut() {
            match state {
                TargetState::Initial if *left == 0 => {
                    *state = TargetState::Healthy;
                    c.served.insert(id.clone());
                }
                TargetState::Draining if *left == 0 => {
                    gone.push(id.clone());
                    continue;
                }
                _ => *left = left.saturating_sub(1),
            }
            let reason = match state {
                TargetState::Initial => Some(Reason::InitialHealthChecking),
                TargetState::Unhealthy => Some(Reason::ResponseCodeMismatch),
                TargetState::Draining => Some(Reason::DeregistrationInProgress),
                _ => None,
            };
            out.push(TargetHealth {
                id: id.clone(),
                state: *state,
                reason,
                description: (*state == TargetState::Unhealthy)
                    .then(|| "Health checks failed with these codes: [500]".to_owned()),
            });
        }
        for id in gone {
            targets.remove(&id);
        }
        // Serving capacity: healthy targets on sides with weight.
        let serving: usize = Side::BOTH
            .into_iter()
            .filter(|s| {
                let (blue, green) = c.weights;
                (if *s == Side::Blue { blue } else { green }) > 0
            })
            .map(|s| {
                c.targets.get(&s).map_or(0, |t| {
                    t.values()
                        .filter(|(st, _)| *st == TargetState::Healthy)
                        .count()
                })
            })
            .sum();
        if let Some(min) = &mut c.min_serving {
            *min = (*min).min(serving);
        }
        Ok(out)
    }

    async fn weights(&self) -> Result<(u32, u32), MemoryError> {
        Ok(self.cloud().weights)
    }

    async fn set_weights(&self, blue: u32, green: u32) -> Result<(), MemoryError> {
        let mut c = self.cloud();
        if c.refuse_weights {
            return Err(MemoryError::Refused {
                operation: "set weights",
                message: "AccessDenied: not authorized to change the listener".into(),
            });
        }
        c.weights = (blue, green);
        c.weight_changes.push((blue, green));
        Ok(())
    }

    async fn sample(&self, side: Side, since: SystemTime) -> Result<Option<Sample>, MemoryError> {
        let mut cloud = self.cloud();
        cloud.sampled.push((side, since));
        Ok(cloud.metrics.get(&side).copied())
    }

    async fn point_preview(&self, side: Side) -> Result<bool, MemoryError> {
        let mut c = self.cloud();
        if c.has_preview {
            c.preview = Some(side);
        }
        Ok(c.has_preview)
    }
}
