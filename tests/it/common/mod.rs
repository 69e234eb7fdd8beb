//! Helpers shared by the end-to-end test files.
#![allow(dead_code)]

pub mod cli;
pub mod shared;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The gp-lite binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_gp-lite");

/// A committed fixture.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel)
}

/// fixtures/cluener-sample/dev.json.
pub fn dev_file() -> PathBuf {
    fixture("cluener-sample/dev.json")
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gp-lite-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies the files (not the subdirectories) of `src` into `dst`, created if needed.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

/// The Python of `GP_LITE_PYTHON_PACKAGE` (default `python3`) if it imports every one of
/// `modules`; otherwise `None` after printing SKIPPED for `test`, or a panic under
/// `GP_LITE_REQUIRE_PYTHON_PACKAGE=1` (set by .ci/run, which installs them).
pub fn python_with(modules: &str, test: &str) -> Option<PathBuf> {
    let py: PathBuf = std::env::var_os("GP_LITE_PYTHON_PACKAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let importable = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if importable {
        return Some(py);
    }
    assert!(
        std::env::var("GP_LITE_REQUIRE_PYTHON_PACKAGE").as_deref() != Ok("1"),
        "{test}: {} cannot import {modules}, and GP_LITE_REQUIRE_PYTHON_PACKAGE=1",
        py.display()
    );
    eprintln!("SKIPPED {test}: {} cannot import {modules}", py.display());
    None
}
