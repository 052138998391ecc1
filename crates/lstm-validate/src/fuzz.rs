//! The bodies of the fuzz targets in `fuzz/`: each takes arbitrary bytes and returns `Err`
//! with a description when it finds a broken invariant (a panic inside the code under test is
//! a finding too). The targets (`fuzz/fuzz_targets/*.rs`) panic on `Err`; the corpus replay test
//! (`tests/fuzz_corpus.rs`) runs the same functions over every committed input of
//! `fuzz/corpus/<target>/` on stable Rust, so CI replays exactly what the fuzzer checks.
//!
//! - [`safetensors_loader`]: bytes as a safetensors file; whatever loads is consistent and
//!   runs on every engine.
//! - [`npy_reader`]: bytes as a `.npy` file; whatever parses converts, and f32 tensors
//!   round-trip bit for bit.
//! - [`onnx_loader`]: bytes as an ONNX model; every LSTM node found loads or gives an error,
//!   and what loads runs a short ONNX call (a zero `sequence_lens` included) on every engine
//!   (each runs ONNX's cell options forward).
//! - [`differential`]: bytes as a small `nn.LSTM` call ([`DiffCase::decode`]): every engine
//!   of [`crate::engines_under_test`] matches the f64 reference under the harness's tolerance,
//!   and deliberately invalid calls give `Err` from every engine, never a panic.
//!
//! ```
//! for (name, target) in lstm_validate::fuzz::TARGETS {
//!     assert!(target(b"").is_ok(), "{name}");
//! }
//! ```

use std::sync::OnceLock;

use lstm_core::{
    io, CellWeights, LstmConfig, LstmEngine, LstmOutput, LstmState, LstmWeights, SplitMix64, Tensor,
};

use crate::strategies::WeightScale;
use crate::tolerance::{self, Conditioning, Layout, Tolerance};
use crate::{engines_under_test, EngineUnderTest};

/// What a target returns: `Err` describes a broken invariant.
pub type Outcome = Result<(), String>;

/// The body of a fuzz target.
pub type Target = fn(&[u8]) -> Outcome;

/// Every target, by the name of its `fuzz/fuzz_targets/<name>.rs` and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("safetensors_loader", safetensors_loader),
    ("npy_reader", npy_reader),
    ("differential", differential),
    ("onnx_loader", onnx_loader),
];

/// The engines this host runs, built once per process (no notes printed: the fuzzer calls the
/// targets millions of times).
fn engines() -> &'static [EngineUnderTest] {
    static ENGINES: OnceLock<Vec<EngineUnderTest>> = OnceLock::new();
    ENGINES.get_or_init(|| {
        engines_under_test()
            .into_iter()
            .filter(|e| e.available)
            .collect()
    })
}

/// Any bytes given to the safetensors loader give a model or an error, never a panic, a huge
/// allocation or a hang. Whatever loads has a valid config, exactly the parameters it implies,
/// and runs a short call on every engine with PyTorch's output shapes.
pub fn safetensors_loader(data: &[u8]) -> Outcome {
    let Ok(loaded) = io::parse_safetensors(data, None) else {
        return Ok(());
    };
    let weights = loaded.weights;
    let config = weights.config().clone();
    config
        .validate()
        .map_err(|e| format!("loaded config {config:?} is invalid: {e}"))?;
    let count: usize = weights
        .named_tensors()
        .iter()
        .map(|(_, _, d)| d.len())
        .sum();
    if count != config.parameter_count() {
        return Err(format!(
            "loaded {count} parameters, the config {config:?} implies {}",
            config.parameter_count()
        ));
    }
    let (t, b) = (2, 1);
    let x = Tensor::new(
        [t, b, config.input_size],
        vec![0.5; t * b * config.input_size],
    )
    .map_err(|e| e.to_string())?;
    for engine in engines() {
        let e = engine
            .build(weights.clone())
            .map_err(|e| format!("engine `{}` refuses loaded weights: {e}", engine.name))?;
        let out = e
            .forward(&x, None, None)
            .map_err(|e| format!("engine `{}` fails a valid call: {e}", engine.name))?;
        let cells = config.num_cells();
        let want: [&[usize]; 3] = [
            &[t, b, config.output_size()],
            &[cells, b, config.h_out()],
            &[cells, b, config.hidden_size],
        ];
        let got = [out.output.shape(), out.h_n.shape(), out.c_n.shape()];
        if got != want {
            return Err(format!(
                "engine `{}`: shapes {got:?}, expected {want:?}",
                engine.name
            ));
        }
    }
    Ok(())
}

