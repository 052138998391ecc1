//! The portable backend's probes: `wide::f32x8`, as the build compiles it (safe code).

use std::hint::black_box;

use wide::f32x8;

use super::{Line, FMA_CHAINS};

/// `FMA_CHAINS` chains of `f32x8::mul_add`, `iters` times.
pub(super) fn fma(iters: usize) -> f32 {
    let a = f32x8::splat(black_box(0.999_999));
    let b = f32x8::splat(black_box(1e-7));
    let mut c = [f32x8::ZERO; FMA_CHAINS];
    for (k, ck) in c.iter_mut().enumerate() {
        *ck = f32x8::splat(k as f32);
    }
    for _ in 0..iters {
        for ck in c.iter_mut() {
            *ck = ck.mul_add(a, b);
        }
    }
    c.iter().fold(f32x8::ZERO, |s, &v| s + v).reduce_add()
}

/// Sums every line of `buf` (two 8-lane loads per line) into 4 accumulators.
pub(super) fn read(buf: &[Line]) -> f32 {
    let mut acc = [f32x8::ZERO; 4];
    for pair in buf.chunks(2) {
        for (k, line) in pair.iter().enumerate() {
            let lo: [f32; 8] = line.0[..8].try_into().unwrap_or([0.0; 8]);
            let hi: [f32; 8] = line.0[8..].try_into().unwrap_or([0.0; 8]);
            acc[2 * k] += f32x8::from(lo);
            acc[2 * k + 1] += f32x8::from(hi);
        }
    }
    (acc[0] + acc[1] + acc[2] + acc[3]).reduce_add()
}
