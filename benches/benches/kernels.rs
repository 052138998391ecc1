//! `gates/{backend}`: the SIMD activations over a slice (sigmoid, tanh), per backend this CPU
//! has, beside `gates/naive` (scalar `1/(1+e^-x)` and `tanh`, as the reference engine
//! computes them); throughput in elements.
//!
//! `step/{backend}`: one streaming step (`engine.step`, batch 1, I = H) of the SIMD engine
//! pinned to each backend, beside `step/naive`; throughput in FLOPs (criterion's `elem/s`
//! reads as FLOP/s).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lstm::engine::SplitMix64;
use lstm::{Backend, LstmConfig, LstmEngine, LstmState, LstmWeights, NaiveEngine, SimdEngine};
use lstm_simd::activations;

const GATE_SIZES: &[usize] = &[64, 256, 1024, 4096];
const STEP_HIDDEN: &[usize] = &[64, 256, 512, 1024];

fn gates(c: &mut Criterion) {
    for &n in GATE_SIZES {
        let x: Vec<f32> = SplitMix64::new(3)
            .fill_f32(n, 1.0)
            .into_iter()
            .map(|v| 8.0 * v)
            .collect();
        let mut out = vec![0.0f32; n];
        let mut group = c.benchmark_group("gates/naive");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("sigmoid", n), &x, |b, x| {
            b.iter(|| {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = 1.0 / (1.0 + (-v).exp());
                }
                black_box(&out);
            })
        });
        group.bench_with_input(BenchmarkId::new("tanh", n), &x, |b, x| {
            b.iter(|| {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v.tanh();
                }
                black_box(&out);
            })
        });
        group.finish();
        for backend in Backend::all() {
            let mut group = c.benchmark_group(format!("gates/{backend}"));
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new("sigmoid", n), &x, |b, x| {
                b.iter(|| activations::sigmoid(backend, black_box(x), &mut out).expect("sizes"))
            });
            group.bench_with_input(BenchmarkId::new("tanh", n), &x, |b, x| {
                b.iter(|| activations::tanh(backend, black_box(x), &mut out).expect("sizes"))
            });
            group.finish();
        }
    }
}

fn step(c: &mut Criterion) {
    for &h in STEP_HIDDEN {
        let config = LstmConfig::new(h, h);
        let weights = LstmWeights::random(config.clone(), 1).expect("valid config");
        let x = SplitMix64::new(2).fill_f32(h, 1.0);
        let flops = lstm_benches::flops(&config, 1, 1);
        let mut engines: Vec<(String, Box<dyn LstmEngine<f32>>)> = vec![(
            "naive".to_string(),
            Box::new(NaiveEngine::new(weights.clone()).expect("engine")),
        )];
        for backend in Backend::all() {
            engines.push((
                backend.name().to_string(),
                Box::new(SimdEngine::with_backend(&weights, backend).expect("supported")),
            ));
        }
        for (name, engine) in &engines {
            let mut group = c.benchmark_group(format!("step/{name}"));
            group.throughput(Throughput::Elements(flops));
            let mut state = LstmState::zeros(&config, Some(1)).expect("state");
            let mut out = vec![0.0f32; h];
            group.bench_with_input(BenchmarkId::from_parameter(h), &x, |b, x| {
                b.iter(|| {
                    engine
                        .step(black_box(x), &mut state, &mut out)
                        .expect("step")
                })
            });
            group.finish();
        }
    }
}

criterion_group!(benches, gates, step);
criterion_main!(benches);
