//! What the drains of one deployment came to: instances drained, requests that finished, and
//! long-lived connections (WebSockets, event streams) closed cleanly or cut at the deadline,
//! as `cutover history` and the deploy report show them.

use cutover_proxy::DrainReport;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The kind of store event one drain is recorded as.
pub const EVENT: &str = "drained";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drains {
    /// Instances drained.
    pub instances: u32,
    /// Requests and connections that finished by themselves while draining.
    pub completed: u64,
    /// Long-lived connections the load balancer closed cleanly (a close frame, or the end of
    /// an event stream), spread before the deadline.
    pub closed: u64,
    /// What was still open at the deadline and was cut.
    pub cut: u64,
}

impl Drains {
    pub fn add(&mut self, report: &DrainReport) {
        self.instances += 1;
        self.completed += report.completed;
        self.closed += report.closed;
        self.cut += report.cut as u64;
    }

    /// The store event that records one drain.
    pub fn event(instance: &str, report: &DrainReport) -> Value {
        json!({
            "instance": instance,
            "completed": report.completed,
            "closed": report.closed,
            "cut": report.cut,
            "took_ms": report.took_ms,
        })
    }

    /// The sum of a deployment's recorded drains, from its events.
    pub fn from_events<'a>(events: impl IntoIterator<Item = (&'a str, &'a Value)>) -> Self {
        let mut out = Drains::default();
        for (kind, detail) in events {
            if kind == EVENT {
                out.instances += 1;
                out.completed += detail["completed"].as_u64().unwrap_or(0);
                out.closed += detail["closed"].as_u64().unwrap_or(0);
                out.cut += detail["cut"].as_u64().unwrap_or(0);
            }
        }
        out
    }

    /// One line for people, or nothing when nothing was drained.
    pub fn describe(&self) -> Option<String> {
        (self.instances > 0).then(|| {
            format!(
                "drained {} instance(s): {} finished, {} long-lived closed cleanly, {} cut",
                self.instances, self.completed, self.closed, self.cut
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_add_up_and_read_back_from_their_events() {
        let report = DrainReport {
            target: "127.0.0.1:1".into(),
            completed: 5,
            cut: 1,
            closed: 3,
            took_ms: 40,
        };
        let mut live = Drains::default();
        live.add(&report);
        live.add(&report);
        let event = Drains::event("i-1", &report);
        let stored = [(EVENT, &event), ("launch", &event), (EVENT, &event)];
        assert_eq!(Drains::from_events(stored), live);
        assert_eq!(
            live.describe().as_deref(),
            Some("drained 2 instance(s): 10 finished, 6 long-lived closed cleanly, 2 cut")
        );
        assert_eq!(Drains::default().describe(), None);
    }
}
