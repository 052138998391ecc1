//! [`LstmConfig`]: the arguments of `torch.nn.LSTM`, validated as PyTorch validates them.

use crate::error::{LstmError, Result};

/// The hyper-parameters of a `torch.nn.LSTM`, with PyTorch's names and defaults.
///
/// Build one with [`LstmConfig::new`] and the `with_*` methods, then call
/// [`validate`](Self::validate) (every engine constructor does).
///
/// ```
/// use lstm_core::LstmConfig;
/// let cfg = LstmConfig::new(80, 320).with_num_layers(3).with_bidirectional(true);
/// cfg.validate().unwrap();
/// assert_eq!(cfg.layer_input_size(1), 640); // H_out * directions
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct LstmConfig {
    /// `input_size`: features per time step of the first layer's input.
    pub input_size: usize,
    /// `hidden_size`: H, the size of the cell state `c`.
    pub hidden_size: usize,
    /// `num_layers` (default 1).
    pub num_layers: usize,
    /// `bias` (default true): whether `bias_ih`/`bias_hh` exist.
    pub bias: bool,
    /// `batch_first` (default false): input and output are `[B, T, *]` instead of `[T, B, *]`.
    /// It never changes the layout of `h0`, `c0`, `h_n`, `c_n`.
    pub batch_first: bool,
    /// `dropout` (default 0): only acts in training, between layers; engines here run in eval
    /// mode and ignore it, but it is validated and kept so that a model round-trips.
    pub dropout: f64,
    /// `bidirectional` (default false).
    pub bidirectional: bool,
    /// `proj_size` (default 0 = no projection). When > 0, `h = W_hr (o ⊙ tanh(c))` has size P.
    pub proj_size: usize,
    /// ONNX `direction="reverse"` (default false): the one direction of a unidirectional LSTM
    /// reads the sequence from its last valid step to its first. `nn.LSTM` has no such option;
    /// only with `bidirectional = false`. See [`Direction`].
    pub reverse_only: bool,
    /// ONNX peepholes `P` (default false): each (layer, direction) cell has `[3H]` peephole
    /// weights (rows i, f, o); `i` and `f` see `P ⊙ c_{t-1}`, `o` sees `P ⊙ c_t`.
    pub peepholes: bool,
    /// ONNX `clip` (default none): every gate pre-activation is clamped to `[-clip, clip]`
    /// before its activation (the cell state itself is not clamped). Must be finite and > 0.
    pub clip: Option<f32>,
    /// ONNX `input_forget` (default false): the forget gate is coupled to the input gate,
    /// `f = 1 - i`; the forget rows of the weights are then unused.
    pub input_forget: bool,
}

/// The direction(s) an LSTM reads its sequence in: PyTorch's `bidirectional` and ONNX's
/// `direction` attribute (`"forward"`, `"reverse"`, `"bidirectional"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the first step to the last (`nn.LSTM` default).
    Forward,
    /// One direction, from the last valid step to the first (ONNX only).
    Reverse,
    /// Both, outputs concatenated forward then reverse (`bidirectional=True`).
    Bidirectional,
}

impl Direction {
    /// ONNX's name for it (`forward`, `reverse`, `bidirectional`).
    pub fn onnx_name(self) -> &'static str {
        match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
            Direction::Bidirectional => "bidirectional",
        }
    }
}

impl LstmConfig {
    /// A one-layer, unidirectional LSTM with bias, as `nn.LSTM(input_size, hidden_size)`.
    pub fn new(input_size: usize, hidden_size: usize) -> Self {
        LstmConfig {
            input_size,
            hidden_size,
            num_layers: 1,
            bias: true,
            batch_first: false,
            dropout: 0.0,
            bidirectional: false,
            proj_size: 0,
            reverse_only: false,
            peepholes: false,
            clip: None,
            input_forget: false,
        }
    }

    /// Sets the direction(s): `bidirectional` and `reverse_only` together.
    pub fn with_direction(mut self, direction: Direction) -> Self {
        self.bidirectional = direction == Direction::Bidirectional;
        self.reverse_only = direction == Direction::Reverse;
        self
    }

    /// The direction(s) the LSTM reads its sequence in.
    pub fn direction(&self) -> Direction {
        match (self.bidirectional, self.reverse_only) {
            (true, _) => Direction::Bidirectional,
            (false, true) => Direction::Reverse,
            (false, false) => Direction::Forward,
        }
    }

    /// Whether direction `dir` (0 or 1) of each layer reads the sequence backwards: the
    /// second direction of a bidirectional LSTM, or the only one of a reverse-only LSTM.
    pub fn reads_backwards(&self, dir: usize) -> bool {
        dir == 1 || self.reverse_only
    }

    /// Sets ONNX peepholes (each cell then has `[3H]` peephole weights).
    pub fn with_peepholes(mut self, peepholes: bool) -> Self {
        self.peepholes = peepholes;
        self
    }

    /// Sets ONNX `clip` (`None`: no clamping).
    pub fn with_clip(mut self, clip: Option<f32>) -> Self {
        self.clip = clip;
        self
    }

