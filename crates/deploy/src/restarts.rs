//! Restart back-off per instance slot: a slot whose instances die young waits, the others never.
//!
//! A slot is one place in a version's share of the fleet. Each instance of a version occupies
//! one; when it ends, the slot keeps the story. An instance that served past the settle window
//! and then died leaves a slot that is filled again at once: its death says nothing about its
//! release. One that died before that (never healthy, or healthy only a moment) counts against
//! its slot, whose next launch waits, exponentially longer with each such death in a row and
//! capped. Waiting is per slot: a crash loop in one slot never holds back the replacement of a
//! healthy instance lost in another, and the launches that fill empty slots go at once.
//!
//! The clock is the caller's: every method that needs the time takes it.

use std::time::{Duration, Instant};

/// How long a slot waits after instances that died young.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first early death.
    pub initial: Duration,
    pub max: Duration,
    /// An instance healthy for this long had started well: a death afterwards is not counted.
    pub settle: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            settle: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The wait before the next launch into a slot after `deaths` early deaths in a row.
    pub fn delay(&self, deaths: u32) -> Duration {
        if deaths == 0 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(deaths.saturating_sub(1).min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Whether an instance that turned healthy at `healthy_at` (never, if `None`) and ended at
    /// `ended` died young.
    pub fn early(&self, healthy_at: Option<Instant>, ended: Instant) -> bool {
        healthy_at.is_none_or(|at| ended.saturating_duration_since(at) < self.settle)
    }
}

/// How an instance left its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It died or failed before it had served past the settle window.
    Early,
    /// It died after it had served: the slot's count starts over.
    Lost,
    /// The executor stopped it (drained, removed, scaled in): nothing is counted.
    Stopped,
}

#[derive(Debug, Clone)]
struct Slot {
    version: String,
    occupant: Option<String>,
    /// Early deaths in a row in this slot.
    deaths: u32,
    hold_until: Option<Instant>,
}

/// A slot waiting out its back-off: for status pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub version: String,
    pub deaths: u32,
    pub for_: Duration,
}

/// A release whose instances die young in most of its slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashLoop {
    pub version: String,
    /// Slots at or past [`CRASH_LOOP_DEATHS`] early deaths in a row.
    pub slots: u32,
    pub of: u32,
}

impl std::fmt::Display for CrashLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is crash-looping: instances died young {CRASH_LOOP_DEATHS} or more times in a row in {} of {} slots; their launches back off",
            self.version, self.slots, self.of
        )
    }
}

/// Early deaths in a row after which a slot counts towards a crash loop.
pub const CRASH_LOOP_DEATHS: u32 = 3;

/// The slots of every version the executor launches.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    policy: Backoff,
    slots: Vec<Slot>,
}

impl Restarts {
    pub fn new(policy: Backoff) -> Self {
        Self {
            policy,
            slots: Vec::new(),
        }
    }

    pub fn policy(&self) -> Backoff {
        self.policy
    }

    /// Of the launches of `version` the planner asks for (one id each), those that may go now,
    /// each in a slot of its own. Empty slots not backing off are filled first; an empty slot
    /// still backing off holds one launch back; launches beyond the empty slots get new ones.
    pub fn admit(&mut self, version: &str, ids: Vec<String>, now: Instant) -> Vec<String> {
        let mut ready: Vec<usize> = Vec::new();
        let mut held = 0usize;
        for (n, s) in self.slots.iter().enumerate() {
            if s.version != version || s.occupant.is_some() {
                continue;
            }
            if s.hold_until.is_some_and(|t| now < t) {
                held += 1;
            } else {
                ready.push(n);
            }
        }
        let mut admitted = Vec::new();
        let mut ready = ready.into_iter();
        for (k, id) in ids.into_iter().enumerate() {
            if let Some(n) = ready.next() {
                self.slots[n].occupant = Some(id.clone());
                admitted.push(id);
            } else if k >= held + admitted.len() {
                self.slots.push(Slot {
                    version: version.to_owned(),
                    occupant: Some(id.clone()),
                    deaths: 0,
                    hold_until: None,
                });
                admitted.push(id);
            }
        }
        admitted
    }

