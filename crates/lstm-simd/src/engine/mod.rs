//! [`SimdEngine`]: packs the weights once, then drives the kernels over layers, directions,
//! chunks of time steps and the active rows of each step.
//!
//! - `mod.rs`: the engine, its packed cells, [`LstmEngine`] (forward, step) and the layer loop
//!   of a forward call;
//! - `driver.rs`: the one recurrence, the loop over the steps of a (layer, direction) shared by
//!   inference, streaming, the parallel splits and the training forward;
//! - `train.rs`: the training forward (the same driver, recording a tape) and the weights
//!   packed for the backward;
//! - `backward.rs`: backpropagation through time;
//! - `batch_order.rs`: sorting the batch longest first, and back; chunks of time;
//! - `workspace.rs`: the reused scratch, sized before the time loop (which never allocates).
//!
//! Nothing here is `unsafe`: the drivers call the kernels through the safe methods of
//! [`Kernels`] and through [`DirectionPass`](crate::kernels::DirectionPass).

#![forbid(unsafe_code)]

mod backward;
mod batch_order;
mod driver;
mod train;
mod workspace;

use std::ops::Range;
use std::sync::Mutex;

use lstm_core::tensor::try_filled_vec;
use lstm_core::{
    check_step, BatchOutput, LstmConfig, LstmEngine, LstmError, LstmState, LstmWeights, Precision,
    Result, SequenceBatch,
};

use self::batch_order::{chunk_steps, gather_rows, unsort, BatchOrder};
use self::driver::LayerIo;
use self::train::internal;
use self::workspace::{copy_rows, grow, numel, Workspace};
use crate::backend::Backend;
use crate::kernels::{split_rows, whole_rows, CellVariant, Kernels, NoTape, OnnxCell, RowWindow};
use crate::pack::{
    pack_gate_vector, pack_gate_weights, pack_plain, padded_hidden, AlignedBuf, PackedMatrix,
    INT8_MAX_K,
};
use crate::team::{Split, WorkerTeam};

/// The input of a call and its initial state, `(x, h0, c0)`.
type CallInputs<'a> = (&'a [f32], Option<&'a [f32]>, Option<&'a [f32]>);

/// One (layer, direction) cell, packed for the engine's backend.
#[derive(Clone, Debug)]
struct PackedCell {
    w_ih: PackedMatrix,
    w_hh: PackedMatrix,
    /// `b_ih + b_hh` in gate-tile order (zeros without bias).
    bias: AlignedBuf,
    w_hr: Option<PackedMatrix>,
    /// The cell's gate math.
    variant: CellVariant,
    /// ONNX peephole weights `P_i | P_f | 0 | P_o` in gate-tile order (as `bias`), when the
    /// config has them.
    peephole: Option<AlignedBuf>,
}

/// Sizes shared by every cell.
#[derive(Clone, Copy, Debug)]
struct Dims {
    hidden: usize,
    h_out: usize,
    /// Hidden size padded to whole vectors: the row stride of `c` and of `o ⊙ tanh(c)`.
    hp: usize,
    /// `4 · hp`: the row stride of the input projection.
    gp: usize,
    /// Row stride of the recurrent `h` buffers (`hp`, or `P` padded to whole tiles).
    ldh: usize,
    dirs: usize,
    out_size: usize,
}

/// The SIMD engine: PyTorch's `nn.LSTM` forward on packed weights and fused kernels.
///
/// ```
/// use lstm_core::{LstmConfig, LstmEngine, LstmWeights, Tensor};
/// use lstm_simd::{Backend, SimdEngine};
///
/// let weights = LstmWeights::<f32>::random(LstmConfig::new(3, 20).with_num_layers(2), 1)?;
/// let engine = SimdEngine::new(&weights)?; // the best backend of this CPU
/// let out = engine.forward(&Tensor::new([7, 2, 3], vec![0.5; 42])?, None, None)?;
/// assert_eq!(out.output.shape(), &[7, 2, 20]);
/// let portable = SimdEngine::with_backend(&weights, Backend::Portable)?;
/// assert_eq!(portable.backend(), Backend::Portable);
/// # Ok::<(), lstm_core::LstmError>(())
/// ```
#[derive(Debug)]
pub struct SimdEngine {
    config: LstmConfig,
    backend: Backend,
    precision: Precision,
    kernels: Kernels,
    dims: Dims,
    cells: Vec<PackedCell>,
    pool: Mutex<Vec<Workspace>>,
    /// The backward pass's packings and scratch, made on the first training call.
    train: std::sync::OnceLock<train::TrainState>,
}