/// Any bytes given to the ONNX loader give models or errors, never a panic, a huge allocation
/// or a hang (lying lengths, truncated messages, huge dims, cycles in constant chains). Every
/// LSTM node listed either loads or carries its reason; each loaded model has a valid config
/// and its parameters, and (when small) runs a 2-step, 2-sequence ONNX call with one sequence
/// of length 0 on every engine, with ONNX's output shapes and zeros for the empty sequence.
pub fn onnx_loader(data: &[u8]) -> Outcome {
    let Ok(file) = lstm_onnx::parse_onnx(data) else {
        return Ok(());
    };
    let mut names: Vec<Option<String>> = vec![None];
    names.extend(
        file.nodes()
            .iter()
            .take(8)
            .map(|n| Some(format!("{}/{}", n.path, n.name))),
    );
    for name in names {
        let Ok(lstm) = file.select(name.as_deref()) else {
            continue;
        };
        let weights = lstm.weights();
        let config = weights.config().clone();
        config
            .validate()
            .map_err(|e| format!("loaded config {config:?} is invalid: {e}"))?;
        let count: usize = weights
            .cells()
            .iter()
            .map(|c| {
                c.w_ih.len()
                    + c.w_hh.len()
                    + c.b_ih.as_ref().map_or(0, Vec::len)
                    + c.b_hh.as_ref().map_or(0, Vec::len)
            })
            .sum::<usize>()
            + weights.peepholes().iter().map(Vec::len).sum::<usize>();
        if count != config.parameter_count() {
            return Err(format!(
                "loaded {count} parameters, the config {config:?} implies {}",
                config.parameter_count()
            ));
        }
        if config.parameter_count() > 1 << 16 {
            continue; // loads and is consistent; too big to run quickly
        }
        let (t, b) = (2, 2);
        let x_shape = if config.batch_first {
            [b, t, config.input_size]
        } else {
            [t, b, config.input_size]
        };
        let x = Tensor::new(x_shape, vec![0.25; t * b * config.input_size])
            .map_err(|e| e.to_string())?;
        let (dirs, hidden, cells) = (
            config.num_directions(),
            config.hidden_size,
            config.num_cells(),
        );
        let (y_shape, s_shape) = if config.batch_first {
            ([b, t, dirs, hidden], [b, cells, hidden])
        } else {
            ([t, dirs, b, hidden], [cells, b, hidden])
        };
        let h0 = Tensor::new(s_shape, vec![0.1; cells * b * hidden]).map_err(|e| e.to_string())?;
        for engine in engines() {
            let built = engine.build(weights.clone());
            // Every engine runs ONNX's cell options forward.
            let e = built
                .map_err(|err| format!("engine `{}` refuses loaded weights: {err}", engine.name))?;
            let out = lstm
                .run(e.as_ref(), &x, Some((&h0, &h0)), Some(&[2, 0]))
                .map_err(|err| {
                    format!("engine `{}` fails a valid ONNX call: {err}", engine.name)
                })?;
            if out.y.shape() != y_shape || out.y_h.shape() != s_shape || out.y_c.shape() != s_shape
            {
                return Err(format!(
                    "engine `{}`: shapes {:?} {:?}, expected {y_shape:?} {s_shape:?}",
                    engine.name,
                    out.y.shape(),
                    out.y_h.shape()
                ));
            }
            // Sequence 1 has length 0: zeros everywhere for it.
            let y = out.y.data();
            let empty_zero = (0..t).all(|step| {
                (0..dirs).all(|d| {
                    let row = if config.batch_first {
                        (step * dirs + d) + t * dirs
                    } else {
                        (step * dirs + d) * b + 1
                    };
                    y[row * hidden..(row + 1) * hidden]
                        .iter()
                        .all(|&v| v == 0.0)
                })
            });
            if !empty_zero {
                return Err(format!(
                    "engine `{}`: Y of a length-0 sequence is not zero",
                    engine.name
                ));
            }
        }
    }
    Ok(())
}

