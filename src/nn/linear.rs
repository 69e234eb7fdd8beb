//! Linear (dense) layer: `y = x Wᵀ + b`, W `[out, in]` as PyTorch and HF name it.
//!
//! W and its gradient are kept in column-major (Fortran) memory order: logically `[out, in]`
//! (every walk, checkpoint and shape sees HF's layout), but `Wᵀ` is a contiguous `[in, out]`
//! matrix, so the forward's `x Wᵀ` reads its right operand row by row and the kernel packs it
//! with plain copies instead of a strided gather (half of batch-1 inference time before).
//!
//! A layer of a model loaded for inference also keeps `Wᵀ` packed once ([`Linear::prepack`]),
//! so that its products do not pack the weight again on every call.

use crate::lockstep::Part;
use crate::matmul::{gemm, gemm_packed, gemm_packed_columns, matmul_acc, PackedB};
use crate::parallel;
use crate::param::{join, Param, Param1, Param2, ParamMut, Params};
use crate::precision::Precision;
use crate::scalar::Scalar;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewD, ArrayViewMut2, ShapeBuilder};
use rand::Rng;
use std::ops::Range;

/// Parameters of a dense layer.
#[derive(Clone, Debug)]
pub struct Linear<T> {
    /// `[out, in]`
    pub weight: Param2<T>,
    /// `[out]`
    pub bias: Param1<T>,
    /// `Wᵀ` packed for inference ([`Linear::prepack`]); dropped by any mutable walk of the
    /// parameters.
    packed: Option<PackedB>,
    /// Whether the f32 weight was dropped ([`Linear::release_weight`]): `weight` is then 0 x 0
    /// and the packed int8 or bf16 values are the weight.
    released: bool,
    /// Set by [`Linear::pack_on_load`]: the next mutable walk (the load) packs the weight in this
    /// precision after it and drops the f32 copy.
    pack_on_load: Option<Precision>,
}

impl<T: Scalar> Linear<T> {
    /// BERT initialisation: weights ~ N(0, std²), bias 0.
    /// (std 0: zeros, with no draw and no write.)
    pub fn new(inp: usize, out: usize, std: f64, rng: &mut impl Rng) -> Self {
        let weight = match std {
            0.0 => Array2::zeros((out, inp).f()),
            _ => crate::init::normal((out, inp), std, rng),
        };
        Linear::from_arrays(weight, Array1::zeros(out))
    }

    /// Wraps given weight `[out, in]` (any memory order; stored column-major) and bias `[out]`.
    pub fn from_arrays(weight: Array2<T>, bias: Array1<T>) -> Self {
        assert_eq!(
            weight.nrows(),
            bias.len(),
            "Linear: weight rows must equal bias length"
        );
        let value = if weight.t().is_standard_layout() {
            weight // column-major already
        } else {
            let mut value = Array2::zeros(weight.raw_dim().f());
            value.assign(&weight);
            value
        };
        let grad = Array2::zeros(value.raw_dim().f());
        Linear {
            weight: Param { value, grad },
            bias: Param1::new(bias),
            packed: None,
            released: false,
            pack_on_load: None,
        }
    }

    /// Packs `Wᵀ` once for the products of inference (where the CPU's kernel can use it; see
    /// `matmul::PackedB`). `visit_mut` drops the packed copy, so training and loading, which
    /// change the weight through it, never meet a stale one; code that writes `weight.value`
    /// directly must call this again (or not call it at all).
    pub fn prepack(&mut self) {
        self.prepack_as(Precision::F32);
    }

    /// [`Linear::prepack`] in `precision`: int8 quantises `Wᵀ` per output channel
    /// (`matmul::int8`), on every CPU; f32 packs it where the CPU's kernel can use it.
    pub fn prepack_as(&mut self, precision: Precision) {
        self.restore_weight();
        self.packed = PackedB::for_inference(self.weight.value.t(), precision);
    }

    /// Drops the f32 weight (and its gradient) of a layer packed in int8 or bf16, whose packed
    /// values are then the weight: for a model loaded from an int8 or bf16 directory, whose f32
    /// weights were only those values widened (the memory of a model that is only run). Any
    /// walk of the parameters, training step or repacking gives the weight back from the packed
    /// values first. Returns whether it was dropped (not for an f32 or absent packing).
    pub fn release_weight(&mut self) -> bool {
        let narrow = self.packed.as_ref().is_some_and(|p| !p.precision().is_f32());
        if narrow && !self.released {
            self.weight = Param {
                value: Array2::zeros((0, 0).f()),
                grad: Array2::zeros((0, 0).f()),
            };
            self.released = true;
        }
        self.released
    }

