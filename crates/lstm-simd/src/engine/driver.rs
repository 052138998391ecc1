//! The one recurrence: the loop over the time steps of one (layer, direction), and the layer
//! around it, shared by every forward the engine runs: [`forward`](lstm_core::LstmEngine),
//! [`step`](lstm_core::LstmEngine::step), the parallel runner's splits, and the training
//! forward. What differs is a type parameter, the [`PassRecord`] of the pass: inference
//! records nothing ([`NoTape`](crate::kernels::NoTape)), training records the tape
//! ([`TapeRecorder`](crate::kernels::TapeRecorder)), in the same kernel body.
//!
//! Per (layer, direction):
//! 1. the input projection of a chunk of time steps, `X_chunk · W_ihᵀ + b_ih + b_hh`, one GEMM
//!    over all `steps · B` rows (hoisted out of the recurrence);
//! 2. for each step of the chunk, one fused step over the sequences still running (the batch
//!    is sorted longest first, so those are a prefix of the rows), then the `W_hr`
//!    projection when `proj_size > 0`.

use lstm_core::Result;

use super::workspace::{copy_rows, numel, Workspace};
use super::{PackedCell, SimdEngine};
use crate::kernels::{
    split_columns, DirectionPass, PassBuffers, PassDims, PassRecord, PassWeights, RowWindow,
};
use crate::pack::AlignedBuf;
use crate::team::{Split, WorkerTeam};

/// The loop over the time steps of one pass, run by every worker of its team: chunks of
/// projected steps (from the end in the reverse direction), the running rows of each step,
/// the rows that finished retired to `h_n`.
fn run_pass<R: PassRecord>(
    pass: &DirectionPass<'_, R>,
    reverse: bool,
    active: &[usize],
    first_row: usize,
) {
    let Some(mut lane) = pass.lane() else {
        return;
    };
    let d = pass.dims();
    let seq_len = active.len().min(d.seq_len);
    // The pass runs the rows first_row.. of the sorted batch: of the rows still running at
    // a step (a prefix of the batch), those of its own.
    let own = |t: usize| active[t].saturating_sub(first_row).min(d.batch);
    let mut running = d.batch; // rows still running before this step (forward direction)
    let mut chunk_start = 0;
    while chunk_start < seq_len {
        let len = d.steps.min(seq_len - chunk_start);
        // Forward: steps chunk_start.. ; reverse: the same chunks from the end.
        let first = if reverse {
            seq_len - chunk_start - len
        } else {
            chunk_start
        };
        lane.project(first, len);
        for i in 0..len {
            let t = if reverse {
                first + len - 1 - i
            } else {
                first + i
            };
            let n = own(t);
            if !reverse && n < running {
                // Rows n..running ended at the previous step: their h is final.
                lane.retire(n..running);
                running = n;
            }
            if n > 0 {
                lane.step(t, n);
            }
        }
        chunk_start += len;
    }
    // Rows still running at the end (all of them, in the reverse direction).
    lane.finish(if reverse { d.batch } else { running });
}

/// What one layer reads and writes, in sorted batch order unless `output_rows` says: its `B`
/// rows `first_row ..` of the sorted batch (all of them, or one shard of a forward split by
/// rows).
#[derive(Debug)]
pub(super) struct LayerIo<'a> {
    /// The layer's input, `[T, input_batch, in_size]`, of which the layer reads rows
    /// `input_first .. input_first + B` of each step.
    pub(super) input: &'a [f32],
    pub(super) input_batch: usize,
    pub(super) input_first: usize,
    pub(super) in_size: usize,
    /// The layer's output rows, `B` a step of `D·H_out` floats.
    pub(super) output: RowWindow<'a>,
    /// The output row of each sorted row, or `None` to write in sorted order.
    pub(super) output_rows: Option<&'a [usize]>,
    /// Whether the output is written past the caches (see `PassBuffers::stream_output`).
    pub(super) stream_output: bool,
    /// Running rows per step (`T` entries, a prefix of the sorted rows of the whole call).
    pub(super) active: &'a [usize],
    /// The layer's rows: `batch` of them from sorted row `first_row` of the call.
    pub(super) first_row: usize,
    pub(super) batch: usize,
    /// The layer's initial state, `[D, B, H_out]` and `[D, B, H]`, or zeros.
    pub(super) h0: Option<&'a [f32]>,
    pub(super) c0: Option<&'a [f32]>,
    /// The layer's final state, `[D, B, H_out]` and `[D, B, H]`.
    pub(super) h_n: &'a mut [f32],
    pub(super) c_n: &'a mut [f32],
}