    /// `instance` left its slot, as `end` says. Unknown instances (adopted from an earlier
    /// controller) are given a slot's story only when they die young.
    pub fn ended(&mut self, instance: &str, end: End, now: Instant) {
        let slot = match self
            .slots
            .iter_mut()
            .find(|s| s.occupant.as_deref() == Some(instance))
        {
            Some(slot) => slot,
            None => return,
        };
        slot.occupant = None;
        match end {
            End::Early => {
                slot.deaths = slot.deaths.saturating_add(1);
                slot.hold_until = Some(now + self.policy.delay(slot.deaths));
            }
            End::Lost => {
                slot.deaths = 0;
                slot.hold_until = None;
            }
            End::Stopped => {}
        }
    }

    /// An instance of `version` the executor did not launch (re-adopted after a restart) takes
    /// a slot, so its death is counted like any other.
    pub fn adopt(&mut self, version: &str, instance: &str) {
        if self
            .slots
            .iter()
            .any(|s| s.occupant.as_deref() == Some(instance))
        {
            return;
        }
        let empty = self
            .slots
            .iter_mut()
            .find(|s| s.version == version && s.occupant.is_none());
        match empty {
            Some(s) => s.occupant = Some(instance.to_owned()),
            None => self.slots.push(Slot {
                version: version.to_owned(),
                occupant: Some(instance.to_owned()),
                deaths: 0,
                hold_until: None,
            }),
        }
    }

    /// An instance that served past the settle window: its slot's count starts over.
    pub fn settled(&mut self, instance: &str) {
        if let Some(s) = self
            .slots
            .iter_mut()
            .find(|s| s.occupant.as_deref() == Some(instance))
        {
            s.deaths = 0;
            s.hold_until = None;
        }
    }

    /// Empty slots still backing off, soonest first.
    pub fn held(&self, now: Instant) -> Vec<Held> {
        let mut held: Vec<Held> = self
            .slots
            .iter()
            .filter(|s| s.occupant.is_none())
            .filter_map(|s| {
                let until = s.hold_until.filter(|t| now < *t)?;
                Some(Held {
                    version: s.version.clone(),
                    deaths: s.deaths,
                    for_: until - now,
                })
            })
            .collect();
        held.sort_by_key(|h| h.for_);
        held
    }

    /// Whether `version` crash-loops: at least half of `desired` slots have seen
    /// [`CRASH_LOOP_DEATHS`] early deaths in a row.
    pub fn crash_loop(&self, version: &str, desired: u32) -> Option<CrashLoop> {
        let mine = self.slots.iter().filter(|s| s.version == version);
        let looping = mine
            .clone()
            .filter(|s| s.deaths >= CRASH_LOOP_DEATHS)
            .count() as u32;
        let of = (mine.count() as u32).max(desired);
        (looping > 0 && looping * 2 >= desired.max(1)).then(|| CrashLoop {
            version: version.to_owned(),
            slots: looping,
            of,
        })
    }

