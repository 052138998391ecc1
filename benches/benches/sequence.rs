//! `sequence/{engine}`: one whole forward pass per engine over shapes of the grid in
//! `../shared/PERFORMANCE.md`, with the naive engine as the baseline every fast engine is
//! measured against. Throughput is in sequence-steps (T·B) per second.
//!
//! `batch/{threads}`: a forward pass (T = 50, I = H = 256) over batch sizes 1..64 for every
//! engine at each thread count it runs with (engines that use threads appear in every
//! `batch/{N}`; single-threaded ones, the naive baseline among them, in `batch/1`).
//! Throughput in FLOPs (criterion's `elem/s` reads as FLOP/s).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lstm::engine::SplitMix64;
use lstm::{EngineKind, LstmConfig, LstmWeights, Model, Tensor};

/// (name, T, B, I, H)
const SHAPES: &[(&str, usize, usize, usize, usize)] = &[
    ("tiny-latency", 1, 1, 64, 64),
    ("timeseries-window", 6, 100, 23, 256),
    ("stream-small", 100, 1, 256, 256),
    ("batch-mid", 100, 32, 256, 256),
];

const BATCHES: &[usize] = &[1, 8, 32, 64];

fn sequence(c: &mut Criterion) {
    for &kind in EngineKind::ALL {
        let mut group = c.benchmark_group(format!("sequence/{kind}"));
        group.sample_size(10);
        for &(name, t, b, i, h) in SHAPES {
            let config = LstmConfig::new(i, h);
            let model = Model::from_weights(LstmWeights::random(config, 1).expect("valid config"));
            let engine = model.engine(kind).expect("engine");
            let x =
                Tensor::new([t, b, i], SplitMix64::new(2).fill_f32(t * b * i, 1.0)).expect("shape");
            group.throughput(Throughput::Elements((t * b) as u64));
            group.bench_with_input(BenchmarkId::from_parameter(name), &x, |bench, x| {
                bench.iter(|| engine.forward(x, None, None).expect("forward"))
            });
        }
        group.finish();
    }
}

fn batch(c: &mut Criterion) {
    let (t, i, h) = (50, 256, 256);
    let config = LstmConfig::new(i, h);
    let model = Model::from_weights(LstmWeights::random(config.clone(), 1).expect("valid config"));
    for (kind, threads) in lstm_benches::engines_and_threads() {
        let engine = lstm_benches::engine(&model, kind, threads);
        let mut group = c.benchmark_group(format!("batch/{threads}"));
        group.sample_size(10);
        for &b in BATCHES {
            let x =
                Tensor::new([t, b, i], SplitMix64::new(2).fill_f32(t * b * i, 1.0)).expect("shape");
            group.throughput(Throughput::Elements(lstm_benches::flops(&config, t, b)));
            group.bench_with_input(BenchmarkId::new(kind.name(), b), &x, |bench, x| {
                bench.iter(|| engine.forward(x, None, None).expect("forward"))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, sequence, batch);
criterion_main!(benches);
