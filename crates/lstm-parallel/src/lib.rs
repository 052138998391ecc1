//! The parallel runner of `lstm-kernels`: the SIMD engine on a thread pool the runner owns.
//!
//! Four ways to use several cores, chosen per call by a cost model ([`Plan`]):
//!
//! - **Batch split**: the batch is cut into shards (whole register blocks of rows where
//!   possible) and each shard runs the SIMD engine over the whole sequence on its own thread.
//! - **Hidden split** (batch 1 and small batches): every step's hidden units are divided
//!   among the threads ([`SimdEngine::forward_batch_split`]); each thread keeps its slice of
//!   `W_ih` and `W_hh` in its own core's L2 and the threads meet at a spin barrier once per
//!   step (a thread that runs out of its own tiles of a step takes over another's).
//! - **Directions**: the two directions of each bidirectional layer at once, one per thread,
//!   with no barrier inside the layer, when one direction's `W_hh` fits a core's L2.
//! - **Serial**: work too small to pay for a fork-join (a few microseconds) stays on the
//!   calling thread, so a tiny call is never slower than the SIMD engine.
//!
//! Every output element is computed by the same instructions whichever plan runs it: results
//! are bit-identical to the SIMD engine for every thread count.
//!
//! Training ([`LstmBackward`]) runs on the same pool: the training forward on the forward's
//! split, the backward in batch shards with the weight gradients split by their rows
//! ([`ParallelEngine::train_plan`]); gradients are the SIMD engine's, bit for bit.
//!
//! ```
//! use lstm_core::{LstmConfig, LstmEngine, LstmWeights, Tensor};
//! use lstm_parallel::ParallelEngine;
//! use lstm_simd::SimdEngine;
//!
//! let weights = LstmWeights::<f32>::random(LstmConfig::new(8, 48), 1)?;
//! let x = Tensor::new([20, 16, 8], vec![0.3; 20 * 16 * 8])?;
//! let parallel = ParallelEngine::new(&weights, 2)?;
//! let simd = SimdEngine::new(&weights)?;
//! assert_eq!(parallel.forward(&x, None, None)?, simd.forward(&x, None, None)?);
//! # Ok::<(), lstm_core::LstmError>(())
//! ```

#![forbid(unsafe_code)]

use lstm_core::tensor::{checked_numel, try_filled_vec};
use lstm_core::{
    check_step, BatchOutput, GradOutputs, LstmBackward, LstmConfig, LstmEngine, LstmError,
    LstmGradients, LstmOutput, LstmState, LstmWeights, Precision, Result, SequenceBatch, Tensor,
    TrainingTape,
};
use lstm_simd::{Backend, SimdEngine, Split, WorkerTeam, CORE_L2_BYTES};
use rayon::prelude::*;

/// Below this many floating-point operations per time step and thread, a split costs more
/// (a fork-join of ~5-20 µs, or a barrier of ~0.2-1 µs per step) than it saves.
const MIN_FLOPS_PER_STEP_AND_THREAD: f64 = 2.0e5;

/// How one call is spread over the threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// On the calling thread.
    Serial,
    /// The batch cut into this many shards, one per thread.
    Batch(usize),
    /// Every step's hidden units split over this many threads.
    Hidden(usize),
    /// The two directions of each bidirectional layer at once, on two threads (layers with
    /// one direction use the hidden split).
    Directions,
}

/// The number of threads an engine uses when the caller does not say: one per core this
/// process may run on (`available_parallelism`, which honours cgroup and affinity limits).
///
/// Read once and cached: `available_parallelism` reads cgroup files (tens of microseconds),
/// far too slow for the cost model of a one-step call. Every default thread count of the
/// workspace (the facade's engines and trainers, the CLI) comes from here.
pub fn default_threads() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The parallel runner: the SIMD engine on `threads` threads of its own pool.
#[derive(Debug)]
pub struct ParallelEngine {
    simd: SimdEngine,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Cores of this machine ([`default_threads`]).
    cores: usize,
}

impl ParallelEngine {
    /// Packs `weights` for the best backend of this CPU and starts a pool of `threads`.
    pub fn new(weights: &LstmWeights<f32>, threads: usize) -> Result<Self> {
        Self::with_backend(weights, Backend::detect(), threads)
    }

