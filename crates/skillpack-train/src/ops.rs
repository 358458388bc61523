//! `x · Wᵀ` against a frozen weight, with a backward pass that computes only `∂L/∂x`.
//!
//! candle's `matmul` backward always computes the gradient of both operands; for a frozen base
//! weight that is an [out, in] matrix of wasted FLOPs and memory per linear layer per step.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, TensorId};
use serde::{Deserialize, Serialize};

use crate::amx::{self, PackedRight};

/// How products against frozen weights are computed on the CPU (like PyTorch's
/// `set_float32_matmul_precision`, but per thread and scoped: [`MatmulPrecisionScope`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatmulPrecision {
    /// f32 throughout (candle's `gemm`): what PEFT computes in f32, to rounding.
    #[default]
    F32,
    /// Operands rounded to bf16, f32 accumulation, on Intel AMX tiles (Sapphire Rapids and
    /// later): the frozen linears and the LM head (forward and input-gradient products) and the
    /// attention products. Adapters, norms, softmax and the loss stay f32, like PyTorch's CPU
    /// autocast to bf16.
    Bf16,
}

impl MatmulPrecision {
    /// Its name in options, `metrics.jsonl` and `train.json`: `f32` or `bf16`.
    pub fn as_str(self) -> &'static str {
        match self {
            MatmulPrecision::F32 => "f32",
            MatmulPrecision::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for MatmulPrecision {
    type Err = crate::TrainError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        [MatmulPrecision::F32, MatmulPrecision::Bf16]
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                crate::TrainError::Input(format!("matmul precision must be f32 or bf16, not `{s}`"))
            })
    }
}

thread_local! {
    /// Whether this thread's products against frozen weights run in bf16 (see
    /// [`MatmulPrecisionScope`]). Thread-local, so concurrent trainers (and tests) do not see
    /// each other's setting; candle runs an op's forward and backward on the calling thread.
    static BF16_MATMULS: Cell<bool> = const { Cell::new(false) };
}

/// Whether products against frozen weights run in bf16 on this thread.
pub(crate) fn bf16_matmuls() -> bool {
    BF16_MATMULS.with(Cell::get)
}

/// Frozen weights packed for AMX, by tensor and orientation (`true`: for `x · Wᵀ`).
type PackedCache = Mutex<HashMap<(TensorId, bool), Arc<PackedRight>>>;
static PACKED: OnceLock<PackedCache> = OnceLock::new();

/// While alive, products against frozen weights on this thread use the given precision; the
/// previous one comes back on drop. [`Trainer`](crate::Trainer) holds one around every forward
/// and backward pass, with its config's [`MatmulPrecision`].
pub struct MatmulPrecisionScope {
    previous: bool,
}

impl MatmulPrecisionScope {
    /// `Bf16` needs AMX ([`crate::amx::available`]); otherwise it is refused with an error that
    /// says so.
    pub fn enter(precision: MatmulPrecision) -> crate::Result<Self> {
        check_matmul_precision(precision)?;
        let previous = BF16_MATMULS.with(|c| c.replace(precision == MatmulPrecision::Bf16));
        Ok(MatmulPrecisionScope { previous })
    }
}

impl Drop for MatmulPrecisionScope {
    fn drop(&mut self) {
        BF16_MATMULS.with(|c| c.set(self.previous));
    }
}

/// Whether `precision` can run here: `Bf16` needs Intel AMX.
pub fn check_matmul_precision(precision: MatmulPrecision) -> crate::Result<()> {
    if precision == MatmulPrecision::Bf16 && !amx::available() {
        return Err(crate::TrainError::Input(
            "--matmul bf16 needs Intel AMX (amx_tile and amx_bf16, e.g. Xeon Sapphire Rapids or \
             later) and a Linux kernel that grants it; this CPU has none: use --matmul f32"
                .into(),
        ));
    }
    Ok(())
}

/// Frees the bf16 copies of frozen weights kept for AMX products (about the f32 weights' size);
/// they are rebuilt on the next use. Training functions call it when they finish.
pub fn release_packed_weights() {
    if let Some(cache) = PACKED.get() {
        cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// `a · Wᵀ` (`transposed`) or `a · W` in bf16 on AMX, when [`MatmulPrecision::Bf16`] is set and
/// both are f32 on the CPU; `None` otherwise (the caller computes it in f32).
fn bf16_product(a: &[f32], m: usize, w: &Tensor, transposed: bool) -> Result<Option<Vec<f32>>> {
    if !bf16_matmuls() || !w.device().is_cpu() || w.dtype() != DType::F32 {
        return Ok(None);
    }
    let key = (w.id(), transposed);
    let cache = PACKED.get_or_init(Default::default);
    let cached = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
        .cloned();
    let packed = match cached {
        Some(p) => p,
        None => {
            let (rows, cols) = w.dims2()?;
            let values = w.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
            let packed = Arc::new(if transposed {
                PackedRight::transposed(&values, rows, cols)
            } else {
                PackedRight::plain(&values, rows, cols)
            });
            cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, packed.clone());
            packed
        }
    };
    Ok(Some(amx::matmul(a, m, &packed)))
}

/// `g · W` for a gradient `g [m, out]` and a frozen `W [out, in]`: bf16 on AMX when set, else
/// candle's f32 matmul.
fn input_gradient(g: &Tensor, w: &Tensor) -> Result<Tensor> {
    match bf16_input_gradient(g, w)? {
        Some(product) => Tensor::from_vec(product, (g.dim(0)?, w.dim(1)?), g.device()),
        None => g.matmul(w),
    }
}

/// `g · W` in bf16 on AMX as plain values, when set and `g` is f32 on the CPU; else `None`.
fn bf16_input_gradient(g: &Tensor, w: &Tensor) -> Result<Option<Vec<f32>>> {
    if !(bf16_matmuls() && g.device().is_cpu() && g.dtype() == DType::F32) {
        return Ok(None);
    }
    let (m, _) = g.dims2()?;
    let g = g.contiguous()?;
    let (storage, layout) = g.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (candle_core::Storage::Cpu(CpuStorage::F32(values)), Some((start, end))) => {
            bf16_product(&values[start..end], m, w, false)
        }
        _ => Ok(None),
    }
}

