//! The grid of workloads a report runs: the built-in one (the real workloads of the project's
//! performance notes), its quick subset, or a TOML file (`--grid FILE`).
//!
//! A grid file is a list of `[[shape]]` tables with the same names as `lstm bench`'s flags:
//!
//! ```toml
//! [[shape]]
//! name = "batch-mid"      # unique, used in tables and charts
//! seq_len = 100           # T
//! batch = 32              # B
//! input_size = 256        # I
//! hidden_size = 256       # H
//! num_layers = 1          # optional, default 1
//! bidirectional = false   # optional, default false
//! proj_size = 0           # optional, default 0 (no projection)
//! train = true            # optional, default true: also time a training step
//! ```

use std::path::Path;

use lstm::LstmConfig;
use serde::{Deserialize, Serialize};

use crate::{ReportError, Result};

/// One workload: an `nn.LSTM` configuration and the call shape `[T, B, I]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// Unique within a grid; names the shape in tables and charts.
    pub name: String,
    /// T.
    pub seq_len: usize,
    /// B.
    pub batch: usize,
    /// I.
    pub input_size: usize,
    /// H.
    pub hidden_size: usize,
    /// Stacked layers (default 1).
    #[serde(default = "one")]
    pub num_layers: usize,
    /// Bidirectional (default false).
    #[serde(default)]
    pub bidirectional: bool,
    /// Projection size P (default 0: none).
    #[serde(default)]
    pub proj_size: usize,
    /// Also time a training step (default true).
    #[serde(default = "yes")]
    pub train: bool,
}

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

impl Shape {
    #[allow(clippy::too_many_arguments)]
    const fn builtin(
        name: &'static str,
        seq_len: usize,
        batch: usize,
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        bidirectional: bool,
    ) -> BuiltinShape {
        BuiltinShape {
            name,
            seq_len,
            batch,
            input_size,
            hidden_size,
            num_layers,
            bidirectional,
        }
    }

    /// The `nn.LSTM` configuration.
    pub fn config(&self) -> LstmConfig {
        LstmConfig::new(self.input_size, self.hidden_size)
            .with_num_layers(self.num_layers)
            .with_bidirectional(self.bidirectional)
            .with_proj_size(self.proj_size)
    }

    /// FLOPs of one forward pass (matrix products, a multiply-add counted as 2).
    pub fn forward_flops(&self) -> f64 {
        self.config().forward_flops(self.seq_len, self.batch)
    }

    /// FLOPs of one training step: the forward and a backward that costs two forwards
    /// (the gradients of the inputs of each product, and of its weights).
    pub fn train_flops(&self) -> f64 {
        3.0 * self.forward_flops()
    }

    /// Bytes of weights one forward must read at least: every recurrent matrix (`W_hh`, and
    /// `W_hr` with a projection) once per step, every input matrix `W_ih` once (the input
    /// projection is one GEMM over all steps), per layer and direction; f32.
    pub fn weight_traffic_bytes(&self) -> f64 {
        let c = self.config();
        let (h, ho, p) = (
            self.hidden_size as f64,
            c.h_out() as f64,
            self.proj_size as f64,
        );
        let t = self.seq_len as f64;
        let mut total = 0.0;
        for layer in 0..self.num_layers {
            let i = c.layer_input_size(layer) as f64;
            let per_step = 4.0 * (4.0 * h * ho + p * h);
            total += c.num_directions() as f64 * (t * per_step + 4.0 * 4.0 * h * i);
        }
        total
    }

    /// The working set re-read every step: the recurrent weights of one layer and direction
    /// (`W_hh`, plus `W_hr` with a projection), in bytes.
    pub fn recurrent_bytes(&self) -> usize {
        let ho = self.config().h_out();
        4 * (4 * self.hidden_size * ho + self.proj_size * self.hidden_size)
    }
}

/// A built-in shape (`&'static str` so the grid can be a constant).
#[derive(Clone, Copy, Debug)]
struct BuiltinShape {
    name: &'static str,
    seq_len: usize,
    batch: usize,
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
    bidirectional: bool,
}

impl BuiltinShape {
    fn to_shape(self) -> Shape {
        Shape {
            name: self.name.to_string(),
            seq_len: self.seq_len,
            batch: self.batch,
            input_size: self.input_size,
            hidden_size: self.hidden_size,
            num_layers: self.num_layers,
            bidirectional: self.bidirectional,
            proj_size: 0,
            train: true,
        }
    }
}

/// The real workloads of the performance notes: streaming, server batches, a CRNN BiLSTM,
/// an acoustic model, windowed time series and one real-time step.
const BUILTIN: &[BuiltinShape] = &[
    Shape::builtin("stream-small", 100, 1, 256, 256, 1, false),
    Shape::builtin("stream-large", 100, 1, 1024, 1024, 1, false),
    Shape::builtin("batch-mid", 100, 32, 256, 256, 1, false),
    Shape::builtin("batch-large", 50, 64, 512, 512, 1, false),
    Shape::builtin("crnn-ocr", 64, 32, 512, 256, 2, true),
    Shape::builtin("speech", 200, 16, 80, 320, 3, true),
    Shape::builtin("timeseries-window", 6, 100, 23, 256, 1, false),
    Shape::builtin("tiny-latency", 1, 1, 64, 64, 1, false),
];

/// The shapes of `--quick`: one of each kind that runs in well under a second.
const QUICK: &[&str] = &[
    "stream-small",
    "batch-mid",
    "timeseries-window",
    "tiny-latency",
];

