//! Any bytes given to the safetensors loader give a model or an error, never a panic, a
//! huge allocation or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = lstm::Model::from_safetensors_bytes(data, None) {
        // Whatever loads must be internally consistent and runnable.
        let config = model.config().clone();
        assert!(config.validate().is_ok());
        assert_eq!(
            model.weights().named_tensors().iter().map(|(_, _, d)| d.len()).sum::<usize>(),
            config.parameter_count()
        );
    }
});
