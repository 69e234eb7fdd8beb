//! Locating `../shared` (data, weights, reference outputs) for tests and benchmarks.
//!
//! The reference directory is `GP_LITE_REFERENCE` when set, else `../shared/reference` beside the
//! crate. When a path is missing, tests skip (saying so by name) unless `GP_LITE_REQUIRE_SHARED=1`,
//! under which they fail.

use std::io::Write;
use std::path::PathBuf;

/// `../shared` beside the crate root.
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared")
}

/// The reference directory (`GP_LITE_REFERENCE`, default `../shared/reference`).
pub fn reference_dir() -> PathBuf {
    std::env::var_os("GP_LITE_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared_dir().join("reference"))
}

fn require() -> bool {
    std::env::var("GP_LITE_REQUIRE_SHARED")
        .map(|v| v == "1")
        .unwrap_or(false)
}

/// Returns `path` if it exists. Otherwise panics under `GP_LITE_REQUIRE_SHARED=1`, or prints a
/// skip line naming `test` and returns `None`.
pub fn require_path(path: PathBuf, test: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    if require() {
        panic!(
            "{test}: {} not found and GP_LITE_REQUIRE_SHARED=1",
            path.display()
        );
    }
    // Written to the stderr handle itself, not through eprintln!, so that the test harness does
    // not capture it: a skipped test says so by name even when it passes.
    let line = format!(
        "SKIPPED {test}: {} not found (set GP_LITE_REQUIRE_SHARED=1 to fail instead)\n",
        path.display()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}

/// A file of the reference directory, or `None` (skip) as in [`require_path`].
pub fn reference_file(name: &str, test: &str) -> Option<PathBuf> {
    require_path(reference_dir().join(name), test)
}

/// A path under `../shared`, or `None` (skip) as in [`require_path`].
pub fn shared_file(rel: &str, test: &str) -> Option<PathBuf> {
    require_path(shared_dir().join(rel), test)
}
