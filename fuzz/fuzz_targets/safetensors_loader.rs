//! Any bytes given to the safetensors loader give a model or an error, never a panic, a
//! huge allocation or a hang; whatever loads is consistent and runs on every engine
//! (`lstm_validate::fuzz::safetensors_loader`, which the corpus replay test runs too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = lstm_validate::fuzz::safetensors_loader(data) {
        panic!("{finding}");
    }
});