impl SimdEngine {
    /// Packs `weights` for the best backend this CPU supports ([`Backend::detect`]).
    pub fn new(weights: &LstmWeights<f32>) -> Result<Self> {
        Self::with_backend(weights, Backend::detect())
    }

    /// Packs `weights` for `backend`; fails when this CPU lacks its instructions.
    ///
    /// ONNX's cell options ([`LstmConfig::onnx_only_options`]: a reverse-only direction,
    /// peepholes, `clip`, `input_forget`) run in the forward ([`LstmEngine::forward`],
    /// [`step`](LstmEngine::step), the parallel runner); training them
    /// ([`forward_train`](Self::forward_train), [`backward`](Self::backward)) is refused with
    /// [`LstmError::Unsupported`] naming the option.
    pub fn with_backend(weights: &LstmWeights<f32>, backend: Backend) -> Result<Self> {
        Self::with_options(weights, backend, Precision::F32)
    }

    /// Packs `weights` for the best backend of this CPU for `precision`
    /// ([`Backend::detect_for`]).
    pub fn with_precision(weights: &LstmWeights<f32>, precision: Precision) -> Result<Self> {
        Self::with_options(weights, Backend::detect_for(precision), precision)
    }

    /// Packs `weights` in `precision` for `backend`; fails when this CPU lacks its
    /// instructions.
    ///
    /// At [`Precision::Bf16`], `W_ih`, `W_hh` and `W_hr` are rounded to bf16 once, here (to
    /// nearest, ties to even); the state, the gate pre-activations, the biases and the
    /// nonlinearities stay f32. On [`Backend::Avx512Bf16`] the products round their other
    /// operand (the input rows, `h`) to bf16 as well and run on `vdpbf16ps`; elsewhere the
    /// weights are widened to f32 in registers. Training refuses a bf16 engine
    /// ([`LstmError::Unsupported`]).
    ///
    /// ```
    /// use lstm_core::{LstmConfig, LstmEngine, LstmWeights, Precision, Tensor};
    /// use lstm_simd::{Backend, SimdEngine};
    ///
    /// let weights = LstmWeights::<f32>::random(LstmConfig::new(3, 20), 1)?;
    /// let bf16 = SimdEngine::with_options(&weights, Backend::Portable, Precision::Bf16)?;
    /// let f32 = SimdEngine::with_backend(&weights, Backend::Portable)?;
    /// let x = Tensor::new([7, 2, 3], vec![0.5; 42])?;
    /// let (a, b) = (bf16.forward(&x, None, None)?, f32.forward(&x, None, None)?);
    /// let worst = a.output.data().iter().zip(b.output.data()).map(|(a, b)| (a - b).abs());
    /// assert!(worst.fold(0.0, f32::max) < 1e-2);
    /// # Ok::<(), lstm_core::LstmError>(())
    /// ```
    pub fn with_options(
        weights: &LstmWeights<f32>,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self> {
        let config = weights.config().clone();
        config.validate()?;
        let kernels = backend.kernels(precision)?;
        let widest = config
            .input_size
            .max(config.hidden_size)
            .max(config.h_out());
        if precision == Precision::Int8 && widest > INT8_MAX_K {
            return Err(LstmError::Unsupported(format!(
                "int8 products over {widest} terms (input or hidden size); at most {INT8_MAX_K} \
                 keep their integer sums exact"
            )));
        }
        let lanes = kernels.lanes;
        let (hidden, h_out) = (config.hidden_size, config.h_out());
        let hp = padded_hidden(hidden, lanes);
        let mut cells = Vec::with_capacity(config.num_cells());
        let mut ldh = hp;
        for layer in 0..config.num_layers {
            for dir in 0..config.num_directions() {
                let cell = weights
                    .cell(layer, dir)
                    .ok_or_else(|| LstmError::MissingTensor {
                        name: format!("cell (layer {layer}, direction {dir})"),
                    })?;
                let in_size = config.layer_input_size(layer);
                let w_ih =
                    pack_gate_weights("weight_ih", &cell.w_ih, hidden, in_size, lanes, precision)?;
                let w_hh =
                    pack_gate_weights("weight_hh", &cell.w_hh, hidden, h_out, lanes, precision)?;
                // b_ih + b_hh, summed once here: one rounding, as PyTorch's fused paths do.
                let bias_sum: Vec<f32> = match (&cell.b_ih, &cell.b_hh) {
                    (Some(a), Some(b)) => a.iter().zip(b).map(|(x, y)| x + y).collect(),
                    _ => vec![0.0; 4 * hidden],
                };
                let bias = pack_gate_vector(&bias_sum, hidden, lanes)?;
                let w_hr = match &cell.w_hr {
                    Some(w) => {
                        let p =
                            pack_plain("weight_hr", w, config.proj_size, hidden, lanes, precision)?;
                        ldh = p.cols();
                        Some(p)
                    }
                    None => None,
                };
                let peephole = if config.peepholes {
                    let p =
                        weights
                            .peephole(layer, dir)
                            .ok_or_else(|| LstmError::MissingTensor {
                                name: format!("peepholes (layer {layer}, direction {dir})"),
                            })?;
                    Some(pack_peephole(p, hidden, lanes, (layer, dir))?)
                } else {
                    None
                };
                cells.push(PackedCell {
                    w_ih,
                    w_hh,
                    bias,
                    w_hr,
                    variant: cell_variant(&config),
                    peephole,
                });
            }
        }
        let dims = Dims {
            hidden,
            h_out,
            hp,
            gp: 4 * hp,
            ldh,
            dirs: config.num_directions(),
            out_size: config.output_size(),
        };
        Ok(SimdEngine {
            config,
            backend,
            precision,
            kernels,
            dims,
            cells,
            pool: Mutex::new(Vec::new()),
            train: std::sync::OnceLock::new(),
        })
    }

    /// The instruction-set path this engine runs.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The precision of its weights and products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The bytes of the largest packed `W_hh` of one (layer, direction): what a core reads
    /// every step when it runs that direction alone, for the cost models that compare it with
    /// [`CORE_L2_BYTES`](crate::CORE_L2_BYTES).
    pub fn recurrent_weight_bytes(&self) -> usize {
        self.cells
            .iter()
            .map(|c| c.w_hh.len_bytes())
            .max()
            .unwrap_or(0)
    }

    fn take_workspace(&self) -> Workspace {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    fn return_workspace(&self, ws: Workspace) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 16 {
            pool.push(ws);
        }
    }

    /// Steps of input projection computed per chunk for a batch of `batch` rows.
    fn chunk_steps(&self, batch: usize, seq_len: usize) -> usize {
        chunk_steps(self.kernels.chunk_bytes, self.dims.gp, batch, seq_len)
    }
}

/// What every shard of a forward call shares: the sorted input (`[T, batch, I]`) and the
/// running rows of each step.
struct CallRows<'a> {
    x: &'a [f32],
    active: &'a [usize],
    batch: usize,
    /// The call has lengths: steps past a row's end read as zeros in the layers between.
    padded: bool,
    /// The output is written past the caches (see `STREAM_OUTPUT_BYTES`).
    stream_output: bool,
}