impl SimdEngine {
    /// Sizes the per-direction scratch for `batch` rows and `steps` projected steps.
    pub(super) fn prepare(&self, ws: &mut Workspace, batch: usize, steps: usize) -> Result<()> {
        let d = &self.dims;
        ws.xproj
            .ensure("input projection", numel(&[steps, batch, d.gp]))?;
        for h in &mut ws.h {
            h.ensure("h", numel(&[batch, d.ldh]))?;
        }
        ws.c.ensure("c", numel(&[batch, d.hp]))?;
        if self.config.proj_size > 0 {
            ws.h_cell.ensure("h", numel(&[batch, d.hp]))?;
        }
        Ok(())
    }

    /// One layer, both directions: on this thread, with each step's hidden units split over
    /// `team` ([`Split::Hidden`]), or with the two directions at once on two of its workers
    /// ([`Split::Directions`]). `records` gives each direction's record, in order.
    pub(super) fn run_layer<R: PassRecord>(
        &self,
        layer: usize,
        io: LayerIo<'_>,
        records: impl IntoIterator<Item = R>,
        ws: &mut Workspace,
        team: Option<&dyn WorkerTeam>,
        split: Split,
    ) -> Result<()> {
        let d = self.dims;
        let (batch, seq_len) = (io.batch, io.active.len());
        let steps = self.chunk_steps(batch, seq_len);
        let bands = split_columns(io.output, d.h_out, d.dirs);
        let (h_fwd, h_rev) = io.h_n.split_at_mut((batch * d.h_out).min(io.h_n.len()));
        let (c_fwd, c_rev) = io.c_n.split_at_mut((batch * d.hidden).min(io.c_n.len()));
        let mut ios = bands
            .into_iter()
            .zip([(h_fwd, c_fwd), (h_rev, c_rev)])
            .enumerate()
            .filter_map(|(dir, (band, (h_n, c_n)))| {
                let (hs, cs) = (dir * batch * d.h_out, dir * batch * d.hidden);
                Some(PassIo {
                    output: band?,
                    dir,
                    h0: io.h0.map(|h| &h[hs..hs + batch * d.h_out]),
                    c0: io.c0.map(|c| &c[cs..cs + batch * d.hidden]),
                    h_n,
                    c_n,
                })
            });
        let mut records = records.into_iter();
        let common = PassCommon {
            input: io.input,
            input_batch: io.input_batch,
            input_first: io.input_first,
            in_size: io.in_size,
            output_rows: io.output_rows,
            stream_output: io.stream_output,
            batch,
            seq_len,
            steps,
        };
        match team {
            Some(team) if split == Split::Directions && d.dirs == 2 && team.size() >= 2 => {
                // Both directions at once, each on its own worker and workspace: they write
                // their own workspaces, their own halves of the output's columns (dir·H_out)
                // and their own cells of h_n, c_n.
                let mut second = self.take_workspace();
                let result = self.prepare(&mut second, batch, steps).map(|()| {
                    let (Some(fwd), Some(rev)) = (ios.next(), ios.next()) else {
                        return;
                    };
                    let (Some(rec_fwd), Some(rec_rev)) = (records.next(), records.next()) else {
                        return;
                    };
                    let cells = &self.cells[layer * 2..layer * 2 + 2];
                    let first = self.direction_pass(&cells[0], &common, fwd, ws, rec_fwd, 1);
                    let other =
                        self.direction_pass(&cells[1], &common, rev, &mut second, rec_rev, 1);
                    team.run(&|w| match w {
                        0 => run_pass(&first, false, io.active, io.first_row),
                        1 => run_pass(&other, true, io.active, io.first_row),
                        _ => {}
                    });
                });
                self.return_workspace(second);
                result
            }
            _ => {
                let workers = team.map_or(1, |t| t.size());
                for (io_dir, record) in ios.zip(records) {
                    // The second direction of a bidirectional layer, or the one direction of
                    // a reverse-only one, reads the sequence from its end.
                    let reverse = self.config.reads_backwards(io_dir.dir);
                    let cell = &self.cells[layer * d.dirs + io_dir.dir];
                    let pass = self.direction_pass(cell, &common, io_dir, ws, record, workers);
                    match team {
                        Some(team) if workers > 1 => {
                            team.run(&|_| run_pass(&pass, reverse, io.active, io.first_row));
                        }
                        _ => run_pass(&pass, reverse, io.active, io.first_row),
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes one (layer, direction)'s initial state into `ws` and returns its pass, ready to
    /// run on one thread or on the workers of a team.
    fn direction_pass<'a, R: PassRecord>(
        &'a self,
        cell: &'a PackedCell,
        common: &PassCommon<'a>,
        io: PassIo<'a>,
        ws: &'a mut Workspace,
        record: R,
        workers: usize,
    ) -> DirectionPass<'a, R> {
        let d = self.dims;
        let batch = common.batch;
        // Initial state in both h buffers: a row that joins late (reverse direction with
        // lengths) finds its h0 whichever buffer is current when it does.
        let Workspace {
            xproj,
            h,
            h_cell,
            c,
            ..
        } = ws;
        let [h_a, h_b] = h;
        for buf in [&mut *h_a, &mut *h_b] {
            let s = buf.as_mut_slice();
            s.fill(0.0);
            if let Some(h0) = io.h0 {
                copy_rows(s, d.ldh, h0, d.h_out, batch, d.h_out);
            }
        }
        let cs = c.as_mut_slice();
        cs.fill(0.0);
        if let Some(c0) = io.c0 {
            copy_rows(cs, d.hp, c0, d.hidden, batch, d.hidden);
        }
        let weights = PassWeights {
            w_ih: &cell.w_ih,
            w_hh: &cell.w_hh,
            bias: cell.bias.as_slice(),
            w_hr: cell.w_hr.as_ref(),
            variant: cell.variant,
            peephole: cell.peephole.as_ref().map(AlignedBuf::as_slice),
        };
        let dims = PassDims {
            seq_len: common.seq_len,
            batch,
            in_size: common.in_size,
            hidden: d.hidden,
            h_out: d.h_out,
            hp: d.hp,
            gp: d.gp,
            ldh: d.ldh,
            steps: common.steps,
        };
        let bufs = PassBuffers {
            input: common.input,
            input_batch: common.input_batch,
            input_first: common.input_first,
            output: io.output,
            output_rows: common.output_rows,
            stream_output: common.stream_output,
            h_n: io.h_n,
            c_n: io.c_n,
            xproj: xproj.as_mut_slice(),
            h: [h_a.as_mut_slice(), h_b.as_mut_slice()],
            h_cell: h_cell.as_mut_slice(),
            c: cs,
        };
        let h_is_zero = io.h0.is_none();
        DirectionPass::new(
            self.kernels,
            weights,
            dims,
            bufs,
            record,
            h_is_zero,
            workers,
        )
    }
}

/// What the passes of one layer share.
#[derive(Debug)]
struct PassCommon<'a> {
    input: &'a [f32],
    input_batch: usize,
    input_first: usize,
    in_size: usize,
    output_rows: Option<&'a [usize]>,
    stream_output: bool,
    batch: usize,
    seq_len: usize,
    steps: usize,
}

/// What one direction of a layer reads and writes.
#[derive(Debug)]
struct PassIo<'a> {
    output: crate::kernels::ColumnBand<'a>,
    dir: usize,
    h0: Option<&'a [f32]>,
    c0: Option<&'a [f32]>,
    h_n: &'a mut [f32],
    c_n: &'a mut [f32],
}
