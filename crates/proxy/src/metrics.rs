//! Lock-free per-target counters and a latency histogram, readable in-process and as Prometheus text.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::worker::Counter;

/// Bucket upper bounds in microseconds: 50 µs to about 60 s, each 25% above the last, so a
/// quantile read back is within 25% of the truth.
const BUCKETS: usize = 64;

fn bucket_bounds() -> &'static [u64; BUCKETS] {
    static BOUNDS: std::sync::OnceLock<[u64; BUCKETS]> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut b = [0u64; BUCKETS];
        let mut v = 50.0f64;
        for slot in b.iter_mut() {
            *slot = v as u64;
            v *= 1.25;
        }
        b
    })
}

/// Counters for one target, kept per worker thread: the request path never locks, and two
/// workers never contend for a cache line.
#[derive(Debug)]
pub struct TargetMetrics {
    requests: Counter,
    /// Responses by class: 1xx, 2xx, 3xx, 4xx, 5xx from the target.
    classes: [Counter; 5],
    /// Errors the proxy answered for this target: connect failures, broken responses, timeouts.
    proxy_errors: Counter,
    connect_errors: Counter,
    /// Long-lived connections (WebSockets, event streams) the proxy ended cleanly: a close
    /// frame, or the end of the stream.
    long_closed: Counter,
    /// Long-lived connections that ended without: the target broke off mid-frame, or a close
    /// could not be written.
    long_broken: Counter,
    latency: Box<[Counter]>,
}

/// A point-in-time copy of [`TargetMetrics`], which can be added and subtracted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    pub requests: u64,
    pub responses: [u64; 5],
    pub proxy_errors: u64,
    pub connect_errors: u64,
    #[serde(default)]
    pub long_closed: u64,
    #[serde(default)]
    pub long_broken: u64,
    /// Counts per latency bucket (the bounds are fixed), for quantiles.
    #[serde(default)]
    pub latency: Vec<u64>,
}

impl Default for TargetMetrics {
    fn default() -> Self {
        Self {
            requests: Counter::default(),
            classes: Default::default(),
            proxy_errors: Counter::default(),
            connect_errors: Counter::default(),
            long_closed: Counter::default(),
            long_broken: Counter::default(),
            latency: (0..=BUCKETS).map(|_| Counter::default()).collect(),
        }
    }
}

impl TargetMetrics {
    pub fn request(&self) {
        self.requests.add(1);
    }

    pub fn response(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].add(1);
        self.observe(took);
    }

    pub fn proxy_error(&self, took: Duration) {
        self.proxy_errors.add(1);
        self.observe(took);
    }

    /// An answer that broke after its head was counted as a response: it counts as the
    /// proxy's failure too, so a target that sends garbage bodies shows in its error rate.
    pub fn broken_body(&self) {
        self.proxy_errors.add(1);
    }

    /// A try given up for taking too long (the request went to another target): the target's
    /// failure, without a latency, since it never answered.
    pub fn gave_up(&self) {
        self.proxy_errors.add(1);
    }

    /// Response heads from the target so far.
    pub fn answered(&self) -> u64 {
        self.classes.iter().map(Counter::get).sum()
    }

    /// A long-lived connection ended: cleanly (`true`) or not.
    pub fn long_ended(&self, cleanly: bool) {
        match cleanly {
            true => self.long_closed.add(1),
            false => self.long_broken.add(1),
        }
    }

    pub fn connect_error(&self) {
        self.connect_errors.add(1);
    }

    fn observe(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = bucket_bounds().partition_point(|&b| b < micros);
        self.latency[i].add(1);
    }

    /// Long-lived connections ended cleanly by the proxy so far.
    pub fn long_closed(&self) -> u64 {
        self.long_closed.get()
    }

    /// Requests so far (cheaper than a whole snapshot).
    pub fn requests(&self) -> u64 {
        self.requests.get()
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self.requests.get(),
            responses: std::array::from_fn(|i| self.classes[i].get()),
            proxy_errors: self.proxy_errors.get(),
            connect_errors: self.connect_errors.get(),
            long_closed: self.long_closed.get(),
            long_broken: self.long_broken.get(),
            latency: self.latency.iter().map(Counter::get).collect(),
        }
    }
}