/// One shard's rows of a forward call: `batch` rows from sorted row `first`, its window of
/// the output and its own `[L·D, batch, ·]` states.
struct ShardIo<'a> {
    first: usize,
    batch: usize,
    output: RowWindow<'a>,
    h0: Option<&'a [f32]>,
    c0: Option<&'a [f32]>,
    h_n: &'a mut [f32],
    c_n: &'a mut [f32],
}

/// A shard of [`Split::Rows`] as handed to its worker, and what it leaves.
struct ShardJob<'a> {
    rows: Range<usize>,
    /// Taken by the worker that runs the shard.
    window: Option<RowWindow<'a>>,
    h0: Option<Vec<f32>>,
    c0: Option<Vec<f32>>,
    h_n: Vec<f32>,
    c_n: Vec<f32>,
    ws: Workspace,
    result: Result<()>,
}

/// The sorted rows `0..batch` cut into at most `count` shards of consecutive rows with about
/// the same work: row `r` runs as many steps as `active` (the running rows of each step, a
/// prefix) has entries above `r`. Every shard has a row at least.
fn balanced_shards(active: &[usize], batch: usize, count: usize) -> Vec<Range<usize>> {
    let count = count.clamp(1, batch.max(1));
    let mut ending = vec![0usize; batch + 1]; // steps that run exactly `a` rows
    for &a in active {
        ending[a.min(batch)] += 1;
    }
    // Steps each row runs (at least 1, so that rows of no step still spread).
    let mut runs = vec![0usize; batch];
    let mut steps = 0;
    for r in (0..batch).rev() {
        steps += ending[r + 1];
        runs[r] = steps.max(1);
    }
    let total: usize = runs.iter().sum();
    let mut shards = Vec::with_capacity(count);
    let (mut start, mut done) = (0, 0);
    for w in 1..=count {
        let target = total / count * w + total % count * w / count;
        let last_row = batch - (count - w); // leave a row to each shard after this one
        let mut end = start;
        while end < last_row && (end == start || done < target) {
            done += runs[end];
            end += 1;
        }
        shards.push(start..end);
        start = end;
    }
    shards
}

