//! Criterion benches for lstm-kernels live in `benches/`; this library holds what they share:
//! the engine configurations to run (every engine, and every thread count for the engines
//! that use threads) and the shapes' costs.

use lstm::{DynEngine, EngineKind, LstmConfig, Model};
use lstm_report::measure::{self, Variant};

/// Every (engine, thread count) pair of this build on this machine: the report's
/// ([`measure::thread_counts`]): 1 for single-threaded engines, else every count up to the
/// cores.
pub fn engines_and_threads() -> Vec<(EngineKind, usize)> {
    EngineKind::ALL
        .iter()
        .flat_map(|&k| {
            measure::thread_counts(k, lstm::default_threads())
                .into_iter()
                .map(move |t| (k, t))
        })
        .collect()
}

/// The engine of `kind` over `model`, on `threads` threads where the engine uses them.
pub fn engine(model: &Model, kind: EngineKind, threads: usize) -> DynEngine {
    let variant = Variant {
        engine: kind,
        backend: None,
        threads,
        precision: lstm::Precision::F32,
    };
    model
        .engine_with(kind, variant.options())
        .expect("every engine supports the benches' configs")
}

/// FLOPs of one forward pass (a multiply-add is 2): criterion's `Throughput::Elements` of
/// the step and batch groups, so its `elem/s` reads as FLOP/s.
pub fn flops(config: &LstmConfig, seq_len: usize, batch: usize) -> u64 {
    config.forward_flops(seq_len, batch) as u64
}