/// The built-in grid (or its quick subset).
pub fn builtin(quick: bool) -> Vec<Shape> {
    BUILTIN
        .iter()
        .filter(|s| !quick || QUICK.contains(&s.name))
        .map(|s| s.to_shape())
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GridFile {
    shape: Vec<Shape>,
}

/// Reads and checks a grid file; every error is one line naming the file.
pub fn load(path: &Path) -> Result<Vec<Shape>> {
    let err = |reason: String| ReportError::Grid {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse(&text).map_err(err)
}

/// Parses and checks the text of a grid file.
pub fn parse(text: &str) -> std::result::Result<Vec<Shape>, String> {
    let grid: GridFile = toml::from_str(text).map_err(|e| {
        // toml's message spans several lines (a source excerpt); keep the position and the
        // reason.
        let reason = e.message().trim().to_string();
        match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}: {reason}")
            }
            None => reason,
        }
    })?;
    if grid.shape.is_empty() {
        return Err("no [[shape]] in the grid".to_string());
    }
    for (k, s) in grid.shape.iter().enumerate() {
        let at = format!("shape {} (`{}`)", k + 1, s.name);
        if s.name.trim().is_empty() {
            return Err(format!("shape {}: empty name", k + 1));
        }
        if s.name.chars().any(|c| c.is_control() || c == '|') {
            return Err(format!(
                "{at}: names may not hold `|` or control characters"
            ));
        }
        if grid.shape[..k].iter().any(|o| o.name == s.name) {
            return Err(format!("{at}: the name is used twice"));
        }
        for (what, v) in [
            ("seq_len", s.seq_len),
            ("batch", s.batch),
            ("input_size", s.input_size),
            ("hidden_size", s.hidden_size),
            ("num_layers", s.num_layers),
        ] {
            if v == 0 {
                return Err(format!("{at}: {what} must be at least 1"));
            }
        }
        s.config().validate().map_err(|e| format!("{at}: {e}"))?;
        // Every buffer of one call must be addressable (the engines check again, fallibly).
        let sizes = [
            lstm::engine::checked_numel(&[s.seq_len, s.batch, s.input_size]),
            lstm::engine::checked_numel(&[s.seq_len, s.batch, 4 * s.hidden_size, s.num_layers]),
        ];
        if sizes.iter().any(|n| n.is_none_or(|n| n > (1 << 34))) {
            return Err(format!(
                "{at}: too large to run (T·B·I or T·B·4H·L over 2^34)"
            ));
        }
    }
    Ok(grid.shape)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn builtin_grid_matches_the_notes() {
        let grid = builtin(false);
        assert_eq!(grid.len(), 8);
        let speech = grid.iter().find(|s| s.name == "speech").unwrap();
        // Σ 8·T·B·H·(I_layer + H): 80 then 640 inputs, both directions.
        let expect = 2.0 * 8.0 * 200.0 * 16.0 * 320.0 * ((80.0 + 320.0) + 2.0 * (640.0 + 320.0));
        assert_eq!(speech.forward_flops(), expect);
        let small = grid.iter().find(|s| s.name == "stream-small").unwrap();
        assert_eq!(small.recurrent_bytes(), 16 * 256 * 256);
        assert_eq!(
            small.weight_traffic_bytes(),
            100.0 * 16.0 * 256.0 * 256.0 + 16.0 * 256.0 * 256.0
        );
        assert_eq!(builtin(true).len(), QUICK.len());
    }

    #[test]
    fn grid_file_parses_with_defaults() {
        let g = parse(
            "[[shape]]\nname = \"a\"\nseq_len = 2\nbatch = 3\ninput_size = 4\nhidden_size = 5\n\
             [[shape]]\nname = \"b\"\nseq_len = 1\nbatch = 1\ninput_size = 1\nhidden_size = 2\n\
             num_layers = 2\nbidirectional = true\nproj_size = 1\ntrain = false\n",
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(
            (g[0].num_layers, g[0].bidirectional, g[0].train),
            (1, false, true)
        );
        assert_eq!((g[1].proj_size, g[1].train), (1, false));
    }

    #[test]
    fn grid_file_errors_are_one_line() {
        for (text, want) in [
            ("", "missing field `shape`"),
            ("shape = []", "no [[shape]]"),
            ("[[shape]]\nname = \"a\"\n", "missing field"),
            (
                "[[shape]]\nname=\"a\"\nseq_len=1\nbatch=1\ninput_size=1\nhidden_size=1\nlayers=2\n",
                "unknown field `layers`",
            ),
            (
                "[[shape]]\nname=\"a\"\nseq_len=0\nbatch=1\ninput_size=1\nhidden_size=1\n",
                "seq_len must be at least 1",
            ),
            (
                "[[shape]]\nname=\"a\"\nseq_len=1\nbatch=1\ninput_size=1\nhidden_size=-1\n",
                "line 6",
            ),
            (
                "[[shape]]\nname=\"a\"\nseq_len=1\nbatch=1\ninput_size=1\nhidden_size=1\n\
                 [[shape]]\nname=\"a\"\nseq_len=1\nbatch=1\ninput_size=1\nhidden_size=1\n",
                "used twice",
            ),
            (
                "[[shape]]\nname=\"a\"\nseq_len=1\nbatch=1\ninput_size=1\nhidden_size=2\nproj_size=2\n",
                "proj_size",
            ),
            (
                "[[shape]]\nname=\"a\"\nseq_len=100000\nbatch=100000\ninput_size=100000\nhidden_size=1\n",
                "too large",
            ),
            ("not toml at all", "line 1"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