/// Outputs at least this large are written past the caches (`PassBuffers::stream_output`):
/// four times a core's L2, they leave it before anyone reads them, and each line written
/// in cache is first read from memory. A bf16 batch-large forward (6.5 MB of output) is
/// 1-2% faster for it.
const STREAM_OUTPUT_BYTES: usize = 4 * crate::CORE_L2_BYTES;

/// The gate math of `config`'s cells: PyTorch's, or ONNX's when it sets peepholes, `clip` or
/// `input_forget` (a reverse-only direction is the driver's, not the cell's).
fn cell_variant(config: &LstmConfig) -> CellVariant {
    if config.peepholes || config.clip.is_some() || config.input_forget {
        CellVariant::Onnx(OnnxCell {
            clip: config.clip,
            input_forget: config.input_forget,
            peepholes: config.peepholes,
        })
    } else {
        CellVariant::Standard
    }
}

/// One cell's `[3H]` peepholes (rows i, f, o) in the bias's gate-tile order, `P_i | P_f | 0 |
/// P_o`, so the fused step finds them at its bias offsets.
fn pack_peephole(
    p: &[f32],
    hidden: usize,
    lanes: usize,
    (layer, dir): (usize, usize),
) -> Result<AlignedBuf> {
    if p.len() != 3 * hidden {
        return Err(LstmError::ShapeMismatch {
            what: format!("peepholes (layer {layer}, direction {dir})").into(),
            expected: vec![3 * hidden],
            found: vec![p.len()],
        });
    }
    let mut gates = vec![0.0; 4 * hidden];
    gates[..2 * hidden].copy_from_slice(&p[..2 * hidden]);
    gates[3 * hidden..].copy_from_slice(&p[2 * hidden..]);
    pack_gate_vector(&gates, hidden, lanes)
}

impl LstmEngine<f32> for SimdEngine {
    fn config(&self) -> &LstmConfig {
        &self.config
    }

    fn name(&self) -> &'static str {
        "simd"
    }

    fn forward_batch(&self, call: &SequenceBatch<'_, f32>) -> Result<BatchOutput<f32>> {
        self.forward_batch_with(call, None, Split::Hidden)
    }

    fn step(&self, x_t: &[f32], state: &mut LstmState<f32>, output: &mut [f32]) -> Result<()> {
        let batch = check_step(&self.config, x_t, state, output)?;
        if batch == 0 {
            return Ok(());
        }
        let mut ws = self.take_workspace();
        let result = self.step_with(&mut ws, x_t, state, output, batch);
        self.return_workspace(ws);
        result
    }
}

