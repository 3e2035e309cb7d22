//! Tries of an idempotent bodiless request: how long one try waits for a target's response head
//! before the request goes to another target, what tells a hung target from a slow one, and the
//! budget that keeps such retries from hammering a fleet that is sick as a whole.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use cutover_spec::TryTimeout;

/// `auto` never gives a try less than this: a hiccup of the machine is not a hung target.
pub const AUTO_FLOOR: Duration = Duration::from_millis(250);
/// `auto` gives a try this many times the group's recent p99.
pub const AUTO_MULTIPLE: u32 = 4;
/// Requests a target must have in flight, none answered during a whole try, to be judged hung:
/// one slow request on a quiet target is only slow.
pub const HUNG_MIN_IN_FLIGHT: usize = 2;
/// Retries after a try timeout always allowed at once, whatever the share (Envoy's
/// `min_retry_concurrency`): with little traffic a share would round down to none.
pub const BUDGET_MIN_CONCURRENT: usize = 3;
/// Answers a group needs in its window before its p99 is trusted.
pub const P99_MIN_ANSWERS: u64 = 100;

/// The bound on one try of a request to `target`, if any.
pub fn limit(policy: TryTimeout, target: &Pace) -> Option<Duration> {
    match policy {
        TryTimeout::Off => None,
        TryTimeout::After(d) => Some(d),
        // Until the group's latency is known there is nothing to call slow: a try waits as
        // long as the request may.
        TryTimeout::Auto => target
            .group_p99()
            .map(|p99| (p99 * AUTO_MULTIPLE).max(AUTO_FLOOR)),
    }
}

/// Milliseconds since the first call, as one process-wide clock in an atomic.
fn millis(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// A target's progress as the registry's tick sees it, and its group's recent latency. The
/// request path only reads it: the tick notices new answers, so a request pays nothing for it.
#[derive(Debug)]
pub struct Pace {
    /// Answers counted at the last tick.
    answered: AtomicU64,
    /// When a tick last found the count changed (`millis`).
    progressed: AtomicU64,
    /// The group's recent p99 in microseconds; 0 while not known.
    group_p99: AtomicU64,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            answered: AtomicU64::new(0),
            progressed: AtomicU64::new(millis(Instant::now())),
            group_p99: AtomicU64::new(0),
        }
    }
}

impl Pace {
    /// The tick: `answered` is the target's count of response heads so far.
    pub fn tick(&self, answered: u64, now: Instant) {
        if self.answered.swap(answered, Ordering::Relaxed) != answered {
            self.progressed.store(millis(now), Ordering::Relaxed);
        }
    }

    /// Whether the target answered anything after `since`, as far as the ticks saw. A tick
    /// stamps an answer when it notices it, never before it happened, so this may say yes for
    /// an answer from just before `since` but never no for one after it (a wrong no would eject
    /// a working target).
    pub fn answered_since(&self, since: Instant) -> bool {
        self.progressed.load(Ordering::Relaxed) >= millis(since)
    }

    pub fn set_group_p99(&self, p99: Option<Duration>) {
        let micros = p99.map_or(0, |d| {
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
        });
        self.group_p99.store(micros, Ordering::Relaxed);
    }

    pub fn group_p99(&self) -> Option<Duration> {
        match self.group_p99.load(Ordering::Relaxed) {
            0 => None,
            micros => Some(Duration::from_micros(micros)),
        }
    }
}

/// Retries after a try timeout in flight at once, bounded by a share of requests in flight
/// (Envoy's retry budget): when a whole fleet is slow, most requests wait where they are
/// instead of doubling the load on it.
#[derive(Debug)]
pub struct RetryBudget {
    percent: u32,
    retrying: AtomicUsize,
}

impl RetryBudget {
    pub fn new(percent: u32) -> Arc<Self> {
        Arc::new(Self {
            percent: percent.min(100),
            retrying: AtomicUsize::new(0),
        })
    }

    /// One more retry, if the budget has room beside `in_flight` requests; it counts until the
    /// returned guard drops.
    pub fn admit(self: &Arc<Self>, in_flight: usize) -> Option<Retrying> {
        if self.percent == 0 {
            return None;
        }
        let share = in_flight.saturating_mul(self.percent as usize) / 100;
        let allowed = share.max(BUDGET_MIN_CONCURRENT);
        self.retrying
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < allowed).then_some(n + 1)
            })
            .ok()?;
        Some(Retrying(self.clone()))
    }

    pub fn retrying(&self) -> usize {
        self.retrying.load(Ordering::Acquire)
    }
}

/// A retry the budget admitted.
#[derive(Debug)]
pub struct Retrying(Arc<RetryBudget>);

impl Drop for Retrying {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_group_p99_above_a_floor() {
        let pace = Pace::default();
        assert_eq!(limit(TryTimeout::Auto, &pace), None, "not known yet");
        pace.set_group_p99(Some(Duration::from_millis(2)));
        assert_eq!(limit(TryTimeout::Auto, &pace), Some(AUTO_FLOOR));
        pace.set_group_p99(Some(Duration::from_millis(300)));
        assert_eq!(
            limit(TryTimeout::Auto, &pace),
            Some(Duration::from_millis(1200))
        );
        assert_eq!(limit(TryTimeout::Off, &pace), None);
        let fixed = Duration::from_millis(80);
        assert_eq!(limit(TryTimeout::After(fixed), &pace), Some(fixed));
    }

    #[test]
    fn progress_is_what_a_tick_saw_change() {
        let pace = Pace::default();
        let start = Instant::now() + Duration::from_millis(5);
        pace.tick(0, start + Duration::from_millis(10));
        assert!(!pace.answered_since(start), "no answer yet");
        pace.tick(3, start + Duration::from_millis(20));
        assert!(pace.answered_since(start));
        assert!(!pace.answered_since(start + Duration::from_millis(30)));
        pace.tick(3, start + Duration::from_millis(40));
        assert!(
            !pace.answered_since(start + Duration::from_millis(30)),
            "the same count is no progress"
        );
    }

    #[test]
    fn the_budget_allows_a_share_with_a_minimum() {
        let budget = RetryBudget::new(20);
        let held: Vec<_> = (0..3).filter_map(|_| budget.admit(0)).collect();
        assert_eq!(held.len(), BUDGET_MIN_CONCURRENT);
        assert!(
            budget.admit(10).is_none(),
            "20% of 10 is 2, under the minimum"
        );
        let more: Vec<_> = (0..10).filter_map(|_| budget.admit(40)).collect();
        assert_eq!(more.len(), 5, "20% of 40 is 8, 3 held");
        drop(held);
        drop(more);
        assert_eq!(budget.retrying(), 0);
        assert!(RetryBudget::new(0).admit(1000).is_none());
    }
}
