//! Each SIMD backend's sigmoid and tanh against f64 (`lstm_validate::activation`): in CI a
//! dense deterministic subset of `[-30, 30]` (every 61st f32 bit pattern, plus every f32 near
//! 0, ±0.625, ±1, ±9.01, ±10, ±30, ±87, ±88) and the saturation region beyond (to ±f32::MAX,
//! ±1e4, ±inf, NaNs); every f32 in `[-30, 30]` in the `#[ignore]`d test
//! (`cargo test -p lstm-validate --test activations -- --ignored`, the test profile is
//! optimised; about ten minutes), whose measured maxima are in `docs/numerics.md`.

use lstm_simd::Backend;
use lstm_validate::activation::{
    f32_range, sweep, Activation, Stats, SIGMOID_MAX_ABS, TANH_MAX_ABS, TANH_MAX_REL,
};
use lstm_validate::note;

fn backends() -> Vec<Backend> {
    for b in Backend::ALL {
        if !b.is_supported() {
            note(&format!(
                "skipping backend `{}`: not supported on this host",
                b.name()
            ));
        }
    }
    Backend::all()
}

/// The f32 `n` bit patterns below and above `x` (same sign side), as a range.
fn around(x: f32, n: u32) -> impl Iterator<Item = f32> {
    let step = |x: f32, k: i64| {
        let b = i64::from(x.to_bits() & 0x7fff_ffff);
        let sign = if x.is_sign_negative() { -1 } else { 1 };
        let t = (sign * b + k).clamp(-0x7f7f_ffff, 0x7f7f_ffff);
        let mag = t.unsigned_abs() as u32;
        f32::from_bits(if t < 0 { mag | 0x8000_0000 } else { mag })
    };
    f32_range(step(x, -i64::from(n)), step(x, i64::from(n)), 1)
}

/// Asserts the bounds and saturation rules; prints each backend's maxima.
fn check(activation: Activation, what: &str, stats: &[Stats]) {
    let (max_abs, max_rel) = match activation {
        Activation::Sigmoid => (SIGMOID_MAX_ABS, f64::INFINITY),
        Activation::Tanh => (TANH_MAX_ABS, TANH_MAX_REL),
    };
    for s in stats {
        note(&format!(
            "{} {what}, {}: {} inputs, max |err| {:.3e} at x = {:e} ({:.2} u), max rel {:.3e} at x = {:e}",
            activation.name(),
            s.backend.name(),
            s.checked,
            s.max_abs,
            s.max_abs_at,
            s.max_abs / lstm_validate::tolerance::U,
            s.max_rel,
            s.max_rel_at,
        ));
        assert_eq!(
            s.violation_count,
            0,
            "{} on {}: {} broken rules, first: {:#?}",
            activation.name(),
            s.backend.name(),
            s.violation_count,
            s.violations
        );
        assert!(
            s.max_abs <= max_abs,
            "{} on {}: max |err| {:e} at x = {:e} > {max_abs:e}",
            activation.name(),
            s.backend.name(),
            s.max_abs,
            s.max_abs_at
        );
        assert!(
            s.max_rel <= max_rel,
            "{} on {}: max relative error {:e} at x = {:e} > {max_rel:e}",
            activation.name(),
            s.backend.name(),
            s.max_rel,
            s.max_rel_at
        );
    }
}

/// Points where a kernel changes branch or saturates, and ±0, ±1.
const EDGES: [f32; 11] = [
    0.0, 0.625, 1.0, 9.0, 9.01, 10.0, 30.0, 87.0, 88.0, 103.0, 1e4,
];

fn dense_subset() -> impl Iterator<Item = f32> {
    let windows = EDGES
        .into_iter()
        .flat_map(|p| [p, -p])
        .flat_map(|p| around(p, 1 << 14));
    f32_range(-30.0, 30.0, 61).chain(windows)
}

fn saturation_region() -> impl Iterator<Item = f32> {
    let nans = [
        0x7fc0_0000u32,
        0xffc0_0000,
        0x7f80_0001,
        0x7fbf_ffff,
        0xffff_ffff,
    ];
    f32_range(30.0, f32::MAX, 4093)
        .chain(f32_range(-f32::MAX, -30.0, 4093))
        .chain([
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e4,
            -1e4,
            f32::MAX,
            f32::MIN,
        ])
        .chain(nans.map(f32::from_bits))
}

#[test]
fn activations_dense_subset_and_saturation() {
    let backends = backends();
    for activation in [Activation::Sigmoid, Activation::Tanh] {
        let stats = sweep(activation, &backends, dense_subset()).unwrap_or_else(|e| panic!("{e}"));
        check(activation, "dense subset", &stats);
        let stats =
            sweep(activation, &backends, saturation_region()).unwrap_or_else(|e| panic!("{e}"));
        check(activation, "beyond ±30", &stats);
    }
}

/// Exact values the exact tests rely on.
#[test]
fn activations_saturate_exactly() {
    for backend in backends() {
        let x = [
            0.0f32,
            -0.0,
            1000.0,
            -1000.0,
            9.02,
            -9.02,
            88.0,
            f32::INFINITY,
        ];
        let mut s = [f32::NAN; 8];
        let mut t = [f32::NAN; 8];
        lstm_simd::activations::sigmoid(backend, &x, &mut s).unwrap_or_else(|e| panic!("{e}"));
        lstm_simd::activations::tanh(backend, &x, &mut t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s[0], s[1], s[2], s[6], s[7]),
            (0.5, 0.5, 1.0, 1.0, 1.0),
            "{backend}"
        );
        assert!(
            s[3] >= 0.0 && s[3] < 2e-38,
            "{backend}: σ(-1000) = {:e}",
            s[3]
        );
        assert_eq!(t[..7], [0.0, -0.0, 1.0, -1.0, 1.0, -1.0, 1.0], "{backend}");
    }
}

/// Every f32 in [-30, 30] (2.2e9 values per activation and backend).
#[test]
#[ignore = "exhaustive: a few minutes in release; run with --ignored, numbers in docs/numerics.md"]
fn activations_every_f32_in_minus_30_to_30() {
    let backends = backends();
    for activation in [Activation::Sigmoid, Activation::Tanh] {
        let start = std::time::Instant::now();
        let stats = sweep(activation, &backends, f32_range(-30.0, 30.0, 1))
            .unwrap_or_else(|e| panic!("{e}"));
        note(&format!(
            "{}: every f32 in [-30, 30] in {:.0?}",
            activation.name(),
            start.elapsed()
        ));
        check(activation, "every f32 in [-30, 30]", &stats);
        let stats =
            sweep(activation, &backends, saturation_region()).unwrap_or_else(|e| panic!("{e}"));
        check(activation, "beyond ±30", &stats);
    }
}