    /// For a model about to be filled from an int8 or bf16 directory: the walk that loads the
    /// weight packs it in `precision` right after and drops the f32 copy
    /// ([`Linear::release_weight`]), so that a load holds one layer at a time in f32.
    pub fn pack_on_load(&mut self, precision: Precision) {
        self.pack_on_load = Some(precision);
    }

    /// The weight `[out, in]` (column-major) from the packed values of a released layer.
    fn narrow_weight(&self) -> Array2<T> {
        let wt = self
            .packed
            .as_ref()
            .and_then(PackedB::narrow_values)
            .expect("a released layer keeps its int8 or bf16 packing");
        // `wt` is `Wᵀ` row-major: its transpose is W column-major, the layout `from_arrays` keeps.
        wt.mapv(|v| T::c(v as f64)).reversed_axes()
    }

    /// Drops the packed weight (giving a released layer its f32 weight back first).
    pub fn unpack(&mut self) {
        self.restore_weight();
        self.packed = None;
    }

    /// Gives a released layer its f32 weight back (and a zero gradient).
    fn restore_weight(&mut self) {
        if self.released {
            let value = self.narrow_weight();
            let grad = Array2::zeros(value.raw_dim().f());
            self.weight = Param { value, grad };
            self.released = false;
        }
    }

    /// The number format of the packed weight (f32 when there is none).
    pub fn precision(&self) -> Precision {
        self.packed.as_ref().map_or(Precision::F32, PackedB::precision)
    }

    /// `x Wᵀ` accumulated into `y` (which holds the bias): on the packed weight when there is one.
    fn product_into(&self, x: ArrayView2<T>, mut y: ArrayViewMut2<T>) {
        match &self.packed {
            Some(p) if Self::packed_output(&y) => gemm_packed(T::one(), x, p, T::one(), None, y),
            Some(p) if self.released => {
                // An output with strided rows and no f32 weight: through a contiguous one.
                let mut z = y.to_owned();
                gemm_packed(T::one(), x, p, T::one(), None, z.view_mut());
                y.assign(&z);
            }
            _ => gemm(T::one(), x, self.weight.value.t(), T::one(), y),
        }
    }

    /// True for an output the packed kernel writes (contiguous rows).
    fn packed_output(y: &ArrayViewMut2<T>) -> bool {
        y.ncols() == 1 || y.strides()[1] == 1
    }

    /// The input width (`in`).
    pub fn in_features(&self) -> usize {
        match &self.packed {
            Some(p) if self.released => p.k(),
            _ => self.weight.value.ncols(),
        }
    }

    /// The output width (`out`).
    pub fn out_features(&self) -> usize {
        match &self.packed {
            Some(p) if self.released => p.n(),
            _ => self.weight.value.nrows(),
        }
    }

    /// `y = x Wᵀ + b`; x `[N, in]` -> y `[N, out]`. Backward needs only `x`, which the caller keeps.
    pub fn forward(&self, x: ArrayView2<T>) -> Array2<T> {
        // The bias rows are the product's initial value (one write, no zeroing pass first).
        let mut y = parallel::broadcast_rows(self.bias.value.view(), x.nrows());
        self.product_into(x, y.view_mut());
        y
    }

    /// `forward` into a caller-owned buffer (reused across steps). On a packed weight the kernel
    /// adds the bias as it writes `y` (its old contents are not read).
    pub fn forward_into(&self, x: ArrayView2<T>, mut y: ArrayViewMut2<T>) {
        if let Some(p) = self.packed.as_ref().filter(|_| Self::packed_output(&y)) {
            return gemm_packed(T::one(), x, p, T::zero(), Some(self.bias.value.view()), y);
        }
        parallel::assign_rows(y.view_mut(), self.bias.value.view());
        self.product_into(x, y);
    }

    /// Whether the weight is packed (what [`Linear::columns`] and [`Linear::forward_columns`] need).
    pub fn is_packed(&self) -> bool {
        self.packed.is_some()
    }

