//! [`LstmWeights`]: the parameters of an `nn.LSTM`, per (layer, direction), in PyTorch's layout.
//!
//! Each matrix is row-major exactly as in the `state_dict` (`weight_ih_l0` is `[4H, I]` with
//! gate rows in the order i, f, g, o). Engines that want another layout pack from these.

use num_traits::Float;

use crate::config::LstmConfig;
use crate::error::{LstmError, Result};

/// The five kinds of parameter tensor of an `nn.LSTM` layer direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// `weight_ih_l{k}`: `[4H, I_k]`.
    WeightIh,
    /// `weight_hh_l{k}`: `[4H, H_out]`.
    WeightHh,
    /// `bias_ih_l{k}`: `[4H]` (only with `bias=True`).
    BiasIh,
    /// `bias_hh_l{k}`: `[4H]` (only with `bias=True`).
    BiasHh,
    /// `weight_hr_l{k}`: `[P, H]` (only with `proj_size > 0`).
    WeightHr,
}

impl ParamKind {
    /// All kinds, in the order PyTorch registers them.
    pub const ALL: [ParamKind; 5] = [
        ParamKind::WeightIh,
        ParamKind::WeightHh,
        ParamKind::BiasIh,
        ParamKind::BiasHh,
        ParamKind::WeightHr,
    ];

    /// The stem of the state_dict name (`weight_ih`, ...).
    pub fn stem(self) -> &'static str {
        match self {
            ParamKind::WeightIh => "weight_ih",
            ParamKind::WeightHh => "weight_hh",
            ParamKind::BiasIh => "bias_ih",
            ParamKind::BiasHh => "bias_hh",
            ParamKind::WeightHr => "weight_hr",
        }
    }

    /// The state_dict name without prefix: `weight_ih_l0`, `bias_hh_l2_reverse`, ...
    pub fn name(self, layer: usize, reverse: bool) -> String {
        let suffix = if reverse { "_reverse" } else { "" };
        format!("{}_l{layer}{suffix}", self.stem())
    }

    /// Parses a name without prefix into (kind, layer, reverse).
    pub fn parse(name: &str) -> Option<(ParamKind, usize, bool)> {
        let (rest, reverse) = match name.strip_suffix("_reverse") {
            Some(r) => (r, true),
            None => (name, false),
        };
        let (stem, layer) = rest.rsplit_once("_l")?;
        if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Reject leading zeros ("l01"): PyTorch never writes them, and accepting them would let
        // two names map to the same parameter.
        if layer.len() > 1 && layer.starts_with('0') {
            return None;
        }
        let layer = layer.parse().ok()?;
        let kind = ParamKind::ALL.into_iter().find(|k| k.stem() == stem)?;
        Some((kind, layer, reverse))
    }

    /// The shape this parameter has in `config` at `layer`, or `None` when the config has no
    /// such parameter (a bias with `bias=False`, `weight_hr` without projection).
    pub fn shape(self, config: &LstmConfig, layer: usize) -> Option<Vec<usize>> {
        let g = config.hidden_size.saturating_mul(4);
        match self {
            ParamKind::WeightIh => Some(vec![g, config.layer_input_size(layer)]),
            ParamKind::WeightHh => Some(vec![g, config.h_out()]),
            ParamKind::BiasIh | ParamKind::BiasHh => config.bias.then(|| vec![g]),
            ParamKind::WeightHr => {
                (config.proj_size > 0).then(|| vec![config.proj_size, config.hidden_size])
            }
        }
    }
}

/// The parameters of one (layer, direction) cell, row-major as in the state_dict.
#[derive(Clone, Debug, PartialEq)]
pub struct CellWeights<T> {
    /// `weight_ih`: `[4H, I_k]`.
    pub w_ih: Vec<T>,
    /// `weight_hh`: `[4H, H_out]`.
    pub w_hh: Vec<T>,
    /// `bias_ih`: `[4H]`, `None` when `bias=False`.
    pub b_ih: Option<Vec<T>>,
    /// `bias_hh`: `[4H]`, `None` when `bias=False`.
    pub b_hh: Option<Vec<T>>,
    /// `weight_hr`: `[P, H]`, `None` when `proj_size == 0`.
    pub w_hr: Option<Vec<T>>,
}

