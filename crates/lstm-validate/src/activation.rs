//! Exhaustive activation tests (issue 6, item 5): the place where each SIMD backend's sigmoid
//! and tanh are checked against f64 on every f32 in `[-30, 30]` and on the saturation region
//! beyond, with the maximum error asserted and stated in `docs/numerics.md`.
//!
//! The kernels do not exist yet; [`max_error`] is the measuring loop they will be plugged into
//! (a test per backend in `tests/activations.rs`, pinned like the engines of
//! [`crate::engines_under_test`]).

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
