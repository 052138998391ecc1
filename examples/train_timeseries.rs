//! Training: the windowed time-series model that PyTorch tutorials build, trained from Rust.
//!
//! ```text
//! cargo run --release -p lstm --example train_timeseries
//! ```
//!
//! A synthetic multivariate series (23 features: sines of different periods and phases, with
//! noise) is cut into windows of 6 steps; an `nn.LSTM(23, 256)` reads each window and a linear
//! head on the last step's hidden state predicts feature 0 at the next step. The loss is the
//! mean squared error, the optimiser Adam, the gradients `forward_train` +
//! `backward` (the head's by hand). It prints the loss on a fixed held-out set as it falls and
//! fails unless it falls at least 10×.

use lstm::engine::SplitMix64;
use lstm::{
    CellWeights, DynTrainer, EngineKind, EngineOptions, GradOutputs, LstmConfig, LstmWeights,
    Model, Tensor, TrainingTape,
};

const FEATURES: usize = 23;
const WINDOW: usize = 6;
const HIDDEN: usize = 256;
const BATCH: usize = 64;
const STEPS: usize = 200;
const SERIES_LEN: usize = 4000;

/// The series, `[SERIES_LEN, FEATURES]`: feature `f` is a sine of period 8..40 steps and its
/// own phase, plus a little noise.
fn series(rng: &mut SplitMix64) -> Vec<f32> {
    let params: Vec<(f64, f64)> = (0..FEATURES)
        .map(|f| {
            let period = 8.0 + 32.0 * (f as f64 / FEATURES as f64);
            let phase = std::f64::consts::PI * rng.next_signed_unit();
            (2.0 * std::f64::consts::PI / period, phase)
        })
        .collect();
    let mut data = Vec::with_capacity(SERIES_LEN * FEATURES);
    for t in 0..SERIES_LEN {
        for &(omega, phase) in &params {
            let noise = 0.05 * rng.next_signed_unit();
            data.push(((omega * t as f64 + phase).sin() + noise) as f32);
        }
    }
    data
}

/// A batch of windows starting at `starts`: the input `[WINDOW, B, FEATURES]` (sequence
/// first) and the targets (feature 0 at the step after each window).
fn batch(data: &[f32], starts: &[usize]) -> Result<(Tensor<f32>, Vec<f32>), lstm::LstmError> {
    let b = starts.len();
    let mut x = vec![0.0f32; WINDOW * b * FEATURES];
    for (i, &s) in starts.iter().enumerate() {
        for t in 0..WINDOW {
            let src = &data[(s + t) * FEATURES..(s + t + 1) * FEATURES];
            x[(t * b + i) * FEATURES..(t * b + i + 1) * FEATURES].copy_from_slice(src);
        }
    }
    let y = starts
        .iter()
        .map(|&s| data[(s + WINDOW) * FEATURES])
        .collect();
    Ok((Tensor::new([WINDOW, b, FEATURES], x)?, y))
}

/// The linear head on the last hidden state.
struct Head {
    w: Vec<f32>,
    b: f32,
}

impl Head {
    /// Predictions for the `[1, B, H]` hidden states `h_n`.
    fn predict(&self, h_n: &[f32]) -> Vec<f32> {
        h_n.chunks_exact(HIDDEN)
            .map(|h| self.b + h.iter().zip(&self.w).map(|(a, b)| a * b).sum::<f32>())
            .collect()
    }
}

