//! The arithmetic precision of an engine's weights and products, and bf16 rounding.
//!
//! An engine built with [`Precision::Bf16`] stores `W_ih`, `W_hh` and `W_hr` as bfloat16
//! (8 significant bits, f32's exponent range), rounded once at construction with
//! [`round_bf16`]; the products use bf16 operands (the input rows and `h` are rounded to bf16
//! for the product only) and accumulate in f32. The state `c`, the gate pre-activations, the
//! biases and the nonlinearities stay f32.
//!
//! An engine built with [`Precision::Int8`] quantizes each row of those weights (one gate
//! unit's weights) to signed 8-bit integers with its own scale, `max |row| / 127`
//! ([`i8_scale`], [`quantize_i8`]), once at construction, as fbgemm and onnxruntime's
//! `DynamicQuantizeLSTM` do. Where the CPU has VNNI, each input row and `h` is quantized the
//! same way per call (per step), the products are exact integer dot products, and one f32
//! multiply by both scales brings them back; elsewhere the int8 weights are widened to f32.
//!
//! [`LstmWeights::rounded_to`](crate::LstmWeights::rounded_to) gives the weights such an
//! engine actually multiplies by, for a reference run in exact arithmetic.

use std::fmt;
use std::str::FromStr;

use crate::{LstmError, Result};

/// The precision of an engine's weights and of its matrix products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Precision {
    /// f32 weights and products: PyTorch's results within a few ULPs (the default).
    #[default]
    F32,
    /// bfloat16 weights and product operands, f32 accumulation, f32 state and activations.
    Bf16,
    /// int8 weights (a scale per row), 8-bit product operands where the CPU has VNNI (a scale
    /// per input row and per `h` row, per step), exact integer accumulation, f32 state and
    /// activations.
    Int8,
}

impl Precision {
    /// Every precision this build knows.
    pub const ALL: &'static [Precision] = &[Precision::F32, Precision::Bf16, Precision::Int8];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// The unit roundoff of a product operand: `2^-24` for f32, `2^-8` for bf16, relative to
    /// the operand; for int8 `1/254`, relative to the largest magnitude of the operand's row
    /// (half a step of a scale of `max |row| / 127`).
    pub fn operand_roundoff(self) -> f64 {
        match self {
            Precision::F32 => f64::from(f32::EPSILON) / 2.0,
            Precision::Bf16 => 1.0 / 256.0,
            Precision::Int8 => 1.0 / 254.0,
        }
    }

    /// One row of weights (one output unit's) as this precision's products see it, in place:
    /// unchanged for f32, each element rounded to bf16, or the row quantized to int8 with its
    /// own scale and brought back (`q · scale`).
    pub fn round_row(self, row: &mut [f32]) {
        match self {
            Precision::F32 => {}
            Precision::Bf16 => row.iter_mut().for_each(|x| *x = round_bf16(*x)),
            Precision::Int8 => {
                let scale = i8_scale(row);
                row.iter_mut()
                    .for_each(|x| *x = f32::from(quantize_i8(*x, scale)) * scale);
            }
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = LstmError;

    fn from_str(s: &str) -> Result<Self> {
        Precision::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| LstmError::InvalidArgument {
                what: "precision",
                reason: format!(
                    "unknown precision `{s}`; expected one of {:?}",
                    Precision::ALL.iter().map(|p| p.name()).collect::<Vec<_>>()
                ),
            })
    }
}

/// The int8 scale of a row: `max |x| / 127`, so the largest magnitude maps to ±127 (the
/// symmetric range: -128 is never used). 0 for a row of zeros; NaN when the row holds a NaN
/// or an infinity, which makes every product with the row NaN.
pub fn i8_scale(row: &[f32]) -> f32 {
    let mut max = 0.0f32;
    for &x in row {
        if !x.is_finite() {
            return f32::NAN;
        }
        max = max.max(x.abs());
    }
    max / 127.0
}

/// `x` quantized with `scale`: `x / scale` rounded to nearest (ties to even) and clamped to
/// `[-127, 127]`; 0 when the scale is 0 or NaN.
pub fn quantize_i8(x: f32, scale: f32) -> i8 {
    if scale == 0.0 || scale.is_nan() {
        return 0;
    }
    // The clamp keeps the cast exact; a NaN `x` (only with a NaN scale) is excluded above.
    (x / scale).round_ties_even().clamp(-127.0, 127.0) as i8
}

/// The bf16 bits of `x`, as x86's `vcvtne2ps2bf16` converts: round to nearest, ties to even;
/// subnormals flushed to a zero of the same sign (the hardware's dot product reads them as
/// zero anyway); NaN stays a (quiet) NaN; values beyond bf16's largest round to infinity.
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    if x.is_subnormal() {
        return ((bits >> 16) & 0x8000) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// The f32 value of bf16 bits (exact).
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// `x` rounded to the nearest bf16 ([`bf16_bits`]), as an f32.
pub fn round_bf16(x: f32) -> f32 {
    bf16_to_f32(bf16_bits(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_to_nearest_even() {
        assert_eq!(round_bf16(1.0), 1.0);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to the even 1 + 2^-6.
        assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 1.0 / 64.0);
        assert_eq!(round_bf16(1.0 + 1.0 / 256.0 + 1e-6), 1.0 + 1.0 / 128.0);
        assert_eq!(round_bf16(-3.0), -3.0);
        assert!(round_bf16(f32::NAN).is_nan());
        assert_eq!(round_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_bf16(-1e-40).to_bits(), (-0.0f32).to_bits());
        for i in 0..10_000u32 {
            let x = f32::from_bits(0x3f80_0000 + i * 97);
            let r = round_bf16(x);
            assert!(((r - x) / x).abs() <= 1.0 / 256.0, "{x} -> {r}");
            assert_eq!(r.to_bits() & 0xffff, 0);
        }
    }

    #[test]
    fn precision_names_round_trip() {
        for &p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().ok(), Some(p));
        }
        assert!("int4".parse::<Precision>().is_err());
    }

    #[test]
    fn int8_rows_round_to_their_own_scale() {
        let mut row = [0.5f32, -1.27, 0.004, 0.006, 1.0];
        assert_eq!(i8_scale(&row), 0.01);
        Precision::Int8.round_row(&mut row);
        let want = [0.5f32, -1.27, 0.0, 0.01, 1.0];
        for (got, want) in row.iter().zip(want) {
            assert!((got - want).abs() <= 1e-6, "{row:?}");
        }
        // Ties go to even: 0.005 / 0.01 = 0.5 rounds to 0, 0.015 / 0.01 = 1.5 to 2.
        assert_eq!(quantize_i8(0.5, 1.0), 0);
        assert_eq!(quantize_i8(1.5, 1.0), 2);
        assert_eq!(quantize_i8(1000.0, 1.0), 127);
        assert_eq!(quantize_i8(-1000.0, 1.0), -127);
        let mut zeros = [0.0f32; 3];
        Precision::Int8.round_row(&mut zeros);
        assert_eq!(zeros, [0.0; 3]);
        assert!(i8_scale(&[1.0, f32::INFINITY]).is_nan());
        assert!(i8_scale(&[f32::NAN]).is_nan());
        assert_eq!(quantize_i8(1.0, f32::NAN), 0);
    }
}
