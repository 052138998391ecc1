//! The batch order of a call with lengths: longest sequence first, so that the sequences still
//! running at a step are a prefix of the rows and the kernels simply run that many rows. Every
//! pass (inference, training forward, backward) runs in this order; this module sorts into it
//! and back, and sizes the chunks of time.

use lstm_core::tensor::try_filled_vec;
use lstm_core::Result;

/// The batch order of a call: longest first (stable), and per step the number of rows still
/// running.
#[derive(Debug)]
pub(super) struct BatchOrder {
    /// `order[i]`: the caller's row at sorted position `i`; `None` when already sorted.
    pub(super) order: Option<Vec<usize>>,
    /// `active[t]`: rows running at step `t` (a prefix of the sorted rows).
    pub(super) active: Vec<usize>,
    /// The sorted rows' lengths.
    pub(super) lengths: Vec<usize>,
}

impl BatchOrder {
    /// The order of `batch` rows over `seq_len` steps, with the rows' `lengths` (all
    /// `seq_len` without).
    pub(super) fn new(seq_len: usize, batch: usize, lengths: Option<&[usize]>) -> Self {
        let Some(lengths) = lengths else {
            return BatchOrder {
                order: None,
                active: vec![batch; seq_len],
                lengths: vec![seq_len; batch],
            };
        };
        let mut order: Vec<usize> = (0..batch).collect();
        order.sort_by_key(|&b| std::cmp::Reverse(lengths[b]));
        let active = (0..seq_len)
            .map(|t| lengths.iter().filter(|&&len| len > t).count())
            .collect();
        let sorted = order.iter().map(|&b| lengths[b]).collect();
        let identity = order.iter().enumerate().all(|(i, &b)| i == b);
        BatchOrder {
            order: (!identity).then_some(order),
            active,
            lengths: sorted,
        }
    }

    /// The number of rows.
    pub(super) fn batch(&self) -> usize {
        self.lengths.len()
    }

    /// The caller's row of sorted row `i`.
    pub(super) fn orig(&self, i: usize) -> usize {
        self.order.as_ref().map_or(i, |o| o[i])
    }

    /// The caller's row of each sorted row, or `None` for the identity.
    pub(super) fn table(&self) -> Option<&[usize]> {
        self.order.as_deref()
    }
}

/// `dst[g, i, :] = src[g, order[i], :]` for `groups` groups of `order.len()` rows of `width`.
pub(super) fn gather_rows(
    dst: &mut [f32],
    src: &[f32],
    order: &[usize],
    groups: usize,
    width: usize,
) {
    let b = order.len();
    for g in 0..groups {
        for (i, &from) in order.iter().enumerate() {
            let d = (g * b + i) * width;
            let s = (g * b + from) * width;
            dst[d..d + width].copy_from_slice(&src[s..s + width]);
        }
    }
}

/// The inverse of [`gather_rows`], in place through a copy: `data` from sorted order back to
/// the caller's, `data[g, order[i]] = sorted[g, i]`.
pub(super) fn unsort(data: &mut [f32], order: &[usize], groups: usize, width: usize) -> Result<()> {
    let mut sorted = try_filled_vec("output", data.len(), 0.0f32)?;
    sorted.copy_from_slice(data);
    let b = order.len();
    for g in 0..groups {
        for (i, &to) in order.iter().enumerate() {
            let s = (g * b + i) * width;
            let d = (g * b + to) * width;
            data[d..d + width].copy_from_slice(&sorted[s..s + width]);
        }
    }
    Ok(())
}

/// Rows of input projection a chunk holds at least, whatever `chunk_bytes` says: each chunk
/// reads all of `W_ih` once, which a chunk of a few rows (a streaming batch of one) cannot
/// amortize (measured: stream-large at 32 rows a chunk, 10% slower at f32 than at 100).
const MIN_CHUNK_ROWS: usize = 64;

/// Steps of input projection computed per chunk: as many as fit in `chunk_bytes` for `batch`
/// rows of `gp` floats, or [`MIN_CHUNK_ROWS`] rows when more; at least one, at most `seq_len`.
pub(super) fn chunk_steps(chunk_bytes: usize, gp: usize, batch: usize, seq_len: usize) -> usize {
    let rows = (chunk_bytes / (4 * gp)).max(MIN_CHUNK_ROWS);
    (rows / batch.max(1)).clamp(1, seq_len.max(1))
}
