//! The routing table: an immutable snapshot of groups, weights and routable targets, swapped atomically.

use std::sync::Arc;

use crate::backend::Backend;
use crate::worker::Sequence;

pub use cutover_spec::Balance;

/// One group as the request path sees it. The name is shared, so a request copies a pointer.
#[derive(Debug)]
pub struct GroupRoute {
    pub name: Arc<str>,
    pub weight: u32,
    pub balance: Balance,
    /// The targets requests may go to: the healthy ones, or all of them when failing open.
    pub targets: Vec<Arc<Backend>>,
    next: Sequence,
}

impl GroupRoute {
    pub fn new(name: Arc<str>, weight: u32, balance: Balance, targets: Vec<Arc<Backend>>) -> Self {
        Self {
            name,
            weight,
            balance,
            targets,
            next: Sequence::starting_at(fastrand::usize(..)),
        }
    }

    fn pick(&self, tried: &[Arc<Backend>]) -> Option<&Arc<Backend>> {
        let untried = |b: &&Arc<Backend>| !tried.iter().any(|t| Arc::ptr_eq(t, b));
        match self.balance {
            Balance::RoundRobin => {
                let n = self.targets.len();
                let start = self.next.next();
                (0..n).map(|i| &self.targets[(start + i) % n]).find(untried)
            }
            Balance::LeastOutstanding => {
                // Ties go round robin, so equal targets share evenly.
                let n = self.targets.len();
                let start = self.next.next();
                (0..n)
                    .map(|i| &self.targets[(start + i) % n])
                    .filter(untried)
                    .min_by_key(|b| b.in_flight())
            }
            Balance::PeakEwma => {
                let n = self.targets.len();
                if n < 2 {
                    return self.targets.first().filter(untried);
                }
                // Two distinct targets at random; the cheaper one. A retry (some tried)
                // that draws a tried one takes the cheapest untried instead.
                let i = fastrand::usize(..n);
                let j = (i + 1 + fastrand::usize(..n - 1)) % n;
                let (a, b) = (&self.targets[i], &self.targets[j]);
                let cost = |b: &Arc<Backend>| b.latency.cost(b.in_flight());
                if untried(&a) && untried(&b) {
                    return Some(if cost(a) <= cost(b) { a } else { b });
                }
                self.targets
                    .iter()
                    .filter(untried)
                    .min_by(|a, b| cost(a).total_cmp(&cost(b)))
            }
        }
    }
}

/// Spreads consecutive request numbers over the weight ring, so any window of `total` requests
/// splits exactly by weight while groups still interleave.
const SPREAD: usize = 7919;

