//! Exhaustive activation tests (issue 6, item 5): each SIMD backend's sigmoid and tanh
//! (`lstm_simd::activations`) against f64 on every f32 in `[-30, 30]` and on the saturation
//! region beyond, with the maximum error asserted and stated in `docs/numerics.md`.
//!
//! [`sweep`] evaluates every backend on the same inputs (chunks of [`CHUNK`], as the kernels
//! see them) and the f64 reference once per input, and collects per backend the largest
//! absolute and relative error and every broken saturation rule ([`Stats::violations`]).
//! [`f32_range`] walks the f32 values of an interval in order, every one or every `stride`-th
//! bit pattern. `tests/activations.rs` runs a dense deterministic subset in CI and the whole
//! interval in an `#[ignore]`d test; [`max_error`] is the single-kernel loop.

use lstm_simd::{activations, Backend};

/// Inputs per kernel call in [`sweep`].
pub const CHUNK: usize = 4096;

/// Largest `|σ(x) − σ_f64(x)|` allowed over every f32: 2 u (`u = 2⁻²⁴`), one ulp just below 1.
pub const SIGMOID_MAX_ABS: f64 = 2.0 * crate::tolerance::U;
/// Largest `|tanh(x) − tanh_f64(x)|` allowed over every f32: 4 u.
pub const TANH_MAX_ABS: f64 = 4.0 * crate::tolerance::U;
/// Largest `|tanh(x) − tanh_f64(x)| / |tanh_f64(x)|` allowed where the result is a normal
/// f32: 4 u, so that tiny arguments keep their digits (`tanh(1e-20) = 1e-20`).
pub const TANH_MAX_REL: f64 = 4.0 * crate::tolerance::U;

/// The two activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `σ(x) = 1 / (1 + e^{−x})`, in `[0, 1]`.
    Sigmoid,
    /// `tanh(x)`, in `[-1, 1]`.
    Tanh,
}

impl Activation {
    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        }
    }

    /// The f64 reference (libm `exp`, `tanh`; a true division).
    pub fn reference(self, x: f64) -> f64 {
        match self {
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
        }
    }

    /// `backend`'s kernel over a slice.
    pub fn run(self, backend: Backend, x: &[f32], out: &mut [f32]) -> lstm_core::Result<()> {
        match self {
            Activation::Sigmoid => activations::sigmoid(backend, x, out),
            Activation::Tanh => activations::tanh(backend, x, out),
        }
    }

    /// The range of the function.
    fn bounds(self) -> (f32, f32) {
        match self {
            Activation::Sigmoid => (0.0, 1.0),
            Activation::Tanh => (-1.0, 1.0),
        }
    }
}

/// One backend's results over a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// The backend.
    pub backend: Backend,
    /// Inputs checked.
    pub checked: u64,
    /// Largest `|got − want|` over finite inputs, and where.
    pub max_abs: f64,
    /// See `max_abs`.
    pub max_abs_at: f32,
    /// Largest `|got − want| / |want|` where `want` is at least the smallest normal f32, and
    /// where.
    pub max_rel: f64,
    /// See `max_rel`.
    pub max_rel_at: f32,
    /// Broken rules (NaN in → NaN out; a non-NaN input gives a value in the function's range;
    /// no subnormal output, except tanh of a subnormal input, which must be the input
    /// itself): the first 16, then a count.
    pub violations: Vec<String>,
    /// Number of broken rules.
    pub violation_count: u64,
}

impl Stats {
    fn new(backend: Backend) -> Self {
        Stats {
            backend,
            checked: 0,
            max_abs: 0.0,
            max_abs_at: 0.0,
            max_rel: 0.0,
            max_rel_at: 0.0,
            violations: Vec::new(),
            violation_count: 0,
        }
    }

    fn violate(&mut self, what: String) {
        self.violation_count += 1;
        if self.violations.len() < 16 {
            self.violations.push(what);
        }
    }
}

