//! What the workers of a team share: the team itself ([`WorkerTeam`], implemented by the
//! parallel runner on its pool), how a forward call is split over it ([`Split`]), and the
//! barrier they meet at once per step ([`SpinBarrier`]).

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
    /// The batch is cut into one shard of rows a worker, of about equal work, and each
    /// worker runs every layer for its rows alone: no synchronisation, no copy of the input
    /// or the output (each reads and writes its rows in place), each worker's weights
    /// streamed through its own core. The forward only; training runs `Hidden`.
    Rows,
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

/// The gate tiles of one step, shared by a team so that a worker that finishes early takes
/// over tiles of one that is late (a core slowed by another tenant of the machine would
/// otherwise hold every other worker at the step's barrier: 2-9% of a 2-thread bf16 forward
/// was spent spinning there, in profiles on a shared 2-core VM).
///
/// Each worker owns a range of tiles (its share of the hidden split, whose weights are in its
/// caches): it takes them from the front, one at a time; once its range is empty it takes the
/// other workers' remaining tiles from the back of theirs, all but the last (which its owner,
/// with the tile's inputs in its caches, is about to take: leaving it measured 0.4-1.3%
/// faster on bf16 batch-mid and batch-large at 2 threads). A range is one atomic word
/// (`front << 32 | back`), so a tile is taken exactly once, by whoever moves the end it is at.
/// Each worker refills its own range at the start of a step ([`reset`](Self::reset)); the
/// step's barrier orders that after every claim of the step before, when every range was
/// empty (a worker leaves a step only once its own range is empty, and ranges only shrink
/// within a step). The refill is a release and every claim an acquire, so whatever
/// the owner wrote for its tiles before offering them (their input projection) is visible to
/// the worker that takes one.
#[derive(Debug)]
pub(crate) struct TileQueue {
    ranges: Box<[TileRange]>,
    homes: Box<[(u32, u32)]>,
}

/// One worker's range of tiles, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct TileRange(AtomicU64);

fn pack((front, back): (u32, u32)) -> u64 {
    (u64::from(front) << 32) | u64::from(back)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

impl TileQueue {
    /// A queue whose worker `w` owns tiles `homes[w].0 .. homes[w].1` (each range empty until
    /// its worker's first [`reset`](Self::reset)); `None` when a tile index does not fit 32
    /// bits.
    pub(crate) fn new(homes: &[(usize, usize)]) -> Option<Self> {
        let homes = homes
            .iter()
            .map(|&(a, b)| Some((u32::try_from(a).ok()?, u32::try_from(b).ok()?)))
            .collect::<Option<Box<[_]>>>()?;
        let ranges = homes.iter().map(|_| TileRange::default()).collect();
        Some(TileQueue { ranges, homes })
    }

    /// Refills worker `w`'s range with its own tiles, for the step it is starting.
    pub(crate) fn reset(&self, w: usize) {
        if let (Some(range), Some(&home)) = (self.ranges.get(w), self.homes.get(w)) {
            range.0.store(pack(home), Ordering::Release);
        }
    }

    /// The next tile for worker `w`: its own next one, else the last one of another worker
    /// that has two or more left (the nearest after `w` first); `None` when there is none.
    pub(crate) fn claim(&self, w: usize) -> Option<usize> {
        let n = self.ranges.len();
        if let Some(t) = self.ranges.get(w).and_then(|r| r.take(true)) {
            return Some(t);
        }
        (1..n).find_map(|i| self.ranges[(w + i) % n].take(false))
    }
}

impl TileRange {
    /// Takes the tile at the front (`true`) of the range, if any is left, or the one at its
    /// back, if two or more are.
    fn take(&self, front: bool) -> Option<usize> {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            let (a, b) = unpack(word);
            if a >= b || (!front && b - a < 2) {
                return None;
            }
            let (next, tile) = if front {
                ((a + 1, b), a)
            } else {
                ((a, b - 1), b - 1)
            };
            match self.0.compare_exchange_weak(
                word,
                pack(next),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(tile as usize),
                Err(now) => word = now,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_late_worker_keeps_its_last_tile_and_every_tile_is_taken_once() {
        let homes = [(0, 5), (5, 9), (9, 9), (9, 16)];
        let queue = TileQueue::new(&homes).unwrap();
        for w in 0..homes.len() {
            queue.reset(w);
        }
        // Workers 0 and 3 are late: worker 1 takes its own tiles from the front, then all but
        // the front one of worker 3's and of worker 0's, from the back; worker 2 owns nothing
        // and finds nothing left; the late ones find their front tile.
        let mut taken: Vec<Vec<usize>> = (1..homes.len())
            .map(|w| std::iter::from_fn(|| queue.claim(w)).collect())
            .collect();
        assert_eq!(taken[0], [5, 6, 7, 8, 15, 14, 13, 12, 11, 10, 4, 3, 2, 1]);
        assert!(taken[1].is_empty());
        assert_eq!(taken[2], [9]);
        let late: Vec<usize> = std::iter::from_fn(|| queue.claim(0)).collect();
        assert_eq!(late, [0]);
        taken.push(late);
        let mut all: Vec<usize> = taken.concat();
        all.sort_unstable();
        assert_eq!(all, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn concurrent_claims_take_every_tile_exactly_once() {
        let homes: Vec<(usize, usize)> = (0..4).map(|w| (w * 100, w * 100 + 100)).collect();
        let queue = TileQueue::new(&homes).unwrap();
        for round in 0..20 {
            for w in 0..homes.len() {
                queue.reset(w);
            }
            let mut all: Vec<usize> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..homes.len())
                    .map(|w| {
                        let queue = &queue;
                        s.spawn(move || {
                            if w == round % 4 {
                                std::thread::yield_now(); // someone is late
                            }
                            std::iter::from_fn(|| queue.claim(w)).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().unwrap_or_default())
                    .collect()
            });
            all.sort_unstable();
            assert_eq!(all, (0..400).collect::<Vec<_>>(), "round {round}");
        }
    }

    #[test]
    fn tile_indices_beyond_32_bits_are_refused() {
        assert!(TileQueue::new(&[(0, 1 << 33)]).is_none());
    }
}