impl<T> CellWeights<T> {
    /// The tensor of `kind`, if this cell has it.
    pub fn get(&self, kind: ParamKind) -> Option<&[T]> {
        match kind {
            ParamKind::WeightIh => Some(&self.w_ih),
            ParamKind::WeightHh => Some(&self.w_hh),
            ParamKind::BiasIh => self.b_ih.as_deref(),
            ParamKind::BiasHh => self.b_hh.as_deref(),
            ParamKind::WeightHr => self.w_hr.as_deref(),
        }
    }
}

/// All parameters of an `nn.LSTM`, validated against its [`LstmConfig`].
///
/// Cells are indexed like `h_n`: `layer * D + direction` (direction 1 is `_reverse`).
///
/// ONNX peepholes ([`LstmConfig::peepholes`]) are held beside the cells, one `[3H]` vector per
/// cell with rows in the order i, f, o (ONNX stores them i, o, f; its loader reorders them).
#[derive(Clone, Debug, PartialEq)]
pub struct LstmWeights<T> {
    config: LstmConfig,
    cells: Vec<CellWeights<T>>,
    /// One `[3H]` vector per cell when `config.peepholes`, else empty.
    peepholes: Vec<Vec<T>>,
}

impl<T: Copy> LstmWeights<T> {
    /// Checks every cell's tensors against `config` (presence and length). A config with
    /// peepholes needs [`with_peepholes`](Self::with_peepholes) instead.
    pub fn new(config: LstmConfig, cells: Vec<CellWeights<T>>) -> Result<Self> {
        Self::with_peepholes(config, cells, Vec::new())
    }

    /// [`new`](Self::new) with ONNX peephole weights: one `[3H]` vector per cell (rows i, f,
    /// o; cells ordered `layer * D + direction`) when `config.peepholes`, none otherwise.
    pub fn with_peepholes(
        config: LstmConfig,
        cells: Vec<CellWeights<T>>,
        peepholes: Vec<Vec<T>>,
    ) -> Result<Self> {
        config.validate()?;
        let wanted = if config.peepholes {
            config.num_cells()
        } else {
            0
        };
        if peepholes.len() != wanted {
            return Err(LstmError::InvalidArgument {
                what: "peepholes",
                reason: format!(
                    "expected {wanted} peephole vectors (peepholes={}, {} cells), found {}",
                    config.peepholes,
                    config.num_cells(),
                    peepholes.len()
                ),
            });
        }
        let p_len = config.hidden_size.saturating_mul(3);
        if let Some((index, p)) = peepholes.iter().enumerate().find(|(_, p)| p.len() != p_len) {
            return Err(LstmError::ElementCount {
                what: format!("peepholes of cell {index}").into(),
                shape: vec![p_len],
                expected: p_len,
                found: p.len(),
            });
        }
        if cells.len() != config.num_cells() {
            return Err(LstmError::InvalidArgument {
                what: "cells",
                reason: format!(
                    "expected {} (layer, direction) cells, found {}",
                    config.num_cells(),
                    cells.len()
                ),
            });
        }
        for (index, cell) in cells.iter().enumerate() {
            let layer = index / config.num_directions();
            let reverse = index % config.num_directions() == 1;
            for kind in ParamKind::ALL {
                let name = kind.name(layer, reverse);
                match (kind.shape(&config, layer), cell.get(kind)) {
                    (Some(shape), Some(data)) => {
                        let n: usize = shape.iter().product();
                        if data.len() != n {
                            return Err(LstmError::ElementCount {
                                what: name.into(),
                                shape,
                                expected: n,
                                found: data.len(),
                            });
                        }
                    }
                    (Some(_), None) => return Err(LstmError::MissingTensor { name }),
                    (None, Some(_)) => {
                        return Err(LstmError::UnexpectedTensor {
                            name,
                            reason: "the config has no such parameter".to_string(),
                        })
                    }
                    (None, None) => {}
                }
            }
        }
        Ok(LstmWeights {
            config,
            cells,
            peepholes,
        })
    }

