//! Parity of the BERT encoder with HF BertModel (../shared/reference/encoder.safetensors, made
//! from ../shared/models/minilm-l6): hidden states in f32 and f64, the loss
//! `sum(h * loss_projection * attention_mask)` in f64, and the f64 gradients of that loss the
//! reference holds: a sample of minilm's 101 parameter tensors (10 in the current reference: the
//! embeddings' position rows in use, token types and LayerNorm, 4 tensors of layer 0 and 3 of
//! layer 5), every one of which is compared, and the word-embedding rows of the batch's ids (all
//! other rows must be zero). The other tensors' gradients are checked by the gradient checks of
//! each layer and of a whole small encoder (`cargo test --lib`), not against PyTorch.

use crate::common::shared::{reference_file, shared_file};
use gp_lite::bert::checkpoint::{load_config, load_encoder};
use gp_lite::bert::{BertEncoder, EncoderInput};
use gp_lite::param::Params;
use gp_lite::tensor_io::read;
use gp_lite::Scalar;
use ndarray::{s, Array2, ArrayD, Ix2};
use safetensors::SafeTensors;

struct Setup {
    encoder_bytes: Vec<u8>,
    input: EncoderInput,
    mask: Array2<f64>,
}

fn setup(test: &str) -> Option<(Setup, std::path::PathBuf, std::path::PathBuf)> {
    let model = shared_file("models/minilm-l6/model.safetensors", test)?;
    let config = shared_file("models/minilm-l6/config.json", test)?;
    let reference = reference_file("encoder.safetensors", test)?;
    let encoder_bytes = std::fs::read(reference).unwrap();
    let st = SafeTensors::deserialize(&encoder_bytes).unwrap();
    let ids = |name: &str| -> Array2<u32> {
        read::<f64>(&st, name)
            .unwrap()
            .into_dimensionality::<Ix2>()
            .unwrap()
            .mapv(|v| v as u32)
    };
    let mask = read::<f64>(&st, "attention_mask")
        .unwrap()
        .into_dimensionality::<Ix2>()
        .unwrap();
    // Right padding: each mask row is ones then zeros.
    let lengths: Vec<usize> = mask.rows().into_iter().map(|r| r.sum() as usize).collect();
    for (row, &l) in mask.rows().into_iter().zip(&lengths) {
        assert!(
            row.iter().enumerate().all(|(i, &m)| (m == 1.0) == (i < l)),
            "mask is not a prefix"
        );
    }
    let input = EncoderInput {
        input_ids: ids("input_ids"),
        token_type_ids: ids("token_type_ids"),
        lengths,
    };
    Some((
        Setup {
            encoder_bytes,
            input,
            mask,
        },
        model,
        config,
    ))
}

fn load<T: Scalar>(model: &std::path::Path, config: &std::path::Path) -> BertEncoder<T> {
    let cfg = load_config(config).unwrap();
    let (enc, report) = load_encoder::<T>(&cfg, model).unwrap();
    assert!(report.skipped.iter().any(|n| n.contains("pooler")));
    enc
}

/// `[B, n, H]` as `[B*n, H]`.
fn flat(a: ArrayD<f64>) -> Array2<f64> {
    let sh = a.shape().to_vec();
    a.into_shape_with_order((sh[0] * sh[1], sh[2])).unwrap()
}

/// Max |a - b| over the real rows.
fn max_abs_real(a: &Array2<f64>, b: &Array2<f64>, input: &EncoderInput) -> f64 {
    let n = input.width();
    let mut worst = 0.0f64;
    for (t, &l) in input.lengths.iter().enumerate() {
        let rows = s![t * n..t * n + l, ..];
        let d = &a.slice(rows) - &b.slice(rows);
        worst = d.iter().fold(worst, |m, v| m.max(v.abs()));
    }
    worst
}

fn hidden_parity<T: Scalar>(test: &str, reference: &str, tol: f64) {
    let Some((s, model, config)) = setup(test) else {
        return;
    };
    let st = SafeTensors::deserialize(&s.encoder_bytes).unwrap();
    let want = flat(read::<f64>(&st, reference).unwrap());
    let enc = load::<T>(&model, &config);
    let got = enc.encode(&s.input).unwrap().mapv(|v| v.f64());
    assert!(got.iter().all(|v| v.is_finite()));
    let err = max_abs_real(&got, &want, &s.input);
    println!("{test}: max abs error {err:.3e} (tolerance {tol:.0e})");
    assert!(err <= tol, "{test}: max abs error {err:.3e} > {tol:.0e}");
}

#[test]
fn hidden_states_f32_match_hf() {
    hidden_parity::<f32>("hidden_states_f32_match_hf", "last_hidden_state_f32", 1e-4);
}

#[test]
fn hidden_states_f64_match_hf() {
    hidden_parity::<f64>("hidden_states_f64_match_hf", "last_hidden_state_f64", 1e-9);
}

fn max_abs(x: &ArrayD<f64>) -> f64 {
    x.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// Element-wise `|a - r| / max(|r|, floor)` with floor = max(1e-3 · max|r| of the tensor,
/// 1e-9 · `global`, the largest gradient anywhere): tiny entries are compared against their
/// tensor's scale, and tensors that are 0 in exact arithmetic (key biases: softmax ignores a
/// per-row shift; both sides hold ~1e-15 of rounding) against the model's gradient scale.
fn rel_err(got: &ArrayD<f64>, want: &ArrayD<f64>, global: f64) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let floor = (1e-3 * max_abs(want)).max(1e-9 * global);
    got.iter()
        .zip(want)
        .fold(0.0f64, |m, (a, r)| m.max((a - r).abs() / r.abs().max(floor)))
}

