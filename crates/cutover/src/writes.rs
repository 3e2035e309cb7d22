//! Whether the state database takes writes: a failed write (a full disk) is warned about, not
//! fatal, because serving traffic matters more than recording it; the warnings are bounded, and
//! `cutover status` says what is not being saved until a write succeeds again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a run of failed writes is logged again, with its count.
const EVERY: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct Writes {
    trouble: Mutex<Option<Trouble>>,
}

#[derive(Debug, Clone)]
struct Trouble {
    error: String,
    since: Instant,
    failed: u64,
    logged_at: Instant,
    logged_count: u64,
}

impl Writes {
    /// Notes how a write of `what` went; logs the first failure of a run at once, then at most
    /// every 30 s, and the recovery once.
    pub fn record<E: std::fmt::Display>(&self, what: &str, result: Result<(), E>) {
        let mut trouble = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match (result, trouble.as_mut()) {
            (Ok(()), None) => {}
            (Ok(()), Some(t)) => {
                tracing::warn!(
                    failed_writes = t.failed,
                    after_s = now.duration_since(t.since).as_secs(),
                    "the state database takes writes again; what failed meanwhile was not saved"
                );
                *trouble = None;
            }
            (Err(e), None) => {
                tracing::error!(%what, error = %e, "cannot record state (traffic is served as before; the state is saved again once writes succeed)");
                *trouble = Some(Trouble {
                    error: e.to_string(),
                    since: now,
                    failed: 1,
                    logged_at: now,
                    logged_count: 1,
                });
            }
            (Err(e), Some(t)) => {
                t.failed += 1;
                t.error = e.to_string();
                if now.duration_since(t.logged_at) >= EVERY {
                    tracing::error!(%what, error = %e, failed_writes = t.failed - t.logged_count, "still cannot record state");
                    t.logged_at = now;
                    t.logged_count = t.failed;
                }
            }
        }
    }

    /// For `cutover status`: `None` while writes succeed.
    pub fn status(&self) -> Option<cutover_api::admin::StateWrites> {
        let trouble = self.trouble.lock().unwrap_or_else(|p| p.into_inner());
        trouble.as_ref().map(|t| cutover_api::admin::StateWrites {
            error: t.error.clone(),
            failed_writes: t.failed,
            for_s: t.since.elapsed().as_secs(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_writes_are_counted_until_one_succeeds() {
        let w = Writes::default();
        assert_eq!(w.status(), None);
        w.record("event", Err::<(), _>("database or disk is full"));
        w.record("instance", Err::<(), _>("database or disk is full"));
        let s = w.status().expect("failing");
        assert_eq!(s.failed_writes, 2, "{s:?}");
        assert_eq!(s.error, "database or disk is full");
        w.record::<&str>("event", Ok(()));
        assert_eq!(w.status(), None);
    }
}