    /// Builds the weights by asking `lookup` for each state_dict name (without prefix) the
    /// config needs; `lookup` returns the tensor's shape and data.
    pub fn from_named(
        config: LstmConfig,
        mut lookup: impl FnMut(&str) -> Option<(Vec<usize>, Vec<T>)>,
    ) -> Result<Self> {
        config.validate()?;
        let mut cells = Vec::with_capacity(config.num_cells());
        for layer in 0..config.num_layers {
            for dir in 0..config.num_directions() {
                let mut fetch = |kind: ParamKind| -> Result<Option<Vec<T>>> {
                    let Some(expected) = kind.shape(&config, layer) else {
                        return Ok(None);
                    };
                    let name = kind.name(layer, dir == 1);
                    let (shape, data) =
                        lookup(&name).ok_or(LstmError::MissingTensor { name: name.clone() })?;
                    if shape != expected {
                        return Err(LstmError::shape(name, &expected, &shape));
                    }
                    Ok(Some(data))
                };
                let (Some(w_ih), Some(w_hh)) =
                    (fetch(ParamKind::WeightIh)?, fetch(ParamKind::WeightHh)?)
                else {
                    // Unreachable: weight shapes always exist; kept as an error, not a panic.
                    return Err(LstmError::MissingTensor {
                        name: ParamKind::WeightIh.name(layer, dir == 1),
                    });
                };
                cells.push(CellWeights {
                    w_ih,
                    w_hh,
                    b_ih: fetch(ParamKind::BiasIh)?,
                    b_hh: fetch(ParamKind::BiasHh)?,
                    w_hr: fetch(ParamKind::WeightHr)?,
                });
            }
        }
        LstmWeights::new(config, cells)
    }
}

impl<T> LstmWeights<T> {
    /// The config these weights belong to.
    pub fn config(&self) -> &LstmConfig {
        &self.config
    }

    /// Changes the call-layout options that a state_dict does not record (`batch_first`,
    /// `dropout`); the shapes of the parameters do not depend on them.
    pub fn set_call_options(&mut self, batch_first: bool, dropout: f64) -> Result<()> {
        let mut config = self.config.clone();
        config.batch_first = batch_first;
        config.dropout = dropout;
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The cell of `layer` and `direction` (0 forward, 1 reverse); `None` when out of range.
    pub fn cell(&self, layer: usize, direction: usize) -> Option<&CellWeights<T>> {
        if layer >= self.config.num_layers || direction >= self.config.num_directions() {
            return None;
        }
        self.cells
            .get(layer * self.config.num_directions() + direction)
    }

    /// All cells, `layer * D + direction`.
    pub fn cells(&self) -> &[CellWeights<T>] {
        &self.cells
    }

    /// The ONNX peephole weights of `layer` and `direction`, `[3H]` with rows i, f, o; `None`
    /// without peepholes or out of range.
    pub fn peephole(&self, layer: usize, direction: usize) -> Option<&[T]> {
        if layer >= self.config.num_layers || direction >= self.config.num_directions() {
            return None;
        }
        self.peepholes
            .get(layer * self.config.num_directions() + direction)
            .map(Vec::as_slice)
    }

    /// All peephole vectors, `layer * D + direction` (empty without peepholes).
    pub fn peepholes(&self) -> &[Vec<T>] {
        &self.peepholes
    }

    /// Every tensor as `(name without prefix, shape, data)`, in PyTorch's registration order.
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, &[T])> {
        let mut out = Vec::new();
        for (index, cell) in self.cells.iter().enumerate() {
            let layer = index / self.config.num_directions();
            let reverse = index % self.config.num_directions() == 1;
            for kind in ParamKind::ALL {
                if let (Some(shape), Some(data)) = (kind.shape(&self.config, layer), cell.get(kind))
                {
                    out.push((kind.name(layer, reverse), shape, data));
                }
            }
        }
        out
    }
}

impl<T: Float> LstmWeights<T> {
    /// Converts every parameter to another float type (f32 → f64 is exact).
    pub fn cast<U: Float>(&self) -> LstmWeights<U> {
        let conv = |v: &Vec<T>| -> Vec<U> {
            v.iter()
                .map(|&x| U::from(x).unwrap_or_else(U::nan))
                .collect()
        };
        LstmWeights {
            config: self.config.clone(),
            cells: self
                .cells
                .iter()
                .map(|c| CellWeights {
                    w_ih: conv(&c.w_ih),
                    w_hh: conv(&c.w_hh),
                    b_ih: c.b_ih.as_ref().map(conv),
                    b_hh: c.b_hh.as_ref().map(conv),
                    w_hr: c.w_hr.as_ref().map(conv),
                })
                .collect(),
            peepholes: self.peepholes.iter().map(conv).collect(),
        }
    }

