//! The arithmetic precision of an engine's weights and products, and bf16 rounding.
//!
//! An engine built with [`Precision::Bf16`] stores `W_ih`, `W_hh` and `W_hr` as bfloat16
//! (8 significant bits, f32's exponent range), rounded once at construction with
//! [`round_bf16`]; the products use bf16 operands (the input rows and `h` are rounded to bf16
//! for the product only) and accumulate in f32. The state `c`, the gate pre-activations, the
//! biases and the nonlinearities stay f32. [`LstmWeights::rounded_to`](crate::LstmWeights::rounded_to) gives the weights such
//! an engine actually multiplies by, for a reference run in exact arithmetic.

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
}

impl Precision {
    /// Every precision this build knows.
    pub const ALL: &'static [Precision] = &[Precision::F32, Precision::Bf16];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The unit roundoff of a product operand: `2^-24` for f32, `2^-8` for bf16.
    pub fn operand_roundoff(self) -> f64 {
        match self {
            Precision::F32 => f64::from(f32::EPSILON) / 2.0,
            Precision::Bf16 => 1.0 / 256.0,
        }
    }

    /// `x` as an operand of this precision's products (identity for f32).
    pub fn round(self, x: f32) -> f32 {
        match self {
            Precision::F32 => x,
            Precision::Bf16 => round_bf16(x),
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
        assert!("int8".parse::<Precision>().is_err());
    }
}
