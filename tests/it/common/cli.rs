//! Running the gp-lite binary from the tests, and reading what it writes.

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::BIN;

/// A path as one argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// gp-lite with `args`, whatever its exit status.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// gp-lite with `args` and `input` (text or bytes) on stdin, whatever its exit status. The
/// process may exit before reading all of it: a broken pipe is not the caller's concern.
pub fn run_stdin(args: &[&str], input: impl AsRef<[u8]>) -> Output {
    run_stdin_with_kernel(args, input, None)
}

/// [`run_stdin`] with `GP_LITE_KERNEL` set to `kernel` (and `GP_LITE_MATMUL` unset) when given.
pub fn run_stdin_with_kernel(args: &[&str], input: impl AsRef<[u8]>, kernel: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    if let Some(k) = kernel {
        command.env_remove("GP_LITE_MATMUL").env("GP_LITE_KERNEL", k);
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(input.as_ref());
    child.wait_with_output().unwrap()
}

/// `out`, the output of gp-lite `args`, after asserting that it succeeded (its stderr shown
/// otherwise).
pub fn succeeded(args: &[&str], out: Output) -> Output {
    assert!(
        out.status.success(),
        "gp-lite {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// gp-lite `args`, which must succeed.
pub fn ok(args: &[&str]) -> Output {
    succeeded(args, run(args))
}

/// gp-lite `args` with `input` on stdin, which must succeed; its stdout as JSON lines.
pub fn ok_json_lines(args: &[&str], input: &str) -> Vec<Value> {
    json_lines(&succeeded(args, run_stdin(args, input)).stdout)
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// One JSON value a line.
pub fn json_lines(bytes: &[u8]) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A JSON file (config.json, training.json).
pub fn json_file(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// `train --train TRAIN [--dev DEV] --out OUT --epochs EPOCHS --threads 2 --quiet`: the arguments
/// every short training run of the tests shares; callers add their own.
pub fn train_args<'a>(
    train: &'a Path,
    dev: Option<&'a Path>,
    out: &'a Path,
    epochs: &'a str,
) -> Vec<&'a str> {
    let mut args = vec!["train", "--train", s(train)];
    if let Some(dev) = dev {
        args.extend(["--dev", s(dev)]);
    }
    args.extend(["--out", s(out), "--epochs", epochs, "--threads", "2", "--quiet"]);
    args
}
