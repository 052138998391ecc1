//! Streaming inference: feed a unidirectional LSTM one frame at a time, as a keyword spotter or
//! a real-time controller would, and check that it agrees with the whole-sequence forward.
//!
//! ```text
//! cargo run --release -p lstm --example streaming [-- MODEL.safetensors]
//! ```
//! Without an argument it uses a 2-layer model built in memory.

use lstm::engine::SplitMix64;
use lstm::{EngineKind, LstmConfig, LstmState, LstmWeights, Model, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let model = match std::env::args().nth(1) {
        Some(path) => Model::load(path)?,
        None => Model::from_weights(LstmWeights::random(
            LstmConfig::new(40, 64).with_num_layers(2),
            7,
        )?),
    };
    let config = model.config().clone();
    let engine = model.engine(EngineKind::default())?;

    // Caller-held state, carried from one frame to the next; one output buffer reused per frame.
    let mut state = LstmState::zeros(&config, None)?;
    let mut frame_out = vec![0.0f32; config.h_out()];

    let frames = 50;
    let mut rng = SplitMix64::new(1);
    let signal = rng.fill_f32(frames * config.input_size, 1.0);
    let mut streamed = Vec::with_capacity(frames * config.h_out());
    for frame in signal.chunks_exact(config.input_size) {
        engine.step(frame, &mut state, &mut frame_out)?;
        streamed.extend_from_slice(&frame_out);
    }

    // The same frames as one unbatched sequence [T, I].
    let whole = engine.forward(
        &Tensor::new([frames, config.input_size], signal)?,
        None,
        None,
    )?;
    let max_diff = streamed
        .iter()
        .zip(whole.output.data())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    println!(
        "streamed {frames} frames through a {}-layer LSTM (H = {}): last h[0..4] = {:?}",
        config.num_layers,
        config.hidden_size,
        &frame_out[..4.min(frame_out.len())]
    );
    println!("max |step - forward| over all frames: {max_diff:e}");
    Ok(())
}
