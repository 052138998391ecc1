//! The kernels of the engine and the one table of them per backend.
//!
//! - [`gemm`](gemm::gemm), [`gemm_tn`](gemm::gemm_tn): packed GEMMs (`gemm.rs`);
//! - [`fused_step`](cell::fused_step) (recording a tape or not, a type parameter) and
//!   [`gate_backward`](cell::gate_backward): the cell (`cell.rs`);
//! - [`DirectionPass`]: the entry points of one (layer, direction) pass shared by the workers
//!   of a team (`pass.rs`).
//!
//! Every kernel is written once over [`Lanes`](crate::lanes::Lanes), `#[inline(always)]`, and
//! instantiated inside one backend's `#[target_feature]` entry point by `backend_kernels!`,
//! which collects them in that backend's [`Kernels`] table. The table's function pointers and
//! their raw-pointer argument structs are private to this module: the engine calls the safe
//! methods of [`Kernels`], which take slices and check their lengths once per call, or goes
//! through a [`DirectionPass`]. This folder (with `lanes.rs`, `portable.rs` and `x86_64/`) is
//! the only place in the engine with `unsafe`.

mod cell;
mod gemm;
mod pass;

pub(crate) use cell::{CellVariant, OnnxCell};
pub(crate) use gemm::gemm_tn_scratch;
pub(crate) use pass::{
    split_columns, split_rows, whole_rows, ColumnBand, DirectionPass, NoTape, PassBuffers,
    PassDims, PassRecord, PassWeights, RowWindow, TapeRecorder,
};

use cell::{GateBackwardArgs, StepArgs, TapeArgs};
use gemm::{GemmArgs, GemmTnArgs};

use lstm_core::Precision;

use crate::pack::PackedMatrix;

/// Splits rows `start..end` into `ceil(n / MR)` register blocks of as equal sizes as possible
/// (each at most `MR`) as `(first_row, rows)` pairs. Equal blocks keep every block
/// compute-bound: a block of one or two rows would stream its weight tile from L2 for too few
/// FMAs.
#[inline(always)]
fn row_blocks<const MR: usize>(start: usize, end: usize) -> impl Iterator<Item = (usize, usize)> {
    let n = end.saturating_sub(start);
    let blocks = n.div_ceil(MR);
    let (base, extra) = match n.checked_div(blocks) {
        Some(base) => (base, n - base * blocks),
        None => (0, 0),
    };
    (0..blocks).map(move |b| {
        // Blocks before `b` hold `base` rows each, plus one for each of the first `extra`.
        let first = start + b * base + b.min(extra);
        (first, base + usize::from(b < extra))
    })
}

/// Rows a kernel takes at a time (a group, staged once) when it may take at most `cap`: all
/// `rows` when they fit, otherwise whole register blocks of `cap`, so that only the last
/// group can end in a short block (64 rows under a cap of 64 were groups of 60 and 4: two
/// staging passes, and a lone 4-row block per tile). A `cap` below one register block means
/// the rows cannot be staged: all of them, for the caller's unstaged path.
#[inline(always)]
fn group_rows<const MR: usize>(rows: usize, cap: usize) -> usize {
    if rows <= cap || cap < MR {
        rows
    } else {
        cap / MR * MR
    }
}

/// Calls a kernel generic over its row count with `rows` (1..=6) as a constant.
macro_rules! with_rows {
    ($rows:expr, |$r:ident| $call:expr) => {
        match $rows {
            6 => {
                const $r: usize = 6;
                $call
            }
            5 => {
                const $r: usize = 5;
                $call
            }
            4 => {
                const $r: usize = 4;
                $call
            }
            3 => {
                const $r: usize = 3;
                $call
            }
            2 => {
                const $r: usize = 2;
                $call
            }
            _ => {
                const $r: usize = 1;
                $call
            }
        }
    };
}
use with_rows;

/// Bytes of input projection computed ahead of the recurrence, at most: the projected chunk
/// (`steps · B · 4H` floats) stays in L2 (half of [`CORE_L2_BYTES`](crate::CORE_L2_BYTES))
/// beside the recurrent weights until its steps consume it. Measured against 2 MiB, which
/// spilled to L3: bf16 speech 11%, crnn-ocr 9%, batch-mid 4% faster; f32 batch-mid 4%.
const CHUNK_BYTES: usize = crate::CORE_L2_BYTES / 2;