/// Any bytes given to the `.npy` reader give an array or an error, never a panic or a huge
/// allocation; whatever parses converts without panicking, and an f32 tensor written back
/// parses to the same bits.
pub fn npy_reader(data: &[u8]) -> Outcome {
    let Ok(array) = io::parse_npy(data) else {
        return Ok(());
    };
    let _ = array.clone().into_lengths("lengths");
    let _ = array.clone().into_f64_tensor("input");
    let Ok(t) = array.into_f32_tensor("input") else {
        return Ok(());
    };
    if Some(t.len()) != lstm_core::tensor::checked_numel(t.shape()) {
        return Err(format!("{} elements in shape {:?}", t.len(), t.shape()));
    }
    let bytes = io::npy_bytes_f32(&t).map_err(|e| format!("cannot write {:?}: {e}", t.shape()))?;
    let back = io::parse_npy(&bytes)
        .and_then(|a| a.into_f32_tensor("input"))
        .map_err(|e| format!("written {:?} does not parse back: {e}", t.shape()))?;
    let same = back.shape() == t.shape()
        && back
            .data()
            .iter()
            .zip(t.data())
            .all(|(a, b)| a.to_bits() == b.to_bits());
    if !same {
        return Err(format!("{:?} does not round-trip bit for bit", t.shape()));
    }
    Ok(())
}

/// The bytes of a fuzz input, read front to back; zeros once exhausted.
#[derive(Debug)]
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0u64, |acc, _| (acc << 8) | u64::from(self.byte()))
    }

    fn has_more(&self) -> bool {
        self.pos < self.data.len()
    }
}

/// Feature sizes the differential target draws: 1 to 6 and the SIMD edges.
const SIZES: [usize; 15] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33];
/// Weight spreads, as the property tests draw them.
const WEIGHT_SCALES: [WeightScale; 6] = [
    WeightScale::PyTorch,
    WeightScale::Wider(2.0),
    WeightScale::Wider(4.0),
    WeightScale::Saturating(2.0),
    WeightScale::Saturating(5.0),
    WeightScale::Saturating(20.0),
];
/// Input and state spreads, as the property tests draw them.
const DATA_SCALES: [f32; 4] = [1.0, 0.01, 10.0, 1000.0];
/// Values the differential target may plant in the input or `h0`.
const SPECIALS: [f32; 4] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0];

/// How a deliberately invalid call is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// The input's feature axis is `I + 1`.
    InputFeatures,
    /// The input is 1-D or 4-D.
    InputRank,
    /// The input has no time steps.
    NoSteps,
    /// `h0` has one feature too many.
    H0Shape,
    /// `c0` has one cell too many.
    C0Shape,
    /// One length more than sequences.
    LengthCount,
    /// A length of 0 or `T + 1`.
    LengthRange,
    /// Lengths with unbatched input.
    LengthsUnbatched,
    /// `step` on a bidirectional LSTM.
    StepBidirectional,
    /// `step` with `x_t` one element short.
    StepInput,
    /// `step` with `output` one element long.
    StepOutput,
    /// `step` with an `h` of one feature too many.
    StepState,
    /// `proj_size >= hidden_size` (the weights cannot be made).
    Config,
    /// A `weight_hh` one element short (the weights cannot be made).
    WeightLength,
}

impl Broken {
    const ALL: [Broken; 14] = [
        Broken::InputFeatures,
        Broken::InputRank,
        Broken::NoSteps,
        Broken::H0Shape,
        Broken::C0Shape,
        Broken::LengthCount,
        Broken::LengthRange,
        Broken::LengthsUnbatched,
        Broken::StepBidirectional,
        Broken::StepInput,
        Broken::StepOutput,
        Broken::StepState,
        Broken::Config,
        Broken::WeightLength,
    ];
}

/// One call of the differential target, decoded from bytes.
///
/// Layout: a flag byte (bidirectional, `bias=False`, `batch_first`, unbatched, `(h0, c0)`,
/// lengths, projection, broken), input and hidden size (indices into 1..=6 and the SIMD
/// edges), layers and T (1..=3, 1..=8), B (0..=4), the projection, the weight spread and forget
/// bias, the input and state spreads and a special-value switch, the weight seed (8 bytes),
/// the way the call is broken, one byte per length; then the input and the state, one byte
/// per value (`i8 / 128 · spread`), continued from a seeded stream when the bytes run out.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffCase {
    /// The model and call layout.
    pub config: LstmConfig,
    /// Seed of the weights.
    pub weight_seed: u64,
    /// Their spread.
    pub weight_scale: WeightScale,
    /// Added to the forget-gate part of `bias_ih`.
    pub forget_bias: f32,
    /// T.
    pub seq_len: usize,
    /// B (1 when unbatched).
    pub batch: usize,
    /// `[T, I]` input.
    pub unbatched: bool,
    /// Input values in the canonical `[T, B, I]` order.
    pub x: Vec<f32>,
    /// The spread of the input (its bound, for the tolerance).
    pub x_scale: f32,
    /// `(h0, c0)` data (`h0` values then `c0` values), when given.
    pub state: Option<Vec<f32>>,
    /// The spread of `h0` (`c0` has four times it).
    pub state_scale: f32,
    /// Per-sequence lengths.
    pub lengths: Option<Vec<usize>>,
    /// How the call is broken, if it is.
    pub broken: Option<Broken>,
}

