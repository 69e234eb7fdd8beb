//! The gp-lite command line on bad input (a non-zero exit, a message naming the file and line,
//! and no model directory left behind), on damaged model directories, and the bench and
//! bundled-sample commands.

use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::cli::{json_file, ok, run, run_stdin, s, stdout, train_args};
use crate::common::{copy_dir, dev_file, fixture, TempDir, BIN};

/// Fails with a message on stderr starting with `error: {prefix}` and containing `what`.
fn fails(out: Output, prefix: &str, what: &str) {
    fails_with(out, 1, prefix, what)
}

/// Fails with exit code `code` and a message as in [`fails`].
fn fails_with(out: Output, code: i32, prefix: &str, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded; stderr:\n{err}");
    assert_eq!(
        out.status.code(),
        Some(code),
        "a clean failure, not a crash:\n{err}"
    );
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
    let mut args = train_args(&dev, None, out, "1");
    args.extend(["--batch-size", "16", "--max-len", "64"]);
    ok(&args);
}

/// Training arguments on `train` (and dev data `dev`) into `out`: one epoch, short sequences.
fn train_cmd<'a>(train: &'a Path, dev: Option<&'a Path>, out: &'a Path) -> Vec<&'a str> {
    let mut args = train_args(train, dev, out, "1");
    args.extend(["--max-len", "64"]);
    args
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
        fails(run(&train_cmd(&bad, Some(&dev), &out)), &prefix, what);
        assert!(!out.exists(), "{rel}: a model directory was left behind");
        // The same file as dev data.
        fails(run(&train_cmd(&dev, Some(&bad), &out)), &prefix, what);
        assert!(!out.exists(), "{rel} as --dev: a model directory was left behind");
    }
    // A dev label the training data does not have.
    let gpe = fixture("formats/labels-gpe.jsonl");
    fails(
        run(&train_cmd(&dev, Some(&gpe), &out)),
        &format!("{}:1: ", gpe.display()),
        "label `PER` is not one of the known labels",
    );
    assert!(
        !out.exists(),
        "unknown dev label: a model directory was left behind"
    );
    // Unknown --format.
    let mut args = train_cmd(&dev, None, &out);
    args.extend(["--format", "xml"]);
    fails(run(&args), "unknown data format `xml`", "cluener");
    assert!(!out.exists(), "--format xml: a model directory was left behind");
    // A missing training file.
    let missing = dir.join("nope.json");
    fails(
        run(&train_cmd(&missing, None, &out)),
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
        run(&train_cmd(&dev, None, &out)),
        &out.display().to_string(),
        "exists and is not empty (use --overwrite, or --resume",
    );
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    // An empty directory is fine, and --overwrite replaces a non-empty one.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    ok(&train_cmd(&dev, None, &empty));
    assert!(empty.join("model.safetensors").is_file());
    let mut args = train_cmd(&dev, None, &out);
    args.push("--overwrite");
    ok(&args);
    assert!(!out.join("keep.txt").exists() && out.join("model.safetensors").is_file());
    // --resume of a finished run says so.
    let mut args = train_cmd(&dev, None, &out);
    args.push("--resume");
    fails(
        run(&args),
        &out.display().to_string(),
        "already completed 1 of 1 epochs",
    );
}