impl SimdEngine {
    /// [`LstmEngine::forward_batch`] shared by the workers of `team` (the parallel runner):
    ///
    /// - [`Split::Hidden`]: every step's hidden units are divided among the workers; each
    ///   keeps its slice of `W_ih` and `W_hh` in its own core's cache, and they meet at a
    ///   barrier once per step (twice with a projection);
    /// - [`Split::Directions`]: the two directions of each bidirectional layer run at once on
    ///   two workers (unidirectional layers use the hidden split);
    /// - [`Split::Rows`]: the batch is cut into one shard a worker (consecutive sorted rows of
    ///   about equal work), and each worker runs every layer for its shard alone, reading and
    ///   writing its rows in place.
    ///
    /// Bit-identical to the one-thread result for every team size and split.
    pub fn forward_batch_split(
        &self,
        call: &SequenceBatch<'_, f32>,
        team: &dyn WorkerTeam,
        split: Split,
    ) -> Result<BatchOutput<f32>> {
        self.forward_batch_with(call, Some(team), split)
    }

    fn forward_batch_with(
        &self,
        call: &SequenceBatch<'_, f32>,
        team: Option<&dyn WorkerTeam>,
        split: Split,
    ) -> Result<BatchOutput<f32>> {
        call.ensure_config(&self.config)?;
        let d = self.dims;
        let (seq_len, batch) = (call.seq_len(), call.batch());
        let cells = self.config.num_cells();
        let mut output = try_filled_vec("output", numel(&[seq_len, batch, d.out_size]), 0.0)?;
        let mut h_n = try_filled_vec("h_n", numel(&[cells, batch, d.h_out]), 0.0)?;
        let mut c_n = try_filled_vec("c_n", numel(&[cells, batch, d.hidden]), 0.0)?;
        if batch == 0 {
            return Ok(BatchOutput { output, h_n, c_n });
        }
        let order = BatchOrder::new(seq_len, batch, call.lengths());
        let mut ws = self.take_workspace();
        let outputs = (&mut output[..], &mut h_n[..], &mut c_n[..]);
        let result = self.forward_into(call, &order, &mut ws, outputs, team, split);
        self.return_workspace(ws);
        result?;
        if let Some(order) = &order.order {
            unsort(&mut output, order, seq_len, d.out_size)?;
            unsort(&mut h_n, order, cells, d.h_out)?;
            unsort(&mut c_n, order, cells, d.hidden)?;
        }
        Ok(BatchOutput { output, h_n, c_n })
    }

    /// The layers of a forward call, in sorted-batch order, into `output`, `h_n`, `c_n`: all
    /// rows at once (on this thread, or each step shared by `team`), or, for
    /// [`Split::Rows`], each worker of `team` running the layers for a shard of the rows.
    fn forward_into(
        &self,
        call: &SequenceBatch<'_, f32>,
        order: &BatchOrder,
        ws: &mut Workspace,
        (output, h_n, c_n): (&mut [f32], &mut [f32], &mut [f32]),
        team: Option<&dyn WorkerTeam>,
        split: Split,
    ) -> Result<()> {
        let d = self.dims;
        let (seq_len, batch) = (call.seq_len(), call.batch());
        let mut sorted = [
            std::mem::take(&mut ws.x_sorted),
            std::mem::take(&mut ws.h0_sorted),
            std::mem::take(&mut ws.c0_sorted),
        ];
        let result = (|| {
            let (x, h0, c0) = self.sorted_inputs(call, order, &mut sorted)?;
            // The caller's output, when large and not reordered afterwards.
            let stream_output = order.order.is_none()
                && numel(&[seq_len, batch, d.out_size]).saturating_mul(4) >= STREAM_OUTPUT_BYTES;
            let rows = CallRows {
                x,
                active: &order.active,
                batch,
                padded: call.lengths().is_some(),
                stream_output,
            };
            match team {
                Some(team) if split == Split::Rows && team.size() >= 2 && batch >= 2 => {
                    self.forward_row_shards(&rows, (h0, c0), (output, h_n, c_n), team)
                }
                _ => {
                    let shard = ShardIo {
                        first: 0,
                        batch,
                        output: whole_rows(output, d.out_size, batch),
                        h0,
                        c0,
                        h_n,
                        c_n,
                    };
                    self.forward_rows(&rows, shard, ws, team, split)
                }
            }
        })();
        [ws.x_sorted, ws.h0_sorted, ws.c0_sorted] = sorted;
        result
    }