/// The f32 values of `[lo, hi]` in increasing order, every `stride`-th bit pattern (1: every
/// one; −0 is skipped, +0 is visited), always ending with `hi`.
pub fn f32_range(lo: f32, hi: f32, stride: u32) -> impl Iterator<Item = f32> {
    // Totally ordered integer of a float: ... −1 ↦ −0x3f80_0000, +0 ↦ 0, 1 ↦ 0x3f80_0000 ...
    let ord = |x: f32| -> i64 {
        let b = i64::from(x.to_bits() & 0x7fff_ffff);
        if x.is_sign_negative() {
            -b
        } else {
            b
        }
    };
    let unord = |k: i64| -> f32 {
        let mag = k.unsigned_abs() as u32;
        if k < 0 {
            f32::from_bits(mag | 0x8000_0000)
        } else {
            f32::from_bits(mag)
        }
    };
    let (a, b) = (ord(lo), ord(hi));
    let step = i64::from(stride.max(1));
    let last = (b >= a && (b - a) % step != 0).then_some(hi);
    (a..=b).step_by(step as usize).map(unord).chain(last)
}

/// Runs `activation` of every backend in `backends` on every input of `xs` (in chunks of
/// [`CHUNK`]) and compares with the f64 reference; one [`Stats`] per backend.
///
/// # Errors
///
/// When a backend's kernel refuses to run (not supported on this host).
pub fn sweep(
    activation: Activation,
    backends: &[Backend],
    xs: impl IntoIterator<Item = f32>,
) -> lstm_core::Result<Vec<Stats>> {
    let mut stats: Vec<Stats> = backends.iter().map(|&b| Stats::new(b)).collect();
    let mut xs = xs.into_iter();
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut outs = vec![vec![0.0f32; CHUNK]; backends.len()];
    let (lo, hi) = activation.bounds();
    loop {
        chunk.clear();
        chunk.extend(xs.by_ref().take(CHUNK));
        if chunk.is_empty() {
            break;
        }
        for (&backend, out) in backends.iter().zip(&mut outs) {
            let out = &mut out[..chunk.len()];
            out.fill(f32::from_bits(0x7fc0_1234)); // a NaN no kernel makes: lanes never written
            activation.run(backend, &chunk, out)?;
        }
        for (j, &x) in chunk.iter().enumerate() {
            let want = activation.reference(f64::from(x));
            for (s, out) in stats.iter_mut().zip(&outs) {
                let got = out[j];
                s.checked += 1;
                if x.is_nan() {
                    if !got.is_nan() {
                        s.violate(format!(
                            "{}({x}) = {got:e}, NaN expected",
                            activation.name()
                        ));
                    }
                    continue;
                }
                if got.is_nan() || got < lo || got > hi {
                    s.violate(format!(
                        "{}({x:e}) = {got:e}, outside [{lo}, {hi}]",
                        activation.name()
                    ));
                    continue;
                }
                if got != 0.0 && !got.is_normal() {
                    let tiny_tanh = activation == Activation::Tanh && x.is_subnormal();
                    if !(tiny_tanh && got.to_bits() == x.to_bits()) {
                        s.violate(format!(
                            "{}({x:e}) = {got:e} is subnormal",
                            activation.name()
                        ));
                    }
                }
                let err = if f64::from(got) == want {
                    0.0
                } else {
                    (f64::from(got) - want).abs()
                };
                if err > s.max_abs {
                    s.max_abs = err;
                    s.max_abs_at = x;
                }
                if want.abs() >= f64::from(f32::MIN_POSITIVE) {
                    let rel = err / want.abs();
                    if rel > s.max_rel {
                        s.max_rel = rel;
                        s.max_rel_at = x;
                    }
                }
            }
        }
    }
    Ok(stats)
}

/// The worst point of an activation over a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationError {
    /// The input where the error is largest.
    pub at: f32,
    /// The kernel's value there.
    pub got: f32,
    /// f64 reference value there.
    pub want: f64,
    /// `|got − want|`.
    pub abs: f64,
    /// Number of inputs checked.
    pub checked: u64,
}

