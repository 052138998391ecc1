//! Output files: up-front checks of the paths, and a staged, all-or-nothing writer.
//!
//! A subcommand first checks its output paths ([`check_paths`]), then computes everything,
//! then stages each output in a temporary file beside its destination
//! ([`StagedOutputs::stage`]) and finally renames them all into place
//! ([`StagedOutputs::commit`]). Temporaries are removed on every error path (and when the
//! writer is dropped uncommitted), so no half-written or partial set of outputs is left.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{CliError, CliResult};

/// A file argument: the flag that named it and the path.
pub(crate) type FileArg<'a> = (&'static str, &'a Path);

/// Checks output paths before any work is done: each must name a file (not a directory) in
/// an existing directory, no two outputs may be the same file, and no output may be one of
/// the inputs.
pub(crate) fn check_paths(inputs: &[FileArg<'_>], outputs: &[FileArg<'_>]) -> CliResult {
    let mut seen: Vec<(&'static str, &Path, PathBuf)> = Vec::new();
    for &(flag, path) in outputs {
        check_output_path(flag, path)?;
        let id = identity(path);
        if let Some((other, other_path, _)) = seen.iter().find(|(_, _, o)| *o == id) {
            return Err(CliError::msg(format!(
                "{flag} {}: same file as {other} {}; each output needs its own file",
                path.display(),
                other_path.display()
            )));
        }
        if let Some((input_flag, input_path)) = inputs.iter().find(|(_, p)| identity(p) == id) {
            return Err(CliError::msg(format!(
                "{flag} {}: same file as the input {input_flag} {}; refusing to overwrite an input",
                path.display(),
                input_path.display()
            )));
        }
        seen.push((flag, path, id));
    }
    Ok(())
}

fn check_output_path(flag: &str, path: &Path) -> CliResult {
    let err = |what: String| CliError::msg(format!("{flag} {}: {what}", path.display()));
    let text = path.as_os_str().to_string_lossy();
    if text.is_empty() {
        return Err(CliError::msg(format!("{flag}: empty path")));
    }
    if text.ends_with(std::path::MAIN_SEPARATOR)
        || text.ends_with('/')
        || path.file_name().is_none()
    {
        return Err(err("not a file name (it names a directory)".to_string()));
    }
    let parent = parent_dir(path);
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(err(format!("{} is not a directory", parent.display())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(err(format!(
                "directory {} does not exist",
                parent.display()
            )));
        }
        Err(e) => {
            return Err(err(format!("directory {}: {e}", parent.display())));
        }
    }
    if path.is_dir() {
        return Err(err("is a directory".to_string()));
    }
    Ok(())
}

/// The directory a file path lies in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A path that is equal for two spellings of the same file (as far as the file system can
/// tell): the canonical path when the file exists, else its canonical directory joined with
/// its name, else the path as given.
fn identity(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (std::fs::canonicalize(parent_dir(path)), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// One output staged in a temporary file.
#[derive(Debug)]
struct Staged {
    flag: &'static str,
    dest: PathBuf,
    tmp: PathBuf,
}

/// Outputs written to temporaries, renamed into place all together by
/// [`commit`](Self::commit); dropping the writer uncommitted removes the temporaries.
#[derive(Debug, Default)]
pub(crate) struct StagedOutputs {
    staged: Vec<Staged>,
}

impl StagedOutputs {
    /// An empty writer.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Writes `bytes` to a new temporary file beside `dest`.
    pub(crate) fn stage(&mut self, flag: &'static str, dest: &Path, bytes: &[u8]) -> CliResult {
        self.stage_with(flag, dest, |file| file.write_all(bytes).map(Ok))
    }

    /// Writes a new temporary file beside `dest` with `write` (which may stream its
    /// contents). The outer error of `write` is an I/O error, the inner one a refusal (the
    /// complete message); either way the temporary is removed.
    pub(crate) fn stage_with(
        &mut self,
        flag: &'static str,
        dest: &Path,
        write: impl FnOnce(&mut std::fs::File) -> std::io::Result<Result<(), String>>,
    ) -> CliResult {
        let err = |what: String| CliError::msg(format!("{flag} {}: {what}", dest.display()));
        let (tmp, mut file) = create_temp(dest)
            .map_err(|e| err(format!("cannot create a temporary file beside it: {e}")))?;
        // Registered before writing, so that a partly written temporary is removed too.
        self.staged.push(Staged {
            flag,
            dest: dest.to_path_buf(),
            tmp: tmp.clone(),
        });
        let io_err = |e| {
            err(format!(
                "cannot write temporary file {}: {e}",
                tmp.display()
            ))
        };
        write(&mut file).map_err(io_err)?.map_err(CliError::msg)?;
        file.sync_all().map_err(io_err)
    }

    /// Renames every temporary into place. A file already at a destination is first moved
    /// aside; when any rename fails, every destination is restored to what it was before the
    /// call (the moved-aside files return, new files are removed) and the temporaries are
    /// deleted.
    pub(crate) fn commit(mut self) -> CliResult {
        let staged = std::mem::take(&mut self.staged);
        // (destination, the previous file moved aside, if there was one), for each placed output.
        let mut placed: Vec<(&Path, Option<PathBuf>)> = Vec::new();
        let mut failure = None;
        for s in &staged {
            let backup = match set_aside(&s.dest) {
                Ok(b) => b,
                Err(e) => {
                    failure = Some((s, e));
                    break;
                }
            };
            if let Err(e) = std::fs::rename(&s.tmp, &s.dest) {
                if let Some(b) = &backup {
                    let _ = std::fs::rename(b, &s.dest);
                }
                failure = Some((s, e));
                break;
            }
            placed.push((&s.dest, backup));
        }
        match failure {
            None => {
                for (_, backup) in placed {
                    if let Some(b) = backup {
                        let _ = std::fs::remove_file(b);
                    }
                }
                Ok(())
            }
            Some((s, e)) => {
                for (dest, backup) in placed {
                    match backup {
                        Some(b) => {
                            let _ = std::fs::rename(b, dest);
                        }
                        None => {
                            let _ = std::fs::remove_file(dest);
                        }
                    }
                }
                for pending in &staged {
                    let _ = std::fs::remove_file(&pending.tmp);
                }
                Err(CliError::msg(format!(
                    "{} {}: cannot move the finished file into place: {e}",
                    s.flag,
                    s.dest.display()
                )))
            }
        }
    }
}

/// Moves an existing file at `dest` to a fresh hidden name beside it and returns that name;
/// `None` when nothing is there.
fn set_aside(dest: &Path) -> std::io::Result<Option<PathBuf>> {
    match std::fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
        Ok(_) => {
            let (backup, file) = create_temp(dest)?;
            drop(file);
            // Renaming over the empty placeholder keeps the name ours.
            match std::fs::rename(dest, &backup) {
                Ok(()) => Ok(Some(backup)),
                Err(e) => {
                    let _ = std::fs::remove_file(&backup);
                    Err(e)
                }
            }
        }
    }
}

impl Drop for StagedOutputs {
    fn drop(&mut self) {
        for s in &self.staged {
            let _ = std::fs::remove_file(&s.tmp);
        }
    }
}

/// Creates a fresh temporary file beside `dest` (never one that already exists).
fn create_temp(dest: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    lstm::io::create_temp_beside(dest)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn commit_writes_all() {
        let d = dir();
        let (a, b) = (d.path().join("a.npy"), d.path().join("b.npy"));
        let mut w = StagedOutputs::new();
        w.stage("--output", &a, b"aa").unwrap();
        w.stage("--hn", &b, b"bb").unwrap();
        assert_eq!(names(d.path()).len(), 2); // two temporaries, no destination yet
        assert!(!a.exists() && !b.exists());
        w.commit().unwrap();
        assert_eq!(names(d.path()), vec!["a.npy", "b.npy"]);
        assert_eq!(std::fs::read(&a).unwrap(), b"aa");
    }

    #[test]
    fn drop_removes_temporaries() {
        let d = dir();
        let mut w = StagedOutputs::new();
        w.stage("--output", &d.path().join("a.npy"), b"aa").unwrap();
        drop(w);
        assert!(names(d.path()).is_empty());
    }

    #[test]
    fn failed_rename_rolls_back() {
        let d = dir();
        let a = d.path().join("a.npy");
        let b = d.path().join("b.npy");
        let mut w = StagedOutputs::new();
        w.stage("--output", &a, b"aa").unwrap();
        w.stage("--hn", &b, b"bb").unwrap();
        // A non-empty directory now occupies b's place: its rename fails.
        std::fs::create_dir(&b).unwrap();
        std::fs::write(b.join("x"), b"x").unwrap();
        let e = w.commit().unwrap_err().to_string();
        assert!(e.starts_with("--hn "), "{e}");
        assert_eq!(names(d.path()), vec!["b.npy"]);
    }

    #[test]
    fn failed_commit_restores_existing_outputs() {
        let d = dir();
        let (a, b, c) = (
            d.path().join("a.npy"),
            d.path().join("b.npy"),
            d.path().join("c.npy"),
        );
        std::fs::write(&a, b"old a").unwrap();
        let mut w = StagedOutputs::new();
        w.stage("--output", &a, b"new a").unwrap();
        w.stage("--hn", &b, b"new b").unwrap();
        w.stage("--cn", &c, b"new c").unwrap();
        std::fs::create_dir(&c).unwrap();
        std::fs::write(c.join("x"), b"x").unwrap();
        assert!(w.commit().is_err());
        assert_eq!(std::fs::read(&a).unwrap(), b"old a");
        assert_eq!(names(d.path()), vec!["a.npy", "c.npy"]);
    }

    #[test]
    fn commit_replaces_existing_outputs() {
        let d = dir();
        let a = d.path().join("a.npy");
        std::fs::write(&a, b"old").unwrap();
        let mut w = StagedOutputs::new();
        w.stage("--output", &a, b"new").unwrap();
        w.commit().unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new");
        assert_eq!(names(d.path()), vec!["a.npy"]);
    }

    #[test]
    fn temp_names_never_clobber() {
        let d = dir();
        let a = d.path().join("a.npy");
        let base = d.path().join(format!(".a.npy.{}.tmp", std::process::id()));
        std::fs::write(&base, b"not ours").unwrap();
        let mut w = StagedOutputs::new();
        w.stage("--output", &a, b"aa").unwrap();
        drop(w);
        assert_eq!(std::fs::read(&base).unwrap(), b"not ours");
        assert_eq!(names(d.path()).len(), 1);
    }

    #[test]
    fn path_checks() {
        let d = dir();
        let p = |n: &str| d.path().join(n);
        let (x, y, z) = (p("x.npy"), p("y.npy"), p("z.npy"));
        std::fs::write(&x, b"").unwrap();
        assert!(check_paths(&[("--input", &x)], &[("--output", &y), ("--hn", &z)]).is_ok());
        let same = d.path().join(".").join("y.npy");
        let e = check_paths(&[], &[("--output", &y), ("--hn", &same)]).unwrap_err();
        assert!(e.to_string().contains("same file as --output"), "{e}");
        let e = check_paths(&[("--input", &x)], &[("--output", &x)]).unwrap_err();
        assert!(e.to_string().contains("--input"), "{e}");
        let e = check_paths(&[], &[("--output", &p("missing/y.npy"))]).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
        let e = check_paths(&[], &[("--output", d.path())]).unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
        let e = check_paths(&[], &[("--output", &x.join("y.npy"))]).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