    /// Forgets the slots of versions not in `keep` that hold no instance.
    pub fn retain(&mut self, keep: &[&str]) {
        self.slots
            .retain(|s| s.occupant.is_some() || keep.contains(&s.version.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn delays_double_to_the_cap() {
        let b = Backoff::default();
        let delays: Vec<u64> = (0..=8).map(|n| b.delay(n).as_millis() as u64).collect();
        assert_eq!(
            delays,
            vec![0, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        let t = Instant::now();
        assert!(b.early(None, t));
        assert!(b.early(Some(t), t + Duration::from_millis(1999)));
        assert!(!b.early(Some(t), t + Duration::from_secs(2)));
    }

    #[test]
    fn a_lost_instance_is_replaced_at_once_and_one_that_died_young_waits() {
        let t = Instant::now();
        let mut r = Restarts::default();
        assert_eq!(r.admit("v1", ids(&["a", "b"]), t), ids(&["a", "b"]));
        r.ended("a", End::Lost, t);
        assert_eq!(r.admit("v1", ids(&["c"]), t), ids(&["c"]), "lost: at once");
        r.ended("b", End::Early, t);
        assert!(
            r.admit("v1", ids(&["d"]), t).is_empty(),
            "died young: waits"
        );
        let later = t + Duration::from_millis(500);
        assert_eq!(r.admit("v1", ids(&["d"]), later), ids(&["d"]));
        r.ended("d", End::Early, later);
        assert!(r
            .admit("v1", ids(&["e"]), later + Duration::from_millis(999))
            .is_empty());
        assert_eq!(
            r.admit("v1", ids(&["e"]), later + Duration::from_millis(1000)),
            ids(&["e"]),
            "the second death in a row waits twice as long"
        );
    }

    #[test]
    fn a_crash_loop_in_one_slot_never_holds_back_the_others() {
        let t = Instant::now();
        let mut r = Restarts::default();
        r.admit("v1", ids(&["a", "b", "c", "d"]), t);
        r.ended("a", End::Early, t);
        r.ended("b", End::Lost, t);
        r.ended("c", End::Lost, t);
        // Three slots are empty, one backing off: two launches go, the third waits for it.
        let admitted = r.admit("v1", ids(&["x", "y", "z"]), t);
        assert_eq!(admitted, ids(&["x", "y"]));
        // Growing the group (scale out) is never held back by the waiting slot.
        let admitted = r.admit("v1", ids(&["p", "q"]), t);
        assert_eq!(
            admitted,
            ids(&["q"]),
            "one waits for the held slot, one gets a new slot"
        );
        assert_eq!(r.held(t).len(), 1);
    }

    #[test]
    fn stopping_counts_nothing_and_settling_starts_over() {
        let t = Instant::now();
        let mut r = Restarts::default();
        r.admit("v1", ids(&["a"]), t);
        r.ended("a", End::Early, t);
        let t1 = t + Duration::from_secs(1);
        r.admit("v1", ids(&["b"]), t1);
        r.settled("b");
        r.ended("b", End::Stopped, t1);
        assert_eq!(r.admit("v1", ids(&["c"]), t1), ids(&["c"]));
        r.ended("c", End::Early, t1);
        assert_eq!(
            r.held(t1)[0].deaths,
            1,
            "the count started over when b settled"
        );
    }

    #[test]
    fn a_release_that_dies_young_in_most_slots_is_a_crash_loop() {
        let mut t = Instant::now();
        let mut r = Restarts::default();
        let mut n = 0;
        for _ in 0..CRASH_LOOP_DEATHS {
            let batch: Vec<String> = (0..4)
                .map(|_| {
                    n += 1;
                    format!("i{n}")
                })
                .collect();
            let admitted = r.admit("v2", batch, t);
            assert_eq!(admitted.len(), 4);
            for id in &admitted {
                r.ended(id, End::Early, t);
            }
            t += Duration::from_secs(60);
        }
        let looped = r.crash_loop("v2", 4).expect("a crash loop");
        assert_eq!((looped.slots, looped.of), (4, 4));
        assert!(looped.to_string().contains("v2 is crash-looping"));
        assert_eq!(r.crash_loop("v1", 4), None);
        r.retain(&["v1"]);
        assert_eq!(
            r.crash_loop("v2", 4),
            None,
            "forgotten once no longer wanted"
        );
    }

    #[test]
    fn adopted_instances_take_a_slot() {
        let t = Instant::now();
        let mut r = Restarts::default();
        r.adopt("v1", "a");
        r.adopt("v1", "a");
        r.ended("a", End::Early, t);
        assert!(r.admit("v1", ids(&["b"]), t).is_empty());
    }
}
