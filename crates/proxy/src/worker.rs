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