/// `dst[m, n] += s · lhs[m, r] · R` for a row-major `dst` and `lhs`, where `R[kk, j]` is
/// `rhs.0[kk · rhs.1 + j · rhs.2]`: a low-rank product added where it lands, without the
/// zero-filled product buffer and the extra pass over `dst` a separate matmul and add take.
fn add_scaled_product(
    dst: &mut [f32],
    (m, n, r): (usize, usize, usize),
    lhs: &[f32],
    rhs: (&[f32], isize, isize),
    s: f32,
) {
    let (rhs, rhs_row_stride, rhs_col_stride) = rhs;
    assert_eq!(
        dst.len(),
        m * n,
        "add_scaled_product: dst is not [{m}, {n}]"
    );
    assert_eq!(
        lhs.len(),
        m * r,
        "add_scaled_product: lhs is not [{m}, {r}]"
    );
    let last = (r.max(1) - 1) as isize * rhs_row_stride + (n.max(1) - 1) as isize * rhs_col_stride;
    assert!(
        rhs.len() as isize > last,
        "add_scaled_product: rhs is too short"
    );
    if m == 0 || n == 0 || r == 0 {
        return;
    }
    // SAFETY: the asserts above keep every index gemm reads or writes inside the slices; `dst`
    // is borrowed mutably, so nothing else aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            r,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            1,
            r as isize,
            rhs.as_ptr(),
            rhs_col_stride,
            rhs_row_stride,
            1.0,
            s,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// `g · W + gb · A` for `g [m, out]`, frozen `W [out, in]`, `gb [m, r]`, `A [r, in]`: on AMX
/// the low-rank part is added into the bf16 product in place; otherwise two candle matmuls and
/// an add.
fn input_gradient_plus_low_rank(g: &Tensor, w: &Tensor, gb: &Tensor, a: &Tensor) -> Result<Tensor> {
    if let Some(mut dx) = bf16_input_gradient(g, w)? {
        let m = g.dim(0)?;
        let (r, k) = a.dims2()?;
        let gb_values = gb.flatten_all()?.to_vec1::<f32>()?;
        let a_values = a.flatten_all()?.to_vec1::<f32>()?;
        add_scaled_product(
            &mut dx,
            (m, k, r),
            &gb_values,
            (&a_values, k as isize, 1),
            1.0,
        );
        return Tensor::from_vec(dx, (m, k), g.device());
    }
    input_gradient(g, w)? + gb.matmul(a)?
}

/// `x · Wᵀ` of CPU storage: bf16 on AMX when set, else candle's f32 matmul.
fn frozen_forward_cpu(
    x: &CpuStorage,
    xl: &Layout,
    w: &Tensor,
    (m, n, k): (usize, usize, usize),
) -> Result<CpuStorage> {
    if let (CpuStorage::F32(values), Some((start, end))) = (x, xl.contiguous_offsets()) {
        if let Some(product) = bf16_product(&values[start..end], m, w, true)? {
            return Ok(CpuStorage::F32(product));
        }
    }
    let (w_storage, wl) = w.storage_and_layout();
    let candle_core::Storage::Cpu(ws) = &*w_storage else {
        candle_core::bail!("frozen matmul: weight is not on the CPU")
    };
    x.matmul(ws, (1, m, n, k), xl, &wl.transpose(0, 1)?)
}

struct FrozenMatmul {
    w: Tensor,
}

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        _w: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, k2) = wl.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("frozen-matmul: x is [{m}, {k}] but w is [{n}, {k2}]");
        }
        Ok((
            frozen_forward_cpu(x, xl, &self.w, (m, n, k))?,
            Shape::from((m, n)),
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        x: &candle_core::CudaStorage,
        xl: &Layout,
        w: &candle_core::CudaStorage,
        wl: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (n, _) = wl.shape().dims2()?;
        let wt = wl.transpose(0, 1)?;
        Ok((x.matmul(w, (1, m, n, k), xl, &wt)?, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(input_gradient(grad, w)?), None))
    }
}

/// `x · wᵀ` for `x` of shape `[.., in]` and a frozen `w` of shape `[out, in]`; gradients flow to
/// `x` only.
pub fn frozen_linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("x has at least one dimension");
    let m = x.elem_count() / k;
    let x2 = x.reshape((m, k))?;
    // apply_op2 records the op for backprop only when x is part of the graph.
    let y = x2.apply_op2(w, FrozenMatmul { w: w.clone() })?;
    let mut out_dims = dims;
    *out_dims.last_mut().expect("non-empty") = w.dim(0)?;
    y.reshape(out_dims)
}

use candle_core::{DType, Device, D};
use rayon::prelude::*;

fn cpu_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&v[start..end]),
        (CpuStorage::F32(_), None) => candle_core::bail!("{what}: input must be contiguous"),
        _ => candle_core::bail!("{what}: only f32 is supported on CPU"),
    }
}

/// Scaled, causally masked softmax over the last dimension of attention scores
/// `[.., t, t]`: `softmax(scale · s + causal_mask)`, with its backward. One pass and one output
/// buffer instead of the scale / mask / max / sub / exp / sum / div chain. With a window, query
/// `i` sees keys `i + 1 − window ..= i` only (sliding-window layers).
/// `eˣ` to about one ulp (relative error below 2e-7), without libm's call per element, so loops
/// over it vectorize: `x = n ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-7 Taylor polynomial for
/// `eʳ`, and `2ⁿ` built in the exponent bits. Inputs are clamped to [-87.3, 88.0] (the results
/// stay normal numbers: what softmax, the loss and SiLU need); NaN stays NaN.
#[inline(always)]
pub(crate) fn fast_exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n · LN2_HI is exact for the n that occur here.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 · 2²³ rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Lanes of the vectorized sums below.
const LANES: usize = 16;

