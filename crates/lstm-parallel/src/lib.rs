//! The parallel runner of `lstm-kernels`: the SIMD engine on a thread pool the runner owns.
//!
//! Four ways to use several cores, chosen per call by a cost model ([`Plan`]):
//!
//! - **Batch split**: the batch is cut into shards of about equal work, and each thread runs
//!   every layer for its shard's rows, reading and writing them in place (`Split::Rows`: no
//!   barrier, no copy).
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

use lstm_core::{
    check_step, BatchOutput, GradOutputs, LstmBackward, LstmConfig, LstmEngine, LstmError,
    LstmGradients, LstmOutput, LstmState, LstmWeights, Precision, Result, SequenceBatch, Tensor,
    TrainingTape,
};
use lstm_simd::{Backend, SimdEngine, Split, WorkerTeam, CORE_L2_BYTES};

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
    /// - Batch split on two threads (and two cores) when each shard has
    ///   `BATCH_SHARD_ROWS` (12) rows or more: each worker runs every layer for its rows alone
    ///   ([`Split::Rows`]: no barrier, no copy), streaming all the weights through its core.
    ///   Measured on a 2-core Zen 4 against the hidden split (medians of the per-round
    ///   ratios, fastest samples): bf16 batch-large 0.988, batch-mid 0.983,
    ///   timeseries-window 0.948; f32 1.000, 0.993, 0.978, and 0.991-0.994 on the
    ///   bidirectional crnn-ocr and speech; against both directions at once (bf16 crnn-ocr,
    ///   speech) 1.000-1.008, so that rule goes first. A shard waits for nobody, so a core
    ///   the host takes away for a while delays one shard once, not every step of both.
    ///   Beyond two threads the shards' weight streams add up in the shared L3, and this has
    ///   not been measured: the hidden split stays.
    /// - Hidden split whenever it can use every thread (each gets at least two gate tiles,
    ///   and no more workers than cores): each core keeps its share of `W_ih` and `W_hh` in
    ///   its own L2 (measured on a 2-core Zen 5 against the batch split that copied each
    ///   shard's input and output, it won on every shape of the grid), 2.0-2.4× over one
    ///   thread on batch-1 streams.
    /// - Batch split when the hidden units are too few for all the threads but the batch has
    ///   a register block of rows per shard (shards need no synchronisation at all).
    /// - Otherwise the hidden split on as many workers as it can use, or serial.
    pub fn plan(&self, seq_len: usize, batch: usize) -> Plan {
        self.choose_plan(seq_len, batch, true)
    }

    /// [`plan`](Self::plan), with the batch split of rule 3 (two threads, 12 rows a shard) or
    /// without it: a training forward records one tape, and runs a batch split on one thread.
    fn choose_plan(&self, seq_len: usize, batch: usize, rows_split: bool) -> Plan {
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
        if rows_split
            && self.threads == 2
            && cores >= 2
            && batch >= 2 * BATCH_SHARD_ROWS
            && worth(2)
        {
            return Plan::Batch(2);
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
}

/// Rows a batch shard has at least before two threads split the batch rather than the hidden
/// units: two register blocks of the widest kernel's, so that each shard's weight loads
/// serve enough rows (the grid's smallest batched shard, batch-mid on two threads, has 16).
const BATCH_SHARD_ROWS: usize = 12;

/// Rows of a register block of the widest kernel (the SIMD engine's blocking): a batch shard
/// needs at least this many rows to keep the kernel's weight loads busy on any backend.
fn row_block() -> usize {
    Backend::ALL
        .iter()
        .map(|b| b.row_block())
        .max()
        .unwrap_or(1)
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
                let team = PoolTeam {
                    pool: &self.pool,
                    size: shards,
                };
                self.simd.forward_batch_split(call, &team, Split::Rows)
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
    /// its forward (the forward's [`plan`](Self::plan) without the two-thread batch split; a
    /// batch split runs on one thread, as the tape is one buffer) and the workers of its
    /// backward (every thread, up to the cores, when each gets at least
    /// `MIN_TRAIN_FLOPS_PER_THREAD` of the step's work; else one).
    pub fn train_plan(&self, seq_len: usize, batch: usize) -> (Plan, usize) {
        let forward = match self.choose_plan(seq_len, batch, false) {
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