    /// The output columns that `part` computes in a lockstep team
    /// ([`Linear::forward_columns`]); `None` where the weight is not packed.
    pub fn columns(&self, part: &Part) -> Option<Range<usize>> {
        let p = self.packed.as_ref()?;
        Some(part.block(p.n(), p.column_align()))
    }

    /// Columns `j0..j0 + y.ncols()` of [`Linear::forward_into`], on this thread (`y` holds just
    /// them; its rows contiguous), for a block from [`Linear::columns`].
    pub fn forward_columns(&self, x: ArrayView2<T>, y: ArrayViewMut2<T>, j0: usize) {
        let p = self
            .packed
            .as_ref()
            .expect("Linear::columns said the weight is packed");
        gemm_packed_columns(T::one(), x, p, T::zero(), Some(self.bias.value.view()), y, j0);
    }

    /// Accumulates dW += dyᵀ x, db += Σ_rows dy and returns dx = dy W.
    pub fn backward(&mut self, x: ArrayView2<T>, dy: ArrayView2<T>) -> Array2<T> {
        let mut dx = parallel::zeros(x.raw_dim());
        self.backward_acc(x, dy, dx.view_mut());
        dx
    }

    /// `backward` adding dx into `dx` (a residual's gradient, say): no buffer, no extra pass.
    pub fn backward_acc(&mut self, x: ArrayView2<T>, dy: ArrayView2<T>, dx: ArrayViewMut2<T>) {
        self.backward_params(x, dy); // gives a released weight back
        gemm(T::one(), dy, self.weight.value.view(), T::one(), dx);
    }

    /// The parameter half of `backward`, for a first layer whose input needs no gradient.
    pub fn backward_params(&mut self, x: ArrayView2<T>, dy: ArrayView2<T>) {
        self.restore_weight();
        // dWᵀ += xᵀ dy: the contiguous `[in, out]` view of the column-major gradient.
        matmul_acc(x.t(), dy, self.weight.grad.view_mut().reversed_axes());
        parallel::column_sums_acc(dy, self.bias.grad.view_mut());
    }
}