impl MetricsSnapshot {
    pub fn add(&mut self, other: &MetricsSnapshot) {
        self.requests += other.requests;
        for (a, b) in self.responses.iter_mut().zip(other.responses) {
            *a += b;
        }
        self.proxy_errors += other.proxy_errors;
        self.connect_errors += other.connect_errors;
        self.long_closed += other.long_closed;
        self.long_broken += other.long_broken;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    /// What happened between `earlier` and `self`: the window a canary step looks at.
    pub fn since(&self, earlier: &MetricsSnapshot) -> MetricsSnapshot {
        MetricsSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            responses: std::array::from_fn(|i| {
                self.responses[i].saturating_sub(earlier.responses[i])
            }),
            proxy_errors: self.proxy_errors.saturating_sub(earlier.proxy_errors),
            connect_errors: self.connect_errors.saturating_sub(earlier.connect_errors),
            long_closed: self.long_closed.saturating_sub(earlier.long_closed),
            long_broken: self.long_broken.saturating_sub(earlier.long_broken),
            latency: self
                .latency
                .iter()
                .enumerate()
                .map(|(i, v)| v.saturating_sub(earlier.latency.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// Failed answers (5xx from the target or errors from the proxy) over all answers.
    pub fn error_rate(&self) -> f64 {
        let answered: u64 = self.responses.iter().sum::<u64>() + self.proxy_errors;
        if answered == 0 {
            return 0.0;
        }
        (self.responses[4] + self.proxy_errors) as f64 / answered as f64
    }

    /// Latency at quantile `q` (0.0–1.0), as the upper bound of its bucket.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let micros = bucket_bounds().get(i).copied().unwrap_or(u64::MAX / 4);
                return Some(Duration::from_micros(micros));
            }
        }
        None
    }

    /// Appends Prometheus text for one target.
    pub fn render(&self, out: &mut String, labels: &str) {
        let _ = writeln!(out, "cutover_requests_total{{{labels}}} {}", self.requests);
        for (i, n) in self.responses.iter().enumerate() {
            let _ = writeln!(
                out,
                "cutover_responses_total{{{labels},class=\"{}xx\"}} {n}",
                i + 1
            );
        }
        let _ = writeln!(
            out,
            "cutover_proxy_errors_total{{{labels}}} {}",
            self.proxy_errors
        );
        let _ = writeln!(
            out,
            "cutover_connect_errors_total{{{labels}}} {}",
            self.connect_errors
        );
        let mut cumulative = 0;
        for (i, n) in self.latency.iter().enumerate() {
            cumulative += n;
            let le = match bucket_bounds().get(i) {
                Some(b) => format!("{}", *b as f64 / 1e6),
                None => "+Inf".into(),
            };
            let _ = writeln!(
                out,
                "cutover_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "cutover_request_duration_seconds_count{{{labels}}} {cumulative}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_quantiles() {
        let m = TargetMetrics::default();
        for i in 0..100u64 {
            m.request();
            m.response(
                if i < 5 { 503 } else { 200 },
                Duration::from_millis(if i < 99 { 2 } else { 400 }),
            );
        }
        let s = m.snapshot();
        assert_eq!(s.requests, 100);
        assert_eq!(s.responses[1], 95);
        assert!((s.error_rate() - 0.05).abs() < 1e-9);
        let p50 = s.quantile(0.5).expect("p50");
        assert!(
            p50 >= Duration::from_millis(2) && p50 <= Duration::from_micros(2500),
            "{p50:?}"
        );
        let max = s.quantile(1.0).expect("max");
        assert!(
            max >= Duration::from_millis(400) && max <= Duration::from_millis(500),
            "{max:?}"
        );
        let later = {
            m.response(200, Duration::from_millis(1));
            m.snapshot()
        };
        let window = later.since(&s);
        assert_eq!(window.responses[1], 1);
        assert_eq!(window.latency.iter().sum::<u64>(), 1);
        let mut text = String::new();
        s.render(&mut text, "group=\"v1\",target=\"127.0.0.1:1\"");
        assert!(text.contains(
            "cutover_responses_total{group=\"v1\",target=\"127.0.0.1:1\",class=\"5xx\"} 5"
        ));
        assert!(text.contains("le=\"+Inf\"} 100"));
    }
}