/// `out[i] = e^(scale · x[i] − shift)` for every element; returns their sum.
pub(crate) fn exp_shifted_into(out: &mut [f32], x: &[f32], scale: f32, shift: f32) -> f32 {
    debug_assert_eq!(out.len(), x.len());
    let mut lanes = [0f32; LANES];
    let mut out_chunks = out.chunks_exact_mut(LANES);
    let mut x_chunks = x.chunks_exact(LANES);
    for (o, x) in (&mut out_chunks).zip(&mut x_chunks) {
        for j in 0..LANES {
            o[j] = fast_exp(x[j] * scale - shift);
            lanes[j] += o[j];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (o, x) in out_chunks
        .into_remainder()
        .iter_mut()
        .zip(x_chunks.remainder())
    {
        *o = fast_exp(x * scale - shift);
        sum += *o;
    }
    sum
}

/// `x[i] = e^(scale · x[i] − shift)` for every element, in place; returns their sum, in f32
/// lanes over blocks and in f64 across blocks (a vocabulary-sized row).
pub(crate) fn exp_shifted_in_place(x: &mut [f32], scale: f32, shift: f32) -> f64 {
    x.chunks_mut(1024)
        .map(|block| {
            let mut lanes = [0f32; LANES];
            let mut chunks = block.chunks_exact_mut(LANES);
            for c in &mut chunks {
                for j in 0..LANES {
                    c[j] = fast_exp(c[j] * scale - shift);
                    lanes[j] += c[j];
                }
            }
            let mut rest = 0f32;
            for v in chunks.into_remainder() {
                *v = fast_exp(*v * scale - shift);
                rest += *v;
            }
            (lanes.iter().sum::<f32>() + rest) as f64
        })
        .sum()
}

/// `Σ e^(x[i] − shift)`, summed in f32 lanes over blocks and across blocks in f64 (a row of the
/// loss has the vocabulary's 49,152–262,144 terms).
fn sum_exp_shifted(x: &[f32], shift: f32) -> f64 {
    x.chunks(1024)
        .map(|block| {
            let mut lanes = [0f32; LANES];
            let mut chunks = block.chunks_exact(LANES);
            for c in &mut chunks {
                for j in 0..LANES {
                    lanes[j] += fast_exp(c[j] - shift);
                }
            }
            let rest: f32 = chunks.remainder().iter().map(|v| fast_exp(v - shift)).sum();
            (lanes.iter().sum::<f32>() + rest) as f64
        })
        .sum()
}

struct CausalSoftmax {
    scale: f32,
    window: usize,
}

impl candle_core::CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "causal-softmax")?;
        let t = *l.dims().last().expect("rank >= 2");
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(t)
            .zip(x.par_chunks(t))
            .enumerate()
            .for_each(|(row, (o, xr))| {
                let i = row % t; // query position: keys first..=i are visible
                let first = (i + 1).saturating_sub(self.window);
                let visible = &xr[first..=i];
                let max = visible.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) * self.scale;
                let sum = exp_shifted_into(&mut o[first..=i], visible, self.scale, max);
                let inv = 1.0 / sum;
                o[first..=i].iter_mut().for_each(|v| *v *= inv);
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        // Detached: a gradient must not carry a graph that keeps activations alive.
        let y = &y.detach();
        // dL/ds = scale · y ⊙ (g − Σ_j g_j y_j); masked entries have y = 0.
        let dot = (g * y)?.sum_keepdim(D::Minus1)?;
        Ok(Some(((y * g.broadcast_sub(&dot)?)? * self.scale as f64)?))
    }
}

/// `softmax(scale · scores + causal mask)` over the last dimension, differentiable; with
/// `window`, each query sees only the `window` most recent keys, itself included.
pub fn causal_softmax(scores: &Tensor, scale: f64, window: Option<usize>) -> Result<Tensor> {
    let window = window.unwrap_or(usize::MAX);
    if matches!(scores.device(), Device::Cpu) && scores.dtype() == DType::F32 {
        return scores.contiguous()?.apply_op1(CausalSoftmax {
            scale: scale as f32,
            window,
        });
    }
    // Rows may stack several query heads ([.., rep·t, t]): row r is query position r mod t.
    let (rows, t) = (scores.dim(D::Minus2)?, scores.dim(D::Minus1)?);
    let mask: Vec<f32> = (0..rows)
        .flat_map(|r| {
            let i = r % t;
            (0..t).map(move |j| {
                if j > i || i - j >= window {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    let mask = Tensor::from_vec(mask, (rows, t), scores.device())?.to_dtype(scores.dtype())?;
    candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(&mask)?, D::Minus1)
}

/// RMSNorm with a frozen weight: `y = x / sqrt(mean(x²) + eps) · w`, gradient to `x` only.
struct FrozenRmsNorm {
    eps: f32,
}

impl CustomOp2 for FrozenRmsNorm {
    fn name(&self) -> &'static str {
        "frozen-rms-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(xs, xl, "rms-norm")?;
        let w = cpu_f32(ws, wl, "rms-norm")?;
        let h = w.len();
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h)
            .zip(x.par_chunks(h))
            .for_each(|(o, xr)| {
                let ms = xr.iter().map(|v| v * v).sum::<f32>() / h as f32;
                let r = 1.0 / (ms + self.eps).sqrt();
                for ((oi, xi), wi) in o.iter_mut().zip(xr).zip(w) {
                    *oi = xi * r * wi;
                }
            });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let x = &x.detach();
        // With r = (mean(x²) + eps)^(-1/2) and u = g ⊙ w: dx = r·u − x·r³·mean(u ⊙ x).
        let h = x.dim(D::Minus1)? as f64;
        let r = ((x.sqr()?.sum_keepdim(D::Minus1)? / h)? + self.eps as f64)?
            .sqrt()?
            .recip()?;
        let u = g.broadcast_mul(w)?;
        let m = ((&u * x)?.sum_keepdim(D::Minus1)? / h)?;
        let dx = (u.broadcast_mul(&r)? - x.broadcast_mul(&(r.powf(3.0)? * m)?)?)?;
        Ok((Some(dx), None))
    }
}

/// RMSNorm against a frozen weight, differentiable in `x`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        return x
            .contiguous()?
            .apply_op2(&w.contiguous()?, FrozenRmsNorm { eps: eps as f32 });
    }
    candle_nn::ops::rms_norm_slow(x, w, eps as f32)
}

/// Mean cross-entropy of logits `[n, v]` against fixed labels, with the textbook backward
/// `(softmax − onehot) / n`: one [n, v] buffer instead of log-softmax's chain of them.
struct CrossEntropy {
    labels: Vec<u32>,
}