/// Everything the request path needs to choose a target. Never mutated: a change builds a new one.
#[derive(Debug)]
pub struct Snapshot {
    pub groups: Vec<GroupRoute>,
    total_weight: usize,
    counter: Sequence,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Snapshot {
    pub fn new(groups: Vec<GroupRoute>) -> Self {
        let total_weight = groups
            .iter()
            .filter(|g| !g.targets.is_empty())
            .map(|g| g.weight as usize)
            .sum();
        Self {
            groups,
            total_weight,
            counter: Sequence::starting_at(0),
        }
    }

    /// A target for the next request, avoiding `tried`; its group's name comes with it.
    pub fn pick(&self, tried: &[Arc<Backend>]) -> Option<(&GroupRoute, Arc<Backend>)> {
        let live = || {
            self.groups
                .iter()
                .filter(|g| !g.targets.is_empty() && g.weight > 0)
        };
        if self.total_weight > 0 {
            let n = self.counter.next();
            let spread = if self.total_weight.is_multiple_of(SPREAD) {
                n
            } else {
                n.wrapping_mul(SPREAD)
            };
            let mut slot = spread % self.total_weight;
            for g in live() {
                if slot < g.weight as usize {
                    if let Some(b) = g.pick(tried) {
                        return Some((g, b.clone()));
                    }
                    break;
                }
                slot -= g.weight as usize;
            }
        }
        // The chosen group had no untried target (a retry): any other group with weight will do.
        for g in live() {
            if let Some(b) = g.pick(tried) {
                return Some((g, b.clone()));
            }
        }
        None
    }
}

impl Snapshot {
    /// A target in the group named `group` only, whatever its weight: for a listener that
    /// previews one set.
    pub fn pick_in(
        &self,
        group: &str,
        tried: &[Arc<Backend>],
    ) -> Option<(&GroupRoute, Arc<Backend>)> {
        let g = self.groups.iter().find(|g| &*g.name == group)?;
        g.pick(tried).map(|b| (g, b.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(port: u16) -> Arc<Backend> {
        Backend::new(
            Arc::from("a"),
            format!("127.0.0.1:{port}"),
            ([127, 0, 0, 1], port).into(),
        )
    }

    #[test]
    fn weights_split_exactly_over_a_window() {
        let a = GroupRoute::new(
            "a".into(),
            90,
            Balance::RoundRobin,
            vec![backend(1), backend(2)],
        );
        let b = GroupRoute::new(Arc::from("b"), 10, Balance::RoundRobin, vec![backend(3)]);
        let snap = Snapshot::new(vec![a, b]);
        let to_b = (0..10_000)
            .filter(|_| snap.pick(&[]).is_some_and(|(g, _)| &*g.name == "b"))
            .count();
        assert_eq!(to_b, 1000);
    }

    #[test]
    fn round_robin_visits_every_target_and_retries_avoid_tried_ones() {
        let targets = vec![backend(1), backend(2), backend(3)];
        let snap = Snapshot::new(vec![GroupRoute::new(
            "a".into(),
            1,
            Balance::RoundRobin,
            targets.clone(),
        )]);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..300 {
            let (_, b) = snap.pick(&[]).expect("a target");
            *seen.entry(b.key.clone()).or_insert(0) += 1;
        }
        assert_eq!(
            seen.values().copied().collect::<Vec<_>>(),
            vec![100, 100, 100]
        );
        let (_, b) = snap.pick(&targets[..2]).expect("the untried target");
        assert!(Arc::ptr_eq(&b, &targets[2]));
        assert!(snap.pick(&targets).is_none());
    }

    #[test]
    fn pick_in_reaches_a_group_at_weight_zero() {
        let a = GroupRoute::new(Arc::from("a"), 100, Balance::RoundRobin, vec![backend(1)]);
        let b = GroupRoute::new(Arc::from("b"), 0, Balance::RoundRobin, vec![backend(2)]);
        let snap = Snapshot::new(vec![a, b]);
        assert!((0..10).all(|_| snap.pick_in("b", &[]).is_some_and(|(g, _)| &*g.name == "b")));
        assert!(snap.pick_in("c", &[]).is_none());
    }

    #[test]
    fn weight_zero_and_empty_groups_get_nothing() {
        let a = GroupRoute::new(Arc::from("a"), 0, Balance::RoundRobin, vec![backend(1)]);
        let b = GroupRoute::new(Arc::from("b"), 50, Balance::RoundRobin, vec![]);
        let c = GroupRoute::new(Arc::from("c"), 5, Balance::RoundRobin, vec![backend(2)]);
        let snap = Snapshot::new(vec![a, b, c]);
        assert!((0..100).all(|_| snap.pick(&[]).is_some_and(|(g, _)| &*g.name == "c")));
    }

    #[test]
    fn peak_ewma_sends_a_slow_target_almost_nothing_and_retries_elsewhere() {
        let targets: Vec<_> = (1..=4).map(backend).collect();
        let now = std::time::Instant::now();
        for (i, b) in targets.iter().enumerate() {
            let ms = if i == 0 { 500 } else { 2 };
            b.latency.observe(std::time::Duration::from_millis(ms), now);
        }
        let snap = Snapshot::new(vec![GroupRoute::new(
            "a".into(),
            1,
            Balance::PeakEwma,
            targets.clone(),
        )]);
        let to_slow = (0..1000)
            .filter(|_| {
                snap.pick(&[])
                    .is_some_and(|(_, b)| Arc::ptr_eq(&b, &targets[0]))
            })
            .count();
        assert_eq!(to_slow, 0, "never the dearer of two");
        // Requests waiting on the fast ones make the slow one worth a try.
        let _held: Vec<_> = (0..900)
            .map(|i| targets[1 + i % 3].clone().begin())
            .collect();
        assert!((0..1000).any(|_| snap
            .pick(&[])
            .is_some_and(|(_, b)| Arc::ptr_eq(&b, &targets[0]))));
        let (_, b) = snap.pick(&targets[1..]).expect("the untried one");
        assert!(Arc::ptr_eq(&b, &targets[0]));
        assert!(snap.pick(&targets).is_none());
    }

    #[test]
    fn least_outstanding_prefers_the_idle_target() {
        let busy = backend(1);
        let idle = backend(2);
        let _held: Vec<_> = (0..3).map(|_| busy.clone().begin()).collect();
        let snap = Snapshot::new(vec![GroupRoute::new(
            "a".into(),
            1,
            Balance::LeastOutstanding,
            vec![busy, idle.clone()],
        )]);
        assert!((0..10).all(|_| snap.pick(&[]).is_some_and(|(_, b)| Arc::ptr_eq(&b, &idle))));
    }
}