    /// As [`new`](Self::new), with the SIMD backend pinned.
    pub fn with_backend(
        weights: &LstmWeights<f32>,
        backend: Backend,
        threads: usize,
    ) -> Result<Self> {
        Self::with_options(weights, backend, Precision::F32, threads)
    }

    /// As [`new`](Self::new), with the SIMD backend pinned and the weights packed in
    /// `precision` (see [`SimdEngine::with_options`]).
    pub fn with_options(
        weights: &LstmWeights<f32>,
        backend: Backend,
        precision: Precision,
        threads: usize,
    ) -> Result<Self> {
        if threads == 0 {
            return Err(LstmError::InvalidArgument {
                what: "threads",
                reason: "the number of threads must be at least 1".to_string(),
            });
        }
        let simd = SimdEngine::with_options(weights, backend, precision)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lstm-parallel-{i}"))
            .build()
            .map_err(|e| LstmError::Unsupported(format!("cannot start {threads} threads: {e}")))?;
        Ok(ParallelEngine {
            simd,
            pool,
            threads,
            cores: default_threads(),
        })
    }

    /// The number of threads of the pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The SIMD backend every thread runs.
    pub fn backend(&self) -> Backend {
        self.simd.backend()
    }

    /// The cost model: how a call of `seq_len` steps over `batch` sequences would run.
    ///
    /// - Serial when there is one thread, or when one step's work per thread is below
    ///   `MIN_FLOPS_PER_STEP_AND_THREAD` (the fork-join or the per-step barrier would cost
    ///   more than it saves).
    /// - Both directions at once, on two threads, for a bidirectional model whose `W_hh` of
    ///   one direction, in the engine's precision, fits one core's L2: each core keeps its
    ///   direction's weights whole and the layer needs no barrier. Measured on a 2-core Zen 4
    ///   (min-of-rounds ratios to the hidden split): bf16 crnn-ocr 0.84-0.88 (`W_hh` 512 KiB),
    ///   speech 0.96-0.98 (800 KiB); f32, whose `W_hh` is twice as large, 0.99-1.0 there, and
    ///   on the 2-core Zen 5 the hidden split won at f32 (1 and 1.6 MiB).
    /// - Hidden split whenever it can use every thread (each gets at least two gate tiles,
    ///   and no more workers than cores): measured on a 2-core Zen 5, it beats the batch split
    ///   on every shape of the grid (each core keeps half of `W_ih` and `W_hh` in its own L2,
    ///   instead of both streaming all of them), 2.0-2.4× over one thread on batch-1 streams.
    /// - Batch split when the hidden units are too few for all the threads but the batch has
    ///   a register block of rows per shard (shards need no synchronisation at all).
    /// - Otherwise the hidden split on as many workers as it can use, or serial.
    pub fn plan(&self, seq_len: usize, batch: usize) -> Plan {
        let config = self.simd.config();
        if self.threads == 1 || batch == 0 || seq_len == 0 {
            return Plan::Serial;
        }
        let step_flops = config.forward_flops(1, batch) / config.num_layers as f64;
        let worth = |workers: usize| step_flops / workers as f64 >= MIN_FLOPS_PER_STEP_AND_THREAD;
        // The per-step barrier needs every worker on a core of its own: never more workers
        // than the machine has cores, whatever the pool size.
        let cores = self.cores;
        let lanes = self.simd.backend().lanes();
        let tiles = config.hidden_size.div_ceil(lanes);
        if config.bidirectional
            && self.threads == 2
            && cores >= 2
            && self.simd.recurrent_weight_bytes() < CORE_L2_BYTES
            && worth(2)
        {
            return Plan::Directions;
        }
        let hidden = self.threads.min(tiles / 2).min(cores);
        if hidden == self.threads && worth(hidden) {
            return Plan::Hidden(hidden);
        }
        let shards = (batch / row_block()).min(self.threads);
        if shards >= 2 && worth(shards) {
            return Plan::Batch(shards);
        }
        if hidden >= 2 && worth(hidden) {
            return Plan::Hidden(hidden);
        }
        Plan::Serial
    }

