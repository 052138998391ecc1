//! Criterion benches for lstm-kernels live in `benches/`; this library target is empty.