/// `--checkpoint-every 0` is refused before anything is written, and a resume state inside an
/// epoch that the run's own epoch does not reach (another `--batch-size`) is named as such.
#[test]
fn bad_checkpoint_options_are_refused() {
    let dir = TempDir::new("checkpoint-options");
    let out = dir.join("model");
    let dev = dev_file();
    let mut args = train_cmd(&dev, None, &out);
    args.extend(["--checkpoint-every", "0"]);
    fails(run(&args), "--checkpoint-every = 0", "must be positive");
    assert!(!out.exists());
    // A resume state 40 batches into epoch 2 at batch size 4 (50 batches an epoch), resumed at
    // batch size 16 (13 batches).
    let mut args = train_args(&dev, None, &out, "2");
    args.extend(["--max-len", "64", "--batch-size", "4", "--stop-after", "1"]);
    ok(&args);
    let resume = out.join("resume");
    let mut state = json_file(&resume.join("state.json"));
    state["in_epoch"]["batches"] = 40.into();
    std::fs::write(resume.join("state.json"), state.to_string()).unwrap();
    for f in ["model", "optimizer"] {
        std::fs::rename(
            resume.join(format!("{f}-1.safetensors")),
            resume.join(format!("{f}-1+40.safetensors")),
        )
        .unwrap();
    }
    let mut args = train_args(&dev, None, &out, "2");
    args.extend(["--max-len", "64", "--batch-size", "16", "--resume"]);
    fails(
        run(&args),
        &resume.join("state.json").display().to_string(),
        "trained on 40 batches of epoch 2, but the epoch has 13 here",
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

    // predict --on-error fail: malformed input lines, from stdin and from a file (exit 3).
    let m = s(&good);
    let out = run_stdin(
        &["predict", "--model", m, "--on-error", "fail"],
        "{\"text\": \"北京\"}\n{\"text\": 3}\n",
    );
    fails_with(out, 3, "<stdin>:2: ", "missing string field `text`");
    let input = dir.join("in.txt");
    std::fs::write(&input, "北京欢迎你\n\n{\"text\": \"上海\"\n").unwrap();
    let out = run(&[
        "predict",
        "--model",
        m,
        "--input",
        s(&input),
        "--on-error",
        "fail",
    ]);
    fails_with(out, 3, &format!("{}:3: ", input.display()), "malformed JSON");
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
    let mut args = train_cmd(&dev, Some(&dev), &out);
    args.extend(["--init", s(&full)]);
    ok(&args);
    assert!(out.join("model.safetensors").is_file());
    std::fs::remove_dir_all(&out).unwrap();
    // Without one encoder tensor it is refused, naming the file and the tensor.
    let partial = dir.join("hf-partial");
    let name = "encoder.layer.1.output.dense.bias";
    hf_dir_from(&base, &partial, Some(name));
    let mut args = train_cmd(&dev, Some(&dev), &out);
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
    let mut args = train_cmd(&dev, Some(&dev), &out);
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
    let strict = [&args[..], &["--on-error", "fail"]].concat();
    fails_with(
        run(&strict),
        3,
        &format!("{}:3: ", input.display()),
        "malformed JSON",
    );
    assert!(!output.exists(), "a failed predict left a partial output file");
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.iter().all(|n| !n.to_string_lossy().contains(".tmp-")),
        "temporary file left: {names:?}"
    );
    // Under --on-error record (the default) the bad line is answered in the complete file.
    ok(&args);
    let written = std::fs::read_to_string(&output).unwrap();
    assert_eq!(written.lines().count(), 3, "{written}");
    assert!(
        written.lines().nth(2).unwrap().starts_with("{\"error\":"),
        "{written}"
    );
    std::fs::write(&input, "北京\n上海\n").unwrap();
    ok(&args);
    assert_eq!(std::fs::read_to_string(&output).unwrap().lines().count(), 2);
}

