//! bf16 model directories (`gp-lite quantize --precision bf16`: the encoder's dense weights and
//! word embeddings in bf16) that load with no flag, score within bf16's rounding of f32, and are
//! refused when they lie about their dtypes or hold non-finite weights.

use std::path::Path;

use safetensors::Dtype;

use crate::common::cli::{json_file, json_lines, ok, run, run_stdin_with_kernel, s, succeeded, train_args};
use crate::common::{copy_dir, dev_file, TempDir};
use crate::quantize::{max_diff, rewrite, scores, scores_in, TEXTS};

#[test]
fn a_bf16_directory_loads_with_no_flag_and_scores_near_f32() {
    let dir = TempDir::new("bf16");
    let (f32_dir, bf16_dir) = (dir.join("f32"), dir.join("bf16"));
    let dev = dev_file();
    let mut args = train_args(&dev, None, &f32_dir, "1");
    args.extend(["--batch-size", "16", "--max-len", "64"]);
    ok(&args);
    ok(&[
        "quantize",
        "--model",
        s(&f32_dir),
        "--out",
        s(&bf16_dir),
        "--precision",
        "bf16",
    ]);
    assert_eq!(json_file(&bf16_dir.join("config.json"))["precision"], "bf16");

    // BF16 tensors: the encoder's matrices and word embeddings, no scales; the rest F32.
    let bytes = std::fs::read(bf16_dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (mut bf16, mut other) = (Vec::new(), Vec::new());
    for (n, t) in st.tensors() {
        match t.dtype() {
            Dtype::BF16 => bf16.push(n),
            Dtype::F32 => other.push(n),
            d => panic!("{n}: {d:?}"),
        }
    }
    for want in [
        "word_embeddings.weight",
        "attention.self.query.weight",
        "intermediate.dense.weight",
    ] {
        assert!(bf16.iter().any(|n| n.ends_with(want)), "{want}: {bf16:?}");
    }
    assert!(!bf16
        .iter()
        .any(|n| n.starts_with("head.") || n.contains("position") || n.contains("LayerNorm")));
    assert!(other.iter().any(|n| n.starts_with("head.")));
    assert!(!other.iter().any(|n| n.ends_with("_scale")), "{other:?}");
    let len = |d: &Path| std::fs::metadata(d.join("model.safetensors")).unwrap().len();
    assert!(
        len(&bf16_dir) < len(&f32_dir),
        "{} vs {}",
        len(&bf16_dir),
        len(&f32_dir)
    );

    // Scores: off f32 by bf16's rounding (8 significant bits), not more; the directory with no
    // flag runs in bf16 (the flag changes nothing) and its word embeddings are bf16 too.
    let f32_scores = scores(&f32_dir, &[]);
    let at_load = scores(&f32_dir, &["--precision", "bf16"]);
    let from_file = scores(&bf16_dir, &[]);
    assert_eq!(scores(&bf16_dir, &["--precision", "bf16"]), from_file);
    let spread = f32_scores.iter().fold(f64::MIN, |m, &x| m.max(x))
        - f32_scores.iter().fold(f64::MAX, |m, &x| m.min(x));
    for (what, other) in [("bf16 file", &from_file), ("bf16 at load", &at_load)] {
        let off = max_diff(&f32_scores, other);
        assert!(
            off > 0.0 && off < 0.01 * spread,
            "{what}: {off} (spread {spread})"
        );
    }
    assert!(
        max_diff(&at_load, &from_file) > 0.0,
        "the word embeddings were not stored in bf16"
    );
    every_kernel_predicts_nearly_the_same(&bf16_dir);

    // Directories that lie: each refused, naming the file and the tensor.
    let lying = |tag: &str, what: &str, spoil: &dyn Fn(&Path)| {
        let d = dir.join(tag);
        copy_dir(&bf16_dir, &d);
        spoil(&d);
        let out = run(&["predict", "--model", s(&d)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tag}: {err}");
        assert!(err.contains("model.safetensors"), "{tag}: no file in {err}");
        assert!(err.contains(what), "{tag}: expected {what:?} in {err}");
    };
    let query = bf16.iter().find(|n| n.ends_with("query.weight")).unwrap().clone();
    let norm = other.iter().find(|n| n.contains("LayerNorm")).unwrap().clone();
    let weights = |d: &Path| d.join("model.safetensors");
    lying(
        "f32-for-bf16",
        &format!("`{query}` is stored as F32, expected BF16"),
        &|d| {
            rewrite(&weights(d), |n, dt, _, b| {
                if n == query {
                    *dt = Dtype::F32;
                    *b = b
                        .chunks_exact(2)
                        .flat_map(|h| {
                            f32::from_bits((u16::from_le_bytes([h[0], h[1]]) as u32) << 16).to_le_bytes()
                        })
                        .collect();
                }
                true
            })
        },
    );
    lying(
        "bf16-for-f32",
        &format!("`{norm}` is stored as BF16, expected F32"),
        &|d| {
            rewrite(&weights(d), |n, dt, _, b| {
                if n == norm {
                    *dt = Dtype::BF16;
                    *b = b.chunks_exact(4).flat_map(|f| [f[2], f[3]]).collect();
                }
                true
            })
        },
    );
    for (tag, bits, shown) in [("nan", 0x7fc0u16, "NaN"), ("inf", 0xff80, "-inf")] {
        lying(tag, &format!("`{query}` holds {shown} at index 3"), &|d| {
            rewrite(&weights(d), |n, _, _, b| {
                if n == query {
                    b[6..8].copy_from_slice(&bits.to_le_bytes());
                }
                true
            })
        });
    }
    lying("shape", &format!("`{query}` has shape"), &|d| {
        rewrite(&weights(d), |n, _, sh, b| {
            if n == query {
                let row = 2 * sh[1];
                b.truncate(b.len() - row);
                sh[0] -= 1;
            }
            true
        })
    });
}

/// `predict` on a bf16 model with every kernel `GP_LITE_KERNEL` can force (those this CPU lacks
/// fall back to the next one down): each kernel sums the same bf16 products in its own order,
/// so the scores agree to f32 rounding, not bit for bit. `bench` names the kernel it ran.
fn every_kernel_predicts_nearly_the_same(model: &Path) {
    let run_with = |kernel: &str, args: &[&str]| run_stdin_with_kernel(args, TEXTS, Some(kernel));
    let predict = ["predict", "--model", s(model), "--nested", "--threshold=-1e9"];
    let bench = [
        "bench",
        "--config",
        "tiny",
        "--threads",
        "1",
        "--steps",
        "1",
        "--precision",
        "bf16",
    ];
    let (mut outputs, mut kernels) = (Vec::new(), Vec::new());
    for kernel in ["portable", "avx512", "amx"] {
        let out = succeeded(&predict, run_with(kernel, &predict));
        // deterministic per kernel: a second run writes the same bytes
        assert_eq!(
            succeeded(&predict, run_with(kernel, &predict)).stdout,
            out.stdout,
            "{kernel}"
        );
        outputs.push(scores_in(&out.stdout));
        let line = json_lines(&succeeded(&bench, run_with(kernel, &bench)).stdout);
        assert_eq!(line[0]["precision"], "bf16");
        kernels.push(line[0]["kernel"].as_str().unwrap().to_string());
    }
    assert_eq!(kernels[0], "portable");
    assert!(
        kernels[1] == "portable" || kernels[1] == "avx512-bf16",
        "{kernels:?}"
    );
    assert!(
        kernels[2] != "amx-bf16" || kernels[1] == "avx512-bf16",
        "{kernels:?}"
    );
    println!("bf16 kernels run: {kernels:?}");
    for (k, o) in kernels.iter().zip(&outputs).skip(1) {
        let off = max_diff(&outputs[0], o);
        assert!(off < 1e-3, "portable vs {k}: {off}");
    }
}
