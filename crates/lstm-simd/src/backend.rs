//! Runtime instruction-set dispatch: which kernels an engine runs, decided once.

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

use lstm_core::{LstmError, Precision, Result};

use crate::kernels::Kernels;

/// The instruction-set path of the SIMD engine.
///
/// [`Backend::detect`] picks the best one the CPU has, at run time, so a plain
/// `cargo build --release` runs 512-bit code on an AVX-512 machine. Tests and benches pin each
/// supported backend explicitly ([`Backend::all`], [`Backend::is_supported`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// `wide::f32x8`, compiled for the build's target features; runs everywhere.
    Portable,
    /// x86-64 AVX2 + FMA, 8 lanes.
    Avx2,
    /// x86-64 AVX-512F, 16 lanes.
    Avx512,
    /// x86-64 AVX-512F with AVX512-BF16 (`vdpbf16ps`): at [`Precision::Bf16`] the products
    /// take bf16 operands on both sides; at other precisions it runs the `Avx512` kernels.
    Avx512Bf16,
    /// x86-64 AVX-512F with AVX512-VNNI (`vpdpbusd`): at [`Precision::Int8`] the products
    /// take 8-bit operands on both sides; at other precisions it runs the `Avx512` kernels.
    Avx512Vnni,
}

impl Backend {
    /// Every backend this build knows, best last.
    pub const ALL: &'static [Backend] = &[
        Backend::Portable,
        Backend::Avx2,
        Backend::Avx512,
        Backend::Avx512Bf16,
        Backend::Avx512Vnni,
    ];

    /// The best backend this CPU supports for f32 ([`detect_for`](Self::detect_for)).
    pub fn detect() -> Backend {
        Backend::detect_for(Precision::F32)
    }

    /// The best backend this CPU supports for weights of `precision`: `Avx512Bf16` only for
    /// bf16, `Avx512Vnni` only for int8 (elsewhere they add nothing to `Avx512`).
    pub fn detect_for(precision: Precision) -> Backend {
        Backend::all_for(precision)
            .last()
            .copied()
            .unwrap_or(Backend::Portable)
    }

    /// Every backend this CPU supports for f32 ([`all_for`](Self::all_for)), the portable one
    /// first.
    pub fn all() -> Vec<Backend> {
        Backend::all_for(Precision::F32)
    }

    /// Every backend this CPU supports whose kernels differ at `precision`, the portable one
    /// first: `Avx512Bf16` only for bf16, `Avx512Vnni` only for int8 (elsewhere they run the
    /// `Avx512` kernels).
    pub fn all_for(precision: Precision) -> Vec<Backend> {
        Backend::ALL
            .iter()
            .copied()
            .filter(|&b| match b {
                Backend::Avx512Bf16 => precision == Precision::Bf16,
                Backend::Avx512Vnni => precision == Precision::Int8,
                _ => true,
            })
            .filter(|b| b.is_supported())
            .collect()
    }

    /// Whether this CPU can run the backend.
    pub fn is_supported(self) -> bool {
        match self {
            Backend::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(target_arch = "x86_64")]
            Backend::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Portable => "portable",
            Backend::Avx2 => "avx2",
            Backend::Avx512 => "avx512",
            Backend::Avx512Bf16 => "avx512bf16",
            Backend::Avx512Vnni => "avx512vnni",
        }
    }

    /// f32 lanes per vector (the packing unit).
    pub fn lanes(self) -> usize {
        match self {
            Backend::Portable | Backend::Avx2 => 8,
            Backend::Avx512 | Backend::Avx512Bf16 | Backend::Avx512Vnni => 16,
        }
    }

    /// Rows of the kernels' register block: the fewest rows that keep each weight load busy
    /// (6 for AVX-512, 3 for AVX2, 2 portable). A share of the batch smaller than this runs
    /// the kernels below their speed.
    pub fn row_block(self) -> usize {
        crate::kernels::table(self, Precision::F32).row_block
    }

    /// This backend's kernels for weights of `precision`, or an error when the CPU lacks its
    /// instructions. Handing out the table only after this check is what makes calling the
    /// kernels sound.
    pub(crate) fn kernels(self, precision: Precision) -> Result<Kernels> {
        if !self.is_supported() {
            return Err(LstmError::Unsupported(format!(
                "the {} backend needs CPU features this machine lacks (supported: {:?})",
                self.name(),
                Backend::ALL
                    .iter()
                    .filter(|b| b.is_supported())
                    .map(|b| b.name())
                    .collect::<Vec<_>>()
            )));
        }
        Ok(crate::kernels::table(self, precision))
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = LstmError;

    fn from_str(s: &str) -> Result<Self> {
        Backend::ALL
            .iter()
            .copied()
            .find(|b| b.name() == s)
            .ok_or_else(|| LstmError::InvalidArgument {
                what: "backend",
                reason: format!(
                    "unknown backend `{s}`; expected one of {:?}",
                    Backend::ALL.iter().map(|b| b.name()).collect::<Vec<_>>()
                ),
            })
    }
}