    /// Runs a shard of rows `rows` of `call` on the SIMD engine (in this thread).
    fn run_shard(
        &self,
        call: &SequenceBatch<'_, f32>,
        rows: std::ops::Range<usize>,
    ) -> Result<BatchOutput<f32>> {
        let config = self.simd.config();
        let (seq_len, batch, b) = (call.seq_len(), call.batch(), rows.len());
        let in_size = config.input_size;
        // The shard's input, in the layout the config expects.
        let mut x = try_filled_vec("input", numel(&[seq_len, b, in_size]), 0.0f32)?;
        for t in 0..seq_len {
            for (j, row) in rows.clone().enumerate() {
                let src = &call.x()[(t * batch + row) * in_size..][..in_size];
                let dst = if config.batch_first {
                    (j * seq_len + t) * in_size
                } else {
                    (t * b + j) * in_size
                };
                x[dst..dst + in_size].copy_from_slice(src);
            }
        }
        let shape = if config.batch_first {
            [b, seq_len, in_size]
        } else {
            [seq_len, b, in_size]
        };
        let x = Tensor::new(shape, x)?;
        let cells = config.num_cells();
        let state = match (call.h0(), call.c0()) {
            (Some(h0), Some(c0)) => Some(LstmState {
                h: Tensor::new(
                    [cells, b, config.h_out()],
                    gather(h0, cells, batch, config.h_out(), &rows)?,
                )?,
                c: Tensor::new(
                    [cells, b, config.hidden_size],
                    gather(c0, cells, batch, config.hidden_size, &rows)?,
                )?,
            }),
            _ => None,
        };
        let lengths = call.lengths().map(|l| l[rows.clone()].to_vec());
        let shard = SequenceBatch::new(config, &x, state.as_ref(), lengths.as_deref())?;
        self.simd.forward_batch(&shard)
    }
}

/// Rows of a register block of the widest kernel (the SIMD engine's blocking): a batch shard
/// needs at least this many rows to keep the kernel's weight loads busy on any backend.
fn row_block() -> usize {
    Backend::ALL
        .iter()
        .map(|b| b.row_block())
        .max()
        .unwrap_or(1)
}

/// The element count of `dims`, or `usize::MAX` on overflow (refused by the allocator).
fn numel(dims: &[usize]) -> usize {
    checked_numel(dims).unwrap_or(usize::MAX)
}

/// Rows `rows` of each of `groups` blocks of `batch` rows of `width` floats.
fn gather(
    src: &[f32],
    groups: usize,
    batch: usize,
    width: usize,
    rows: &std::ops::Range<usize>,
) -> Result<Vec<f32>> {
    let mut out = try_filled_vec("state", numel(&[groups, rows.len(), width]), 0.0f32)?;
    for g in 0..groups {
        for (j, row) in rows.clone().enumerate() {
            let s = (g * batch + row) * width;
            let d = (g * rows.len() + j) * width;
            out[d..d + width].copy_from_slice(&src[s..s + width]);
        }
    }
    Ok(out)
}

/// Writes a shard's `[groups, b, width]` result into rows `rows` of `[groups, batch, width]`.
fn scatter(
    dst: &mut [f32],
    src: &[f32],
    groups: usize,
    batch: usize,
    width: usize,
    rows: &std::ops::Range<usize>,
) {
    for g in 0..groups {
        for (j, row) in rows.clone().enumerate() {
            let s = (g * rows.len() + j) * width;
            let d = (g * batch + row) * width;
            dst[d..d + width].copy_from_slice(&src[s..s + width]);
        }
    }
}

/// Cuts `batch` rows into at most `shards` non-empty ranges of nearly equal size (the SIMD
/// kernels balance their register blocks inside each shard).
fn shard_ranges(batch: usize, shards: usize) -> Vec<std::ops::Range<usize>> {
    (0..shards)
        .map(|s| batch * s / shards..batch * (s + 1) / shards)
        .filter(|r| !r.is_empty())
        .collect()
}

/// The pool as a [`WorkerTeam`] of `size` workers.
struct PoolTeam<'a> {
    pool: &'a rayon::ThreadPool,
    size: usize,
}

