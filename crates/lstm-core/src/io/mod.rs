//! File formats: safetensors `state_dict`s and NumPy `.npy` arrays.
//!
//! Neither reader trusts a size or offset found in a file: every count is checked against the
//! bytes actually present before anything is allocated from it.

mod npy;
mod safetensors;

pub use self::npy::{
    npy_bytes_f32, parse_npy, read_npy, write_npy_f32, write_npy_f32_to, NpyArray, NpyData,
};
pub(crate) use self::safetensors::normalise_prefix;
pub use self::safetensors::{
    load_safetensors, parse_safetensors, save_safetensors, serialize_safetensors, LoadedModel,
    TensorInfo,
};

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{LstmError, Result};

/// Writes `bytes` to `path` without ever leaving a half-written file there: the data goes to a
/// fresh temporary file beside it ([`create_temp_beside`]), is synced to disk, and the
/// temporary is then renamed over `path` (atomic on POSIX file systems). On error the
/// temporary is removed and `path` is untouched.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |file| file.write_all(bytes).map(Ok))
}

/// [`write_file_atomic`] with the contents written by `write` (which may stream them): the
/// outer error of `write` is an I/O error on the file, the inner one a refusal (nothing of
/// either is left behind).
pub(crate) fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<Result<()>>,
) -> Result<()> {
    let io_err = |source| LstmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (tmp, mut file) = create_temp_beside(path).map_err(io_err)?;
    let result = match write(&mut file) {
        Ok(Ok(())) => file
            .sync_all()
            .and_then(|()| {
                drop(file);
                std::fs::rename(&tmp, path)
            })
            .map_err(io_err),
        Ok(Err(refused)) => Err(refused),
        Err(e) => Err(io_err(e)),
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a new, empty temporary file in the same directory as `path` (so that renaming it
/// over `path` is atomic), named `.NAME.PID.tmp` or `.NAME.PID.tmp.N`. It never opens a file
/// that already exists, so concurrent writers and stale temporaries cannot collide.
pub fn create_temp_beside(path: &Path) -> std::io::Result<(PathBuf, File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_string());
    let base = format!(".{name}.{}.tmp", std::process::id());
    let mut last_err = None;
    for attempt in 0..256u32 {
        let candidate = if attempt == 0 {
            path.with_file_name(&base)
        } else {
            path.with_file_name(format!("{base}.{attempt}"))
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(file) => return Ok((candidate, file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no free temporary file name")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("lstm-io-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.bin");
        write_file_atomic(&path, b"first").unwrap();
        // A stale temporary of the same name must not be reused or truncated.
        let (stale, _) = create_temp_beside(&path).unwrap();
        std::fs::write(&stale, b"someone else's").unwrap();
        write_file_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert_eq!(std::fs::read(&stale).unwrap(), b"someone else's");
        std::fs::remove_file(&stale).unwrap();
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(left.len(), 1);
        assert!(write_file_atomic(&dir.join("missing/out.bin"), b"x").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
