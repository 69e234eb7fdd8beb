//! The gp-lite command line on bad input (a non-zero exit, a message naming the file and line,
//! and no model directory left behind), on damaged model directories, and the bench and
//! bundled-sample commands.

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

mod common;
use common::{dev_file, fixture, TempDir, BIN};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn run_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The process may exit before reading everything; a broken pipe is not the test's concern.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    child.wait_with_output().unwrap()
}

/// Succeeds; returns stdout.
fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "gp-lite {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Fails with a message on stderr starting with `error: {prefix}` and containing `what`.
fn fails(out: Output, prefix: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded; stderr:\n{err}");
    assert_eq!(out.status.code(), Some(1), "a clean failure, not a crash:\n{err}");
    let line = err.lines().next().unwrap_or("");
    assert!(
        line.starts_with(&format!("error: {prefix}")),
        "expected `error: {prefix}...`, got:\n{err}"
    );
    assert!(line.contains(what), "expected {what:?} in:\n{err}");
}

/// A tiny model trained in a second or so.
fn train_tiny(out: &Path) {
    let dev = dev_file();
    ok(&[
        "train",
        "--train",
        s(&dev),
        "--out",
        s(out),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-len",
        "64",
        "--threads",
        "2",
        "--quiet",
    ]);
}

/// Training arguments on `train` (and dev data `dev`) into `out`.
fn train_cmd<'a>(train: &'a str, dev: Option<&'a str>, out: &'a str) -> Vec<&'a str> {
    let mut a = vec!["train", "--train", train, "--out", out];
    if let Some(d) = dev {
        a.extend(["--dev", d]);
    }
    a.extend(["--epochs", "1", "--max-len", "64", "--threads", "2", "--quiet"]);
    a
}

