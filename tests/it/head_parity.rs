//! Parity with the PyTorch reference (../shared/reference, README.md there): the GlobalPointer
//! heads (gp, gp_norope, egp) with the loss, the loss on extreme logits, and AdamW, all in f64.
//!
//! Errors are relative: `|got - want| / max(|want|, FLOOR)`, FLOOR = 1e-30, so only values below
//! 1e-30 (subnormal-range gradients of the extreme-logit file) are compared absolutely.

use crate::common::shared::reference_file;
use gp_lite::head::{Buffer, EfficientGlobalPointer, GlobalPointer, ScoreHead};
use gp_lite::loss::{mcce_dense, mcce_sparse, SpanSet};
use gp_lite::nn::Linear;
use gp_lite::optim::{AdamW, AdamWConfig};
use gp_lite::param::{join, Param, ParamMut, Params};
use gp_lite::span::{Bounds, GoldSpan, MASKED_SCORE};
use gp_lite::tensor_io::read;
use ndarray::{Array1, Array2, Array4, ArrayD, ArrayViewD, Ix1, Ix2, Ix4, IxDyn};
use safetensors::SafeTensors;

const FLOOR: f64 = 1e-30;
const TOL: f64 = 1e-9;

/// The largest relative error of `got` against `want`, element by element; both must have the
/// same number of elements (a zip stops at the shorter).
fn max_rel<'a>(got: impl IntoIterator<Item = &'a f64>, want: impl IntoIterator<Item = &'a f64>) -> f64 {
    let mut worst = 0.0f64;
    let mut count = 0;
    let (mut got, mut want) = (got.into_iter(), want.into_iter());
    for (g, w) in got.by_ref().zip(want.by_ref()) {
        let r = (g - w).abs() / w.abs().max(FLOOR);
        worst = worst.max(if r.is_nan() { f64::INFINITY } else { r });
        count += 1;
    }
    let (extra_got, extra_want) = (got.count(), want.count());
    assert!(
        extra_got == 0 && extra_want == 0,
        "lengths differ: {} computed values, {} reference values",
        count + extra_got,
        count + extra_want
    );
    assert!(count > 0, "nothing compared");
    worst
}

