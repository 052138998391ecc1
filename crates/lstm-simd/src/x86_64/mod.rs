//! x86-64 backends on `core::arch`, each compiled under its own `#[target_feature]`.

pub(crate) mod avx2;
pub(crate) mod avx512;
