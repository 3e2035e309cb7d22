//! Which worker thread the request path runs on, and counters kept per worker so that two
//! workers never write the same cache line on every request.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Shards of per-worker state; worker threads map onto them by index.
pub const SHARDS: usize = 16;

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as worker `index`, so it uses its own pools and counters.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The current thread's shard.
pub fn shard() -> usize {
    WORKER.with(|w| w.get()) % SHARDS
}

/// Binds the current thread to the `index`-th of the CPUs it may run on (wrapping round), so
/// that worker `i` of every listener shares CPU `i`, as nginx's `worker_cpu_affinity auto` binds
/// its worker processes. Returns the CPU.
///
/// It keeps a worker's cache warm and stops the scheduler from stacking two workers on one CPU;
/// the price is that a worker cannot leave a CPU another busy process holds, which is why it is
/// off unless the stack file asks for it.
#[cfg(target_os = "linux")]
pub fn pin(index: usize) -> std::io::Result<usize> {
    use nix::sched::{sched_setaffinity, CpuSet};

    let cpus = allowed_cpus()?;
    let Some(&cpu) = cpus.get(index % cpus.len().max(1)) else {
        return Err(std::io::Error::other("this thread may run on no CPU"));
    };
    let mut only = CpuSet::new();
    only.set(cpu)?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &only)?;
    Ok(cpu)
}

/// The CPUs the current thread may run on, in order.
#[cfg(target_os = "linux")]
fn allowed_cpus() -> std::io::Result<Vec<usize>> {
    use nix::sched::{sched_getaffinity, CpuSet};

    let allowed = sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
    Ok((0..CpuSet::count())
        .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
        .collect())
}

#[cfg(not(target_os = "linux"))]
pub fn pin(_index: usize) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "binding threads to CPUs is implemented on Linux only",
    ))
}

/// Keeps a value on cache lines of its own (128 bytes: adjacent-line prefetch pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

/// A counter each worker adds to on its own line; reads sum the lines.
#[derive(Debug)]
pub struct Counter(Box<[Padded<AtomicU64>]>);

impl Default for Counter {
    fn default() -> Self {
        Self((0..SHARDS).map(|_| Padded::default()).collect())
    }
}

impl Counter {
    pub fn add(&self, n: u64) {
        self.0[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// A sequence number per worker, for round robin and weighted picks: each worker walks its own,
/// so every worker's requests split exactly by weight.
#[derive(Debug)]
pub struct Sequence(Box<[Padded<AtomicUsize>]>);

impl Sequence {
    pub fn starting_at(first: usize) -> Self {
        Self(
            (0..SHARDS)
                .map(|i| Padded(AtomicUsize::new(first.wrapping_add(i))))
                .collect(),
        )
    }

    pub fn next(&self) -> usize {
        self.0[shard()].0.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn allowed() -> Vec<usize> {
        allowed_cpus().expect("affinity")
    }

    #[test]
    fn pinned_workers_take_the_allowed_cpus_in_turn_one_each() {
        let cpus = allowed();
        for index in 0..=cpus.len() {
            let (cpu, now) = std::thread::spawn(move || {
                let cpu = pin(index).expect("pin");
                (cpu, allowed())
            })
            .join()
            .expect("thread");
            assert_eq!(cpu, cpus[index % cpus.len()], "worker {index}");
            assert_eq!(now, vec![cpu], "worker {index} may run only on its CPU");
        }
        assert_eq!(
            allowed(),
            cpus,
            "pinning a worker leaves other threads alone"
        );
    }
}