impl<T: Scalar> Params<T> for Linear<T> {
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, ArrayViewD<'_, T>)) {
        if self.released {
            f(&join(prefix, "weight"), self.narrow_weight().view().into_dyn());
        } else {
            f(&join(prefix, "weight"), self.weight.view_dyn());
        }
        f(&join(prefix, "bias"), self.bias.view_dyn());
    }
    fn visit_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, ParamMut<'_, T>)) {
        self.restore_weight();
        self.packed = None;
        f(&join(prefix, "weight"), self.weight.views_mut_dyn());
        f(&join(prefix, "bias"), self.bias.views_mut_dyn());
        if let Some(precision) = self.pack_on_load.take() {
            self.prepack_as(precision);
            self.release_weight();
            crate::alloc::release_cached();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{fixed_random, proj_loss, GradCheck};
    use ndarray::{array, Ix2};

    #[test]
    fn a_packed_layer_computes_the_same_and_a_mutable_walk_unpacks_it() {
        let w: Array2<f32> = fixed_random(Ix2(70, 48), 1).mapv(|x| x as f32);
        let b: Array1<f32> = Array1::from_shape_fn(70, |i| i as f32 * 0.01);
        let x: Array2<f32> = fixed_random(Ix2(9, 48), 2).mapv(|x| x as f32);
        let mut l = Linear::from_arrays(w, b);
        let plain = l.forward(x.view());
        l.prepack();
        assert_eq!(l.packed.is_some(), crate::matmul::packed_kernel());
        let packed = l.forward(x.view());
        // forward_into on a packed weight writes y without reading it, the bias added by the
        // kernel: bit for bit the bias rows plus the product.
        let mut into = Array2::from_elem((9, 70), f32::NAN);
        l.forward_into(x.view(), into.view_mut());
        assert_eq!(into, packed);
        for y in [&packed, &into] {
            assert!((y - &plain).iter().all(|d| d.abs() < 1e-5));
        }
        // A step of training (any mutable walk) changes the weight: the packed copy must go.
        l.visit_mut("", &mut |name, mut p| {
            if name == "weight" {
                p.value.mapv_inplace(|v| v * 2.0);
            }
        });
        assert!(l.packed.is_none());
        let doubled = l.forward(x.view());
        let want = &plain * 2.0 - &l.bias.value;
        assert!((doubled - want).iter().all(|d| d.abs() < 1e-4));
    }

    /// A layer packed in int8 or bf16 drops its f32 weight and runs as before; its walks see the
    /// packed values as its weight, a mutable walk gives that weight back for good, and
    /// repacking works from it. An f32 packing is never released.
    #[test]
    fn a_released_weight_runs_walks_and_comes_back_as_its_packed_values() {
        let w: Array2<f32> = fixed_random(Ix2(40, 70), 1).mapv(|v| v as f32);
        let b: Array1<f32> = fixed_random(ndarray::Ix1(40), 2).mapv(|v| v as f32);
        let x: Array2<f32> = fixed_random(Ix2(5, 70), 3).mapv(|v| v as f32);
        for precision in [Precision::Int8, Precision::Bf16] {
            let mut l = Linear::from_arrays(w.clone(), b.clone());
            l.prepack_as(Precision::F32);
            assert!(!l.release_weight(), "an f32 packing keeps the weight");
            l.prepack_as(precision);
            let before = l.forward(x.view());
            let seen = |l: &Linear<f32>| {
                let mut seen = Vec::new();
                l.visit("", &mut |name, v| {
                    if name == "weight" {
                        seen.push(v.to_owned().into_dimensionality::<Ix2>().unwrap());
                    }
                });
                seen.pop().unwrap()
            };
            assert_eq!(seen(&l), w, "before release a walk sees the f32 weight");
            assert!(l.release_weight());
            let narrow = seen(&l);
            assert!((&narrow - &w).iter().all(|d| d.abs() < 0.02), "{precision}");
            assert_eq!(l.weight.value.len(), 0);
            assert_eq!((l.in_features(), l.out_features()), (70, 40));
            assert_eq!(l.forward(x.view()), before, "{precision}");
            // a strided output (every other column of a wider buffer)
            let mut wide = Array2::<f32>::zeros((5, 80));
            l.forward_into(x.view(), wide.slice_mut(ndarray::s![.., ..;2]));
            assert_eq!(wide.slice(ndarray::s![.., ..;2]), before);
            l.visit_mut("", &mut |_, _| {});
            assert!(l.packed.is_none() && !l.released);
            assert_eq!(l.weight.value, narrow);
            assert!(l.weight.value.t().is_standard_layout() && l.weight.grad.shape() == [40, 70]);
            l.prepack_as(precision);
            assert!(l.release_weight());
            // Repacking from the weight it gives back: the same values, up to the rounding of
            // a scale recomputed from them.
            l.prepack_as(precision);
            let again = l.forward(x.view());
            assert!((&again - &before).iter().all(|d| d.abs() < 1e-5), "{precision}");
        }
    }

    #[test]
    fn forward_by_hand() {
        let l = Linear::from_arrays(
            array![[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]],
            array![0.5, 0.0, -1.0],
        );
        let y = l.forward(array![[1.0, 1.0], [2.0, -2.0]].view());
        assert_eq!(y, array![[3.5, -1.0, 2.5], [-1.5, 2.0, 4.0]]);
    }

    #[test]
    fn weight_is_column_major_but_walks_as_out_by_in() {
        let l = Linear::<f32>::from_arrays(array![[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], array![0.0, 0.0, 0.0]);
        assert!(l.weight.value.t().is_standard_layout() && l.weight.grad.t().is_standard_layout());
        assert_eq!(l.param_shapes()[0], ("weight".to_string(), vec![3, 2]));
        let mut seen = Vec::new();
        l.visit("", &mut |_, v| seen.extend(v.iter().copied()));
        assert_eq!(&seen[..6], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn gradcheck() {
        let mut rng = rand::rngs::mock::StepRng::new(1, 7);
        let _ = &mut rng;
        let mut l = Linear::<f64>::from_arrays(fixed_random(Ix2(3, 4), 1), fixed_random(ndarray::Ix1(3), 2));
        let x = fixed_random(Ix2(5, 4), 3);
        let proj = fixed_random(Ix2(5, 3), 4);
        l.zero_grad();
        let dx = l.backward(x.view(), proj.view());
        let gc = GradCheck::default();
        gc.params(&mut l, |l| proj_loss(&l.forward(x.view()), &proj))
            .assert_below(1e-6);
        let l2 = l.clone();
        gc.input("x", &x, &dx, |x| proj_loss(&l2.forward(x.view()), &proj))
            .assert_below(1e-6);
    }
}