fn load(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn get(st: &SafeTensors, name: &str) -> ArrayD<f64> {
    read::<f64>(st, name).unwrap_or_else(|e| panic!("{e}"))
}

fn get2(st: &SafeTensors, name: &str) -> Array2<f64> {
    get(st, name).into_dimensionality::<Ix2>().unwrap()
}

fn get1(st: &SafeTensors, name: &str) -> Array1<f64> {
    get(st, name).into_dimensionality::<Ix1>().unwrap()
}

/// Inputs of gp_head.safetensors: h `[B*n, H]`, valid `[B, n]` (all real tokens are valid
/// boundaries in the reference), labels `[B, C, n, n]` and the same as gold lists.
struct Inputs {
    h: Array2<f64>,
    n: usize,
    valid: Array2<bool>,
    labels: Array4<bool>,
    gold: Vec<Vec<GoldSpan>>,
}

fn inputs(st: &SafeTensors) -> Inputs {
    let h3 = get(st, "h");
    let (b, n, hid) = (h3.shape()[0], h3.shape()[1], h3.shape()[2]);
    let h = h3
        .into_shape_with_order((b * n, hid))
        .unwrap()
        .into_dimensionality::<Ix2>()
        .unwrap();
    let valid = get2(st, "mask").mapv(|m| m != 0.0);
    let labels = get(st, "labels")
        .into_dimensionality::<Ix4>()
        .unwrap()
        .mapv(|l| l > 0.5);
    let mut gold = vec![Vec::new(); b];
    for ((bi, a, i, j), &l) in labels.indexed_iter() {
        if l {
            gold[bi].push((a, i, j));
        }
    }
    Inputs {
        h,
        n,
        valid,
        labels,
        gold,
    }
}

/// Runs forward, loss (dense and sparse) and backward; checks every reference tensor of `pre`.
fn check_head<H: ScoreHead<f64>>(
    st: &SafeTensors,
    x: &Inputs,
    mut head: H,
    pre: &str,
    grads: &[(&str, &str)],
) {
    let (mut cache, mut scores) = (H::Cache::default(), Buffer::new());
    head.forward_scores(
        x.h.view(),
        x.n,
        Bounds::same(x.valid.view()),
        &mut cache,
        &mut scores,
    );
    let s = scores.view4();
    let want = get(st, &format!("{pre}.logits"))
        .into_dimensionality::<Ix4>()
        .unwrap();
    assert_eq!(s.dim(), want.dim(), "{pre}: logits shape");
    // Valid spans to 1e-9; the excluded ones are the mask constant in both.
    let mut pairs = (Vec::new(), Vec::new());
    for (idx, &w) in want.indexed_iter() {
        let (b, _, i, j) = idx;
        if i <= j && x.valid[[b, i]] && x.valid[[b, j]] {
            pairs.0.push(s[idx]);
            pairs.1.push(w);
        } else {
            assert_eq!(w, MASKED_SCORE, "{pre}: reference masks {idx:?}");
            assert_eq!(s[idx], MASKED_SCORE, "{pre}: masked {idx:?}");
        }
    }
    let e_logits = max_rel(&pairs.0, &pairs.1);

    let mut ds = Array4::zeros(s.dim());
    let loss = mcce_dense(
        s,
        x.labels.view(),
        SpanSet::Valid(Bounds::same(x.valid.view())),
        ds.view_mut(),
    );
    let mut ds_sparse = Array4::zeros(s.dim());
    let loss_sparse = mcce_sparse(
        s,
        &x.gold,
        SpanSet::Valid(Bounds::same(x.valid.view())),
        ds_sparse.view_mut(),
    );
    assert_eq!(loss, loss_sparse, "{pre}: dense and sparse losses differ");
    assert_eq!(ds, ds_sparse, "{pre}: dense and sparse gradients differ");
    let e_loss = max_rel(&[loss], get(st, &format!("{pre}.loss")).iter());

    head.zero_grad();
    let dh = head.backward_scores(x.h.view(), &mut cache, ds.view());
    let want_dh = get(st, &format!("{pre}.grad_h"));
    // The reference is [B, n, H], ours [B*n, H] (the same elements in the same order); zipping
    // tensors of other shapes would compare the shorter's elements only.
    let (b, _, n, _) = s.dim();
    assert_eq!(dh.dim(), (b * n, x.h.ncols()), "{pre}: grad_h shape");
    assert_eq!(
        want_dh.shape(),
        [b, n, x.h.ncols()],
        "{pre}: reference grad_h shape"
    );
    let mut e_grads = vec![("grad_h".to_string(), max_rel(dh.iter(), want_dh.iter()))];
    let mut ours = std::collections::HashMap::new();
    head.visit_mut("", &mut |name, p| {
        ours.insert(name.to_string(), p.grad.to_owned());
    });
    for (our, theirs) in grads {
        let want = get(st, &format!("{pre}.{theirs}"));
        assert_eq!(ours[*our].shape(), want.shape(), "{pre}: {our} shape");
        e_grads.push((theirs.to_string(), max_rel(ours[*our].iter(), want.iter())));
    }
    eprintln!(
        "{pre}: max rel logits {e_logits:.2e}, loss {e_loss:.2e} ({loss}), grads {:?}",
        e_grads
            .iter()
            .map(|(n, e)| format!("{n} {e:.2e}"))
            .collect::<Vec<_>>()
    );
    assert!(e_logits <= TOL, "{pre}: logits rel error {e_logits:e}");
    assert!(e_loss <= TOL, "{pre}: loss rel error {e_loss:e}");
    for (name, e) in e_grads {
        assert!(e <= TOL, "{pre}: {name} rel error {e:e}");
    }
}

fn plain(st: &SafeTensors, pre: &str, num_types: usize, rope: bool) -> GlobalPointer<f64> {
    let w = get2(st, &format!("{pre}.weight"));
    let d = w.nrows() / (2 * num_types);
    let dense = Linear::from_arrays(w, get1(st, &format!("{pre}.bias")));
    GlobalPointer::from_dense(dense, num_types, d, rope)
}

const PLAIN_GRADS: [(&str, &str); 2] = [("dense.weight", "grad_weight"), ("dense.bias", "grad_bias")];

#[test]
fn global_pointer_matches_reference() {
    let Some(path) = reference_file("gp_head.safetensors", "global_pointer_matches_reference") else {
        return;
    };
    let bytes = load(&path);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let x = inputs(&st);
    let c = x.labels.shape()[1];
    check_head(&st, &x, plain(&st, "gp", c, true), "gp", &PLAIN_GRADS);
}

#[test]
fn global_pointer_without_rope_matches_reference() {
    let Some(path) = reference_file(
        "gp_head.safetensors",
        "global_pointer_without_rope_matches_reference",
    ) else {
        return;
    };
    let bytes = load(&path);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let x = inputs(&st);
    let c = x.labels.shape()[1];
    check_head(
        &st,
        &x,
        plain(&st, "gp_norope", c, false),
        "gp_norope",
        &PLAIN_GRADS,
    );
}

#[test]
fn efficient_global_pointer_matches_reference() {
    let Some(path) = reference_file(
        "gp_head.safetensors",
        "efficient_global_pointer_matches_reference",
    ) else {
        return;
    };
    let bytes = load(&path);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let x = inputs(&st);
    let p = Linear::from_arrays(get2(&st, "egp.p_weight"), get1(&st, "egp.p_bias"));
    let c = Linear::from_arrays(get2(&st, "egp.c_weight"), get1(&st, "egp.c_bias"));
    let head = EfficientGlobalPointer::from_dense(p, c, true);
    assert_eq!(head.num_types, x.labels.shape()[1]);
    let grads = [
        ("p_dense.weight", "grad_p_weight"),
        ("p_dense.bias", "grad_p_bias"),
        ("c_dense.weight", "grad_c_weight"),
        ("c_dense.bias", "grad_c_bias"),
    ];
    check_head(&st, &x, head, "egp", &grads);
}

#[test]
fn loss_on_extreme_logits_matches_reference() {
    let Some(path) = reference_file("loss.safetensors", "loss_on_extreme_logits_matches_reference") else {
        return;
    };
    let bytes = load(&path);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let logits = get(&st, "logits").into_dimensionality::<Ix4>().unwrap();
    let labels = get(&st, "labels")
        .into_dimensionality::<Ix4>()
        .unwrap()
        .mapv(|l| l > 0.5);
    let mut gold = vec![Vec::new(); labels.shape()[0]];
    for ((b, a, i, j), &l) in labels.indexed_iter() {
        if l {
            gold[b].push((a, i, j));
        }
    }
    // The reference's loss runs over every (i, j) of the grid.
    let mut g = Array4::zeros(logits.dim());
    let loss = mcce_dense(logits.view(), labels.view(), SpanSet::All, g.view_mut());
    let mut gs = Array4::zeros(logits.dim());
    let loss_sparse = mcce_sparse(logits.view(), &gold, SpanSet::All, gs.view_mut());
    assert!(loss.is_finite() && g.iter().all(|x| x.is_finite()));
    assert_eq!(loss, loss_sparse);
    assert_eq!(g, gs);
    let e_loss = max_rel(&[loss], get(&st, "loss").iter());
    let e_grad = max_rel(g.iter(), get(&st, "grad_logits").iter());
    eprintln!("loss.safetensors: max rel loss {e_loss:.2e} ({loss}), grad_logits {e_grad:.2e}");
    assert!(e_loss <= TOL, "loss rel error {e_loss:e}");
    assert!(e_grad <= TOL, "grad rel error {e_grad:e}");
}

/// A model of one tensor, named `param`.
struct One(Param<f64, IxDyn>);

impl Params<f64> for One {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, f64>)) {
        f(&join(prefix, "param"), self.0.view_dyn());
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, f64>)) {
        f(&join(prefix, "param"), self.0.views_mut_dyn());
    }
}

