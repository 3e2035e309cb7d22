//! What one more request to a target costs, for latency-aware balancing: a peak-sensitive
//! moving average of its response times (linkerd's and Finagle's peak-EWMA) times the requests
//! already waiting on it. Power of two choices over this cost sends a slow target a share of
//! traffic that shrinks with its slowness, and a hung one (its waiting requests piling up)
//! almost none, without a central queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How fast old response times fade: after this long without answers an average has moved
/// about two thirds of the way to the next one.
pub const DECAY: Duration = Duration::from_secs(10);

/// The cost of a target nothing is known of yet: neither free (a fresh target would be sent
/// everything before its first answer) nor dear (it would never be tried).
pub const UNKNOWN: Duration = Duration::from_millis(1);

fn nanos(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(at.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

/// A target's moving average of response times. Updated with plain loads and stores: two
/// answers at the same instant may lose one observation, which an average does not miss,
/// and the request path takes no lock and spins on no compare-and-swap.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// The average in nanoseconds, as `f64` bits; 0 while nothing was observed.
    average: AtomicU64,
    /// When it was last updated (`nanos`).
    stamp: AtomicU64,
}

impl PeakEwma {
    /// One response took `rtt`, observed at `now`. A slower answer than the average replaces it
    /// at once (the peak); a faster one moves it by how long it has been since the last.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        let now = nanos(now);
        let before = f64::from_bits(self.average.load(Ordering::Relaxed));
        let last = self.stamp.swap(now, Ordering::Relaxed);
        let next = if before == 0.0 || rtt > before {
            rtt
        } else {
            let elapsed = now.saturating_sub(last) as f64;
            let w = (-elapsed / DECAY.as_nanos() as f64).exp();
            before * w + rtt * (1.0 - w)
        };
        self.average.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The average response time in nanoseconds; [`UNKNOWN`] before the first answer.
    pub fn average(&self) -> f64 {
        match f64::from_bits(self.average.load(Ordering::Relaxed)) {
            a if a > 0.0 => a,
            _ => UNKNOWN.as_nanos() as f64,
        }
    }

    /// What one more request costs beside `in_flight` already waiting.
    pub fn cost(&self, in_flight: usize) -> f64 {
        self.average() * (in_flight as f64 + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_answer_counts_at_once_and_fast_ones_wear_it_down() {
        let e = PeakEwma::default();
        let t0 = Instant::now();
        assert_eq!(e.average(), UNKNOWN.as_nanos() as f64);
        e.observe(Duration::from_millis(2), t0);
        assert_eq!(e.average(), 2e6);
        e.observe(Duration::from_millis(500), t0 + Duration::from_millis(1));
        assert_eq!(e.average(), 500e6, "the peak at once");
        e.observe(Duration::from_millis(2), t0 + Duration::from_millis(2));
        assert!(
            e.average() > 499e6,
            "one fast answer right after moves it little"
        );
        e.observe(Duration::from_millis(2), t0 + Duration::from_secs(30));
        assert!(
            e.average() < 30e6,
            "after three decays it is mostly the new answers: {}",
            e.average()
        );
    }

    #[test]
    fn waiting_requests_raise_the_cost() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(10), Instant::now());
        assert!(e.cost(4) > e.cost(0) * 4.9);
    }
}
