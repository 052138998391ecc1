//! The SIMD engine of `lstm-kernels`: `torch.nn.LSTM` inference on packed weights and fused,
//! hand-written kernels, dispatched at run time to the best instruction set of the CPU.
//!
//! - **Hoisted input projection**: for each layer and direction, `X · W_ihᵀ + b_ih + b_hh`
//!   for a chunk of time steps is one GEMM over all of its `steps · B` rows.
//! - **Fused recurrent step**: `h_{t-1} · W_hhᵀ`, the four gate nonlinearities and the cell
//!   update in one pass over a `W_hh` packed once into gate-interleaved tiles
//!   (`docs/kernels.md`), `MR` batch rows in registers per weight load.
//! - **Activations** on SIMD lanes: exp-based sigmoid with a true division, tanh; clean
//!   saturation, NaN in → NaN out, no subnormal results.
//! - **Dispatch**: AVX-512F, AVX2+FMA (`core::arch`, `#[target_feature]`) or portable `wide`,
//!   chosen once when the engine is built ([`Backend::detect`]); a plain
//!   `cargo build --release` runs 512-bit code on an AVX-512 machine.
//!
//! ```
//! use lstm_core::{LstmConfig, LstmEngine, LstmState, LstmWeights};
//! use lstm_simd::SimdEngine;
//!
//! let config = LstmConfig::new(4, 32);
//! let engine = SimdEngine::new(&LstmWeights::random(config.clone(), 3)?)?;
//! // Streaming: one step at a time, the state held by the caller.
//! let mut state = LstmState::zeros(&config, Some(1))?;
//! let mut h = vec![0.0f32; 32];
//! for t in 0..10 {
//!     engine.step(&[t as f32 * 0.1; 4], &mut state, &mut h)?;
//! }
//! assert!(h.iter().all(|v| v.abs() < 1.0));
//! # Ok::<(), lstm_core::LstmError>(())
//! ```

mod backend;
mod engine;
mod kernels;
mod lanes;
mod pack;
mod portable;
mod team;
#[cfg(target_arch = "x86_64")]
mod x86_64;

pub use backend::Backend;
pub use engine::SimdEngine;
pub use team::{SpinBarrier, Split, WorkerTeam};

/// The L2 cache of one core on the x86 servers this targets (Zen 4 and 5: 1 MiB), which the
/// projection's chunks and the parallel plans size their working sets by.
pub const CORE_L2_BYTES: usize = 1 << 20;

/// The engine's activations over slices, per backend: for accuracy tests and for callers who
/// want them.
pub mod activations {
    use lstm_core::{LstmError, Result};

    use crate::Backend;

    fn check(backend: Backend, x: &[f32], out: &[f32]) -> Result<crate::kernels::Kernels> {
        if x.len() != out.len() {
            return Err(LstmError::ElementCount {
                what: lstm_core::Subject::Tensor("out".to_string()),
                shape: vec![x.len()],
                expected: x.len(),
                found: out.len(),
            });
        }
        backend.kernels(lstm_core::Precision::F32)
    }

    /// `out[j] = σ(x[j])` with `backend`'s kernel.
    pub fn sigmoid(backend: Backend, x: &[f32], out: &mut [f32]) -> Result<()> {
        check(backend, x, out)?.sigmoid(x, out);
        Ok(())
    }

    /// `out[j] = tanh(x[j])` with `backend`'s kernel.
    pub fn tanh(backend: Backend, x: &[f32], out: &mut [f32]) -> Result<()> {
        check(backend, x, out)?.tanh(x, out);
        Ok(())
    }
}