impl DiffCase {
    /// Decodes a call from fuzz bytes (every byte string decodes to some call).
    pub fn decode(data: &[u8]) -> DiffCase {
        let mut r = Bytes { data, pos: 0 };
        let flags = r.byte();
        let flag = |bit: u8| flags & (1 << bit) != 0;
        let input_size = SIZES[usize::from(r.byte()) % SIZES.len()];
        let hidden = SIZES[usize::from(r.byte()) % SIZES.len()];
        let lt = r.byte();
        let (layers, seq_len) = (1 + usize::from(lt % 3), 1 + usize::from((lt >> 2) % 8));
        let unbatched = flag(3);
        let batch = if unbatched {
            1
        } else {
            usize::from(r.byte() % 5)
        };
        let proj_raw = usize::from(r.byte());
        let proj_size = if flag(6) && hidden > 1 {
            1 + proj_raw % (hidden - 1)
        } else {
            0
        };
        let ws = r.byte();
        let weight_scale = WEIGHT_SCALES[usize::from(ws) % WEIGHT_SCALES.len()];
        let forget_bias = [0.0, 3.0, 8.0][usize::from(ws >> 3) % 3];
        let ds = r.byte();
        let x_scale = DATA_SCALES[usize::from(ds % 4)];
        let state_scale = DATA_SCALES[usize::from((ds >> 2) % 4)];
        let special = (ds >> 4) & 3 == 3;
        let weight_seed = r.u64();
        let broken_raw = r.byte();
        let broken = flag(7).then(|| Broken::ALL[usize::from(broken_raw) % Broken::ALL.len()]);
        let config = LstmConfig::new(input_size, hidden)
            .with_num_layers(layers)
            .with_bidirectional(flag(0))
            .with_bias(!flag(1))
            .with_batch_first(flag(2))
            .with_proj_size(proj_size);
        let lengths = (flag(5) && !unbatched).then(|| {
            (0..batch)
                .map(|_| seq_len - usize::from(r.byte()) % seq_len)
                .collect()
        });
        let mut rng = SplitMix64::new(weight_seed ^ 0x5eed_da7a);
        let mut value = |r: &mut Bytes<'_>, scale: f32| {
            if r.has_more() {
                f32::from(r.byte() as i8) / 128.0 * scale
            } else {
                scale * rng.next_signed_unit() as f32
            }
        };
        let x: Vec<f32> = (0..seq_len * batch * input_size)
            .map(|_| value(&mut r, x_scale))
            .collect();
        let state = flag(4).then(|| {
            let cells = config.num_cells();
            let h = cells * batch * config.h_out();
            let c = cells * batch * hidden;
            (0..h + c)
                .map(|k| {
                    value(
                        &mut r,
                        if k < h {
                            state_scale
                        } else {
                            4.0 * state_scale
                        },
                    )
                })
                .collect::<Vec<f32>>()
        });
        let mut case = DiffCase {
            config,
            weight_seed,
            weight_scale,
            forget_bias,
            seq_len,
            batch,
            unbatched,
            x,
            x_scale,
            state,
            state_scale,
            lengths,
            broken,
        };
        if special {
            // Plant NaN, ±inf or an exact 0 in the input or h0 (never in c0: a reference
            // forget gate of exactly 0 times an infinite cell is NaN, where f32 engines
            // saturate the gate at a tiny normal value).
            let what = SPECIALS[usize::from(r.byte()) % SPECIALS.len()];
            let at = usize::from(r.byte()) * 256 + usize::from(r.byte());
            let h_len = case.config.num_cells() * batch * case.config.h_out();
            let in_state = r.byte() & 1 == 1 && case.state.is_some();
            match (&mut case.state, in_state) {
                (Some(s), true) if h_len > 0 => s[at % h_len] = what,
                _ if !case.x.is_empty() => {
                    let n = case.x.len();
                    case.x[at % n] = what;
                }
                _ => {}
            }
        }
        case
    }

    /// The weights (`Err` for [`Broken::Config`] and [`Broken::WeightLength`]).
    pub fn weights(&self) -> lstm_core::Result<LstmWeights<f32>> {
        let mut config = self.config.clone();
        if self.broken == Some(Broken::Config) {
            let hidden = config.hidden_size;
            config = config.with_proj_size(hidden);
        }
        let bound = self.weight_scale.bound(config.hidden_size);
        let w = LstmWeights::<f32>::random_uniform(config.clone(), self.weight_seed, bound)?;
        let h = config.hidden_size;
        let mut cells: Vec<CellWeights<f32>> = w.cells().to_vec();
        for cell in &mut cells {
            if let Some(b) = cell.b_ih.as_mut() {
                for v in b.iter_mut().skip(h).take(h) {
                    *v += self.forget_bias;
                }
            }
        }
        if self.broken == Some(Broken::WeightLength) {
            if let Some(cell) = cells.last_mut() {
                cell.w_hh.pop();
            }
        }
        LstmWeights::new(config, cells)
    }

    /// The input in the caller's layout (broken as [`DiffCase::broken`] says).
    pub fn input(&self) -> lstm_core::Result<Tensor<f32>> {
        let (t, b, i) = (self.seq_len, self.batch, self.config.input_size);
        let canonical = Tensor::new([t, b, i], self.x.clone())?;
        let x = if self.unbatched {
            canonical.reshape([t, i])?
        } else if self.config.batch_first {
            canonical.swap_leading_axes()?
        } else {
            canonical
        };
        match self.broken {
            Some(Broken::InputFeatures) => {
                let mut shape = x.shape().to_vec();
                if let Some(last) = shape.last_mut() {
                    *last += 1;
                }
                let n = shape.iter().product::<usize>();
                Tensor::new(shape, vec![0.25; n])
            }
            Some(Broken::InputRank) => {
                let n = x.len();
                if n % 2 == 0 {
                    x.reshape([n])
                } else {
                    x.reshape([1, t, b, i])
                }
            }
            Some(Broken::NoSteps) => {
                let shape = if self.unbatched {
                    vec![0, i]
                } else if self.config.batch_first {
                    vec![b, 0, i]
                } else {
                    vec![0, b, i]
                };
                Tensor::new(shape, Vec::new())
            }
            _ => Ok(x),
        }
    }

    /// `(h0, c0)` in the caller's layout (broken as [`DiffCase::broken`] says).
    pub fn state(&self) -> lstm_core::Result<Option<LstmState<f32>>> {
        let batch = (!self.unbatched).then_some(self.batch);
        let Some(data) = &self.state else {
            return match self.broken {
                Some(Broken::H0Shape | Broken::C0Shape) => {
                    let mut s = LstmState::zeros(&self.config, batch)?;
                    self.break_state(&mut s)?;
                    Ok(Some(s))
                }
                _ => Ok(None),
            };
        };
        let mut s = LstmState::<f32>::zeros(&self.config, batch)?;
        let h = s.h.len();
        let (hd, cd) = data.split_at(h.min(data.len()));
        s.h.data_mut().copy_from_slice(hd);
        s.c.data_mut().copy_from_slice(cd);
        self.break_state(&mut s)?;
        Ok(Some(s))
    }

    fn break_state(&self, s: &mut LstmState<f32>) -> lstm_core::Result<()> {
        let grow = |t: &Tensor<f32>, axis_from_end: usize| {
            let mut shape = t.shape().to_vec();
            let k = shape.len().saturating_sub(axis_from_end + 1);
            if let Some(d) = shape.get_mut(k) {
                *d += 1;
            }
            let n = shape.iter().product::<usize>();
            Tensor::new(shape, vec![0.0; n])
        };
        match self.broken {
            Some(Broken::H0Shape) => s.h = grow(&s.h, 0)?,
            Some(Broken::C0Shape) => s.c = grow(&s.c, s.c.rank().saturating_sub(1))?,
            _ => {}
        }
        Ok(())
    }

    /// The lengths (broken as [`DiffCase::broken`] says).
    pub fn lengths(&self) -> Option<Vec<usize>> {
        let t = self.seq_len;
        match self.broken {
            Some(Broken::LengthCount) => {
                let mut l = self.lengths.clone().unwrap_or_else(|| vec![t; self.batch]);
                l.push(1);
                Some(l)
            }
            Some(Broken::LengthRange) => {
                let mut l = self.lengths.clone().unwrap_or_else(|| vec![t; self.batch]);
                let bad = if self.x.first().is_some_and(|v| *v > 0.0) {
                    0
                } else {
                    t + 1
                };
                match l.last_mut() {
                    Some(last) => *last = bad,
                    None => l.push(bad),
                }
                Some(l)
            }
            Some(Broken::LengthsUnbatched) if self.unbatched => Some(vec![t]),
            _ => self.lengths.clone(),
        }
    }

    /// The caller's layout of the output.
    pub fn layout(&self) -> Layout {
        Layout {
            batch_first: self.config.batch_first,
            unbatched: self.unbatched,
        }
    }

    /// Whether the case is valid as decoded: a call every engine must run.
    pub fn is_valid_call(&self) -> bool {
        match self.broken {
            None => true,
            // Unbatched input with lengths is refused; batched input is the plain call.
            Some(Broken::LengthsUnbatched) => !self.unbatched,
            Some(_) => false,
        }
    }
}