/// Rewrites a safetensors file without the tensor `drop`.
fn without_tensor(src: &Path, dst: &Path, drop: &str) {
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().filter(|(n, _)| n != drop).collect();
    assert_eq!(kept.len() + 1, st.len(), "{drop} is not in {}", src.display());
    std::fs::write(dst, safetensors::serialize(kept, &None).unwrap()).unwrap();
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn bad_training_data_names_file_and_line_and_leaves_no_model() {
    let dir = TempDir::new("baddata");
    let out = dir.join("model");
    let dev = dev_file();
    // (fixture, line, what the message says)
    let cases = [
        ("bad/malformed.json", 2, "malformed JSON"),
        ("bad/span-outside.json", 2, "outside the text"),
        ("bad/mention-mismatch.json", 2, "is \"北京\", not \"上海\""),
        ("bad/empty.json", 1, "no examples"),
        ("bad/blank.jsonl", 1, "no examples"),
        ("bad/missing-text.jsonl", 1, "missing field `text`"),
        ("bad/start-after-end.jsonl", 1, "start 2 > end 1"),
        ("bad/wrong-type.jsonl", 1, "must be a non-negative integer"),
        ("bad/cmeee-mismatch.json", 3, "not \"ax\""),
        ("bad/bad-tag.txt", 4, "malformed tag `Q-PER`"),
        ("bad/missing-tag.txt", 2, "expected at least two columns"),
    ];
    for (rel, line, what) in cases {
        let bad = fixture(rel);
        let prefix = format!("{}:{line}: ", bad.display());
        fails(run(&train_cmd(s(&bad), Some(s(&dev)), s(&out))), &prefix, what);
        assert!(!out.exists(), "{rel}: a model directory was left behind");
        // The same file as dev data.
        fails(run(&train_cmd(s(&dev), Some(s(&bad)), s(&out))), &prefix, what);
        assert!(!out.exists(), "{rel} as --dev: a model directory was left behind");
    }
    // A dev label the training data does not have.
    let gpe = fixture("formats/labels-gpe.jsonl");
    fails(
        run(&train_cmd(s(&dev), Some(s(&gpe)), s(&out))),
        &format!("{}:1: ", gpe.display()),
        "label `PER` is not one of the known labels",
    );
    assert!(
        !out.exists(),
        "unknown dev label: a model directory was left behind"
    );
    // Unknown --format.
    let mut args = train_cmd(s(&dev), None, s(&out));
    args.extend(["--format", "xml"]);
    fails(run(&args), "unknown data format `xml`", "cluener");
    assert!(!out.exists(), "--format xml: a model directory was left behind");
    // A missing training file.
    let missing = dir.join("nope.json");
    fails(
        run(&train_cmd(s(&missing), None, s(&out))),
        &missing.display().to_string(),
        "",
    );
    assert!(!out.exists());
}

#[test]
fn existing_out_is_refused_without_overwrite_or_resume() {
    let dir = TempDir::new("out");
    let out = dir.join("model");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let dev = dev_file();
    fails(
        run(&train_cmd(s(&dev), None, s(&out))),
        &out.display().to_string(),
        "exists and is not empty (use --overwrite, or --resume",
    );
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    // An empty directory is fine, and --overwrite replaces a non-empty one.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    ok(&train_cmd(s(&dev), None, s(&empty)));
    assert!(empty.join("model.safetensors").is_file());
    let mut args = train_cmd(s(&dev), None, s(&out));
    args.push("--overwrite");
    ok(&args);
    assert!(!out.join("keep.txt").exists() && out.join("model.safetensors").is_file());
    // --resume of a finished run says so.
    let mut args = train_cmd(s(&dev), None, s(&out));
    args.push("--resume");
    fails(
        run(&args),
        &out.display().to_string(),
        "already completed 1 of 1 epochs",
    );
}

#[test]
fn damaged_model_directories_and_bad_inputs_are_reported() {
    let dir = TempDir::new("modeldir");
    let good = dir.join("good");
    train_tiny(&good);
    let dev = dev_file();
    let eval = |m: &Path| run(&["eval", "--model", s(m), "--data", s(&dev), "--threads", "2"]);
    let predict = |m: &Path| run_stdin(&["predict", "--model", s(m), "--threads", "2"], "北京\n");
    ok(&["eval", "--model", s(&good), "--data", s(&dev), "--threads", "2"]);

    // No such directory.
    let missing = dir.join("missing");
    fails(eval(&missing), &missing.display().to_string(), "not a directory");
    fails(
        predict(&missing),
        &missing.display().to_string(),
        "not a directory",
    );

    // A tensor missing from model.safetensors.
    let no_bias = dir.join("no-bias");
    copy_dir(&good, &no_bias);
    let weights = no_bias.join("model.safetensors");
    without_tensor(&good.join("model.safetensors"), &weights, "head.dense.bias");
    let prefix = format!("{}: ", weights.display());
    fails(eval(&no_bias), &prefix, "tensor `head.dense.bias` is missing");
    fails(predict(&no_bias), &prefix, "tensor `head.dense.bias` is missing");

    // A truncated model.safetensors.
    let truncated = dir.join("truncated");
    copy_dir(&good, &truncated);
    let weights = truncated.join("model.safetensors");
    std::fs::write(
        &weights,
        &std::fs::read(good.join("model.safetensors")).unwrap()[..1000],
    )
    .unwrap();
    fails(
        eval(&truncated),
        &format!("{}: ", weights.display()),
        "safetensors",
    );
    fails(
        predict(&truncated),
        &format!("{}: ", weights.display()),
        "safetensors",
    );

    // A corrupt config.json.
    let bad_config = dir.join("bad-config");
    copy_dir(&good, &bad_config);
    let config = bad_config.join("config.json");
    std::fs::write(&config, "{\"labels\": [").unwrap();
    let prefix = format!("{}: ", config.display());
    fails(eval(&bad_config), &prefix, "not a gp-lite model configuration");
    fails(predict(&bad_config), &prefix, "not a gp-lite model configuration");

    // No tokenizer (the directory named once).
    let no_vocab = dir.join("no-vocab");
    copy_dir(&good, &no_vocab);
    std::fs::remove_file(no_vocab.join("vocab.txt")).unwrap();
    let prefix = format!("{}: no tokenizer.json or vocab.txt", no_vocab.display());
    fails(eval(&no_vocab), &prefix, "");
    fails(predict(&no_vocab), &prefix, "");

    // eval: an unknown label, a malformed line, an unknown format.
    let gpe = fixture("formats/labels-gpe.jsonl");
    let out = run(&["eval", "--model", s(&good), "--data", s(&gpe)]);
    fails(
        out,
        &format!("{}:1: ", gpe.display()),
        "label `PER` is not one of the known labels",
    );
    let malformed = fixture("bad/malformed.json");
    let out = run(&["eval", "--model", s(&good), "--data", s(&malformed)]);
    fails(out, &format!("{}:2: ", malformed.display()), "malformed JSON");
    let out = run(&["eval", "--model", s(&good), "--data", s(&dev), "--format", "xml"]);
    fails(out, "unknown data format `xml`", "");

    // predict: malformed input lines, from stdin and from a file.
    let m = s(&good);
    let out = run_stdin(
        &["predict", "--model", m],
        "{\"text\": \"北京\"}\n{\"text\": 3}\n",
    );
    fails(out, "<stdin>:2: ", "missing string field `text`");
    let input = dir.join("in.txt");
    std::fs::write(&input, "北京欢迎你\n\n{\"text\": \"上海\"\n").unwrap();
    let out = run(&["predict", "--model", m, "--input", s(&input)]);
    fails(out, &format!("{}:3: ", input.display()), "malformed JSON");
    let missing_input = dir.join("none.txt");
    let out = run(&["predict", "--model", m, "--input", s(&missing_input)]);
    fails(out, &format!("{}: ", missing_input.display()), "");
}

/// An HF-style encoder directory (config.json, model.safetensors, vocab.txt) from a gp-lite
/// model directory, for --init.
fn hf_dir_from(model: &Path, dst: &Path, drop: Option<&str>) {
    std::fs::create_dir_all(dst).unwrap();
    let config: Value = serde_json::from_slice(&std::fs::read(model.join("config.json")).unwrap()).unwrap();
    std::fs::write(dst.join("config.json"), config["encoder"].to_string()).unwrap();
    std::fs::copy(model.join("vocab.txt"), dst.join("vocab.txt")).unwrap();
    let (src, weights) = (model.join("model.safetensors"), dst.join("model.safetensors"));
    match drop {
        Some(name) => without_tensor(&src, &weights, name),
        None => {
            std::fs::copy(&src, &weights).unwrap();
        }
    }
}

#[test]
fn init_from_a_checkpoint_missing_a_tensor_fails_cleanly() {
    let dir = TempDir::new("init");
    let base = dir.join("base");
    train_tiny(&base);
    let dev = dev_file();
    let out = dir.join("model");
    // The complete encoder fine-tunes.
    let full = dir.join("hf-full");
    hf_dir_from(&base, &full, None);
    let mut args = train_cmd(s(&dev), Some(s(&dev)), s(&out));
    args.extend(["--init", s(&full)]);
    ok(&args);
    assert!(out.join("model.safetensors").is_file());
    std::fs::remove_dir_all(&out).unwrap();
    // Without one encoder tensor it is refused, naming the file and the tensor.
    let partial = dir.join("hf-partial");
    let name = "encoder.layer.1.output.dense.bias";
    hf_dir_from(&base, &partial, Some(name));
    let mut args = train_cmd(s(&dev), Some(s(&dev)), s(&out));
    args.extend(["--init", s(&partial)]);
    let weights = partial.join("model.safetensors");
    fails(
        run(&args),
        &format!("{}: ", weights.display()),
        &format!("tensor `{name}` is missing"),
    );
    assert!(!out.exists(), "--init failure: a model directory was left behind");
    // With --overwrite over an existing model, the failed run leaves that model as it was.
    copy_dir(&base, &out);
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let mut args = train_cmd(s(&dev), Some(s(&dev)), s(&out));
    args.extend(["--init", s(&partial), "--overwrite"]);
    fails(run(&args), &format!("{}: ", weights.display()), "is missing");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before,
        "--overwrite lost the old model"
    );
}