/// Adam over a list of parameter tensors.
struct Adam {
    lr: f32,
    t: i32,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Adam {
    fn new(lr: f32, sizes: &[usize]) -> Self {
        Adam {
            lr,
            t: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        self.t += 1;
        let (c1, c2) = (1.0 - B1.powi(self.t), 1.0 - B2.powi(self.t));
        for (k, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            for (j, (p, &g)) in p.iter_mut().zip(g.iter()).enumerate() {
                let m = &mut self.m[k][j];
                let v = &mut self.v[k][j];
                *m = B1 * *m + (1.0 - B1) * g;
                *v = B2 * *v + (1.0 - B2) * g * g;
                *p -= self.lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
            }
        }
    }
}

/// The tensors of a cell, in a fixed order.
fn cell_tensors(c: &CellWeights<f32>) -> Vec<&[f32]> {
    let mut v: Vec<&[f32]> = vec![&c.w_ih, &c.w_hh];
    v.extend([&c.b_ih, &c.b_hh].into_iter().flatten().map(Vec::as_slice));
    v
}

fn cell_tensors_mut(c: &mut CellWeights<f32>) -> Vec<&mut [f32]> {
    let mut v: Vec<&mut [f32]> = vec![&mut c.w_ih, &mut c.w_hh];
    v.extend(
        [&mut c.b_ih, &mut c.b_hh]
            .into_iter()
            .flatten()
            .map(Vec::as_mut_slice),
    );
    v
}

/// Mean squared error of the model on `(x, y)`.
fn loss(engine: &DynTrainer, head: &Head, x: &Tensor<f32>, y: &[f32]) -> lstm::Result<f32> {
    let out = engine.forward(x, None, None)?;
    let pred = head.predict(out.h_n.data());
    Ok(pred
        .iter()
        .zip(y)
        .map(|(p, t)| (p - t) * (p - t))
        .sum::<f32>()
        / y.len() as f32)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = SplitMix64::new(2024);
    let data = series(&mut rng);
    let windows = SERIES_LEN - WINDOW - 1;
    // The last 500 windows are held out.
    let train_windows = windows - 500;
    let held_out: Vec<usize> = (train_windows..windows).step_by(2).collect();
    let (x_eval, y_eval) = batch(&data, &held_out)?;

    let config = LstmConfig::new(FEATURES, HIDDEN);
    let mut cells = LstmWeights::<f32>::random(config.clone(), 7)?
        .cells()
        .to_vec();
    let k = 1.0 / (HIDDEN as f32).sqrt();
    let mut head = Head {
        w: rng.fill_f32(HIDDEN, k),
        b: 0.0,
    };
    let sizes: Vec<usize> = cell_tensors(&cells[0]).iter().map(|t| t.len()).collect();
    let mut adam_lstm = Adam::new(2e-3, &sizes);
    let mut adam_head = Adam::new(2e-3, &[HIDDEN, 1]);

    let mut tape = TrainingTape::new();
    let trainer = |cells: &[CellWeights<f32>]| -> lstm::Result<DynTrainer> {
        Model::from_weights(LstmWeights::new(config.clone(), cells.to_vec())?)
            .trainer(EngineKind::default(), EngineOptions::default())
    };
    let mut engine = trainer(&cells)?;
    let first = loss(&engine, &head, &x_eval, &y_eval)?;
    println!("step    0: held-out MSE {first:.5}");
    let started = std::time::Instant::now();
    let mut last = first;
    for step in 1..=STEPS {
        let starts: Vec<usize> = (0..BATCH)
            .map(|_| (rng.next_u64() % train_windows as u64) as usize)
            .collect();
        let (x, y) = batch(&data, &starts)?;

        // Forward, recording; the head and the loss.
        let out = engine.forward_train(&x, None, None, &mut tape)?;
        let h_last = out.h_n.data(); // [1, B, H]: the last step's hidden state
        let pred = head.predict(h_last);
        // dL/dpred for L = mean (pred - y)²; the head's gradients; dL/dh_n.
        let d_pred: Vec<f32> = pred
            .iter()
            .zip(&y)
            .map(|(p, t)| 2.0 * (p - t) / BATCH as f32)
            .collect();
        let mut g_w = vec![0.0f32; HIDDEN];
        let mut g_h = vec![0.0f32; BATCH * HIDDEN];
        for (b, &d) in d_pred.iter().enumerate() {
            let h = &h_last[b * HIDDEN..(b + 1) * HIDDEN];
            for j in 0..HIDDEN {
                g_w[j] += d * h[j];
                g_h[b * HIDDEN + j] = d * head.w[j];
            }
        }
        let g_b: f32 = d_pred.iter().sum();

        // Backward through the LSTM: only h_n enters the loss.
        let zeros = Tensor::new(out.output.shape().to_vec(), vec![0.0; out.output.len()])?;
        let g_hn = Tensor::new([1, BATCH, HIDDEN], g_h)?;
        let grads = engine.backward(&tape, &GradOutputs::new(&zeros).with_h_n(&g_hn))?;

        // Adam on every parameter; the engine is rebuilt (repacked) from the new weights.
        let g_cell = grads.params().cells()[0].clone();
        adam_lstm.step(&mut cell_tensors_mut(&mut cells[0]), &cell_tensors(&g_cell));
        let mut hb = [head.b];
        adam_head.step(&mut [&mut head.w, &mut hb], &[&g_w, &[g_b]]);
        head.b = hb[0];
        engine = trainer(&cells)?;

        if step % 25 == 0 {
            last = loss(&engine, &head, &x_eval, &y_eval)?;
            println!("step {step:4}: held-out MSE {last:.5}");
        }
    }
    println!(
        "{STEPS} steps of {BATCH} windows in {:.2} s; held-out MSE {first:.5} -> {last:.5} ({:.0}x lower)",
        started.elapsed().as_secs_f64(),
        first / last
    );
    if last * 10.0 > first {
        return Err(format!(
            "the loss fell only {:.1}x (expected at least 10x)",
            first / last
        )
        .into());
    }
    Ok(())
}
