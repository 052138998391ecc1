//! Bytes as a small `nn.LSTM` call: every engine (naive f32, SIMD on each backend the host
//! has) matches the f64 reference under the harness's tolerance, `step` T times equals
//! `forward`, and deliberately invalid calls give `Err` from every engine, never a panic
//! (`lstm_validate::fuzz::differential`, which the corpus replay test runs too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = lstm_validate::fuzz::differential(data) {
        panic!("{finding}");
    }
});