impl candle_core::CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "cross-entropy")?;
        let v = *l.dims().last().expect("rank 2");
        let total: f64 = x
            .par_chunks(v)
            .zip(self.labels.par_iter())
            .map(|(row, &label)| {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
                let lse = sum_exp_shifted(row, max).ln() + max as f64;
                lse - row[label as usize] as f64
            })
            .sum();
        Ok((
            CpuStorage::F32(vec![(total / self.labels.len() as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(&self, logits: &Tensor, _loss: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (n, v) = logits.dims2()?;
        let logits = logits.contiguous()?;
        let scale = g.to_dtype(DType::F32)?.to_scalar::<f32>()? / n as f32;
        let mut grad = vec![0f32; n * v];
        // The logits are read where they are (no copy of the [n, vocabulary] matrix).
        let (storage, layout) = logits.storage_and_layout();
        let (candle_core::Storage::Cpu(CpuStorage::F32(values)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("cross-entropy: logits are not contiguous f32 on the CPU")
        };
        grad.par_chunks_mut(v)
            .zip(values[start..end].par_chunks(v))
            .zip(self.labels.par_iter())
            .for_each(|((gr, row), &label)| {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
                let sum = exp_shifted_into(gr, row, 1.0, max);
                let inv = scale / sum;
                gr.iter_mut().for_each(|gi| *gi *= inv);
                gr[label as usize] -= scale;
            });
        Ok(Some(Tensor::from_vec(grad, (n, v), logits.device())?))
    }
}

/// Mean cross-entropy of `logits [n, v]` (f32) against `labels`.
pub fn cross_entropy(logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    if matches!(logits.device(), Device::Cpu) && logits.dtype() == DType::F32 {
        return logits.contiguous()?.apply_op1(CrossEntropy {
            labels: labels.to_vec(),
        });
    }
    let labels = Tensor::new(labels, logits.device())?;
    candle_nn::loss::cross_entropy(logits, &labels)
}

/// `dst[m, n] = L · R` (overwritten) for `L[i, kk] = lhs.0[i · lhs.1 + kk · lhs.2]` and
/// `R[kk, j] = rhs.0[kk · rhs.1 + j · rhs.2]`: an f32 product through strides (transposes are
/// read in place), parallel over the pool when `parallel` (callers already inside a parallel
/// loop pass false).
pub(crate) fn strided_product(
    dst: &mut [f32],
    (m, n, k): (usize, usize, usize),
    lhs: (&[f32], isize, isize),
    rhs: (&[f32], isize, isize),
    parallel: bool,
) {
    let reach = |(values, rs, cs): (&[f32], isize, isize), rows: usize, cols: usize| {
        let last = (rows.max(1) - 1) as isize * rs + (cols.max(1) - 1) as isize * cs;
        assert!(
            rs >= 0 && cs >= 0 && (values.len() as isize) > last,
            "strided_product: an operand is too short for its strides"
        );
    };
    assert_eq!(dst.len(), m * n, "strided_product: dst is not [{m}, {n}]");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst.fill(0.0);
        return;
    }
    reach(lhs, m, k);
    reach(rhs, k, n);
    // SAFETY: the asserts keep every index gemm reads inside `lhs` and `rhs` and every write
    // inside `dst`, which is borrowed mutably (no aliasing). With `read_dst` false gemm
    // overwrites `dst` without reading it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.0.as_ptr(),
            lhs.2,
            lhs.1,
            rhs.0.as_ptr(),
            rhs.2,
            rhs.1,
            0.0,
            1.0,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

/// Rows of logits one block of [`HeadCrossEntropy`] holds: about 16 MB of them, whatever the
/// vocabulary (49,152 for SmolLM2, 262,144 for Gemma 3).
fn head_block_rows(vocab: usize) -> usize {
    ((4 << 20) / vocab.max(1)).clamp(8, 1024)
}

/// The output layer and the mean cross-entropy as one op over blocks of rows: each block's
/// logits `x Wᵀ` are made, turned into the loss and, in the same pass, into `∂loss/∂x`
/// (`(softmax − onehot) · W / n`), then dropped. The `[n, vocabulary]` logits and their
/// gradient never exist whole, so none of candle's zero-filled gradient buffers, adds and page
/// faults for them (hundreds of MB a step) are paid; the backward only scales the kept `∂x`.
struct HeadCrossEntropy {
    w: Tensor,
    labels: Vec<u32>,
    /// Whether the forward pass also computes `∂loss/∂x` (not for evaluation).
    with_gradient: bool,
    /// Rows per block ([`head_block_rows`]).
    block: usize,
    /// `∂loss/∂x` for a unit upstream gradient, `[n, h]`, taken by the backward pass.
    grad: Mutex<Option<Vec<f32>>>,
}

impl HeadCrossEntropy {
    /// Logits `x_block · Wᵀ` of `rows` rows: bf16 on AMX when set, else f32.
    fn logits(
        &self,
        x: &[f32],
        rows: usize,
        w: &[f32],
        (vocab, h): (usize, usize),
    ) -> Result<Vec<f32>> {
        if let Some(product) = bf16_product(x, rows, &self.w, true)? {
            return Ok(product);
        }
        let mut out = vec![0f32; rows * vocab];
        strided_product(
            &mut out,
            (rows, vocab, h),
            (x, h as isize, 1),
            (w, 1, h as isize),
            true,
        );
        Ok(out)
    }

    /// `g_block · W` (`[rows, h]`): bf16 on AMX when set, else f32.
    fn input_gradient(
        &self,
        g: &[f32],
        rows: usize,
        w: &[f32],
        (vocab, h): (usize, usize),
    ) -> Result<Vec<f32>> {
        if let Some(product) = bf16_product(g, rows, &self.w, false)? {
            return Ok(product);
        }
        let mut out = vec![0f32; rows * h];
        strided_product(
            &mut out,
            (rows, h, vocab),
            (g, vocab as isize, 1),
            (w, h as isize, 1),
            true,
        );
        Ok(out)
    }
}

impl candle_core::CustomOp1 for HeadCrossEntropy {
    fn name(&self) -> &'static str {
        "head-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "head-cross-entropy")?;
        let (n, h) = l.shape().dims2()?;
        let (vocab, wh) = self.w.dims2()?;
        if wh != h || self.labels.len() != n {
            candle_core::bail!(
                "head-cross-entropy: {n} rows of width {h}, {} labels, output layer [{vocab}, {wh}]",
                self.labels.len()
            );
        }
        if let Some(&bad) = self.labels.iter().find(|&&t| t as usize >= vocab) {
            candle_core::bail!(
                "head-cross-entropy: label {bad} is outside the vocabulary ({vocab})"
            );
        }
        let w = self.w.contiguous()?;
        let (w_storage, w_layout) = w.storage_and_layout();
        let w_values = match &*w_storage {
            candle_core::Storage::Cpu(ws) => cpu_f32(ws, w_layout, "head-cross-entropy weight")?,
            _ => candle_core::bail!("head-cross-entropy: the output layer is not on the CPU"),
        };
        let block = self.block.max(1);
        let inv_n = 1.0 / n.max(1) as f32;
        let mut total = 0f64;
        let mut grad = if self.with_gradient {
            Vec::with_capacity(n * h)
        } else {
            Vec::new()
        };
        for start in (0..n).step_by(block) {
            let rows = block.min(n - start);
            let mut logits = self.logits(
                &x[start * h..(start + rows) * h],
                rows,
                w_values,
                (vocab, h),
            )?;
            let labels = &self.labels[start..start + rows];
            // Each row becomes its loss term and, in place, (softmax − onehot) / n.
            total += logits
                .par_chunks_mut(vocab)
                .zip(labels.par_iter())
                .map(|(row, &label)| {
                    let target = row[label as usize];
                    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                    let sum = exp_shifted_in_place(row, 1.0, max);
                    let inv = inv_n / sum as f32;
                    row.iter_mut().for_each(|v| *v *= inv);
                    row[label as usize] -= inv_n;
                    sum.ln() + max as f64 - target as f64
                })
                .sum::<f64>();
            if self.with_gradient {
                grad.extend_from_slice(&self.input_gradient(
                    &logits,
                    rows,
                    w_values,
                    (vocab, h),
                )?);
            }
        }
        if self.with_gradient {
            *self.grad.lock().unwrap_or_else(|e| e.into_inner()) = Some(grad);
        }
        Ok((
            CpuStorage::F32(vec![(total / n.max(1) as f64) as f32]),
            Shape::from(()),
        ))
    }

    fn bwd(&self, x: &Tensor, _loss: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let Some(mut grad) = self.grad.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            candle_core::bail!("head-cross-entropy: backward without a forward pass that kept ∂x")
        };
        let scale = g.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if scale != 1.0 {
            grad.par_iter_mut().for_each(|v| *v *= scale);
        }
        Ok(Some(Tensor::from_vec(grad, x.shape(), x.device())?))
    }
}

/// Mean cross-entropy of the logits `x · wᵀ` against `labels`, for hidden rows `x [n, h]` and a
/// frozen output layer `w [vocabulary, h]`; differentiable in `x` when `with_gradient` (which
/// makes the forward pass compute the gradient too). On the CPU in f32, one op
/// over row blocks; elsewhere [`frozen_linear`] then the plain cross-entropy.
pub fn head_cross_entropy(
    x: &Tensor,
    w: &Tensor,
    labels: &[u32],
    with_gradient: bool,
) -> Result<Tensor> {
    head_cross_entropy_in_blocks(x, w, labels, with_gradient, head_block_rows(w.dim(0)?))
}

fn head_cross_entropy_in_blocks(
    x: &Tensor,
    w: &Tensor,
    labels: &[u32],
    with_gradient: bool,
    block: usize,
) -> Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        let op = HeadCrossEntropy {
            w: w.clone(),
            labels: labels.to_vec(),
            with_gradient,
            block,
            grad: Mutex::new(None),
        };
        let x = x.contiguous()?;
        return if with_gradient {
            x.apply_op1(op)
        } else {
            x.detach().apply_op1_no_bwd(&op)
        };
    }
    let x = if with_gradient { x.clone() } else { x.detach() };
    cross_entropy(&frozen_linear(&x, w)?.to_dtype(DType::F32)?, labels)
}

/// Contiguous f32 values of a CPU tensor.
fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.contiguous()?.flatten_all()?.to_vec1::<f32>()
}