fn meta(md: &std::collections::HashMap<String, String>, key: &str) -> String {
    md.get(key)
        .unwrap_or_else(|| panic!("adamw.safetensors metadata lacks `{key}`"))
        .clone()
}

#[test]
fn adamw_matches_torch() {
    let Some(path) = reference_file("adamw.safetensors", "adamw_matches_torch") else {
        return;
    };
    let bytes = load(&path);
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let md = header.metadata().clone().expect("adamw.safetensors has metadata");
    let num = |k: &str| meta(&md, k).trim().parse::<f64>().unwrap();
    let betas: Vec<f64> = meta(&md, "betas")
        .trim_matches(|c| c == '(' || c == ')' || c == '[' || c == ']')
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let cfg = AdamWConfig {
        lr: num("lr"),
        beta1: betas[0],
        beta2: betas[1],
        eps: num("eps"),
        weight_decay: num("weight_decay"),
    };
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut model = One(Param::new(get(&st, "param0")));
    // One tensor, decayed as torch decays every parameter of a plain param group.
    let mut opt = AdamW::new(cfg).with_decay(|_| true);
    let mut worst = 0.0f64;
    let mut t = 1;
    while st.tensor(&format!("grad{t}")).is_ok() {
        model.0.grad = get(&st, &format!("grad{t}"));
        opt.step(&mut model, cfg.lr).unwrap();
        let want = get(&st, &format!("param{t}"));
        worst = worst.max(max_rel(model.0.value.iter(), want.iter()));
        t += 1;
    }
    eprintln!("adamw.safetensors: {} steps, max rel {worst:.2e}", t - 1);
    assert!(t > 1, "no steps in adamw.safetensors");
    assert!(worst <= 1e-12, "AdamW rel error {worst:e}");
}
