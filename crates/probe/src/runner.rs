//! Drives the load: open loop at a constant rate, or closed loop at a fixed concurrency.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

use crate::connection::Connection;
use crate::outcome::{FailureKind, Outcome};
use crate::report::{Recorder, Report, Second};
use crate::target::{Target, TargetError};

/// How load is generated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Open loop: `per_second` requests are sent on schedule whatever the
    /// server does; latency counts from each request's intended send time,
    /// so a stall shows up instead of slowing the client down. At most
    /// `connections` are open at once; a request waiting for one is queued,
    /// and the wait is part of its latency.
    Rate { per_second: f64, connections: usize },
    /// Closed loop: `concurrency` clients each send their next request when the last one ends.
    Concurrency(usize),
}

/// One probe run.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub url: String,
    pub load: Load,
    pub duration: Duration,
    /// Upper bound on a request, from its intended send time.
    pub timeout: Duration,
    /// Set to end the run before `duration` (a demo stops the probe when its story is told).
    pub stop: Option<Arc<AtomicBool>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    Config(String),
}

/// The open loop's timetable.
struct Schedule {
    per_second: f64,
    connections: usize,
    start: Instant,
    duration: Duration,
    timeout: Duration,
    stop: Arc<AtomicBool>,
}

struct Sample {
    at: Duration,
    latency: Option<Duration>,
    outcome: Outcome,
}

/// The highest open-loop rate accepted: one scheduler thread cannot keep a faster schedule,
/// and a schedule it cannot keep would be reported as the server's latency.
pub const MAX_RATE: f64 = 200_000.0;
/// Most connections (open loop) or clients (closed loop): each is a socket and a task.
pub const MAX_CLIENTS: usize = 20_000;

/// Runs the probe to the end and returns its report; `on_second` sees each second as it closes.
pub async fn run(
    config: &ProbeConfig,
    mut on_second: impl FnMut(&Second),
) -> Result<Report, ProbeError> {
    let target = Target::parse(&config.url)?;
    match config.load {
        Load::Rate {
            per_second,
            connections,
        } => {
            if !(per_second.is_finite() && per_second > 0.0 && per_second <= MAX_RATE) {
                return Err(ProbeError::Config(format!(
                    "rate must be above 0 and at most {MAX_RATE} per second, not {per_second}"
                )));
            }
            if !(1..=MAX_CLIENTS).contains(&connections) {
                return Err(ProbeError::Config(format!(
                    "connections must be between 1 and {MAX_CLIENTS}, not {connections}"
                )));
            }
        }
        Load::Concurrency(n) if !(1..=MAX_CLIENTS).contains(&n) => {
            return Err(ProbeError::Config(format!(
                "concurrency must be between 1 and {MAX_CLIENTS}, not {n}"
            )))
        }
        Load::Concurrency(_) => {}
    }
    let start = Instant::now();
    let stop = config.stop.clone().unwrap_or_default();
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    match config.load {
        Load::Rate {
            per_second,
            connections,
        } => {
            let schedule = Schedule {
                per_second,
                connections,
                start,
                duration: config.duration,
                timeout: config.timeout,
                stop: stop.clone(),
            };
            let runtime = tokio::runtime::Handle::current();
            std::thread::Builder::new()
                .name("probe-schedule".into())
                .spawn(move || open_loop(runtime, target, schedule, tx))
                .map_err(|e| {
                    ProbeError::Config(format!("cannot start the scheduler thread: {e}"))
                })?;
        }
        Load::Concurrency(n) => {
            for _ in 0..n {
                tokio::spawn(closed_loop(
                    target.clone(),
                    start,
                    config.duration,
                    config.timeout,
                    tx.clone(),
                    stop.clone(),
                ));
            }
            drop(tx);
        }
    }

    let mut recorder = Recorder::new(&config.url);
    let mut ticks =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let mut shown = 0usize;
    loop {
        tokio::select! {
            sample = rx.recv() => match sample {
                Some(s) => recorder.record(s.at, s.latency, &s.outcome),
                None => break,
            },
            _ = ticks.tick() => {
                let second = recorder.second(shown);
                on_second(&second);
                shown += 1;
            }
        }
    }
    let elapsed = start.elapsed();
    Ok(recorder.finish(elapsed))
}

/// Runs on its own thread: `std::thread::sleep` wakes within tens of microseconds, where the
/// runtime's timer wheel rounds up to the next millisecond, and that lateness would count as latency.
fn open_loop(
    runtime: tokio::runtime::Handle,
    target: Target,
    schedule: Schedule,
    tx: mpsc::UnboundedSender<Sample>,
) {
    let Schedule {
        per_second,
        connections,
        start,
        duration,
        timeout,
        stop,
    } = schedule;
    let period = Duration::from_secs_f64(1.0 / per_second);
    let permits = Arc::new(Semaphore::new(connections));
    // Idle connections, reused most-recent-first so a low rate keeps few sockets open.
    let idle: Arc<Mutex<Vec<Connection>>> = Arc::new(Mutex::new(Vec::new()));
    let mut sent: u32 = 0;
    while let Some(offset) = period
        .checked_mul(sent)
        .filter(|o| *o < duration && !stop.load(Ordering::Relaxed))
    {
        let intended = start + offset;
        let wait = intended.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        sent += 1;
        let (target, permits, idle, tx) =
            (target.clone(), permits.clone(), idle.clone(), tx.clone());
        runtime.spawn(async move {
            let deadline = intended + timeout;
            let outcome = match tokio::time::timeout_at(deadline, permits.acquire_owned()).await {
                Ok(Ok(_permit)) => {
                    let popped = idle.lock().map(|mut v| v.pop()).unwrap_or(None);
                    let mut conn = popped.unwrap_or_else(|| Connection::new(target));
                    let outcome = conn.request(deadline).await;
                    if let Ok(mut v) = idle.lock() {
                        v.push(conn);
                    }
                    outcome
                }
                _ => Outcome::failed(FailureKind::Timeout),
            };
            send(&tx, start, intended, outcome);
        });
    }
}

async fn closed_loop(
    target: Target,
    start: Instant,
    duration: Duration,
    timeout: Duration,
    tx: mpsc::UnboundedSender<Sample>,
    stop: Arc<AtomicBool>,
) {
    let end = start + duration;
    let mut conn = Connection::new(target);
    loop {
        let intended = Instant::now();
        if intended >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let outcome = conn.request(intended + timeout).await;
        let connect_failed = outcome.failure == Some(FailureKind::Connect);
        send(&tx, start, intended, outcome);
        if connect_failed {
            // Nothing is listening: do not spin; a real client would back off too.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn send(tx: &mpsc::UnboundedSender<Sample>, start: Instant, intended: Instant, outcome: Outcome) {
    let now = Instant::now();
    // Latency only means something when the server had the request: a response or a timeout.
    let latency = (outcome.status.is_some() || outcome.failure == Some(FailureKind::Timeout))
        .then(|| now - intended);
    let _ = tx.send(Sample {
        at: now - start,
        latency,
        outcome,
    });
}
