//! Encoder families (issue 24): small random-weight checkpoints saved by HF transformers
//! (fixtures/encoders, made by benches/encoder_families.py) of BERT, RoBERTa, XLM-RoBERTa, ELECTRA
//! and DistilBERT, each saved under the class and tensor prefix a hub checkpoint of the family
//! has. Per family: hidden states against HF's (computed in float64 from the same f16 weights),
//! the tensors HF saved beside the encoder skipped and nothing else, the names gp-lite writes back
//! equal to HF's, and a run of `gp-lite train` and `predict` from the checkpoint. Configurations of
//! families or settings gp-lite does not compute are refused with the field named.

use crate::common::cli::json_file;
use crate::common::{dev_file, fixture, TempDir, BIN};
use gp_lite::bert::checkpoint::{load_config, load_encoder, save_encoder, CheckpointError};
use gp_lite::bert::config::ConfigError;
use gp_lite::bert::{BertEncoder, EncoderInput};
use gp_lite::tensor_io::read;
use gp_lite::Scalar;
use ndarray::{s, Array2, Ix2, Ix3};
use safetensors::SafeTensors;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const FAMILIES: [&str; 5] = ["bert", "roberta", "xlm-roberta", "electra", "distilbert"];

struct Reference {
    input: EncoderInput,
    /// `[B*n, H]`
    hidden: Array2<f64>,
}

fn reference(family: &str) -> Reference {
    let bytes = std::fs::read(fixture(&format!("encoders/{family}/reference.safetensors"))).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = |name: &str| -> Array2<u32> {
        read::<f64>(&st, name)
            .unwrap()
            .into_dimensionality::<Ix2>()
            .unwrap()
            .mapv(|v| v as u32)
    };
    let mask = ids("attention_mask");
    let lengths = mask.rows().into_iter().map(|r| r.sum() as usize).collect();
    let h = read::<f64>(&st, "last_hidden_state")
        .unwrap()
        .into_dimensionality::<Ix3>()
        .unwrap();
    let (b, n, d) = h.dim();
    Reference {
        input: EncoderInput {
            input_ids: ids("input_ids"),
            token_type_ids: ids("token_type_ids"),
            lengths,
        },
        hidden: h.into_shape_with_order((b * n, d)).unwrap(),
    }
}

fn load<T: Scalar>(family: &str) -> (BertEncoder<T>, Vec<String>) {
    let dir = fixture(&format!("encoders/{family}"));
    let cfg = load_config(&dir.join("config.json")).unwrap();
    let (enc, report) = load_encoder::<T>(&cfg, &dir.join("model.safetensors")).unwrap();
    (enc, report.skipped)
}

/// Largest |gp-lite - HF| over the real (unpadded) rows.
fn worst_real_row_diff(got: &Array2<f64>, r: &Reference) -> f64 {
    let n = r.input.width();
    let mut worst = 0.0f64;
    for (b, &len) in r.input.lengths.iter().enumerate() {
        let a = got.slice(s![b * n..b * n + len, ..]);
        let want = r.hidden.slice(s![b * n..b * n + len, ..]);
        worst = (&a - &want).iter().fold(worst, |m, d| m.max(d.abs()));
    }
    worst
}

#[test]
fn hidden_states_match_hf_for_every_family() {
    for family in FAMILIES {
        let r = reference(family);
        let (enc, skipped) = load::<f64>(family);
        let worst = worst_real_row_diff(&enc.encode(&r.input).unwrap(), &r);
        assert!(worst < 1e-9, "{family} f64: worst |diff| {worst:e}");
        let (enc32, _) = load::<f32>(family);
        let got32 = enc32.encode(&r.input).unwrap().mapv(f64::from);
        let worst32 = worst_real_row_diff(&got32, &r);
        assert!(worst32 < 1e-4, "{family} f32: worst |diff| {worst32:e}");
        // What the families' hub checkpoints carry beside the encoder, and nothing else, is skipped.
        let expected_outside: &[&str] = match family {
            "bert" | "roberta" => &["pooler."],
            "xlm-roberta" => &["classifier."],
            "electra" => &["discriminator_predictions."],
            "distilbert" => &["vocab_"],
            _ => unreachable!(),
        };
        assert!(!skipped.is_empty(), "{family}: nothing skipped");
        for name in &skipped {
            let bare = name
                .split_once('.')
                .filter(|(p, _)| ["roberta", "electra", "distilbert"].contains(p));
            let bare = bare.map_or(name.as_str(), |(_, rest)| rest);
            assert!(
                expected_outside.iter().any(|p| bare.starts_with(p)) || bare.ends_with("position_ids"),
                "{family}: skipped {name}"
            );
        }
    }
}

