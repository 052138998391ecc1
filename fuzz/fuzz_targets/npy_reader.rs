//! Any bytes given to the .npy reader give an array or an error, never a panic or a huge
//! allocation; whatever parses converts without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = lstm::io::parse_npy(data) {
        let _ = array.clone().into_lengths("lengths");
        if let Ok(t) = array.into_f32_tensor("input") {
            assert_eq!(t.len(), t.shape().iter().product::<usize>());
        }
    }
});
