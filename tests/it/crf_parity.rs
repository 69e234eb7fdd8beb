//! Parity of the CRF head's math with an independent PyTorch implementation
//! (../shared/reference/crf.safetensors, README.md there): loss per sequence and its mean, the
//! gradients of the mean loss with respect to emissions and transitions (1e-9 relative, f64), and
//! the Viterbi paths (exact) and scores.

use crate::common::shared::reference_file;
use gp_lite::head::crf_chain::{nll, viterbi};
use gp_lite::tensor_io::read;
use ndarray::{s, Array2, Array3, ArrayD, Ix2, Ix3};
use safetensors::SafeTensors;

const TOL: f64 = 1e-9;

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-30)
}

fn get(st: &SafeTensors, name: &str) -> ArrayD<f64> {
    read::<f64>(st, name).unwrap_or_else(|e| panic!("{e}"))
}

/// An I64 tensor as usizes.
fn ints(st: &SafeTensors, name: &str) -> Vec<usize> {
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
    t.data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect()
}

#[test]
fn crf_matches_reference() {
    let Some(path) = reference_file("crf.safetensors", "crf_matches_reference") else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let e: Array3<f64> = get(&st, "emissions").into_dimensionality::<Ix3>().unwrap();
    let trans: Array2<f64> = get(&st, "transitions").into_dimensionality::<Ix2>().unwrap();
    let (b, n, t) = e.dim();
    let lengths = ints(&st, "lengths");
    let tags = ints(&st, "tags");
    let paths = ints(&st, "viterbi_paths");
    let want_losses = get(&st, "loss_per_sequence");
    let want_de = get(&st, "grad_emissions").into_dimensionality::<Ix3>().unwrap();
    let want_dt = get(&st, "grad_transitions");
    let want_scores = get(&st, "viterbi_scores");

    let scale = 1.0 / b as f64;
    let mut de = Array3::<f64>::zeros((b, n, t));
    let mut dt = Array2::<f64>::zeros((t, t));
    let mut total = 0.0;
    let mut worst = 0.0f64;
    for i in 0..b {
        let l = lengths[i];
        let ei = e.slice(s![i, ..l, ..]);
        let y = &tags[i * n..i * n + l];
        let loss = nll(ei, trans.view(), y, scale, de.slice_mut(s![i, ..l, ..]), &mut dt);
        worst = worst.max(rel(loss, want_losses[i]));
        total += loss;
        let (path, score) = viterbi(ei, trans.view());
        assert_eq!(path, &paths[i * n..i * n + l], "sequence {i}: Viterbi path");
        assert!(paths[i * n + l..(i + 1) * n].iter().all(|&p| p == 0));
        worst = worst.max(rel(score, want_scores[i]));
    }
    worst = worst.max(rel(total / b as f64, get(&st, "loss")[0]));
    for (g, w) in de.iter().zip(want_de.iter()) {
        worst = worst.max(rel(*g, *w));
    }
    for (g, w) in dt.iter().zip(want_dt.iter()) {
        worst = worst.max(rel(*g, *w));
    }
    eprintln!("crf parity: worst relative error {worst:.2e} over {b} sequences of up to {n} tags");
    assert!(worst <= TOL, "worst relative error {worst:e}");
}
