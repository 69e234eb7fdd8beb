//! The reader (`--head reader`) end to end: training a tiny reader from scratch on the synthetic
//! fixture (fixtures/mrc), evaluating and answering with it; and the answer counts of the shared
//! CMRC 2018 / DRCD files.

use crate::common::cli::{json_file, ok, ok_json_lines, s, stdout, train_args};
use crate::common::shared::shared_file;
use crate::common::{fixture, TempDir};
use serde_json::Value;

fn eval_json(model: &std::path::Path, data: &std::path::Path) -> Value {
    let args = [
        "eval",
        "--model",
        s(model),
        "--data",
        s(data),
        "--json",
        "--threads",
        "2",
    ];
    serde_json::from_str(stdout(&ok(&args)).trim()).unwrap()
}

#[test]
fn a_tiny_reader_learns_the_fixture_and_answers_with_context_offsets() {
    let dir = TempDir::new("reader");
    let (train, dev) = (fixture("mrc/train.json"), fixture("mrc/dev.json"));
    let model = dir.join("model");
    let mut args = train_args(&train, Some(&dev), &model, "12");
    args.extend([
        "--head",
        "reader",
        "--lr",
        "2e-3",
        "--batch-size",
        "8",
        "--seed",
        "3",
    ]);
    ok(&args);
    let record = json_file(&model.join("training.json"));
    let epochs = record["epochs"].as_array().unwrap();
    let loss = |k: usize| epochs[k]["train_loss"].as_f64().unwrap();
    assert!(
        loss(epochs.len() - 1) < 0.5 * loss(0),
        "loss {} -> {}",
        loss(0),
        loss(epochs.len() - 1)
    );
    assert!(epochs
        .iter()
        .all(|e| e["dev_em"].is_number() && e["dev_f1"].is_number()));
    assert_eq!(
        (
            record["answers_repaired"].as_u64(),
            record["answers_skipped"].as_u64()
        ),
        (Some(1), Some(1))
    );
    let config = json_file(&model.join("config.json"));
    assert_eq!(config["head"]["kind"], "reader");
    assert_eq!(config["head"]["loss"], "ce");
    assert_eq!(config["labels"], serde_json::json!(["answer"]));

    // An untrained reader (one step at a learning rate too small to move it) as the baseline.
    let untrained = dir.join("untrained");
    let mut args = train_args(&train, None, &untrained, "1");
    args.extend([
        "--head",
        "reader",
        "--lr",
        "1e-12",
        "--batch-size",
        "256",
        "--seed",
        "3",
    ]);
    ok(&args);
    let (trained_em, base_em) = (
        eval_json(&model, &train)["em"].as_f64().unwrap(),
        eval_json(&untrained, &train)["em"].as_f64().unwrap(),
    );
    assert!(
        trained_em >= base_em + 40.0,
        "train EM {trained_em} vs untrained {base_em}"
    );
    let dev_scores = eval_json(&model, &dev);
    assert_eq!(dev_scores["questions"], 36);
    assert!(dev_scores["f1"].as_f64().unwrap() >= dev_scores["em"].as_f64().unwrap());

    // predict: JSON lines in, answers with character offsets into the context out.
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&dev).unwrap()).unwrap();
    let mut input = String::new();
    let mut contexts = Vec::new();
    for p in doc["data"][0]["paragraphs"].as_array().unwrap() {
        for qa in p["qas"].as_array().unwrap() {
            let line =
                serde_json::json!({"id": qa["id"], "question": qa["question"], "context": p["context"]});
            input.push_str(&format!("{line}\n"));
            contexts.push(p["context"].as_str().unwrap().to_string());
        }
    }
    input.push_str("{\"id\": \"bad\"}\n");
    let out = ok_json_lines(&["predict", "--model", s(&model), "--threads", "2"], &input);
    assert_eq!(out.len(), contexts.len() + 1);
    for (line, context) in out.iter().zip(&contexts) {
        let (start, end) = (
            line["start"].as_u64().unwrap() as usize,
            line["end"].as_u64().unwrap() as usize,
        );
        let span: String = context.chars().skip(start).take(end - start).collect();
        assert_eq!(line["answer"].as_str().unwrap(), span, "{line}");
        assert!(end > start && end - start <= 64 && line["score"].is_number());
        assert!(line["id"].as_str().unwrap().starts_with('P'));
    }
    assert!(out.last().unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("question"));

    // The C entry point gives predict's answer, in bytes of the context.
    let context = contexts[0].as_str();
    let question = doc["data"][0]["paragraphs"][0]["qas"][0]["question"]
        .as_str()
        .unwrap();
    let (start, end) = ffi_answer(&model, question, context).expect("an answer");
    assert_eq!(&context[start..end], out[0]["answer"].as_str().unwrap());
    // Errors come back as codes: invalid UTF-8 is the input's fault.
    let bad = ffi_code(&model, b"\xff", context.as_bytes());
    assert_eq!(bad, gp_lite::ffi::GP_ERR_INPUT);
}

/// `gp_answer` through the C entry points: the answer's byte offsets, or the error code.
fn ffi_answer(model: &std::path::Path, question: &str, context: &str) -> Result<(usize, usize), i32> {
    ffi_call(model, question.as_bytes(), context.as_bytes())
}

fn ffi_code(model: &std::path::Path, question: &[u8], context: &[u8]) -> i32 {
    ffi_call(model, question, context).unwrap_err()
}