impl WorkerTeam for PoolTeam<'_> {
    fn size(&self) -> usize {
        self.size
    }

    fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        // `broadcast` runs the closure once on every pool thread, all at the same time, which
        // the per-step barrier of a hidden split needs (a plain `scope` could queue two
        // workers on one thread and deadlock it). Threads beyond `size` return at once.
        self.pool.broadcast(|ctx| {
            if ctx.index() < self.size {
                job(ctx.index());
            }
        });
    }
}

impl LstmEngine<f32> for ParallelEngine {
    fn config(&self) -> &LstmConfig {
        self.simd.config()
    }

    fn name(&self) -> &'static str {
        "parallel"
    }

    fn forward_batch(&self, call: &SequenceBatch<'_, f32>) -> Result<BatchOutput<f32>> {
        self.forward_batch_planned(call, self.plan(call.seq_len(), call.batch()))
    }

    fn step(&self, x_t: &[f32], state: &mut LstmState<f32>, output: &mut [f32]) -> Result<()> {
        // One step is a few microseconds at most: a fork-join would cost more than it saves.
        check_step(self.simd.config(), x_t, state, output)?;
        self.simd.step(x_t, state, output)
    }
}

impl ParallelEngine {
    /// Runs a validated call with the given plan instead of the cost model's (for tests and
    /// measurements: every plan gives the same bits). Thread counts above the pool's, and
    /// splits finer than the work allows, are reduced.
    pub fn forward_batch_planned(
        &self,
        call: &SequenceBatch<'_, f32>,
        plan: Plan,
    ) -> Result<BatchOutput<f32>> {
        call.ensure_config(self.simd.config())?;
        let plan = match plan {
            Plan::Batch(n) => Plan::Batch(n.min(self.threads).min(call.batch())),
            Plan::Hidden(n) => Plan::Hidden(n.min(self.threads)),
            Plan::Directions if self.threads < 2 || !self.simd.config().bidirectional => {
                Plan::Hidden(self.threads.min(2))
            }
            other => other,
        };
        match plan {
            Plan::Serial | Plan::Batch(0 | 1) | Plan::Hidden(0 | 1) => {
                self.simd.forward_batch(call)
            }
            Plan::Hidden(workers) => {
                let team = PoolTeam {
                    pool: &self.pool,
                    size: workers,
                };
                self.simd.forward_batch_split(call, &team, Split::Hidden)
            }
            Plan::Directions => {
                let team = PoolTeam {
                    pool: &self.pool,
                    size: 2,
                };
                self.simd
                    .forward_batch_split(call, &team, Split::Directions)
            }
            Plan::Batch(shards) => {
                let ranges = shard_ranges(call.batch(), shards);
                let results: Vec<Result<BatchOutput<f32>>> = self.pool.install(|| {
                    ranges
                        .par_iter()
                        .map(|rows| self.run_shard(call, rows.clone()))
                        .collect()
                });
                let config = self.simd.config();
                let (seq_len, batch, cells) = (call.seq_len(), call.batch(), config.num_cells());
                let mut output = try_filled_vec(
                    "output",
                    numel(&[seq_len, batch, config.output_size()]),
                    0.0,
                )?;
                let mut h_n = try_filled_vec("h_n", numel(&[cells, batch, config.h_out()]), 0.0)?;
                let mut c_n =
                    try_filled_vec("c_n", numel(&[cells, batch, config.hidden_size]), 0.0)?;
                for (rows, result) in ranges.iter().zip(results) {
                    let part = result?;
                    scatter(
                        &mut output,
                        &part.output,
                        seq_len,
                        batch,
                        config.output_size(),
                        rows,
                    );
                    scatter(&mut h_n, &part.h_n, cells, batch, config.h_out(), rows);
                    scatter(&mut c_n, &part.c_n, cells, batch, config.hidden_size, rows);
                }
                Ok(BatchOutput { output, h_n, c_n })
            }
        }
    }
}

/// Below this many floating-point operations of a training step per thread, the backward's
/// fork-joins (about five per cell, ~5-20 µs each) cost more than the split saves.
const MIN_TRAIN_FLOPS_PER_THREAD: f64 = 2.0e7;