    /// [`Split::Rows`]: the sorted rows cut into one shard a worker, of about the same work
    /// (the sum of their lengths), each run through every layer by its worker alone, with a
    /// workspace of its own and no synchronisation at all; the shard's rows of the output are
    /// written in place, its initial and final states go through small buffers of its own.
    fn forward_row_shards(
        &self,
        rows: &CallRows<'_>,
        (h0, c0): (Option<&[f32]>, Option<&[f32]>),
        (output, h_n, c_n): (&mut [f32], &mut [f32], &mut [f32]),
        team: &dyn WorkerTeam,
    ) -> Result<()> {
        let d = self.dims;
        let cells = self.config.num_cells();
        let shards = balanced_shards(rows.active, rows.batch, team.size());
        let windows = split_rows(output, d.out_size, rows.batch, &shards);
        // Rows `r` of each cell of a `[cells, B, width]` state, as `[cells, r.len(), width]`.
        let gather = |src: &[f32], r: &Range<usize>, width: usize| -> Result<Vec<f32>> {
            let block = r.len() * width;
            let mut out = try_filled_vec("state", numel(&[cells, block]), 0.0)?;
            let src = &src[r.start * width..];
            copy_rows(&mut out, block, src, rows.batch * width, cells, block);
            Ok(out)
        };
        let mut jobs = Vec::with_capacity(shards.len());
        for (r, window) in shards.iter().zip(windows) {
            let state = |s: Option<&[f32]>, width| s.map(|s| gather(s, r, width)).transpose();
            jobs.push(Mutex::new(Some(ShardJob {
                rows: r.clone(),
                window: Some(window),
                h0: state(h0, d.h_out)?,
                c0: state(c0, d.hidden)?,
                h_n: try_filled_vec("h_n", numel(&[cells, r.len(), d.h_out]), 0.0)?,
                c_n: try_filled_vec("c_n", numel(&[cells, r.len(), d.hidden]), 0.0)?,
                ws: self.take_workspace(),
                result: Ok(()),
            })));
        }
        team.run(&|w| {
            let Some(slot) = jobs.get(w) else {
                return;
            };
            let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
            let Some(job) = guard.as_mut() else {
                return;
            };
            let Some(window) = job.window.take() else {
                return;
            };
            let shard = ShardIo {
                first: job.rows.start,
                batch: job.rows.len(),
                output: window,
                h0: job.h0.as_deref(),
                c0: job.c0.as_deref(),
                h_n: &mut job.h_n,
                c_n: &mut job.c_n,
            };
            job.result = self.forward_rows(rows, shard, &mut job.ws, None, Split::Hidden);
        });
        let mut result = Ok(());
        for slot in jobs {
            let Some(job) = slot.into_inner().unwrap_or_else(|e| e.into_inner()) else {
                continue;
            };
            let r = &job.rows;
            for (state, local, width) in [
                (&mut *h_n, &job.h_n, d.h_out),
                (&mut *c_n, &job.c_n, d.hidden),
            ] {
                let (block, dst) = (r.len() * width, &mut state[r.start * width..]);
                copy_rows(dst, rows.batch * width, local, block, cells, block);
            }
            self.return_workspace(job.ws);
            if job.window.is_some() {
                result = result.and(Err(internal("a shard was not run")));
            }
            result = result.and(job.result);
        }
        result
    }