/// The encoder tensors of an HF file, without the family prefix, the heads HF saved beside them
/// and integer buffers.
fn hf_encoder_names(path: &Path, skipped: &[String]) -> BTreeSet<String> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.names()
        .into_iter()
        .filter(|n| !skipped.iter().any(|s| s == *n))
        .map(|n| {
            ["roberta.", "electra.", "distilbert."]
                .iter()
                .find_map(|p| n.strip_prefix(p))
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

#[test]
fn saved_names_are_the_family_names_hf_loads() {
    let tmp = TempDir::new("families-save");
    for family in FAMILIES {
        let dir = fixture(&format!("encoders/{family}"));
        let (enc, skipped) = load::<f32>(family);
        let path = tmp.join(&format!("{family}.safetensors"));
        save_encoder(&enc, &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let ours: BTreeSet<String> = SafeTensors::deserialize(&bytes)
            .unwrap()
            .names()
            .into_iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            ours,
            hf_encoder_names(&dir.join("model.safetensors"), &skipped),
            "{family}"
        );
        // And it loads back into the same encoder.
        let cfg = enc.config().clone();
        let (back, report) = load_encoder::<f32>(&cfg, &path).unwrap();
        assert!(report.skipped.is_empty());
        let r = reference(family);
        assert_eq!(
            enc.encode(&r.input).unwrap(),
            back.encode(&r.input).unwrap(),
            "{family}"
        );
    }
}

fn write_config(dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> std::path::PathBuf {
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("encoders/roberta/config.json")).unwrap()).unwrap();
    edit(&mut v);
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    path
}

/// A change to a config.json.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn unsupported_families_and_settings_are_refused_by_field() {
    let tmp = TempDir::new("families-refuse");
    let cases: [(&str, Edit, &str); 6] = [
        (
            "unknown model_type",
            Box::new(|v| v["model_type"] = "deberta-v2".into()),
            "field `model_type` = \"deberta-v2\": not an encoder family gp-lite computes",
        ),
        (
            "relative positions",
            Box::new(|v| v["position_embedding_type"] = "relative_key".into()),
            "field `position_embedding_type` = \"relative_key\"",
        ),
        (
            "activation",
            Box::new(|v| v["hidden_act"] = "relu".into()),
            "field `hidden_act` = \"relu\"",
        ),
        (
            "decoder",
            Box::new(|v| v["is_decoder"] = true.into()),
            "field `is_decoder` = true",
        ),
        (
            "architectures without model_type",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("model_type");
                v["architectures"] = serde_json::json!(["DebertaV2Model"]);
            }),
            "field `model_type` = \"(none; architectures[0] = \\\"DebertaV2Model\\\")\"",
        ),
        (
            "sinusoidal DistilBERT",
            Box::new(|v| {
                *v = serde_json::from_slice(
                    &std::fs::read(fixture("encoders/distilbert/config.json")).unwrap(),
                )
                .unwrap();
                v["sinusoidal_pos_embds"] = true.into();
            }),
            "field `sinusoidal_pos_embds` = true",
        ),
    ];
    for (what, edit, want) in cases {
        let path = write_config(&tmp.0, edit);
        let err = load_config(&path).unwrap_err();
        assert!(matches!(err, CheckpointError::Config(_)), "{what}: {err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{what}: {msg}");
        assert!(msg.contains(want), "{what}: {msg}");
    }
    // RoBERTa's positions follow its padding id: max_position_embeddings must leave room.
    let path = write_config(&tmp.0, |v| v["max_position_embeddings"] = 2.into());
    assert!(matches!(
        load_config(&path),
        Err(CheckpointError::Config(ConfigError::Unsupported {
            field: "max_position_embeddings",
            ..
        }))
    ));
}

