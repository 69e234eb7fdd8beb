//! A model directory replaced by a new run (`train --overwrite`): the old directory is moved
//! aside until the new model is written, so that a run that fails (a bad checkpoint, a full
//! disk) leaves the old model where it was.

use crate::model_dir::ModelDirError;
use std::path::{Path, PathBuf};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelDirError + '_ {
    move |source| ModelDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// True when `dir` exists and holds at least one entry.
pub fn is_nonempty_dir(dir: &Path) -> Result<bool, ModelDirError> {
    if !dir.exists() {
        return Ok(false);
    }
    Ok(std::fs::read_dir(dir).map_err(io_err(dir))?.next().is_some())
}

/// An old model directory moved aside (to `.NAME.replaced-PID` beside it) while a new run writes
/// its own in its place.
#[derive(Debug)]
pub struct Replacement {
    out: PathBuf,
    aside: PathBuf,
}

impl Replacement {
    /// Moves `out` aside.
    pub fn begin(out: &Path) -> Result<Replacement, ModelDirError> {
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let aside = out.with_file_name(format!(".{name}.replaced-{}", std::process::id()));
        std::fs::rename(out, &aside).map_err(io_err(out))?;
        Ok(Replacement {
            out: out.to_path_buf(),
            aside,
        })
    }

    /// The new model is complete: the old one is deleted.
    pub fn commit(self) -> Result<(), ModelDirError> {
        std::fs::remove_dir_all(&self.aside).map_err(io_err(&self.aside))
    }

    /// The run failed: whatever it wrote gives way to the old model, put back unchanged.
    pub fn roll_back(self) -> Result<(), ModelDirError> {
        if self.out.exists() {
            std::fs::remove_dir_all(&self.out).map_err(io_err(&self.out))?;
        }
        std::fs::rename(&self.aside, &self.out).map_err(io_err(&self.out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gp-lite-out-dir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.safetensors"), b"old").unwrap();
        d
    }

    #[test]
    fn roll_back_puts_the_old_model_back_and_commit_removes_it() {
        let d = dir("rollback");
        assert!(is_nonempty_dir(&d).unwrap());
        let r = Replacement::begin(&d).unwrap();
        assert!(!d.exists());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.safetensors"), b"half-written").unwrap();
        r.roll_back().unwrap();
        assert_eq!(std::fs::read(d.join("model.safetensors")).unwrap(), b"old");

        let r = Replacement::begin(&d).unwrap();
        let aside = r.aside.clone();
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("model.safetensors"), b"new").unwrap();
        r.commit().unwrap();
        assert!(!aside.exists());
        assert_eq!(std::fs::read(d.join("model.safetensors")).unwrap(), b"new");
        std::fs::remove_dir_all(&d).unwrap();
        assert!(!is_nonempty_dir(&d).unwrap());
    }
}