fn ffi_call(model: &std::path::Path, question: &[u8], context: &[u8]) -> Result<(usize, usize), i32> {
    use gp_lite::ffi::answer::{gp_answer, GpAnswer};
    use gp_lite::ffi::*;
    use std::ffi::CString;
    use std::mem::MaybeUninit;
    let dir = CString::new(s(model)).unwrap();
    // SAFETY: the calls follow the header's contract: a live model, texts valid for their
    // lengths, out-slots valid for writes; the model and every error are freed.
    unsafe {
        let mut err = MaybeUninit::<*mut GpError>::uninit();
        let m = gp_model_load_threads(dir.as_ptr(), 2, err.as_mut_ptr());
        assert!(!m.is_null());
        let mut out = MaybeUninit::<GpAnswer>::uninit();
        let r = gp_answer(
            m,
            question.as_ptr().cast(),
            question.len(),
            context.as_ptr().cast(),
            context.len(),
            out.as_mut_ptr(),
            err.as_mut_ptr(),
        );
        // A NULL model is the caller's error.
        let mut err2 = MaybeUninit::<*mut GpError>::uninit();
        let null = gp_answer(
            std::ptr::null(),
            question.as_ptr().cast(),
            question.len(),
            context.as_ptr().cast(),
            context.len(),
            out.as_mut_ptr(),
            err2.as_mut_ptr(),
        );
        assert_eq!(
            (null, gp_error_code(err2.assume_init())),
            (GP_ERR, GP_ERR_ARGUMENT)
        );
        gp_error_free(err2.assume_init());
        gp_model_free(m);
        if r == GP_OK {
            let a = out.assume_init();
            assert!(a.found && a.end > a.start);
            Ok((a.start, a.end))
        } else {
            let code = gp_error_code(err.assume_init());
            gp_error_free(err.assume_init());
            Err(code)
        }
    }
}

#[test]
fn train_is_repeatable_and_the_loss_and_answer_length_are_recorded() {
    let dir = TempDir::new("reader-two");
    let (train, dev) = (fixture("mrc/train.json"), fixture("mrc/dev.json"));
    let model = dir.join("model");
    let args = [
        "train",
        "--train",
        s(&train),
        "--train",
        s(&dev),
        "--out",
        s(&model),
        "--epochs",
        "1",
        "--threads",
        "2",
        "--quiet",
        "--head",
        "reader",
        "--loss",
        "expected-f1",
        "--lambda",
        "0.1",
        "--max-answer-len",
        "12",
    ];
    ok(&args);
    let record = json_file(&model.join("training.json"));
    assert_eq!(record["train_examples"], 120 + 36);
    let head = &json_file(&model.join("config.json"))["head"];
    assert_eq!(
        (
            head["loss"].as_str(),
            head["lambda"].as_f64(),
            head["max_answer_len"].as_u64()
        ),
        (Some("expected-f1"), Some(0.1), Some(12))
    );
}

#[test]
fn shared_mrc_files_read_with_their_answers_repaired_or_skipped() {
    let test = "shared_mrc_files_read_with_their_answers_repaired_or_skipped";
    // (file, questions, answers whose answer_start is wrong per the README, of which repaired):
    // CMRC 2018 dev's 200 are 7 found elsewhere in the context and 193 not in it at all.
    for (name, questions, wrong, repaired) in [
        ("drcd_dev.json", 3524, 0, 0),
        ("cmrc2018_trial.json", 1002, 5, 5),
        ("cmrc2018_dev.json", 3219, 200, 7),
    ] {
        let Some(path) = shared_file(&format!("data/mrc/{name}"), test) else {
            return;
        };
        let data = gp_lite::read_dataset(&path, None).unwrap();
        assert_eq!(data.examples.len(), questions, "{name}");
        let a = data.answers.unwrap();
        assert_eq!(
            (a.repaired + a.skipped, a.repaired),
            (wrong, repaired),
            "{name}: {a:?}"
        );
        assert!(data.examples.iter().all(|e| e.question.is_some()));
    }
}

#[test]
fn init_from_a_trained_reader_keeps_its_head_and_refuses_another_shape() {
    let dir = TempDir::new("reader-init");
    let (train, dev) = (fixture("mrc/train.json"), fixture("mrc/dev.json"));
    let first = dir.join("first");
    let mut args = train_args(&train, Some(&dev), &first, "2");
    args.extend(["--head", "reader", "--lr", "2e-3", "--batch-size", "8"]);
    ok(&args);
    let before = eval_json(&first, &dev);
    assert!(before["f1"].as_f64().unwrap() > 0.0, "{before}");
    // Fine-tuning with a step too small to move an f32 weight: if the head were not kept the
    // answers would be a fresh head's.
    let second = dir.join("second");
    let mut args = train_args(&train, None, &second, "1");
    args.extend([
        "--head",
        "reader",
        "--init",
        s(&first),
        "--loss",
        "expected-f1",
        "--lambda",
        "0.1",
        "--lr",
        "1e-30",
    ]);
    args.retain(|a| *a != "--quiet");
    let out = ok(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("its `reader` head are kept"), "{err}");
    assert_eq!(eval_json(&second, &dev), before);
    assert_eq!(
        json_file(&second.join("config.json"))["head"]["loss"].as_str(),
        Some("expected-f1")
    );
    // A head setting that changes its shape cannot take the trained head's weights.
    let third = dir.join("third");
    let mut args = train_args(&train, None, &third, "1");
    args.extend(["--head", "reader", "--init", s(&first), "--head-size", "16"]);
    let out = crate::common::cli::run(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("model.safetensors"), "{err}");
}
