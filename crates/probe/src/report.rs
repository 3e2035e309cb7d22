//! Tallies of a probe run: counts by status, version and failure kind, latency percentiles, a per-second timeline.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::outcome::Outcome;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// One second of the run, by completion time.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Second {
    pub t: u64,
    pub ok: u64,
    pub failed: u64,
    pub versions: BTreeMap<String, u64>,
    /// p99 latency of the requests that completed in this second.
    pub p99_ms: f64,
}

/// The whole run; `--json` prints it as is.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub url: String,
    pub elapsed_s: f64,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub failed_infra: u64,
    pub failed_app: u64,
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub versions: BTreeMap<String, u64>,
    pub latency_ms: Latency,
    pub rps: f64,
    pub timeline: Vec<Second>,
}

/// Builds a [`Report`] one outcome at a time.
pub struct Recorder {
    report: Report,
    histogram: Histogram<u64>,
    /// One small histogram per second, for the timeline's p99.
    seconds: Vec<Histogram<u64>>,
}

impl Recorder {
    pub fn new(url: &str) -> Self {
        // Microseconds, 3 significant digits, auto-resizing so no value is ever dropped.
        let mut histogram = Histogram::new(3).unwrap_or_else(|_| unreachable_histogram());
        histogram.auto(true);
        Self {
            report: Report {
                url: url.to_owned(),
                ..Report::default()
            },
            histogram,
            seconds: Vec::new(),
        }
    }

    /// Counts one request that completed `at` after the start, `latency` after its intended send time.
    pub fn record(&mut self, at: Duration, latency: Option<Duration>, outcome: &Outcome) {
        let r = &mut self.report;
        r.requests += 1;
        let second = at.as_secs() as usize;
        if r.timeline.len() <= second {
            let from = r.timeline.len();
            r.timeline.extend((from..=second).map(|t| Second {
                t: t as u64,
                ..Second::default()
            }));
        }
        let bucket = &mut r.timeline[second];
        if let Some(status) = outcome.status {
            *r.statuses.entry(status.to_string()).or_default() += 1;
        }
        if let Some(version) = &outcome.version {
            *r.versions.entry(version.clone()).or_default() += 1;
            *bucket.versions.entry(version.clone()).or_default() += 1;
        }
        match outcome.failure {
            None => {
                r.ok += 1;
                bucket.ok += 1;
            }
            Some(kind) => {
                r.failed += 1;
                bucket.failed += 1;
                if kind.is_infra() {
                    r.failed_infra += 1;
                } else {
                    r.failed_app += 1;
                }
                *r.errors.entry(kind.as_str().to_owned()).or_default() += 1;
            }
        }
        if let Some(latency) = latency {
            let micros = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let _ = self.histogram.record(micros);
            while self.seconds.len() <= second {
                let mut h = Histogram::new(2).unwrap_or_else(|_| unreachable_histogram());
                h.auto(true);
                self.seconds.push(h);
            }
            let _ = self.seconds[second].record(micros);
        }
    }

    /// The tally so far, for the once-a-second progress line.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Second `t` of the timeline with its p99 filled in.
    pub fn second(&self, t: usize) -> Second {
        let mut s = self.report.timeline.get(t).cloned().unwrap_or(Second {
            t: t as u64,
            ..Second::default()
        });
        s.p99_ms = self
            .seconds
            .get(t)
            .filter(|h| !h.is_empty())
            .map_or(0.0, |h| h.value_at_quantile(0.99) as f64 / 1000.0);
        s
    }

    pub fn finish(mut self, elapsed: Duration) -> Report {
        for t in 0..self.report.timeline.len() {
            self.report.timeline[t].p99_ms = self.second(t).p99_ms;
        }
        let ms = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1000.0;
        self.report.latency_ms = if self.histogram.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                max: self.histogram.max() as f64 / 1000.0,
            }
        };
        self.report.elapsed_s = elapsed.as_secs_f64();
        if elapsed > Duration::ZERO {
            self.report.rps = self.report.requests as f64 / elapsed.as_secs_f64();
        }
        self.report
    }
}

fn unreachable_histogram() -> Histogram<u64> {
    // `Histogram::new(3)` only fails for more than 5 significant digits.
    Histogram::new_with_bounds(1, u64::MAX / 2, 3).expect("static histogram bounds are valid")
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Second {
    /// The progress line printed while the probe runs.
    pub fn line(&self) -> String {
        format!(
            "t={:>3}s ok={} failed={} p99={:.1}ms versions {}",
            self.t,
            self.ok,
            self.failed,
            self.p99_ms,
            counts(&self.versions)
        )
    }
}

impl Report {
    /// Whether the run stayed within the allowed number of failures.
    /// Whether the run proves what it was for: something was sent, and at most `max_failed`
    /// of it failed. A run that sent nothing proves nothing, so it never passes.
    pub fn passed(&self, max_failed: u64) -> bool {
        self.requests > 0 && self.failed <= max_failed
    }

    /// The human summary printed at the end.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} requests in {:.1}s ({:.0}/s)",
            self.url, self.requests, self.elapsed_s, self.rps
        );
        let _ = writeln!(
            s,
            "  ok {}  failed {} (infra {}, app {})",
            self.ok, self.failed, self.failed_infra, self.failed_app
        );
        let _ = writeln!(s, "  statuses  {}", counts(&self.statuses));
        let _ = writeln!(s, "  versions  {}", counts(&self.versions));
        let _ = writeln!(s, "  errors    {}", counts(&self.errors));
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "  latency   p50 {:.2}ms  p90 {:.2}ms  p99 {:.2}ms  max {:.2}ms",
            l.p50, l.p90, l.p99, l.max
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::FailureKind;

    #[test]
    fn counts_every_kind() {
        let mut rec = Recorder::new("http://x/");
        let ms = Duration::from_millis;
        rec.record(
            ms(10),
            Some(ms(1)),
            &Outcome::response(200, Some("v1".into()), false),
        );
        rec.record(
            ms(1500),
            Some(ms(3)),
            &Outcome::response(200, Some("v2".into()), false),
        );
        rec.record(
            ms(1600),
            Some(ms(5)),
            &Outcome::response(500, Some("v2".into()), false),
        );
        rec.record(ms(2100), None, &Outcome::failed(FailureKind::Connect));
        rec.record(ms(2200), Some(ms(100)), &Outcome::response(502, None, true));
        let r = rec.finish(Duration::from_secs(3));
        assert_eq!(
            (r.requests, r.ok, r.failed, r.failed_infra, r.failed_app),
            (5, 2, 3, 2, 1)
        );
        assert_eq!(r.statuses["200"], 2);
        assert_eq!(r.versions["v2"], 2);
        assert_eq!(r.errors["connect"], 1);
        assert_eq!(r.errors["proxy_error"], 1);
        assert_eq!(r.errors["app_error"], 1);
        assert_eq!(r.timeline.len(), 3);
        assert_eq!((r.timeline[1].ok, r.timeline[1].failed), (1, 1));
        assert_eq!(r.timeline[2].failed, 2);
        assert!((r.latency_ms.max - 100.0).abs() < 0.5);
        assert!(r.latency_ms.p50 >= 2.9 && r.latency_ms.p50 <= 5.1);
        assert!(!r.passed(0));
        assert!(r.passed(3));
        let nothing = Recorder::new("http://x/").finish(Duration::from_secs(1));
        assert!(!nothing.passed(0), "a run that sent nothing proves nothing");
    }
}