    /// Every layer for the `shard.batch` rows `shard.first ..` of the sorted call: the shard
    /// reads its rows of the call's input and writes its window of the output; between
    /// layers, its rows alone, in the workspace's layer buffers.
    fn forward_rows(
        &self,
        rows: &CallRows<'_>,
        shard: ShardIo<'_>,
        ws: &mut Workspace,
        team: Option<&dyn WorkerTeam>,
        split: Split,
    ) -> Result<()> {
        let d = self.dims;
        let (seq_len, batch) = (rows.active.len(), shard.batch);
        self.prepare(ws, batch, self.chunk_steps(batch, seq_len))?;
        let layer_len = numel(&[seq_len, batch, d.out_size]);
        // Layer l < L-1 writes layers[l % 2] and the last layer writes `output`: a 2-layer
        // model needs one inter-layer buffer, never the second.
        for buf in ws
            .layers
            .iter_mut()
            .take(self.config.num_layers.saturating_sub(1))
        {
            grow(buf, "layer output", layer_len)?;
        }
        let mut layers = std::mem::take(&mut ws.layers);
        let mut output = Some(shard.output);
        let result = (|| {
            for layer in 0..self.config.num_layers {
                let last = layer + 1 == self.config.num_layers;
                let [even, odd] = &mut layers;
                let (prev, cur) = if layer.is_multiple_of(2) {
                    (&*odd, even)
                } else {
                    (&*even, odd)
                };
                let (input, input_batch, input_first) = if layer == 0 {
                    (rows.x, rows.batch, shard.first)
                } else {
                    (&prev[..layer_len], batch, 0)
                };
                let out = if last {
                    output.take().ok_or_else(|| internal("output"))?
                } else {
                    let out = &mut cur[..layer_len];
                    if rows.padded {
                        out.fill(0.0); // padded steps of intermediate layers read as zeros
                    }
                    whole_rows(out, d.out_size, batch)
                };
                let (hs, cs) = (
                    layer * d.dirs * batch * d.h_out,
                    layer * d.dirs * batch * d.hidden,
                );
                let (hl, cl) = (d.dirs * batch * d.h_out, d.dirs * batch * d.hidden);
                let io = LayerIo {
                    input,
                    input_batch,
                    input_first,
                    in_size: self.config.layer_input_size(layer),
                    output: out,
                    output_rows: None,
                    stream_output: last && rows.stream_output,
                    active: rows.active,
                    first_row: shard.first,
                    batch,
                    h0: shard.h0.map(|h| &h[hs..hs + hl]),
                    c0: shard.c0.map(|c| &c[cs..cs + cl]),
                    h_n: &mut shard.h_n[hs..hs + hl],
                    c_n: &mut shard.c_n[cs..cs + cl],
                };
                self.run_layer(layer, io, [NoTape, NoTape], ws, team, split)?;
            }
            Ok(())
        })();
        ws.layers = layers;
        result
    }

