//! Who runs a deployment, and what others ask of it. Where there is no daemon (AWS), the process
//! running a deploy holds a lease in the store (its pid, host and a heartbeat); another process
//! that wants it paused, promoted or aborted leaves a request there, which the runner takes at
//! its next look. A lease whose heartbeat stopped is nobody's: its deploy is picked up from the
//! record instead.

use std::time::{Duration, SystemTime};

use cutover_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// What another process asks of a running deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum Request {
    /// Hold at the current step until resumed or promoted (a canary).
    Pause,
    /// The next step now, or (`full`) straight to full size.
    Promote { full: bool },
    /// Roll back.
    Abort,
}

/// The process running a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub pid: u32,
    pub host: String,
    /// Seconds since the epoch of its last look.
    pub beat: u64,
    /// How often it looks, in milliseconds: its heartbeat is late after a few of them.
    pub every_ms: u64,
}

impl Lease {
    fn ours(every: Duration) -> Self {
        Self {
            pid: std::process::id(),
            host: host(),
            beat: now(),
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// Its heartbeat stopped: the process is gone, or cannot reach the store.
    pub fn stale(&self) -> bool {
        let late = Duration::from_millis(self.every_ms.saturating_mul(3)) + Duration::from_secs(15);
        now().saturating_sub(self.beat) > late.as_secs()
    }

    pub fn is_ours(&self) -> bool {
        self.pid == std::process::id() && self.host == host()
    }

    /// For messages: who, and when it was last seen.
    pub fn describe(&self) -> String {
        format!(
            "pid {} on {}, last seen {}s ago",
            self.pid,
            self.host,
            now().saturating_sub(self.beat)
        )
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn lease_key(deployment: u64) -> String {
    format!("rollout.lease.{deployment}")
}

fn request_key(deployment: u64) -> String {
    format!("rollout.request.{deployment}")
}

/// The live lease on `deployment`, if a process holds one.
pub fn holder(store: &Store, deployment: u64) -> Result<Option<Lease>, StoreError> {
    Ok(store
        .meta(&lease_key(deployment))?
        .and_then(|v| serde_json::from_str::<Lease>(&v).ok())
        .filter(|l| !l.stale()))
}

/// Takes the lease on `deployment` for this process, unless another live one holds it: then
/// that one is returned.
pub fn claim(store: &Store, deployment: u64, every: Duration) -> Result<Option<Lease>, StoreError> {
    let key = lease_key(deployment);
    let value = serde_json::to_string(&Lease::ours(every)).unwrap_or_default();
    if store.claim_meta(&key, &value)? {
        return Ok(None);
    }
    match holder(store, deployment)? {
        Some(other) if !other.is_ours() => Ok(Some(other)),
        // Stale, unreadable or ours: replaced. Two processes racing here both find it stale;
        // only one inserts after the delete.
        _ => {
            store.take_meta(&key)?;
            if store.claim_meta(&key, &value)? {
                Ok(None)
            } else {
                Ok(holder(store, deployment)?)
            }
        }
    }
}

/// This process still runs `deployment`.
pub fn beat(store: &Store, deployment: u64, every: Duration) -> Result<(), StoreError> {
    let value = serde_json::to_string(&Lease::ours(every)).unwrap_or_default();
    store.set_meta(&lease_key(deployment), &value)
}

pub fn release(store: &Store, deployment: u64) -> Result<(), StoreError> {
    store.take_meta(&lease_key(deployment)).map(drop)
}

fn held_key(deployment: u64) -> String {
    format!("rollout.held.{deployment}")
}

/// `deployment` was paused by the operator (not by a step that waits for `promote`).
pub fn hold(store: &Store, deployment: u64) -> Result<(), StoreError> {
    store.set_meta(&held_key(deployment), "pause")
}

/// Whether `deployment` was held by the operator; the hold is lifted.
pub fn unhold(store: &Store, deployment: u64) -> Result<bool, StoreError> {
    Ok(store.take_meta(&held_key(deployment))?.is_some())
}

/// Leaves `request` for whoever runs `deployment` (now, or when it is picked up).
pub fn ask(store: &Store, deployment: u64, request: Request) -> Result<(), StoreError> {
    let value = serde_json::to_string(&request).unwrap_or_default();
    store.set_meta(&request_key(deployment), &value)
}

/// The request left for `deployment`, taken (each is acted on once).
pub fn take(store: &Store, deployment: u64) -> Result<Option<Request>, StoreError> {
    Ok(store
        .take_meta(&request_key(deployment))?
        .and_then(|v| serde_json::from_str(&v).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state.db")).expect("store");
        (dir, store)
    }

    #[test]
    fn a_live_lease_is_kept_and_a_stale_one_is_taken_over() {
        let (_dir, store) = store();
        let every = Duration::from_secs(5);
        assert_eq!(claim(&store, 7, every).expect("claim"), None);
        // Another process's live lease holds.
        let other = Lease {
            pid: std::process::id() + 1,
            host: "elsewhere".into(),
            beat: now(),
            every_ms: 5000,
        };
        store
            .set_meta(&lease_key(7), &serde_json::to_string(&other).expect("json"))
            .expect("set");
        assert_eq!(claim(&store, 7, every).expect("claim"), Some(other.clone()));
        assert!(holder(&store, 7).expect("holder").is_some());
        // Its heartbeat stopped a minute ago: nobody's.
        let gone = Lease {
            beat: now() - 60,
            ..other
        };
        store
            .set_meta(&lease_key(7), &serde_json::to_string(&gone).expect("json"))
            .expect("set");
        assert_eq!(holder(&store, 7).expect("holder"), None);
        assert_eq!(claim(&store, 7, every).expect("claim"), None);
        assert!(holder(&store, 7)
            .expect("holder")
            .is_some_and(|l| l.is_ours()));
        release(&store, 7).expect("release");
        assert_eq!(holder(&store, 7).expect("holder"), None);
    }

    #[test]
    fn a_request_is_taken_once() {
        let (_dir, store) = store();
        ask(&store, 3, Request::Promote { full: true }).expect("ask");
        assert_eq!(
            take(&store, 3).expect("take"),
            Some(Request::Promote { full: true })
        );
        assert_eq!(take(&store, 3).expect("take"), None);
        assert_eq!(take(&store, 4).expect("take"), None, "per deployment");
    }
}
