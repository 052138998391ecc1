//! File formats: safetensors `state_dict`s and NumPy `.npy` arrays.
//!
//! Neither reader trusts a size or offset found in a file: every count is checked against the
//! bytes actually present before anything is allocated from it.

mod npy;
mod safetensors;

pub use self::npy::{npy_bytes_f32, parse_npy, read_npy, write_npy_f32, NpyArray, NpyData};
pub use self::safetensors::{
    load_safetensors, parse_safetensors, save_safetensors, serialize_safetensors, LoadedModel,
    TensorInfo,
};

use std::path::Path;

use crate::error::{LstmError, Result};

/// Writes `bytes` to `path` without ever leaving a half-written file there: the data goes to a
/// temporary file beside it, which is then renamed over `path`.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_path_beside(path);
    let io_err = |source| LstmError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(e)
    })
}

/// A hidden temporary name in the same directory as `path` (so that a rename is atomic).
pub fn temp_path_beside(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}