/// Every f32 in `[lo, hi]` (in bit order, finite values only), fed to `kernel` in chunks of
/// `chunk` lanes (a SIMD kernel's natural call), compared with `reference` in f64.
///
/// `kernel(input, output)` must fill `output` (same length as `input`). Returns `None` when the
/// range holds no f32.
pub fn max_error(
    lo: f32,
    hi: f32,
    chunk: usize,
    mut kernel: impl FnMut(&[f32], &mut [f32]),
    reference: impl Fn(f64) -> f64,
) -> Option<ActivationError> {
    let chunk = chunk.max(1);
    let mut worst: Option<ActivationError> = None;
    let mut inputs = Vec::with_capacity(chunk);
    let mut outputs = vec![0.0f32; chunk];
    let mut x = lo;
    let mut checked = 0u64;
    let mut flush =
        |inputs: &mut Vec<f32>, worst: &mut Option<ActivationError>, checked: &mut u64| {
            let out = &mut outputs[..inputs.len()];
            out.fill(f32::NAN);
            kernel(inputs, out);
            for (&xi, &yi) in inputs.iter().zip(out.iter()) {
                let want = reference(f64::from(xi));
                let abs = if f64::from(yi) == want {
                    0.0
                } else {
                    (f64::from(yi) - want).abs()
                };
                let abs = if abs.is_nan() { f64::INFINITY } else { abs };
                if worst.is_none_or(|w| abs > w.abs) {
                    *worst = Some(ActivationError {
                        at: xi,
                        got: yi,
                        want,
                        abs,
                        checked: 0,
                    });
                }
            }
            *checked += inputs.len() as u64;
            inputs.clear();
        };
    while x <= hi && x.is_finite() {
        inputs.push(x);
        if inputs.len() == chunk {
            flush(&mut inputs, &mut worst, &mut checked);
        }
        x = next_up(x);
    }
    if !inputs.is_empty() {
        flush(&mut inputs, &mut worst, &mut checked);
    }
    worst.map(|w| ActivationError { checked, ..w })
}

/// The next f32 above `x` (`-0.0` steps to the smallest positive subnormal).
fn next_up(x: f32) -> f32 {
    let bits = x.to_bits();
    if x == 0.0 {
        f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(bits + 1)
    } else {
        f32::from_bits(bits - 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn f32_range_walks_every_value_in_order() {
        let all: Vec<f32> = f32_range(-f32::MIN_POSITIVE, f32::MIN_POSITIVE, 1).collect();
        assert_eq!(all.len(), 2 * 0x0080_0000 + 1);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            (all[0], all[all.len() - 1]),
            (-f32::MIN_POSITIVE, f32::MIN_POSITIVE)
        );
        let n = f32_range(-30.0, 30.0, 1).size_hint().0 as u64;
        assert_eq!(n, 2 * u64::from(30.0f32.to_bits()) + 1);
        let strided: Vec<f32> = f32_range(1.0, 2.0, 1000).collect();
        assert_eq!(strided.len(), 0x0080_0000 / 1000 + 2);
        assert_eq!(strided.last(), Some(&2.0));
    }

    #[test]
    fn sweep_catches_broken_saturation() {
        let backends = [Backend::Portable];
        let s = sweep(Activation::Tanh, &backends, [f32::NAN, 20.0, -20.0, 1e-40]).unwrap();
        assert_eq!(s[0].violation_count, 0, "{:?}", s[0].violations);
        assert_eq!((s[0].checked, s[0].max_abs), (4, 0.0));
    }

    #[test]
    fn measures_a_correctly_rounded_kernel() {
        // f64 tanh rounded to f32: the error is at most half an ulp, and every f32 is visited.
        let r = max_error(
            0.5,
            0.5 + 1000.0 * f32::EPSILON,
            8,
            |x, y| {
                for (xi, yi) in x.iter().zip(y) {
                    *yi = f64::from(*xi).tanh() as f32;
                }
            },
            f64::tanh,
        )
        .unwrap();
        assert_eq!(r.checked, 2001);
        assert!(r.abs <= 0.5 * f64::from(f32::EPSILON) * 0.5, "{r:?}");
        // A kernel that misses the last lane of a chunk is caught.
        let r = max_error(
            -1.0,
            -1.0 + 100.0 * f32::EPSILON,
            8,
            |x, y| {
                let n = x.len();
                for (xi, yi) in x.iter().zip(y.iter_mut()).take(n.saturating_sub(1)) {
                    *yi = xi.tanh();
                }
            },
            f64::tanh,
        )
        .unwrap();
        assert!(r.abs.is_infinite());
    }
}
