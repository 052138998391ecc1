//! Any bytes given to the .npy reader give an array or an error, never a panic or a huge
//! allocation; whatever parses converts, and f32 tensors round-trip
//! (`lstm_validate::fuzz::npy_reader`, which the corpus replay test runs too).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = lstm_validate::fuzz::npy_reader(data) {
        panic!("{finding}");
    }
});