#[test]
fn bench_prints_one_json_line_with_positive_figures() {
    let out = stdout(&ok(&[
        "bench",
        "--config",
        "tiny",
        "--threads",
        "1",
        "--steps",
        "1",
        "--precision",
        "f32",
        "int8",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let int8: Value = serde_json::from_str(lines[1]).unwrap();
    assert_eq!(int8["precision"], "int8");
    assert!(int8["infer_b32_n64_tokens_per_s"].as_f64().unwrap() > 0.0);
    let v: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["precision"], "f32");
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

/// `--precision int8` (encoder products in int8, quantised at load) scores what f32 scores, to
/// the quantisation's error: every span's score within 1% of the spread of f32's scores (0.05%
/// when written).
#[test]
fn int8_precision_scores_close_to_f32() {
    let dir = TempDir::new("int8");
    let model = dir.join("model");
    train_tiny(&model);
    let m = s(&model);
    let texts = "浙商银行企业信贷部叶老桂博士则从另一个角度对五道门槛进行了解读。\n\
                 生生不息CSOL生化狂潮让你填弹狂扫\n";
    let scores = |precision: &str| -> Vec<f64> {
        let args = [
            "predict",
            "--model",
            m,
            "--nested",
            "--threshold=-1e9",
            "--precision",
            precision,
        ];
        let out = crate::common::cli::succeeded(&args, run_stdin(&args, texts));
        let lines = crate::common::cli::json_lines(&out.stdout);
        let ents = lines
            .iter()
            .flat_map(|v| v["entities"].as_array().unwrap().iter());
        // every span of every type, in the same order at both precisions
        ents.map(|e| e["score"].as_f64().unwrap()).collect()
    };
    let (f32_scores, int8_scores) = (scores("f32"), scores("int8"));
    assert!(f32_scores.len() > 1000 && f32_scores.len() == int8_scores.len());
    let (lo, hi) = f32_scores
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let worst = f32_scores
        .iter()
        .zip(&int8_scores)
        .map(|(a, b)| (a - b).abs())
        .fold(0f64, f64::max);
    assert!(worst > 0.0, "int8 gave f32's scores exactly: it did not run");
    assert!(
        worst < 0.01 * (hi - lo),
        "scores differ by up to {worst} (spread {})",
        hi - lo
    );
    let out = run(&["predict", "--model", m, "--precision", "fp16"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("f32, int8 or bf16"));
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
    let record = json_file(&model.join("training.json"));
    assert_eq!(record["train_examples"], 800);
}

/// `gp-lite predict` with `extra` arguments on `input` (bytes): exit code, stdout, stderr.
fn predict_bytes(model: &Path, extra: &[&str], input: &[u8]) -> (Option<i32>, String, String) {
    let mut args = vec!["predict", "--model", s(model), "--threads", "1"];
    args.extend(extra);
    let out = run_stdin(&args, input);
    (
        out.status.code(),
        String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn predict_answers_a_bad_line_in_its_place() {
    let dir = TempDir::new("predict-bad-lines");
    let model = dir.join("model");
    train_tiny(&model);
    // 2: invalid UTF-8, 3: "text" not a string, 4: malformed JSON, 5: no "text"; 6 is empty and
    // 7 ends with CRLF: both are texts.
    let mut input: Vec<u8> = b"\xe5\x8c\x97\xe4\xba\xac\xe6\xac\xa2\xe8\xbf\x8e\xe4\xbd\xa0\n".to_vec();
    input.extend_from_slice(b"ab\xff\xfecd\n{\"text\": 3}\n{\"text\": \"x\n{\"id\": 1}\n\n");
    input.extend_from_slice("上海市\r\n{\"text\": \"张三在杭州\"}".as_bytes());
    let bad = [
        (2, "invalid UTF-8 at byte 2"),
        (3, "missing string field `text`"),
        (4, "malformed JSON"),
        (5, "missing string field `text`"),
    ];
    // The good lines alone, for comparison.
    let (code, clean, _) = predict_bytes(&model, &[], "北京欢迎你\n\n上海市\n张三在杭州\n".as_bytes());
    assert_eq!(code, Some(0));
    let clean: Vec<&str> = clean.lines().collect();
    // Within one chunk and across chunks.
    for batch in ["32", "2", "1"] {
        let (code, out, err) = predict_bytes(&model, &["--batch-size", batch], &input);
        assert_eq!(code, Some(0), "--on-error record exits 0:\n{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines.len(),
            8,
            "batch {batch}: one output line per input line:\n{out}"
        );
        let mut good = clean.iter();
        for (i, line) in lines.iter().enumerate() {
            let v: Value = serde_json::from_str(line).unwrap();
            match bad.iter().find(|(n, _)| *n == i + 1) {
                Some((n, what)) => {
                    let obj = v.as_object().unwrap();
                    assert_eq!(obj.len(), 2, "{line}");
                    assert_eq!(v["line"], *n, "{line}");
                    assert!(v["error"].as_str().unwrap().starts_with(what), "{line}");
                    let msg = format!("error: <stdin>:{n}: {what}");
                    assert!(err.lines().any(|l| l.starts_with(&msg)), "{msg:?} not in:\n{err}");
                }
                None => assert_eq!(line, good.next().unwrap(), "batch {batch}, line {}", i + 1),
            }
        }
        assert!(err.contains("<stdin>: 4 bad line(s)"), "{err}");
    }
    // A byte order mark before the first line is not part of it.
    let (code, out, err) = predict_bytes(&model, &[], "\u{feff}{\"text\": \"张三在杭州\"}\n".as_bytes());
    assert_eq!((code, out.trim_end()), (Some(0), clean[3]), "{err}");
}

#[test]
fn predict_on_error_fail_stops_after_the_lines_before() {
    let dir = TempDir::new("predict-fail");
    let model = dir.join("model");
    train_tiny(&model);
    // Invalid UTF-8 on line 2: line 1 is answered, nothing after line 2 is.
    let (code, out, err) = predict_bytes(&model, &["--on-error", "fail"], b"abc\nx\xffy\ndef\n");
    assert_eq!(code, Some(3), "{err}");
    assert!(err.starts_with("error: <stdin>:2: invalid UTF-8"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].starts_with("{\"entities\":"), "{out}");
    // A bad line 40 in a chunk of 32: 39 lines answered.
    let mut input: String = (1..40).map(|i| format!("第{i}行\n")).collect();
    input.push_str("{\"text\": null}\n上海\n");
    let (code, out, err) = predict_bytes(&model, &["--on-error", "fail"], input.as_bytes());
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.starts_with("error: <stdin>:40: missing string field"),
        "{err}"
    );
    assert_eq!(out.lines().count(), 39, "{out}");
    assert!(out.lines().last().unwrap().contains("第39行"), "{out}");
}

/// A running `gp-lite predict` whose stdout lines arrive on a channel.
struct Filter {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Filter {
    fn start(model: &Path, extra: &[&str]) -> Filter {
        let mut child = Command::new(BIN)
            .args(["predict", "--model", s(model), "--threads", "1"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        Filter {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The next `n` output lines, waiting at most a minute in all.
    fn read(&self, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        (0..n)
            .map(|i| {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                self.lines
                    .recv_timeout(left)
                    .unwrap_or_else(|e| panic!("output line {} of {n} did not come: {e}", i + 1))
            })
            .collect()
    }

    /// Peak resident memory of the process in KiB (VmHWM).
    fn peak_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn finish(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
        self.lines.iter().collect()
    }
}

#[test]
fn predict_flushes_each_chunk_while_the_input_stays_open() {
    let dir = TempDir::new("predict-flush");
    let model = dir.join("model");
    train_tiny(&model);
    let mut f = Filter::start(&model, &["--batch-size", "2"]);
    let mut stdin = f.stdin.take().unwrap();
    stdin
        .write_all("北京\n{\"text\": \"上海\"}\n杭州".as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    // The first chunk is answered before the input ends (a driver may wait for it).
    let first = f.read(2);
    assert!(
        first[0].contains("\"北京\"") && first[1].contains("\"上海\""),
        "{first:?}"
    );
    stdin.write_all("\n{bad\n".as_bytes()).unwrap();
    drop(stdin);
    let rest = f.finish();
    assert_eq!(rest.len(), 2, "{rest:?}");
    assert!(
        rest[0].contains("\"杭州\"") && rest[1].starts_with("{\"error\":"),
        "{rest:?}"
    );
}

#[test]
fn predict_memory_stays_flat_over_a_long_stream() {
    let dir = TempDir::new("predict-memory");
    let model = dir.join("model");
    train_tiny(&model);
    // Lines of 4 KB (a short text and padding the model never sees), so that keeping the input
    // or the output of the whole stream would show as tens of megabytes.
    let pad = "x".repeat(4000);
    let line = format!("{{\"text\": \"北京欢迎你\", \"pad\": \"{pad}\"}}\n");
    let (warmup, long) = (2_000, 20_000);
    // Chunks of 16 lines: both parts of the stream end on a chunk boundary.
    let mut f = Filter::start(&model, &["--batch-size", "16"]);
    let mut stdin = f.stdin.take().unwrap();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let writer = std::thread::spawn(move || {
        for _ in 0..warmup {
            stdin.write_all(line.as_bytes()).unwrap();
        }
        stdin.flush().unwrap();
        wait.recv().unwrap();
        for _ in 0..long {
            stdin.write_all(line.as_bytes()).unwrap();
        }
        stdin.flush().unwrap();
        wait.recv().unwrap();
    });
    f.read(warmup);
    let before = f.peak_kib();
    go.send(()).unwrap();
    let answered = f.read(long);
    assert!(answered.iter().all(|l| l.contains("北京欢迎你")));
    let after = f.peak_kib();
    go.send(()).unwrap();
    writer.join().unwrap();
    assert!(f.finish().is_empty());
    let grown = after.saturating_sub(before);
    println!("peak RSS {before} KiB after {warmup} lines, {after} KiB after {long} more");
    // 20,000 lines of 4 KB are 80 MB; one chunk is 64 KB.
    assert!(grown < 16 * 1024, "peak RSS grew by {grown} KiB over the stream");
}