/// The differential target: see the module docs and [`DiffCase::decode`].
pub fn differential(data: &[u8]) -> Outcome {
    let case = DiffCase::decode(data);
    if case.broken.is_some() && !case.is_valid_call() {
        return invalid_call(&case);
    }
    let weights = case
        .weights()
        .map_err(|e| format!("valid case refused: {e}\n{case:?}"))?;
    let x = case.input().map_err(|e| e.to_string())?;
    let state = case.state().map_err(|e| e.to_string())?;
    let lengths = case.lengths();
    let want = crate::run_reference_on(&weights, &x, state.as_ref(), lengths.as_deref())
        .map_err(|e| format!("reference refuses a valid call: {e}\n{case:?}"))?;
    let nudged =
        crate::run_perturbed_reference_on(&weights, &x, state.as_ref(), lengths.as_deref())
            .map_err(|e| e.to_string())?;
    let rounded = crate::run_state_rounded(&weights, &x, state.as_ref(), lengths.as_deref())
        .map_err(|e| e.to_string())?;
    let probes = crate::run_chaos_probes_on(&weights, &x, state.as_ref(), lengths.as_deref())
        .map_err(|e| e.to_string())?;
    let h0_max = state.as_ref().map_or(0.0, |_| f64::from(case.state_scale));
    let cond = Conditioning::of(&weights, f64::from(case.x_scale), h0_max);
    let tol = Tolerance::per_step(&cond);
    for engine in engines() {
        let e = engine
            .build(weights.clone())
            .map_err(|err| format!("engine `{}` refuses valid weights: {err}", engine.name))?;
        let got = e
            .forward(&x, state.as_ref(), lengths.as_deref())
            .map_err(|err| {
                format!(
                    "engine `{}` fails a valid call: {err}\n{case:?}",
                    engine.name
                )
            })?;
        let samples = crate::sensitivity_samples(&engine.name, &nudged, &rounded);
        tolerance::compare_sensitive(&got, &want, &samples, &probes, case.layout(), tol)
            .map_err(|m| format!("engine `{}`: {m}\n{case:?}", engine.name))?;
        // The engine's scratch is reused across calls: the same call again, after a call of
        // another shape that fails, must give the same bits.
        let mut other = case.clone();
        other.broken = Some(Broken::InputFeatures);
        if e.forward(&other.input().map_err(|e| e.to_string())?, None, None)
            .is_ok()
        {
            return Err(format!(
                "engine `{}` accepts a wrong input shape",
                engine.name
            ));
        }
        let again = e
            .forward(&x, state.as_ref(), lengths.as_deref())
            .map_err(|err| format!("engine `{}`: second call fails: {err}", engine.name))?;
        tolerance::compare(&again, &got, case.layout(), Tolerance::EXACT).map_err(|m| {
            format!(
                "engine `{}`: the same call twice differs: {m}\n{case:?}",
                engine.name
            )
        })?;
        if !case.config.bidirectional && lengths.is_none() {
            stepped_equals_forward(engine, e.as_ref(), &case, &got)?;
        }
    }
    Ok(())
}

