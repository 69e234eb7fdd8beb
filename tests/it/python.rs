//! The Python package (python/, PyO3) against the real build: its pytest suite (python/tests)
//! trains, loads, predicts and evaluates through `gp_lite` and compares with this build's
//! `gp-lite predict` and `eval` on CLUENER dev lines.
//!
//! Needs a Python where `pip install ./python` and `pip install pytest` were run
//! (`GP_LITE_PYTHON_PACKAGE`, default `python3`). Without one the test prints SKIPPED; with
//! `GP_LITE_REQUIRE_PYTHON_PACKAGE=1` (set by .ci/run, which installs it) it fails instead.

use std::path::Path;
use std::process::Command;

use crate::common::BIN;

#[test]
fn python_package_tests_pass() {
    let Some(py) = crate::common::python_with("gp_lite, pytest", "python_package_tests_pass") else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&py)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "python/tests"])
        .current_dir(root)
        .env("GP_LITE_BIN", BIN)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest failed:\n{log}");
    assert!(log.contains(" passed"), "{log}");
    assert!(!log.contains("skipped"), "a Python test was skipped:\n{log}");
}