    /// The input and initial state of `call` in sorted batch order: the call's own, or copies
    /// gathered into `sorted` when the lengths need sorting.
    fn sorted_inputs<'a>(
        &self,
        call: &'a SequenceBatch<'_, f32>,
        order: &BatchOrder,
        sorted: &'a mut [Vec<f32>; 3],
    ) -> Result<CallInputs<'a>> {
        let Some(order) = &order.order else {
            return Ok((call.x(), call.h0(), call.c0()));
        };
        let d = self.dims;
        let (seq_len, cells) = (call.seq_len(), self.config.num_cells());
        let [xs, hs, cs] = sorted;
        let x = grow(xs, "input", call.x().len())?;
        gather_rows(x, call.x(), order, seq_len, self.config.input_size);
        let (h0, c0) = match (call.h0(), call.c0()) {
            (Some(h), Some(c)) => {
                let h0 = grow(hs, "h0", h.len())?;
                gather_rows(h0, h, order, cells, d.h_out);
                let c0 = grow(cs, "c0", c.len())?;
                gather_rows(c0, c, order, cells, d.hidden);
                (Some(&*h0), Some(&*c0))
            }
            _ => (None, None),
        };
        Ok((&*x, h0, c0))
    }

    /// One streaming step of every layer (unidirectional; shapes checked by the caller).
    fn step_with(
        &self,
        ws: &mut Workspace,
        x_t: &[f32],
        state: &mut LstmState<f32>,
        output: &mut [f32],
        batch: usize,
    ) -> Result<()> {
        let d = self.dims;
        self.prepare(ws, batch, 1)?;
        for buf in &mut ws.layers {
            grow(buf, "layer output", numel(&[batch, d.h_out]))?;
        }
        let mut h0 = std::mem::take(&mut ws.h0_sorted);
        let mut c0 = std::mem::take(&mut ws.c0_sorted);
        let mut layers = std::mem::take(&mut ws.layers);
        let result = (|| {
            let h0 = grow(&mut h0, "h", numel(&[batch, d.h_out]))?;
            let c0 = grow(&mut c0, "c", numel(&[batch, d.hidden]))?;
            for layer in 0..self.config.num_layers {
                let [even, odd] = &mut layers;
                let (prev, cur) = if layer.is_multiple_of(2) {
                    (&*odd, even)
                } else {
                    (&*even, odd)
                };
                let input: &[f32] = if layer == 0 {
                    x_t
                } else {
                    &prev[..batch * d.h_out]
                };
                let (hs, cs) = (layer * batch * d.h_out, layer * batch * d.hidden);
                let h_n = &mut state.h.data_mut()[hs..hs + batch * d.h_out];
                let c_n = &mut state.c.data_mut()[cs..cs + batch * d.hidden];
                // The state is read and written: stage the old one in reused buffers.
                h0.copy_from_slice(h_n);
                c0.copy_from_slice(c_n);
                let io = LayerIo {
                    input,
                    input_batch: batch,
                    input_first: 0,
                    in_size: self.config.layer_input_size(layer),
                    output: whole_rows(&mut cur[..batch * d.h_out], d.out_size, batch),
                    output_rows: None,
                    stream_output: false,
                    active: &[batch],
                    first_row: 0,
                    batch,
                    h0: Some(&*h0),
                    c0: Some(&*c0),
                    h_n,
                    c_n,
                };
                self.run_layer(layer, io, [NoTape], ws, None, Split::Hidden)?;
            }
            Ok(())
        })();
        if result.is_ok() {
            let last = (self.config.num_layers + 1) % 2;
            output.copy_from_slice(&layers[last][..batch * d.h_out]);
        }
        ws.layers = layers;
        ws.h0_sorted = h0;
        ws.c0_sorted = c0;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::balanced_shards;

    /// Shards cover the rows once, in order, none empty, and share the work as evenly as
    /// consecutive rows allow.
    #[test]
    fn shards_share_the_work_of_sorted_rows() {
        // 64 rows of 50 steps: halves.
        assert_eq!(balanced_shards(&[64; 50], 64, 2), [0..32, 32..64]);
        // Two rows of 4 steps, four of 1 (sorted longest first): 8 and 4 steps, where a
        // split by rows would give 9 and 3.
        assert_eq!(balanced_shards(&[6, 2, 2, 2], 6, 2), [0..2, 2..6]);
        assert_eq!(balanced_shards(&[6, 2, 2, 2], 6, 3), [0..1, 1..2, 2..6]);
        // More shards than rows: one row each.
        assert_eq!(balanced_shards(&[3; 5], 3, 8), [0..1, 1..2, 2..3]);
        // Rows that run no step still spread.
        assert_eq!(balanced_shards(&[], 4, 2), [0..2, 2..4]);
        for (active, batch, count) in [(vec![13, 9, 9, 4, 1], 13, 3), (vec![70; 8], 70, 7)] {
            let shards = balanced_shards(&active, batch, count);
            assert_eq!(shards.len(), count.min(batch));
            assert!(shards.iter().all(|r| !r.is_empty()));
            assert_eq!(shards.first().map(|r| r.start), Some(0));
            assert_eq!(shards.last().map(|r| r.end), Some(batch));
            assert!(shards.windows(2).all(|w| w[0].end == w[1].start));
        }
    }
}