/// Hugging Face (rotate-half) RoPE on `[b, h, t, d]` with precomputed `cos`/`sin` `[t, d/2]`.
/// The backward is the inverse rotation.
struct Rope {
    cos: std::sync::Arc<Vec<f32>>,
    sin: std::sync::Arc<Vec<f32>>,
    inverse: bool,
}

fn rotate(x: &[f32], out: &mut [f32], cos: &[f32], sin: &[f32], t: usize, d: usize, inverse: bool) {
    let half = d / 2;
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .enumerate()
        .for_each(|(row, (o, xr))| {
            let pos = row % t;
            let (c, s) = (
                &cos[pos * half..(pos + 1) * half],
                &sin[pos * half..(pos + 1) * half],
            );
            crate::attention::rotate_row(xr, o, c, s, inverse);
        });
}

impl candle_core::CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = cpu_f32(s, l, "rope")?;
        let dims = l.dims();
        let (t, d) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let mut out = vec![0f32; x.len()];
        rotate(x, &mut out, &self.cos, &self.sin, t, d, self.inverse);
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let inverse = Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            inverse: !self.inverse,
        };
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&inverse)?))
    }
}

/// Rotate-half RoPE for `x [b, h, t, d]` with `cos`, `sin` of shape `[t, d/2]`, differentiable.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        let op = Rope {
            cos: std::sync::Arc::new(values(cos)?),
            sin: std::sync::Arc::new(values(sin)?),
            inverse: false,
        };
        return x.contiguous()?.apply_op1(op);
    }
    candle_nn::rotary_emb::rope_slow(x, cos, sin)
}

/// The activation of a gated MLP: `act(gate) ⊙ up`.
#[derive(Clone, Copy)]
enum Gate {
    /// SiLU (SwiGLU: llama, Qwen).
    Silu,
    /// GELU, tanh approximation (GeGLU: Gemma).
    GeluTanh,
}

/// √(2/π) and the cubic coefficient of the tanh approximation of GELU.
const GELU_SCALE: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044_715;

/// `tanh(z)` as `1 − 2 / (e^{2z} + 1)` with [`fast_exp`] (vectorizes; absolute error about 1e-7,
/// ±1 where `e^{2z}` saturates).
#[inline(always)]
fn fast_tanh(z: f32) -> f32 {
    1.0 - 2.0 / (fast_exp(2.0 * z) + 1.0)
}

impl Gate {
    /// `act(g)` and `act'(g)`.
    #[inline(always)]
    fn value_and_slope(self, g: f32) -> (f32, f32) {
        match self {
            Gate::Silu => {
                let s = 1.0 / (1.0 + fast_exp(-g));
                (g * s, s * (1.0 + g * (1.0 - s)))
            }
            Gate::GeluTanh => {
                let t = fast_tanh(GELU_SCALE * (g + GELU_CUBIC * g * g * g));
                let slope = 0.5 * (1.0 + t)
                    + 0.5 * g * (1.0 - t * t) * GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * g * g);
                (0.5 * g * (1.0 + t), slope)
            }
        }
    }

    /// `act(g)` only (the forward pass).
    #[inline(always)]
    fn value(self, g: f32) -> f32 {
        match self {
            Gate::Silu => g / (1.0 + fast_exp(-g)),
            Gate::GeluTanh => {
                0.5 * g * (1.0 + fast_tanh(GELU_SCALE * (g + GELU_CUBIC * g * g * g)))
            }
        }
    }
}

/// `act(gate) ⊙ up`, differentiable in both inputs, in one pass each way (candle's composite
/// takes a dozen passes and temporaries for GELU's backward).
struct GatedActivation(Gate);