#[test]
fn gradients_f64_match_hf() {
    let test = "gradients_f64_match_hf";
    let Some((s, model, config)) = setup(test) else {
        return;
    };
    let st = SafeTensors::deserialize(&s.encoder_bytes).unwrap();
    let mut enc = load::<f64>(&model, &config);
    let (h, cache) = enc
        .forward(&s.input, None::<&mut rand::rngs::mock::StepRng>)
        .unwrap();
    // dL/dh = loss_projection · mask
    let n = s.input.width();
    let mut dh = flat(read::<f64>(&st, "loss_projection").unwrap());
    for (row, mut d) in dh.rows_mut().into_iter().enumerate() {
        d *= s.mask[[row / n, row % n]];
    }
    let loss = (&h * &dh).sum();
    let want_loss = read::<f64>(&st, "loss").unwrap()[[0]];
    let loss_rel = (loss - want_loss).abs() / want_loss.abs();
    println!("{test}: loss {loss} vs {want_loss} (rel {loss_rel:.3e})");
    assert!(loss_rel < 1e-9);
    enc.zero_grad();
    enc.backward(&s.input, &cache, dh.view());
    let mut grads = std::collections::BTreeMap::new();
    enc.visit_mut("", &mut |name, p| {
        grads.insert(name.to_string(), p.grad.to_owned());
    });
    let grad_names: Vec<&String> = st.names().into_iter().filter(|n| n.starts_with("grad")).collect();
    let global = grad_names
        .iter()
        .map(|n| max_abs(&read::<f64>(&st, n).unwrap()))
        .fold(0.0f64, f64::max);
    let mut worst = (0.0f64, String::new());
    let mut checked = 0;
    for name in st.names() {
        let Some(param) = name.strip_prefix("grad.") else {
            continue;
        };
        let want = read::<f64>(&st, name).unwrap();
        let got = match param.strip_suffix("[:n]") {
            Some(p) => grads[p]
                .slice_axis(ndarray::Axis(0), (0..want.shape()[0]).into())
                .to_owned(),
            None => grads[param].clone(),
        };
        let e = rel_err(&got, &want, global);
        println!(
            "{test}: {param}: rel {e:.3e} (max |ref| {:.3e}, max |diff| {:.3e})",
            max_abs(&want),
            max_abs(&(&got - &want))
        );
        checked += 1;
        if e > worst.0 {
            worst = (e, param.to_string());
        }
    }
    // Word-embedding rows: the listed ids, and nothing anywhere else.
    let ids: Vec<usize> = read::<f64>(&st, "grad_word_rows.ids")
        .unwrap()
        .iter()
        .map(|&v| v as usize)
        .collect();
    let want_rows = read::<f64>(&st, "grad_word_rows").unwrap();
    let word = grads["embeddings.word_embeddings.weight"]
        .clone()
        .into_dimensionality::<Ix2>()
        .unwrap();
    let got_rows = word.select(ndarray::Axis(0), &ids).into_dyn();
    let e = rel_err(&got_rows, &want_rows, global);
    println!("{test}: word rows: rel {e:.3e}");
    if e > worst.0 {
        worst = (e, "grad_word_rows".into());
    }
    let mut others = word.clone();
    for &i in &ids {
        others.row_mut(i).fill(0.0);
    }
    assert!(
        others.iter().all(|&v| v == 0.0),
        "gradient in word rows not used by the batch"
    );
    println!(
        "{test}: worst rel {:.3e} at {} ({checked} of {} parameter tensors, and the word rows)",
        worst.0,
        worst.1,
        grads.len()
    );
    // Every gradient the reference holds was compared (each name maps to a parameter, or the
    // lookup above panics), from the embeddings, the first layer and the last.
    let word_rows = grad_names
        .iter()
        .filter(|n| n.starts_with("grad_word_rows"))
        .count();
    assert_eq!(word_rows, 2, "grad_word_rows and its ids");
    assert_eq!(
        checked,
        grad_names.len() - word_rows,
        "reference gradients left unchecked"
    );
    for part in [
        "grad.embeddings.",
        "grad.encoder.layer.0.",
        "grad.encoder.layer.5.",
    ] {
        assert!(
            grad_names.iter().any(|n| n.starts_with(part)),
            "the reference has no gradient under {part}"
        );
    }
    assert!(
        worst.0 <= 1e-6,
        "worst gradient rel error {:.3e} at {}",
        worst.0,
        worst.1
    );
}

#[test]
fn minilm_config_reads() {
    let Some(path) = crate::common::shared::shared_file(
        "models/minilm-l6/config.json",
        "encoder_parity::minilm_config_reads",
    ) else {
        return;
    };
    let c = gp_lite::bert::BertConfig::from_json_file(path).unwrap();
    assert_eq!(
        c,
        gp_lite::bert::BertConfig {
            vocab_size: 30522,
            ..gp_lite::bert::BertConfig::preset("minilm", 30522).unwrap()
        }
    );
}
