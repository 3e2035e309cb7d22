//! Restart back-off for crash-looping instances: exponential, capped, reset by a stable run.

use std::time::Duration;

/// How long to wait before replacing a crashed instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// An instance that lived this long was not crash-looping: the next crash starts over.
    pub stable_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The delay before the next start, given how many crashes came in a row (1 for the first)
    /// and how long the last instance ran.
    pub fn delay(&self, consecutive_crashes: u32, last_run: Duration) -> Duration {
        if last_run >= self.stable_after || consecutive_crashes <= 1 {
            return if last_run >= self.stable_after {
                Duration::ZERO
            } else {
                self.initial
            };
        }
        let factor = 2u32.saturating_pow(consecutive_crashes.saturating_sub(1).min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_a_stable_run() {
        let b = Backoff::default();
        let quick = Duration::from_secs(1);
        let delays: Vec<u64> = (1..=8)
            .map(|n| b.delay(n, quick).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            vec![500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        assert_eq!(b.delay(5, Duration::from_secs(120)), Duration::ZERO);
    }
}
