//! `gp-lite quantize`: int8 model directories (the encoder's dense weights and word embeddings
//! in int8 with a scale per row) that load with no flag, score what `--precision int8` scores on
//! the f32 model, and are refused when they lie.

use std::path::Path;

use crate::common::cli::{
    json_file, json_lines, ok, run, run_stdin, run_stdin_with_kernel, s, succeeded, train_args,
};
use crate::common::{copy_dir, dev_file, TempDir};

pub(crate) const TEXTS: &str =
    "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。\n生生不息CSOL生化狂潮让你填弹狂扫\n";

/// Every span's score, in output order (the same spans at every precision: threshold -1e9).
pub(crate) fn scores(model: &Path, extra: &[&str]) -> Vec<f64> {
    let mut args = vec!["predict", "--model", s(model), "--nested", "--threshold=-1e9"];
    args.extend(extra);
    let out = succeeded(&args, run_stdin(&args, TEXTS));
    scores_in(&out.stdout)
}

/// The scores of predict's JSON lines, in output order.
pub(crate) fn scores_in(stdout: &[u8]) -> Vec<f64> {
    let lines = json_lines(stdout);
    let ents = lines
        .iter()
        .flat_map(|v| v["entities"].as_array().unwrap().iter());
    ents.map(|e| e["score"].as_f64().unwrap()).collect()
}

pub(crate) fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// The tensors of a safetensors file, each rewritten by `edit` (name, dtype, shape, bytes).
pub(crate) fn rewrite(
    path: &Path,
    edit: impl Fn(&str, &mut safetensors::Dtype, &mut Vec<usize>, &mut Vec<u8>) -> bool,
) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned = Vec::new();
    for (name, t) in st.tensors() {
        let (mut dtype, mut shape, mut data) = (t.dtype(), t.shape().to_vec(), t.data().to_vec());
        if edit(&name, &mut dtype, &mut shape, &mut data) {
            owned.push((name, dtype, shape, data));
        }
    }
    let views: Vec<_> = owned
        .iter()
        .map(|(n, d, sh, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, sh.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, &None).unwrap()).unwrap();
}