    /// Weights drawn as PyTorch initialises them, `U(-1/√H, 1/√H)`, from a fixed `seed`
    /// (reproducible; not PyTorch's generator).
    pub fn random(config: LstmConfig, seed: u64) -> Result<Self> {
        let k = 1.0 / (config.hidden_size as f64).sqrt();
        Self::random_uniform(config, seed, k)
    }

    /// Weights drawn uniformly from `[-scale, scale]` with a fixed `seed`.
    pub fn random_uniform(config: LstmConfig, seed: u64, scale: f64) -> Result<Self> {
        config.validate()?;
        let mut rng = SplitMix64::new(seed);
        // Draws the tensor of `kind` (None when the config has no such tensor); allocation
        // failures of huge configs are errors, not aborts.
        let mut draw = |kind: ParamKind, layer: usize| -> Result<Option<Vec<T>>> {
            let Some(shape) = kind.shape(&config, layer) else {
                return Ok(None);
            };
            let n = crate::tensor::checked_numel(&shape).unwrap_or(usize::MAX);
            let mut v = crate::tensor::try_filled_vec(kind.stem(), n, T::zero())?;
            for x in v.iter_mut() {
                *x = T::from(scale * rng.next_signed_unit()).unwrap_or_else(T::zero);
            }
            Ok(Some(v))
        };
        let mut cells = Vec::with_capacity(config.num_cells());
        for layer in 0..config.num_layers {
            for _ in 0..config.num_directions() {
                cells.push(CellWeights {
                    w_ih: draw(ParamKind::WeightIh, layer)?.unwrap_or_default(),
                    w_hh: draw(ParamKind::WeightHh, layer)?.unwrap_or_default(),
                    b_ih: draw(ParamKind::BiasIh, layer)?,
                    b_hh: draw(ParamKind::BiasHh, layer)?,
                    w_hr: draw(ParamKind::WeightHr, layer)?,
                });
            }
        }
        let mut peepholes = Vec::new();
        if config.peepholes {
            for _ in 0..config.num_cells() {
                let n = config.hidden_size.saturating_mul(3);
                let mut p = crate::tensor::try_filled_vec("peepholes", n, T::zero())?;
                for x in p.iter_mut() {
                    *x = T::from(scale * rng.next_signed_unit()).unwrap_or_else(T::zero);
                }
                peepholes.push(p);
            }
        }
        LstmWeights::with_peepholes(config, cells, peepholes)
    }
}

/// A tiny deterministic generator (SplitMix64) for reproducible test and bench data; no
/// dependency, identical on every platform.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from `[-1, 1)`.
    pub fn next_signed_unit(&mut self) -> f64 {
        // 53 random bits → [0, 1), then to [-1, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        2.0 * unit - 1.0
    }

    /// `n` draws from `[-scale, scale)` as f32.
    pub fn fill_f32(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| scale * self.next_signed_unit() as f32)
            .collect()
    }
}

