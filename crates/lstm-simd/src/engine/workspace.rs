//! The engine's reusable scratch: sized before the time loop starts, kept in a pool inside the
//! engine and reused by the next call, so the per-step loop never allocates.

use lstm_core::tensor::{checked_numel, try_filled_vec};
use lstm_core::Result;

use crate::pack::AlignedBuf;

/// Scratch of one forward pass (inference or training): the input projection of a chunk, the
/// two `h` buffers, `o ⊙ tanh(c)` before the projection, `c`; layer outputs and sorted copies.
#[derive(Debug, Default)]
pub(super) struct Workspace {
    pub(super) xproj: AlignedBuf,
    pub(super) h: [AlignedBuf; 2],
    pub(super) h_cell: AlignedBuf,
    pub(super) c: AlignedBuf,
    /// Intermediate layer outputs `[T, B, D·H_out]` (ping-pong), and the step input.
    pub(super) layers: [Vec<f32>; 2],
    /// The input (and `h0`, `c0`) with the batch sorted longest first, when lengths need it.
    pub(super) x_sorted: Vec<f32>,
    pub(super) h0_sorted: Vec<f32>,
    pub(super) c0_sorted: Vec<f32>,
}

/// Scratch of the backward (see `backward.rs` for what each holds).
#[derive(Debug, Default)]
pub(super) struct BackwardScratch {
    /// A layer's input and output, in sorted batch order.
    pub(super) x_sorted: Vec<f32>,
    pub(super) out_sorted: Vec<f32>,
    pub(super) d_out: Vec<f32>,
    pub(super) d_in: Vec<f32>,
    pub(super) dg: Vec<f32>,
    pub(super) dh_rec: Vec<f32>,
    pub(super) dc: Vec<f32>,
    pub(super) dh_cell: Vec<f32>,
    pub(super) dh_all: Vec<f32>,
    pub(super) c0_pad: Vec<f32>,
    pub(super) h0_cell: Vec<f32>,
    pub(super) h_prev: Vec<f32>,
    pub(super) hc_sorted: Vec<f32>,
    pub(super) gw_ih: Vec<f32>,
    pub(super) gw_hh: Vec<f32>,
    pub(super) gw_hr: Vec<f32>,
    pub(super) db: Vec<f32>,
    pub(super) db_part: Vec<f32>,
    /// Packed panels of the weight-gradient GEMMs, one per worker.
    pub(super) tn_pack: Vec<Vec<f32>>,
}

/// The element count of `dims`; an overflow becomes `usize::MAX`, which the allocators refuse
/// with a typed error.
pub(super) fn numel(dims: &[usize]) -> usize {
    checked_numel(dims).unwrap_or(usize::MAX)
}

/// `v` grown to at least `len` floats (a typed error when that fails), its first `len` as a
/// slice. Contents are unspecified: callers fill what they read.
pub(super) fn grow<'a>(v: &'a mut Vec<f32>, what: &str, len: usize) -> Result<&'a mut [f32]> {
    if v.len() < len {
        *v = try_filled_vec(what, len, 0.0)?;
    }
    Ok(&mut v[..len])
}

/// Copies `rows` rows of `w` floats between two strided buffers.
pub(super) fn copy_rows(
    dst: &mut [f32],
    ld_dst: usize,
    src: &[f32],
    ld_src: usize,
    rows: usize,
    w: usize,
) {
    for r in 0..rows {
        dst[r * ld_dst..r * ld_dst + w].copy_from_slice(&src[r * ld_src..r * ld_src + w]);
    }
}