/// `step` called T times gives `forward`'s output and final state, within the engine's
/// identity tolerance.
fn stepped_equals_forward(
    engine: &EngineUnderTest,
    e: &dyn LstmEngine<f32>,
    case: &DiffCase,
    full: &LstmOutput<f32>,
) -> Outcome {
    let (t_len, b, i) = (case.seq_len, case.batch, case.config.input_size);
    let h_out = case.config.h_out();
    let batch = (!case.unbatched).then_some(b);
    let mut state = match case.state().map_err(|e| e.to_string())? {
        Some(s) => s,
        None => LstmState::zeros(&case.config, batch).map_err(|e| e.to_string())?,
    };
    // Canonical [T, B, H_out] output of the full call.
    let full_out = if case.config.batch_first && !case.unbatched {
        full.output.swap_leading_axes().map_err(|e| e.to_string())?
    } else {
        full.output.clone()
    };
    for t in 0..t_len {
        let mut out = vec![f32::NAN; b * h_out];
        let x_t = case.x.get(t * b * i..(t + 1) * b * i).unwrap_or(&[]);
        e.step(x_t, &mut state, &mut out)
            .map_err(|err| format!("engine `{}`: step {t} fails: {err}", engine.name))?;
        let want = full_out
            .data()
            .get(t * b * h_out..(t + 1) * b * h_out)
            .unwrap_or(&[]);
        for (k, (&g, &w)) in out.iter().zip(want).enumerate() {
            if !engine.identities.accepts(g.into(), w.into()) {
                return Err(format!(
                    "engine `{}`: step {t}: output[{k}] = {g:e}, forward gave {w:e}\n{case:?}",
                    engine.name
                ));
            }
        }
    }
    for (name, got, want) in [("h", &state.h, &full.h_n), ("c", &state.c, &full.c_n)] {
        for (k, (&g, &w)) in got.data().iter().zip(want.data()).enumerate() {
            if !engine.identities.accepts(g.into(), w.into()) {
                return Err(format!(
                    "engine `{}`: {name}[{k}] after {t_len} steps = {g:e}, forward gave {w:e}\n{case:?}",
                    engine.name
                ));
            }
        }
    }
    Ok(())
}

