//! `sequence/{engine}`: one whole forward pass per engine over a few shapes of the grid in
//! `../shared/PERFORMANCE.md`, with the naive engine as the baseline every fast engine is
//! measured against. Throughput is in sequence-steps (T·B) per second.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lstm::{EngineKind, LstmConfig, LstmWeights, Model, SplitMix64, Tensor};

/// (name, T, B, I, H)
const SHAPES: &[(&str, usize, usize, usize, usize)] = &[
    ("tiny-latency", 1, 1, 64, 64),
    ("timeseries-window", 6, 100, 23, 256),
    ("stream-small", 100, 1, 256, 256),
];

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

criterion_group!(benches, sequence);
criterion_main!(benches);
