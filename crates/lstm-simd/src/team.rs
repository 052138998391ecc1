//! What the workers of a team share: the team itself ([`WorkerTeam`], implemented by the
//! parallel runner on its pool), how a forward call is split over it ([`Split`]), and the
//! barrier they meet at once per step ([`SpinBarrier`]).

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

/// How a [`WorkerTeam`] shares a forward call (see [`SimdEngine::forward_batch_split`](crate::SimdEngine::forward_batch_split)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Split {
    /// Each step's gate tiles (hidden units) are divided among the workers, who meet at a
    /// barrier after every step.
    Hidden,
    /// The two directions of each bidirectional layer run at the same time on two workers,
    /// with no synchronisation inside the layer (unidirectional layers fall back to `Hidden`).
    Directions,
}

/// A group of workers that run one job together: the parallel runner implements it on a
/// thread pool it owns, and [`SimdEngine::forward_batch_split`](crate::SimdEngine::forward_batch_split) splits each step's hidden
/// units across it.
pub trait WorkerTeam: Sync {
    /// The number of workers.
    fn size(&self) -> usize;
    /// Runs `job(w)` once for every worker `w` in `0..size()`, all concurrently (each job waits
    /// for the others at every step), and returns when all have returned.
    fn run(&self, job: &(dyn Fn(usize) + Sync));
}

/// A barrier for a fixed number of threads that spins briefly, then yields: a step of a
/// stream takes microseconds, far less than a sleep and wake-up.
#[derive(Debug)]
pub struct SpinBarrier {
    arrived: AtomicUsize,
    generation: AtomicUsize,
    parties: usize,
}

impl SpinBarrier {
    /// A barrier for `parties` threads.
    pub fn new(parties: usize) -> Self {
        SpinBarrier {
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            parties: parties.max(1),
        }
    }

    /// Blocks until all parties have called `wait` (for this generation). Memory written by
    /// any party before its `wait` is visible to every party after.
    pub fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < 2_000 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}