#[test]
fn xlm_roberta_is_not_read_as_bert() {
    // The defect issue 24 names: an XLM-RoBERTa checkpoint read as BERT (positions from 0) gives
    // other hidden states. Read as BERT on purpose, it is far from HF's; read as what it is, equal.
    let r = reference("xlm-roberta");
    let dir = fixture("encoders/xlm-roberta");
    let mut cfg = load_config(&dir.join("config.json")).unwrap();
    assert_eq!((cfg.model_type.as_str(), cfg.position_offset), ("xlm-roberta", 2));
    cfg.model_type = "bert".into();
    cfg.position_offset = 0;
    // as BERT, its `roberta.` tensors are not the encoder's: refused, not misread
    assert!(load_encoder::<f64>(&cfg, &dir.join("model.safetensors")).is_err());
    let (enc, _) = load::<f64>("xlm-roberta");
    let mut offset0 = enc.clone();
    offset0.embeddings.position_offset = 0;
    assert!(worst_real_row_diff(&offset0.encode(&r.input).unwrap(), &r) > 1e-2);
}

#[test]
fn every_family_trains_and_predicts_from_the_cli() {
    let tmp = TempDir::new("families-cli");
    let (train, dev) = (fixture("cluener-sample/train.json"), dev_file());
    for family in FAMILIES {
        let init = fixture(&format!("encoders/{family}"));
        let out = tmp.join(family);
        let args = [
            "train",
            "--init",
            init.to_str().unwrap(),
            "--train",
            train.to_str().unwrap(),
            "--dev",
            dev.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--epochs",
            "2",
            "--lr",
            "2e-3",
            "--max-len",
            "64",
            "--threads",
            "1",
        ];
        let run = Command::new(BIN).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{family}: {stderr}");
        let config = json_file(&out.join("config.json"));
        assert_eq!(config["encoder"]["model_type"], family, "{family}");
        // Mostly-CJK texts: one token per character, unless the vocabulary does not know the
        // characters (a byte-level BPE's pieces are bytes): then its own subwords.
        let tokenization = if family == "roberta" { "subwords" } else { "chars" };
        assert_eq!(config["tokenization"], tokenization, "{family}");
        let record = json_file(&out.join("training.json"));
        let losses: Vec<f64> = record["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["train_loss"].as_f64().unwrap())
            .collect();
        assert!(losses[1] < losses[0], "{family}: losses {losses:?}");
        // The saved model's encoder tensors are the family's HF names (HF loads them back).
        let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
        let saved: BTreeSet<String> = SafeTensors::deserialize(&bytes)
            .unwrap()
            .names()
            .into_iter()
            .filter(|n| !n.starts_with("head."))
            .map(|n| n.to_string())
            .collect();
        let (_, skipped) = load::<f32>(family);
        assert_eq!(
            saved,
            hf_encoder_names(&init.join("model.safetensors"), &skipped),
            "{family}"
        );
        let predict = Command::new(BIN)
            .args(["predict", "--model", out.to_str().unwrap(), "--threads", "1"])
            .stdin(std::fs::File::open(dev_file()).unwrap())
            .output()
            .unwrap();
        assert!(
            predict.status.success(),
            "{family}: {}",
            String::from_utf8_lossy(&predict.stderr)
        );
        let lines = String::from_utf8(predict.stdout).unwrap();
        assert_eq!(lines.lines().count(), 200, "{family}");
        for line in lines.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["entities"].is_array(), "{family}: {line}");
        }
    }
}
