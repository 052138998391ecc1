//! Any bytes given to the ONNX loader give models or errors, never a panic, a huge allocation
//! or a hang; whatever loads is consistent and runs on every engine that accepts it
//! (`lstm_validate::fuzz::onnx_loader`, which the corpus replay test runs too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = lstm_validate::fuzz::onnx_loader(data) {
        panic!("{finding}");
    }
});