/// A broken call: every engine (and the reference) gives `Err`, never a panic, and stays
/// usable.
fn invalid_call(case: &DiffCase) -> Outcome {
    let weights = match case.weights() {
        Ok(w) => w,
        // The weights themselves are refused: what Config and WeightLength must give.
        Err(_) if matches!(case.broken, Some(Broken::Config | Broken::WeightLength)) => {
            return Ok(())
        }
        Err(e) => return Err(format!("weights refused: {e}\n{case:?}")),
    };
    if matches!(case.broken, Some(Broken::Config | Broken::WeightLength)) {
        return Err(format!("invalid weights accepted\n{case:?}"));
    }
    let oracle = crate::reference(&weights).map_err(|e| e.to_string())?;
    let mut runners: Vec<(String, Box<dyn LstmEngine<f32>>)> = Vec::new();
    for engine in engines() {
        let e = engine
            .build(weights.clone())
            .map_err(|err| format!("engine `{}` refuses valid weights: {err}", engine.name))?;
        runners.push((engine.name.clone(), e));
    }
    let kind = case.broken;
    let is_step = matches!(
        kind,
        Some(
            Broken::StepBidirectional | Broken::StepInput | Broken::StepOutput | Broken::StepState
        )
    );
    if is_step {
        // Step arguments: x_t [B, I], output [B, H_out], a state of batch B.
        let (b, i, h_out) = (case.batch, case.config.input_size, case.config.h_out());
        let bidirectional = case.config.bidirectional || kind == Some(Broken::StepBidirectional);
        let mut x_len = b * i;
        let mut out_len = b * h_out;
        match kind {
            // One short, or one long when B·I = 0.
            Some(Broken::StepInput) => x_len = x_len.checked_sub(1).unwrap_or(1),
            Some(Broken::StepOutput) => out_len += 1,
            _ => {}
        }
        let x_t = vec![0.5f32; x_len];
        let x64 = vec![0.5f64; x_len];
        let config = case.config.clone().with_bidirectional(bidirectional);
        let w = if bidirectional == case.config.bidirectional {
            weights.clone()
        } else {
            LstmWeights::<f32>::random(config.clone(), case.weight_seed)
                .map_err(|e| e.to_string())?
        };
        let mut engines_here: Vec<(String, Box<dyn LstmEngine<f32>>)> = Vec::new();
        for engine in engines() {
            engines_here.push((
                engine.name.clone(),
                engine.build(w.clone()).map_err(|e| e.to_string())?,
            ));
        }
        let mut state = LstmState::<f32>::zeros(&config, Some(b)).map_err(|e| e.to_string())?;
        if kind == Some(Broken::StepState) {
            let n = config.num_cells() * b * (h_out + 1);
            state.h = Tensor::new([config.num_cells(), b, h_out + 1], vec![0.0; n])
                .map_err(|e| e.to_string())?;
        }
        for (name, e) in &engines_here {
            let mut out = vec![0.0f32; out_len];
            if e.step(&x_t, &mut state, &mut out).is_ok() {
                return Err(format!(
                    "engine `{name}`: broken step {kind:?} accepted\n{case:?}"
                ));
            }
        }
        let oracle = crate::reference(&w).map_err(|e| e.to_string())?;
        let mut state64 = LstmState {
            h: crate::widen(&state.h),
            c: crate::widen(&state.c),
        };
        let mut out64 = vec![0.0f64; out_len];
        if oracle.step(&x64, &mut state64, &mut out64).is_ok() {
            return Err(format!(
                "reference: broken step {kind:?} accepted\n{case:?}"
            ));
        }
        return Ok(());
    }
    let x = case.input().map_err(|e| e.to_string())?;
    let state = case.state().map_err(|e| e.to_string())?;
    let lengths = case.lengths();
    let state64 = state.as_ref().map(crate::widen_state);
    if oracle
        .forward(&crate::widen(&x), state64.as_ref(), lengths.as_deref())
        .is_ok()
    {
        return Err(format!(
            "reference: broken call {kind:?} accepted\n{case:?}"
        ));
    }
    for (name, e) in &runners {
        if e.forward(&x, state.as_ref(), lengths.as_deref()).is_ok() {
            return Err(format!(
                "engine `{name}`: broken call {kind:?} accepted\n{case:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_layout() {
        // Flags: state + lengths; I = 3, H = 4; 2 layers, T = 3; B = 2; no projection;
        // wider(2) weights, forget bias 3; x scale 10, state scale 0.01; seed 1; lengths 3, 1.
        let lt = (0..=255u8)
            .find(|b| b % 3 == 1 && (b >> 2) % 8 == 2)
            .unwrap();
        let ws = (0..=255u8)
            .find(|b| b % 6 == 1 && (b >> 3) % 3 == 1)
            .unwrap();
        let mut bytes = vec![0b0011_0000, 2, 3, lt, 2, 0, ws, 2 | (1 << 2)];
        bytes.extend(1u64.to_be_bytes());
        bytes.extend([0, 0, 2, 64]);
        let c = DiffCase::decode(&bytes);
        assert_eq!((c.config.input_size, c.config.hidden_size), (3, 4));
        assert_eq!((c.config.num_layers, c.seq_len, c.batch), (2, 3, 2));
        assert_eq!(c.weight_scale, WeightScale::Wider(2.0));
        assert_eq!((c.forget_bias, c.x_scale, c.state_scale), (3.0, 10.0, 0.01));
        assert_eq!((c.weight_seed, c.broken), (1, None));
        assert_eq!(c.lengths, Some(vec![3, 1]));
        assert_eq!(c.x[0], 0.5 * 10.0);
        assert_eq!(c.state.as_ref().map(Vec::len), Some(2 * 2 * 2 * 4));
        assert!(differential(&bytes).is_ok());
    }

    #[test]
    fn every_broken_call_is_refused_by_every_engine() {
        for (k, kind) in Broken::ALL.iter().enumerate() {
            for flags in [0x80u8, 0x80 | 0x10 | 0x01, 0x80 | 0x08 | 0x10] {
                // Unbatched input has no batch byte.
                let mut bytes = vec![flags, 3, 4, 9];
                if flags & 0x08 == 0 {
                    bytes.push(2);
                }
                bytes.extend([0, 0, 0]);
                bytes.extend(7u64.to_be_bytes());
                bytes.push(k as u8);
                let c = DiffCase::decode(&bytes);
                assert_eq!(c.broken, Some(*kind));
                assert!(differential(&bytes).is_ok(), "{kind:?}: {c:?}");
            }
        }
    }

    #[test]
    fn an_empty_input_is_a_valid_call() {
        assert!(DiffCase::decode(&[]).is_valid_call());
        assert_eq!(differential(&[]), Ok(()));
    }
}