#[test]
fn an_int8_directory_loads_with_no_flag_and_scores_as_int8() {
    let dir = TempDir::new("quantize");
    let (f32_dir, int8_dir, back) = (dir.join("f32"), dir.join("int8"), dir.join("back"));
    let dev = dev_file();
    let mut args = train_args(&dev, None, &f32_dir, "1");
    args.extend(["--batch-size", "16", "--max-len", "64"]);
    ok(&args);
    ok(&["quantize", "--model", s(&f32_dir), "--out", s(&int8_dir)]);
    assert_eq!(json_file(&int8_dir.join("config.json"))["precision"], "int8");
    assert!(json_file(&f32_dir.join("config.json")).get("precision").is_none());

    // Int8 tensors with their scales: the encoder's matrices and word embeddings, not the rest.
    let bytes = std::fs::read(int8_dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let int8: Vec<String> = st
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::I8)
        .map(|(n, _)| n)
        .collect();
    assert!(
        int8.iter().any(|n| n.ends_with("word_embeddings.weight")),
        "{int8:?}"
    );
    assert!(
        int8.iter().any(|n| n.ends_with("attention.self.query.weight")),
        "{int8:?}"
    );
    assert!(
        int8.iter().any(|n| n.ends_with("intermediate.dense.weight")),
        "{int8:?}"
    );
    assert!(!int8
        .iter()
        .any(|n| n.starts_with("head.") || n.contains("position") || n.contains("LayerNorm")));
    for n in &int8 {
        let scale = st.tensor(&format!("{n}_scale")).unwrap();
        assert_eq!(scale.dtype(), safetensors::Dtype::F32);
        assert_eq!(scale.shape(), &st.tensor(n).unwrap().shape()[..1]);
    }
    let len = |d: &Path| std::fs::metadata(d.join("model.safetensors")).unwrap().len();
    // The sample's tiny model keeps a large f32 head beside a small encoder; minilm's file is 27%.
    assert!(
        len(&int8_dir) * 2 < len(&f32_dir),
        "{} vs {}",
        len(&int8_dir),
        len(&f32_dir)
    );

    // Scores: the int8 directory with no flag runs in int8, off f32 by the quantisation's error
    // (its word embeddings too, where --precision int8 on the f32 model keeps them f32).
    let f32_scores = scores(&f32_dir, &[]);
    let at_load = scores(&f32_dir, &["--precision", "int8"]);
    let from_file = scores(&int8_dir, &[]);
    let spread = f32_scores.iter().fold(f64::MIN, |m, &x| m.max(x))
        - f32_scores.iter().fold(f64::MAX, |m, &x| m.min(x));
    for (what, other) in [("int8 file", &from_file), ("int8 at load", &at_load)] {
        let off = max_diff(&f32_scores, other);
        assert!(
            off > 0.0 && off < 0.02 * spread,
            "{what}: {off} (spread {spread})"
        );
    }
    assert!(
        max_diff(&at_load, &from_file) > 0.0,
        "the word embeddings were not stored in int8"
    );
    // Loaded for inference, the int8 directory holds no f32 copy of what it stores in int8 (each
    // layer packed as it is read), and predicts as a model loaded whole in f32 and then packed.
    let loaded = gp_lite::model_dir::load_model::<f32>(&int8_dir).unwrap();
    let enc = &loaded.model.encoder;
    assert_eq!(enc.embeddings.word.weight.value.len(), 0);
    assert!(enc.embeddings.word.vocab() > 0);
    for l in &enc.layers {
        let (a, f) = (&l.attention, &l.ffn);
        for w in [
            &a.query,
            &a.key,
            &a.value,
            &l.attention_output,
            &f.intermediate,
            &f.output,
        ] {
            assert_eq!(w.weight.value.len(), 0);
        }
    }
    let weights = int8_dir.join("model.safetensors");
    let mut whole = gp_lite::model_dir::load_unpacked::<f32>(&int8_dir, &weights).unwrap();
    whole.model.prepack_as(gp_lite::precision::Precision::Int8);
    assert!(!whole.model.encoder.layers[0].ffn.output.weight.value.is_empty());
    let texts: Vec<&str> = TEXTS.lines().collect();
    let opts = gp_lite::predict::PredictOptions {
        threshold: -1e9,
        ..Default::default()
    };
    let mut ws = gp_lite::infer::Workspace::new();
    let (a, b) = (
        loaded.predict(&texts, &opts, &mut ws).unwrap(),
        whole.predict(&texts, &opts, &mut ws).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        // the word embeddings quantised again from their widened values: a scale may move by
        // a rounding
        assert_eq!((x.start, x.end, &x.label), (y.start, y.end, &y.label));
        assert!((x.score - y.score).abs() < 1e-4, "{} vs {}", x.score, y.score);
    }

    // Back to f32: the int8 values written out in f32 score as the int8 directory run in f32,
    // and, run in int8, exactly as the int8 directory (the same values quantise the same).
    ok(&[
        "quantize",
        "--model",
        s(&int8_dir),
        "--out",
        s(&back),
        "--precision",
        "f32",
    ]);
    assert!(json_file(&back.join("config.json")).get("precision").is_none());
    assert_eq!(scores(&back, &[]), scores(&int8_dir, &["--precision", "f32"]));
    assert_eq!(scores(&back, &["--precision", "int8"]), from_file);
    every_kernel_predicts_the_same_bytes(&int8_dir);
    // An existing output directory is refused.
    let out = run(&["quantize", "--model", s(&f32_dir), "--out", s(&int8_dir)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not empty"));

    // Directories that lie: each refused, naming the file and what is wrong.
    let lying = |tag: &str, what: &str, spoil: &dyn Fn(&Path)| {
        let d = dir.join(tag);
        copy_dir(&int8_dir, &d);
        spoil(&d);
        let out = run(&["predict", "--model", s(&d)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tag}: {err}");
        assert!(err.contains(what), "{tag}: expected {what:?} in {err}");
    };
    let query = int8.iter().find(|n| n.ends_with("query.weight")).unwrap().clone();
    lying("nan", "(scales are finite", &|d| {
        rewrite(&d.join("model.safetensors"), |n, _, _, b| {
            if n == format!("{query}_scale") {
                b[..4].copy_from_slice(&f32::NAN.to_le_bytes());
            }
            true
        })
    });
    lying("no-scale", &format!("`{query}_scale` is missing"), &|d| {
        rewrite(&d.join("model.safetensors"), |n, _, _, _| {
            n != format!("{query}_scale")
        })
    });
    lying("short-scale", "scales for", &|d| {
        rewrite(&d.join("model.safetensors"), |n, _, sh, b| {
            if n == format!("{query}_scale") {
                b.truncate(b.len() - 4);
                sh[0] -= 1;
            }
            true
        })
    });
    lying("int4", "config.json", &|d| {
        let p = d.join("config.json");
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("\"int8\"", "\"int4\"");
        std::fs::write(p, text).unwrap();
    });
}

/// `predict` on an int8 model with every kernel `GP_LITE_KERNEL` can force (those this CPU lacks
/// fall back to the next one down): the same output, byte for byte, since every int8 kernel sums
/// the same integers. `bench` names the kernel it ran; a misspelt kernel is refused.
fn every_kernel_predicts_the_same_bytes(model: &Path) {
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
        "int8",
    ];
    let mut outputs = Vec::new();
    let mut kernels = Vec::new();
    for kernel in ["portable", "avx512", "amx"] {
        let out = succeeded(&predict, run_with(kernel, &predict));
        assert!(!out.stdout.is_empty());
        outputs.push(out.stdout);
        let line = json_lines(&succeeded(&bench, run_with(kernel, &bench)).stdout);
        kernels.push(line[0]["kernel"].as_str().unwrap().to_string());
    }
    assert_eq!(kernels[0], "portable");
    assert!(kernels[1] == "portable" || kernels[1] == "vnni", "{kernels:?}");
    assert!(kernels[2] != "amx" || kernels[1] == "vnni", "{kernels:?}");
    println!("int8 kernels run: {kernels:?}");
    // AMX and VNNI: one f32 path around the same int8 sums, so the same bytes.
    assert!(
        outputs[2] == outputs[1],
        "{} predicts other bytes than {}",
        kernels[2],
        kernels[1]
    );
    // Plain loops: the int8 sums are the same, the f32 work around them (attention, GELU,
    // LayerNorm) rounds differently.
    let off = max_diff(&scores_in(&outputs[0]), &scores_in(&outputs[1]));
    assert!(off < 1e-3, "portable vs {}: {off}", kernels[1]);
    let out = run_with("avx1024", &predict);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GP_LITE_KERNEL=avx1024"));
}
