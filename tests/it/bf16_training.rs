//! `train --precision bf16`: every product of the training step on bf16 operands (f32 sums,
//! weights and optimizer state), on every kernel `GP_LITE_KERNEL` can force; deterministic per
//! kernel, recorded in training.json, learning as f32 does, and refused where it cannot hold.

use std::path::Path;

use crate::common::cli::{json_file, ok, run, run_stdin_with_kernel, succeeded, train_args};
use crate::common::{dev_file, TempDir};

/// Trains the tiny encoder on the fixture for 3 epochs in `precision` with `kernel` forced
/// (None: the fastest this CPU runs); returns training.json and the model's bytes.
fn train(out: &Path, precision: &str, kernel: Option<&str>) -> (serde_json::Value, Vec<u8>) {
    let dev = dev_file();
    let mut args = train_args(&dev, None, out, "3");
    args.extend(["--batch-size", "16", "--max-len", "64", "--precision", precision]);
    succeeded(&args, run_stdin_with_kernel(&args, "", kernel));
    (
        json_file(&out.join("training.json")),
        std::fs::read(out.join("model.safetensors")).unwrap(),
    )
}

/// The epochs' mean training losses.
fn losses(record: &serde_json::Value) -> Vec<f64> {
    record["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["train_loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn bf16_training_learns_like_f32_on_every_kernel_and_repeats_bit_for_bit() {
    let dir = TempDir::new("bf16-train");
    let (f32_record, f32_model) = train(&dir.join("f32"), "f32", None);
    assert!(
        f32_record.get("precision").is_none(),
        "f32 runs keep training.json as before"
    );
    let f32_losses = losses(&f32_record);
    let mut kernels_seen = Vec::new();
    for kernel in ["portable", "avx512", "amx"] {
        let (record, model) = train(&dir.join(kernel), "bf16", Some(kernel));
        assert_eq!(record["precision"], "bf16");
        let l = losses(&record);
        assert!(l.iter().all(|x| x.is_finite()), "{kernel}: {l:?}");
        assert!(l[2] < 0.8 * l[0], "{kernel}: the loss did not fall: {l:?}");
        // bf16 products, not f32 ones: the weights differ, the learning does not (much)
        assert_ne!(model, f32_model, "{kernel}: bf16 training wrote f32's model");
        for (b, f) in l.iter().zip(&f32_losses) {
            assert!(
                (b - f).abs() < 0.1 * f.abs().max(0.05),
                "{kernel}: {l:?} vs f32 {f32_losses:?}"
            );
        }
        // deterministic per kernel
        let (_, again) = train(&dir.join(&format!("{kernel}-again")), "bf16", Some(kernel));
        assert!(again == model, "{kernel}: a second bf16 run wrote other bytes");
        kernels_seen.push(model);
    }
    println!(
        "bf16 training: f32 losses {f32_losses:?}; kernels giving distinct models: {}",
        {
            let mut k = kernels_seen.clone();
            k.dedup();
            k.len()
        }
    );
}

#[test]
fn int8_training_and_resuming_in_another_precision_are_refused() {
    let dir = TempDir::new("bf16-refuse");
    let dev = dev_file();
    let out = dir.join("m");
    let mut args = train_args(&dev, None, &out, "2");
    args.extend(["--precision", "int8"]);
    let r = run(&args);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(
        err.contains("--precision") && err.contains("f32 or bf16"),
        "{err}"
    );

    // One epoch of two in f32, then --resume asking for bf16: refused, the run left as it was.
    let mut args = train_args(&dev, None, &out, "2");
    args.extend(["--stop-after", "1"]);
    ok(&args);
    let state = std::fs::read(out.join("resume/state.json")).unwrap();
    let mut args = train_args(&dev, None, &out, "2");
    args.extend(["--resume", "--precision", "bf16"]);
    let r = run(&args);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("trained in f32") && err.contains("bf16"), "{err}");
    assert_eq!(std::fs::read(out.join("resume/state.json")).unwrap(), state);
    // and in its own precision it continues
    let mut args = train_args(&dev, None, &out, "2");
    args.push("--resume");
    ok(&args);
    assert_eq!(
        json_file(&out.join("training.json"))["epochs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
