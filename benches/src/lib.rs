//! Criterion benches for lstm-kernels live in `benches/`; this library holds what they share:
//! the engine configurations to run (every engine, and every thread count for the engines
//! that use threads) and the shapes' costs.

use lstm::{DynEngine, EngineKind, EngineOptions, LstmConfig, Model};

/// The thread counts an engine runs with: 1 for single-threaded engines, else every count up
/// to the cores of this machine.
pub fn thread_counts(kind: EngineKind) -> Vec<usize> {
    match kind {
        EngineKind::Naive | EngineKind::Simd => vec![1],
        _ => (1..=std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Every (engine, thread count) pair of this build on this machine.
pub fn engines_and_threads() -> Vec<(EngineKind, usize)> {
    EngineKind::ALL
        .iter()
        .flat_map(|&k| thread_counts(k).into_iter().map(move |t| (k, t)))
        .collect()
}

/// The engine of `kind` over `model`, on `threads` threads where the engine uses them.
pub fn engine(model: &Model, kind: EngineKind, threads: usize) -> DynEngine {
    let options = if thread_counts(kind).len() > 1 {
        EngineOptions::default().with_threads(threads)
    } else {
        EngineOptions::default()
    };
    model
        .engine_with(kind, options)
        .expect("every engine supports the benches' configs")
}

/// FLOPs of one forward pass (a multiply-add is 2): criterion's `Throughput::Elements` of
/// the step and batch groups, so its `elem/s` reads as FLOP/s.
pub fn flops(config: &LstmConfig, seq_len: usize, batch: usize) -> u64 {
    config.forward_flops(seq_len, batch) as u64
}