/// Training through the parallel runner, on its pool: the training forward on the forward's
/// split (the same driver as the forward, recording the tape), and the backward in batch
/// shards, with the weight gradients split by their rows and the input gradient by its rows
/// ([`SimdEngine::backward_split`]). Every gradient element is computed by the same
/// instructions in the same order whatever the thread count: results are the SIMD engine's,
/// bit for bit.
impl LstmBackward<f32> for ParallelEngine {
    fn forward_train(
        &self,
        input: &Tensor<f32>,
        state: Option<&LstmState<f32>>,
        lengths: Option<&[usize]>,
        tape: &mut TrainingTape<f32>,
    ) -> Result<LstmOutput<f32>> {
        let (seq_len, batch) = self.call_size(input);
        let plan = self.train_plan(seq_len, batch).0;
        self.forward_train_planned(input, (state, lengths), tape, plan)
    }

    fn backward(
        &self,
        tape: &TrainingTape<f32>,
        grads: &GradOutputs<'_, f32>,
    ) -> Result<LstmGradients<f32>> {
        let workers = self.train_plan(tape.seq_len(), tape.batch()).1;
        self.backward_planned(tape, grads, workers)
    }
}

impl ParallelEngine {
    /// `(T, B)` of an input tensor in the config's layout (0 for a malformed one, which the
    /// call's validation then refuses).
    fn call_size(&self, input: &Tensor<f32>) -> (usize, usize) {
        match (input.shape(), self.simd.config().batch_first) {
            ([t, _], _) => (*t, 1),
            ([b, t, _], true) | ([t, b, _], false) => (*t, *b),
            _ => (0, 0),
        }
    }

    /// The cost model of a training step of `seq_len` steps over `batch` sequences: the plan of
    /// its forward (the forward's [`plan`](Self::plan); a batch split runs on one thread, as
    /// the tape is one buffer) and the workers of its backward (every thread, up to the cores,
    /// when each gets at least `MIN_TRAIN_FLOPS_PER_THREAD` of the step's work; else one).
    pub fn train_plan(&self, seq_len: usize, batch: usize) -> (Plan, usize) {
        let forward = match self.plan(seq_len, batch) {
            Plan::Batch(_) => Plan::Serial,
            other => other,
        };
        let flops = 3.0 * self.simd.config().forward_flops(seq_len, batch);
        let workers = self.threads.min(self.cores).max(1);
        let backward = if workers > 1 && flops / workers as f64 >= MIN_TRAIN_FLOPS_PER_THREAD {
            workers
        } else {
            1
        };
        (forward, backward)
    }

    /// The training forward with the given plan instead of the cost model's (for tests and
    /// measurements: every plan gives the same bits). A batch split runs on one thread.
    pub fn forward_train_planned(
        &self,
        input: &Tensor<f32>,
        (state, lengths): (Option<&LstmState<f32>>, Option<&[usize]>),
        tape: &mut TrainingTape<f32>,
        plan: Plan,
    ) -> Result<LstmOutput<f32>> {
        let bidirectional = self.simd.config().bidirectional;
        let (size, split) = match plan {
            Plan::Hidden(n) => (n.min(self.threads), Split::Hidden),
            Plan::Directions if self.threads >= 2 && bidirectional => (2, Split::Directions),
            Plan::Directions => (self.threads.min(2), Split::Hidden),
            Plan::Serial | Plan::Batch(_) => (1, Split::Hidden),
        };
        if size <= 1 {
            return self.simd.forward_train(input, state, lengths, tape);
        }
        let team = PoolTeam {
            pool: &self.pool,
            size,
        };
        self.simd
            .forward_train_split(input, (state, lengths), tape, &team, split)
    }

    /// The backward on `workers` threads of the pool (at most the pool's) instead of the cost
    /// model's count: the same bits for every count.
    pub fn backward_planned(
        &self,
        tape: &TrainingTape<f32>,
        grads: &GradOutputs<'_, f32>,
        workers: usize,
    ) -> Result<LstmGradients<f32>> {
        let size = workers.min(self.threads);
        if size <= 1 {
            return self.simd.backward(tape, grads);
        }
        let team = PoolTeam {
            pool: &self.pool,
            size,
        };
        self.simd.backward_split(tape, grads, &team)
    }
}