impl CustomOp2 for GatedActivation {
    fn name(&self) -> &'static str {
        match self.0 {
            Gate::Silu => "swiglu",
            Gate::GeluTanh => "geglu",
        }
    }

    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, u) = (cpu_f32(gs, gl, self.name())?, cpu_f32(us, ul, self.name())?);
        let gate = self.0;
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(4096)
            .zip(g.par_chunks(4096).zip(u.par_chunks(4096)))
            .for_each(|(o, (g, u))| {
                for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
                    *o = gate.value(*g) * u;
                }
            });
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (g, u, dy) = (values(gate)?, values(up)?, values(grad)?);
        let activation = self.0;
        let mut dg = vec![0f32; g.len()];
        let mut du = vec![0f32; g.len()];
        dg.par_chunks_mut(4096)
            .zip(du.par_chunks_mut(4096))
            .zip(
                g.par_chunks(4096)
                    .zip(u.par_chunks(4096))
                    .zip(dy.par_chunks(4096)),
            )
            .for_each(|((dg, du), ((g, u), dy))| {
                for i in 0..g.len() {
                    let (value, slope) = activation.value_and_slope(g[i]);
                    du[i] = dy[i] * value;
                    dg[i] = dy[i] * u[i] * slope;
                }
            });
        let shape = gate.shape();
        Ok((
            Some(Tensor::from_vec(dg, shape, gate.device())?),
            Some(Tensor::from_vec(du, shape, gate.device())?),
        ))
    }
}

fn gated(gate: &Tensor, up: &Tensor, activation: Gate) -> Result<Tensor> {
    if matches!(gate.device(), Device::Cpu) && gate.dtype() == DType::F32 {
        return gate
            .contiguous()?
            .apply_op2(&up.contiguous()?, GatedActivation(activation));
    }
    match activation {
        Gate::Silu => gate.silu()? * up,
        // candle's `gelu` is the tanh approximation (`gelu_pytorch_tanh`).
        Gate::GeluTanh => gate.gelu()? * up,
    }
}

/// `silu(gate) ⊙ up`, differentiable.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gated(gate, up, Gate::Silu)
}

/// `gelu_tanh(gate) ⊙ up` (GELU's tanh approximation, as `gelu_pytorch_tanh`), differentiable.
pub fn geglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gated(gate, up, Gate::GeluTanh)
}

/// A frozen linear plus its LoRA update in one op:
/// `y = x Wᵀ + s · (x Aᵀ) Bᵀ` for `x [m, in]`, `A [r, in]`, `B [out, r]`, frozen `W [out, in]`.
/// The backward returns `∂x`, `∂A`, `∂B` directly, instead of the add / scale / two-matmul
/// chain (and the zero-filled gradient buffers candle's backprop allocates for each of them).
struct LoraLinear {
    w: Tensor,
    scale: f64,
    /// `x Aᵀ` (`[m, r]`, unscaled) of the forward pass, taken by the backward pass.
    low: Mutex<Option<Vec<f32>>>,
}

impl candle_core::CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = xl.shape().dims2()?;
        let (r, _) = al.shape().dims2()?;
        let (n, _) = bl.shape().dims2()?;
        let y = frozen_forward_cpu(xs, xl, &self.w, (m, n, k))?;
        let h = xs.matmul(as_, (1, m, r, k), xl, &al.transpose(0, 1)?)?;
        let (CpuStorage::F32(mut y), CpuStorage::F32(h), CpuStorage::F32(b)) = (y, h, bs) else {
            candle_core::bail!("lora-linear: only f32 is supported on CPU")
        };
        let mut low = self.low.lock().unwrap_or_else(|e| e.into_inner());
        let h = low.insert(h);
        let Some((b_start, b_end)) = bl.contiguous_offsets() else {
            candle_core::bail!("lora-linear: B is not contiguous")
        };
        // y += s · h Bᵀ, in place: B [n, r] read as Bᵀ [r, n] through its strides.
        add_scaled_product(
            &mut y,
            (m, n, r),
            h,
            (&b[b_start..b_end], 1, r as isize),
            self.scale as f32,
        );
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Detached: a gradient must not carry a graph that keeps activations alive.
        let (x, a, b) = (&x.detach(), &a.detach(), &b.detach());
        let gb = (g.matmul(b)? * self.scale)?; // [m, r]
        let dx = input_gradient_plus_low_rank(g, &self.w, &gb, a)?;
        let da = gb.t()?.matmul(x)?;
        let h = match self.low.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(h) => Tensor::from_vec(h, (x.dim(0)?, a.dim(0)?), x.device())?,
            None => x.matmul(&a.t()?)?,
        }; // [m, r]
        let db = (g.t()?.matmul(&h)? * self.scale)?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