impl LstmWeights<f32> {
    /// The weights an engine of `precision` multiplies by: each row of `W_ih`, `W_hh` and
    /// `W_hr` rounded to the precision ([`Precision::round_row`](crate::Precision::round_row)),
    /// biases unchanged (they are added in f32).
    pub fn rounded_to(&self, precision: crate::Precision) -> LstmWeights<f32> {
        let mut out = self.clone();
        let (gates, proj) = (4 * self.config.hidden_size, self.config.proj_size);
        for cell in &mut out.cells {
            for (w, rows) in [
                (Some(&mut cell.w_ih), gates),
                (Some(&mut cell.w_hh), gates),
                (cell.w_hr.as_mut(), proj),
            ]
            .into_iter()
            .filter_map(|(w, rows)| Some((w?, rows)))
            {
                let k = w.len().checked_div(rows).unwrap_or(0).max(1);
                w.chunks_mut(k).for_each(|row| precision.round_row(row));
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in ParamKind::ALL {
            for layer in [0, 1, 12] {
                for reverse in [false, true] {
                    let name = kind.name(layer, reverse);
                    assert_eq!(ParamKind::parse(&name), Some((kind, layer, reverse)));
                }
            }
        }
        for bad in [
            "weight_ih",
            "weight_ih_l",
            "weight_ih_lx",
            "weight_ih_l01",
            "foo_l0",
            "weight_ih_l0_rev",
        ] {
            assert_eq!(ParamKind::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn random_weights_have_pytorch_shapes() {
        let cfg = LstmConfig::new(3, 5)
            .with_num_layers(2)
            .with_bidirectional(true)
            .with_proj_size(2);
        let w = LstmWeights::<f32>::random(cfg.clone(), 1).unwrap();
        let names: Vec<_> = w
            .named_tensors()
            .into_iter()
            .map(|(n, s, _)| (n, s))
            .collect();
        assert_eq!(names.len(), 2 * 2 * 5);
        assert_eq!(names[0], ("weight_ih_l0".to_string(), vec![20, 3]));
        assert_eq!(names[5], ("weight_ih_l0_reverse".to_string(), vec![20, 3]));
        assert_eq!(names[10], ("weight_ih_l1".to_string(), vec![20, 4]));
        assert_eq!(names[11], ("weight_hh_l1".to_string(), vec![20, 2]));
        assert_eq!(names[14], ("weight_hr_l1".to_string(), vec![2, 5]));
        let total: usize = w.named_tensors().iter().map(|(_, _, d)| d.len()).sum();
        assert_eq!(total, cfg.parameter_count());
        let k = 1.0 / 5f32.sqrt();
        assert!(matches!(
            // 2^60 bytes of weights: more than any address space holds.
            LstmWeights::<f32>::random(LstmConfig::new(1 << 36, 1 << 20), 0),
            Err(LstmError::Allocation { .. })
        ));
        assert!(w
            .cells()
            .iter()
            .all(|c| c.w_ih.iter().all(|x| x.abs() <= k)));
    }

    #[test]
    fn new_rejects_inconsistent_cells() {
        let cfg = LstmConfig::new(3, 2);
        let mut w = LstmWeights::<f32>::random(cfg.clone(), 0)
            .unwrap()
            .cells()
            .to_vec();
        w[0].w_hh.pop();
        assert!(matches!(
            LstmWeights::new(cfg.clone(), w.clone()),
            Err(LstmError::ElementCount { .. })
        ));
        w[0].w_hh.push(0.0);
        w[0].b_ih = None;
        assert!(matches!(
            LstmWeights::new(cfg.clone(), w.clone()),
            Err(LstmError::MissingTensor { .. })
        ));
        w[0].b_ih = Some(vec![0.0; 8]);
        w[0].w_hr = Some(vec![0.0; 2]);
        assert!(matches!(
            LstmWeights::new(cfg, w),
            Err(LstmError::UnexpectedTensor { .. })
        ));
    }

    #[test]
    fn peepholes_are_checked_drawn_and_cast() {
        let cfg = LstmConfig::new(3, 2)
            .with_bidirectional(true)
            .with_peepholes(true);
        let w = LstmWeights::<f32>::random(cfg.clone(), 4).unwrap();
        assert_eq!(w.peepholes().len(), 2);
        assert_eq!(w.peephole(0, 1).unwrap().len(), 6);
        assert_eq!(w.peephole(1, 0), None);
        assert_eq!(w.cast::<f64>().cast::<f32>(), w);
        let cells = w.cells().to_vec();
        assert!(matches!(
            LstmWeights::new(cfg.clone(), cells.clone()),
            Err(LstmError::InvalidArgument {
                what: "peepholes",
                ..
            })
        ));
        assert!(matches!(
            LstmWeights::with_peepholes(cfg, cells, vec![vec![0.0; 6], vec![0.0; 5]]),
            Err(LstmError::ElementCount { .. })
        ));
    }

    #[test]
    fn cast_is_exact_to_f64() {
        let w = LstmWeights::<f32>::random(LstmConfig::new(4, 3), 9).unwrap();
        let d = w.cast::<f64>();
        assert_eq!(d.cast::<f32>(), w);
    }
}