    /// Sets ONNX `input_forget` (`f = 1 - i`).
    pub fn with_input_forget(mut self, input_forget: bool) -> Self {
        self.input_forget = input_forget;
        self
    }

    /// The ONNX-only cell options this config uses (reverse-only direction, peepholes, clip,
    /// input_forget), in words, or `None` for a plain `nn.LSTM`. Engines and writers that
    /// support only what `nn.LSTM` can express refuse a config for which this is `Some`.
    pub fn onnx_only_options(&self) -> Option<String> {
        let mut used = Vec::new();
        if self.reverse_only {
            used.push("a reverse-only direction".to_string());
        }
        if self.peepholes {
            used.push("peepholes (P)".to_string());
        }
        if let Some(clip) = self.clip {
            used.push(format!("clip={clip}"));
        }
        if self.input_forget {
            used.push("input_forget".to_string());
        }
        (!used.is_empty()).then(|| used.join(", "))
    }

    /// Sets `num_layers`.
    pub fn with_num_layers(mut self, num_layers: usize) -> Self {
        self.num_layers = num_layers;
        self
    }

    /// Sets `bias`.
    pub fn with_bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    /// Sets `batch_first`.
    pub fn with_batch_first(mut self, batch_first: bool) -> Self {
        self.batch_first = batch_first;
        self
    }

    /// Sets `dropout`.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Sets `bidirectional`.
    pub fn with_bidirectional(mut self, bidirectional: bool) -> Self {
        self.bidirectional = bidirectional;
        self
    }

    /// Sets `proj_size`.
    pub fn with_proj_size(mut self, proj_size: usize) -> Self {
        self.proj_size = proj_size;
        self
    }