/// `x Wᵀ + s · (x Aᵀ) Bᵀ` for `x [.., in]` with frozen `w`, differentiable in `x`, `a`, `b`.
pub fn lora_linear(x: &Tensor, w: &Tensor, a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let k = *dims.last().expect("x has at least one dimension");
    let x2 = x.reshape((x.elem_count() / k, k))?;
    let y = if matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32 {
        x2.contiguous()?.apply_op3(
            &a.contiguous()?,
            &b.contiguous()?,
            LoraLinear {
                w: w.clone(),
                scale,
                low: Mutex::new(None),
            },
        )?
    } else {
        (frozen_linear(&x2, w)? + (x2.matmul(&a.t()?)? * scale)?.matmul(&b.t()?)?)?
    };
    let mut out = dims;
    *out.last_mut().expect("non-empty") = w.dim(0)?;
    y.reshape(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// Gradients of `sum(y ⊙ w)`: a random upstream gradient `w` through `y`'s graph.
    fn weighted_grads(y: &Tensor, w: &Tensor) -> candle_core::backprop::GradStore {
        (y * w).unwrap().sum_all().unwrap().backward().unwrap()
    }

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        let data = crate::SeededNormal::new(seed).samples(n, 1.0);
        Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
    }

    /// `fast_exp` against f64's `exp` over the whole range it serves (relative error, every
    /// 1/1000 from −87 to 88), exactly 1 at 0, NaN kept; and the shifted sums against f64 sums.
    #[test]
    fn fast_exp_is_within_two_ulps_and_the_sums_match() {
        let mut worst = 0f64;
        for i in -87_000..88_000 {
            let x = i as f32 / 1000.0;
            let exact = (x as f64).exp();
            worst = worst.max(((fast_exp(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert!(fast_exp(f32::NAN).is_nan());
        assert!(fast_exp(-1e4) >= 0.0 && fast_exp(-1e4) < 1e-37);

        let x: Vec<f32> = (0..5003)
            .map(|i| ((i * 37) % 101) as f32 / 7.0 - 9.0)
            .collect();
        let exact: f64 = x.iter().map(|&v| ((v - 3.5) as f64).exp()).sum();
        assert!((sum_exp_shifted(&x, 3.5) - exact).abs() / exact < 1e-6);
        let mut out = vec![0f32; x.len()];
        let exact: f64 = x.iter().map(|&v| ((0.5 * v - 1.0) as f64).exp()).sum();
        let sum = exp_shifted_into(&mut out, &x, 0.5, 1.0) as f64;
        assert!((sum - exact).abs() / exact < 1e-5, "{sum} vs {exact}");
        for (o, &v) in out.iter().zip(&x) {
            let e = ((0.5 * v - 1.0) as f64).exp();
            assert!(((*o as f64) - e).abs() / e < 2.5e-7);
        }
    }

    /// The fused LoRA linear against the composite `x Wᵀ + s (x Aᵀ) Bᵀ`, output and the
    /// gradients of x, A and B, in f32 and in bf16 on AMX where present (the low-rank part is
    /// then added into the bf16 products in place): shapes off the 32-blocks, B transposed in
    /// memory.
    #[test]
    fn lora_linear_matches_the_composite_in_both_precisions() {
        let (m, k, n, r) = (37, 70, 45, 5);
        let x = Var::from_tensor(&randn(&[m, k], 31)).unwrap();
        let wt = randn(&[n, k], 32);
        let a = Var::from_tensor(&randn(&[r, k], 33)).unwrap();
        let b = Var::from_tensor(&randn(&[r, n], 34).t().unwrap()).unwrap();
        let w = randn(&[m, n], 35);
        let reference = (x.as_tensor().matmul(&wt.t().unwrap()).unwrap()
            + (x.as_tensor().matmul(&a.as_tensor().t().unwrap()).unwrap() * 0.5)
                .unwrap()
                .matmul(&b.as_tensor().t().unwrap())
                .unwrap())
        .unwrap();
        let g_ref = weighted_grads(&reference, &w);
        let rel = |ours: &Tensor, reference: &Tensor| {
            let scale = reference.abs().unwrap().max_all().unwrap();
            (max_diff(ours, reference) / scale.to_scalar::<f32>().unwrap()) as f64
        };
        let mut precisions = vec![(MatmulPrecision::F32, 1e-5)];
        if amx::available() {
            precisions.push((MatmulPrecision::Bf16, 2e-2));
        }
        for (precision, tolerance) in precisions {
            let _scope = MatmulPrecisionScope::enter(precision).unwrap();
            let ours = lora_linear(x.as_tensor(), &wt, a.as_tensor(), b.as_tensor(), 0.5).unwrap();
            assert!(rel(&ours, &reference) < tolerance, "{precision:?}: output");
            let g_ours = weighted_grads(&ours, &w);
            for (name, v) in [("x", &x), ("A", &a), ("B", &b)] {
                let diff = rel(
                    g_ours.get(v.as_tensor()).unwrap(),
                    g_ref.get(v.as_tensor()).unwrap(),
                );
                assert!(diff < tolerance, "{precision:?}: d{name} off by {diff}");
            }
        }
    }

    /// The blocked output layer + loss against the composite (frozen linear, then the loss):
    /// the loss and `∂x` under an upstream factor of 3, in f32 and in bf16 on AMX where present,
    /// with blocks that do not divide the rows; without the gradient, the same loss and no graph.
    #[test]
    fn head_cross_entropy_matches_the_head_then_the_loss() {
        let (n, h, vocab) = (23, 40, 301);
        let x = Var::from_tensor(&randn(&[n, h], 31)).unwrap();
        let w = randn(&[vocab, h], 32);
        let labels: Vec<u32> = (0..n as u32).map(|i| (i * 37 + 5) % vocab as u32).collect();
        let mut precisions = vec![(MatmulPrecision::F32, 1e-5)];
        if amx::available() {
            precisions.push((MatmulPrecision::Bf16, 2e-2));
        }
        for (precision, tolerance) in precisions {
            let _scope = MatmulPrecisionScope::enter(precision).unwrap();
            let reference =
                cross_entropy(&frozen_linear(x.as_tensor(), &w).unwrap(), &labels).unwrap();
            let g_ref = (&reference * 3.0).unwrap().backward().unwrap();
            let dx_ref = g_ref.get(x.as_tensor()).unwrap();
            let scale = dx_ref
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            for block in [4, 8, 1024] {
                let label = format!("{precision:?}, blocks of {block}");
                let ours =
                    head_cross_entropy_in_blocks(x.as_tensor(), &w, &labels, true, block).unwrap();
                let (a, b) = (
                    ours.to_scalar::<f32>().unwrap(),
                    reference.to_scalar::<f32>().unwrap(),
                );
                assert!((a - b).abs() / b < tolerance, "{label}: loss {a} vs {b}");
                let g = (&ours * 3.0).unwrap().backward().unwrap();
                let diff = max_diff(g.get(x.as_tensor()).unwrap(), dx_ref) / scale;
                assert!(diff < tolerance, "{label}: ∂x off by {diff} (relative)");
                let plain =
                    head_cross_entropy_in_blocks(x.as_tensor(), &w, &labels, false, block).unwrap();
                assert_eq!(plain.to_scalar::<f32>().unwrap(), a, "{label}");
                assert!(plain.backward().unwrap().get(x.as_tensor()).is_none());
            }
        }
        let bad = head_cross_entropy(x.as_tensor(), &w, &[vocab as u32; 23], true).unwrap_err();
        assert!(bad.to_string().contains("outside the vocabulary"), "{bad}");
    }

    /// Each fused op against candle's differentiable composite: outputs and input gradients.
    #[test]
    fn fused_ops_match_candle_composites_forward_and_backward() {
        // Causal softmax on [2, 3, 5, 5] scores, without and with a 2-token window.
        for window in [None, Some(2)] {
            let x = Var::from_tensor(&randn(&[2, 3, 5, 5], 1)).unwrap();
            let w = randn(&[2, 3, 5, 5], 2);
            let mask: Vec<f32> = (0..5usize)
                .flat_map(|i| {
                    (0..5usize).map(move |j| {
                        if j > i || window.is_some_and(|n| i - j >= n) {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (5, 5), &Device::Cpu).unwrap();
            let reference = candle_nn::ops::softmax(
                &(x.as_tensor() * 0.125)
                    .unwrap()
                    .broadcast_add(&mask)
                    .unwrap(),
                D::Minus1,
            )
            .unwrap();
            let ours = causal_softmax(x.as_tensor(), 0.125, window).unwrap();
            assert!(max_diff(&ours, &reference) < 1e-6, "{window:?}");
            let (g_ref, g_ours) = (weighted_grads(&reference, &w), weighted_grads(&ours, &w));
            assert!(
                max_diff(
                    g_ours.get(x.as_tensor()).unwrap(),
                    g_ref.get(x.as_tensor()).unwrap()
                ) < 1e-5,
                "{window:?}"
            );
        }

        // RMSNorm on [4, 8].
        let x = Var::from_tensor(&randn(&[4, 8], 3)).unwrap();
        let gain = randn(&[8], 4);
        let w = randn(&[4, 8], 5);
        let reference = candle_nn::ops::rms_norm_slow(x.as_tensor(), &gain, 1e-5).unwrap();
        let ours = rms_norm(x.as_tensor(), &gain, 1e-5).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-5);
        let (g_ref, g_ours) = (weighted_grads(&reference, &w), weighted_grads(&ours, &w));
        assert!(
            max_diff(
                g_ours.get(x.as_tensor()).unwrap(),
                g_ref.get(x.as_tensor()).unwrap()
            ) < 1e-4
        );

        // Cross-entropy on [6, 11].
        let x = Var::from_tensor(&randn(&[6, 11], 6)).unwrap();
        let labels = [0u32, 3, 10, 5, 5, 1];
        let reference = candle_nn::loss::cross_entropy(
            x.as_tensor(),
            &Tensor::new(&labels, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let ours = cross_entropy(x.as_tensor(), &labels).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-5);
        let g_ref = (reference * 3.0).unwrap().backward().unwrap();
        let g_ours = (ours * 3.0).unwrap().backward().unwrap();
        assert!(
            max_diff(
                g_ours.get(x.as_tensor()).unwrap(),
                g_ref.get(x.as_tensor()).unwrap()
            ) < 1e-5
        );

        // RoPE on [1, 2, 3, 4] against candle's rope_slow.
        let x = Var::from_tensor(&randn(&[1, 2, 3, 4], 9)).unwrap();
        let (cos, sin) = (randn(&[3, 2], 10), randn(&[3, 2], 11));
        let w = randn(&[1, 2, 3, 4], 12);
        let reference = candle_nn::rotary_emb::rope_slow(x.as_tensor(), &cos, &sin).unwrap();
        let ours = rope(x.as_tensor(), &cos, &sin).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-6);
        let (g_ref, g_ours) = (weighted_grads(&reference, &w), weighted_grads(&ours, &w));
        assert!(
            max_diff(
                g_ours.get(x.as_tensor()).unwrap(),
                g_ref.get(x.as_tensor()).unwrap()
            ) < 1e-5
        );

        // SwiGLU on [3, 5]; GeGLU on [4, 9] with gate values spanning GELU's curved part and
        // both tails: against candle's `silu` / `gelu` (tanh approximation) times `up`.
        type Gated = fn(&Tensor, &Tensor) -> Result<Tensor>;
        type Activation = fn(&Tensor) -> Result<Tensor>;
        let cases: [(Gated, Activation, [usize; 2], f64, u64); 2] = [
            (swiglu, Tensor::silu, [3, 5], 1.0, 13),
            (geglu, Tensor::gelu, [4, 9], 3.0, 21),
        ];
        for (op, activation, shape, spread, seed) in cases {
            let (gv, uv) = (
                Var::from_tensor(&(randn(&shape, seed) * spread).unwrap()).unwrap(),
                Var::from_tensor(&randn(&shape, seed + 1)).unwrap(),
            );
            let w = randn(&shape, seed + 2);
            let reference = (activation(gv.as_tensor()).unwrap() * uv.as_tensor()).unwrap();
            let ours = op(gv.as_tensor(), uv.as_tensor()).unwrap();
            assert!(max_diff(&ours, &reference) < 2e-6);
            let (g_ref, g_ours) = (weighted_grads(&reference, &w), weighted_grads(&ours, &w));
            for v in [&gv, &uv] {
                assert!(
                    max_diff(
                        g_ours.get(v.as_tensor()).unwrap(),
                        g_ref.get(v.as_tensor()).unwrap()
                    ) < 1e-5
                );
            }
        }

        // LoRA linear against the composite x Wᵀ + s (x Aᵀ) Bᵀ.
        let x = Var::from_tensor(&randn(&[6, 7], 16)).unwrap();
        let (wt, a, b) = (
            randn(&[5, 7], 17),
            Var::from_tensor(&randn(&[3, 7], 18)).unwrap(),
            Var::from_tensor(&randn(&[5, 3], 19)).unwrap(),
        );
        let w = randn(&[6, 5], 20);
        let reference = (x.as_tensor().matmul(&wt.t().unwrap()).unwrap()
            + (x.as_tensor().matmul(&a.as_tensor().t().unwrap()).unwrap() * 0.7)
                .unwrap()
                .matmul(&b.as_tensor().t().unwrap())
                .unwrap())
        .unwrap();
        let ours = lora_linear(x.as_tensor(), &wt, a.as_tensor(), b.as_tensor(), 0.7).unwrap();
        assert!(max_diff(&ours, &reference) < 1e-5);
        let (g_ref, g_ours) = (weighted_grads(&reference, &w), weighted_grads(&ours, &w));
        for v in [&x, &a, &b] {
            assert!(
                max_diff(
                    g_ours.get(v.as_tensor()).unwrap(),
                    g_ref.get(v.as_tensor()).unwrap()
                ) < 1e-4
            );
        }

        // Frozen linear: the input gradient equals a plain matmul's; the weight gets none.
        let x = Var::from_tensor(&randn(&[5, 7], 7)).unwrap();
        let wt = randn(&[3, 7], 8);
        let y = frozen_linear(x.as_tensor(), &wt).unwrap();
        let reference = x.as_tensor().matmul(&wt.t().unwrap()).unwrap();
        assert!(max_diff(&y, &reference) < 1e-5);
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g_ref = reference
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(
            max_diff(
                g.get(x.as_tensor()).unwrap(),
                g_ref.get(x.as_tensor()).unwrap()
            ) < 1e-4
        );
        assert!(g.get(&wt).is_none());
    }
}