/// One backend's kernels and blocking, chosen once when an engine is built.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kernels {
    /// The precision of the weights the matrix kernels read (their [`Panel`](gemm::Panel)).
    pub(crate) precision: Precision,
    /// Lanes per vector (`N`): the packing unit.
    pub(crate) lanes: usize,
    /// Rows of a register block (`MR`): the fewest rows that keep a weight load busy.
    pub(crate) row_block: usize,
    /// Bytes of input projection computed ahead of the recurrence, at most.
    pub(crate) chunk_bytes: usize,
    gemm: unsafe fn(&GemmArgs),
    fused_step: unsafe fn(&StepArgs),
    fused_step_recorded: unsafe fn(&StepArgs, &TapeArgs),
    gate_backward: unsafe fn(&GateBackwardArgs),
    gemm_tn: unsafe fn(&GemmTnArgs),
    sigmoid: unsafe fn(&[f32], &mut [f32]),
    tanh: unsafe fn(&[f32], &mut [f32]),
    copy_streaming: unsafe fn(*const f32, *mut f32, usize),
    fence_streaming: unsafe fn(),
}

/// Defines the `#[target_feature]` entry points of the kernels that read weights, for one
/// backend, one weight [`Panel`](gemm::Panel) and the step's gate
/// [`Activations`](crate::lanes::Activations): `gemm_entry`, `fused_step_entry`,
/// `fused_step_recorded_entry`.
macro_rules! weight_kernels {
    ($lanes:ty, $mr:expr, $panel:ty, $act:ty $(, #[$attr:meta])*) => {
        use $crate::kernels::cell::{self, NoRecord, StepArgs, TapeArgs};
        use $crate::kernels::gemm::{self, GemmArgs};

        $(#[$attr])*
        unsafe fn gemm_entry(args: &GemmArgs) {
            // SAFETY: this table is only handed out for a host with the features enabled above
            // (Backend::kernels checks); `args` validity is the caller's contract.
            unsafe { gemm::gemm::<$lanes, { $mr }, $panel>(args) }
        }

        $(#[$attr])*
        unsafe fn fused_step_entry(args: &StepArgs) {
            // SAFETY: as in gemm_entry.
            unsafe { cell::fused_step::<$lanes, { $mr }, NoRecord, $panel, $act>(args, &NoRecord) }
        }

        $(#[$attr])*
        unsafe fn fused_step_recorded_entry(args: &StepArgs, tape: &TapeArgs) {
            // SAFETY: as in gemm_entry.
            unsafe { cell::fused_step::<$lanes, { $mr }, TapeArgs, $panel, $act>(args, tape) }
        }
    };
}

/// Defines a backend's `#[target_feature]` entry points and its f32 [`Kernels`] table.
macro_rules! backend_kernels {
    ($lanes:ty, $mr:expr $(, #[$attr:meta])*) => {
        weight_kernels!(
            $lanes,
            $mr,
            $crate::kernels::gemm::F32Panel,
            $crate::lanes::Precise
            $(, #[$attr])*
        );
        use $crate::kernels::cell::GateBackwardArgs;
        use $crate::kernels::gemm::GemmTnArgs;
        use $crate::kernels::Kernels;

        $(#[$attr])*
        unsafe fn gate_backward_entry(args: &GateBackwardArgs) {
            // SAFETY: as in gemm_entry.
            unsafe { cell::gate_backward::<$lanes>(args) }
        }

        $(#[$attr])*
        unsafe fn gemm_tn_entry(args: &GemmTnArgs) {
            // SAFETY: as in gemm_entry.
            unsafe { gemm::gemm_tn::<$lanes, { $mr }>(args) }
        }

        $(#[$attr])*
        unsafe fn sigmoid_entry(x: &[f32], out: &mut [f32]) {
            // SAFETY: as in gemm_entry.
            unsafe { cell::map_slice::<$lanes>(x, out, cell::sigmoid_lanes) }
        }

        $(#[$attr])*
        unsafe fn tanh_entry(x: &[f32], out: &mut [f32]) {
            // SAFETY: as in gemm_entry.
            unsafe { cell::map_slice::<$lanes>(x, out, cell::tanh_lanes) }
        }

        $(#[$attr])*
        unsafe fn copy_streaming_entry(src: *const f32, dst: *mut f32, len: usize) {
            // SAFETY: as in gemm_entry.
            unsafe { cell::copy_streaming::<$lanes>(src, dst, len) }
        }

        $(#[$attr])*
        unsafe fn fence_streaming_entry() {
            // SAFETY: as in gemm_entry.
            unsafe { cell::fence_streaming::<$lanes>() }
        }

        /// This backend's kernels. Calling them is only sound on a host with its features.
        pub(crate) const KERNELS: Kernels = Kernels {
            precision: lstm_core::Precision::F32,
            lanes: <$lanes as $crate::lanes::Lanes>::N,
            row_block: $mr,
            chunk_bytes: $crate::kernels::CHUNK_BYTES,
            gemm: gemm_entry,
            fused_step: fused_step_entry,
            fused_step_recorded: fused_step_recorded_entry,
            gate_backward: gate_backward_entry,
            gemm_tn: gemm_tn_entry,
            sigmoid: sigmoid_entry,
            tanh: tanh_entry,
            copy_streaming: copy_streaming_entry,
            fence_streaming: fence_streaming_entry,
        };
    };
}

/// Defines a backend's table for reduced-precision weights: the weight kernels over `$panel`
/// with the activations `$act`, everything else (the elementwise and training kernels, which
/// read no packed weights) from the backend's f32 table `$base`. The tables that widen the
/// weights keep [`Precise`](crate::lanes::Precise): they are the f32 engine on the rounded
/// weights, bit for bit. The dot-product tables, whose rows and `h` are rounded too, take
/// [`Fast`](crate::lanes::Fast).
macro_rules! reduced_kernels {
    (
        $lanes:ty, $mr:expr, $panel:ty, $act:ty, $precision:expr, $base:expr
        $(, #[$attr:meta])*
    ) => {
        weight_kernels!($lanes, $mr, $panel, $act $(, #[$attr])*);

        /// This backend's kernels for `$precision` weights. Calling them is only sound on a
        /// host with its features.
        pub(crate) const KERNELS: $crate::kernels::Kernels = $crate::kernels::Kernels {
            precision: $precision,
            gemm: gemm_entry,
            fused_step: fused_step_entry,
            fused_step_recorded: fused_step_recorded_entry,
            ..$base
        };
    };
}

/// Portable: 2 rows a register block (8 accumulators).
mod portable {
    backend_kernels!(crate::portable::Portable, 2);
}

/// Portable, bf16 weights widened in registers.
mod portable_bf16 {
    reduced_kernels!(
        crate::portable::Portable,
        2,
        crate::kernels::gemm::Bf16Panel,
        crate::lanes::Precise,
        lstm_core::Precision::Bf16,
        super::portable::KERNELS
    );
}

/// AVX2+FMA: 3 rows × 4 vectors (12 of the 16 ymm registers hold accumulators).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    backend_kernels!(crate::x86_64::avx2::F32x8, 3, #[target_feature(enable = "avx2,fma")]);
}

/// AVX2+FMA, bf16 weights widened in registers.
#[cfg(target_arch = "x86_64")]
mod avx2_bf16 {
    reduced_kernels!(
        crate::x86_64::avx2::F32x8,
        3,
        crate::kernels::gemm::Bf16Panel,
        crate::lanes::Precise,
        lstm_core::Precision::Bf16,
        super::avx2::KERNELS,
        #[target_feature(enable = "avx2,fma")]
    );
}

/// AVX-512F: 6 rows × 4 vectors (24 of the 32 zmm registers hold accumulators).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    backend_kernels!(crate::x86_64::avx512::F32x16, 6, #[target_feature(enable = "avx512f")]);
}

/// AVX-512F, bf16 weights widened in registers.
#[cfg(target_arch = "x86_64")]
mod avx512_bf16 {
    reduced_kernels!(
        crate::x86_64::avx512::F32x16,
        6,
        crate::kernels::gemm::Bf16Panel,
        crate::lanes::Precise,
        lstm_core::Precision::Bf16,
        super::avx512::KERNELS,
        #[target_feature(enable = "avx512f")]
    );
}

/// AVX-512F with AVX512-BF16: bf16 weights and rows into `vdpbf16ps`, 6 rows × 4 vectors.
#[cfg(target_arch = "x86_64")]
mod avx512bf16_dot {
    reduced_kernels!(
        crate::x86_64::avx512::F32x16,
        6,
        crate::kernels::gemm::Bf16DotPanel,
        crate::lanes::Fast,
        lstm_core::Precision::Bf16,
        super::avx512::KERNELS,
        #[target_feature(enable = "avx512f,avx512bf16")]
    );
}

/// Portable, int8 weights widened in registers.
mod portable_int8 {
    reduced_kernels!(
        crate::portable::Portable,
        2,
        crate::kernels::gemm::Int8Panel,
        crate::lanes::Precise,
        lstm_core::Precision::Int8,
        super::portable::KERNELS
    );
}

/// AVX2+FMA, int8 weights widened in registers.
#[cfg(target_arch = "x86_64")]
mod avx2_int8 {
    reduced_kernels!(
        crate::x86_64::avx2::F32x8,
        3,
        crate::kernels::gemm::Int8Panel,
        crate::lanes::Precise,
        lstm_core::Precision::Int8,
        super::avx2::KERNELS,
        #[target_feature(enable = "avx2,fma")]
    );
}

/// AVX-512F, int8 weights widened in registers.
#[cfg(target_arch = "x86_64")]
mod avx512_int8 {
    reduced_kernels!(
        crate::x86_64::avx512::F32x16,
        6,
        crate::kernels::gemm::Int8Panel,
        crate::lanes::Precise,
        lstm_core::Precision::Int8,
        super::avx512::KERNELS,
        #[target_feature(enable = "avx512f")]
    );
}

/// AVX-512F with AVX512-VNNI: int8 weights and quantized rows into `vpdpbusd`, 6 rows × 4
/// vectors.
#[cfg(target_arch = "x86_64")]
mod avx512vnni_dot {
    reduced_kernels!(
        crate::x86_64::avx512::F32x16,
        6,
        crate::kernels::gemm::Int8DotPanel,
        crate::lanes::Fast,
        lstm_core::Precision::Int8,
        super::avx512::KERNELS,
        #[target_feature(enable = "avx512f,avx512vnni")]
    );
}

/// The kernel table of `backend` for weights of `precision`, which the caller has checked
/// this CPU supports (see [`Backend::kernels`](crate::Backend)). A backend whose extension
/// serves another precision (`avx512bf16` at f32 or int8, `avx512vnni` at f32 or bf16) runs
/// the AVX-512 kernels of that precision.
pub(crate) fn table(backend: crate::Backend, precision: Precision) -> Kernels {
    use crate::Backend;
    #[cfg(target_arch = "x86_64")]
    let avx512 = matches!(
        backend,
        Backend::Avx512 | Backend::Avx512Bf16 | Backend::Avx512Vnni
    );
    match (backend, precision) {
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx512Bf16, Precision::Bf16) => avx512bf16_dot::KERNELS,
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx512Vnni, Precision::Int8) => avx512vnni_dot::KERNELS,
        #[cfg(target_arch = "x86_64")]
        (_, Precision::Bf16) if avx512 => avx512_bf16::KERNELS,
        #[cfg(target_arch = "x86_64")]
        (_, Precision::Int8) if avx512 => avx512_int8::KERNELS,
        #[cfg(target_arch = "x86_64")]
        _ if avx512 => avx512::KERNELS,
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, Precision::Bf16) => avx2_bf16::KERNELS,
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, Precision::Int8) => avx2_int8::KERNELS,
        #[cfg(target_arch = "x86_64")]
        (Backend::Avx2, _) => avx2::KERNELS,
        (_, Precision::Bf16) => portable_bf16::KERNELS,
        (_, Precision::Int8) => portable_int8::KERNELS,
        _ => portable::KERNELS,
    }
}

/// Floats from the first element of row 0 to the end of row `rows - 1` of `width` floats at
/// stride `ld` (0 for no rows).
fn span(rows: usize, ld: usize, width: usize) -> usize {
    match rows {
        0 => 0,
        r => (r - 1) * ld + width,
    }
}

/// `C[r, 0..tiles·4N] = bias + A[r, 0..k] · B` for `r < rows` (see [`Kernels::gemm`]).
#[derive(Debug)]
pub(crate) struct Gemm<'a> {
    pub(crate) rows: usize,
    /// Row `r` of `A` at `r·lda`, `k` floats.
    pub(crate) a: &'a [f32],
    pub(crate) lda: usize,
    pub(crate) k: usize,
    /// Packed with this `k`.
    pub(crate) b: &'a PackedMatrix,
    /// `b.cols()` floats in `b`'s column order.
    pub(crate) bias: Option<&'a [f32]>,
    /// Row `r` of `C` at `r·ldc`, `b.cols()` floats.
    pub(crate) c: &'a mut [f32],
    pub(crate) ldc: usize,
}

/// `C[r, j] += Σ_kk A[kk, r] · B[kk, j]` for `r < rows`, `kk < k`, `j < cols` (see
/// [`Kernels::gemm_tn`]).
#[derive(Debug)]
pub(crate) struct GemmTn<'a> {
    pub(crate) rows: usize,
    pub(crate) k: usize,
    /// `A[kk, r]` at `kk·lda + r`.
    pub(crate) a: &'a [f32],
    pub(crate) lda: usize,
    /// `B[kk, j]` at `kk·ldb + j`.
    pub(crate) b: &'a [f32],
    pub(crate) ldb: usize,
    pub(crate) cols: usize,
    /// `C[r, j]` at `r·ldc + j`, `cols` rounded up to `4N` floats a row.
    pub(crate) c: &'a mut [f32],
    pub(crate) ldc: usize,
    /// Scratch: [`gemm_tn_scratch`]`(rows, N)` floats.
    pub(crate) pack: &'a mut [f32],
}

/// One step of BPTT through the cell for `rows` rows (see [`Kernels::gate_backward`]); the
/// layouts are those of the tape and of the backward's buffers.
#[derive(Debug)]
pub(crate) struct GateBackward<'a> {
    pub(crate) variant: CellVariant,
    pub(crate) rows: usize,
    /// Tiles of `N` hidden units (`hp / N`).
    pub(crate) tiles: usize,
    pub(crate) hidden: usize,
    /// The tape row of each row, or `None` for the identity.
    pub(crate) tape_rows: Option<&'a [usize]>,
    /// The step's tape: gates (`4H` a row) and `tanh(c_t)` (`H` a row).
    pub(crate) gates: &'a [f32],
    pub(crate) tanh_c: &'a [f32],
    /// `c_{t-1}` of rows below `prev_rows`: the tape's cell states of the previous step.
    pub(crate) c_prev: &'a [f32],
    pub(crate) prev_rows: usize,
    /// `c_{t-1}` of the other rows: the initial cell state, padded rows at stride `ldc0`.
    pub(crate) c0: &'a [f32],
    pub(crate) ldc0: usize,
    /// `dL/d(o ⊙ tanh c)`: `dh` at stride `ldh`, plus `dh2` at its stride.
    pub(crate) dh: &'a [f32],
    pub(crate) ldh: usize,
    pub(crate) dh2: Option<(&'a [f32], usize)>,
    /// `dL/dc_t` in, `dL/dc_{t-1}` out.
    pub(crate) dc: &'a mut [f32],
    pub(crate) ldc: usize,
    /// Out: `dG` in gate-tile order.
    pub(crate) dg: &'a mut [f32],
    pub(crate) ldg: usize,
}

impl Kernels {
    /// `C = bias + A · B` over a packed `B`, one register block of rows at a time.
    ///
    /// # Panics
    /// When a slice is shorter than its shape says (an engine bug, never user data).
    pub(crate) fn gemm(&self, g: Gemm<'_>) {
        let cols = g.b.tiles * 4 * self.lanes;
        if g.rows == 0 || cols == 0 {
            return;
        }
        assert!(
            g.b.lanes == self.lanes
                && g.b.k == g.k
                && g.b.precision() == self.precision
                && g.b.len_bytes() >= g.b.tiles * g.b.tile_bytes(),
            "gemm: B packed for other kernels"
        );
        assert!(span(g.rows, g.lda, g.k) <= g.a.len(), "gemm: A too short");
        assert!(
            g.ldc >= cols && span(g.rows, g.ldc, cols) <= g.c.len(),
            "gemm: C"
        );
        assert!(
            g.bias.is_none_or(|b| b.len() >= cols),
            "gemm: bias too short"
        );
        let args = GemmArgs {
            rows: g.rows,
            a: g.a.as_ptr(),
            lda: g.lda,
            k: g.k,
            b: g.b.tile_ptr(0),
            tiles: g.b.tiles,
            bias: g.bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
            c: g.c.as_mut_ptr(),
            ldc: g.ldc,
        };
        // SAFETY: this table is only handed out for a CPU with its features; the checks above
        // keep every row of A, B, the bias and C inside its slice, and C is borrowed mutably
        // apart from the others.
        unsafe { (self.gemm)(&args) }
    }

    /// `C += Aᵀ · B`, each element summed in a fixed order (panel by panel, row by row).
    ///
    /// # Panics
    /// When a slice is shorter than its shape says (an engine bug, never user data).
    pub(crate) fn gemm_tn(&self, g: GemmTn<'_>) {
        let width = 4 * self.lanes;
        let c_cols = g.cols.div_ceil(width) * width;
        if g.rows == 0 || g.k == 0 || g.cols == 0 {
            return;
        }
        assert!(
            span(g.k, g.lda, g.rows) <= g.a.len(),
            "gemm_tn: A too short"
        );
        assert!(
            g.ldb >= g.cols && span(g.k, g.ldb, g.cols) <= g.b.len(),
            "gemm_tn: B"
        );
        assert!(
            g.ldc >= c_cols && span(g.rows, g.ldc, c_cols) <= g.c.len(),
            "gemm_tn: C"
        );
        assert!(
            g.pack.len() >= gemm_tn_scratch(g.rows, self.lanes),
            "gemm_tn: scratch"
        );
        let args = GemmTnArgs {
            rows: g.rows,
            k: g.k,
            a: g.a.as_ptr(),
            lda: g.lda,
            b: g.b.as_ptr(),
            ldb: g.ldb,
            cols: g.cols,
            c: g.c.as_mut_ptr(),
            ldc: g.ldc,
            pack: g.pack.as_mut_ptr(),
        };
        // SAFETY: the table matches this CPU; the checks above keep every read of A and B and
        // every write of C and the scratch inside its slice; C and the scratch are separate
        // mutable borrows.
        unsafe { (self.gemm_tn)(&args) }
    }

    /// One step of BPTT through the cell: `dG` of the step and the carried `dc`.
    ///
    /// # Panics
    /// When a slice is shorter than its shape says (an engine bug, never user data).
    pub(crate) fn gate_backward(&self, g: GateBackward<'_>) {
        if g.rows == 0 || g.tiles == 0 {
            return;
        }
        let (h4, row) = (4 * g.hidden, g.tiles * self.lanes);
        let tape_end = match g.tape_rows {
            Some(t) => t
                .get(..g.rows)
                .and_then(|t| t.iter().max())
                .map_or(usize::MAX, |q| q + 1),
            None => g.rows,
        };
        assert!(tape_end <= g.gates.len() / h4.max(1) && tape_end * g.hidden <= g.tanh_c.len());
        assert!(
            g.prev_rows == 0 || tape_end * g.hidden <= g.c_prev.len(),
            "c_prev"
        );
        assert!(
            g.prev_rows >= g.rows || span(g.rows, g.ldc0, row) <= g.c0.len(),
            "c0"
        );
        assert!(span(g.rows, g.ldh, row) <= g.dh.len(), "dh");
        assert!(
            g.dh2.is_none_or(|(d, ld)| span(g.rows, ld, row) <= d.len()),
            "dh2"
        );
        assert!(g.ldc >= row && span(g.rows, g.ldc, row) <= g.dc.len(), "dc");
        assert!(
            g.ldg >= 4 * row && span(g.rows, g.ldg, 4 * row) <= g.dg.len(),
            "dg"
        );
        let args = GateBackwardArgs {
            variant: g.variant,
            rows: g.rows,
            tiles: g.tiles,
            hidden: g.hidden,
            tape_rows: g.tape_rows.map_or(std::ptr::null(), <[usize]>::as_ptr),
            gates: g.gates.as_ptr(),
            tanh_c: g.tanh_c.as_ptr(),
            c_prev: g.c_prev.as_ptr(),
            prev_rows: g.prev_rows,
            c0: g.c0.as_ptr(),
            ldc0: g.ldc0,
            dh: g.dh.as_ptr(),
            ldh: g.ldh,
            dh2: g.dh2.map_or(std::ptr::null(), |(d, _)| d.as_ptr()),
            ldh2: g.dh2.map_or(0, |(_, ld)| ld),
            dc: g.dc.as_mut_ptr(),
            ldc: g.ldc,
            dg: g.dg.as_mut_ptr(),
            ldg: g.ldg,
        };
        // SAFETY: the table matches this CPU; the checks above keep the tape rows the table
        // names (below `tape_end`), and every row of c0, dh, dh2, dc and dG, inside its slice;
        // dc and dG are separate mutable borrows.
        unsafe { (self.gate_backward)(&args) }
    }

    /// `out[j] = σ(x[j])` for `j < min(x.len(), out.len())`.
    pub(crate) fn sigmoid(&self, x: &[f32], out: &mut [f32]) {
        // SAFETY: the table matches this CPU; `map_slice` stays inside both slices.
        unsafe { (self.sigmoid)(x, out) }
    }

    /// `out[j] = tanh(x[j])` for `j < min(x.len(), out.len())`.
    pub(crate) fn tanh(&self, x: &[f32], out: &mut [f32]) {
        // SAFETY: the table matches this CPU; `map_slice` stays inside both slices.
        unsafe { (self.tanh)(x, out) }
    }
}