    /// Checks the config the way `nn.LSTM.__init__` does.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(LstmError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if self.input_size == 0 {
            return bad("input_size", "must be at least 1, found 0");
        }
        if self.hidden_size == 0 {
            return bad("hidden_size", "must be at least 1, found 0");
        }
        if self.num_layers == 0 {
            return bad("num_layers", "must be at least 1, found 0");
        }
        if !(0.0..=1.0).contains(&self.dropout) {
            return Err(LstmError::InvalidConfig {
                field: "dropout",
                reason: format!("must lie in [0, 1], found {}", self.dropout),
            });
        }
        if self.proj_size >= self.hidden_size {
            return Err(LstmError::InvalidConfig {
                field: "proj_size",
                reason: format!(
                    "must be smaller than hidden_size ({}), found {}",
                    self.hidden_size, self.proj_size
                ),
            });
        }
        if self.reverse_only && self.bidirectional {
            return bad(
                "reverse_only",
                "applies to a unidirectional LSTM only, found bidirectional=true",
            );
        }
        if let Some(clip) = self.clip {
            if !(clip.is_finite() && clip > 0.0) {
                return Err(LstmError::InvalidConfig {
                    field: "clip",
                    reason: format!("must be finite and greater than 0, found {clip}"),
                });
            }
        }
        // Guard the arithmetic every engine does on these sizes (4·H·I weights, and so on), so
        // that no later multiplication can overflow whatever the caller passes.
        let too_big = |field| {
            Err(LstmError::InvalidConfig {
                field,
                reason: "makes a parameter count that overflows memory".to_string(),
            })
        };
        let (h_out, dirs) = (self.h_out(), self.num_directions());
        let Some(cells) = self.num_layers.checked_mul(dirs) else {
            return too_big("num_layers");
        };
        let widest_input = match h_out.checked_mul(dirs) {
            Some(o) => self.input_size.max(o),
            None => return too_big("hidden_size"),
        };
        let per_cell = 4usize
            .checked_mul(self.hidden_size)
            .and_then(|g| g.checked_mul(widest_input.checked_add(h_out)?.checked_add(3)?))
            .and_then(|n| n.checked_add(self.proj_size.checked_mul(self.hidden_size)?));
        match per_cell.and_then(|n| n.checked_mul(cells)) {
            Some(n) if n <= isize::MAX as usize / 8 => Ok(()),
            _ => too_big("hidden_size"),
        }
    }

    /// D: 2 when bidirectional, else 1.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// H_out: `proj_size` when > 0, else `hidden_size`. The size of `h` and of each direction's output.
    pub fn h_out(&self) -> usize {
        if self.proj_size > 0 {
            self.proj_size
        } else {
            self.hidden_size
        }
    }

    /// Size of one output row: D · H_out.
    pub fn output_size(&self) -> usize {
        self.num_directions().saturating_mul(self.h_out())
    }

    /// I_k: `input_size` for layer 0, `D · H_out` for later layers.
    pub fn layer_input_size(&self, layer: usize) -> usize {
        if layer == 0 {
            self.input_size
        } else {
            self.output_size()
        }
    }

    /// Number of (layer, direction) cells: L · D. Also the leading dimension of `h_n` and `c_n`.
    pub fn num_cells(&self) -> usize {
        self.num_layers.saturating_mul(self.num_directions())
    }

    /// Number of learnable parameters (as `sum(p.numel() for p in lstm.parameters())`);
    /// saturates at `usize::MAX` for configs that [`validate`](Self::validate) refuses.
    pub fn parameter_count(&self) -> usize {
        let h = self.hidden_size;
        let per_dir = |layer: usize| -> Option<usize> {
            let gates = h.checked_mul(4)?;
            gates
                .checked_mul(self.layer_input_size(layer).checked_add(self.h_out())?)?
                .checked_add(if self.bias { gates.checked_mul(2)? } else { 0 })?
                .checked_add(self.proj_size.checked_mul(h)?)?
                .checked_add(if self.peepholes { h.checked_mul(3)? } else { 0 })?
                .checked_mul(self.num_directions())
        };
        let first = per_dir(0);
        let rest = per_dir(1).and_then(|n| n.checked_mul(self.num_layers.checked_sub(1)?));
        first
            .and_then(|f| f.checked_add(rest?))
            .unwrap_or(usize::MAX)
    }

    /// Floating-point operations of one forward pass over `seq_len` steps and `batch` sequences,
    /// counting a multiply-add as 2 (the matrix products only; the gate math is O(H), not O(H²)).
    pub fn forward_flops(&self, seq_len: usize, batch: usize) -> f64 {
        let h = self.hidden_size as f64;
        let mut total = 0.0;
        for layer in 0..self.num_layers {
            let i = self.layer_input_size(layer) as f64;
            let mut per_step = 8.0 * h * (i + self.h_out() as f64);
            if self.proj_size > 0 {
                per_step += 2.0 * self.proj_size as f64 * h;
            }
            total += per_step * self.num_directions() as f64;
        }
        total * seq_len as f64 * batch as f64
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_pytorch() {
        let c = LstmConfig::new(10, 20);
        assert_eq!(c.num_layers, 1);
        assert!(c.bias && !c.batch_first && !c.bidirectional);
        assert_eq!((c.proj_size, c.dropout), (0, 0.0));
        c.validate().unwrap();
    }

    #[test]
    fn refuses_what_pytorch_refuses() {
        let field = |c: LstmConfig| match c.validate() {
            Err(LstmError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        assert_eq!(field(LstmConfig::new(0, 4)), "input_size");
        assert_eq!(field(LstmConfig::new(4, 0)), "hidden_size");
        assert_eq!(
            field(LstmConfig::new(4, 4).with_num_layers(0)),
            "num_layers"
        );
        assert_eq!(field(LstmConfig::new(4, 4).with_dropout(1.5)), "dropout");
        assert_eq!(field(LstmConfig::new(4, 4).with_dropout(-0.1)), "dropout");
        assert_eq!(
            field(LstmConfig::new(4, 4).with_dropout(f64::NAN)),
            "dropout"
        );
        assert_eq!(field(LstmConfig::new(4, 4).with_proj_size(4)), "proj_size");
        assert_eq!(
            field(LstmConfig::new(usize::MAX / 2, 1 << 40)),
            "hidden_size"
        );
    }

    #[test]
    fn derived_sizes() {
        let c = LstmConfig::new(7, 5)
            .with_proj_size(3)
            .with_bidirectional(true)
            .with_num_layers(2);
        assert_eq!(c.h_out(), 3);
        assert_eq!(c.output_size(), 6);
        assert_eq!(c.layer_input_size(0), 7);
        assert_eq!(c.layer_input_size(1), 6);
        assert_eq!(c.num_cells(), 4);
        // layer 0: 4*5*7 + 4*5*3 + 8*5 + 3*5 = 140+60+40+15 = 255 per direction
        // layer 1: 4*5*6 + 60 + 40 + 15 = 235 per direction
        assert_eq!(c.parameter_count(), 2 * 255 + 2 * 235);
        let p = c.with_peepholes(true);
        assert_eq!(p.parameter_count(), 2 * 255 + 2 * 235 + 4 * 15);
    }

    #[test]
    fn onnx_options_validate_and_name_themselves() {
        let plain = LstmConfig::new(3, 4);
        assert_eq!(plain.direction(), Direction::Forward);
        assert_eq!(plain.onnx_only_options(), None);
        let rev = plain.clone().with_direction(Direction::Reverse);
        assert_eq!(rev.direction(), Direction::Reverse);
        assert!(rev.reads_backwards(0) && !plain.reads_backwards(0));
        rev.validate().unwrap();
        let bi = rev.clone().with_direction(Direction::Bidirectional);
        assert!(bi.bidirectional && !bi.reverse_only);
        let mut both = rev.clone();
        both.bidirectional = true;
        assert!(matches!(
            both.validate(),
            Err(LstmError::InvalidConfig {
                field: "reverse_only",
                ..
            })
        ));
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                plain.clone().with_clip(Some(bad)).validate(),
                Err(LstmError::InvalidConfig { field: "clip", .. })
            ));
        }
        let all = rev
            .with_peepholes(true)
            .with_clip(Some(2.5))
            .with_input_forget(true);
        all.validate().unwrap();
        assert_eq!(
            all.onnx_only_options().unwrap(),
            "a reverse-only direction, peepholes (P), clip=2.5, input_forget"
        );
    }
}