#[test]
fn predict_output_file_is_not_left_half_written() {
    let dir = TempDir::new("predict-out");
    let model = dir.join("model");
    train_tiny(&model);
    let input = dir.join("in.txt");
    std::fs::write(&input, "北京\n{\"text\": \"上海\"}\n{not json\n").unwrap();
    let output = dir.join("out.jsonl");
    let args = [
        "predict",
        "--model",
        s(&model),
        "--input",
        s(&input),
        "--output",
        s(&output),
        "--batch-size",
        "1",
    ];
    fails(run(&args), &format!("{}:3: ", input.display()), "malformed JSON");
    assert!(!output.exists(), "a failed predict left a partial output file");
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.to_string_lossy().contains(".tmp-")),
        "temporary file left: {names:?}"
    );
    std::fs::write(&input, "北京\n上海\n").unwrap();
    ok(&args);
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 2);
}

#[test]
fn bench_prints_one_json_line_with_positive_figures() {
    let out = ok(&["bench", "--config", "tiny", "--threads", "1", "--steps", "1"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["impl"], "gp-lite");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["config"], "tiny");
    assert_eq!(v["threads"], 1);
    for k in [
        "train_step_ms",
        "train_tokens_per_s",
        "infer_b1_n50_ms",
        "infer_b32_n64_tokens_per_s",
    ] {
        let x = v[k].as_f64().unwrap_or_else(|| panic!("`{k}` missing in {v}"));
        assert!(x > 0.0 && x.is_finite(), "{k} = {x}");
    }
    let err = run(&["bench", "--config", "huge", "--threads", "1", "--steps", "1"]);
    fails(err, "unknown config `huge`", "");
}

#[test]
fn train_without_arguments_uses_the_bundled_sample() {
    let dir = TempDir::new("sample");
    let out = Command::new(BIN)
        .args(["train", "--epochs", "1", "--threads", "2", "--quiet"])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l.starts_with("best dev F1 ")), "{stdout}");
    let model = dir.join("gp-lite-sample-model");
    for f in ["config.json", "model.safetensors", "vocab.txt", "training.json"] {
        assert!(model.join(f).is_file(), "{f} missing");
    }
    let record: Value = serde_json::from_slice(&std::fs::read(model.join("training.json")).unwrap()).unwrap();
    assert_eq!(record["train_examples"], 800);
}
