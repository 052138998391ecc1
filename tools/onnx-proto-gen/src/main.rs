//! Regenerates the checked-in prost code of `lstm-onnx` from `onnx.proto`.
//!
//! `protox` compiles the `.proto` in pure Rust (no system `protoc`), `prost-build` writes the
//! Rust types. Run from the repository root:
//!
//! ```sh
//! cargo run --manifest-path tools/onnx-proto-gen/Cargo.toml
//! ```
//!
//! and commit `crates/lstm-onnx/src/proto/onnx.rs`. `onnx.proto` itself is copied verbatim
//! from the `onnx` Python package (`python3 -c "import onnx, os; print(os.path.dirname(onnx.__file__))"`).

use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let proto_dir = root.join("crates/lstm-onnx/proto");
    let out_dir = root.join("crates/lstm-onnx/src/proto");
    std::fs::create_dir_all(&out_dir)?;
    let descriptors = protox::compile([proto_dir.join("onnx.proto")], [&proto_dir])?;
    prost_build::Config::new()
        .out_dir(&out_dir)
        .compile_fds(descriptors)?;
    println!("wrote {}", out_dir.join("onnx.rs").display());
    Ok(())
}
